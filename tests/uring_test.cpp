#include "runtime/uring.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "runtime/direct_file.hpp"

namespace mach::runtime {
namespace {

using asio::awaitable;
using asio::use_awaitable;
using asio::experimental::as_tuple;

// Content of the test file: a known function of the byte offset, so any misplaced byte shows.
uint8_t byte_at(uint64_t offset) {
  return static_cast<uint8_t>((offset * 0x9E3779B97F4A7C15ull) >> 56) ^ static_cast<uint8_t>(offset);
}

// 4 MiB plus a tail that is not a multiple of 4096, so O_DIRECT reads hit an unaligned end of file.
constexpr uint64_t kFileSize = (4u << 20) + 1000;

class TempFile {
 public:
  explicit TempFile(uint64_t size) {
    path_ = testing::TempDir() + "mach_uring_test_XXXXXX";
    const int fd = ::mkstemp(path_.data());
    if (fd < 0) std::abort();
    std::vector<uint8_t> data(size);
    for (uint64_t i = 0; i < size; ++i) data[i] = byte_at(i);
    if (::write(fd, data.data(), size) != static_cast<ssize_t>(size)) std::abort();
    ::close(fd);
  }
  ~TempFile() { ::unlink(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

const TempFile& test_file() {
  static TempFile file(kFileSize);
  return file;
}

// Counts content mismatches of a read of `bytes` at `offset`.
size_t mismatches(const IoBuffer& buffer, uint64_t offset, size_t bytes) {
  size_t bad = 0;
  const auto* p = reinterpret_cast<const uint8_t*>(buffer.data());
  for (size_t i = 0; i < bytes; ++i) bad += p[i] != byte_at(offset + i);
  return bad;
}

size_t expected_bytes(uint64_t offset, size_t length) {
  if (offset >= kFileSize) return 0;
  return std::min<uint64_t>(length, kFileSize - offset);
}

void rethrow(std::exception_ptr e) {
  if (e) std::rethrow_exception(e);
}

struct Stats {
  int started = 0;
  int completed = 0;
  int aborted = 0;
  int bad = 0;
};

// One read, checked: a full or end-of-file-short count with the right bytes.
awaitable<void> checked_read(UringRing& ring, int fd, uint64_t offset, size_t length, Stats& stats) {
  auto [ec, result] = co_await ring.async_read(fd, offset, IoBuffer(length), length, as_tuple(use_awaitable));
  EXPECT_FALSE(ec) << ec.message() << " at " << offset << "+" << length;
  EXPECT_EQ(result.bytes, expected_bytes(offset, length)) << offset << "+" << length;
  EXPECT_EQ(result.buffer.size(), length);
  const size_t bad = mismatches(result.buffer, offset, result.bytes);
  EXPECT_EQ(bad, 0u) << offset << "+" << length;
  stats.bad += bad != 0;
  ++stats.completed;
}

// Coroutines are free functions taking their state by value or by reference to objects that outlive the
// loop: a capturing lambda coroutine would read its captures from a destroyed closure.
awaitable<void> raced_read(UringRing& ring, int fd, uint64_t offset, size_t length,
                           std::chrono::microseconds delay, Stats& stats) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer timer(co_await asio::this_coro::executor, delay);
  auto winner = co_await (ring.async_read(fd, offset, IoBuffer(length), length, use_awaitable) ||
                          timer.async_wait(use_awaitable));
  if (winner.index() == 0) {
    const ReadResult& r = std::get<0>(winner);
    EXPECT_EQ(r.bytes, expected_bytes(offset, length));
    stats.bad += mismatches(r.buffer, offset, r.bytes) != 0;
    ++stats.completed;
  } else {
    ++stats.aborted;
  }
}

awaitable<void> aborted_read(UringRing& ring, int fd, uint64_t offset, int& aborted) {
  const size_t length = 1 << 20;
  auto [ec, r] = co_await ring.async_read(fd, offset, IoBuffer(length), length, as_tuple(use_awaitable));
  EXPECT_EQ(ec, asio::error::operation_aborted);
  aborted += ec == asio::error::operation_aborted;
}

awaitable<void> read_until_torn_down(UringRing& ring, int fd, uint64_t offset, Stats& stats) {
  ++stats.started;
  const size_t length = 256 << 10;
  auto [ec, r] = co_await ring.async_read(fd, offset, IoBuffer(length), length, as_tuple(use_awaitable));
  if (ec == asio::error::operation_aborted) {
    ++stats.aborted;
  } else {
    EXPECT_FALSE(ec);
    ++stats.completed;
  }
}

void run_random_reads(int fd, bool aligned, unsigned ring_entries, int count) {
  const int64_t live_before = IoBuffer::live_count();
  asio::io_context io(1);
  UringRing ring(io, ring_entries);
  Stats stats;
  std::mt19937_64 rng(aligned ? 7 : 11);
  for (int i = 0; i < count; ++i) {
    uint64_t offset = rng() % (kFileSize + 8192);
    size_t length = 1 + rng() % (64 << 10);
    if (aligned) {
      offset &= ~uint64_t{4095};
      length = (length + 4095) & ~size_t{4095};
    }
    asio::co_spawn(io, checked_read(ring, fd, offset, length, stats), rethrow);
  }
  io.run();
  std::fprintf(stderr, "%d reads: %llu read SQEs in %llu submits, %llu queued\n", count,
               static_cast<unsigned long long>(ring.stats().read_sqes),
               static_cast<unsigned long long>(ring.stats().submit_calls),
               static_cast<unsigned long long>(ring.stats().queued));
  EXPECT_LT(ring.stats().submit_calls, ring.stats().read_sqes);  // batched, not one syscall per read
  EXPECT_EQ(stats.completed, count);
  EXPECT_EQ(stats.bad, 0);
  EXPECT_EQ(ring.live_operations(), 0u);
  EXPECT_EQ(IoBuffer::live_count(), live_before);
}

TEST(IoBuffer, AlignedMoveOnlyAndCounted) {
  const int64_t before = IoBuffer::live_count();
  {
    IoBuffer a(5000);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data()) % IoBuffer::kAlignment, 0u);
    EXPECT_EQ(a.size(), 5000u);
    EXPECT_EQ(IoBuffer::live_count(), before + 1);
    IoBuffer b = std::move(a);
    EXPECT_TRUE(a.empty());
    EXPECT_EQ(b.size(), 5000u);
    EXPECT_EQ(IoBuffer::live_count(), before + 1);
  }
  EXPECT_EQ(IoBuffer::live_count(), before);
}

TEST(DirectFile, MissingFileIsNotFoundWithPath) {
  auto file = DirectFile::open("/nonexistent/mach/file.bin");
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.error().code, Errc::not_found);
  EXPECT_NE(file.error().message.find("/nonexistent/mach/file.bin"), std::string::npos);
  EXPECT_NE(file.error().message.find("No such file"), std::string::npos);
}

TEST(UringRing, ManyBufferedReadsAtRandomOffsets) {
  auto file = DirectFile::open(test_file().path(), ReadMode::buffered);
  ASSERT_TRUE(file.ok()) << file.error().message;
  EXPECT_FALSE(file->direct_read());
  EXPECT_EQ(file->size(), kFileSize);
  run_random_reads(file->fd(), /*aligned=*/false, 64, 400);
}

TEST(UringRing, ManyDirectReadsAtAlignedOffsets) {
  auto file = DirectFile::open(test_file().path(), ReadMode::direct_if_supported);
  ASSERT_TRUE(file.ok()) << file.error().message;
  std::fprintf(stderr, "direct_read=%s\n", file->direct_read() ? "true" : "false");
  run_random_reads(file->fd(), /*aligned=*/true, 64, 400);
}

TEST(UringRing, MoreReadsThanTheRingHoldsWaitForSpace) {
  auto file = DirectFile::open(test_file().path(), ReadMode::buffered);
  ASSERT_TRUE(file.ok());
  run_random_reads(file->fd(), /*aligned=*/false, 2, 300);
}

TEST(UringRing, ReadPastEndOfFileGivesShortCount) {
  for (ReadMode mode : {ReadMode::buffered, ReadMode::direct_if_supported}) {
    auto file = DirectFile::open(test_file().path(), mode);
    ASSERT_TRUE(file.ok());
    asio::io_context io(1);
    UringRing ring(io, 8);
    Stats stats;
    const uint64_t last_block = kFileSize & ~uint64_t{4095};
    asio::co_spawn(io, checked_read(ring, file->fd(), last_block, 8192, stats), rethrow);
    asio::co_spawn(io, checked_read(ring, file->fd(), last_block + 8192, 4096, stats), rethrow);
    io.run();
    EXPECT_EQ(stats.completed, 2);
  }
}

TEST(UringRing, BadFdIsAnErrorCode) {
  const int64_t live_before = IoBuffer::live_count();
  asio::io_context io(1);
  UringRing ring(io, 8);
  bool checked = false;
  asio::co_spawn(
      io,
      [&]() -> awaitable<void> {
        auto [ec, result] = co_await ring.async_read(-1, 0, IoBuffer(4096), 4096, as_tuple(use_awaitable));
        EXPECT_EQ(ec, std::error_code(EBADF, std::system_category()));
        EXPECT_EQ(result.bytes, 0u);
        EXPECT_FALSE(result.buffer.empty());
        auto [ec2, r2] = co_await ring.async_read(-1, 0, IoBuffer(16), 4096, as_tuple(use_awaitable));
        EXPECT_EQ(ec2, std::errc::invalid_argument);
        bool threw = false;
        try {
          co_await ring.async_read(-1, 0, IoBuffer(4096), 4096, use_awaitable);
        } catch (const std::system_error& e) {
          threw = e.code() == std::error_code(EBADF, std::system_category());
        }
        EXPECT_TRUE(threw);
        checked = true;
      },
      rethrow);
  io.run();
  EXPECT_TRUE(checked);
  EXPECT_EQ(IoBuffer::live_count(), live_before);
}

TEST(UringRing, ReadsRacedAgainstTinyTimersCancelCleanly) {
  auto file = DirectFile::open(test_file().path(), ReadMode::buffered);
  ASSERT_TRUE(file.ok());
  const int64_t live_before = IoBuffer::live_count();
  Stats stats;
  {
    asio::io_context io(1);
    UringRing ring(io, 16);
    std::mt19937_64 rng(3);
    for (int i = 0; i < 300; ++i) {
      const uint64_t offset = rng() % kFileSize;
      const size_t length = 1 + rng() % (256 << 10);
      const auto delay = std::chrono::microseconds(rng() % 10000);
      asio::co_spawn(io, raced_read(ring, file->fd(), offset, length, delay, stats), rethrow);
    }
    io.run();
    EXPECT_EQ(ring.live_operations(), 0u);
    std::fprintf(stderr, "completed=%d cancelled=%d (kernel cancels %llu)\n", stats.completed, stats.aborted,
                 static_cast<unsigned long long>(ring.stats().cancel_sqes));
  }
  EXPECT_EQ(stats.completed + stats.aborted, 300);
  EXPECT_EQ(stats.bad, 0);
  EXPECT_EQ(IoBuffer::live_count(), live_before);
}

TEST(UringRing, CancellationSignalAbortsInFlightAndQueuedReads) {
  auto file = DirectFile::open(test_file().path(), ReadMode::buffered);
  ASSERT_TRUE(file.ok());
  const int64_t live_before = IoBuffer::live_count();
  constexpr int kReads = 12;  // a ring of 2 entries holds 2 reads: the rest wait in the host queue
  int aborted = 0;
  {
    asio::io_context io(1);
    UringRing ring(io, 2);
    std::vector<asio::cancellation_signal> signals(kReads);
    for (int i = 0; i < kReads; ++i) {
      asio::co_spawn(io, aborted_read(ring, file->fd(), uint64_t(i) * 4096, aborted),
                     asio::bind_cancellation_slot(signals[i].slot(), rethrow));
    }
    // Runs after every coroutine has started its read and before the batch reaches the kernel.
    asio::post(io, [&] {
      for (auto& s : signals) s.emit(asio::cancellation_type::terminal);
    });
    io.run();
    EXPECT_EQ(ring.live_operations(), 0u);
    EXPECT_GT(ring.stats().cancel_sqes, 0u);  // some were in the kernel, the others in the host queue
    EXPECT_GT(ring.stats().queued, 0u);
  }
  EXPECT_EQ(aborted, kReads);
  EXPECT_EQ(IoBuffer::live_count(), live_before);
}

TEST(UringRing, DestructionWithReadsInFlightAbortsThem) {
  auto file = DirectFile::open(test_file().path(), ReadMode::buffered);
  ASSERT_TRUE(file.ok());
  const int64_t live_before = IoBuffer::live_count();
  Stats stats;
  {
    asio::io_context io(1);
    auto ring = std::make_unique<UringRing>(io, 8);
    for (int i = 0; i < 40; ++i) {
      asio::co_spawn(io, read_until_torn_down(*ring, file->fd(), uint64_t(i) * 65536, stats), rethrow);
    }
    // Start every coroutine and submit the first batch, then tear the ring down under them.
    while (stats.started < 40) io.poll_one();
    io.poll_one();
    ring.reset();
    io.run();
  }
  EXPECT_EQ(stats.aborted + stats.completed, 40);
  EXPECT_GT(stats.aborted, 0);
  EXPECT_EQ(IoBuffer::live_count(), live_before);
}

}  // namespace
}  // namespace mach::runtime
