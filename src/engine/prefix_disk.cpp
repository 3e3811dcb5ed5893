#include "engine/prefix_disk.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>

namespace mach::engine {
namespace {

namespace fs = std::filesystem;

static_assert(std::endian::native == std::endian::little, "prefix cache files are little-endian");

constexpr char kMagic[8] = {'M', 'A', 'C', 'H', 'P', 'R', 'F', 'X'};
constexpr uint32_t kVersion = 1;
constexpr uint64_t kFixedHeader = 72;  // bytes before the chain keys
constexpr const char* kSuffix = ".mpx";

struct Header {
  uint32_t header_bytes = 0, block_size = 0, blocks = 0, token_count = 0;
  uint64_t block_bytes = 0, payload_bytes = 0, payload_checksum = 0;
  BlockKey parent;
  std::vector<BlockKey> keys;
  std::string fingerprint;
};

class Writer {
 public:
  template <class T>
  void put(const T& v) {
    const auto* p = reinterpret_cast<const std::byte*>(&v);
    out.insert(out.end(), p, p + sizeof(T));
  }
  void put_bytes(const void* data, size_t n) {
    const auto* p = static_cast<const std::byte*>(data);
    out.insert(out.end(), p, p + n);
  }
  std::vector<std::byte> out;
};

class Reader {
 public:
  explicit Reader(std::span<const std::byte> in) : in_(in) {}
  template <class T>
  bool get(T& v) {
    if (at_ + sizeof(T) > in_.size()) return false;
    std::memcpy(&v, in_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return true;
  }
  bool get_string(std::string& s, size_t n) {
    if (at_ + n > in_.size()) return false;
    s.assign(reinterpret_cast<const char*>(in_.data() + at_), n);
    at_ += n;
    return true;
  }

 private:
  std::span<const std::byte> in_;
  size_t at_ = 0;
};

std::vector<std::byte> encode_header(const Segment& s, const DiskLayout& layout, uint64_t payload_bytes,
                                     uint64_t payload_checksum) {
  const auto n = static_cast<uint32_t>(s.keys.size());
  Writer w;
  w.put_bytes(kMagic, sizeof kMagic);
  w.put(kVersion);
  w.put(static_cast<uint32_t>(kFixedHeader + 16ull * n + layout.fingerprint.size() + 8));
  w.put(layout.block_size);
  w.put(n);
  w.put(n * layout.block_size);
  w.put(static_cast<uint32_t>(layout.fingerprint.size()));
  w.put(layout.block_bytes);
  w.put(payload_bytes);
  w.put(payload_checksum);
  w.put(s.parent);
  assert(w.out.size() == kFixedHeader);
  for (const BlockKey& k : s.keys) w.put(k);
  w.put_bytes(layout.fingerprint.data(), layout.fingerprint.size());
  w.put(checksum64(w.out));
  return std::move(w.out);
}

// Parses and checks a header against the layout; `bytes` holds at least the whole header. The error says
// which check failed.
Result<Header> decode_header(std::span<const std::byte> bytes, const DiskLayout& layout) {
  Reader r(bytes);
  char magic[8];
  uint32_t version = 0, fingerprint_bytes = 0;
  Header h;
  if (!r.get(magic) || std::memcmp(magic, kMagic, 8) != 0) return Error{Errc::parse, "not a prefix cache file"};
  if (!r.get(version) || version != kVersion) return Error{Errc::parse, fmt::format("format version {}", version)};
  if (!r.get(h.header_bytes) || h.header_bytes > bytes.size() || h.header_bytes < kFixedHeader + 8)
    return Error{Errc::parse, "short header"};
  uint64_t header_checksum = 0;
  std::memcpy(&header_checksum, bytes.data() + h.header_bytes - 8, 8);
  if (checksum64(bytes.first(h.header_bytes - 8)) != header_checksum) return Error{Errc::parse, "header checksum"};
  r.get(h.block_size), r.get(h.blocks), r.get(h.token_count), r.get(fingerprint_bytes);
  r.get(h.block_bytes), r.get(h.payload_bytes), r.get(h.payload_checksum), r.get(h.parent);
  if (h.header_bytes != kFixedHeader + 16ull * h.blocks + fingerprint_bytes + 8)
    return Error{Errc::parse, "header size"};
  h.keys.resize(h.blocks);
  for (BlockKey& k : h.keys) r.get(k);
  r.get_string(h.fingerprint, fingerprint_bytes);
  if (h.fingerprint != layout.fingerprint) return Error{Errc::parse, "another model's file"};
  if (h.block_size != layout.block_size || h.block_bytes != layout.block_bytes)
    return Error{Errc::parse, "another block layout"};
  if (h.blocks == 0 || h.token_count != uint64_t{h.blocks} * h.block_size ||
      h.payload_bytes != uint64_t{h.token_count} * 4 + uint64_t{h.blocks} * h.block_bytes)
    return Error{Errc::parse, "inconsistent sizes"};
  return h;
}

Result<std::vector<std::byte>> read_file(const fs::path& path, uint64_t max_bytes) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) return Error{Errc::not_found, fmt::format("{}: {}", path.string(), std::strerror(errno))};
  const auto size = static_cast<uint64_t>(f.tellg());
  const uint64_t n = std::min(size, max_bytes);
  std::vector<std::byte> data(n);
  f.seekg(0);
  if (!f.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(n)))
    return Error{Errc::io, fmt::format("{}: short read", path.string())};
  return data;
}

// The header of a file without its payload: the fixed part says how long the whole header is.
Result<std::vector<std::byte>> read_header_bytes(const fs::path& path) {
  auto fixed = read_file(path, 16);
  if (!fixed) return fixed.error();
  uint32_t header_bytes = 0;
  if (fixed->size() == 16) std::memcpy(&header_bytes, fixed->data() + 12, 4);
  return read_file(path, std::max<uint64_t>(header_bytes, 16));
}

}  // namespace

Result<std::unique_ptr<PrefixDisk>> PrefixDisk::open(fs::path dir, DiskLayout layout, uint64_t max_bytes) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Error{Errc::io, fmt::format("prefix cache folder {}: {}", dir.string(), ec.message())};
  std::unique_ptr<PrefixDisk> disk(new PrefixDisk(std::move(dir), std::move(layout), max_bytes));
  disk->index_folder();
  return disk;
}

void PrefixDisk::index_folder() {
  std::error_code ec;
  const auto stale = fs::file_time_type::clock::now() - std::chrono::minutes(10);
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    if (!entry.is_regular_file(ec)) continue;
    const std::string name = entry.path().filename().string();
    // Another writer's temporary file: removed only once it is old enough to be a crash's leftover.
    if (name.find(".tmp.") != std::string::npos) {
      if (entry.last_write_time(ec) < stale) fs::remove(entry.path(), ec);
      continue;
    }
    if (!name.ends_with(kSuffix)) continue;
    auto head = read_header_bytes(entry.path());
    auto header = head ? decode_header(*head, layout_) : Result<Header>(head.error());
    const uint64_t size = entry.file_size(ec);
    if (!header || size != header->header_bytes + header->payload_bytes) {
      reject(name);
      continue;
    }
    add(name, std::move(header->keys), size);
  }
}

void PrefixDisk::add(const std::string& name, std::vector<BlockKey> keys, uint64_t bytes) {
  for (const BlockKey& k : keys) where_.emplace(k, name);
  bytes_ += bytes;
  files_[name] = File{std::move(keys), bytes, 0, ++tick_};
}

void PrefixDisk::remove(const std::string& name) {
  std::error_code ec;
  fs::remove(dir_ / name, ec);
  auto it = files_.find(name);
  if (it == files_.end()) return;
  for (const BlockKey& k : it->second.keys) {
    if (auto w = where_.find(k); w != where_.end() && w->second == name) where_.erase(w);
  }
  bytes_ -= it->second.bytes;
  files_.erase(it);
}

void PrefixDisk::reject(const std::string& name) {
  remove(name);
  ++rejected_;
}

Result<Segment> PrefixDisk::load(const BlockKey& key) {
  auto w = where_.find(key);
  if (w == where_.end()) return Error{Errc::not_found, "no prefix cache file holds this block"};
  const std::string name = w->second;
  auto data = read_file(dir_ / name, UINT64_MAX);
  auto header = data ? decode_header(*data, layout_) : Result<Header>(data.error());
  auto fail = [&](std::string why) -> Result<Segment> {
    reject(name);
    return Error{Errc::parse, fmt::format("prefix cache file {} removed: {}", (dir_ / name).string(), why)};
  };
  if (!header) return fail(header.error().message);
  if (data->size() != header->header_bytes + header->payload_bytes) return fail("size does not match the header");
  const auto payload = std::span<const std::byte>(*data).subspan(header->header_bytes);
  if (checksum64(payload) != header->payload_checksum) return fail("payload checksum");
  Segment s;
  s.parent = header->parent;
  s.keys = std::move(header->keys);
  s.tokens.resize(header->token_count);
  std::memcpy(s.tokens.data(), payload.data(), s.tokens.size() * 4);
  if (chain_keys(s.tokens, layout_.block_size, s.parent) != s.keys) return fail("chain keys do not match the tokens");
  s.blocks.assign(payload.begin() + s.tokens.size() * 4, payload.end());
  File& f = files_.at(name);
  ++f.hits;
  f.used = ++tick_;
  return s;
}

Result<void> PrefixDisk::write(const Segment& s) {
  const auto n = s.keys.size();
  assert(n > 0 && s.tokens.size() == n * layout_.block_size && s.blocks.size() == n * layout_.block_bytes);
  Writer payload;
  payload.put_bytes(s.tokens.data(), s.tokens.size() * 4);
  payload.put_bytes(s.blocks.data(), s.blocks.size());
  const auto header = encode_header(s, layout_, payload.out.size(), checksum64(payload.out));
  const uint64_t bytes = header.size() + payload.out.size();
  if (bytes > max_bytes_) return {};
  const std::string name = s.keys.front().hex() + kSuffix;
  remove(name);  // a file of the same name can only be an older copy of the same blocks
  const fs::path tmp = dir_ / fmt::format("{}.tmp.{}.{}", name, ::getpid(), ++tmp_counter_);
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(header.data()), static_cast<std::streamsize>(header.size()));
    f.write(reinterpret_cast<const char*>(payload.out.data()), static_cast<std::streamsize>(payload.out.size()));
    f.close();
    if (!f) {
      std::error_code ec;
      fs::remove(tmp, ec);
      return Error{Errc::io, fmt::format("writing {}: {}", tmp.string(), std::strerror(errno))};
    }
  }
  std::error_code ec;
  fs::rename(tmp, dir_ / name, ec);
  if (ec) {
    fs::remove(tmp, ec);
    return Error{Errc::io, fmt::format("renaming {} into place: {}", tmp.string(), ec.message())};
  }
  add(name, s.keys, bytes);
  evict_to_budget(name);
  return {};
}

// Value of a file = hits × tokens saved / bytes; the lowest goes first, the least recently used among equals.
void PrefixDisk::evict_to_budget(const std::string& keep) {
  while (bytes_ > max_bytes_) {
    const std::string* victim = nullptr;
    double victim_value = 0;
    uint64_t victim_used = 0;
    for (const auto& [name, f] : files_) {
      if (name == keep) continue;
      const double value = double(f.hits) * double(f.keys.size() * layout_.block_size) / double(f.bytes);
      if (!victim || value < victim_value || (value == victim_value && f.used < victim_used)) {
        victim = &name;
        victim_value = value;
        victim_used = f.used;
      }
    }
    if (!victim) return;
    remove(std::string(*victim));
    ++evictions_;
  }
}

void PrefixDisk::clear() {
  while (!files_.empty()) remove(std::string(files_.begin()->first));
}

std::optional<fs::path> PrefixDisk::path_of(const BlockKey& key) const {
  auto w = where_.find(key);
  if (w == where_.end()) return std::nullopt;
  return dir_ / w->second;
}

}  // namespace mach::engine
