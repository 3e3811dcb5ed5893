#include "runtime/uring.hpp"

#include <fmt/format.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <asio/error.hpp>
#include <cassert>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "mach/error.hpp"

namespace mach::runtime {
namespace {

// Cancel SQEs carry their target op's address with the low bit set (ops are at least 8-byte aligned).
constexpr uint64_t kCancelTag = 1;
// One read SQE asks for at most this much; longer reads continue like short reads.
constexpr size_t kMaxChunk = size_t{1} << 30;

[[noreturn]] void die(const char* what, int err) {
  std::fprintf(stderr, "mach: io_uring invariant broken: %s: %s\n", what, std::strerror(err));
  std::abort();
}

}  // namespace

namespace detail {
void cancel_op(UringOp* op) { op->ring->cancel(op); }
}  // namespace detail

using detail::UringOp;

UringRing::UringRing(asio::io_context& io, unsigned entries)
    : io_(io), event_(io), alive_(std::make_shared<bool>(true)) {
  io_uring_params params{};
  int r = io_uring_queue_init_params(entries, &ring_, &params);
  if (r < 0) {
    throw Exception(Errc::io, fmt::format("cannot create an io_uring of {} entries: {}", entries, std::strerror(-r)));
  }
  read_limit_ = std::max(1u, params.cq_entries / 2);
  const int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) {
    const int err = errno;
    io_uring_queue_exit(&ring_);
    throw Exception(Errc::io, fmt::format("cannot create an eventfd for io_uring: {}", std::strerror(err)));
  }
  r = io_uring_register_eventfd(&ring_, efd);
  if (r < 0) {
    ::close(efd);
    io_uring_queue_exit(&ring_);
    throw Exception(Errc::io, fmt::format("cannot register an eventfd with io_uring: {}", std::strerror(-r)));
  }
  event_.assign(efd);
}

UringRing::~UringRing() {
  alive_.reset();
  shutting_down_ = true;
  while (!waiting_.empty()) {
    UringOp* op = waiting_.front();
    waiting_.pop_front();
    op->queued = false;
    if (!op->delivered) {
      finish(op, asio::error::operation_aborted, false);
    } else {
      maybe_destroy(op);
    }
  }
  for (UringOp* op : ops_) {
    if (op->in_kernel) send_cancel(op);
  }
  while (kernel_sqes_ > 0) {
    if (io_uring_sq_ready(&ring_) > 0) io_uring_submit(&ring_);
    io_uring_cqe* cqe = nullptr;
    const int r = io_uring_wait_cqe(&ring_, &cqe);
    if (r == -EINTR || r == -EAGAIN) continue;
    if (r < 0) die("io_uring_wait_cqe during shutdown", -r);
    const uint64_t user_data = io_uring_cqe_get_data64(cqe);
    const int res = cqe->res;
    io_uring_cqe_seen(&ring_, cqe);
    handle_cqe(user_data, res);
  }
  assert(ops_.empty());
  io_uring_unregister_eventfd(&ring_);
  io_uring_queue_exit(&ring_);
  // event_ closes the eventfd; its cancelled wait handler finds alive_ expired.
}

void UringRing::start(UringOp* op) {
  ops_.insert(op);
  if (op->length > op->buffer.size()) {
    finish(op, std::make_error_code(std::errc::invalid_argument), false);
    return;
  }
  if (op->length == 0) {
    finish(op, {}, false);
    return;
  }
  enqueue(op);
  schedule_flush();
}

void UringRing::enqueue(UringOp* op) {
  if (waiting_.empty() && try_prepare_read(op)) return;
  op->queued = true;
  ++stats_.queued;
  waiting_.push_back(op);
}

bool UringRing::try_prepare_read(UringOp* op) {
  if (reads_in_kernel_ >= read_limit_) return false;
  io_uring_sqe* sqe = get_sqe();
  if (!sqe) return false;
  const size_t chunk = std::min(op->length - op->done, kMaxChunk);
  io_uring_prep_read(sqe, op->fd, op->buffer.data() + op->done, static_cast<unsigned>(chunk), op->offset + op->done);
  io_uring_sqe_set_data64(sqe, reinterpret_cast<uintptr_t>(op));
  op->in_kernel = true;
  ++op->kernel_refs;
  ++reads_in_kernel_;
  ++kernel_sqes_;
  ++stats_.read_sqes;
  return true;
}

void UringRing::send_cancel(UringOp* op) {
  if (op->cancel_sent || !op->in_kernel) return;
  io_uring_sqe* sqe = get_sqe();
  // Without an SQE (the kernel refused submission) the read simply runs to completion: file reads end in
  // bounded time, and the op stays alive until then either way.
  if (!sqe) return;
  io_uring_prep_cancel64(sqe, reinterpret_cast<uintptr_t>(op), 0);
  io_uring_sqe_set_data64(sqe, reinterpret_cast<uintptr_t>(op) | kCancelTag);
  op->cancel_sent = true;
  ++stats_.cancel_sqes;
  ++op->kernel_refs;
  ++kernel_sqes_;
}

io_uring_sqe* UringRing::get_sqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe) return sqe;
  // The SQ is full of prepared entries: hand them to the kernel now, which frees every slot.
  submit_now();
  return io_uring_get_sqe(&ring_);
}

void UringRing::submit_now() {
  const int r = io_uring_submit(&ring_);
  ++stats_.submit_calls;
  // EAGAIN/EBUSY: the kernel is short of resources or has CQEs to flush; the entries stay in the SQ and go
  // out on the next flush, which every reaped CQE triggers.
  if (r < 0 && r != -EAGAIN && r != -EBUSY && r != -EINTR) die("io_uring_submit", -r);
}

void UringRing::schedule_flush() {
  if (flush_posted_) return;
  flush_posted_ = true;
  asio::post(io_, [this, alive = std::weak_ptr<bool>(alive_)] {
    if (alive.expired()) return;
    flush();
  });
}

void UringRing::flush() {
  flush_posted_ = false;
  if (io_uring_sq_ready(&ring_) > 0) submit_now();
  arm();
}

void UringRing::arm() {
  // Armed only while the kernel holds work, so that io_context::run() returns once every read is reaped.
  if (armed_ || kernel_sqes_ == 0) return;
  armed_ = true;
  event_.async_wait(asio::posix::stream_descriptor::wait_read,
                    [this, alive = std::weak_ptr<bool>(alive_)](std::error_code ec) {
                      if (alive.expired()) return;
                      armed_ = false;
                      if (ec == asio::error::operation_aborted) return;
                      if (ec) die("eventfd wait", ec.value());
                      on_event();
                    });
}

void UringRing::on_event() {
  uint64_t count = 0;
  // Reset the eventfd before draining: a CQE posted after the drain signals it again.
  [[maybe_unused]] const ssize_t n = ::read(event_.native_handle(), &count, sizeof count);
  reap();
  while (!waiting_.empty()) {
    UringOp* op = waiting_.front();
    if (!try_prepare_read(op)) break;
    waiting_.pop_front();
    op->queued = false;
  }
  flush();
}

void UringRing::reap() {
  constexpr unsigned kBatch = 64;
  std::array<io_uring_cqe*, kBatch> cqes;
  std::array<std::pair<uint64_t, int>, kBatch> batch;
  for (;;) {
    const unsigned n = io_uring_peek_batch_cqe(&ring_, cqes.data(), kBatch);
    if (n == 0) break;
    for (unsigned i = 0; i < n; ++i) batch[i] = {io_uring_cqe_get_data64(cqes[i]), cqes[i]->res};
    // Free the CQ slots before handling: handlers prepare new SQEs and the CQ must have room for them.
    io_uring_cq_advance(&ring_, n);
    for (unsigned i = 0; i < n; ++i) handle_cqe(batch[i].first, batch[i].second);
  }
}

void UringRing::handle_cqe(uint64_t user_data, int res) {
  --kernel_sqes_;
  if (user_data & kCancelTag) {
    auto* op = reinterpret_cast<UringOp*>(user_data & ~kCancelTag);
    --op->kernel_refs;
    maybe_destroy(op);
    return;
  }
  auto* op = reinterpret_cast<UringOp*>(user_data);
  --op->kernel_refs;
  --reads_in_kernel_;
  op->in_kernel = false;
  if (op->delivered) {
    maybe_destroy(op);
    return;
  }
  if (shutting_down_) {
    if (res > 0) op->done += static_cast<size_t>(res);
    finish(op, asio::error::operation_aborted, false);
    return;
  }
  if (res == -EAGAIN || res == -EINTR) {
    enqueue(op);
    return;
  }
  if (res == -EINVAL && op->done > 0) res = 0;  // an O_DIRECT continuation at an unaligned end of file
  if (res < 0) {
    finish(op, std::error_code(-res, std::system_category()), false);
    return;
  }
  op->done += static_cast<size_t>(res);
  if (res == 0 || op->done >= op->length) {
    finish(op, {}, false);
    return;
  }
  enqueue(op);
}

void UringRing::cancel(UringOp* op) {
  if (op->delivered) return;
  if (op->queued) {
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), op));
    op->queued = false;
  }
  if (!op->in_kernel) {
    finish(op, asio::error::operation_aborted, true);
    return;
  }
  op->delivered = true;
  op->deliver(asio::error::operation_aborted, ReadResult{op->done, IoBuffer{}}, true);
  send_cancel(op);
  schedule_flush();
}

void UringRing::finish(UringOp* op, std::error_code ec, bool from_cancellation) {
  op->delivered = true;
  op->deliver(ec, ReadResult{op->done, std::move(op->buffer)}, from_cancellation);
  maybe_destroy(op);
}

void UringRing::maybe_destroy(UringOp* op) {
  if (!op->delivered || op->kernel_refs > 0 || op->queued) return;
  ops_.erase(op);
  delete op;
}

}  // namespace mach::runtime
