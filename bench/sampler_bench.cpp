// Sampling cost per token on the host: Sampler::sample over one row of logits of a vocabulary (default
// Qwen3's 151936) for each setting a client commonly sends, as one JSON line each with the median and spread
// of the runs. The server samples every sequence of a decode step on its engine thread between GPU steps,
// so this time adds to each step. Logits are drawn from a fixed seed, a long normal tail plus a few large
// values; before timing, each setting's distribution is checked (probabilities in (0, 1], summing to 1, the
// most likely token kept) and seeded draws are checked to repeat.
//
//   sampler_bench [--vocab V] [--repeats N]
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>

#include "engine/sampler.hpp"
#include "engine/stats.hpp"

using namespace mach;
using engine::SamplingParams;

namespace {

using Clock = std::chrono::steady_clock;

struct Setting {
  const char* name;
  SamplingParams params;
};

// An error message, or "" when the setting's distribution and draws look right.
std::string check(const Setting& s, const std::vector<float>& logits) {
  auto l = logits;
  const auto dist = engine::Sampler(s.params).distribution(l, {});
  double sum = 0;
  bool has_top = false;
  const uint32_t top = engine::argmax(logits);
  for (const auto& [token, p] : dist) {
    if (!(p > 0.0f && p <= 1.0f) || token >= logits.size()) return fmt::format("bad entry ({}, {})", token, p);
    sum += p;
    has_top |= token == top;
  }
  if (std::abs(sum - 1.0) > 1e-3) return fmt::format("probabilities sum to {}", sum);
  if (!has_top) return "the most likely token was cut";
  engine::Sampler a(s.params), b(s.params);
  for (int i = 0; i < 5; ++i) {
    auto la = logits, lb = logits;
    if (a.sample(la, {}) != b.sample(lb, {})) return "the same seed drew different tokens";
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"host sampling cost per token"};
  uint32_t vocab = 151936;
  int repeats = 200;
  app.add_option("--vocab", vocab, "vocabulary size (default 151936, Qwen3's)")->check(CLI::PositiveNumber);
  app.add_option("--repeats", repeats, "timed tokens per setting")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  std::mt19937 gen(1234);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> logits(vocab);
  for (auto& x : logits) x = normal(gen);
  for (int i = 0; i < 20; ++i) logits[gen() % vocab] += 15.0f;

  const Setting settings[] = {
      {"greedy", {.temperature = 0.0f}},
      {"temperature 1 (the API's default)", {.temperature = 1.0f, .seed = 1}},
      {"temperature 0.7, top_p 0.95", {.temperature = 0.7f, .top_p = 0.95f, .seed = 1}},
      {"temperature 0.7, top_k 40", {.temperature = 0.7f, .top_k = 40, .seed = 1}},
      {"temperature 0.6, top_p 0.95, top_k 20 (Qwen3's thinking defaults)",
       {.temperature = 0.6f, .top_k = 20, .top_p = 0.95f, .seed = 1}},
      {"temperature 1, min_p 0.05", {.temperature = 1.0f, .min_p = 0.05f, .seed = 1}},
      {"temperature 1, presence and frequency penalties", {.temperature = 1.0f, .presence_penalty = 0.5f,
                                                           .frequency_penalty = 0.5f, .seed = 1}},
  };
  int status = 0;
  for (const auto& s : settings) {
    if (const std::string error = check(s, logits); !error.empty()) {
      fmt::print(stderr, "sampler_bench: {}: {}\n", s.name, error);
      status = 1;
      continue;
    }
    engine::Sampler sampler(s.params);
    std::vector<uint32_t> generated;
    std::vector<double> ms;
    std::vector<float> row(vocab);
    for (int r = 0; r < repeats; ++r) {
      std::copy(logits.begin(), logits.end(), row.begin());  // sample() changes its row (penalties)
      const auto t0 = Clock::now();
      generated.push_back(sampler.sample(row, generated));
      ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
    const nlohmann::json line = {{"test", "sampler"},
                                 {"device", "host"},
                                 {"setting", s.name},
                                 {"vocab", vocab},
                                 {"repeats", repeats},
                                 {"ms_per_token",
                                  {{"median", engine::percentile(ms, 0.5)},
                                   {"p10", engine::percentile(ms, 0.1)},
                                   {"p90", engine::percentile(ms, 0.9)}}}};
    fmt::print("{}\n", line.dump());
  }
  return status;
}
