#include "model/safetensors_writer.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

namespace mach::model {

uint64_t tensor_data_bytes(const TensorHeader& t) {
  uint64_t numel = 1;
  for (uint64_t d : t.shape) numel *= d;
  return (numel * dtype_bits(t.dtype) + 7) / 8;
}

Result<std::string> safetensors_header(const std::vector<TensorHeader>& tensors,
                                       const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::set<std::string> names;
  for (const auto& t : tensors) {
    uint64_t numel = 1;
    for (uint64_t d : t.shape) numel *= d;
    if (numel * dtype_bits(t.dtype) % 8 != 0)
      return Error{Errc::invalid_argument, fmt::format("tensor '{}': its shape and dtype are not whole bytes", t.name)};
    if (!names.insert(t.name).second || t.name == "__metadata__")
      return Error{Errc::invalid_argument, fmt::format("tensor name '{}' repeated or reserved", t.name)};
    const uint64_t bytes = tensor_data_bytes(t);
    header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');
  const uint64_t n = text.size();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(n >> (8 * i));
  return out + text;
}

Result<void> write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                               const std::map<std::string, std::string>& metadata) {
  std::vector<TensorHeader> entries;
  for (const auto& t : tensors) {
    TensorHeader h{t.name, t.dtype, t.shape};
    uint64_t numel = 1;
    for (uint64_t d : t.shape) numel *= d;
    const uint64_t bits = numel * dtype_bits(t.dtype);
    if (bits % 8 != 0 || bits / 8 != t.data.size())
      return Error{Errc::invalid_argument, fmt::format("{}: tensor '{}' has {} bytes, its shape and dtype need {} bits",
                                                       path.string(), t.name, t.data.size(), bits)};
    entries.push_back(std::move(h));
  }
  auto header = safetensors_header(entries, metadata);
  if (!header) return Error{header.error().code, fmt::format("{}: {}", path.string(), header.error().message)};
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(header->data(), static_cast<std::streamsize>(header->size()));
  for (const auto& t : tensors) out.write(reinterpret_cast<const char*>(t.data.data()), static_cast<std::streamsize>(t.data.size()));
  out.flush();
  if (!out) return Error{Errc::io, fmt::format("cannot write {}: {}", path.string(), std::strerror(errno))};
  return {};
}

}  // namespace mach::model
