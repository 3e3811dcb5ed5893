// Reads expert slabs from the sidecar through an io_uring ring, many in flight at once, O_DIRECT where the
// filesystem allows it, and checks each slab's checksum before handing its bytes on.
//
// Blocking by design (the first, synchronous streaming design; docs/engine.md): read() runs a private
// io_context on the calling thread until every read of the batch completed. The kernel does the reads in
// parallel; the caller's thread waits. Prefetches are the exception: prefetch() hands a read to the kernel
// and returns, poll_prefetches() completes the finished ones without waiting, and a later read() or
// take_prefetched() collects them. Thread-safety: one thread at a time (the
// model's step runs on one).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <set>
#include <span>
#include <vector>

#include <asio/io_context.hpp>

#include "experts/sidecar.hpp"
#include "mach/error.hpp"
#include "runtime/direct_file.hpp"
#include "runtime/uring.hpp"

namespace mach::experts {

struct SlabRead {
  uint32_t layer = 0;     // model layer number
  uint32_t expert = 0;    // index in the layer (the router's id)
  std::byte* dst = nullptr;  // slab_bytes of writable memory (host-visible staging)
};

class SlabReader {
 public:
  // Opens every layer file of the sidecar once. `queue_depth`: reads in the kernel at once.
  static Result<std::unique_ptr<SlabReader>> open(const Sidecar& sidecar, unsigned queue_depth);
  SlabReader(const SlabReader&) = delete;
  SlabReader& operator=(const SlabReader&) = delete;
  ~SlabReader();

  // Reads each slab, checks its checksum and copies it to its dst. One result per read, in order: a short
  // read (truncated file), a read error or a checksum mismatch is an Errc::io error naming the file, the
  // layer and the expert; the others still land.
  std::vector<Result<void>> read(std::span<const SlabRead> reads);

  // A read started ahead of need (expert prefetch): it goes to the kernel before prefetch() returns and
  // completes while the caller does other work; read() and take_prefetched() collect it.
  struct Prefetched {
    uint32_t layer = 0;
    uint32_t expert = 0;
    Result<void> result;        // as read()'s, checksum included
    runtime::IoBuffer buffer;   // the slab's bytes when result is ok; hand it back with recycle()
  };
  void prefetch(uint32_t layer, uint32_t expert);
  // Every prefetch started so far, once complete (waits for those still in the kernel).
  std::vector<Prefetched> take_prefetched();
  size_t prefetches_in_flight() const { return prefetch_in_flight_; }
  // Whether a prefetch of the slab is in the kernel (started, not yet complete).
  bool in_flight(uint32_t layer, uint32_t expert) const { return in_flight_.count({layer, expert}) != 0; }
  // Completes the prefetches the kernel has finished, without waiting; true while others are still in it.
  bool poll_prefetches();
  void recycle(runtime::IoBuffer buffer);

  // True when every layer file is read with O_DIRECT.
  bool direct_read() const { return direct_; }

 private:
  SlabReader(const Sidecar& sidecar, std::vector<runtime::DirectFile> files, unsigned queue_depth);
  runtime::IoBuffer take_buffer();
  // The layer file's index and the slab's place in it.
  std::pair<size_t, const SidecarExpert*> locate(uint32_t layer, uint32_t expert) const;
  // The checks every read gets: an error, a short read, the checksum.
  Result<void> check(std::error_code ec, const runtime::ReadResult& got, size_t at, uint32_t layer, uint32_t expert,
                     uint64_t want) const;

  const Sidecar& sidecar_;
  std::vector<runtime::DirectFile> files_;  // by position in layout().layers
  bool direct_ = true;
  asio::io_context io_{1};
  std::unique_ptr<runtime::UringRing> ring_;
  std::vector<runtime::IoBuffer> pool_;  // slab buffers returned by finished reads, reused
  std::vector<Prefetched> prefetched_;   // finished prefetches not yet taken
  size_t prefetch_in_flight_ = 0;
  std::set<std::pair<uint32_t, uint32_t>> in_flight_;  // (layer, expert) of the prefetches in the kernel
};

}  // namespace mach::experts
