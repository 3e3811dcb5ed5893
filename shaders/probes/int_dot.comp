#version 450
// Probe: glslc understands GL_EXT_integer_dot_product (packed int8 dot products).
#extension GL_EXT_integer_dot_product : require
layout(local_size_x = 32) in;
layout(binding = 0) buffer B { int data[]; };
void main() { data[0] = dotPacked4x8EXT(data[1], data[2]); }
