#include "engine/engine_loop.hpp"

#include <asio/experimental/as_tuple.hpp>
#include <asio/use_awaitable.hpp>

namespace mach::engine {

void TokenStream::cancel() { loop_.cancel(id_); }

EngineLoop::EngineLoop(asio::io_context& io, gpu::Context& context, model::Model& model, runtime::GpuBridge& bridge,
                       const SchedulerOptions& options)
    : io_(io), bridge_(bridge), scheduler_(context, model, options), wake_(io) {}

Result<std::shared_ptr<TokenStream>> EngineLoop::start(SequenceRequest request) {
  // At most one event per step, each with at least one token, plus the final one: the channel never fills,
  // so publishing never waits on a slow reader.
  const size_t capacity = request.max_tokens + 2;
  auto id = scheduler_.submit(std::move(request));
  if (!id) return id.error();
  auto stream = std::make_shared<TokenStream>(*this, *id, io_, capacity);
  streams_.push_back({stream, 0});
  wake_.cancel();
  publish();  // a zero-token request is already finished
  return stream;
}

void EngineLoop::cancel(uint32_t id) {
  scheduler_.cancel(id);
  publish();
}

void EngineLoop::stop() {
  stopping_ = true;
  wake_.cancel();
}

void EngineLoop::publish() {
  for (auto it = streams_.begin(); it != streams_.end();) {
    const auto tokens = scheduler_.generated(it->stream->id());
    const bool done = scheduler_.done(it->stream->id());
    if (tokens.size() > it->sent || done) {
      TokenEvent ev;
      ev.tokens.assign(tokens.begin() + it->sent, tokens.end());
      const auto logprobs = scheduler_.generated_logprobs(it->stream->id());
      if (logprobs.size() >= tokens.size()) ev.logprobs.assign(logprobs.begin() + it->sent, logprobs.begin() + tokens.size());
      it->sent = tokens.size();
      if (done) {
        const auto& r = scheduler_.result(it->stream->id());
        ev.done = true;
        ev.finish_reason = r.error.empty() ? r.finish_reason : r.finish_reason + ": " + r.error;
        ev.cached_tokens = r.cached_tokens;
        ev.speculation = r.speculation;
      }
      it->stream->channel.try_send(asio::error_code{}, std::move(ev));
    }
    if (done) scheduler_.release(it->stream->id());
    it = done ? streams_.erase(it) : it + 1;
  }
}

void EngineLoop::fail_all(const std::string& message) {
  counters_.failed = true;
  counters_.failure = message;
  for (auto& e : streams_) {
    TokenEvent ev;
    ev.done = true;
    ev.finish_reason = "error: " + message;
    e.stream->channel.try_send(asio::error_code{}, std::move(ev));
    scheduler_.cancel(e.stream->id());
  }
  streams_.clear();
}

asio::awaitable<void> EngineLoop::run() {
  while (!stopping_) {
    std::optional<gpu::Ticket> ticket;
    try {
      ticket = scheduler_.step_begin();
    } catch (const Exception& e) {
      fail_all(e.what());
      co_return;
    }
    if (!ticket) {
      if (scheduler_.fail_unadmittable() > 0) {
        publish();
        continue;
      }
      wake_.expires_at(asio::steady_timer::time_point::max());
      co_await wake_.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
      continue;
    }
    try {
      co_await bridge_.wait(*ticket);
      // A streaming step's further segments. Each segment's expert reads run in the kernel while the loop
      // serves other work, checked every 200 µs (a slab read from an SSD takes milliseconds); step_next then
      // finds them in the RAM tier. Without the tier step_next reads them itself, blocking the loop.
      for (;;) {
        if (scheduler_.step_start_reads()) {
          asio::steady_timer poll(io_);
          do {
            poll.expires_after(std::chrono::microseconds(200));
            co_await poll.async_wait(asio::use_awaitable);
          } while (scheduler_.step_reads_pending());
        }
        const auto next = scheduler_.step_next();
        if (!next) break;
        co_await bridge_.wait(*next);
      }
      scheduler_.step_end();
      const auto shape = scheduler_.last_step();
      if (shape.prefill) {
        ++counters_.prefill_steps;
        counters_.prefill_tokens += shape.tokens;
      } else {
        ++counters_.decode_steps;
        counters_.decode_tokens += shape.tokens;
        size_t bucket = 0;
        while (bucket + 1 < counters_.decode_batch_histogram.size() && (1u << bucket) < shape.sequences) ++bucket;
        ++counters_.decode_batch_histogram[bucket];
      }
    } catch (const Exception& e) {
      fail_all(e.what());  // device lost: every request learns it; the loop ends
      co_return;
    }
    publish();
  }
}

}  // namespace mach::engine
