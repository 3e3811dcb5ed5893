// A file opened for reading by the io_uring ring, with O_DIRECT when the filesystem allows it.
//
// Why O_DIRECT: expert slabs are read once per miss and copied to the GPU; going through the page cache
// would double the memory traffic and evict the host's working set. Some filesystems (older tmpfs, some
// network and FUSE filesystems) refuse O_DIRECT with EINVAL; then the file is opened buffered and
// direct_read() says so, because O_DIRECT reads need 4096-aligned offsets, lengths and buffers and buffered
// ones do not. Startup reports it as `direct_read=true|false`.
#pragma once

#include <cstdint>
#include <string>

#include "mach/error.hpp"

namespace mach::runtime {

enum class ReadMode {
  direct_if_supported,  // O_DIRECT, or buffered when the filesystem refuses it
  buffered,             // always through the page cache (tests, tiny files)
};

// Owns a read-only file descriptor (move-only; closes it on destruction). Thread-safety: none needed for
// the descriptor itself; reads go through a UringRing on the loop thread.
class DirectFile {
 public:
  // Errors: Errc::not_found when the path does not exist, Errc::io otherwise; the message names the path and
  // strerror's text.
  static Result<DirectFile> open(const std::string& path, ReadMode mode = ReadMode::direct_if_supported);

  DirectFile(DirectFile&& other) noexcept;
  DirectFile& operator=(DirectFile&& other) noexcept;
  DirectFile(const DirectFile&) = delete;
  DirectFile& operator=(const DirectFile&) = delete;
  ~DirectFile();

  int fd() const { return fd_; }
  // True when reads bypass the page cache (offsets, lengths and buffers must then be 4096-aligned).
  bool direct_read() const { return direct_; }
  uint64_t size() const { return size_; }  // bytes, at open time
  const std::string& path() const { return path_; }

 private:
  DirectFile(int fd, bool direct, uint64_t size, std::string path)
      : fd_(fd), direct_(direct), size_(size), path_(std::move(path)) {}

  int fd_ = -1;
  bool direct_ = false;
  uint64_t size_ = 0;
  std::string path_;
};

}  // namespace mach::runtime
