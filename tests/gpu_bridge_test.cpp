#include "runtime/gpu_bridge.hpp"

#include <gtest/gtest.h>

#include <asio/co_spawn.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "gpu/command_list.hpp"
#include "gpu_fixture.hpp"
#include "ops/elementwise.hpp"

namespace mach::runtime {
namespace {

using asio::awaitable;
using asio::use_awaitable;
using namespace std::chrono_literals;

constexpr uint32_t kN = 512 * 1024;  // floats: 2 MiB per buffer

// A chain of `adds` ops::add on its own buffers: y = a + adds * b, with a[i] = i and b[i] = 1.
class AddChain {
 public:
  AddChain(gpu::Context& ctx, int adds) : ctx_(ctx), adds_(adds) {
    const uint64_t bytes = uint64_t{kN} * sizeof(float);
    a_ = ctx.create_buffer(bytes, gpu::MemoryKind::device, "a");
    b_ = ctx.create_buffer(bytes, gpu::MemoryKind::device, "b");
    x_ = ctx.create_buffer(bytes, gpu::MemoryKind::device, "x");
    y_ = ctx.create_buffer(bytes, gpu::MemoryKind::device, "y");
    std::vector<float> a(kN), b(kN, 1.0f);
    for (uint32_t i = 0; i < kN; ++i) a[i] = static_cast<float>(i % 4096);
    ctx.upload(a_, 0, std::as_bytes(std::span(a)));
    ctx.upload(b_, 0, std::as_bytes(std::span(b)));
    cmd_ = ctx.begin_commands();
    cmd_->begin();
    ops::add(*cmd_, gpu::in(a_), gpu::in(b_), gpu::out(y_), kN);
    for (int k = 1; k < adds; ++k) {
      const bool to_x = k % 2 == 1;
      ops::add(*cmd_, gpu::in(to_x ? y_ : x_), gpu::in(b_), gpu::out(to_x ? x_ : y_), kN);
    }
  }
  gpu::Ticket submit() { return ctx_.submit(*cmd_); }
  // Counts elements that differ from the expected sum (after the submission completed).
  size_t errors() {
    std::vector<float> out(kN);
    ctx_.download(adds_ % 2 == 1 ? y_ : x_, 0, std::as_writable_bytes(std::span(out)));
    size_t bad = 0;
    for (uint32_t i = 0; i < kN; ++i) bad += out[i] != static_cast<float>(i % 4096 + adds_);
    return bad;
  }

 private:
  gpu::Context& ctx_;
  int adds_;
  gpu::Buffer a_, b_, x_, y_;
  std::unique_ptr<gpu::CommandList> cmd_;
};

void rethrow(std::exception_ptr e) {
  if (e) std::rethrow_exception(e);
}

struct WaitLog {
  int completed = 0;
  int on_loop_thread = 0;
  int pending_when_timer_fired = 0;
};

awaitable<void> await_ticket(GpuBridge& bridge, gpu::Ticket ticket, std::thread::id loop, WaitLog& log) {
  co_await bridge.wait(ticket);
  ++log.completed;
  log.on_loop_thread += std::this_thread::get_id() == loop;
}

awaitable<void> tick_while_pending(GpuBridge& bridge, WaitLog& log) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  while (bridge.pending() > 0) {
    timer.expires_after(500us);
    co_await timer.async_wait(use_awaitable);
    log.pending_when_timer_fired += bridge.pending() > 0;
  }
}

class GpuBridgeTest : public testing::TestWithParam<GpuWaitStrategy> {};

TEST(GpuBridge, AutomaticStrategyAvoidsSpinningWaitAnyOnLavapipe) {
  gpu::Context& ctx = test::gpu_context();
  asio::io_context io(1);
  GpuBridge bridge(io, ctx);
  std::fprintf(stderr, "driver %s: gpu_wait=%s\n", ctx.info().driver.c_str(), gpu_wait_strategy_name(bridge.strategy()));
  EXPECT_NE(bridge.strategy(), GpuWaitStrategy::automatic);
  if (ctx.info().driver.find("llvmpipe") != std::string::npos) {
    EXPECT_EQ(bridge.strategy(), GpuWaitStrategy::next_value);
  }
}

TEST_P(GpuBridgeTest, WaitsInterleaveWithTimersAndCompleteOnTheLoop) {
  gpu::Context& ctx = test::gpu_context();
  std::vector<std::unique_ptr<AddChain>> chains;
  for (int i = 0; i < 4; ++i) chains.push_back(std::make_unique<AddChain>(ctx, 6 + i));

  asio::io_context io(1);
  GpuBridge bridge(io, ctx, GetParam());
  WaitLog log;
  const std::thread::id loop = std::this_thread::get_id();
  std::vector<gpu::Ticket> tickets;
  for (auto& chain : chains) tickets.push_back(chain->submit());
  // Latest ticket first, so that each later registration is an earlier ticket that must wake the waiter.
  for (auto it = tickets.rbegin(); it != tickets.rend(); ++it) {
    asio::co_spawn(io, await_ticket(bridge, *it, loop, log), rethrow);
  }
  io.poll();  // registers the waits
  asio::co_spawn(io, tick_while_pending(bridge, log), rethrow);
  io.run();

  EXPECT_EQ(log.completed, 4);
  EXPECT_EQ(log.on_loop_thread, 4);
  EXPECT_EQ(bridge.pending(), 0u);
  for (auto& chain : chains) EXPECT_EQ(chain->errors(), 0u);
  std::fprintf(stderr, "timer fired %d times with waits pending; waiter woke %llu times\n",
               log.pending_when_timer_fired, static_cast<unsigned long long>(bridge.waiter_wakeups()));
  // One wake per reached target or per wake signal at most: a spinning waiter would wake thousands of times.
  EXPECT_LE(bridge.waiter_wakeups(), 12u);
}

TEST_P(GpuBridgeTest, WaitOnFinishedTicketCompletesAtOnce) {
  gpu::Context& ctx = test::gpu_context();
  AddChain chain(ctx, 2);
  const gpu::Ticket ticket = chain.submit();
  ctx.wait(ticket);

  asio::io_context io(1);
  GpuBridge bridge(io, ctx, GetParam());
  int done = 0;
  asio::co_spawn(
      io,
      [&]() -> awaitable<void> {
        co_await bridge.wait(ticket);
        co_await bridge.wait(gpu::Ticket{0});
        ++done;
      },
      rethrow);
  io.run();
  EXPECT_EQ(done, 1);
  EXPECT_EQ(chain.errors(), 0u);
}

TEST_P(GpuBridgeTest, CancelledWaitLeavesTheWorkRunning) {
  using namespace asio::experimental::awaitable_operators;
  gpu::Context& ctx = test::gpu_context();
  AddChain chain(ctx, 40);
  asio::io_context io(1);
  GpuBridge bridge(io, ctx, GetParam());
  const gpu::Ticket ticket = chain.submit();
  bool timer_won = false, finished = false;
  size_t pending_after_race = 1;
  asio::co_spawn(
      io,
      [&]() -> awaitable<void> {
        asio::steady_timer timer(co_await asio::this_coro::executor, 1us);
        auto winner = co_await (bridge.wait(ticket) || timer.async_wait(use_awaitable));
        timer_won = winner.index() == 1;
        pending_after_race = bridge.pending();  // the losing wait left the pending set
        co_await bridge.wait(ticket);
        finished = true;
      },
      rethrow);
  io.run();
  EXPECT_TRUE(finished);
  EXPECT_EQ(pending_after_race, 0u);
  std::fprintf(stderr, "timer won the race: %s\n", timer_won ? "yes" : "no");
  EXPECT_EQ(chain.errors(), 0u);
}

TEST_P(GpuBridgeTest, DestructionWithWaitsPendingCancelsThem) {
  gpu::Context& ctx = test::gpu_context();
  AddChain chain(ctx, 40);
  asio::io_context io(1);
  auto bridge = std::make_unique<GpuBridge>(io, ctx, GetParam());
  const gpu::Ticket ticket = chain.submit();
  int cancelled = 0, completed = 0;
  for (int i = 0; i < 3; ++i) {
    asio::co_spawn(
        io,
        [&]() -> awaitable<void> {
          try {
            co_await bridge->wait(ticket);
            ++completed;
          } catch (const Exception& e) {
            EXPECT_EQ(e.code(), Errc::cancelled);
            ++cancelled;
          }
        },
        rethrow);
  }
  io.poll();
  const size_t pending = bridge->pending();
  bridge.reset();
  io.run();
  EXPECT_EQ(cancelled + completed, 3);
  EXPECT_EQ(static_cast<size_t>(cancelled), pending);
  std::fprintf(stderr, "waits pending at destruction: %zu\n", pending);
  ctx.wait(ticket);  // the buffers outlive the GPU work
  EXPECT_EQ(chain.errors(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Strategies, GpuBridgeTest,
                         testing::Values(GpuWaitStrategy::wait_any, GpuWaitStrategy::next_value),
                         [](const testing::TestParamInfo<GpuWaitStrategy>& info) {
                           return std::string(gpu_wait_strategy_name(info.param));
                         });

}  // namespace
}  // namespace mach::runtime
