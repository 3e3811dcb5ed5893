#include "experts/probes.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <numeric>
#include <thread>
#include <vector>

#include "gpu/command_list.hpp"

namespace mach::experts {
namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

double probe_host_read(uint64_t bytes, unsigned threads) {
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  const uint64_t words = std::max<uint64_t>(bytes / 8 / threads, 4) / 4 * 4 * threads;
  std::vector<uint64_t> data(words);
  for (uint64_t i = 0; i < words; ++i) data[i] = i;  // touched: the pages exist before timing
  std::vector<uint64_t> sums(threads);
  std::vector<double> ns;
  for (int r = 0; r < 6; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        const uint64_t* p = data.data() + words / threads * t;
        uint64_t a = 0, b = 0, c = 0, d = 0;
        for (uint64_t i = 0; i < words / threads; i += 4) a += p[i], b += p[i + 1], c += p[i + 2], d += p[i + 3];
        sums[t] = a + b + c + d;
      });
    for (auto& th : pool) th.join();
    if (r > 0) ns.push_back(std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count());
  }
  volatile uint64_t sink = std::accumulate(sums.begin(), sums.end(), uint64_t{0});  // the reads are used
  (void)sink;
  return words * 8 / *std::min_element(ns.begin(), ns.end());
}

double probe_upload(gpu::Context& context, uint64_t bytes) {
  auto src = context.create_buffer(bytes, gpu::MemoryKind::host_upload, "upload probe src");
  auto dst = context.create_buffer(bytes, gpu::MemoryKind::device, "upload probe dst");
  std::memset(src.mapped(), 1, bytes);
  auto cmd = context.begin_commands();
  std::vector<double> ns;
  for (int r = 0; r < 6; ++r) {
    cmd->begin();
    for (int i = 0; i < 4; ++i) cmd->copy(src, 0, dst, 0, bytes);
    cmd->timestamp("copies");
    cmd->end();
    context.wait(context.submit(*cmd));
    if (r > 0) ns.push_back(cmd->elapsed_ns() / 4);
  }
  return bytes / median(ns);
}

}  // namespace mach::experts
