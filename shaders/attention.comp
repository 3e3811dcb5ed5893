#version 450
//! variant attention_decode_d16 -DHEAD_DIM=16 -DROWS=16 -DKEYS=64
//! variant attention_decode_d32 -DHEAD_DIM=32 -DROWS=8 -DKEYS=64
//! variant attention_decode_d64 -DHEAD_DIM=64 -DROWS=8 -DKEYS=64
//! variant attention_decode_d128 -DHEAD_DIM=128 -DROWS=8 -DKEYS=64
//! variant attention_decode_d256 -DHEAD_DIM=256 -DROWS=8 -DKEYS=32
//! variant attention_decode_d512 -DHEAD_DIM=512 -DROWS=8 -DKEYS=8
//! variant attention_narrow_d64 -DHEAD_DIM=64 -DROWS=4 -DKEYS=64
//! variant attention_narrow_d128 -DHEAD_DIM=128 -DROWS=2 -DKEYS=64
//! variant attention_narrow_d256 -DHEAD_DIM=256 -DROWS=2 -DKEYS=32
//! variant attention_block_d16 -DHEAD_DIM=16 -DROWS=16 -DKEYS=64
//! variant attention_block_d32 -DHEAD_DIM=32 -DROWS=32 -DKEYS=32
//! variant attention_block_d64 -DHEAD_DIM=64 -DROWS=32 -DKEYS=32
//! variant attention_block_d128 -DHEAD_DIM=128 -DROWS=32 -DKEYS=32
//! variant attention_block_d256 -DHEAD_DIM=256 -DROWS=16 -DKEYS=16
//! variant attention_block_d512 -DHEAD_DIM=512 -DROWS=8 -DKEYS=8
// Attention over the paged KV cache (layout: src/ops/kv_cache_layout.hpp), flash-attention style: an online
// softmax in f32 over key tiles staged in shared memory.
//
// q: [T, H, D] f32; seq_of_token, pos_of_token: [T] u32; block_table: [S, MB] u32;
// k_cache, v_cache: [num_blocks, KVH, B, D] f16 pairs (may be the same buffer); sinks: [H] f32;
// out: [T, H, D] f32 (when splits == 1); part_o: [T, H, splits, D] f32 and part_ml: [T, H, splits] (max,
// sum) when splits > 1, merged by attention_combine.comp.
//
// A workgroup owns ROWS query rows = tokens_per_tile consecutive tokens x heads_per_tile heads of one kv
// head's GQA group, so every K/V tile it loads serves all of them; grid = (token tiles, KVH * head_chunks,
// splits). Tokens of the tile that belong to different sequences are handled as consecutive runs, one run
// per sequence, each with its own key range, so one dispatch can mix decode tokens, prefill chunks and
// verify blocks. A row attends keys [max(0, pos - window + 1), pos] of its sequence: causality within a
// prefill chunk follows from each token's own position. With splits > 1 each workgroup takes one slice
// of every run's key range (flash-decoding), so a single decode token still spreads over the GPU.
//
// The kernels are this loop with three tile shapes: decode (one token per tile, ROWS = the GQA group,
// long key tiles), narrow (decode with 2 or 4 heads per tile: 4x the workgroups of a short context, whose
// few key tiles cannot be split) and block (several tokens per tile for prefill / verify). No subgroup
// operations: every reduction is per thread over shared memory, so any subgroup size is correct.
// Per key tile: stage K (16-byte loads, one block-table lookup per 8 halves), scores with each thread
// taking one key for S_ROWS rows, stage V while the row maxima are reduced, probabilities (one exp per
// score), then P.V with each thread owning OW words of one row. Five barriers per tile.
// Perf expectations (H100, not yet measured): decode should be bound by reading the cache, KVH * keys *
// D * 4 bytes per token (Qwen3-30B-A3B at 16k context: 32 MB, ~12 us at 2.7 TB/s), with the key range
// split so that ~512 workgroups run; the phases are not software-pipelined, so expect well under peak
// bandwidth until the next tile's loads overlap this tile's math. block is scalar f32 FMA fed from
// shared memory, a few TFLOP/s at best: cooperative matrices are the next step for long prefills.
#include "common.glsl"

#define WG 128
#define HALF_D (HEAD_DIM / 2)
// One pad word per staged row: threads reading the same word of consecutive keys hit different banks.
#define KV_STRIDE (HALF_D + 1)
#define ROW_THREADS (WG / ROWS)  // threads that share one output row, each owning OW words of it
#define OW (HALF_D / ROW_THREADS)
#define S_ROWS ((ROWS * KEYS + WG - 1) / WG)  // score rows per thread (KEYS <= WG threads per row group)

layout(local_size_x = WG) in;
layout(binding = 0) readonly buffer Q { vec2 q[]; };
layout(binding = 1) readonly buffer Seq { uint seq_of_token[]; };
layout(binding = 2) readonly buffer Pos { uint pos_of_token[]; };
layout(binding = 3) readonly buffer Table { uint block_table[]; };
layout(binding = 4) readonly buffer KCache { uvec4 k_cache[]; };  // 8 halves per element
layout(binding = 5) readonly buffer VCache { uvec4 v_cache[]; };
layout(binding = 6) readonly buffer Sinks { float sinks[]; };
layout(binding = 7) writeonly buffer Out { vec2 out_[]; };
layout(binding = 8) writeonly buffer PartO { vec2 part_o[]; };
layout(binding = 9) writeonly buffer PartML { vec2 part_ml[]; };
layout(push_constant) uniform Push {
  uint tokens;
  uint n_heads;
  uint kv_heads;
  uint block_size;
  uint max_blocks_per_seq;
  uint window;
  uint heads_per_tile;
  uint tokens_per_tile;
  uint head_chunks;
  uint splits;
  uint has_sinks;
  float scale;
  float softcap;
} p;

shared vec2 q_sh[ROWS * HALF_D];
shared uint kv_sh[KEYS * KV_STRIDE];
shared float s_sh[ROWS * KEYS];
shared float part_max[WG];  // per thread: its share of its row's tile maximum, then of its sum
shared float part_sum[WG];
shared uint tok_seq[ROWS];
shared uint tok_lo[ROWS];  // first key position of each token of the tile
shared uint tok_hi[ROWS];  // last key position (the token's own)

float neg_inf() { return uintBitsToFloat(0xff800000u); }

uint block_shift;  // log2(block_size): a shift, not an integer division, per cache word

// This workgroup's tile, set once by main().
uint kvh;        // the kv head
uint group;      // GQA group size H / KVH
uint head0;      // first head of the tile within the group
uint t0, ntok;   // first token and token count of the tile
uint rows_used;  // ntok * heads_per_tile

// The row (token, head) this thread accumulates, sharing it with ROW_THREADS - 1 partners that own other
// words of it and hold the same running max m and sum l.
uint row_r, lane;
float m, l;
vec2 o[OW];

#define QUADS (HALF_D / 4)  // 16-byte loads per cache row
#define QUADS_PER_THREAD (KEYS * QUADS / WG)

// Stages KEYS rows of the K (or V) cache of sequence `seq`, this tile's kv head, from key position k0
// into kv_sh; rows at or past `end` are zeros. A fixed trip count and 16-byte loads let a thread's loads
// overlap.
void load_tile(bool values, uint seq, uint k0, uint end) {
  for (uint j = 0; j < QUADS_PER_THREAD; ++j) {
    const uint i = gl_LocalInvocationID.x + j * WG, n = i / QUADS, w = i % QUADS * 4, pos = k0 + n;
    uvec4 v = uvec4(0);
    if (pos < end) {
      const uint block = block_table[seq * p.max_blocks_per_seq + (pos >> block_shift)];
      const uint row = (block * p.kv_heads + kvh) * p.block_size + (pos & (p.block_size - 1));
      v = values ? v_cache[row * QUADS + w / 4] : k_cache[row * QUADS + w / 4];
    }
    kv_sh[n * KV_STRIDE + w] = v.x;
    kv_sh[n * KV_STRIDE + w + 1] = v.y;
    kv_sh[n * KV_STRIDE + w + 2] = v.z;
    kv_sh[n * KV_STRIDE + w + 3] = v.w;
  }
}

bool row_valid(uint rr) { return rr < rows_used && head0 + rr % p.heads_per_tile < group; }

void load_queries() {
  if (gl_LocalInvocationID.x < ntok) {
    const uint t = gl_LocalInvocationID.x, pos = pos_of_token[t0 + t];
    tok_seq[t] = seq_of_token[t0 + t];
    tok_hi[t] = pos;
    tok_lo[t] = p.window > 0 && pos + 1 > p.window ? pos + 1 - p.window : 0;
  }
  for (uint i = gl_LocalInvocationID.x; i < ROWS * HALF_D; i += WG) {
    const uint rr = i / HALF_D;
    q_sh[i] = row_valid(rr) ? q[((t0 + rr / p.heads_per_tile) * p.n_heads + kvh * group + head0 +
                                  rr % p.heads_per_tile) * HALF_D + i % HALF_D]
                            : vec2(0);
  }
}

// s_sh = the (softcapped) scores of the K tile in kv_sh at positions [k0, k0 + KEYS), -inf where masked:
// outside the run's tokens [ta, tb), past `end`, or outside a token's own key range. A thread takes one key
// for S_ROWS rows, so each K word it reads from shared memory serves S_ROWS dot products.
void compute_scores(uint k0, uint end, uint ta, uint tb) {
  const uint n = gl_LocalInvocationID.x % KEYS, rr0 = gl_LocalInvocationID.x / KEYS * S_ROWS, kp = k0 + n;
  if (rr0 >= ROWS) return;
  float acc[S_ROWS];
  for (uint i = 0; i < S_ROWS; ++i) acc[i] = 0;
  for (uint w = 0; w < HALF_D; ++w) {
    const vec2 k = unpackHalf2x16(kv_sh[n * KV_STRIDE + w]);
    for (uint i = 0; i < S_ROWS; ++i) acc[i] += dot(q_sh[(rr0 + i) * HALF_D + w], k);
  }
  for (uint i = 0; i < S_ROWS; ++i) {
    const uint rr = rr0 + i, tr = rr / p.heads_per_tile;
    float s = neg_inf();
    if (row_valid(rr) && tr >= ta && tr < tb && kp < end && kp >= tok_lo[tr] && kp <= tok_hi[tr]) {
      s = acc[i] * p.scale;
      // tanh is clamped because some drivers build it from exp, which overflows to inf / inf.
      if (p.softcap > 0) s = p.softcap * tanh(clamp(s / p.softcap, -15.0, 15.0));
    }
    s_sh[rr * KEYS + n] = s;
  }
}

// One key tile of the run of sequence `seq`, tokens [ta, tb): scores, online softmax, P.V into o, m, l.
// Called uniformly by the whole workgroup (it has barriers); kv_sh and s_sh are free again on return.
void attend_tile(uint seq, uint k0, uint end, uint ta, uint tb) {
  const uint tid = gl_LocalInvocationID.x;
  load_tile(false, seq, k0, end);
  barrier();
  compute_scores(k0, end, ta, tb);
  barrier();
  // Softmax, split over the ROW_THREADS threads of each row so every exp is taken once: partial row
  // maxima (while the V tile loads), then probabilities in place of the scores with partial sums.
  float part = neg_inf();
  for (uint n = lane; n < KEYS; n += ROW_THREADS) part = max(part, s_sh[row_r * KEYS + n]);
  part_max[tid] = part;
  load_tile(true, seq, k0, end);
  barrier();
  float tile_max = neg_inf();
  for (uint j = 0; j < ROW_THREADS; ++j) tile_max = max(tile_max, part_max[row_r * ROW_THREADS + j]);
  const float m_new = max(m, tile_max);
  part = 0;
  if (tile_max > neg_inf()) {
    for (uint n = lane; n < KEYS; n += ROW_THREADS) {
      const float s = s_sh[row_r * KEYS + n];
      const float pr = s > neg_inf() ? exp(s - m_new) : 0.0;
      s_sh[row_r * KEYS + n] = pr;
      part += pr;
    }
  }
  part_sum[tid] = part;
  barrier();
  // A row outside the run, or fully masked in this tile, has tile_max = -inf and keeps its state.
  if (tile_max > neg_inf()) {
    const float alpha = m > neg_inf() ? exp(m - m_new) : 0.0;
    float tile_sum = 0;
    for (uint j = 0; j < ROW_THREADS; ++j) tile_sum += part_sum[row_r * ROW_THREADS + j];
    l = l * alpha + tile_sum;
    for (uint j = 0; j < OW; ++j) o[j] *= alpha;
    for (uint n = 0; n < KEYS; ++n) {
      const float pr = s_sh[row_r * KEYS + n];
      for (uint j = 0; j < OW; ++j) o[j] += pr * unpackHalf2x16(kv_sh[n * KV_STRIDE + lane + j * ROW_THREADS]);
    }
    m = m_new;
  }
  barrier();
}

// The finished row: normalized into out (with the sink) or, split, unnormalized with its (m, l).
void store_row(uint split) {
  const uint row = (t0 + row_r / p.heads_per_tile) * p.n_heads + kvh * group + head0 +
                   row_r % p.heads_per_tile;  // (token, head)
  if (p.splits == 1) {
    // Every token attends at least itself, so m is finite here. A sink joins the denominator only.
    float factor = 1.0 / l;
    if (p.has_sinks != 0) {
      const float sink = sinks[row % p.n_heads], mm = max(m, sink);
      factor = exp(m - mm) / (l * exp(m - mm) + exp(sink - mm));
    }
    for (uint j = 0; j < OW; ++j) out_[row * HALF_D + lane + j * ROW_THREADS] = o[j] * factor;
  } else {
    const uint slot = row * p.splits + split;
    for (uint j = 0; j < OW; ++j) part_o[slot * HALF_D + lane + j * ROW_THREADS] = o[j];
    if (lane == 0) part_ml[slot] = vec2(m, l);
  }
}

void main() {
  block_shift = findLSB(p.block_size);
  group = p.n_heads / p.kv_heads;
  kvh = gl_WorkGroupID.y / p.head_chunks;
  head0 = (gl_WorkGroupID.y % p.head_chunks) * p.heads_per_tile;
  t0 = gl_WorkGroupID.x * p.tokens_per_tile;
  ntok = min(p.tokens_per_tile, p.tokens - t0);
  rows_used = ntok * p.heads_per_tile;
  row_r = gl_LocalInvocationID.x / ROW_THREADS;
  lane = gl_LocalInvocationID.x % ROW_THREADS;
  m = neg_inf();
  l = 0;
  for (uint j = 0; j < OW; ++j) o[j] = vec2(0);
  load_queries();
  barrier();

  const uint split = gl_WorkGroupID.z;
  uint ta = 0;
  while (ta < ntok) {
    // The run [ta, tb) of tokens of one sequence, the union of their key ranges, and this split's slice.
    const uint seq = tok_seq[ta];
    uint klo = tok_lo[ta], khi = tok_hi[ta], tb = ta + 1;
    while (tb < ntok && tok_seq[tb] == seq) {
      klo = min(klo, tok_lo[tb]);
      khi = max(khi, tok_hi[tb]);
      ++tb;
    }
    const uint per_split = ((khi - klo + p.splits) / p.splits + KEYS - 1) / KEYS * KEYS;
    const uint kb = klo + split * per_split, ke = min(kb + per_split, khi + 1);
    for (uint k0 = kb; k0 < ke; k0 += KEYS) attend_tile(seq, k0, ke, ta, tb);
    ta = tb;
  }
  if (row_valid(row_r)) store_row(split);
}
