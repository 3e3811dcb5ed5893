#include "server/openai/service.hpp"

#include <fmt/format.h>

#include <asio/use_awaitable.hpp>

#include "engine/kv_cache.hpp"
#include "experts/expert_stats.hpp"
#include "model/registry.hpp"
#include "server/openai/request.hpp"
#include "server/openai/service_internal.hpp"
#include "text/deepseek_v4.hpp"

namespace mach::server::openai {

Service::Service(asio::io_context& io, model::Model& model, engine::EngineLoop& loop, engine::PrefixCache* prefix_cache,
                 const text::Tokenizer* tokenizer, const text::ChatTemplate* chat_template, ServiceOptions options)
    : io_(io),
      model_(model),
      loop_(loop),
      prefix_cache_(prefix_cache),
      tokenizer_(tokenizer),
      chat_template_(chat_template),
      options_(std::move(options)),
      created_(unix_now()) {
  if (tokenizer_) profile_ = text::detect_text_profile(*tokenizer_, tokenizer_->chat_template());
  stop_ids_.assign(profile_.stop_ids.begin(), profile_.stop_ids.end());
  for (int64_t id : model_.config().eos_token_ids)
    if (id >= 0 && std::find(stop_ids_.begin(), stop_ids_.end(), id) == stop_ids_.end())
      stop_ids_.push_back(static_cast<uint32_t>(id));
}

Service::~Service() = default;

void Service::install(http::Server& server) {
  server_ = &server;
  const auto bind = [this](auto method) {
    return [this, method](const http::Request& req, http::Response& res) { return (this->*method)(req, res); };
  };
  server.route(
      "GET", "/health",
      [this](const http::Request&, http::Response& res) -> asio::awaitable<void> {
        const auto& c = loop_.counters();
        if (c.failed) {
          {
            const ApiError error_{503, fmt::format("the GPU failed: {}; restart mach serve", c.failure), "server_error",
                                  "", "device_lost"};
            co_await send_api_error(res, error_);
          }
          co_return;
        }
        const json ok = {{"status", "ok"}};
        co_await send_json(res, 200, ok);
      },
      /*auth=*/false);
  server.route("GET", "/v1/models", bind(&Service::models));
  server.route("GET", "/v1/models/" + options_.model_id, bind(&Service::models));
  server.route("POST", "/v1/chat/completions", bind(&Service::chat));
  server.route("POST", "/v1/completions", bind(&Service::completions));
  server.route("GET", "/v1/capabilities", [this](const http::Request&, http::Response& res) -> asio::awaitable<void> {
    const json body = capabilities();
    co_await send_json(res, 200, body);
  });
  server.route("GET", "/v1/stats", [this](const http::Request&, http::Response& res) -> asio::awaitable<void> {
    const json body = stats();
    co_await send_json(res, 200, body);
  });
  server.route("GET", "/v1/cache/stats", [this](const http::Request&, http::Response& res) -> asio::awaitable<void> {
    const auto& kv = model_.kv_cache();
    json j;
    j["prefix_cache"] = prefix_cache_ ? json(prefix_cache_->stats()) : json{{"enabled", false}};
    if (prefix_cache_) j["prefix_cache"]["enabled"] = true;
    j["kv_cache"] = {{"block_tokens", kv.block_size()},
                     {"blocks_total", kv.total_blocks()},
                     {"blocks_free", kv.free_blocks()},
                     {"bytes", kv.bytes()}};
    const experts::ExpertStats stats = model_.expert_stats();  // a copy: per-expert counts of every layer
    j["experts"] = experts::to_json(stats);
    j["experts"]["residency"] = stats.streaming ? "streaming" : "resident";
    co_await send_json(res, 200, j);
  });
  server.route("POST", "/v1/cache/warm_prefix", bind(&Service::warm_prefix_post));
  server.route("GET", "/v1/cache/warm_prefix",
               [this](const http::Request&, http::Response& res) -> asio::awaitable<void> {
                 co_await send_json(res, 200, warm_status_);
               });
  server.route("GET", "/metrics", [this](const http::Request&, http::Response& res) -> asio::awaitable<void> {
    std::string out = stats_.prometheus();
    const auto& c = loop_.counters();
    const auto& sched = loop_.scheduler();
    out += "# HELP mach_queue_depth Sequences waiting for KV-cache room.\n# TYPE mach_queue_depth gauge\n";
    out += fmt::format("mach_queue_depth {}\n", sched.waiting());
    out += "# HELP mach_running_sequences Sequences holding KV-cache blocks.\n# TYPE mach_running_sequences gauge\n";
    out += fmt::format("mach_running_sequences {}\n", sched.running());
    out += "# HELP mach_steps_total Forward steps run, by kind.\n# TYPE mach_steps_total counter\n";
    out += fmt::format("mach_steps_total{{kind=\"prefill\"}} {}\nmach_steps_total{{kind=\"decode\"}} {}\n",
                       c.prefill_steps, c.decode_steps);
    out +=
        "# HELP mach_step_tokens_total Tokens through the model, by step kind.\n# TYPE mach_step_tokens_total "
        "counter\n";
    out += fmt::format("mach_step_tokens_total{{kind=\"prefill\"}} {}\nmach_step_tokens_total{{kind=\"decode\"}} {}\n",
                       c.prefill_tokens, c.decode_tokens);
    const auto& kv = model_.kv_cache();
    out += "# HELP mach_kv_cache_blocks KV-cache blocks, by state.\n# TYPE mach_kv_cache_blocks gauge\n";
    out += fmt::format("mach_kv_cache_blocks{{state=\"free\"}} {}\nmach_kv_cache_blocks{{state=\"used\"}} {}\n",
                       kv.free_blocks(), kv.total_blocks() - kv.free_blocks());
    if (prefix_cache_) {
      const auto p = prefix_cache_->stats();
      out +=
          "# HELP mach_prefix_cache_hit_tokens_total Prompt tokens restored from the prefix cache.\n"
          "# TYPE mach_prefix_cache_hit_tokens_total counter\n";
      out += fmt::format("mach_prefix_cache_hit_tokens_total {}\n", p.hit_tokens);
      out +=
          "# HELP mach_prefix_cache_bytes Bytes held by the prefix cache, by level.\n"
          "# TYPE mach_prefix_cache_bytes gauge\n";
      out += fmt::format("mach_prefix_cache_bytes{{level=\"l1\"}} {}\nmach_prefix_cache_bytes{{level=\"l2\"}} {}\n",
                         p.l1_bytes, p.l2_bytes);
    }
    if (server_) {
      const auto& h = server_->counters();
      out +=
          "# HELP mach_http_responses_total HTTP responses by status class.\n# TYPE mach_http_responses_total "
          "counter\n";
      for (int k = 1; k <= 5; ++k)
        out += fmt::format("mach_http_responses_total{{class=\"{}xx\"}} {}\n", k, h.responses_by_class[k]);
      out += "# HELP mach_http_connections_open Open client connections.\n# TYPE mach_http_connections_open gauge\n";
      out += fmt::format("mach_http_connections_open {}\n", h.connections_open);
    }
    std::string type = "text/plain; version=0.0.4; charset=utf-8";
    co_await res.send(200, std::move(type), std::move(out));
  });
}

json Service::capabilities() const {
  const auto& c = model_.config();
  const auto* arch = model::find_arch(c.model_type);
  json j;
  j["model"] = {{"id", options_.model_id},
                {"model_type", c.model_type},
                {"layers", c.num_layers},
                {"hidden_size", c.hidden_size},
                {"experts", c.num_experts},
                {"experts_per_token", c.num_experts_per_tok},
                {"vocab_size", c.vocab_size},
                {"context_length", model_.kv_cache().max_context()},
                {"fingerprint", model_.fingerprint()}};
  j["backend"] = options_.backend;
  j["supported"] = true;
  if (arch) {
    j["arch"] = {{"family", model::family_name(arch->family)},
                 {"activation", model::activation_name(arch->activation)},
                 {"expert_bias", arch->expert_bias},
                 {"text_config", model::text_config_wrapping_name(arch->text_config)},
                 {"kv_cache", model::kv_cache_kind_name(arch->kv_cache)},
                 {"spec_decoding", model::spec_decoding_kind_name(arch->spec_decoding)},
                 {"continuous_batching", arch->continuous_batching},
                 {"status", model::support_status_name(arch->status)}};
  }
  json serving = options_.serving;
  serving["batching"] = {{"continuous", true}, {"max_batch", options_.max_batch}};
  serving["speculation"] = {{"presets", {"none", "ngram", "summarization", "classification"}},
                            {"default", engine::speculation_name(options_.default_speculation)},
                            {"kind",
                             "draft-free n-gram / prompt lookup, exact (greedy: identical output; "
                             "sampling: rejection sampling)"}};
  serving["prefix_cache"] = {{"enabled", prefix_cache_ != nullptr}};
  serving["text"] = {
      {"tokenizer", tokenizer_ != nullptr},
      {"chat_template", chat_template_ != nullptr},
      {"output_format",
       profile_.output_format ? json(std::string(text::output_format_name(*profile_.output_format))) : json(nullptr)}};
  j["serving"] = serving;
  j["grammar"] = {{"supported", tokenizer_ ? json::array({"json_object"}) : json::array()},
                  {"reason",
                   "response_format json_object constrains every token to keep the reply a JSON object (needs "
                   "tokenizer.json); json_schema and forced tool_choice need schema-constrained decoding, not "
                   "implemented: refused with a 400"}};
  j["endpoints"] = {"/v1/models",      "/v1/chat/completions",  "/v1/completions", "/v1/capabilities", "/v1/stats",
                    "/v1/cache/stats", "/v1/cache/warm_prefix", "/health",         "/metrics"};
  return j;
}

json Service::stats() const {
  json j = stats_.to_json();
  const auto& c = loop_.counters();
  const auto& sched = loop_.scheduler();
  j["queue"] = {{"waiting", sched.waiting()}, {"running", sched.running()}};
  json hist = json::object();
  for (size_t i = 0; i < c.decode_batch_histogram.size(); ++i) {
    const std::string label = i == 0   ? "1"
                              : i == 1 ? "2"
                              : i + 1 == c.decode_batch_histogram.size()
                                  ? fmt::format(">{}", 1u << (i - 1))
                                  : fmt::format("{}-{}", (1u << (i - 1)) + 1, 1u << i);
    hist[label] = c.decode_batch_histogram[i];
  }
  j["steps"] = {{"prefill", c.prefill_steps},
                {"decode", c.decode_steps},
                {"prefill_tokens", c.prefill_tokens},
                {"decode_tokens", c.decode_tokens},
                {"mean_decode_batch", c.decode_steps ? static_cast<double>(c.decode_tokens) / c.decode_steps : 0.0},
                {"decode_batch_histogram", hist}};
  if (c.failed) j["engine_failure"] = c.failure;
  return j;
}

asio::awaitable<void> Service::models(const http::Request& req, http::Response& res) {
  const json model = {{"id", options_.model_id},
                      {"object", "model"},
                      {"created", created_},
                      {"owned_by", "mach"},
                      {"max_model_len", model_.kv_cache().max_context()}};
  json list = {{"object", "list"}, {"data", json::array()}};
  list["data"].push_back(model);
  const json& body = req.path == "/v1/models" ? list : model;
  co_await send_json(res, 200, body);
}

template <class T>
std::optional<ApiError> Service::refuse(const Decoded<T>& decoded) {
  std::optional<ApiError> e;
  if (const auto* error = std::get_if<ApiError>(&decoded)) {
    e = *error;
  } else {
    const std::string& model = std::get<T>(decoded).sampling.model;
    if (!model.empty() && model != options_.model_id)
      e = ApiError{404, fmt::format("The model '{}' does not exist; this server serves '{}'", model, options_.model_id),
                   "invalid_request_error", "model", "model_not_found"};
  }
  if (e) stats_.rejected(e->code.empty() ? "invalid_request" : e->code);
  return e;
}

asio::awaitable<void> Service::chat(const http::Request& req, http::Response& res) {
  auto decoded = decode_chat_request(req.body);
  if (const auto refusal = refuse(decoded)) {
    co_await send_api_error(res, *refusal);
    co_return;
  }
  auto& r = std::get<ChatCompletionRequest>(decoded);
  // DeepSeek-V4 checkpoints ship a Python encoder instead of a Jinja template; mach renders that format itself.
  const bool deepseek_v4 = !chat_template_ && profile_.output_format == text::OutputFormat::deepseek_v4;
  if (!tokenizer_ || (!chat_template_ && !deepseek_v4)) {
    stats_.rejected("no_chat_template");
    {
      const ApiError error_{
          400,
          tokenizer_ ? "this checkpoint has no chat template (chat_template.jinja or tokenizer_config.json's "
                       "chat_template); use /v1/completions"
                     : "this checkpoint has no tokenizer.json, so it cannot read messages; use /v1/completions "
                       "with a list of token ids as the prompt",
          "invalid_request_error", "messages", "no_chat_template"};
      co_await send_api_error(res, error_);
    }
    co_return;
  }
  text::ChatRequest cr;
  cr.messages = r.messages;
  cr.tools = r.tools;
  cr.add_generation_prompt = !r.continue_final_message;
  cr.kwargs = r.template_kwargs;
  auto rendered = deepseek_v4 ? text::render_deepseek_v4(cr) : chat_template_->render(cr);
  if (!rendered) {
    stats_.rejected("template_error");
    {
      const ApiError error_{400, fmt::format("the chat template refused these messages: {}", rendered.error().message),
                            "invalid_request_error", "messages", "template_error"};
      co_await send_api_error(res, error_);
    }
    co_return;
  }
  std::string prompt_text = std::move(rendered).value();
  if (r.continue_final_message) {
    // Continue the last assistant message: cut the render right after its content.
    const auto& last = r.messages.back()["content"];
    const std::string tail = last.is_string() ? last.get<std::string>() : "";
    const size_t at = tail.empty() ? std::string::npos : prompt_text.rfind(tail);
    if (at == std::string::npos) {
      {
        const ApiError error_{400,
                              "continue_final_message: the chat template does not write the final message's "
                              "content verbatim, so it cannot be continued",
                              "invalid_request_error", "continue_final_message", ""};
        co_await send_api_error(res, error_);
      }
      co_return;
    }
    prompt_text.resize(at + tail.size());
  }
  Job job;
  job.chat = true;
  job.id = random_id("chatcmpl-");
  job.sampling = r.sampling;
  const auto ids = tokenizer_->encode(prompt_text, {.match_special = true, .add_special_tokens = false});
  job.prompt.assign(ids.begin(), ids.end());
  // JSON mode draws no markup tokens: the reply is the answer itself, all content (no reasoning block, even one
  // the prompt opened, and no tool calls, even if a JSON string spells their tags).
  if (!r.sampling.json_object) job.assembler.format = profile_.output_format;
  job.assembler.tools = r.tools;
  job.assembler.starts_in_reasoning = !r.sampling.json_object && text::prompt_opens_reasoning(prompt_text);
  job.assembler.keep_special_tokens = profile_.output_format == text::OutputFormat::harmony;
  co_await run_job(job, res);
}

asio::awaitable<void> Service::completions(const http::Request& req, http::Response& res) {
  auto decoded = decode_completion_request(req.body);
  if (const auto refusal = refuse(decoded)) {
    co_await send_api_error(res, *refusal);
    co_return;
  }
  auto& r = std::get<CompletionRequest>(decoded);
  Job job;
  job.chat = false;
  job.id = random_id("cmpl-");
  job.sampling = r.sampling;
  if (auto* text = std::get_if<std::string>(&r.prompt)) {
    if (!tokenizer_) {
      {
        const ApiError error_{400, "this checkpoint has no tokenizer.json; send the prompt as a list of token ids",
                              "invalid_request_error", "prompt", "no_tokenizer"};
        co_await send_api_error(res, error_);
      }
      co_return;
    }
    // A raw prompt, as llama.cpp's server: the tokenizer's own special tokens (BOS) are added.
    const auto ids = tokenizer_->encode(*text, {.match_special = true, .add_special_tokens = true});
    job.prompt.assign(ids.begin(), ids.end());
    if (r.echo) job.echo = *text;
  } else {
    job.prompt = std::get<std::vector<uint32_t>>(r.prompt);
    if (r.echo && tokenizer_) {
      job.echo = tokenizer_->decode(std::vector<text::TokenId>(job.prompt.begin(), job.prompt.end()));
    }
  }
  if (job.prompt.empty()) {
    {
      const ApiError error_{400, "the prompt is empty", "invalid_request_error", "prompt", ""};
      co_await send_api_error(res, error_);
    }
    co_return;
  }
  co_await run_job(job, res);
}

asio::awaitable<void> Service::warm_prefix_post(const http::Request& req, http::Response& res) {
  auto decoded = decode_warm_prefix_request(req.body);
  if (auto* e = std::get_if<ApiError>(&decoded)) {
    co_await send_api_error(res, *e);
    co_return;
  }
  if (!prefix_cache_) {
    {
      const ApiError error_{400, "the prefix cache is off; start mach serve with --prefix-cache",
                            "invalid_request_error", "", "prefix_cache_disabled"};
      co_await send_api_error(res, error_);
    }
    co_return;
  }
  if (!tokenizer_ || !chat_template_) {
    {
      const ApiError error_{400, "this checkpoint has no tokenizer or chat template to render messages with",
                            "invalid_request_error", "messages", "no_chat_template"};
      co_await send_api_error(res, error_);
    }
    co_return;
  }
  auto& r = std::get<WarmPrefixRequest>(decoded);
  text::ChatRequest cr;
  cr.messages = r.messages;
  cr.tools = r.tools;
  cr.add_generation_prompt = false;
  auto rendered = chat_template_->render(cr);
  if (!rendered) {
    {
      const ApiError error_{400, fmt::format("the chat template refused these messages: {}", rendered.error().message),
                            "invalid_request_error", "messages", "template_error"};
      co_await send_api_error(res, error_);
    }
    co_return;
  }
  const auto ids = tokenizer_->encode(*rendered, {.match_special = true, .add_special_tokens = false});
  std::vector<uint32_t> prompt(ids.begin(), ids.end());
  const uint32_t block = model_.kv_cache().block_size();
  const uint32_t cacheable = static_cast<uint32_t>(prompt.size() / block * block);
  if (prompt.size() + 2 > model_.kv_cache().max_context()) {
    {
      const ApiError error_{
          400,
          fmt::format("the prefix has {} tokens; the context holds {}", prompt.size(), model_.kv_cache().max_context()),
          "invalid_request_error", "messages", "context_length_exceeded"};
      co_await send_api_error(res, error_);
    }
    co_return;
  }
  // Prefill through the scheduler like any request (so it batches with live traffic); finishing the prompt
  // stores its full blocks in the prefix cache. One greedy token is generated and dropped.
  engine::SequenceRequest sr;
  sr.prompt = prompt;
  sr.sampling.temperature = 0;
  sr.max_tokens = 1;
  const auto started = Clock::now();
  const uint64_t hits_before = prefix_cache_->stats().hit_tokens;
  warm_status_ = {{"state", "running"}, {"prompt_tokens", prompt.size()}};
  auto stream = loop_.start(std::move(sr));
  if (!stream) {
    warm_status_ = {{"state", "failed"}, {"error", stream.error().message}};
    {
      const ApiError error_{400, stream.error().message, "invalid_request_error", "", ""};
      co_await send_api_error(res, error_);
    }
    co_return;
  }
  engine::TokenEvent last;
  try {
    for (;;) {
      last = co_await (*stream)->channel.async_receive(asio::use_awaitable);
      if (last.done) break;
    }
  } catch (const std::exception&) {
    (*stream)->cancel();
    warm_status_ = {{"state", "cancelled"}};
    co_return;
  }
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - started).count();
  if (last.finish_reason != "length" && last.finish_reason != "stop") {
    warm_status_ = {{"state", "failed"}, {"error", last.finish_reason}};
    {
      const ApiError error_{500, fmt::format("warming failed: {}", last.finish_reason), "server_error", "", ""};
      co_await send_api_error(res, error_);
    }
    co_return;
  }
  warm_status_ = {{"state", "done"},
                  {"prompt_tokens", prompt.size()},
                  {"cached_tokens", cacheable},
                  {"already_cached_tokens", prefix_cache_->stats().hit_tokens - hits_before},
                  {"ms", ms}};
  co_await send_json(res, 200, warm_status_);
}

}  // namespace mach::server::openai
