#version 450
// L2 prefetch (ops::prefetch_weights, ops::prefetch_experts): reads ranges of a weight buffer and does nothing
// with them, so that the op that needs them next finds them in the GPU's L2 cache instead of DRAM. The host
// records it with no barrier after the op before that one (it writes only its own sink), so the two run side
// by side: decode's products are bound by latency, not bytes, and a cold weight load is the largest part of
// their critical path.
//   dense (l2_prefetch):            `ranges` ranges of `units` 16-byte units, range r at base + r * stride.
//   experts (l2_prefetch_experts):  one range per pair j < ranges: the expert stack's slot
//                                   slot_table[ids[j]] at base + slot * stride; pairs whose expert has no
//                                   slot (NO_SLOT) are skipped.
// A workgroup reads PER_WG consecutive units of one range (every invocation UNR loads in flight at a time)
// and writes the XOR of the 32-bit words it read to sink[workgroup]: the loads cannot be optimized away, and
// a test can check that exactly the ranges were read (the XOR of the sink is the XOR of the ranges).
//! variant l2_prefetch
//! variant l2_prefetch_experts -DEXPERTS
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#include "common.glsl"

const uint WG = 256;
const uint UNR = 8;
const uint PER_WG = WG * UNR;  // ops/prefetch.cpp's kUnitsPerWorkgroup
layout(local_size_x = WG) in;

layout(binding = 0) readonly buffer W { uvec4 w[]; };
layout(binding = 1) readonly buffer Ids { uint ids[]; };
layout(binding = 2) readonly buffer Slots { uint slot_table[]; };
layout(binding = 3) writeonly buffer Sink { uint sink[]; };
layout(push_constant) uniform Push {
  uint base;    // first unit of range 0 (dense) or of the stack (experts)
  uint units;   // units per range
  uint stride;  // units between ranges (dense) or between slots (experts)
  uint ranges;  // ranges (dense) or pairs (experts)
} p;

const uint NO_SLOT = 0xFFFFFFFFu;
shared uint folded;

void main() {
  const uint tid = gl_LocalInvocationID.x;
  const uint wg = flat_workgroup_id();
  const uint per_range = (p.units + PER_WG - 1) / PER_WG;
  const uint r = wg / per_range, first = (wg % per_range) * PER_WG;
  if (tid == 0) folded = 0;
  barrier();
#if defined(EXPERTS)
  const uint slot = slot_table[ids[r]];
  const uint start = slot == NO_SLOT ? 0 : p.base + slot * p.stride;
  const uint end = slot == NO_SLOT ? 0 : min(first + PER_WG, p.units);
#else
  const uint start = p.base + r * p.stride;
  const uint end = min(first + PER_WG, p.units);
#endif
  uvec4 d[UNR];  // every load issued before any is used
  for (uint i = 0; i < UNR; ++i) {
    const uint u = first + i * WG + tid;
    d[i] = u < end ? w[start + u] : uvec4(0);
  }
  uvec4 acc = uvec4(0);
  for (uint i = 0; i < UNR; ++i) acc ^= d[i];
  const uint v = subgroupXor(acc.x ^ acc.y ^ acc.z ^ acc.w);
  if (subgroupElect()) atomicXor(folded, v);
  barrier();
  if (tid == 0) sink[wg] = folded;
}
