// Expert streaming on the GPU: per MoE layer a bank of `slots` expert slots (one device buffer, so the
// experts of a layer stay one mul_mat_id dispatch per pass), a slot table on the device mapping expert id to
// slot (ops::kNoSlot for experts outside the bank or the current pass), and the miss path:
//
//   the step's router ids for a layer (read back by the model)  ->  begin_layer: passes of <= slots experts
//   record_pass: SlotMap picks the slots (hits stay, misses evict by the policy); a miss found in the host-RAM
//   tier (host_cache.hpp) is copied from there, the others are read by SlabReader (io_uring, O_DIRECT,
//   checksummed) into the tier (or host-visible staging without one), and the pass's copies into the slots and
//   its slot table are recorded ahead of the layer's expert products.
//
// The first design is synchronous: the model ends a segment of the step at each router, the caller submits and
// waits, and the reads of a pass complete before its commands are recorded. Two exceptions: prefetch reads
// the next layer's likely experts into the RAM tier while the GPU runs this layer, and start_pass_reads lets
// a caller that must not block (the server's loop) start a pass's reads and poll them (docs/engine.md says
// what is not done yet: overlap of hits with misses on the GPU).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <vector>

#include "experts/eviction.hpp"
#include "experts/expert_stats.hpp"
#include "experts/host_cache.hpp"
#include "experts/host_experts.hpp"
#include "experts/sidecar.hpp"
#include "experts/slab_reader.hpp"
#include "experts/slot_map.hpp"
#include "gpu/command_list.hpp"
#include "gpu/context.hpp"

namespace mach::experts {

struct StreamerOptions {
  uint32_t slots = 0;  // per MoE layer, >= 1 (more than a layer's experts are clamped to its expert count)
  EvictionKind eviction = EvictionKind::lru;
  unsigned queue_depth = 64;  // slab reads in the kernel at once
  // Hot experts kept in their layer's bank for good, by model layer (router ids); at most slots - 1 per layer.
  std::map<uint32_t, std::vector<uint32_t>> pinned;
  // The host-RAM tier (host_cache.hpp): bytes of pinned host memory for slabs read before; 0: none (misses
  // always read the sidecar). At least one bank's worth (slots slabs) when not 0.
  uint64_t host_cache_bytes = 0;
  // Slots of a layer's bank one step may load (SlotMap's upload cap): a step needing more misses runs them in
  // turns through those slots, so a long prompt leaves the rest of the bank to the sequences that decode.
  // 0: no cap.
  uint32_t upload_cap = 0;
  // Read ahead into the RAM tier the experts prefetch() predicts (needs the tier; ignored without it).
  bool prefetch = true;
  // Experts per MoE layer computed on the host's cores instead of streamed (host_experts.hpp): never in the
  // bank, the RAM tier or a pass. 0: none.
  uint32_t host_experts = 0;
  unsigned host_threads = 0;  // threads that compute them, the caller's included (0: every core)
  // Steps of more tokens stream the host's experts through the bank like the others (copied from the host
  // memory that holds them): the host's cores read a slab at memory speed but compute each of its tokens,
  // which for a prompt chunk costs far more than the copy.
  uint32_t host_max_tokens = 16;
};

class ExpertStreamer {
 public:
  // Allocates the banks, slot tables and staging; opens the layer files; loads the pinned experts. Errors: a
  // bank larger than the device's maxStorageBufferRange, io_uring unavailable, a layer file that cannot be
  // opened, a pin list that names an unknown layer or expert or leaves no free slot, a pinned slab that
  // cannot be read.
  static Result<std::unique_ptr<ExpertStreamer>> create(gpu::Context& context, Sidecar sidecar,
                                                        const StreamerOptions& options);

  // Waits for the uploads ahead still in flight (a step abandoned after one never waited for it).
  ~ExpertStreamer();

  const Sidecar& sidecar() const { return sidecar_; }
  uint32_t slots() const { return slots_; }
  // Tensor `t` of the slab layout (experts::tensor_ref) over layer `layer`'s bank.
  ops::ExpertWeightsRef tensor(uint32_t layer, size_t t) const;
  // Layer `layer`'s slot table on the device: [experts] u32.
  gpu::Binding slot_table(uint32_t layer) const;

  // The ids a step of `tokens` tokens routes to in `layer` (top-k ids of every token, repeats allowed): plans
  // its passes. Returns whether the host computes its host experts' pairs (start_host); if not (more than
  // StreamerOptions::host_max_tokens tokens), they are planned into the passes like the others.
  bool begin_layer(uint32_t layer, std::span<const uint32_t> ids, uint32_t tokens);
  // The experts the next layer will probably use (its router applied to this layer's hidden state, repeats
  // allowed): up to a bank's worth of those in neither its bank nor the RAM tier are read into the tier in
  // the background, and begin_layer(layer) counts how many of the predicted experts the step really used.
  // Call it after the current layer's last record_pass (a pass's reads wait for every read in flight); the
  // next record_pass collects them first. Does nothing without the RAM tier or with StreamerOptions::prefetch
  // off.
  void prefetch(uint32_t layer, std::span<const uint32_t> ids);
  bool prefetching() const { return ram_ && prefetch_; }
  // Uploads ahead: the experts prefetch(layer, ...) predicted that the RAM tier holds and the layer's bank
  // does not get slots now (SlotMap::preload at the layer's next step tick, at most its upload cap), their
  // copies submitted to the context's transfer queue at once, so that they cross PCIe while the GPU computes
  // the current layer and the host plans. begin_layer(layer) requires them (gpu::Context::require_transfer):
  // the compute submissions from then on wait for them on the GPU, and its passes find them in the bank
  // (they count as misses uploaded ahead, not hits). Returns the experts
  // uploaded; 0 without prefetching or with $MACH_UPLOAD_AHEAD=0. Call after prefetch(layer, ...), before
  // begin_layer(layer), while no submitted work reads the layer's bank.
  uint32_t upload_predicted(uint32_t layer);
  // For a caller that must not block (the server's loop): starts reading, into the RAM tier, the experts the
  // layer's next pass needs that are in neither its bank nor the tier, and returns at once; true when reads
  // are in flight. Poll reads_pending() (it never blocks) until false, then record_pass finds them in the tier
  // and reads nothing itself. A failed read is dropped here and read again by record_pass, which reports it.
  // Without the RAM tier it starts nothing (record_pass reads, blocking).
  bool start_pass_reads();
  bool reads_pending();
  // Loads the next pass of the layer begun last and records its copies into the slots and its slot table,
  // to be followed by the layer's expert products. Returns true when it was the layer's last pass. On a
  // failed load it records nothing, empties the pass's target slots, lists the failed experts in
  // stats().bad and returns the first error; the caller abandons the step.
  Result<bool> record_pass(gpu::CommandList& cmd);
  // Host time the step stood still at `layer` (the model measures the readback and calls this).
  void add_stall(uint32_t layer, uint64_t ns);

  // The experts computed on the host (StreamerOptions::host_experts), or null. Their pairs never get a slot:
  // begin_layer plans passes of the other experts only, so the layer's products skip them.
  const HostExperts* host_experts() const { return host_.get(); }
  // Whether the host computes its experts' pairs in a step of `tokens` tokens.
  bool host_computes(uint32_t tokens) const { return host_ && tokens <= host_max_tokens_; }
  // After begin_layer(layer, ids): starts the host's share of the layer, y[p] for every pair p of ids whose
  // expert the host holds, from x [tokens, hidden] (HostExperts::start), and returns those pairs. The caller
  // copies their rows of y into the layer's expert outputs once finish_host() returned.
  std::span<const uint32_t> start_host(uint32_t layer, std::span<const uint32_t> ids, uint32_t k, const float* x,
                                       float* y);
  // Waits for the host's share (the calling thread helps) and counts it.
  void finish_host();

  const ExpertStats& stats() const { return stats_; }

 private:
  struct LayerBank {
    uint32_t layer = 0;  // model layer number
    gpu::Buffer slots;   // slots * slab_bytes
    SlotMap map;
    uint64_t tick = 0;
    LayerBank(uint32_t l, gpu::Buffer b, SlotMap m) : layer(l), slots(std::move(b)), map(std::move(m)) {}
  };
  ExpertStreamer(gpu::Context& context, Sidecar sidecar) : context_(context), sidecar_(std::move(sidecar)) {}
  Result<void> load_pinned(const std::map<uint32_t, std::vector<uint32_t>>& pinned);
  // Moves the finished prefetches into the RAM tier (waiting for those still in flight).
  void collect_prefetches();
  // Before a claim in the RAM tier: lets it reuse entries whose uploads are done, and waits for the uploads
  // when every entry it could take is still read by one.
  void make_claimable(uint64_t stamp);
  LayerBank& bank(uint32_t layer);
  const LayerBank& bank(uint32_t layer) const;

  gpu::Context& context_;
  Sidecar sidecar_;
  uint32_t slots_ = 0;
  uint32_t experts_ = 0;         // per layer (the largest layer's count)
  uint64_t table_stride_ = 0;    // bytes between layers' slot tables
  std::vector<int> bank_of_;     // model layer -> index into banks_, -1 for layers without experts
  std::vector<LayerBank> banks_;
  gpu::Buffer tables_;           // [layers with experts][table_stride_] u32 slot tables
  gpu::Buffer staging_;          // slots * slab_bytes of slabs (none with the RAM tier), then one slot table
  uint64_t table_at_ = 0;        // offset of the slot table in staging_
  std::unique_ptr<HostCache> ram_;  // the host-RAM tier, or null
  uint64_t pass_stamp_ = 0;
  std::unique_ptr<SlabReader> reader_;
  std::unique_ptr<HostExperts> host_;
  uint32_t host_max_tokens_ = 0;
  int host_layer_ = -1;  // the layer whose host share is in flight
  uint64_t host_pairs_ = 0;
  bool prefetch_ = false;
  std::vector<std::vector<uint32_t>> predicted_;  // by bank: the experts prefetch() predicted, until begin_layer
  bool upload_ahead_ = false;
  std::vector<std::vector<uint32_t>> ahead_;      // by bank: experts uploaded ahead, until begin_layer
  std::vector<uint32_t> ahead_now_;               // the current layer's, sorted, until its passes ran
  std::vector<std::unique_ptr<gpu::CommandList>> uploads_;  // a ring of transfer lists, each reused once done
  std::vector<gpu::Ticket> upload_tickets_;
  size_t next_upload_ = 0;
  std::vector<std::chrono::steady_clock::time_point> ahead_since_;  // by bank: when that upload was submitted
  std::vector<gpu::Ticket> ahead_ticket_;         // by bank: the upload of ahead_'s experts
  std::set<std::pair<uint32_t, uint32_t>> awaited_;  // (layer, expert) started by start_pass_reads, not collected
  std::set<std::pair<uint32_t, uint32_t>> awaited_in_;  // of those, collected into the tier for the next pass
  std::chrono::steady_clock::time_point awaited_since_;
  bool awaited_timing_ = false;  // read_ns of the awaited reads not yet counted
  ExpertStats stats_;
  // The layer begun last and its passes still to run.
  int current_ = -1;
  std::vector<std::vector<uint32_t>> passes_;
  size_t next_pass_ = 0;
};

}  // namespace mach::experts
