// `mach generate MODEL_DIR --prompt-ids 5,17,99 [--max-tokens N] [--temperature T] ... [--json]
//  [--dump-logits out.npy] [--prefix-cache [--cache-dir DIR]]`: load a checkpoint onto the GPU and generate from
//  token ids.
#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/commands.hpp"
#include "engine/generator.hpp"
#include "engine/prefix_cache.hpp"
#include "gpu/context.hpp"
#include "model/model.hpp"
#include "model/npy.hpp"

namespace mach::cli {
namespace {

struct GenerateArgs {
  std::string model_dir;
  std::string prompt_ids;
  std::string prompt_text;
  uint32_t max_tokens = 16;
  float temperature = 1.0f;
  uint32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  uint64_t seed = 0;
  std::string stop_ids;
  bool json = false;
  std::string dump_logits;
  std::string quant = "bf16";
  int device = -1;
  uint32_t max_context = 4096;
  uint32_t step_tokens = 256;
  bool prefix_cache = false;
  std::string cache_dir;
  double cache_gb = 16;
};

Result<std::vector<uint32_t>> parse_ids(const std::string& text, const char* what) {
  std::vector<uint32_t> ids;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    char* end = nullptr;
    const unsigned long v = std::strtoul(item.c_str(), &end, 10);
    if (*end != '\0' || item[0] == '-' || v > UINT32_MAX)
      return Error{Errc::invalid_argument, fmt::format("{}: '{}' is not a token id", what, item)};
    ids.push_back(static_cast<uint32_t>(v));
  }
  return ids;
}

int run_generate(const GenerateArgs& a) {
  auto fail = [](const Error& e) {
    fmt::print(stderr, "mach generate: {}\n", e.message);
    return 1;
  };
  if (!a.prompt_text.empty())
    return fail({Errc::unsupported, "--prompt needs the tokenizer, which this build does not have yet; use --prompt-ids"});
  auto prompt = parse_ids(a.prompt_ids, "--prompt-ids");
  if (!prompt) return fail(prompt.error());
  if (prompt->empty()) return fail({Errc::invalid_argument, "give the prompt with --prompt-ids 1,2,3"});
  auto stop = parse_ids(a.stop_ids, "--stop-ids");
  if (!stop) return fail(stop.error());
  const auto quant = ops::parse_weight_type(a.quant);
  if (!quant) return fail({Errc::invalid_argument, fmt::format("--quant {}: use bf16, f16, f32, q8_0 or q4", a.quant)});

  auto context = gpu::Context::create({.device_index = a.device});
  if (!context) return fail(context.error());
  model::LoadOptions lo;
  lo.weight_type = *quant;
  lo.max_context = a.max_context;
  lo.max_step_tokens = a.step_tokens;
  auto model = model::load_model(a.model_dir, **context, lo);
  if (!model) return fail(model.error());

  engine::GenerateOptions go;
  go.sampling = {.temperature = a.temperature, .top_k = a.top_k, .top_p = a.top_p, .min_p = a.min_p, .seed = a.seed};
  go.max_tokens = a.max_tokens;
  go.stop_ids = *stop;
  for (int64_t id : (*model)->config().eos_token_ids)
    if (id >= 0) go.stop_ids.push_back(static_cast<uint32_t>(id));
  go.prompt_logits = !a.dump_logits.empty();
  std::unique_ptr<engine::PrefixCache> cache;
  if (a.prefix_cache) {
    // One process runs one prompt, so only the disk level (L2) carries blocks from run to run.
    engine::PrefixCacheOptions po;
    po.cache_dir = a.cache_dir.empty() ? engine::default_prefix_cache_dir() : std::filesystem::path(a.cache_dir);
    po.l2_bytes = static_cast<uint64_t>(a.cache_gb * (1ull << 30));
    auto c = engine::PrefixCache::create((*model)->kv_cache(), (*model)->fingerprint(), po);
    if (!c) return fail(c.error());
    cache = std::move(c).value();
    go.prefix_cache = cache.get();
  }
  auto result = engine::generate(**context, **model, *prompt, go);
  if (!result) return fail(result.error());
  if (!a.dump_logits.empty()) {
    const uint64_t shape[] = {prompt->size() - result->cached_tokens, (*model)->config().vocab_size};
    if (auto w = model::write_npy_f32(a.dump_logits, result->prompt_logits, shape); !w)
      return fail(w.error());
  }
  if (a.json) {
    nlohmann::json out = {{"tokens", result->tokens},
                          {"finish_reason", result->finish_reason},
                          {"prompt_tokens", prompt->size()},
                          {"prefill_ms", result->prefill_ms},
                          {"decode_ms", result->decode_ms},
                          {"device", (*context)->info().name}};
    if (cache) {
      out["cached_tokens"] = result->cached_tokens;
      out["prefix_cache"] = cache->stats();
    }
    fmt::print("{}\n", out.dump());
  } else {
    fmt::print("{}\n", fmt::join(result->tokens, ","));
  }
  return 0;
}

}  // namespace

void add_generate_command(CLI::App& app, int& exit_code) {
  static GenerateArgs a;
  auto* cmd = app.add_subcommand("generate", "generate tokens from a checkpoint on the GPU");
  cmd->add_option("model", a.model_dir, "checkpoint directory (config.json + safetensors)")->required();
  cmd->add_option("--prompt-ids", a.prompt_ids, "prompt token ids, comma separated");
  cmd->add_option("--prompt", a.prompt_text, "prompt text (needs the tokenizer)");
  cmd->add_option("--max-tokens", a.max_tokens, "tokens to generate (0: only the prompt)");
  cmd->add_option("--temperature", a.temperature, "0 for greedy")->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-k", a.top_k, "0 = off");
  cmd->add_option("--top-p", a.top_p, "1 = off")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--min-p", a.min_p, "0 = off")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--seed", a.seed, "sampling seed");
  cmd->add_option("--stop-ids", a.stop_ids, "extra stop token ids, comma separated (config eos ids always stop)");
  cmd->add_flag("--json", a.json, "print one JSON object");
  cmd->add_option("--dump-logits", a.dump_logits, "write the prompt positions' logits [T, vocab] f32 as .npy");
  cmd->add_option("--quant", a.quant, "weight format on the GPU: bf16 (default), f16, f32, q8_0, q4");
  cmd->add_option("--device", a.device, "Vulkan device index (default: $MACH_DEVICE or the best)");
  cmd->add_option("--max-context", a.max_context, "tokens of KV cache for the sequence");
  cmd->add_option("--step-tokens", a.step_tokens, "prompt tokens per forward step");
  cmd->add_flag("--prefix-cache", a.prefix_cache, "restore the prompt's cached prefix from disk and store its blocks");
  cmd->add_option("--cache-dir", a.cache_dir, "prefix cache folder (default: ~/.cache/mach/prefix)");
  cmd->add_option("--cache-gb", a.cache_gb, "disk budget of the prefix cache per model, GiB")
      ->check(CLI::PositiveNumber);
  cmd->callback([&exit_code] { exit_code = run_generate(a); });
}

}  // namespace mach::cli
