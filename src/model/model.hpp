// A model loaded onto the GPU and ready to run forward steps. Each family implements Model in one file
// (src/model/<family>.cpp) from the ops in src/ops; load_model picks the family from config.json.
//
// A step is a batch of tokens, each with its sequence (a row of the KV cache's block table) and position,
// so decode tokens, prefill chunks and verify blocks of many sequences share one forward pass.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/kv_cache.hpp"
#include "experts/eviction.hpp"
#include "experts/expert_stats.hpp"
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

  // Routed experts of an engine-layout checkpoint (config.json + model.safetensors + expert_sidecar/, written by
  // mach prune). Their GPU format is the sidecar's quant whatever weight_type says. Without streaming every
  // expert is resident, and loading refuses when they do not fit in device memory. With streaming each MoE
  // layer gets a bank of expert slots on the GPU and misses are read from the sidecar during the step.
  bool streaming = false;
  uint32_t expert_slots = 0;          // per MoE layer; 0: sized from expert_cache_bytes
  uint64_t expert_cache_bytes = 0;    // device memory for all layers' banks when expert_slots is 0
  experts::EvictionKind eviction = experts::EvictionKind::lru;
  // Hot experts kept in the bank for good, per model layer (router ids; --pin-experts); at most slots - 1.
  std::map<uint32_t, std::vector<uint32_t>> pinned_experts;
  // The host-RAM tier of streaming (experts/host_cache.hpp), bytes; 0: none; unset: what the host can spare
  // (default_host_cache_bytes), at most the whole sidecar, and none when that is less than one bank.
  std::optional<uint64_t> host_cache_bytes;
  // Slots per layer one step may load (--expert-upload-cap); 0: no cap; unset: half the slots (at least 1),
  // so that a prompt touching every expert keeps the other half of each bank for the decoding sequences.
  std::optional<uint32_t> expert_upload_cap;
  // Prefetch (--expert-prefetch): each layer's hidden state also goes through the next layer's router, and
  // the experts it picks are read ahead into the host-RAM tier (needs the tier).
  bool expert_prefetch = true;
  // Experts per MoE layer computed on the host's cores instead of streamed (--host-experts,
  // experts/host_experts.hpp), and the threads that compute them (0: every core).
  uint32_t host_experts = 0;
  // --host-experts auto (the CLI's default): host_experts is chosen at load from quick probes of the host's
  // read rate and the host-to-device copy rate (experts::choose_host_experts), and is 0 where computing on
  // the host cannot help: a CPU device, a sidecar the host kernels do not take, a bank that holds every expert,
  // an explicit host_cache_bytes, or a host without the free memory to hold every expert.
  bool host_experts_auto = false;
  unsigned host_threads = 0;
  uint32_t host_max_tokens = 16;  // steps of more tokens stream them through the bank (--host-max-tokens)
  // The device memory the load may plan for; 0: the device's device-local memory (tests pass less).
  uint64_t device_memory_bytes = 0;
  // Notes of the load a user should see (e.g. which format the experts use); unset: dropped.
  std::function<void(const std::string&)> log;
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
  // Bytes of all weights in their GPU formats, every routed expert included (also those a streaming model
  // keeps on disk), so that bandwidth limits count what a step reads.
  virtual uint64_t weight_bytes() const = 0;
  // Bytes of one routed expert (all its matrices) in one layer; 0 for a model without routed experts.
  virtual uint64_t expert_bytes() const = 0;
  // Names everything the KV cache's bytes depend on (family, weight format, shapes, a digest of some weights),
  // so that KV blocks saved to disk by the prefix cache are never restored into another model.
  virtual std::string fingerprint() const = 0;

  // Records one forward step. Writes the batch into host-visible input buffers, so the previous step must be
  // complete. The sequences' KV blocks must be reserved through positions + 1. Logits of logit_rows land in
  // logits() rows 0..R-1.
  //
  // A streaming model records a step in segments: record_step records up to the first MoE router whose
  // experts it must look at, and step_pending() is then true. The caller submits, waits for the segment and
  // calls continue_step() with the list begun again; that reads the router's ids back, loads the missing
  // experts (blocking on the reads) and records the next segment, until step_pending() is false. An error
  // (a read failure or a checksum mismatch of an expert) abandons the step: step_pending() is false, the
  // step's logits are not valid, and the next record_step starts afresh. run_step() does all of it.
  virtual void record_step(gpu::CommandList& cmd, const StepBatch& batch) = 0;
  // The whole step as a command list the model keeps: recorded on the first step of its shape (token count,
  // logit rows, attention's key split, whether the block table changed) and replayed by later ones, so a
  // decode step costs the host a few memcpys instead of recording ~440 dispatches (1.15 ms per step on the
  // H200 machine's host, 2026-12-03). Writes the batch into the input buffers like record_step; submit the
  // list and wait for it as after record_step, and never begin or record into it. nullptr where the model
  // records every step (streaming, steps over 32 tokens, $MACH_STEP_REPLAY=0): use record_step then.
  virtual gpu::CommandList* replay_step(const StepBatch& /*batch*/) { return nullptr; }
  virtual bool step_pending() const { return false; }
  virtual Result<void> continue_step(gpu::CommandList& /*cmd*/) { return {}; }
  // For a caller that must not block on the disk (the server's loop), before each continue_step: starts the
  // next pass's expert reads into the RAM tier and returns at once, true when reads are in flight; poll
  // step_reads_pending() (never blocks) until false, then continue_step reads nothing itself. Without a
  // streaming model or its RAM tier, false (continue_step reads, blocking).
  virtual bool start_step_reads() { return false; }
  virtual bool step_reads_pending() { return false; }
  virtual const gpu::Buffer& logits() const = 0;  // [max_step_tokens, V] f32

  // Counters of expert streaming (streaming = false and no layers when the experts are resident).
  virtual experts::ExpertStats expert_stats() const { return {}; }
  // One line for startup logs: residency=resident|streaming and its sizes.
  virtual std::string residency() const { return "residency=resident"; }
};

// Records, submits and waits for a whole step, segment by segment (Context::wait: tools and tests).
Result<void> run_step(gpu::Context& context, gpu::CommandList& cmd, Model& model, const StepBatch& batch);

// The fingerprint of a loaded model: its config's shapes, the weight format and `weights_digest` (a checksum of
// some of its weights, which tells fine-tunes of one architecture apart).
std::string model_fingerprint(const ModelConfig& config, ops::WeightType weight_type, uint64_t weights_digest);

Result<std::unique_ptr<Model>> load_model(const std::filesystem::path& dir, gpu::Context& context,
                                          const LoadOptions& options);

}  // namespace mach::model
