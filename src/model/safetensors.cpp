#include "model/safetensors.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "ops/weight_format.hpp"

namespace mach::model {
namespace {

using nlohmann::json;

struct DTypeEntry {
  DType dtype;
  std::string_view name;
  uint32_t bits;
};

constexpr std::array<DTypeEntry, 22> kDTypes{{
    {DType::boolean, "BOOL", 8},       {DType::u8, "U8", 8},
    {DType::i8, "I8", 8},              {DType::u16, "U16", 16},
    {DType::i16, "I16", 16},           {DType::u32, "U32", 32},
    {DType::i32, "I32", 32},           {DType::u64, "U64", 64},
    {DType::i64, "I64", 64},           {DType::f16, "F16", 16},
    {DType::bf16, "BF16", 16},         {DType::f32, "F32", 32},
    {DType::f64, "F64", 64},           {DType::c64, "C64", 64},
    {DType::f8_e4m3, "F8_E4M3", 8},    {DType::f8_e5m2, "F8_E5M2", 8},
    {DType::f8_e8m0, "F8_E8M0", 8},    {DType::f8_e4m3fnuz, "F8_E4M3FNUZ", 8},
    {DType::f8_e5m2fnuz, "F8_E5M2FNUZ", 8}, {DType::f4, "F4", 4},
    {DType::f6_e2m3, "F6_E2M3", 6},    {DType::f6_e3m2, "F6_E3M2", 6},
}};

Error parse_error(std::string_view source, const std::string& what) {
  return Error{Errc::parse, fmt::format("{}: {}", source, what)};
}

std::string shape_string(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// A JSON number that is a non-negative integer fitting u64.
std::optional<uint64_t> as_u64(const json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());
  return std::nullopt;
}

// Validates one header entry; `data_size` is the data region's length.
Result<TensorInfo> parse_entry(const std::string& name, const json& entry, uint64_t data_start, uint64_t data_size,
                               std::string_view source) {
  auto fail = [&](const std::string& what) { return parse_error(source, fmt::format("tensor '{}': {}", name, what)); };
  if (!entry.is_object()) return fail("header entry is not an object");
  auto dt = entry.find("dtype");
  auto sh = entry.find("shape");
  auto off = entry.find("data_offsets");
  if (dt == entry.end() || sh == entry.end() || off == entry.end())
    return fail("header entry needs 'dtype', 'shape' and 'data_offsets'");
  if (!dt->is_string()) return fail("'dtype' is not a string");
  auto dtype = parse_dtype(dt->get_ref<const std::string&>());
  if (!dtype) return fail(fmt::format("unknown dtype '{}'", dt->get<std::string>()));
  if (!sh->is_array()) return fail("'shape' is not a list");
  if (!off->is_array() || off->size() != 2) return fail("'data_offsets' is not a [begin, end] pair");

  TensorInfo t;
  t.name = name;
  t.dtype = *dtype;
  uint64_t numel = 1;
  for (const auto& d : *sh) {
    auto dim = as_u64(d);
    if (!dim) return fail(fmt::format("shape entry {} is not a non-negative integer", d.dump()));
    if (*dim != 0 && numel > UINT64_MAX / *dim) return fail("shape overflows");
    numel *= *dim;
    t.shape.push_back(*dim);
  }
  const uint64_t bits = dtype_bits(t.dtype);
  if (numel > UINT64_MAX / bits) return fail("shape overflows");
  if (numel * bits % 8 != 0) {
    return fail(fmt::format("{} elements of {} do not fill whole bytes", numel, dtype_name(t.dtype)));
  }
  const uint64_t want = numel * bits / 8;
  auto begin = as_u64((*off)[0]);
  auto end = as_u64((*off)[1]);
  if (!begin || !end || *begin > *end) return fail(fmt::format("bad data_offsets {}", off->dump()));
  if (*end - *begin != want) {
    return fail(fmt::format("dtype {} shape {} needs {} bytes but data_offsets {} span {}", dtype_name(t.dtype),
                            shape_string(t.shape), want, off->dump(), *end - *begin));
  }
  if (*end > data_size) {
    return fail(fmt::format("data_offsets {} run past the data region ({} bytes): the file is truncated or the "
                            "header is wrong",
                            off->dump(), data_size));
  }
  t.offset = data_start + *begin;
  t.nbytes = want;
  return t;
}

}  // namespace

std::optional<DType> parse_dtype(std::string_view name) {
  for (const auto& e : kDTypes) {
    if (e.name == name) return e.dtype;
  }
  return std::nullopt;
}

std::string_view dtype_name(DType dtype) {
  for (const auto& e : kDTypes) {
    if (e.dtype == dtype) return e.name;
  }
  return "?";
}

uint32_t dtype_bits(DType dtype) {
  for (const auto& e : kDTypes) {
    if (e.dtype == dtype) return e.bits;
  }
  return 8;
}

bool is_float_convertible(DType dtype) {
  return dtype == DType::f32 || dtype == DType::f16 || dtype == DType::bf16 || dtype == DType::f64;
}

uint64_t TensorInfo::numel() const {
  uint64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

Result<std::unique_ptr<MappedFile>> MappedFile::open(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    Errc code = errno == ENOENT ? Errc::not_found : Errc::io;
    return Error{code, fmt::format("{}: cannot open: {}", path.string(), std::strerror(errno))};
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return Error{Errc::io, fmt::format("{}: cannot stat: {}", path.string(), std::strerror(err))};
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Error{Errc::invalid_argument, fmt::format("{}: not a regular file", path.string())};
  }
  const size_t size = static_cast<size_t>(st.st_size);
  void* addr = nullptr;
  if (size > 0) {
    addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      return Error{Errc::io, fmt::format("{}: cannot mmap {} bytes: {}", path.string(), size, std::strerror(err))};
    }
  }
  ::close(fd);  // the mapping keeps the file
  return std::unique_ptr<MappedFile>(new MappedFile(addr, size));
}

MappedFile::~MappedFile() {
  if (addr_) ::munmap(addr_, size_);
}

Result<SafetensorsFile> SafetensorsFile::open(const std::filesystem::path& path) {
  auto map = MappedFile::open(path);
  if (!map) return map.error();
  std::shared_ptr<MappedFile> shared = std::move(*map);
  auto file = parse(shared->bytes(), path.string());
  if (!file) return file.error();
  file->map_ = std::move(shared);
  return file;
}

Result<SafetensorsFile> SafetensorsFile::parse(std::span<const std::byte> file, std::string source) {
  try {
    return parse_image(file, source);
  } catch (const json::exception& e) {  // the lexer rejects bad UTF-8, but keep a malformed header an Error
    return parse_error(source, fmt::format("malformed header: {}", e.what()));
  }
}

Result<SafetensorsFile> SafetensorsFile::parse_image(std::span<const std::byte> file, std::string source) {
  if (file.size() < 8) {
    return parse_error(source, fmt::format("{} bytes is too short for a safetensors file (truncated?)", file.size()));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | std::to_integer<uint64_t>(file[i]);
  if (header_len > kMaxHeaderBytes) {
    return parse_error(source, fmt::format("header length {} exceeds the {}-byte limit: not a safetensors file?",
                                           header_len, kMaxHeaderBytes));
  }
  if (header_len > file.size() - 8) {
    return parse_error(source, fmt::format("header length {} runs past the end of the {}-byte file (truncated?)",
                                           header_len, file.size()));
  }
  const auto* text = reinterpret_cast<const char*>(file.data() + 8);
  json header = json::parse(text, text + header_len, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) return parse_error(source, "header is not valid JSON");
  if (!header.is_object()) return parse_error(source, "header is not a JSON object");

  SafetensorsFile out;
  out.file_ = file;
  out.source_ = std::move(source);
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = file.size() - data_start;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return parse_error(out.source_, "'__metadata__' is not an object");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) return parse_error(out.source_, fmt::format("'__metadata__.{}' is not a string", k));
        out.metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    auto t = parse_entry(name, entry, data_start, data_size, out.source_);
    if (!t) return t.error();
    out.tensors_.push_back(std::move(*t));
  }
  std::sort(out.tensors_.begin(), out.tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.offset != b.offset ? a.offset < b.offset : a.nbytes < b.nbytes;
  });
  uint64_t cursor = data_start;
  const TensorInfo* prev = nullptr;
  for (const auto& t : out.tensors_) {
    if (t.offset < cursor) {
      return parse_error(out.source_, fmt::format("tensor '{}': data overlaps tensor '{}'", t.name, prev->name));
    }
    if (t.offset > cursor) {
      return parse_error(out.source_, fmt::format("tensor '{}': {} unindexed bytes before its data", t.name,
                                                  t.offset - cursor));
    }
    cursor = t.offset + t.nbytes;
    prev = &t;
  }
  if (cursor != file.size()) {
    return parse_error(out.source_, fmt::format("{} bytes after the last tensor's data are not indexed by the header",
                                                file.size() - cursor));
  }
  for (size_t i = 0; i < out.tensors_.size(); ++i) out.by_name_.emplace(out.tensors_[i].name, i);
  return out;
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  auto it = by_name_.find(std::string(name));
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

std::span<const std::byte> SafetensorsFile::data(const TensorInfo& tensor) const {
  assert(tensor.offset + tensor.nbytes <= file_.size());
  return file_.subspan(tensor.offset, tensor.nbytes);
}

Result<std::vector<float>> SafetensorsFile::to_f32(const TensorInfo& t) const {
  if (!is_float_convertible(t.dtype)) {
    return Error{Errc::unsupported, fmt::format("{}: tensor '{}' has dtype {}; reading as f32 needs F32, F16, BF16 "
                                                "or F64",
                                                source_, t.name, dtype_name(t.dtype))};
  }
  const auto bytes = data(t);
  const size_t n = t.numel();
  std::vector<float> out(n);
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  // memcpy per element: tensor data in a safetensors file need not be aligned.
  switch (t.dtype) {
    case DType::f32: std::memcpy(out.data(), p, n * 4); break;
    case DType::f64:
      for (size_t i = 0; i < n; ++i) {
        double d;
        std::memcpy(&d, p + 8 * i, 8);
        out[i] = static_cast<float>(d);
      }
      break;
    case DType::f16:
    case DType::bf16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = t.dtype == DType::f16 ? ops::half_to_float(h) : ops::bf16_to_float(h);
      }
      break;
    default: break;
  }
  return out;
}

namespace {

Result<std::string> read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error{Errc::not_found, fmt::format("{}: cannot open", path.string())};
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A shard name from an index must be a plain file name next to the index.
bool plain_file_name(const std::string& name) {
  return !name.empty() && name.find('/') == std::string::npos && name != "." && name != "..";
}

}  // namespace

Result<Checkpoint> Checkpoint::open(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path index_path;
  std::vector<fs::path> shard_paths;
  json weight_map;
  if (fs::is_directory(path, ec)) {
    if (fs::exists(path / "model.safetensors.index.json", ec)) {
      index_path = path / "model.safetensors.index.json";
    } else if (fs::exists(path / "model.safetensors", ec)) {
      shard_paths.push_back(path / "model.safetensors");
    } else {
      return Error{Errc::not_found, fmt::format("{}: no model.safetensors or model.safetensors.index.json",
                                                path.string())};
    }
  } else if (path.extension() == ".json") {
    index_path = path;
  } else {
    shard_paths.push_back(path);
  }

  Checkpoint ck;
  ck.source_ = path.string();
  if (!index_path.empty()) {
    auto text = read_text(index_path);
    if (!text) return text.error();
    json index = json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (index.is_discarded() || !index.is_object()) return parse_error(index_path.string(), "not a JSON object");
    auto wm = index.find("weight_map");
    if (wm == index.end() || !wm->is_object()) return parse_error(index_path.string(), "no 'weight_map' object");
    weight_map = *wm;
    std::set<std::string> shard_names;
    for (const auto& [name, shard] : weight_map.items()) {
      if (!shard.is_string() || !plain_file_name(shard.get<std::string>())) {
        return parse_error(index_path.string(), fmt::format("tensor '{}': shard {} is not a file name next to the "
                                                            "index",
                                                            name, shard.dump()));
      }
      shard_names.insert(shard.get<std::string>());
    }
    for (const auto& s : shard_names) {
      fs::path p = index_path.parent_path() / s;
      if (!fs::exists(p, ec)) {
        return Error{Errc::not_found, fmt::format("{}: names shard '{}', which does not exist", index_path.string(),
                                                  p.string())};
      }
      shard_paths.push_back(p);
    }
  }
  for (const auto& p : shard_paths) {
    auto f = SafetensorsFile::open(p);
    if (!f) return f.error();
    ck.files_.push_back(std::move(*f));
  }
  for (size_t fi = 0; fi < ck.files_.size(); ++fi) {
    const auto& tensors = ck.files_[fi].tensors();
    for (size_t ti = 0; ti < tensors.size(); ++ti) {
      auto [it, inserted] = ck.index_.emplace(tensors[ti].name, std::make_pair(fi, ti));
      if (!inserted) {
        return parse_error(ck.files_[fi].source(), fmt::format("tensor '{}' also appears in {}", tensors[ti].name,
                                                               ck.files_[it->second.first].source()));
      }
    }
  }
  for (const auto& [name, shard] : weight_map.items()) {
    auto it = ck.index_.find(name);
    const std::string want = (index_path.parent_path() / shard.get<std::string>()).string();
    if (it == ck.index_.end() || ck.files_[it->second.first].source() != want) {
      return Error{Errc::not_found, fmt::format("{}: weight_map puts tensor '{}' in {}, which does not hold it",
                                                index_path.string(), name, want)};
    }
  }
  return ck;
}

Result<Checkpoint::TensorRef> Checkpoint::find(std::string_view name) const {
  auto it = index_.find(std::string(name));
  if (it == index_.end()) {
    return Error{Errc::not_found, fmt::format("{}: tensor '{}' not found ({} tensors in {} file(s))", source_, name,
                                              index_.size(), files_.size())};
  }
  const auto& f = files_[it->second.first];
  return TensorRef{&f, &f.tensors()[it->second.second]};
}

bool Checkpoint::contains(std::string_view name) const { return index_.count(std::string(name)) != 0; }

Result<std::vector<float>> Checkpoint::read_f32(std::string_view name) const {
  auto ref = find(name);
  if (!ref) return ref.error();
  return ref->file->to_f32(*ref->info);
}

std::vector<std::string> Checkpoint::tensor_names() const {
  std::vector<std::string> names;
  names.reserve(index_.size());
  for (const auto& [name, where] : index_) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace mach::model
