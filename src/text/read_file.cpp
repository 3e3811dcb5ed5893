#include "text/read_file.hpp"

#include <fmt/format.h>

#include <fstream>
#include <sstream>

namespace mach::text {

Result<std::string> read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error{Errc::not_found, fmt::format("cannot open {}", path.string())};
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return Error{Errc::io, fmt::format("cannot read {}", path.string())};
  return ss.str();
}

}  // namespace mach::text
