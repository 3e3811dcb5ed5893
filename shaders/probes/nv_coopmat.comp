#version 450
// Probe: glslc understands GL_NV_cooperative_matrix (tensor-core matrix products on NVIDIA).
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
layout(local_size_x = 32) in;
layout(binding = 0) buffer B { float16_t data[]; };
void main() {
  fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> m = fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>(float16_t(0.0));
  coopMatStoreNV(m, data, 0, 16, false);
}
