// RoPE inverse frequencies, computed once on the CPU and shared by the GPU op (uploaded as a small buffer) and
// the CPU reference, following transformers' modeling_rope_utils (ROPE_INIT_FUNCTIONS).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace mach::ops {

enum class RopeScaling {
  none,          // "default": inv_freq[j] = theta^(-2j / rotary_dim)
  linear,        // "linear": default / factor
  yarn,          // "yarn" (gpt-oss, DeepSeek): NTK-by-parts blend of interpolated and extrapolated frequencies
  proportional,  // "proportional" (Gemma 4 full-attention layers): see rope_table()
};

// The rope_parameters of one layer type (config.json's rope_parameters / rope_scaling, after defaults).
struct RopeConfig {
  double theta = 10000.0;
  uint32_t head_dim = 0;
  double partial_rotary_factor = 1.0;
  RopeScaling scaling = RopeScaling::none;
  double factor = 1.0;  // linear, yarn (0 means max_position_embeddings / original_max_position_embeddings), proportional
  uint32_t max_position_embeddings = 0;
  uint32_t original_max_position_embeddings = 0;  // yarn
  double beta_fast = 32.0, beta_slow = 1.0;       // yarn
  std::optional<double> attention_factor;         // yarn: explicit value wins over mscale
  std::optional<double> mscale, mscale_all_dim;   // yarn (DeepSeek)
  bool truncate = true;                           // yarn: floor/ceil the correction range (gpt-oss sets false)
};

struct RopeTable {
  uint32_t rotary_dim = 0;        // dims that rotate; inv_freq has rotary_dim / 2 entries
  std::vector<float> inv_freq;    // [rotary_dim / 2]
  float attention_factor = 1.0f;  // multiplies cos and sin
};

// rotary_dim is int(head_dim * partial_rotary_factor) except for proportional RoPE, which always rotates the
// whole head: its first int(partial_rotary_factor * head_dim / 2) pairs get theta^(-2j / head_dim) (note: the
// full head_dim as denominator) and the remaining pairs frequency 0 (identity), all divided by factor.
RopeTable rope_table(const RopeConfig& config);

}  // namespace mach::ops
