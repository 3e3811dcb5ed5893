// Turns points on the GPU's timeline into awaitables on the event loop.
//
// Why a thread: NVIDIA exports no sync_fd for timeline semaphores, so no file descriptor can tell the loop
// that GPU work finished. One waiter thread blocks in vkWaitSemaphores (WAIT_ANY) on two timeline
// semaphores: the compute queue's, at the smallest ticket someone awaits, and a host-signalled "wake"
// semaphore that the loop bumps when it needs the waiter to look again (an earlier ticket, shutdown). It
// wakes once per reached target or wake signal and posts the reached value to the loop, where the matching
// waits complete. Before blocking on a ticket it polls both semaphores for gpu::kWaitPollWindow, as
// gpu::Context::wait does. Idle (no ticket), it only blocks.
//
// Mesa drivers that emulate timelines in software (lavapipe among them) implement WAIT_ANY over several
// semaphores as a busy loop (vk_sync's wait-many fallback): measured on lavapipe, the waiter burned ~20% of
// a core for the whole GPU run. There the bridge uses GpuWaitStrategy::next_value instead: a condition
// variable while nothing is awaited, else a single-semaphore wait (which blocks) at the timeline's next
// value, so that a later-registered earlier ticket is never missed. That costs one wake per submission
// completed while waits are pending, and shutdown waits for the submission in progress.
#pragma once

#include <vulkan/vulkan.h>

#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/awaitable.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <type_traits>
#include <utility>

#include "gpu/context.hpp"
#include "mach/error.hpp"

namespace mach::runtime {

class GpuBridge;

namespace detail {

// One pending wait: owned by GpuBridge's pending map from registration until it completes.
class GpuWait {
 public:
  virtual ~GpuWait() = default;
  // Posts the result to the handler's executor (never inline); called exactly once. `from_cancellation`:
  // called from the handler's own cancellation slot.
  virtual void complete(std::exception_ptr error, bool from_cancellation) = 0;

  GpuBridge* bridge = nullptr;
  std::multimap<uint64_t, std::unique_ptr<GpuWait>>::iterator self;  // its entry in the pending map
};

void cancel_gpu_wait(GpuWait* wait);

template <class Handler>
class GpuWaitOp final : public GpuWait {
 public:
  using Executor = asio::associated_executor_t<Handler, asio::io_context::executor_type>;

  GpuWaitOp(Handler handler, const asio::io_context::executor_type& fallback)
      : handler_(std::move(handler)), work_(asio::get_associated_executor(handler_, fallback)) {}

  // After the op has its place in the pending map: from here on a cancellation may remove it.
  void connect_cancellation() {
    slot_ = asio::get_associated_cancellation_slot(handler_);
    if (slot_.is_connected()) canceller_ = &slot_.template emplace<Canceller>(this);
  }

  void complete(std::exception_ptr error, bool from_cancellation) override {
    if (canceller_) {
      // A slot must not be cleared from inside its own handler; disarm it instead.
      if (from_cancellation) {
        canceller_->wait = nullptr;
      } else {
        slot_.clear();
      }
      canceller_ = nullptr;
    }
    asio::post(work_.get_executor(), [h = std::move(handler_), error]() mutable { std::move(h)(error); });
    work_.reset();
  }

 private:
  struct Canceller {
    explicit Canceller(GpuWait* w) : wait(w) {}
    void operator()(asio::cancellation_type type) {
      if (wait && type != asio::cancellation_type::none) cancel_gpu_wait(wait);
    }
    GpuWait* wait;
  };

  Handler handler_;
  asio::executor_work_guard<Executor> work_;
  asio::cancellation_slot slot_;
  Canceller* canceller_ = nullptr;
};

}  // namespace detail

enum class GpuWaitStrategy {
  automatic,   // next_value on drivers known to spin in WAIT_ANY (lavapipe), else wait_any
  wait_any,    // WAIT_ANY over the queue timeline and the host-signalled wake semaphore
  next_value,  // condition variable when idle, else a single-semaphore wait at the next timeline value
};

const char* gpu_wait_strategy_name(GpuWaitStrategy strategy);

// Thread-safety: construct, wait on and destroy a GpuBridge on the thread that runs its io_context (the
// loop), or while the loop is not running; waits complete on that thread. The waiter thread touches only
// the mutex-guarded wanted set and Vulkan calls that the spec allows on any thread (vkWaitSemaphores,
// vkGetSemaphoreCounterValue). The io_context and the gpu::Context must outlive the bridge.
class GpuBridge {
 public:
  // Creates the wake semaphore and starts the waiter thread. Throws mach::Exception(gpu) when Vulkan
  // refuses the semaphore.
  GpuBridge(asio::io_context& io, gpu::Context& context, GpuWaitStrategy strategy = GpuWaitStrategy::automatic);
  GpuBridge(const GpuBridge&) = delete;
  GpuBridge& operator=(const GpuBridge&) = delete;
  // Wakes and joins the waiter thread. Waits still pending complete with mach::Exception(cancelled); the
  // GPU work itself is not waited for.
  ~GpuBridge();

  // Completes once the queue's timeline reaches `ticket`: without suspending when it already has,
  // otherwise on the loop thread. Throws mach::Exception(device_lost or gpu) when the driver reports the
  // device lost (every pending and later wait then throws it), mach::Exception(cancelled) when the bridge
  // is destroyed first, std::system_error(operation_aborted) when the awaiting coroutine is cancelled (the
  // GPU work still runs; its buffers must stay alive until a later wait covers it). `ticket` must have
  // been submitted on this bridge's context.
  asio::awaitable<void> wait(gpu::Ticket ticket);

  // The same as a completion-token operation with signature void(std::exception_ptr).
  template <class Token>
  auto async_wait(gpu::Ticket ticket, Token&& token) {
    return asio::async_initiate<Token, void(std::exception_ptr)>(
        [this](auto handler, gpu::Ticket ticket) {
          using Handler = std::decay_t<decltype(handler)>;
          auto op = std::make_unique<detail::GpuWaitOp<Handler>>(std::move(handler), io_.get_executor());
          auto* raw = op.get();
          if (start(ticket, std::move(op))) raw->connect_cancellation();
        },
        token, ticket);
  }

  // The strategy in use (never `automatic`), for the startup line and /v1/capabilities.
  GpuWaitStrategy strategy() const { return strategy_; }
  // Waits registered and not yet completed (loop thread).
  size_t pending() const { return pending_.size(); }
  // Times the waiter thread returned from vkWaitSemaphores; tests check that it does not spin.
  uint64_t waiter_wakeups() const;

 private:
  friend void detail::cancel_gpu_wait(detail::GpuWait* wait);

  // Registers `op` or, when the ticket is already reached or the device lost, completes it. Returns true
  // when `op` is registered and still pending (owned by pending_).
  bool start(gpu::Ticket ticket, std::unique_ptr<detail::GpuWait> op);
  void cancel(detail::GpuWait* wait);
  bool reached(gpu::Ticket ticket);
  VkResult signal_wake();  // bumps wake_ so that the waiter re-reads wanted_
  // After `value` joined wanted_: makes the waiter look again when it might otherwise miss it.
  VkResult wake_for(uint64_t value);
  void run_waiter();
  // Waiter thread, wait_any: polls until the timeline reaches `want` (true) or wake_ reaches `wake` or
  // gpu::kWaitPollWindow passes (false: the blocking wait follows).
  bool poll(uint64_t want, uint64_t wake) const;
  void on_reached(uint64_t value);
  void on_failed(const Error& error);

  asio::io_context& io_;
  gpu::Context& context_;
  GpuWaitStrategy strategy_;
  VkSemaphore wake_ = VK_NULL_HANDLE;  // wait_any only

  // Loop thread only.
  std::multimap<uint64_t, std::unique_ptr<detail::GpuWait>> pending_;  // by ticket value
  uint64_t completed_ = 0;                                          // timeline value known reached
  std::optional<Error> failure_;                                    // set once the device is lost
  std::shared_ptr<bool> alive_;  // posted completions hold a weak_ptr: they do nothing once it expires

  // Shared with the waiter thread, under mutex_.
  mutable std::mutex mutex_;
  std::condition_variable idle_;  // next_value only: the waiter sleeps here while wanted_ is empty
  std::set<uint64_t> wanted_;    // ticket values awaited and not yet seen reached by the waiter
  uint64_t wake_value_ = 0;      // last value signalled on wake_
  uint64_t waiting_for_ = 0;     // the timeline value the waiter is blocked on; 0: none (idle)
  uint64_t wakeups_ = 0;
  bool stop_ = false;

  std::thread waiter_;
};

}  // namespace mach::runtime
