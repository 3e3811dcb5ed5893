// `mach serve MODEL_DIR [--host H] [--port P] [--api-key K] ...`: load a checkpoint onto the GPU and serve the
// OpenAI API on the event loop until SIGINT/SIGTERM.
#include <fmt/format.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/signal_set.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/expert_options.hpp"
#include "engine/engine_loop.hpp"
#include "engine/prefix_cache.hpp"
#include "gpu/context.hpp"
#include "model/model.hpp"
#include "runtime/gpu_bridge.hpp"
#include "server/http/http.hpp"
#include "server/openai/service.hpp"
#include "text/chat_template.hpp"
#include "text/tokenizer.hpp"

namespace mach::cli {
namespace {

struct ServeArgs {
  std::string model_dir;
  std::string host = "127.0.0.1";
  uint16_t port = 8080;
  std::string api_key;
  std::string model_id;
  std::string quant = "bf16";
  int device = -1;
  uint32_t max_context = 4096;
  uint32_t max_batch = 8;
  uint32_t step_tokens = 256;
  double kv_cache_gb = 0;
  bool prefix_cache = false;
  std::string cache_dir;
  double cache_gb = 16;
  std::string speculation = "none";
  uint32_t default_max_tokens = 4096;
  double max_body_mb = 16;
  uint32_t max_header_kb = 64;
  double rate_limit = 50;
  double idle_timeout_s = 60;
  uint32_t max_connections = 1024;
  ExpertArgs experts;
};

// One startup line per subsystem, key=value, the same facts /v1/capabilities returns.
void line(const std::string& subsystem, const nlohmann::json& facts) {
  std::string out = subsystem + ":";
  for (const auto& [k, v] : facts.items()) {
    const std::string value = v.is_string() ? v.get<std::string>() : v.dump();
    const bool quote = value.find_first_of(" \t\"=") != std::string::npos;
    out += fmt::format(" {}={}", k, quote ? nlohmann::json(value).dump() : value);
  }
  fmt::print("{}\n", out);
  std::fflush(stdout);
}

int run_serve(ServeArgs a) {
  auto fail = [](const std::string& message) {
    fmt::print(stderr, "mach serve: {}\n", message);
    return 1;
  };
  if (a.api_key.empty())
    if (const char* env = std::getenv("MACH_API_KEY")) a.api_key = env;
  const auto quant = ops::parse_weight_type(a.quant);
  if (!quant) return fail(fmt::format("--quant {}: use bf16, f16, f32, q8_0 or q4", a.quant));
  const auto speculation = engine::parse_speculation(a.speculation);
  if (!speculation) return fail(fmt::format("--speculation {}: use none, ngram, summarization or classification", a.speculation));
  if (a.model_id.empty()) a.model_id = std::filesystem::path(a.model_dir).lexically_normal().filename().string();
  if (a.model_id.empty() || a.model_id == ".") a.model_id = std::filesystem::absolute(a.model_dir).filename().string();

  auto context = gpu::Context::create({.device_index = a.device});
  if (!context) return fail(context.error().message);
  const auto& info = (*context)->info();
  line("device", {{"name", info.name}, {"type", info.type}, {"driver", info.driver},
                  {"memory_gb", fmt::format("{:.1f}", info.device_local_bytes / 1073741824.0)},
                  {"fp16", info.fp16}, {"coopmat", info.nv_cooperative_matrix ? "nv" : info.khr_cooperative_matrix ? "khr" : "no"}});

  // Text: optional, so a checkpoint without a tokenizer still serves token-id completions.
  std::optional<text::Tokenizer> tokenizer;
  std::optional<text::ChatTemplate> chat_template;
  std::string text_note;
  if (std::filesystem::exists(std::filesystem::path(a.model_dir) / "tokenizer.json")) {
    auto t = text::Tokenizer::load(a.model_dir);
    if (!t) return fail(t.error().message);
    tokenizer.emplace(std::move(t).value());
    auto ct = text::ChatTemplate::load(a.model_dir);
    if (ct) chat_template.emplace(std::move(ct).value());
    else text_note = ct.error().message;
  } else {
    text_note = "no tokenizer.json: only /v1/completions with token-id prompts";
  }

  model::LoadOptions lo;
  lo.weight_type = *quant;
  lo.max_context = a.max_context;
  lo.max_step_tokens = a.step_tokens;
  lo.max_sequences = a.max_batch;
  lo.kv_cache_bytes = static_cast<uint64_t>(a.kv_cache_gb * 1073741824.0);
  if (auto r = apply_expert_options(a.experts, lo); !r) return fail(r.error().message);
  lo.log = [](const std::string& note) { fmt::print(stderr, "mach serve: {}\n", note); };
  auto model = model::load_model(a.model_dir, **context, lo);
  if (!model) return fail(model.error().message);
  auto& m = **model;
  const auto& c = m.config();
  line("model", {{"id", a.model_id}, {"model_type", c.model_type}, {"layers", c.num_layers}, {"experts", c.num_experts},
                 {"experts_per_token", c.num_experts_per_tok}, {"quant", a.quant},
                 {"weights_gb", fmt::format("{:.2f}", m.weight_bytes() / 1073741824.0)}});
  const auto es = m.expert_stats();
  const bool streaming = es.streaming;
  const std::string path = streaming ? "expert_streaming" : "resident_stacked";
  nlohmann::json serving = {
      {"residency", streaming ? "streaming" : "resident"},
      {"residency_line", m.residency()},
      {"direct_read", streaming ? (es.direct_read ? "o_direct" : "buffered (the filesystem refused O_DIRECT)")
                                : "unused (all experts resident)"},
      {"decode_path", a.experts.streaming ? "expert_streaming" : "resident_stacked"},
      {"effective_path", path},
      {"reason", streaming ? fmt::format("routed experts stream from the sidecar through {} GPU slots per layer ({} "
                                         "eviction); misses are read with io_uring during the step",
                                         es.slots_per_layer, es.eviction)
                           : "every routed expert is resident in GPU memory (one stacked buffer per layer)"}};
  line("residency", {{"residency", serving["residency"]}, {"detail", m.residency()}});
  line("direct_read", {{"direct_read", serving["direct_read"]}});
  line("decode_path", {{"decode_path", serving["decode_path"]}, {"effective", path}, {"reason", serving["reason"]}});
  const auto& kv = m.kv_cache();
  line("kv_cache", {{"context", kv.max_context()}, {"block_tokens", kv.block_size()}, {"blocks", kv.total_blocks()},
                    {"gb", fmt::format("{:.2f}", kv.bytes() / 1073741824.0)}, {"max_batch", a.max_batch}});

  std::unique_ptr<engine::PrefixCache> cache;
  if (a.prefix_cache) {
    engine::PrefixCacheOptions po;
    po.cache_dir = a.cache_dir.empty() ? engine::default_prefix_cache_dir() : std::filesystem::path(a.cache_dir);
    po.l2_bytes = static_cast<uint64_t>(a.cache_gb * (1ull << 30));
    auto pc = engine::PrefixCache::create(kv, m.fingerprint(), po);
    if (!pc) return fail(pc.error().message);
    cache = std::move(pc).value();
    line("prefix_cache", {{"prefix_cache", "on"}, {"l1_gb", fmt::format("{:.1f}", po.l1_bytes / 1073741824.0)},
                          {"l2_dir", po.cache_dir.string()}, {"l2_gb", a.cache_gb}});
  } else {
    line("prefix_cache", {{"prefix_cache", "off"}, {"enable", "--prefix-cache"}});
  }
  serving["prefix_cache"] = cache != nullptr;
  line("text", {{"tokenizer", tokenizer.has_value()}, {"chat_template", chat_template.has_value()},
                {"note", text_note.empty() ? "ok" : text_note}});

  asio::io_context io(1);
  runtime::GpuBridge bridge(io, **context);
  engine::EngineLoop loop(io, **context, m, bridge, {.max_batch = a.max_batch, .prefix_cache = cache.get()});
  server::openai::ServiceOptions so;
  so.model_id = a.model_id;
  so.max_batch = a.max_batch;
  so.default_max_tokens = a.default_max_tokens;
  so.default_speculation = *speculation;
  so.serving = serving;
  so.backend = {{"api", "vulkan"}, {"device", info.name}, {"device_type", info.type}, {"driver", info.driver}};
  server::openai::Service service(io, m, loop, cache.get(), tokenizer ? &*tokenizer : nullptr,
                                  chat_template ? &*chat_template : nullptr, so);
  server::http::ServerOptions ho;
  ho.host = a.host;
  ho.port = a.port;
  ho.api_key = a.api_key;
  ho.limits.max_body_bytes = static_cast<size_t>(a.max_body_mb * 1048576.0);
  ho.limits.max_header_bytes = size_t{a.max_header_kb} * 1024;
  ho.limits.requests_per_second = a.rate_limit;
  ho.limits.request_burst = std::max(1.0, 2 * a.rate_limit);
  ho.limits.idle_timeout = std::chrono::milliseconds(static_cast<int64_t>(a.idle_timeout_s * 1000));
  ho.limits.max_connections = a.max_connections;
  server::http::Server server(io, ho);
  service.install(server);
  if (auto r = server.listen(); !r) return fail(r.error().message);
  const auto ep = server.local_endpoint();
  line("listen", {{"listen", fmt::format("http://{}:{}", ep.address().to_string(), ep.port())},
                  {"auth", a.api_key.empty() ? "off" : "on"}, {"model", a.model_id}});

  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const asio::error_code& ec, int sig) {
    if (ec) return;
    fmt::print(stderr, "mach serve: signal {}, stopping\n", sig);
    server.stop();
    loop.stop();
  });
  asio::co_spawn(io, loop.run(), asio::detached);
  asio::co_spawn(io, server.run(), asio::detached);
  io.run();
  if (auto r = save_expert_profile(a.experts, m); !r) return fail(r.error().message);
  return 0;
}

}  // namespace

void add_serve_command(CLI::App& app, int& exit_code) {
  static ServeArgs a;
  auto* cmd = app.add_subcommand("serve", "serve the OpenAI API for a checkpoint");
  cmd->add_option("model", a.model_dir, "checkpoint directory (config.json, safetensors, tokenizer.json)")->required();
  cmd->add_option("--host", a.host, "address to bind (default 127.0.0.1: this machine only)");
  cmd->add_option("--port", a.port, "TCP port (0: any free port)");
  cmd->add_option("--api-key", a.api_key, "require 'Authorization: Bearer KEY' on /v1 routes (or $MACH_API_KEY)");
  cmd->add_option("--model-id", a.model_id, "the model name clients send (default: the directory's name)");
  cmd->add_option("--quant", a.quant, "weight format on the GPU: bf16 (default), f16, f32, q8_0, q4");
  cmd->add_option("--device", a.device, "Vulkan device index (default: $MACH_DEVICE or the best)");
  cmd->add_option("--max-context", a.max_context, "tokens per sequence (prompt + completion)");
  cmd->add_option("--max-batch", a.max_batch, "sequences generated together")->check(CLI::Range(1, 256));
  cmd->add_option("--step-tokens", a.step_tokens, "prompt tokens per forward step");
  cmd->add_option("--kv-cache-gb", a.kv_cache_gb, "device memory for the KV cache (default: every sequence's full context)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--prefix-cache", a.prefix_cache, "reuse the KV of repeated prompt prefixes (RAM, then disk)");
  cmd->add_option("--cache-dir", a.cache_dir, "prefix cache folder (default: ~/.cache/mach/prefix)");
  cmd->add_option("--cache-gb", a.cache_gb, "disk budget of the prefix cache, GiB")->check(CLI::PositiveNumber);
  cmd->add_option("--speculation", a.speculation, "default draft-free speculation: none, ngram, summarization, classification");
  cmd->add_option("--default-max-tokens", a.default_max_tokens, "max_tokens when a request gives none (capped by the context)");
  cmd->add_option("--max-body-mb", a.max_body_mb, "largest request body, MiB")->check(CLI::PositiveNumber);
  cmd->add_option("--max-header-kb", a.max_header_kb, "largest request head, KiB");
  cmd->add_option("--rate-limit", a.rate_limit, "requests per second per connection")->check(CLI::PositiveNumber);
  cmd->add_option("--idle-timeout", a.idle_timeout_s, "seconds an idle keep-alive connection stays open")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-connections", a.max_connections, "open client connections at most");
  add_expert_options(cmd, a.experts);
  cmd->callback([&exit_code] { exit_code = run_serve(a); });
}

}  // namespace mach::cli
