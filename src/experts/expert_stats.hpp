// Counters of expert streaming, per MoE layer, as /v1/cache/stats and `mach generate --json` report them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace mach::experts {

struct ExpertLayerStats {
  uint32_t layer = 0;      // the model's layer number
  uint32_t pinned = 0;     // slots held by pinned experts (never evicted; their uses count as hits)
  uint64_t hits = 0;       // (step, expert) uses served by an expert already in the bank
  uint64_t misses = 0;     // (step, expert) uses that had to load the expert
  uint64_t ram_hits = 0;   // misses served by the host-RAM tier (copied from RAM, no sidecar read)
  uint64_t passes = 0;     // expert passes run (more than one per step when a step's experts outnumber the slots)
  uint64_t bytes_read = 0; // slab bytes read from the sidecar
  uint64_t bytes_uploaded = 0;  // slab bytes copied into the bank (every miss, from RAM or staging)
  uint64_t read_ns = 0;    // wall time of the sidecar reads (io_uring, all reads of a pass in flight together)
  uint64_t stall_ns = 0;   // wall time the step stood still at this layer on the host: ids readback, planning,
                           // reads, checksums, staging (the GPU's own time for the copies is not in it)
  uint64_t errors = 0;     // failed loads (read errors, checksum mismatches)
  // Prefetch: the previous layer's hidden state through this layer's router predicts this layer's experts.
  uint64_t prefetch_predicted = 0;  // experts predicted (per step, distinct)
  uint64_t prefetch_correct = 0;    // of those, the ones the step then routed to
  uint64_t prefetch_reads = 0;      // predicted experts in neither the bank nor the RAM tier, read ahead into it
                                    // (slab_bytes each; not in bytes_read and read_ns, which are the reads a
                                    // step waited for)
  uint64_t prefetch_failed = 0;     // of those reads, the ones that failed (dropped; a later use reads again)
  // Uploads ahead (ExpertStreamer::upload_predicted): predicted experts the RAM tier held, copied into the bank
  // on the transfer queue while the previous layer computed (in bytes_uploaded), and how many the step then
  // used (counted as misses and RAM hits: the bank did not hold them when the step began).
  uint64_t ahead_uploads = 0;
  uint64_t ahead_used = 0;
  // Steps whose uploads ahead were not yet complete when the step's expert products were recorded (so the GPU
  // waits for them), and the uploads' summed age then, from their submission: the copies' share of a step's
  // wall time when the first is close to the steps and the second to their duration.
  uint64_t ahead_late = 0;
  uint64_t ahead_late_age_ns = 0;
  // Misses read without blocking the caller: the server's loop starts a pass's reads into the RAM tier and
  // serves other work until they are in (ExpertStreamer::start_pass_reads). Also in bytes_read and read_ns.
  uint64_t awaited_reads = 0;
  // Pairs (token, expert) computed on the host's cores (--host-experts; not hits or misses), the host's busy
  // time for them (from the start of each layer's share to the end of its last item), and the time the step
  // waited for them after its GPU work was recorded (included in stall_ns).
  uint64_t host_pairs = 0;
  uint64_t host_ns = 0;
  uint64_t host_wait_ns = 0;
  // Per expert of the layer: the steps that routed to it (the input of an expert profile, expert_profile.hpp;
  // not in to_json, and not summed by total()).
  std::vector<uint64_t> uses;
};

// An expert whose last load failed. It is read again the next time a step routes to it, so a transient
// error (or a repaired file) heals, and a lasting one fails each step that needs it, each time with `error`.
struct BadExpert {
  uint32_t layer = 0;
  uint32_t expert = 0;
  std::string error;
};

struct ExpertStats {
  bool streaming = false;
  uint32_t slots_per_layer = 0;
  uint64_t bank_bytes = 0;   // all layers' banks on the GPU
  uint64_t slab_bytes = 0;
  std::string eviction;      // lru, lfu, lfru
  uint32_t upload_cap = 0;   // slots per layer one step may load
  bool direct_read = false;  // O_DIRECT reads (false: the filesystem refused it; reads are buffered)
  uint64_t host_cache_bytes = 0;    // the host-RAM tier (0: none)
  uint32_t host_cache_entries = 0;  // slabs it holds at most
  bool prefetch = false;            // experts predicted from the previous layer are read ahead
  bool upload_ahead = false;        // and uploaded ahead into the bank from the RAM tier
  std::string transfer_queue;       // the queue those uploads take (gpu::Context::transfer_queue_kind)
  uint32_t host_experts = 0;        // experts per layer computed on the host's cores (0: none)
  uint32_t host_threads = 0;        // the threads that compute them
  uint32_t host_max_tokens = 0;     // steps of more tokens stream them through the bank instead
  uint64_t host_experts_bytes = 0;  // their slabs in host memory
  std::string host_simd;            // their kernel: "avx2" or "portable"
  std::vector<ExpertLayerStats> layers;
  std::vector<BadExpert> bad;

  ExpertLayerStats total() const;  // summed over layers (layer = 0)
};

nlohmann::json to_json(const ExpertStats& stats);

}  // namespace mach::experts
