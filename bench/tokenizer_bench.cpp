// Tokenizer throughput: for each model directory, load time, then encode and decode rates over a text
// (a file, or a built-in mixture of English prose, code, numbers and CJK), as one JSON line per model with
// the median and spread of several runs. The round trip is checked before anything is timed.
//
//   tokenizer_bench DIR... [--file TEXT] [--repeats N]
#include <fmt/format.h>

#include <CLI/CLI.hpp>

#include "engine/stats.hpp"
#include <algorithm>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "text/tokenizer.hpp"

using namespace mach;
using mach::engine::percentile;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// About 1 MB of mixed text from a fixed seed: words repeat as in real text, so the word cache is exercised
// the way a server exercises it.
std::string builtin_text() {
  static const char* const kWords[] = {
      "the", "of", "and", "to", "in", "model", "expert", "token", "tokenizer", "inference", "throughput",
      "latency", "memory", "streaming", "Mixture-of-Experts", "GPU", "shader", "Vulkan", "request", "server",
      "It's", "don't", "we'll", "naïve", "café", "résumé", "2024", "3.14159", "1,000,000", "0x1F",
      "机器学习", "人工智能", "東京", "ひらがな", "한국어", "Привет", "мир", "🤖", "🚀", "(x)", "[i]", "{}",
      "->", "==", "!=", "//", "#include", "std::vector<int>", "def", "return", "self.weight", "\n", "\n\n",
      "    ", "\t", "antidisestablishmentarianism", "supercalifragilistic"};
  std::mt19937 rng(1234);
  std::uniform_int_distribution<size_t> pick(0, std::size(kWords) - 1);
  std::string text;
  while (text.size() < (1 << 20)) {
    text += kWords[pick(rng)];
    text += rng() % 7 == 0 ? ", " : " ";
    if (rng() % 97 == 0) text += fmt::format("{}", rng() % 100000);
  }
  return text;
}

nlohmann::json bench_model(const std::string& dir, const std::string& text, int repeats) {
  nlohmann::json line = {{"bench", "tokenizer"}, {"dir", dir}, {"text_bytes", text.size()}};
  const auto load_start = Clock::now();
  auto loaded = text::Tokenizer::load(dir);
  if (!loaded) {
    line["error"] = loaded.error().message;
    return line;
  }
  line["load_ms"] = seconds_since(load_start) * 1e3;
  const text::Tokenizer& tokenizer = *loaded;

  const auto cold_start = Clock::now();
  const auto ids = tokenizer.encode(text);
  line["encode_cold_tokens_per_s"] = ids.size() / seconds_since(cold_start);
  line["tokens"] = ids.size();
  const std::string decoded = tokenizer.decode(ids);
  line["round_trip_exact"] = decoded == text;  // false only where a normalizer rewrites (NFC, "▁")
  if (decoded.size() + 64 < text.size() / 2) {
    line["error"] = "decode(encode(text)) lost most of the text; not timing";
    return line;
  }

  std::vector<double> encode_rate, decode_rate;
  for (int r = 0; r < repeats; ++r) {
    auto start = Clock::now();
    const auto again = tokenizer.encode(text);
    encode_rate.push_back(again.size() / seconds_since(start));
    if (again != ids) line["error"] = "encode is not deterministic";
    start = Clock::now();
    const std::string out = tokenizer.decode(ids);
    decode_rate.push_back(ids.size() / seconds_since(start));
  }
  line["encode_tokens_per_s"] = percentile(encode_rate, 0.5);
  line["encode_tokens_per_s_p10"] = percentile(encode_rate, 0.1);
  line["encode_tokens_per_s_p90"] = percentile(encode_rate, 0.9);
  line["decode_tokens_per_s"] = percentile(decode_rate, 0.5);
  line["encode_mb_per_s"] = percentile(encode_rate, 0.5) * text.size() / ids.size() / 1e6;
  return line;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tokenizer throughput (JSON lines)"};
  std::vector<std::string> dirs;
  std::string file;
  int repeats = 5;
  app.add_option("dirs", dirs, "model directories with tokenizer.json")->required();
  app.add_option("--file", file, "text to encode (default: built-in mixture, 1 MB)");
  app.add_option("--repeats", repeats, "timed runs per model")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  std::string text = builtin_text();
  if (!file.empty()) {
    std::ifstream in(file, std::ios::binary);
    if (!in) {
      fmt::print(stderr, "tokenizer_bench: cannot open {}\n", file);
      return 1;
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  int status = 0;
  for (const auto& dir : dirs) {
    const auto line = bench_model(dir, text, repeats);
    if (line.contains("error")) status = 1;
    fmt::print("{}\n", line.dump());
  }
  return status;
}
