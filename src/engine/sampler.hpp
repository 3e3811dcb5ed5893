// Token sampling on the CPU from one row of logits: greedy, or temperature -> top-k -> top-p -> min-p (the
// order of Hugging Face's logits warpers) followed by a draw from the renormalized distribution.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <utility>
#include <vector>

namespace mach::engine {

struct SamplingParams {
  float temperature = 1.0f;  // 0: greedy (argmax; ties to the lowest id)
  uint32_t top_k = 0;        // 0: off
  float top_p = 1.0f;        // 1: off
  float min_p = 0.0f;        // 0: off; keeps tokens with p >= min_p * p_max
  float presence_penalty = 0.0f;   // OpenAI semantics: subtracted once from every token already generated
  float frequency_penalty = 0.0f;  // subtracted per occurrence
  uint64_t seed = 0;
  // OpenAI's logit_bias: (token, bias) pairs added to those tokens' logits before anything else (-100 bans a
  // token in effect, +100 all but forces it). Tokens outside the row are ignored.
  std::vector<std::pair<uint32_t, float>> logit_bias;
};

class Sampler {
 public:
  explicit Sampler(SamplingParams params) : params_(params), rng_(params.seed) {}

  // Picks the next token from logits [V] (modified in place by logit_bias and penalties), given the tokens
  // generated so far (for penalties).
  uint32_t sample(std::span<float> logits, std::span<const uint32_t> generated);

  // The distribution sample() draws from (after logit_bias, penalties, temperature and truncation), as
  // (token, probability) pairs of the tokens it keeps, in no particular order (sorting a whole vocabulary
  // per token would cost more than a decode step). Exposed for speculative rejection sampling and tests.
  std::vector<std::pair<uint32_t, float>> distribution(std::span<float> logits, std::span<const uint32_t> generated);

  // A draw from a distribution (pairs of token and probability summing to ~1); speculative rejection
  // sampling uses it on the residual distribution. And a uniform number in [0, 1) from the same stream.
  uint32_t draw(const std::vector<std::pair<uint32_t, float>>& dist);
  double uniform() { return std::uniform_real_distribution<double>(0.0, 1.0)(rng_); }

  const SamplingParams& params() const { return params_; }
  bool greedy() const { return params_.temperature <= 0.0f; }

 private:
  // logit_bias, then the presence and frequency penalties, in place.
  void adjust_logits(std::span<float> logits, std::span<const uint32_t> generated) const;
  SamplingParams params_;
  std::mt19937_64 rng_;
};

// argmax with ties to the lowest index.
uint32_t argmax(std::span<const float> logits);

}  // namespace mach::engine
