#include "model/safetensors_writer.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

namespace mach::model {

Result<void> write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                               const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::set<std::string> names;
  for (const auto& t : tensors) {
    uint64_t numel = 1;
    for (uint64_t d : t.shape) numel *= d;
    const uint64_t bits = numel * dtype_bits(t.dtype);
    if (bits % 8 != 0 || bits / 8 != t.data.size())
      return Error{Errc::invalid_argument, fmt::format("{}: tensor '{}' has {} bytes, its shape and dtype need {} bits",
                                                       path.string(), t.name, t.data.size(), bits)};
    if (!names.insert(t.name).second || t.name == "__metadata__")
      return Error{Errc::invalid_argument, fmt::format("{}: tensor name '{}' repeated or reserved", path.string(), t.name)};
    header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.data.size()}}};
    offset += t.data.size();
  }
  std::string text = header.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  const uint64_t n = text.size();
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
  out.write(reinterpret_cast<const char*>(len), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const auto& t : tensors) out.write(reinterpret_cast<const char*>(t.data.data()), static_cast<std::streamsize>(t.data.size()));
  out.flush();
  if (!out) return Error{Errc::io, fmt::format("cannot write {}: {}", path.string(), std::strerror(errno))};
  return {};
}

}  // namespace mach::model
