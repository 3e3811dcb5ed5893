#include "experts/file_write.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace mach::experts {
namespace fs = std::filesystem;

Result<void> write_all(int fd, std::span<const std::byte> data, const fs::path& path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Error{Errc::io, fmt::format("cannot write {}: {}", path.string(), std::strerror(errno))};
    data = data.subspan(static_cast<size_t>(n));
  }
  return {};
}

Result<void> pwrite_all(int fd, std::span<const std::byte> data, uint64_t offset, const fs::path& path) {
  while (!data.empty()) {
    const ssize_t n = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Error{Errc::io, fmt::format("cannot write {}: {}", path.string(), std::strerror(errno))};
    data = data.subspan(static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
  }
  return {};
}

Result<void> write_file_atomic(const fs::path& path, std::span<const std::byte> data) {
  const fs::path tmp = path.string() + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Error{Errc::io, fmt::format("cannot create {}: {}", tmp.string(), std::strerror(errno))};
  auto r = write_all(fd, data, tmp);
  if (r && ::fsync(fd) != 0) r = Error{Errc::io, fmt::format("fsync {}: {}", tmp.string(), std::strerror(errno))};
  ::close(fd);
  if (!r) return r;
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) return Error{Errc::io, fmt::format("cannot rename {} to {}: {}", tmp.string(), path.string(), ec.message())};
  return {};
}

Result<void> write_text_atomic(const fs::path& path, const std::string& text) {
  return write_file_atomic(path, std::as_bytes(std::span(text)));
}

Result<std::string> read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error{Errc::not_found, fmt::format("cannot open {}", path.string())};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace mach::experts
