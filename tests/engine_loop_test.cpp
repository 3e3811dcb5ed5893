// The scheduler on the event loop: requests as coroutines reading their token channels, GPU waits through
// the bridge, cancellation freeing KV blocks at once while other requests go on.
#include "engine/engine_loop.hpp"

#include <gtest/gtest.h>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>
#include <filesystem>
#include <random>

#include "gpu_fixture.hpp"
#include "model/model.hpp"

namespace mach::engine {
namespace {

namespace fs = std::filesystem;

std::unique_ptr<model::Model> load(uint32_t sequences) {
  const char* env = std::getenv("MACH_SOURCE_DIR");
  const fs::path dir = fs::path(env && *env ? env : MACH_SOURCE_DIR) / "tests/fixtures/qwen3_moe";
  model::LoadOptions options;
  options.max_context = 128;
  options.max_sequences = sequences;
  options.max_step_tokens = 64;
  return std::move(model::load_model(dir, test::gpu_context(), options)).value_or_throw();
}

struct Collected {
  std::vector<uint32_t> tokens;
  std::string finish_reason;
  int events = 0;
};

// Reads a stream to its end; with cancel_after > 0, cancels it after that many events.
asio::awaitable<void> read_stream(std::shared_ptr<TokenStream> stream, Collected& out, int cancel_after = 0) {
  for (;;) {
    TokenEvent ev = co_await stream->channel.async_receive(asio::use_awaitable);
    ++out.events;
    out.tokens.insert(out.tokens.end(), ev.tokens.begin(), ev.tokens.end());
    if (ev.done) {
      out.finish_reason = ev.finish_reason;
      co_return;
    }
    if (cancel_after > 0 && out.events == cancel_after) stream->cancel();
  }
}

void check_no_exception(std::exception_ptr e) {
  if (e) std::rethrow_exception(e);
}

std::vector<SequenceRequest> requests(uint32_t n) {
  std::mt19937 gen(3);
  std::vector<SequenceRequest> out;
  for (uint32_t i = 0; i < n; ++i) {
    SequenceRequest r;
    for (uint32_t t = 0; t < 6 + 5 * i; ++t) r.prompt.push_back(gen() % 512);
    r.max_tokens = 8 + 3 * i;
    r.sampling.temperature = 0;
    out.push_back(r);
  }
  return out;
}

TEST(EngineLoop, StreamsMatchTheBlockingScheduler) {
  auto model = load(4);
  const auto reqs = requests(4);
  std::vector<std::vector<uint32_t>> expected;
  {
    Scheduler blocking(test::gpu_context(), *model, {.max_batch = 4});
    for (const auto& r : reqs) (void)blocking.submit(r);
    blocking.run();
    for (uint32_t i = 0; i < reqs.size(); ++i) expected.push_back(blocking.result(i).tokens);
  }

  asio::io_context io(1);
  runtime::GpuBridge bridge(io, test::gpu_context());
  EngineLoop loop(io, test::gpu_context(), *model, bridge, {.max_batch = 4});
  asio::co_spawn(io, loop.run(), check_no_exception);
  std::vector<Collected> got(reqs.size());
  int finished = 0;
  for (size_t i = 0; i < reqs.size(); ++i) {
    asio::co_spawn(
        io,
        [&, i]() -> asio::awaitable<void> {
          auto stream = std::move(loop.start(reqs[i])).value_or_throw();
          co_await read_stream(stream, got[i]);
          if (++finished == static_cast<int>(reqs.size())) loop.stop();
        },
        check_no_exception);
  }
  io.run();
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ(got[i].tokens, expected[i]) << i;
    EXPECT_EQ(got[i].finish_reason, "length");
    EXPECT_GT(got[i].events, 1) << "tokens arrive step by step";
  }
  EXPECT_EQ(model->kv_cache().free_blocks(), model->kv_cache().total_blocks());
}

TEST(EngineLoop, CancellationFreesTheSequenceAndOthersContinue) {
  auto model = load(2);
  auto reqs = requests(2);
  reqs[0].max_tokens = 60;
  asio::io_context io(1);
  runtime::GpuBridge bridge(io, test::gpu_context());
  EngineLoop loop(io, test::gpu_context(), *model, bridge, {.max_batch = 2});
  asio::co_spawn(io, loop.run(), check_no_exception);
  Collected cancelled, normal;
  int finished = 0;
  uint32_t free_after_cancel = 0;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto stream = std::move(loop.start(reqs[0])).value_or_throw();
        co_await read_stream(stream, cancelled, 2);
        free_after_cancel = model->kv_cache().free_blocks();
        if (++finished == 2) loop.stop();
      },
      check_no_exception);
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto stream = std::move(loop.start(reqs[1])).value_or_throw();
        co_await read_stream(stream, normal);
        if (++finished == 2) loop.stop();
      },
      check_no_exception);
  io.run();
  EXPECT_EQ(cancelled.finish_reason, "cancelled");
  EXPECT_LT(cancelled.tokens.size(), 60u);
  EXPECT_EQ(normal.finish_reason, "length");
  EXPECT_EQ(normal.tokens.size(), reqs[1].max_tokens);
  EXPECT_GT(free_after_cancel, 0u);
  EXPECT_EQ(model->kv_cache().free_blocks(), model->kv_cache().total_blocks());
}

TEST(EngineLoop, InvalidRequestIsAnErrorAndTheLoopStaysIdle) {
  auto model = load(1);
  asio::io_context io(1);
  runtime::GpuBridge bridge(io, test::gpu_context());
  EngineLoop loop(io, test::gpu_context(), *model, bridge, {.max_batch = 1});
  SequenceRequest bad;
  EXPECT_FALSE(loop.start(bad).ok());
  asio::co_spawn(io, loop.run(), check_no_exception);
  asio::co_spawn(
      io, [&]() -> asio::awaitable<void> { loop.stop(); co_return; }, check_no_exception);
  io.run();
}

}  // namespace
}  // namespace mach::engine
