// Answering one completion request: one sequence per choice on the engine loop, their token events merged,
// turned into SSE chunks as they arrive or into one JSON body at the end.
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/channel.hpp>
#include <asio/use_awaitable.hpp>

#include "server/openai/service_internal.hpp"

namespace mach::server::openai {
namespace {

// The prompt length rules shared by both routes; nullopt when it fits.
std::optional<ApiError> check_length(size_t prompt, uint32_t max_tokens, uint32_t drafts, uint32_t context) {
  if (prompt + uint64_t{max_tokens} + drafts + 1 <= context) return std::nullopt;
  return ApiError{
      400,
      fmt::format("This model's maximum context length is {} tokens. However, you requested {} tokens ({} in "
                  "the prompt, {} for the completion{}). Please reduce the length of the prompt or "
                  "max_tokens.",
                  context, prompt + max_tokens + drafts + 1, prompt, max_tokens,
                  drafts ? fmt::format(", {} for speculative drafts and 1 for the bonus token", drafts) : ""),
      "invalid_request_error", "messages", "context_length_exceeded"};
}

}  // namespace

asio::awaitable<void> Service::run_job(Job& job, http::Response& res) {
  job.arrived = Clock::now();
  job.created = unix_now();
  job.model = options_.model_id;
  const auto& s = job.sampling;
  const uint32_t context = model_.kv_cache().max_context();
  // JSON mode runs without drafts (the scheduler turns them off; the length check should not count them).
  const auto speculation = s.json_object ? engine::Speculation::none : s.speculation.value_or(options_.default_speculation);
  const uint32_t drafts = speculation == engine::Speculation::none
                              ? 0
                              : (s.draft_max ? s.draft_max : engine::default_draft_max(speculation));
  uint32_t max_tokens = 0;
  if (s.max_tokens) {
    max_tokens = *s.max_tokens;
  } else {
    const uint64_t used = job.prompt.size() + drafts + 1;
    max_tokens =
        used >= context ? 1 : static_cast<uint32_t>(std::min<uint64_t>(context - used, options_.default_max_tokens));
  }
  if (auto e = check_length(job.prompt.size(), max_tokens, drafts, context)) {
    stats_.rejected("context_length_exceeded");
    co_await send_api_error(res, *e);
    co_return;
  }
  if (tokenizer_) {
    job.assembler.stop = s.stop;
    job.assembler.stop_ids = stop_ids_;
  }
  const uint32_t vocab = model_.config().vocab_size;
  for (uint32_t id : job.prompt) {
    if (id >= vocab) {
      {
        const ApiError error_{400, fmt::format("prompt token {} is outside the vocabulary ({} tokens)", id, vocab),
                              "invalid_request_error", "prompt", ""};
        co_await send_api_error(res, error_);
      }
      co_return;
    }
  }

  for (const auto& [id, bias] : s.logit_bias) {
    if (id >= vocab) {
      {
        const ApiError error_{400, fmt::format("logit_bias names token {}, outside the vocabulary ({} tokens)", id, vocab),
                              "invalid_request_error", "logit_bias", ""};
        co_await send_api_error(res, error_);
      }
      co_return;
    }
  }

  if (s.json_object && profile_.output_format == text::OutputFormat::harmony) {
    {
      // harmony's channels are markup tokens, which JSON mode never draws.
      const ApiError error_{400, "response_format 'json_object' is not supported with the harmony format yet",
                            "invalid_request_error", "response_format", "unsupported_parameter"};
      co_await send_api_error(res, error_);
    }
    co_return;
  }
  if (s.json_object && !json_table_) {
    if (!tokenizer_) {
      {
        const ApiError error_{400,
                              "response_format 'json_object' needs the checkpoint's tokenizer (tokenizer.json): it "
                              "constrains tokens by their bytes",
                              "invalid_request_error", "response_format", "unsupported_parameter"};
        co_await send_api_error(res, error_);
      }
      co_return;
    }
    // Every token's bytes; added tokens (control and markup such as <think>) are never JSON text.
    std::vector<std::string> bytes(vocab);
    for (uint32_t id = 0; id < vocab; ++id)
      if (tokenizer_->valid_id(static_cast<text::TokenId>(id)))
        bytes[id] = std::string(tokenizer_->token_bytes(static_cast<text::TokenId>(id)));
    for (const auto& added : tokenizer_->added_tokens())
      if (added.id >= 0 && static_cast<uint32_t>(added.id) < vocab) bytes[added.id].clear();
    json_table_ = std::make_shared<const engine::JsonTokenTable>(std::move(bytes), stop_ids_);
  }

  // One sequence per choice.
  std::mt19937_64 seeder{s.seed.value_or(std::random_device{}())};
  job.choices.resize(s.n);
  for (uint32_t i = 0; i < s.n; ++i) {
    engine::SequenceRequest sr;
    sr.prompt = job.prompt;
    sr.sampling = {.temperature = s.temperature,
                   .top_k = s.top_k,
                   .top_p = s.top_p,
                   .min_p = s.min_p,
                   .presence_penalty = s.presence_penalty,
                   .frequency_penalty = s.frequency_penalty,
                   .seed = s.seed ? *s.seed + i : seeder(),
                   .logit_bias = s.logit_bias};
    sr.max_tokens = max_tokens;
    sr.stop_ids = stop_ids_;
    sr.speculation = speculation;
    sr.draft_max = drafts;
    sr.logprobs = s.logprobs;
    sr.top_logprobs = s.top_logprobs;
    if (s.json_object) sr.json_object = json_table_;
    auto stream = loop_.start(std::move(sr));
    if (!stream) {
      for (auto& c : job.choices)
        if (c.stream) c.stream->cancel();
      {
        const ApiError error_{400, stream.error().message, "invalid_request_error", "", ""};
        co_await send_api_error(res, error_);
      }
      co_return;
    }
    job.choices[i].stream = std::move(stream).value();
    if (tokenizer_) job.choices[i].assembler = std::make_unique<ChoiceAssembler>(*tokenizer_, job.assembler);
  }
  stats_.request_started();
  struct InFlight {
    ServingStats& s;
    ~InFlight() { s.request_finished(); }
  } in_flight{stats_};

  // Events of every choice arrive through one channel, fed by one forwarding coroutine per choice. The
  // forwarders end with their sequence's last event, which cancel() guarantees.
  using Merged = asio::experimental::channel<void(asio::error_code, size_t, engine::TokenEvent)>;
  size_t capacity = 0;
  for (size_t i = 0; i < job.choices.size(); ++i) capacity += max_tokens + 2;
  auto merged = std::make_shared<Merged>(io_, capacity);
  for (size_t i = 0; i < job.choices.size(); ++i) {
    asio::co_spawn(
        io_,
        [merged, stream = job.choices[i].stream, i]() -> asio::awaitable<void> {
          for (;;) {
            auto [ec, ev] = co_await stream->channel.async_receive(asio::experimental::as_tuple(asio::use_awaitable));
            if (ec) {
              engine::TokenEvent last;
              last.done = true;
              last.finish_reason = "error: the engine closed the stream";
              merged->try_send(asio::error_code{}, i, std::move(last));
              co_return;
            }
            const bool done = ev.done;
            merged->try_send(asio::error_code{}, i, std::move(ev));
            if (done) co_return;
          }
        },
        asio::detached);
  }
  const auto cancel_all = [&] {
    for (auto& c : job.choices)
      if (!c.done) c.stream->cancel();
  };

  const bool stream = s.stream;
  const bool chat = job.chat;
  const auto chunk_base = [&] {
    return json{{"id", job.id},
                {"object", chat ? "chat.completion.chunk" : "text_completion"},
                {"created", job.created},
                {"model", job.model},
                {"system_fingerprint", nullptr}};
  };
  bool client_gone = false;
  const auto write_event = [&](const json& j) -> asio::awaitable<void> {
    if (client_gone) co_return;
    const std::string event = "data: " + dump(j) + "\n\n";
    if (!co_await res.write(event)) client_gone = true;
  };

  if (stream) {
    http::Headers headers;
    headers.emplace_back("Cache-Control", "no-cache");
    std::string type = "text/event-stream";
    co_await res.begin_stream(200, std::move(type), std::move(headers));
    if (chat) {
      for (size_t i = 0; i < job.choices.size(); ++i) {
        json c = chunk_base();
        c["choices"] = json::array({{{"index", i},
                                     {"delta", {{"role", "assistant"}, {"content", ""}}},
                                     {"logprobs", nullptr},
                                     {"finish_reason", nullptr}}});
        co_await write_event(c);
      }
    } else if (!job.echo.empty()) {
      for (size_t i = 0; i < job.choices.size(); ++i) {
        json c = chunk_base();
        c["choices"] =
            json::array({{{"index", i}, {"text", job.echo}, {"logprobs", nullptr}, {"finish_reason", nullptr}}});
        co_await write_event(c);
      }
    }
  }

  size_t remaining = job.choices.size();
  try {
    while (remaining > 0 && !client_gone) {
      auto [index, ev] = co_await merged->async_receive(asio::use_awaitable);
      Choice& c = job.choices[index];
      const auto now = Clock::now();
      if (!ev.tokens.empty()) {
        if (!c.got_first) {
          c.got_first = true;
          c.first_at = now;
          if (index == 0) stats_.first_token(std::chrono::duration<double>(now - job.arrived).count());
        }
        c.last_at = now;
        stats_.tokens_generated(static_cast<uint32_t>(ev.tokens.size()));
      }
      text::OutputDelta delta;
      std::vector<std::pair<uint32_t, engine::TokenLogprob>> lps;
      if (c.assembler) {
        const uint32_t before = c.assembler->tokens();
        delta = c.assembler->push(ev.tokens);
        const uint32_t used = c.assembler->tokens() - before;
        for (uint32_t k = 0; k < used && k < ev.logprobs.size(); ++k) lps.emplace_back(ev.tokens[k], ev.logprobs[k]);
        if (ev.done) delta.append(c.assembler->finish());
        if (c.assembler->stopped() && !ev.done) c.stream->cancel();
      } else {
        // No tokenizer: token-id completions answer with ids, as the text is unknown.
        for (size_t k = 0; k < ev.tokens.size() && k < ev.logprobs.size(); ++k)
          lps.emplace_back(ev.tokens[k], ev.logprobs[k]);
        c.ids.insert(c.ids.end(), ev.tokens.begin(), ev.tokens.end());
      }
      const size_t text_offset = job.echo.size() + c.content.size();
      c.content += delta.content;
      c.reasoning += delta.reasoning;
      const size_t first_new_call = c.tool_calls.size();
      c.tool_calls.insert(c.tool_calls.end(), delta.tool_calls.begin(), delta.tool_calls.end());
      c.logprobs.insert(c.logprobs.end(), lps.begin(), lps.end());
      if (ev.done) {
        c.done = true;
        --remaining;
        c.cached_tokens = ev.cached_tokens;
        c.speculation = ev.speculation;
        const bool stopped = c.assembler && c.assembler->stopped();
        if (stopped || ev.finish_reason == "stop" || ev.finish_reason == "cancelled")
          c.finish_reason = "stop";
        else if (ev.finish_reason == "length")
          c.finish_reason = "length";
        else
          c.error = ev.finish_reason.rfind("error: ", 0) == 0 ? ev.finish_reason.substr(7) : ev.finish_reason;
        if (c.finish_reason == "stop" && !c.tool_calls.empty()) c.finish_reason = "tool_calls";
        const uint32_t completion = c.completion_tokens();
        const double decode_s = c.got_first ? std::chrono::duration<double>(c.last_at - c.first_at).count() : 0.0;
        stats_.choice_finished(static_cast<uint32_t>(job.prompt.size()), c.cached_tokens, completion, decode_s,
                               c.error.empty() ? c.finish_reason : "error", c.speculation);
      }
      if (!stream) continue;
      // Streaming: this event's additions, then the choice's finish.
      if (chat) {
        json d = json::object();
        if (!delta.reasoning.empty()) d["reasoning_content"] = delta.reasoning;
        if (!delta.content.empty()) d["content"] = delta.content;
        if (!delta.tool_calls.empty()) {
          json calls = json::array();
          for (size_t k = 0; k < delta.tool_calls.size(); ++k)
            calls.push_back(tool_call_json(delta.tool_calls[k], static_cast<uint32_t>(first_new_call + k), true));
          d["tool_calls"] = calls;
        }
        if (!d.empty() || !lps.empty()) {
          json chunk = chunk_base();
          chunk["choices"] = json::array({{{"index", index},
                                           {"delta", d},
                                           {"logprobs", s.logprobs ? chat_logprobs(tokenizer_, lps) : json(nullptr)},
                                           {"finish_reason", nullptr}}});
          co_await write_event(chunk);
        }
      } else if (!delta.content.empty() || !lps.empty()) {
        json chunk = chunk_base();
        const json logprobs = s.logprobs ? completion_logprobs(tokenizer_, lps, text_offset) : json(nullptr);
        chunk["choices"] = json::array(
            {{{"index", index}, {"text", delta.content}, {"logprobs", logprobs}, {"finish_reason", nullptr}}});
        co_await write_event(chunk);
      }
      if (c.done) {
        if (!c.error.empty()) {
          const json failure = {
              {"error",
               {{"message", c.error}, {"type", "server_error"}, {"param", nullptr}, {"code", "generation_failed"}}}};
          co_await write_event(failure);
        } else {
          json chunk = chunk_base();
          if (chat)
            chunk["choices"] = json::array({{{"index", index},
                                             {"delta", json::object()},
                                             {"logprobs", nullptr},
                                             {"finish_reason", c.finish_reason}}});
          else
            chunk["choices"] = json::array(
                {{{"index", index}, {"text", ""}, {"logprobs", nullptr}, {"finish_reason", c.finish_reason}}});
          co_await write_event(chunk);
        }
      }
    }
  } catch (const std::exception&) {
    // The client went away (the HTTP layer cancelled this handler): free the sequences now.
    cancel_all();
    co_return;
  }
  if (client_gone) {
    cancel_all();
    co_return;
  }

  uint32_t completion_tokens = 0;
  for (const auto& c : job.choices) completion_tokens += c.completion_tokens();
  const json usage = {{"prompt_tokens", job.prompt.size()},
                      {"completion_tokens", completion_tokens},
                      {"total_tokens", job.prompt.size() + completion_tokens},
                      {"prompt_tokens_details", {{"cached_tokens", job.choices[0].cached_tokens}}}};
  if (stream) {
    if (s.include_usage) {
      json chunk = chunk_base();
      chunk["choices"] = json::array();
      chunk["usage"] = usage;
      co_await write_event(chunk);
    }
    if (!client_gone) co_await res.write("data: [DONE]\n\n");
    co_await res.end();
    co_return;
  }

  for (const auto& c : job.choices) {
    if (c.error.empty()) continue;
    const bool kv = c.error.find("KV-cache") != std::string::npos;
    {
      const ApiError error_{kv ? 400 : 500,
                            kv ? "the KV cache cannot hold this request; lower max_tokens or start mach serve with a "
                                 "larger --kv-cache-gb"
                               : c.error,
                            kv ? "invalid_request_error" : "server_error", "",
                            kv ? "kv_cache_full" : "generation_failed"};
      co_await send_api_error(res, error_);
    }
    co_return;
  }
  json body = {{"id", job.id},
               {"object", chat ? "chat.completion" : "text_completion"},
               {"created", job.created},
               {"model", job.model},
               {"system_fingerprint", nullptr},
               {"usage", usage}};
  json choices = json::array();
  for (size_t i = 0; i < job.choices.size(); ++i) {
    const Choice& c = job.choices[i];
    if (chat) {
      json message = {{"role", "assistant"},
                      {"content", c.content.empty() && !c.tool_calls.empty() ? json(nullptr) : json(c.content)}};
      if (!c.reasoning.empty()) message["reasoning_content"] = c.reasoning;
      if (!c.tool_calls.empty()) {
        json calls = json::array();
        for (size_t k = 0; k < c.tool_calls.size(); ++k) calls.push_back(tool_call_json(c.tool_calls[k], 0, false));
        message["tool_calls"] = calls;
      }
      choices.push_back({{"index", i},
                         {"message", message},
                         {"logprobs", s.logprobs ? chat_logprobs(tokenizer_, c.logprobs) : json(nullptr)},
                         {"finish_reason", c.finish_reason}});
    } else {
      const json logprobs = s.logprobs ? completion_logprobs(tokenizer_, c.logprobs, job.echo.size()) : json(nullptr);
      std::string text = job.echo + c.content;
      json choice = {{"index", i}, {"text", text}, {"logprobs", logprobs}, {"finish_reason", c.finish_reason}};
      if (!tokenizer_) choice["tokens"] = c.ids;  // no tokenizer: the ids are the answer
      choices.push_back(choice);
    }
  }
  body["choices"] = choices;
  co_await send_json(res, 200, body);
}

}  // namespace mach::server::openai
