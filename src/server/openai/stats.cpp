#include "server/openai/stats.hpp"

#include <fmt/format.h>

#include "engine/stats.hpp"

namespace mach::server::openai {

void ServingStats::keep(std::deque<double>& d, double v) {
  d.push_back(v);
  if (d.size() > kWindow) d.pop_front();
}

ServingStats::Percentiles ServingStats::percentiles(const std::deque<double>& d) {
  Percentiles p;
  p.samples = d.size();
  if (d.empty()) return p;
  const std::vector<double> v(d.begin(), d.end());
  p.p50 = engine::percentile(v, 0.5);
  p.p90 = engine::percentile(v, 0.9);
  p.p99 = engine::percentile(v, 0.99);
  return p;
}

void ServingStats::first_token(double ttft_seconds) {
  keep(ttft_, ttft_seconds);
  ttft_sum_ += ttft_seconds;
  ++ttft_count_;
}

void ServingStats::choice_finished(uint32_t prompt_tokens, uint32_t cached_tokens, uint32_t completion_tokens,
                                   double decode_seconds, const std::string& finish_reason,
                                   const engine::SpeculationStats& s) {
  ++choices_;
  prompt_tokens_ += prompt_tokens;
  cached_tokens_ += cached_tokens;
  completion_tokens_ += completion_tokens;
  ++finish_reasons_[finish_reason];
  if (completion_tokens > 1 && decode_seconds > 0) keep(decode_tps_, (completion_tokens - 1) / decode_seconds);
  drafted_ += s.drafted;
  accepted_ += s.accepted;
  spec_steps_ += s.steps;
  if (drafted_at_.size() < s.drafted_at.size()) drafted_at_.resize(s.drafted_at.size());
  if (accepted_at_.size() < s.accepted_at.size()) accepted_at_.resize(s.accepted_at.size());
  for (size_t i = 0; i < s.drafted_at.size(); ++i) drafted_at_[i] += s.drafted_at[i];
  for (size_t i = 0; i < s.accepted_at.size(); ++i) accepted_at_[i] += s.accepted_at[i];
}

void ServingStats::tokens_generated(uint32_t n) {
  const auto now = Clock::now();
  recent_.emplace_back(now, n);
  while (!recent_.empty() && now - recent_.front().first > std::chrono::seconds(10)) recent_.pop_front();
}

ServingStats::Percentiles ServingStats::ttft() const { return percentiles(ttft_); }
ServingStats::Percentiles ServingStats::decode_tokens_per_second() const { return percentiles(decode_tps_); }

double ServingStats::recent_tokens_per_second() const {
  const auto now = Clock::now();
  uint64_t n = 0;
  for (const auto& [when, tokens] : recent_)
    if (now - when <= std::chrono::seconds(10)) n += tokens;
  return n / 10.0;
}

nlohmann::json ServingStats::to_json() const {
  const auto pct = [](const Percentiles& p, double scale) {
    return nlohmann::json{{"p50", p.p50 * scale}, {"p90", p.p90 * scale}, {"p99", p.p99 * scale}, {"samples", p.samples}};
  };
  nlohmann::json j;
  j["requests"] = {{"started", requests_started_}, {"in_flight", in_flight_}, {"rejected", rejected_}};
  j["choices"] = {{"finished", choices_}, {"finish_reasons", finish_reasons_}};
  j["tokens"] = {{"prompt", prompt_tokens_}, {"cached_prompt", cached_tokens_}, {"completion", completion_tokens_}};
  j["time_to_first_token_ms"] = pct(ttft(), 1000.0);
  j["decode_tokens_per_second"] = {{"per_sequence", pct(decode_tokens_per_second(), 1.0)},
                                   {"all_sequences_last_10s", recent_tokens_per_second()}};
  j["speculation"] = {{"drafted", drafted_},
                      {"accepted", accepted_},
                      {"acceptance_rate", drafted_ ? static_cast<double>(accepted_) / drafted_ : 0.0},
                      {"mean_accepted_per_step", spec_steps_ ? static_cast<double>(accepted_) / spec_steps_ : 0.0},
                      {"drafted_at", drafted_at_},
                      {"accepted_at", accepted_at_}};
  return j;
}

std::string ServingStats::prometheus() const {
  std::string out;
  const auto metric = [&](const char* name, const char* type, const char* help) {
    out += fmt::format("# HELP mach_{} {}\n# TYPE mach_{} {}\n", name, help, name, type);
  };
  metric("requests_started_total", "counter", "Completion requests accepted for generation.");
  out += fmt::format("mach_requests_started_total {}\n", requests_started_);
  metric("requests_in_flight", "gauge", "Completion requests being generated or queued.");
  out += fmt::format("mach_requests_in_flight {}\n", in_flight_);
  metric("requests_rejected_total", "counter", "Completion requests refused before generation, by error code.");
  for (const auto& [code, n] : rejected_) out += fmt::format("mach_requests_rejected_total{{code=\"{}\"}} {}\n", code, n);
  metric("choices_finished_total", "counter", "Finished choices by finish reason.");
  for (const auto& [reason, n] : finish_reasons_)
    out += fmt::format("mach_choices_finished_total{{reason=\"{}\"}} {}\n", reason, n);
  metric("prompt_tokens_total", "counter", "Prompt tokens of finished choices.");
  out += fmt::format("mach_prompt_tokens_total {}\n", prompt_tokens_);
  metric("cached_prompt_tokens_total", "counter", "Prompt tokens restored from the prefix cache.");
  out += fmt::format("mach_cached_prompt_tokens_total {}\n", cached_tokens_);
  metric("generation_tokens_total", "counter", "Generated tokens of finished choices.");
  out += fmt::format("mach_generation_tokens_total {}\n", completion_tokens_);
  metric("time_to_first_token_seconds", "summary", "Time from request arrival to its first generated token.");
  const auto t = ttft();
  for (auto [q, v] : {std::pair{"0.5", t.p50}, {"0.9", t.p90}, {"0.99", t.p99}})
    out += fmt::format("mach_time_to_first_token_seconds{{quantile=\"{}\"}} {}\n", q, v);
  out += fmt::format("mach_time_to_first_token_seconds_sum {}\nmach_time_to_first_token_seconds_count {}\n", ttft_sum_,
                     ttft_count_);
  metric("decode_tokens_per_second", "gauge", "Generated tokens per second over all sequences, last 10 s.");
  out += fmt::format("mach_decode_tokens_per_second {}\n", recent_tokens_per_second());
  metric("speculation_drafted_tokens_total", "counter", "Draft tokens proposed for verification.");
  out += fmt::format("mach_speculation_drafted_tokens_total {}\n", drafted_);
  metric("speculation_accepted_tokens_total", "counter", "Draft tokens the target model accepted.");
  out += fmt::format("mach_speculation_accepted_tokens_total {}\n", accepted_);
  return out;
}

}  // namespace mach::server::openai
