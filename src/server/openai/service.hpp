// The OpenAI-compatible routes over one loaded model: /v1/models, /v1/chat/completions, /v1/completions,
// /v1/capabilities, /v1/stats, /v1/cache/stats, /v1/cache/warm_prefix, /health, /metrics.
//
// Each request is a coroutine on the loop: decode and validate the body, render the chat template, encode,
// start one sequence per choice on the EngineLoop, and turn the token events into a JSON response or SSE
// chunks. A client that goes away cancels its sequences (the HTTP layer cancels the handler; the handler
// cancels the streams), so their KV blocks are free for the next step.
#pragma once

#include <asio/io_context.hpp>
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "engine/engine_loop.hpp"
#include "engine/prefix_cache.hpp"
#include "model/model.hpp"
#include "server/http/http.hpp"
#include "server/openai/request.hpp"
#include "server/openai/stats.hpp"
#include "text/chat_template.hpp"
#include "text/text_profile.hpp"
#include "text/tokenizer.hpp"

namespace mach::server::openai {

struct ServiceOptions {
  std::string model_id;          // the name clients send as "model" (and /v1/models lists)
  uint32_t max_batch = 8;        // reported in capabilities
  // max_tokens when a request gives none: what is left of the context, capped at this.
  uint32_t default_max_tokens = 4096;
  engine::Speculation default_speculation = engine::Speculation::none;
  // Facts about the run for /v1/capabilities and the startup lines (device, residency, decode path, ...),
  // assembled by `mach serve`; merged into the capabilities object.
  nlohmann::json serving = nlohmann::json::object();
  nlohmann::json backend = nlohmann::json::object();
};

class Service {
 public:
  // tokenizer may be null (a checkpoint without tokenizer.json): then only token-id completions work, and
  // the other routes say why. chat_template may be null (no template): chat completions say why.
  Service(asio::io_context& io, model::Model& model, engine::EngineLoop& loop, engine::PrefixCache* prefix_cache,
          const text::Tokenizer* tokenizer, const text::ChatTemplate* chat_template, ServiceOptions options);
  ~Service();

  // Adds every route to the server (/health and OPTIONS need no key; the rest do when a key is set).
  void install(http::Server& server);

  nlohmann::json capabilities() const;
  nlohmann::json stats() const;
  const ServingStats& serving_stats() const { return stats_; }

 private:
  struct Choice;
  struct Job;
  asio::awaitable<void> chat(const http::Request& req, http::Response& res);
  asio::awaitable<void> completions(const http::Request& req, http::Response& res);
  asio::awaitable<void> models(const http::Request& req, http::Response& res);
  asio::awaitable<void> warm_prefix_post(const http::Request& req, http::Response& res);
  asio::awaitable<void> run_job(Job& job, http::Response& res);
  // A decoding error, or a model name other than the served one; counted in the stats.
  template <class T>
  std::optional<ApiError> refuse(const Decoded<T>& decoded);

  asio::io_context& io_;
  model::Model& model_;
  engine::EngineLoop& loop_;
  engine::PrefixCache* prefix_cache_;
  const text::Tokenizer* tokenizer_;
  const text::ChatTemplate* chat_template_;
  ServiceOptions options_;
  text::TextProfile profile_;
  std::vector<uint32_t> stop_ids_;
  // JSON mode's token table, made from the tokenizer by the first request that asks for it (~50 ms).
  std::shared_ptr<const engine::JsonTokenTable> json_table_;
  ServingStats stats_;
  http::Server* server_ = nullptr;
  const int64_t created_;  // unix seconds at start
  // The last warm_prefix: status for GET.
  nlohmann::json warm_status_ = {{"state", "idle"}};
};

}  // namespace mach::server::openai
