// A model loaded onto the GPU and ready to run forward steps. Each family implements Model in one file
// (src/model/<family>.cpp) from the ops in src/ops; load_model picks the family from config.json.
//
// A step is a batch of tokens, each with its sequence (a row of the KV cache's block table) and position,
// so decode tokens, prefill chunks and verify blocks of many sequences share one forward pass.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "engine/kv_cache.hpp"
#include "gpu/command_list.hpp"
#include "gpu/context.hpp"
#include "mach/error.hpp"
#include "model/config.hpp"
#include "ops/weight_format.hpp"

namespace mach::model {

struct LoadOptions {
  // Format of the large matrices on the GPU (attention, experts, embeddings, lm_head); norms stay f32 and
  // the router keeps bf16 so that quantization never changes which experts run.
  ops::WeightType weight_type = ops::WeightType::bf16;
  uint32_t max_step_tokens = 256;  // tokens one forward step takes (longer prompts run in chunks)
  uint32_t max_context = 4096;     // tokens per sequence
  uint32_t max_sequences = 1;
  uint32_t kv_block_size = 16;
  // Device memory for the KV cache (all layers, K and V); 0 sizes it for max_sequences full contexts.
  // Sequences that do not fit wait for blocks (admission control).
  uint64_t kv_cache_bytes = 0;
};

struct StepBatch {
  std::span<const uint32_t> tokens;        // [T] token ids
  std::span<const uint32_t> seq_of_token;  // [T] KV-cache sequence of each token
  std::span<const uint32_t> positions;     // [T] position of each token in its sequence
  std::span<const uint32_t> logit_rows;    // [R] indices into tokens whose logits are wanted, in output order
};

class Model {
 public:
  virtual ~Model() = default;
  virtual const ModelConfig& config() const = 0;
  virtual engine::KvCache& kv_cache() = 0;
  virtual uint32_t max_step_tokens() const = 0;
  virtual uint64_t weight_bytes() const = 0;
  // Bytes of one routed expert (all its matrices) in one layer; 0 for a model without routed experts.
  virtual uint64_t expert_bytes() const = 0;
  // Names everything the KV cache's bytes depend on (family, weight format, shapes, a digest of some weights),
  // so that KV blocks saved to disk by the prefix cache are never restored into another model.
  virtual std::string fingerprint() const = 0;

  // Records one forward step. Writes the batch into host-visible input buffers, so the previous step must be
  // complete. The sequences' KV blocks must be reserved through positions + 1. Logits of logit_rows land in
  // logits() rows 0..R-1.
  virtual void record_step(gpu::CommandList& cmd, const StepBatch& batch) = 0;
  virtual const gpu::Buffer& logits() const = 0;  // [max_step_tokens, V] f32
};

// The fingerprint of a loaded model: its config's shapes, the weight format and `weights_digest` (a checksum of
// some of its weights, which tells fine-tunes of one architecture apart).
std::string model_fingerprint(const ModelConfig& config, ops::WeightType weight_type, uint64_t weights_digest);

Result<std::unique_ptr<Model>> load_model(const std::filesystem::path& dir, gpu::Context& context,
                                          const LoadOptions& options);

}  // namespace mach::model
