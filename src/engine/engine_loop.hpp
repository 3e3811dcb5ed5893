// The scheduler on the event loop: one coroutine runs steps (record -> submit -> co_await the GPU bridge
// -> sample/accept) and pushes each sequence's new tokens into that sequence's channel; requests are
// coroutines that read their channel. Nothing blocks the loop thread, the only waits are co_awaits, with one
// exception: a streaming model without a RAM tier reads a segment's experts in step_next, blocking (with the
// tier the reads run in the kernel while the loop polls them on a timer; docs/engine.md).
//
// Thread-safety: everything here runs on the loop thread (start, cancel, run, the channels).
#pragma once

#include <asio/awaitable.hpp>
#include <asio/experimental/channel.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/scheduler.hpp"
#include "runtime/gpu_bridge.hpp"

namespace mach::engine {

// New tokens of one sequence since the previous event; the last event has done = true.
struct TokenEvent {
  std::vector<uint32_t> tokens;
  std::vector<TokenLogprob> logprobs;  // one per token when the request asked for them
  bool done = false;
  // With done: "stop", "length", "cancelled", or "error: why" (the KV cache can never hold the request, an
  // expert could not be read, the device failed).
  std::string finish_reason;
  uint32_t cached_tokens = 0;  // with done: prompt tokens restored from the prefix cache
  SpeculationStats speculation;
};

using TokenChannel = asio::experimental::channel<void(asio::error_code, TokenEvent)>;

class EngineLoop;

// A running sequence as its request sees it. Dropping the last reference does not stop the sequence:
// call cancel() (the server does when the client goes away).
class TokenStream {
 public:
  TokenStream(EngineLoop& loop, uint32_t id, asio::io_context& io, size_t capacity)
      : channel(io, capacity), loop_(loop), id_(id) {}
  // Events arrive here; receive until one has done = true. A device failure closes it with an error.
  TokenChannel channel;
  void cancel();
  uint32_t id() const { return id_; }

 private:
  EngineLoop& loop_;
  uint32_t id_;
};

// What the step loop has run so far (for /v1/stats and /metrics).
struct StepCounters {
  uint64_t prefill_steps = 0, decode_steps = 0;
  uint64_t prefill_tokens = 0, decode_tokens = 0;  // tokens through the model (decode includes drafts)
  // Decode steps by sequences in the step: [i] counts steps of 2^(i-1) < n <= 2^i sequences (i = 0: 1).
  std::vector<uint64_t> decode_batch_histogram = std::vector<uint64_t>(9, 0);
  bool failed = false;  // the device failed; the loop ended
  std::string failure;
};

class EngineLoop {
 public:
  EngineLoop(asio::io_context& io, gpu::Context& context, model::Model& model, runtime::GpuBridge& bridge,
             const SchedulerOptions& options);

  // Admits a sequence (queued while the KV cache is full); invalid requests are errors.
  Result<std::shared_ptr<TokenStream>> start(SequenceRequest request);
  void cancel(uint32_t id);
  // The step loop; co_spawn it once. Returns after stop(), once the step in flight completed.
  asio::awaitable<void> run();
  void stop();
  const Scheduler& scheduler() const { return scheduler_; }
  const StepCounters& counters() const { return counters_; }

 private:
  void publish();  // pushes new tokens of every stream
  void fail_all(const std::string& message);

  asio::io_context& io_;
  runtime::GpuBridge& bridge_;
  Scheduler scheduler_;
  asio::steady_timer wake_;
  bool stopping_ = false;
  StepCounters counters_;
  struct Entry {
    std::shared_ptr<TokenStream> stream;
    size_t sent = 0;  // tokens already pushed
  };
  // Finished sequences are released from the scheduler once their last event is pushed.
  std::vector<Entry> streams_;  // active only
};

}  // namespace mach::engine
