#version 450
// Probe: glslc understands GL_EXT_spirv_intrinsics, which mul_mat_vec.comp's Q4_DOT uses to reach
// SPV_KHR_integer_dot_product's OpSUDotKHR (this glslc lacks GL_EXT_integer_dot_product's built-ins).
#extension GL_EXT_spirv_intrinsics : require
layout(local_size_x = 32) in;
layout(binding = 0) buffer B { uint data[]; };
spirv_instruction(extensions = ["SPV_KHR_integer_dot_product"], capabilities = [6019, 6018], id = 4452)
int sudot(uint a, uint b, spirv_literal int packed_format);
void main() { data[0] = uint(sudot(data[1], data[2], 0)); }
