// The OpenAI server over a ScriptedModel: every completion generates the tokens of --script (encoded with
// the tokenizer in --tokenizer-dir), then the end-of-turn token. The openai-client test uses it for tool
// calls, reasoning and stop strings, which a random model cannot produce on demand.
//
// Usage: scripted_server --tokenizer-dir DIR --script TEXT [--port P] [--api-key K]
// Prints "listen: listen=http://127.0.0.1:PORT" once it accepts connections; runs until SIGTERM/SIGINT.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/signal_set.hpp>
#include <cstdio>

#include "engine/engine_loop.hpp"
#include "gpu/context.hpp"
#include "runtime/gpu_bridge.hpp"
#include "server/http/http.hpp"
#include "server/openai/service.hpp"
#include "server/scripted_model.hpp"
#include "text/chat_template.hpp"
#include "text/tokenizer.hpp"

int main(int argc, char** argv) {
  using namespace mach;
  CLI::App app{"mach test server over a scripted model"};
  std::string dir, script;
  uint16_t port = 0;
  std::string api_key;
  app.add_option("--tokenizer-dir", dir)->required();
  app.add_option("--script", script)->required();
  app.add_option("--port", port);
  app.add_option("--api-key", api_key);
  CLI11_PARSE(app, argc, argv);
  try {
    auto context = gpu::Context::create({}).value_or_throw();
    auto tokenizer = text::Tokenizer::load(dir).value_or_throw();
    auto chat_template = text::ChatTemplate::load(dir).value_or_throw();
    const auto ids = tokenizer.encode(script, {.match_special = true, .add_special_tokens = false});
    const text::TokenId end = tokenizer.token_id("<|im_end|>");
    if (end < 0) throw Exception(Error{Errc::invalid_argument, "the tokenizer has no <|im_end|>"});
    test::ScriptedModel model(*context, std::vector<uint32_t>(ids.begin(), ids.end()), static_cast<uint32_t>(end),
                              151936, 4, 1024);
    asio::io_context io(1);
    runtime::GpuBridge bridge(io, *context);
    engine::EngineLoop loop(io, *context, model, bridge, {.max_batch = 4});
    server::openai::ServiceOptions so;
    so.model_id = "scripted";
    server::openai::Service service(io, model, loop, nullptr, &tokenizer, &chat_template, so);
    server::http::ServerOptions ho;
    ho.port = port;
    ho.api_key = api_key;
    server::http::Server server(io, ho);
    service.install(server);
    server.listen().value_or_throw();
    fmt::print("listen: listen=http://127.0.0.1:{}\n", server.local_endpoint().port());
    std::fflush(stdout);
    asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](const asio::error_code& ec, int) {
      if (ec) return;
      server.stop();
      loop.stop();
    });
    asio::co_spawn(io, loop.run(), asio::detached);
    asio::co_spawn(io, server.run(), asio::detached);
    io.run();
  } catch (const Exception& e) {
    fmt::print(stderr, "scripted_server: {}\n", e.what());
    return 1;
  }
  return 0;
}
