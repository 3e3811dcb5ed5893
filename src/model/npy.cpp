#include "model/npy.hpp"

#include <fmt/format.h>

#include <cassert>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>

namespace mach::model {
namespace {

constexpr char kMagic[] = "\x93NUMPY";  // 6 bytes
constexpr size_t kMagicLen = 6;

Error npy_error(std::string_view source, const std::string& what) {
  return Error{Errc::parse, fmt::format("{}: {}", source, what)};
}

// The value text after `'key':` in a Python dict literal, trimmed of leading spaces; nullopt when absent.
std::optional<std::string_view> dict_value(std::string_view dict, std::string_view key) {
  for (char quote : {'\'', '"'}) {
    const std::string pattern = fmt::format("{0}{1}{0}", quote, key);
    size_t at = dict.find(pattern);
    if (at == std::string_view::npos) continue;
    size_t colon = dict.find(':', at + pattern.size());
    if (colon == std::string_view::npos) return std::nullopt;
    std::string_view rest = dict.substr(colon + 1);
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    return rest;
  }
  return std::nullopt;
}

std::optional<std::string> parse_quoted(std::string_view v) {
  if (v.empty() || (v.front() != '\'' && v.front() != '"')) return std::nullopt;
  size_t end = v.find(v.front(), 1);
  if (end == std::string_view::npos) return std::nullopt;
  return std::string(v.substr(1, end - 1));
}

// "(7, 512)", "(7,)" or "()".
std::optional<std::vector<uint64_t>> parse_shape(std::string_view v) {
  if (v.empty() || v.front() != '(') return std::nullopt;
  size_t close = v.find(')');
  if (close == std::string_view::npos) return std::nullopt;
  std::string_view body = v.substr(1, close - 1);
  std::vector<uint64_t> shape;
  while (!body.empty()) {
    while (!body.empty() && (body.front() == ' ' || body.front() == ',')) body.remove_prefix(1);
    if (body.empty()) break;
    uint64_t dim = 0;
    size_t digits = 0;
    while (digits < body.size() && body[digits] >= '0' && body[digits] <= '9') {
      if (dim > (UINT64_MAX - 9) / 10) return std::nullopt;
      dim = dim * 10 + static_cast<uint64_t>(body[digits] - '0');
      ++digits;
    }
    if (digits == 0) return std::nullopt;
    if (digits < body.size() && body[digits] == 'L') ++digits;  // Python 2 longs
    shape.push_back(dim);
    body.remove_prefix(digits);
  }
  return shape;
}

}  // namespace

std::vector<std::byte> encode_npy_f32(std::span<const float> data, std::span<const uint64_t> shape) {
  uint64_t count = 1;
  std::string dims;  // Python tuple syntax: "()", "(7,)", "(7, 512)"
  for (size_t i = 0; i < shape.size(); ++i) {
    count *= shape[i];
    if (i) dims += ", ";
    dims += std::to_string(shape[i]);
  }
  if (shape.size() == 1) dims += ",";
  assert(count == data.size() && "shape must match the data");
  std::string header = fmt::format("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}), }}", dims);
  // magic(6) + version(2) + length(2) + header + '\n' padded so the data start on a 64-byte boundary
  size_t total = kMagicLen + 4 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  static_assert(sizeof(float) == 4);
  const size_t prefix = kMagicLen + 4;
  std::vector<std::byte> out(prefix + header.size() + data.size() * 4);
  std::memcpy(out.data(), kMagic, kMagicLen);
  out[6] = std::byte{1};  // version 1.0
  out[7] = std::byte{0};
  out[8] = static_cast<std::byte>(header.size() & 0xff);
  out[9] = static_cast<std::byte>(header.size() >> 8);
  std::memcpy(out.data() + prefix, header.data(), header.size());
  if (!data.empty()) {  // little-endian hosts only (x86-64, arm64)
    std::memcpy(out.data() + prefix + header.size(), data.data(), data.size() * 4);
  }
  return out;
}

Result<void> write_npy_f32(const std::filesystem::path& path, std::span<const float> data,
                           std::span<const uint64_t> shape) {
  auto bytes = encode_npy_f32(data, shape);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return Error{Errc::io, fmt::format("{}: cannot create: {}", path.string(), std::strerror(errno))};
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) return Error{Errc::io, fmt::format("{}: write failed: {}", path.string(), std::strerror(errno))};
  return {};
}

Result<NpyArray> decode_npy_f32(std::span<const std::byte> bytes, std::string_view source) {
  if (bytes.size() < kMagicLen + 4 || std::memcmp(bytes.data(), kMagic, kMagicLen) != 0)
    return npy_error(source, "not a .npy file (no \\x93NUMPY magic)");
  const auto u8 = [&](size_t i) { return std::to_integer<uint32_t>(bytes[i]); };
  const uint32_t major = u8(6);
  size_t header_len = 0, header_start = 0;
  if (major == 1) {
    header_len = u8(8) | (u8(9) << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return npy_error(source, "truncated header");
    header_len = u8(8) | (u8(9) << 8) | (u8(10) << 16) | (static_cast<size_t>(u8(11)) << 24);
    header_start = 12;
  } else {
    return npy_error(source, fmt::format("unsupported .npy format version {}", major));
  }
  if (header_len > bytes.size() - header_start) return npy_error(source, "truncated header");
  std::string_view dict(reinterpret_cast<const char*>(bytes.data() + header_start), header_len);

  auto descr_text = dict_value(dict, "descr");
  auto fortran_text = dict_value(dict, "fortran_order");
  auto shape_text = dict_value(dict, "shape");
  if (!descr_text || !fortran_text || !shape_text) return npy_error(source, "header lacks descr, fortran_order or shape");
  auto descr = parse_quoted(*descr_text);
  if (!descr) return npy_error(source, "malformed descr");
  uint32_t itemsize = 0;
  if (*descr == "<f4" || *descr == "=f4") itemsize = 4;
  else if (*descr == "<f8" || *descr == "=f8") itemsize = 8;
  else return npy_error(source, fmt::format("dtype '{}' is not little-endian float32/float64", *descr));
  if (fortran_text->substr(0, 5) != "False") return npy_error(source, "Fortran-order arrays are not supported");
  auto shape = parse_shape(*shape_text);
  if (!shape) return npy_error(source, "malformed shape");

  uint64_t count = 1;
  for (auto d : *shape) {
    if (d != 0 && count > UINT64_MAX / itemsize / d) return npy_error(source, "shape overflows");
    count *= d;
  }
  const size_t data_start = header_start + header_len;
  const uint64_t have = bytes.size() - data_start;
  if (have != count * itemsize) {
    return npy_error(source, fmt::format("shape needs {} bytes of data, the file has {} (truncated?)",
                                         count * itemsize, have));
  }
  NpyArray out;
  out.shape = *shape;
  out.data.resize(count);
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data() + data_start);
  if (itemsize == 4) {
    std::memcpy(out.data.data(), p, count * 4);
  } else {
    for (uint64_t i = 0; i < count; ++i) {
      double d;
      std::memcpy(&d, p + 8 * i, 8);
      out.data[i] = static_cast<float>(d);
    }
  }
  return out;
}

Result<NpyArray> read_npy_f32(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error{Errc::not_found, fmt::format("{}: cannot open", path.string())};
  std::vector<char> raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return decode_npy_f32(std::span(reinterpret_cast<const std::byte*>(raw.data()), raw.size()), path.string());
}

}  // namespace mach::model
