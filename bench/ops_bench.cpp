// Perf mode of the op harness: times every op case of CaseSet::perf with GPU timestamps and prints one JSON
// line per case (device, op, shape, median and spread, GB/s, GFLOP/s). Each case is checked against its
// CPU reference before it is timed. `--coverage` instead lists embedded shaders that no test case runs.
//
//   ops_bench [--filter SUBSTRING] [--repeats N] [--test-shapes] [--sweep NAME=v1|v2] [--coverage]
#include <fmt/format.h>

#include <CLI/CLI.hpp>

#include "engine/stats.hpp"
#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <set>

#include "gpu/embedded_shaders.hpp"
#include "op_case.hpp"

using namespace mach;
using mach::engine::percentile;

namespace {

// Checks one case against its reference, then times it; prints its JSON line. False when the check failed.
// Times the op with the GPU busy: `repeats` back-to-back copies recorded in one command list, each followed by a
// timestamp, so that no host round trip lets the clocks drop between runs. The list is first replayed for
// at least kWarmupMs (an idle GPU needs that long to reach its boost clock; timing a cold GPU gave the same
// kernel 1 ms one moment and 6 ms the next). Returns the GPU ns of each copy.
constexpr double kWarmupMs = 500;

std::vector<double> time_op(gpu::Context& context, test::OpCase& op, int repeats) {
  auto cmd = context.begin_commands();
  cmd->begin();
  for (int r = 0; r < repeats; ++r) {
    op.record(*cmd);
    cmd->timestamp("op");
  }
  cmd->end();
  const auto start = std::chrono::steady_clock::now();
  do {
    context.wait(context.submit(*cmd));
  } while (std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count() < kWarmupMs);
  context.wait(context.submit(*cmd));
  std::vector<double> ns;
  for (const auto& sample : cmd->read_timestamps()) ns.push_back(sample.ns);
  return ns;
}

void record_op(gpu::CommandList& cmd, test::OpCase& op) {
  cmd.begin();
  op.record(cmd);
  cmd.timestamp("op");
  cmd.end();
}

// One JSON line per value of an environment variable the op reads at record time (`NAME=v1|v2|...`), each
// checked on fresh (NaN-poisoned) output before it is timed.
int sweep_case(gpu::Context& context, test::OpCase& op, const std::string& sweep, int repeats) {
  const size_t eq = sweep.find('=');
  const std::string name = sweep.substr(0, eq);
  int failures = 0;
  auto cmd = context.begin_commands();
  for (size_t pos = eq + 1; pos <= sweep.size();) {
    size_t end = sweep.find('|', pos);
    if (end == std::string::npos) end = sweep.size();
    const std::string value = sweep.substr(pos, end - pos);
    pos = end + 1;
    setenv(name.c_str(), value.c_str(), 1);
    op.poison();
    record_op(*cmd, op);
    context.wait(context.submit(*cmd));
    const auto checked = op.check(context);
    nlohmann::json line = {{"device", context.info().name}, {"op", op.op()}, {"params", op.params()},
                           {"sweep", name + "=" + value}, {"nmse", checked.nmse}};
    if (!(checked.nmse <= op.max_nmse()) || !checked.guards_ok) {
      line["error"] = "output check failed";
      ++failures;
    } else {
      const auto ns = time_op(context, op, repeats);
      line["median_us"] = percentile(ns, 0.5) / 1e3;
      line["gb_per_s"] = op.bytes() / percentile(ns, 0.5);
    }
    fmt::print("{}\n", line.dump());
    std::fflush(stdout);
  }
  unsetenv(name.c_str());
  return failures;
}

bool run_case(gpu::Context& context, test::OpCase& op, size_t index, int repeats) {
  const auto& info = context.info();
  test::Rng rng(0xbe7c0000u + index);
  op.prepare(context, rng);
  auto cmd = context.begin_commands();
  record_op(*cmd, op);
  context.wait(context.submit(*cmd));
  const auto checked = op.check(context);
  nlohmann::json line = {{"device", info.name}, {"op", op.op()}, {"params", op.params()}};
  if (!(checked.nmse <= op.max_nmse()) || !checked.guards_ok) {
    line["error"] = fmt::format("output check failed: nmse {} (bound {}) {}", checked.nmse, op.max_nmse(),
                                checked.detail);
    fmt::print("{}\n", line.dump());
    return false;
  }
  const auto ns = time_op(context, op, repeats);
  const double median = percentile(ns, 0.5);
  line["nmse"] = checked.nmse;
  line["median_us"] = median / 1e3;
  line["p10_us"] = percentile(ns, 0.1) / 1e3;
  line["p90_us"] = percentile(ns, 0.9) / 1e3;
  line["bytes"] = op.bytes();
  line["gb_per_s"] = op.bytes() / median;
  if (op.flops() > 0) line["gflop_per_s"] = op.flops() / median;
  fmt::print("{}\n", line.dump());
  std::fflush(stdout);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mach op benchmarks"};
  std::string filter;
  int repeats = 30;
  bool test_shapes = false, coverage = false;
  std::string sweep;
  int device = -1;
  app.add_option("--filter", filter, "only cases whose 'op params' contains this");
  app.add_option("--repeats", repeats, "timed runs per case")->check(CLI::PositiveNumber);
  app.add_option("--device", device, "Vulkan device index");
  app.add_flag("--test-shapes", test_shapes, "time the (small) test shapes instead of the perf shapes");
  app.add_option("--sweep", sweep, "NAME=v1|v2|...: time each case once per value of environment variable NAME "
                                   "(e.g. MACH_Q4H=wg=64,rows=2,unr=2|wg=128,rows=1,unr=4)");
  app.add_flag("--coverage", coverage, "list embedded shaders that no op test case uses, then exit");
  CLI11_PARSE(app, argc, argv);

  auto created = gpu::Context::create({.device_index = device});
  if (!created) {
    fmt::print(stderr, "ops_bench: {}\n", created.error().message);
    return 1;
  }
  auto& context = **created;
  const auto& info = context.info();

  if (coverage) {
    // Run every test case's recording once; the pipelines it creates are the shaders it covers.
    std::set<std::string> used;
    auto cases = test::all_cases(test::CaseSet::test);
    for (size_t i = 0; i < cases.size(); ++i) {
      if (!cases[i]->supported(context)) continue;
      test::Rng rng(i);
      cases[i]->prepare(context, rng);
      auto cmd = context.begin_commands();
      cmd->begin();
      cases[i]->record(*cmd);
      context.wait(context.submit(*cmd));
    }
    int missing = 0;
    for (const auto& s : gpu::embedded_shaders()) {
      std::string name(s.name);
      if (!context.has_pipeline_for(name)) {
        fmt::print("untested shader: {}\n", name);
        ++missing;
      }
    }
    fmt::print("{} of {} shaders have no op test case\n", missing, gpu::embedded_shaders().size());
    return missing == 0 ? 0 : 2;
  }

  auto cases = test::all_cases(test_shapes ? test::CaseSet::test : test::CaseSet::perf);
  int failures = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    auto& op = *cases[i];
    const std::string label = op.op() + " " + op.params();
    if (!filter.empty() && label.find(filter) == std::string::npos) continue;
    if (!op.supported(context)) continue;
    try {
      if (!sweep.empty()) {
        test::Rng rng(0xbe7c0000u + i);
        op.prepare(context, rng);
        failures += sweep_case(context, op, sweep, repeats);
        continue;
      }
      failures += run_case(context, op, i, repeats) ? 0 : 1;
    } catch (const Exception& e) {
      fmt::print("{}\n", nlohmann::json({{"device", info.name}, {"op", op.op()}, {"params", op.params()},
                                         {"error", e.what()}}).dump());
      ++failures;
    }
  }
  return failures == 0 ? 0 : 1;
}

