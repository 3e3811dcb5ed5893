// The pair gather of the tiled MoE kernels (mul_mat.comp, mul_mat_cm.comp): which (token, slot) pairs of ids
// [T, top_k] a workgroup's expert tile covers. The including shader defines WG (its workgroup size) and BN
// (pairs per tile), and declares the ids buffer and the push constants (mul_mat_funcs.glsl) first.
#ifndef MACH_MOE_GATHER_GLSL
#define MACH_MOE_GATHER_GLSL
shared uint pair_of[BN];                 // the tile's (token, slot) pairs, as t * top_k + s
shared uint subgroup_matches[WG / 4];    // assumes subgroups of at least 4 invocations

// Finds the pairs routed to `expert` and stores the ones ranked [first, first + BN) in pair_of.
// Returns the number of matches in all (the same in every invocation).
uint gather_pairs(uint expert, uint first) {
  const uint tid = gl_LocalInvocationID.x;
  const uint pairs = p.tokens * p.top_k;
  const uint per = (pairs + WG - 1) / WG;
  const uint begin = min(tid * per, pairs), end = min(begin + per, pairs);
  uint mine = 0;
  for (uint i = begin; i < end; ++i) mine += ids[i] == expert ? 1 : 0;
  uint rank = subgroupExclusiveAdd(mine);
  const uint in_subgroup = subgroupAdd(mine);
  if (subgroupElect()) subgroup_matches[gl_SubgroupID] = in_subgroup;
  barrier();
  uint total = 0;
  for (uint g = 0; g < gl_NumSubgroups; ++g) {
    if (g < gl_SubgroupID) rank += subgroup_matches[g];
    total += subgroup_matches[g];
  }
  for (uint i = begin; i < end && rank < first + BN; ++i) {
    if (ids[i] != expert) continue;
    if (rank >= first) pair_of[rank - first] = i;
    ++rank;
  }
  barrier();
  return total;
}

#endif
