#include "experts/slab_reader.hpp"

#include <fmt/format.h>

#include <cassert>
#include <cstring>
#include <utility>

namespace mach::experts {

Result<std::unique_ptr<SlabReader>> SlabReader::open(const Sidecar& sidecar, unsigned queue_depth) {
  std::vector<runtime::DirectFile> files;
  for (const auto& layer : sidecar.layout().layers) {
    auto f = runtime::DirectFile::open((sidecar.dir() / layer.file).string());
    if (!f) return f.error();
    files.push_back(std::move(f).value());
  }
  try {
    return std::unique_ptr<SlabReader>(new SlabReader(sidecar, std::move(files), queue_depth));
  } catch (const Exception& e) {
    return e.error();
  }
}

SlabReader::SlabReader(const Sidecar& sidecar, std::vector<runtime::DirectFile> files, unsigned queue_depth)
    : sidecar_(sidecar), files_(std::move(files)) {
  for (const auto& f : files_) direct_ = direct_ && f.direct_read();
  ring_ = std::make_unique<runtime::UringRing>(io_, queue_depth);
}

SlabReader::~SlabReader() = default;

runtime::IoBuffer SlabReader::take_buffer() {
  if (pool_.empty()) return runtime::IoBuffer(sidecar_.layout().slab_bytes);
  runtime::IoBuffer b = std::move(pool_.back());
  pool_.pop_back();
  return b;
}

std::pair<size_t, const SidecarExpert*> SlabReader::locate(uint32_t layer, uint32_t expert) const {
  const SidecarLayout& layout = sidecar_.layout();
  size_t at = 0;
  while (at < layout.layers.size() && layout.layers[at].layer != layer) ++at;
  assert(at < layout.layers.size() && expert < layout.layers[at].experts.size());
  return {at, &layout.layers[at].experts[expert]};
}

Result<void> SlabReader::check(std::error_code ec, const runtime::ReadResult& got, size_t at, uint32_t layer,
                               uint32_t expert, uint64_t want) const {
  const std::string& file = files_[at].path();
  if (ec)
    return Error{Errc::io, fmt::format("{}: layer {} expert {}: read failed: {}", file, layer, expert, ec.message())};
  if (got.bytes < want)
    return Error{Errc::io, fmt::format("{}: layer {} expert {}: the file ends {} bytes into the slab of {} (truncated; "
                                       "rerun mach prune)", file, layer, expert, got.bytes, want)};
  return sidecar_.check_slab(layer, expert, got.buffer.span());
}

std::vector<Result<void>> SlabReader::read(std::span<const SlabRead> reads) {
  std::vector<Result<void>> results(reads.size());
  for (size_t i = 0; i < reads.size(); ++i) {
    const SlabRead& r = reads[i];
    const auto [at, e] = locate(r.layer, r.expert);
    ring_->async_read(files_[at].fd(), e->offset, take_buffer(), e->bytes,
                      [this, &results, i, r, at, want = e->bytes](std::error_code ec, runtime::ReadResult got) {
                        Result<void>& out = results[i];
                        out = check(ec, got, at, r.layer, r.expert, want);
                        if (out) std::memcpy(r.dst, got.buffer.data(), want);
                        if (!got.buffer.empty()) pool_.push_back(std::move(got.buffer));
                      });
  }
  io_.restart();
  io_.run();  // also completes the prefetches in flight
  return results;
}

void SlabReader::prefetch(uint32_t layer, uint32_t expert) {
  const auto [at, e] = locate(layer, expert);
  ++prefetch_in_flight_;
  in_flight_.insert({layer, expert});
  ring_->async_read(files_[at].fd(), e->offset, take_buffer(), e->bytes,
                    [this, layer, expert, at, want = e->bytes](std::error_code ec, runtime::ReadResult got) {
                      --prefetch_in_flight_;
                      in_flight_.erase({layer, expert});
                      Prefetched p{layer, expert, check(ec, got, at, layer, expert, want), std::move(got.buffer)};
                      prefetched_.push_back(std::move(p));
                    });
  io_.restart();
  io_.poll();  // runs the posted submit: the read is in the kernel now
}

bool SlabReader::poll_prefetches() {
  if (prefetch_in_flight_ > 0) {
    io_.restart();
    io_.poll();
  }
  return prefetch_in_flight_ > 0;
}

std::vector<SlabReader::Prefetched> SlabReader::take_prefetched() {
  if (prefetch_in_flight_ > 0) {
    io_.restart();
    io_.run();
  }
  return std::exchange(prefetched_, {});
}

void SlabReader::recycle(runtime::IoBuffer buffer) {
  if (!buffer.empty()) pool_.push_back(std::move(buffer));
}

}  // namespace mach::experts
