// The host experts' compute rate (experts/host_experts.hpp) on a real sidecar, on the host's cores alone (the
// GPU context only allocates the host memory the slabs live in): per MoE layer
// the `--per-layer` host experts are loaded, then one token per layer routed to `--k` distinct host experts
// (random, fixed seed) runs through HostExperts::start / wait, layer after layer as a decode step would, and
// the rate is the slab bytes those pairs read over the wall time. One JSON line per thread count: the host,
// the shape, the median and spread of the repeats, and the fraction of a host read probe of the same bytes.
// Before timing, each thread count's outputs are checked against one thread's (bit for bit: the same kernel
// and the same order per row).
//
//   host_experts_bench SIDECAR_DIR [--per-layer N] [--k K] [--tokens T] [--threads 16,8,...] [--steps S]
//                      [--repeats R] [--copy-load]
// With --tokens T > 1 (a verify block, a small batch) each token picks its own k experts, so experts serve
// several tokens and the kernel's work per byte grows: the figure to watch is then us_per_layer.
// With --copy-load the timed repeats run again while the transfer queue copies host memory of the RAM tier's
// kind into device memory back to back, as streaming's uploads do beside the host's share: the line then also
// gives both rates together and the copies' rate alone, i.e. how the cores and the copy engine share the host's
// memory.
#include <fmt/format.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "engine/stats.hpp"
#include "experts/host_experts.hpp"
#include "experts/probes.hpp"
#include "gpu/command_list.hpp"
#include "experts/sidecar.hpp"
#include "experts/slab_reader.hpp"

using namespace mach;

namespace {

using Clock = std::chrono::steady_clock;

std::vector<unsigned> parse_list(const std::string& s) {
  std::vector<unsigned> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) out.push_back(static_cast<unsigned>(std::stoul(item)));
  return out;
}

nlohmann::json spread(const std::vector<double>& v) {
  return {{"median", engine::percentile(v, 0.5)}, {"p10", engine::percentile(v, 0.1)}, {"p90", engine::percentile(v, 0.9)}};
}

// Host-to-device copies on the transfer queue, back to back, from a host-visible buffer of the RAM tier's kind
// into device memory, on a thread of its own while the caller's thread runs something else.
class CopyLoad {
 public:
  static constexpr uint64_t kChunk = uint64_t{64} << 20;
  static constexpr int kLists = 4;

  explicit CopyLoad(gpu::Context& context)
      : context_(context),
        src_(context.create_buffer(kChunk * kLists, gpu::MemoryKind::host_upload, "copy load src", true)),
        dst_(context.create_buffer(kChunk * kLists, gpu::MemoryKind::device, "copy load dst", true)) {
    std::memset(src_.mapped(), 1, kChunk * kLists);
    for (int i = 0; i < kLists; ++i) lists_.push_back(context.begin_transfer_commands());
  }
  ~CopyLoad() { stop(); }

  void start() {
    stop_ = false;
    copied_ = 0;
    t0_ = Clock::now();
    thread_ = std::thread([this] {
      std::vector<gpu::Ticket> tickets(kLists);
      uint64_t n = 0;
      for (; !stop_.load(std::memory_order_relaxed); ++n) {
        const int i = static_cast<int>(n % kLists);
        if (n >= kLists) context_.wait_transfers(tickets[i]);
        lists_[i]->begin();
        lists_[i]->copy(src_, uint64_t(i) * kChunk, dst_, uint64_t(i) * kChunk, kChunk);
        tickets[i] = context_.submit_transfer(*lists_[i]);
      }
      context_.wait_transfers({context_.last_transfer()});
      copied_ = n * kChunk;
    });
  }
  // Stops the copies once those in flight are done; GB/s of all of them over the whole time.
  double stop() {
    if (!thread_.joinable()) return 0;
    stop_ = true;
    thread_.join();
    return copied_ / std::chrono::duration<double>(Clock::now() - t0_).count() * 1e-9;
  }

 private:
  gpu::Context& context_;
  gpu::Buffer src_, dst_;
  std::vector<std::unique_ptr<gpu::CommandList>> lists_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  uint64_t copied_ = 0;
  Clock::time_point t0_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"host experts compute rate"};
  std::string dir;
  uint32_t per_layer = 32, k = 8, tokens = 1, steps = 16, repeats = 5;
  std::string threads_list;
  app.add_option("sidecar", dir, "expert_sidecar directory (of mach synth or mach prune)")->required();
  app.add_option("--per-layer", per_layer, "host experts per layer");
  app.add_option("--k", k, "distinct experts per token and layer");
  app.add_option("--tokens", tokens, "tokens per step");
  app.add_option("--threads", threads_list, "thread counts, comma separated (default: every core)");
  app.add_option("--steps", steps, "decode steps per repeat (each runs every layer)");
  app.add_option("--repeats", repeats, "timed repeats");
  bool copy_load = false;
  app.add_flag("--copy-load", copy_load, "time again while the transfer queue copies host memory to the GPU");
  CLI11_PARSE(app, argc, argv);

  auto context = gpu::Context::create();
  if (!context) return fmt::print(stderr, "host_experts_bench: {}\n", context.error().message), 1;
  auto sidecar = experts::Sidecar::open(dir);
  if (!sidecar) return fmt::print(stderr, "host_experts_bench: {}\n", sidecar.error().message), 1;
  auto reader = experts::SlabReader::open(*sidecar, 64);
  if (!reader) return fmt::print(stderr, "host_experts_bench: {}\n", reader.error().message), 1;
  const auto& layout = sidecar->layout();
  const uint32_t H = layout.tensors[1].rows;
  if (k > per_layer) return fmt::print(stderr, "host_experts_bench: --k must be at most --per-layer\n"), 1;
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  std::vector<unsigned> counts = threads_list.empty() ? std::vector<unsigned>{cores} : parse_list(threads_list);

  // The routing of every (step, layer): per token k distinct experts among the layer's host ones (the highest
  // ids).
  std::mt19937 rng(42);
  std::vector<std::vector<uint32_t>> ids;  // [step * layers + layer], [tokens, k]
  for (uint32_t s = 0; s < steps; ++s)
    for (const auto& l : layout.layers) {
      std::vector<uint32_t> step_ids;
      for (uint32_t t = 0; t < tokens; ++t) {
        std::vector<uint32_t> pick(per_layer);
        for (uint32_t i = 0; i < per_layer; ++i) pick[i] = static_cast<uint32_t>(l.experts.size()) - per_layer + i;
        std::shuffle(pick.begin(), pick.end(), rng);
        step_ids.insert(step_ids.end(), pick.begin(), pick.begin() + k);
      }
      ids.push_back(step_ids);
    }
  std::vector<float> x(uint64_t{tokens} * H);
  for (auto& v : x) v = std::normal_distribution<float>(0.0f, 1.0f)(rng);
  std::vector<float> y(uint64_t{tokens} * k * H), want(y.size());

  std::vector<float> first_outputs;  // of the first (layer, step), one thread
  for (unsigned threads : counts) {
    auto host = experts::HostExperts::create(**context, *sidecar, **reader, {}, per_layer, threads);
    if (!host) return fmt::print(stderr, "host_experts_bench: {}\n", host.error().message), 1;
    auto run_step = [&](uint32_t s) {
      for (size_t li = 0; li < layout.layers.size(); ++li) {
        (*host)->start(layout.layers[li].layer, ids[s * layout.layers.size() + li], k, x.data(), y.data());
        (*host)->wait();
      }
    };
    // Check: the first layer's outputs equal a one-thread run's.
    (*host)->start(layout.layers[0].layer, ids[0], k, x.data(), y.data());
    (*host)->wait();
    if (first_outputs.empty()) {
      auto one = experts::HostExperts::create(**context, *sidecar, **reader, {}, per_layer, 1);
      if (!one) return fmt::print(stderr, "host_experts_bench: {}\n", one.error().message), 1;
      (*one)->start(layout.layers[0].layer, ids[0], k, x.data(), want.data());
      (*one)->wait();
      first_outputs = want;
    }
    if (std::memcmp(y.data(), first_outputs.data(), y.size() * 4) != 0)
      return fmt::print(stderr, "host_experts_bench: {} threads compute other outputs than one thread\n", threads), 1;
    for (float v : y)
      if (!std::isfinite(v)) return fmt::print(stderr, "host_experts_bench: outputs not finite\n"), 1;

    run_step(0);  // warm
    std::vector<double> gbps, layer_us;
    // Slab bytes of the distinct experts each (step, layer) touches: what the host reads from memory.
    double bytes = 0;
    for (const auto& step_ids : ids) {
      std::vector<uint32_t> distinct(step_ids);
      std::sort(distinct.begin(), distinct.end());
      bytes += double(std::unique(distinct.begin(), distinct.end()) - distinct.begin()) * layout.slab_bytes;
    }
    auto timed = [&](std::vector<double>& gbps, std::vector<double>& layer_us) {
      for (uint32_t r = 0; r < repeats; ++r) {
        const auto t0 = Clock::now();
        for (uint32_t s = 0; s < steps; ++s) run_step(s);
        const double sec = std::chrono::duration<double>(Clock::now() - t0).count();
        gbps.push_back(bytes / sec * 1e-9);
        layer_us.push_back(sec * 1e6 / (double(steps) * layout.layers.size()));
      }
    };
    timed(gbps, layer_us);
    nlohmann::json with_copies;
    if (copy_load) {
      CopyLoad load(**context);
      load.start();  // warm: the first copies touch the pages
      load.stop();
      load.start();
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      const double alone = load.stop();
      std::vector<double> g, u;
      load.start();
      timed(g, u);
      const double during = load.stop();
      with_copies = {{"copy_gb_per_s_alone", alone},
                     {"copy_gb_per_s", during},
                     {"host_gb_per_s", spread(g)},
                     {"us_per_layer", spread(u)},
                     {"sum_gb_per_s", engine::percentile(g, 0.5) + during}};
    }
    const double probe = experts::probe_host_read(uint64_t{1} << 30, threads);
    nlohmann::json line = {{"test", "host_experts"},
                           {"threads", threads},
                           {"cores", cores},
                           {"simd", (*host)->simd() ? "avx2" : "portable"},
                           {"quant", std::string(ops::weight_type_name(layout.quant))},
                           {"layers", layout.layers.size()},
                           {"per_layer", per_layer},
                           {"k", k},
                           {"tokens", tokens},
                           {"slab_bytes", layout.slab_bytes},
                           {"gb_per_s", spread(gbps)},
                           {"us_per_layer", spread(layer_us)},
                           {"host_read_gb_per_s", probe},
                           {"fraction_of_host_read", engine::percentile(gbps, 0.5) / probe}};
    if (copy_load) line["with_copies"] = with_copies;
    fmt::print("{}\n", line.dump());
  }
  return 0;
}
