#include "runtime/direct_file.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace mach::runtime {
namespace {

Error open_error(const std::string& path, int err) {
  return Error{err == ENOENT ? Errc::not_found : Errc::io,
               fmt::format("cannot open {} for reading: {}", path, std::strerror(err))};
}

}  // namespace

Result<DirectFile> DirectFile::open(const std::string& path, ReadMode mode) {
  const int base = O_RDONLY | O_CLOEXEC;
  bool direct = mode == ReadMode::direct_if_supported;
  int fd = ::open(path.c_str(), base | (direct ? O_DIRECT : 0));
  if (fd < 0 && direct && errno == EINVAL) {
    direct = false;
    fd = ::open(path.c_str(), base);
  }
  if (fd < 0) return open_error(path, errno);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return Error{Errc::io, fmt::format("cannot stat {}: {}", path, std::strerror(err))};
  }
  return DirectFile(fd, direct, static_cast<uint64_t>(st.st_size), path);
}

DirectFile::DirectFile(DirectFile&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      direct_(other.direct_),
      size_(other.size_),
      path_(std::move(other.path_)) {}

DirectFile& DirectFile::operator=(DirectFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    direct_ = other.direct_;
    size_ = other.size_;
    path_ = std::move(other.path_);
  }
  return *this;
}

DirectFile::~DirectFile() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace mach::runtime
