// Experts computed on the host's cores (--host-experts N). With streaming, every routed expert the GPU bank
// lacks crosses PCIe, and the host's own memory is often as fast as that link (docs/performance.md: 51 GB/s
// of copies against 68-95 GB/s of host reads on the H200 machines). So a fixed set of N experts per MoE layer
// lives in host memory, is never uploaded, and the pairs routed to it are computed by a pool of host threads
// while the GPU bank streams the others: the two links to expert bytes (PCIe into the bank, host memory into
// the cores) work at once, and the bank caches fewer distinct experts, so it hits more.
//
// The set is fixed (the highest-numbered unpinned experts of each layer), so each expert is always computed
// by the same device with the same arithmetic: a request's logits never depend on what the bank held before
// (the streamer's guarantee, expert_streamer.hpp), and greedy output repeats exactly.
//
// The arithmetic, for an expert of the qwen3_moe slab layout (gate_up [2I, H]: gate rows, then up rows; down
// [H, I]) in q4 or q8_0: y = down · (silu(gate · x) ⊙ (up · x)). The activations (x, then the SwiGLU output)
// are quantized to int8 per group of the weight format (scale = max|v| / 127), the dot products run in
// integers per group, and each group adds scale_w · scale_v · Σ q_w q_v (+ min_w · Σ v for q4's affine groups,
// with the exact float sum of the group's values). An AVX2 kernel serves x86-64 hosts that have it (checked
// at run time; $MACH_HOST_SIMD=0 forces the portable loop, which gives the same sums in another order).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <thread>
#include <vector>

#include "experts/sidecar.hpp"
#include "gpu/buffer.hpp"
#include "gpu/context.hpp"
#include "mach/error.hpp"
#include "ops/weight_format.hpp"

namespace mach::experts {

class SlabReader;

// A pool of threads that runs jobs of numbered items in phases: every item of phase p starts after every item
// of phase p - 1 is done. The caller of wait() works on items too. Idle threads spin for a while (the next
// layer's job comes within a fraction of a millisecond during decode), then sleep.
class WorkerPool {
 public:
  // `threads` counts the caller: threads - 1 workers are started (none for 1). An idle worker spins for
  // `spin` before it sleeps; the default, the host experts', is more than the gap between two layers' jobs
  // during decode (a GPU segment and a readback), so that a decoding stream never pays a wake-up per layer.
  explicit WorkerPool(unsigned threads, std::chrono::microseconds spin = std::chrono::microseconds(2000));
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  unsigned threads() const { return static_cast<unsigned>(workers_.size()) + 1; }
  // Starts a job: phase_items[p] items in phase p; fn(p, i) runs item i of phase p exactly once. Returns at
  // once; call wait() before the next start(). fn must not throw.
  void start(std::vector<uint32_t> phase_items, std::function<void(uint32_t, uint32_t)> fn);
  // Works on the job's items, then waits until all are done.
  void wait();
  // Wall time from start() to the end of the job's last item (after wait()).
  uint64_t last_job_ns() const { return last_job_ns_; }

 private:
  void work(uint64_t generation);
  void worker_main();

  std::chrono::microseconds spin_;
  std::vector<std::thread> workers_;
  // (generation << 32) | next item: an item is taken with one compare-exchange that also proves its job is
  // still the current one, so a thread that slept through a job never takes an item of a later one.
  std::atomic<uint64_t> state_{0};
  std::atomic<uint32_t> done_{0};
  std::atomic<uint32_t> total_{0};
  std::vector<uint32_t> ends_;  // cumulative item counts by phase; written by start(), read after a take
  std::function<void(uint32_t, uint32_t)> fn_;
  std::atomic<bool> stop_{false};
  bool running_ = false;
  std::chrono::steady_clock::time_point started_;
  std::atomic<int64_t> finished_{0};  // steady_clock ticks when the last item ended
  uint64_t last_job_ns_ = 0;
};

// A matrix of a host-resident slab: quants then scales, weight_format.hpp's layout.
struct HostMatrix {
  const std::byte* data = nullptr;
  ops::WeightType type = ops::WeightType::q4;
  uint32_t rows = 0;
  uint32_t cols = 0;
};

// Activations quantized for dot_rows: per group of `group` values, int8 quants (|q| <= 127), the scale and
// the float sum of the group's values.
void quantize_acts(std::span<const float> v, uint32_t group, int8_t* q, float* scale, float* sum);

// One token's quantized activations (quantize_acts) and where its dot products go.
struct RowActs {
  const int8_t* q = nullptr;
  const float* scale = nullptr;
  const float* sum = nullptr;
  float* out = nullptr;
};
// The AVX2 kernel unpacks each row's weights once for up to this many tokens.
inline constexpr uint32_t kRowTokens = 4;

// Rows of `width` activations quantized for dot_rows (quantize_acts): int8 quants, and per group of `group`
// values the scale and the float sum of the group's values.
class QuantizedActs {
 public:
  void resize(uint64_t rows, uint32_t width, uint32_t group);
  void quantize(uint64_t row, const float* values);
  RowActs row(uint64_t row, float* out = nullptr) const;

 private:
  uint32_t width_ = 0, group_ = 1;
  std::vector<int8_t> q_;
  std::vector<float> scale_, sum_;
};

// For each token t of `acts`: t.out[r - r0] = row r of `m` · t's quantized activations, rows [r0, r1). `simd`:
// the AVX2 kernel where the host has it (q4 only; q8_0 always runs the portable loop). A token's results do
// not depend on the other tokens of the call.
void dot_rows(const HostMatrix& m, uint32_t r0, uint32_t r1, std::span<const RowActs> acts, bool simd);
bool host_has_avx2();

// --host-experts auto: how many of a layer's `experts` the host computes, with `slots` bank slots, the host's
// cores reading slabs at `host_gb_per_s` and copies into the bank running at `upload_gb_per_s`: the split that
// balances the two times per token and layer for routing spread evenly over the experts, k N / E pairs on the
// host (slabs read at h) against k (E - N - S) / E misses of the bank (slabs copied at u), equal when
// N = (E - S) h / (h + u), rounded. 0 when the bank holds every expert or a rate is not positive.
// Not E - S (the host computes every expert the bank cannot hold), although on idle H200 hosts with fast memory
// that measured 0-13% faster on a checkpoint whose routing is uniform: on a host whose cores were busy with
// other work it fell to a quarter of plain streaming, while the balanced split stayed above it
// (docs/performance.md, 2026-12-04).
uint32_t choose_host_experts(uint32_t experts, uint32_t slots, double host_gb_per_s, double upload_gb_per_s);

class HostExperts {
 public:
  // Picks per MoE layer the `per_layer` highest-numbered experts that `pinned` does not list and reads their
  // slabs (checksummed) into host memory that the GPU can copy from too (host-visible, cached where the
  // device offers it: large steps stream these experts through the bank instead, see StreamerOptions);
  // `threads` host threads compute them (0: every core). Errors: a sidecar in a type other than q4 or q8_0,
  // more host experts than a layer has, host memory that cannot be allocated, a slab that cannot be read.
  static Result<std::unique_ptr<HostExperts>> create(gpu::Context& context, const Sidecar& sidecar,
                                                     SlabReader& reader,
                                                     const std::map<uint32_t, std::vector<uint32_t>>& pinned,
                                                     uint32_t per_layer, unsigned threads);

  uint32_t per_layer() const { return per_layer_; }
  unsigned threads() const { return pool_.threads(); }
  uint64_t bytes() const { return bytes_; }
  bool simd() const { return simd_; }
  bool holds(uint32_t layer, uint32_t expert) const;
  // Where a held expert's slab lies, for a copy into the bank.
  struct Source {
    const gpu::Buffer* buffer = nullptr;
    uint64_t offset = 0;
  };
  Source source(uint32_t layer, uint32_t expert) const;

  // Starts computing y[p * H, +H) = expert(ids[p]) applied to x[(p / k) * H, +H) for every pair p of `ids`
  // ([tokens, k] router ids) whose expert this holds, and returns those pairs, ascending. The pool works
  // while the caller goes on; wait() finishes. x and y stay the caller's and must outlive wait().
  std::span<const uint32_t> start(uint32_t layer, std::span<const uint32_t> ids, uint32_t k, const float* x, float* y);
  void wait();
  // The host's busy time of the job waited for last: from start() to the end of its last item.
  uint64_t last_job_ns() const { return pool_.last_job_ns(); }

 private:
  struct Task {  // one expert of the step and the pairs routed to it
    uint32_t expert = 0;
    std::vector<uint32_t> pairs;
  };
  HostExperts(const SidecarLayout& layout, unsigned threads);
  HostMatrix matrix(uint32_t layer, uint32_t expert, size_t t) const;
  void run(uint32_t phase, uint32_t item);

  const SidecarLayout& layout_;
  const uint32_t H_, I_;  // hidden size (down's rows) and expert width (down's columns)
  uint32_t per_layer_ = 0;
  uint64_t bytes_ = 0;
  uint64_t stride_ = 0;  // slab_bytes rounded up to the O_DIRECT alignment
  bool simd_ = false;
  std::vector<int> slot_of_;  // (layer * experts + expert) -> index into the layer's slabs, -1: not held
  uint32_t experts_ = 0;
  std::vector<gpu::Buffer> buffers_;   // one per layer with experts: its held slabs, stride_ apart
  std::vector<int> buffer_of_;         // model layer -> index into buffers_, -1 for layers without experts
  WorkerPool pool_;
  // The job in flight.
  uint32_t layer_ = 0, k_ = 0;
  const float* x_ = nullptr;
  float* y_ = nullptr;
  std::vector<uint32_t> pairs_;
  std::vector<Task> tasks_;
  std::vector<uint32_t> tokens_;      // the distinct tokens of the job's pairs
  std::vector<uint32_t> token_slot_;  // token -> its row in xq_ (valid for tokens_)
  QuantizedActs xq_;                  // [tokens_, H]
  std::vector<float> act_;            // [pairs_, I] SwiGLU outputs, in pairs_ order
  QuantizedActs aq_;                  // [pairs_, I]
  std::vector<uint32_t> pair_row_;    // pair -> its row in act_
};

}  // namespace mach::experts
