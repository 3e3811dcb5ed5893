// Shared helpers for every shader: flat workgroup indexing and 16-bit float unpacking.
// Weights are read as 32-bit words and unpacked here, so no shader needs 16-bit storage features.
#ifndef MACH_COMMON_GLSL
#define MACH_COMMON_GLSL

// The flat index of this workgroup in a grid made by gpu::flat_groups() (x <= 65535, then y).
uint flat_workgroup_id() { return gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x; }

// The invocations one MoE pair gets in a combine workgroup of `wg` (a power of two) when a pair's rows take
// `steps` loads per invocation at most: the power of two >= steps, at least 32, at most wg. The host sizes the
// workgroup with the same rule (ops/matmul.cpp).
uint pair_lanes(uint steps, uint wg) { return min(wg, max(32u, 1u << findMSB(max(steps, 1u) * 2u - 1u))); }

// Two bf16 values packed in one word (element 0 in the low half) to float.
vec2 unpack_bf16x2(uint w) { return vec2(uintBitsToFloat(w << 16), uintBitsToFloat(w & 0xffff0000u)); }

float bf16_to_float(uint bits16) { return uintBitsToFloat(bits16 << 16); }

#endif
