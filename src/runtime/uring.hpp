// Reads from files through one io_uring ring whose completions reach the event loop as awaitable results.
//
// Why our own ring and not Asio's io_uring backend: Asio 1.22 only uses io_uring for its own reactor and
// offers no O_DIRECT positional reads with a caller-owned buffer; expert streaming needs exactly that, plus
// a buffer that outlives a cancelled coroutine until the kernel lets go of it.
//
// How it reaches the loop: the ring's eventfd (io_uring_register_eventfd) is watched by a
// posix::stream_descriptor; when it fires, the reaper drains every ready CQE in batches and calls each
// operation's completion object, which posts the result to the awaiting handler's executor. SQEs prepared
// during one loop turn go to the kernel with one io_uring_submit, posted once per turn.
#pragma once

#include <liburing.h>

#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/post.hpp>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <system_error>
#include <type_traits>
#include <unordered_set>
#include <utility>

#include "runtime/io_buffer.hpp"

namespace mach::runtime {

// Counters since construction, for /v1/stats and for tests that check batching and cancellation.
struct UringStats {
  uint64_t submit_calls = 0;   // io_uring_submit calls (one per loop turn with new SQEs, ideally)
  uint64_t read_sqes = 0;      // read SQEs, continuations of short reads and EAGAIN retries included
  uint64_t cancel_sqes = 0;    // io_uring cancels sent for reads cancelled while in the kernel
  uint64_t queued = 0;         // reads that waited in the host queue for submission space
};

struct ReadResult {
  size_t bytes = 0;  // bytes read into buffer.data()[0, bytes); fewer than asked only at end of file
  IoBuffer buffer;   // the caller's buffer, handed back; empty when the read was cancelled while the
                     // kernel still held it (the ring frees it once the kernel's CQE arrives)
};

class UringRing;

namespace detail {

// The completion object of one read: heap-allocated, owned by its UringRing, and alive until both the
// handler has its result and every SQE naming it (the read, a cancel) has its CQE. It owns the IoBuffer for
// all of that time, so a cancelled coroutine never frees memory the kernel is still writing.
class UringOp {
 public:
  virtual ~UringOp() = default;
  // Gives the result to the handler, through its associated executor (never inline). Called exactly once.
  // `from_cancellation` is true when called from the handler's own cancellation slot.
  virtual void deliver(std::error_code ec, ReadResult result, bool from_cancellation) = 0;

  UringRing* ring = nullptr;
  int fd = -1;
  uint64_t offset = 0;  // file offset of buffer byte 0
  size_t length = 0;    // bytes wanted
  size_t done = 0;      // bytes read so far (short reads continue from here)
  IoBuffer buffer;
  int kernel_refs = 0;     // prepared or submitted SQEs that name this op and have no CQE yet
  bool in_kernel = false;  // its read SQE is prepared or submitted and its CQE not yet reaped
  bool queued = false;     // waiting in the ring's host queue for submission space
  bool delivered = false;  // the handler has its result
  bool cancel_sent = false;
};

void cancel_op(UringOp* op);

template <class Handler>
class ReadOp final : public UringOp {
 public:
  using Executor = asio::associated_executor_t<Handler, asio::io_context::executor_type>;

  ReadOp(Handler handler, const asio::io_context::executor_type& fallback)
      : handler_(std::move(handler)),
        work_(asio::get_associated_executor(handler_, fallback)),
        slot_(asio::get_associated_cancellation_slot(handler_)) {
    if (slot_.is_connected()) canceller_ = &slot_.template emplace<Canceller>(this);
  }

  void deliver(std::error_code ec, ReadResult result, bool from_cancellation) override {
    if (canceller_) {
      // Clearing the slot from inside its own handler would destroy the running handler; disarm it instead
      // (the next operation on that slot replaces it).
      if (from_cancellation) {
        canceller_->op = nullptr;
      } else {
        slot_.clear();
      }
      canceller_ = nullptr;
    }
    asio::post(work_.get_executor(), [h = std::move(handler_), ec, r = std::move(result)]() mutable {
      std::move(h)(ec, std::move(r));
    });
    work_.reset();
  }

 private:
  struct Canceller {
    explicit Canceller(UringOp* o) : op(o) {}
    void operator()(asio::cancellation_type type) {
      if (op && type != asio::cancellation_type::none) cancel_op(op);
    }
    UringOp* op;
  };

  Handler handler_;
  asio::executor_work_guard<Executor> work_;
  asio::cancellation_slot slot_;
  Canceller* canceller_ = nullptr;
};

}  // namespace detail

// Thread-safety: a UringRing belongs to the thread that runs its io_context (the loop): construct it, start
// reads, emit cancellations and destroy it there (or while the loop is not running). The io_context must
// outlive the ring.
class UringRing {
 public:
  // `entries`: submission queue size (the kernel rounds it up to a power of two). More reads than the ring
  // holds are not an error: they wait in a host queue and go out as completions free space. Throws
  // mach::Exception(io) when io_uring or eventfd is unavailable (e.g. io_uring disabled by sysctl).
  UringRing(asio::io_context& io, unsigned entries);
  UringRing(const UringRing&) = delete;
  UringRing& operator=(const UringRing&) = delete;
  // Cancels every read still in the kernel and blocks until the kernel has completed all of them (file
  // reads finish or cancel in bounded time), so no buffer is freed while the kernel may write it. Handlers
  // not yet completed are posted asio::error::operation_aborted.
  ~UringRing();

  // Reads `length` bytes of `fd` at byte `offset` into `buffer` (length <= buffer.size()). Completion
  // signature void(std::error_code, ReadResult): with use_awaitable an error throws std::system_error,
  // with as_tuple(use_awaitable) it is a value. Short reads continue until `length` bytes or end of file
  // (then bytes < length and no error); EAGAIN/EINTR resubmit. Errors: the kernel's errno
  // (system_category, e.g. EBADF, EINVAL for a misaligned O_DIRECT read) with the bytes read so far and the
  // buffer; std::errc::invalid_argument when length > buffer.size().
  // Cancellation (the handler's cancellation slot, any type): the handler gets operation_aborted at once;
  // a read already in the kernel gets an io_uring cancel and keeps its buffer until its CQE arrives (the
  // result then has an empty buffer); a read still in the host queue gets its buffer back.
  // For O_DIRECT fds, offset, length and buffer must be aligned to the device's logical block size; a
  // continuation after a short read that the kernel refuses with EINVAL is taken as end of file.
  template <class Token>
  auto async_read(int fd, uint64_t offset, IoBuffer buffer, size_t length, Token&& token) {
    return asio::async_initiate<Token, void(std::error_code, ReadResult)>(
        [this](auto handler, int fd, uint64_t offset, IoBuffer buffer, size_t length) {
          using Handler = std::decay_t<decltype(handler)>;
          auto* op = new detail::ReadOp<Handler>(std::move(handler), io_.get_executor());
          op->ring = this;
          op->fd = fd;
          op->offset = offset;
          op->length = length;
          op->buffer = std::move(buffer);
          start(op);
        },
        token, fd, offset, std::move(buffer), length);
  }

  // Reads whose completion objects are still alive (started and not yet fully reaped).
  size_t live_operations() const { return ops_.size(); }
  const UringStats& stats() const { return stats_; }

 private:
  friend void detail::cancel_op(detail::UringOp* op);

  void start(detail::UringOp* op);
  void cancel(detail::UringOp* op);
  void enqueue(detail::UringOp* op);
  bool try_prepare_read(detail::UringOp* op);
  void send_cancel(detail::UringOp* op);
  io_uring_sqe* get_sqe();
  void submit_now();
  void schedule_flush();
  void flush();
  void arm();
  void on_event();
  void reap();
  void handle_cqe(uint64_t user_data, int res);
  void finish(detail::UringOp* op, std::error_code ec, bool from_cancellation);
  void maybe_destroy(detail::UringOp* op);

  asio::io_context& io_;
  io_uring ring_{};
  asio::posix::stream_descriptor event_;  // owns the eventfd
  // Handlers that this ring posts or arms hold a weak_ptr to this; once it expires (in the destructor) they
  // do nothing, so none touches a destroyed ring.
  std::shared_ptr<bool> alive_;
  std::deque<detail::UringOp*> waiting_;      // reads waiting for an SQE or for room in the CQ
  std::unordered_set<detail::UringOp*> ops_;  // every live completion object (owned)
  unsigned kernel_sqes_ = 0;       // SQEs prepared or submitted whose CQE is not yet reaped
  unsigned reads_in_kernel_ = 0;
  unsigned read_limit_ = 1;        // half the CQ: reads plus their cancels never overflow it
  UringStats stats_;
  bool flush_posted_ = false;
  bool armed_ = false;
  bool shutting_down_ = false;
};

}  // namespace mach::runtime
