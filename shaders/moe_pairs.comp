#version 450
// The routed pairs of every expert, for the tiled MoE products (mul_mat.comp, mul_mat_cm.comp): ids [T, top_k] ->
//   count [E]: how many pairs route to expert e;  list [E, T]: their pair indices t * top_k + s, ascending.
// An expert sees at most T pairs (a token's top_k ids are distinct). One workgroup per expert scans all ids
// once: E * T * top_k reads in all, where the product kernels' workgroups used to scan them once each.
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#include "common.glsl"
layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer Ids { uint ids[]; };
layout(binding = 1) writeonly buffer Count { uint count[]; };
layout(binding = 2) writeonly buffer List { uint list[]; };
layout(push_constant) uniform Push {
  uint tokens;
  uint top_k;
  uint experts;
} p;

shared uint subgroup_matches[256];  // one per subgroup

void main() {
  const uint e = flat_workgroup_id();
  if (e >= p.experts) return;  // the whole workgroup
  const uint tid = gl_LocalInvocationID.x;
  // Each invocation scans one contiguous stretch of the ids, so ranks follow pair order.
  const uint pairs = p.tokens * p.top_k;
  const uint per = (pairs + 255) / 256;
  const uint begin = min(tid * per, pairs), end = min(begin + per, pairs);
  uint mine = 0;
  for (uint i = begin; i < end; ++i) mine += ids[i] == e ? 1 : 0;
  uint rank = subgroupExclusiveAdd(mine);
  const uint in_subgroup = subgroupAdd(mine);
  if (subgroupElect()) subgroup_matches[gl_SubgroupID] = in_subgroup;
  barrier();
  uint total = 0;
  for (uint g = 0; g < gl_NumSubgroups; ++g) {
    if (g < gl_SubgroupID) rank += subgroup_matches[g];
    total += subgroup_matches[g];
  }
  for (uint i = begin; i < end; ++i)
    if (ids[i] == e) list[e * p.tokens + rank++] = i;
  if (tid == 0) count[e] = total;
}
