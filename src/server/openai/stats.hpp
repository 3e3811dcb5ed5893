// Serving statistics behind /v1/stats and /metrics: request outcomes, token counts, time to first token,
// decode speed, speculation counters. Loop thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/scheduler.hpp"

namespace mach::server::openai {

class ServingStats {
 public:
  using Clock = std::chrono::steady_clock;

  void request_started() { ++requests_started_; ++in_flight_; }
  void request_finished() { --in_flight_; }
  void first_token(double ttft_seconds);
  // One finished choice: its generated tokens, decode seconds (first token to last), and outcome.
  void choice_finished(uint32_t prompt_tokens, uint32_t cached_tokens, uint32_t completion_tokens,
                       double decode_seconds, const std::string& finish_reason,
                       const engine::SpeculationStats& speculation);
  void tokens_generated(uint32_t n);  // for the windowed tokens/s
  void rejected(const std::string& code) { ++rejected_[code]; }

  struct Percentiles {
    double p50 = 0, p90 = 0, p99 = 0;
    size_t samples = 0;
  };
  Percentiles ttft() const;
  Percentiles decode_tokens_per_second() const;  // per choice
  double recent_tokens_per_second() const;       // all choices, last 10 s
  uint64_t in_flight() const { return in_flight_; }

  nlohmann::json to_json() const;
  // Prometheus text exposition lines (HELP/TYPE included), metric names prefixed "mach_".
  std::string prometheus() const;

 private:
  static constexpr size_t kWindow = 1024;  // samples kept for percentiles
  static void keep(std::deque<double>& d, double v);
  static Percentiles percentiles(const std::deque<double>& d);

  uint64_t requests_started_ = 0, in_flight_ = 0;
  uint64_t choices_ = 0, prompt_tokens_ = 0, cached_tokens_ = 0, completion_tokens_ = 0;
  std::map<std::string, uint64_t> finish_reasons_, rejected_;
  std::deque<double> ttft_, decode_tps_;
  double ttft_sum_ = 0;
  uint64_t ttft_count_ = 0;
  std::deque<std::pair<Clock::time_point, uint32_t>> recent_;  // (when, tokens) of the last 10 s
  uint64_t drafted_ = 0, accepted_ = 0, spec_steps_ = 0;
  std::vector<uint64_t> drafted_at_, accepted_at_;
};

}  // namespace mach::server::openai
