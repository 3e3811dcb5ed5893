// Small file-writing helpers shared by the checkpoint writers (mach prune, mach synth): whole writes that
// retry short writes, and atomic replacement through a temporary name, fsync and rename, so that a reader
// sees either no file or the complete one. Errors name the path and errno's text.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>

#include "mach/error.hpp"

namespace mach::experts {

// write(2) until all of `data` is written (EINTR and short writes retried); `path` names the file in errors.
Result<void> write_all(int fd, std::span<const std::byte> data, const std::filesystem::path& path);
// pwrite(2) of all of `data` at `offset`, retried the same way.
Result<void> pwrite_all(int fd, std::span<const std::byte> data, uint64_t offset, const std::filesystem::path& path);

// Writes `path` through `path.tmp`, fsync and rename.
Result<void> write_file_atomic(const std::filesystem::path& path, std::span<const std::byte> data);
Result<void> write_text_atomic(const std::filesystem::path& path, const std::string& text);

// The whole file; Errc::not_found when it cannot be opened.
Result<std::string> read_text(const std::filesystem::path& path);

}  // namespace mach::experts
