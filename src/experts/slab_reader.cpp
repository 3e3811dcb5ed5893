#include "experts/slab_reader.hpp"

#include <fmt/format.h>

#include <cassert>
#include <cstring>

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

std::vector<Result<void>> SlabReader::read(std::span<const SlabRead> reads) {
  const SidecarLayout& layout = sidecar_.layout();
  std::vector<Result<void>> results(reads.size());
  for (size_t i = 0; i < reads.size(); ++i) {
    const SlabRead& r = reads[i];
    size_t at = 0;
    while (at < layout.layers.size() && layout.layers[at].layer != r.layer) ++at;
    assert(at < layout.layers.size() && r.expert < layout.layers[at].experts.size());
    const SidecarExpert& e = layout.layers[at].experts[r.expert];
    const std::string file = files_[at].path();
    ring_->async_read(files_[at].fd(), e.offset, take_buffer(), e.bytes,
                      [this, &results, i, r, file, want = e.bytes](std::error_code ec, runtime::ReadResult got) {
                        Result<void>& out = results[i];
                        if (ec) {
                          out = Error{Errc::io, fmt::format("{}: layer {} expert {}: read failed: {}", file, r.layer,
                                                            r.expert, ec.message())};
                        } else if (got.bytes < want) {
                          out = Error{Errc::io, fmt::format("{}: layer {} expert {}: the file ends {} bytes into the "
                                                            "slab of {} (truncated; rerun mach prune)", file, r.layer,
                                                            r.expert, got.bytes, want)};
                        } else if (auto sum = sidecar_.check_slab(r.layer, r.expert, got.buffer.span()); !sum) {
                          out = sum.error();
                        } else {
                          std::memcpy(r.dst, got.buffer.data(), want);
                        }
                        if (!got.buffer.empty()) pool_.push_back(std::move(got.buffer));
                      });
  }
  io_.restart();
  io_.run();
  return results;
}

}  // namespace mach::experts
