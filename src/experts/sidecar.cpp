#include "experts/sidecar.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "experts/checksum.hpp"
#include "runtime/direct_file.hpp"

namespace mach::experts {
namespace fs = std::filesystem;
namespace {

constexpr const char* kFormatName = "mach.expert_sidecar";

uint64_t round_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

[[noreturn]] void fail(const std::string& message) { throw Exception(Errc::parse, message); }

const nlohmann::json& member(const nlohmann::json& obj, const char* key, const std::string& where) {
  if (!obj.is_object()) fail(fmt::format("{}: expected a JSON object", where));
  auto it = obj.find(key);
  if (it == obj.end()) fail(fmt::format("{}: missing \"{}\"", where, key));
  return *it;
}

uint64_t get_u64(const nlohmann::json& obj, const char* key, const std::string& where) {
  const auto& v = member(obj, key, where);
  if (!v.is_number_unsigned()) fail(fmt::format("{}: \"{}\" must be a non-negative integer", where, key));
  return v.get<uint64_t>();
}

uint32_t get_u32(const nlohmann::json& obj, const char* key, const std::string& where) {
  const uint64_t v = get_u64(obj, key, where);
  if (v > UINT32_MAX) fail(fmt::format("{}: \"{}\" = {} is too large", where, key, v));
  return static_cast<uint32_t>(v);
}

std::string get_string(const nlohmann::json& obj, const char* key, const std::string& where) {
  const auto& v = member(obj, key, where);
  if (!v.is_string()) fail(fmt::format("{}: \"{}\" must be a string", where, key));
  return v.get<std::string>();
}

const nlohmann::json& get_array(const nlohmann::json& obj, const char* key, const std::string& where) {
  const auto& v = member(obj, key, where);
  if (!v.is_array()) fail(fmt::format("{}: \"{}\" must be an array", where, key));
  return v;
}

void check_tensors(const SidecarLayout& l, const std::string& src) {
  if (l.tensors.empty()) fail(fmt::format("{}: \"tensors\" is empty", src));
  uint64_t end = 0;
  for (const auto& t : l.tensors) {
    const std::string where = fmt::format("{}: tensor '{}'", src, t.name);
    if (!ops::shape_fits(l.quant, t.rows, t.cols) || t.rows == 0)
      fail(fmt::format("{}: shape [{}, {}] cannot be stored as {}", where, t.rows, t.cols,
                       ops::weight_type_name(l.quant)));
    if (t.bytes != ops::weight_bytes(l.quant, t.rows, t.cols))
      fail(fmt::format("{}: bytes {} != {} for [{}, {}] {}", where, t.bytes,
                       ops::weight_bytes(l.quant, t.rows, t.cols), t.rows, t.cols, ops::weight_type_name(l.quant)));
    if (t.offset % kTensorAlignment != 0)
      fail(fmt::format("{}: offset {} is not a multiple of {}", where, t.offset, kTensorAlignment));
    if (t.offset < end) fail(fmt::format("{}: offset {} overlaps the previous tensor", where, t.offset));
    if (t.offset > l.slab_bytes || t.bytes > l.slab_bytes - t.offset)
      fail(fmt::format("{}: offset {} + {} bytes runs past slab_bytes {}", where, t.offset, t.bytes, l.slab_bytes));
    end = t.offset + t.bytes;
  }
}

void check_layer(const SidecarLayout& l, const SidecarLayer& layer, const std::string& src) {
  const std::string where = fmt::format("{}: layer {}", src, layer.layer);
  if (layer.file != layer_file_name(layer.layer))
    fail(fmt::format("{}: file \"{}\" should be \"{}\"", where, layer.file, layer_file_name(layer.layer)));
  if (layer.experts.empty()) fail(fmt::format("{}: no experts", where));
  if (layer.experts.size() > layer.source_experts)
    fail(fmt::format("{}: {} experts but source_experts is {}", where, layer.experts.size(), layer.source_experts));
  std::vector<bool> seen(layer.source_experts);
  uint64_t end = 0;
  for (size_t i = 0; i < layer.experts.size(); ++i) {
    const auto& e = layer.experts[i];
    const std::string ew = fmt::format("{} expert {}", where, i);
    if (e.source_id >= layer.source_experts || seen[e.source_id])
      fail(fmt::format("{}: source_id {} is out of range or repeated", ew, e.source_id));
    seen[e.source_id] = true;
    if (e.offset % kSlabAlignment != 0)
      fail(fmt::format("{}: offset {} is not a multiple of {}", ew, e.offset, kSlabAlignment));
    if (e.bytes != l.slab_bytes) fail(fmt::format("{}: bytes {} != slab_bytes {}", ew, e.bytes, l.slab_bytes));
    if (e.offset < end) fail(fmt::format("{}: offset {} overlaps the previous expert", ew, e.offset));
    // Compared without adding, so that offsets near 2^64 cannot wrap around.
    if (e.offset > layer.file_bytes || e.bytes > layer.file_bytes - e.offset)
      fail(fmt::format("{}: slab at {} runs past file_bytes {}", ew, e.offset, layer.file_bytes));
    end = e.offset + e.bytes;
  }
}

}  // namespace

uint64_t SidecarLayout::expert_count() const {
  uint64_t n = 0;
  for (const auto& l : layers) n += l.experts.size();
  return n;
}

const SidecarLayer* SidecarLayout::find_layer(uint32_t layer) const {
  for (const auto& l : layers)
    if (l.layer == layer) return &l;
  return nullptr;
}

std::string layer_file_name(uint32_t layer) { return fmt::format("layer_{:02}.bin", layer); }

SidecarLayout qwen3_moe_slab_layout(const model::ModelConfig& c, ops::WeightType quant) {
  SidecarLayout l;
  l.model_type = c.model_type;
  l.fingerprint = model_fingerprint(c, quant);
  l.quant = quant;
  const uint32_t H = c.hidden_size, I = c.moe_intermediate_size;
  const uint64_t gu = ops::weight_bytes(quant, 2ull * I, H);
  l.tensors = {{"gate_up", 2 * I, H, 0, gu},
               {"down", H, I, round_up(gu, kTensorAlignment), ops::weight_bytes(quant, H, I)}};
  l.slab_bytes = round_up(l.tensors[1].offset + l.tensors[1].bytes, kSlabAlignment);
  return l;
}

std::string model_fingerprint(const model::ModelConfig& c, ops::WeightType quant) {
  const nlohmann::json j = {{"model_type", c.model_type},
                            {"num_layers", c.num_layers},
                            {"hidden_size", c.hidden_size},
                            {"moe_intermediate_size", c.moe_intermediate_size},
                            {"num_experts", c.num_experts},
                            {"num_experts_per_tok", c.num_experts_per_tok},
                            {"quant", std::string(ops::weight_type_name(quant))}};
  const std::string text = j.dump();  // keys sorted: a stable spelling
  return hex64(xxh64(std::as_bytes(std::span(text))));
}

nlohmann::ordered_json layout_to_json(const SidecarLayout& l) {
  using Json = nlohmann::ordered_json;
  Json tensors = Json::array();
  for (const auto& t : l.tensors)
    tensors.push_back({{"name", t.name}, {"rows", t.rows}, {"cols", t.cols}, {"offset", t.offset}, {"bytes", t.bytes}});
  Json layers = Json::array();
  for (const auto& layer : l.layers) {
    Json experts = Json::array();
    for (const auto& e : layer.experts)
      experts.push_back({{"source_id", e.source_id}, {"offset", e.offset}, {"bytes", e.bytes},
                         {"xxh64", hex64(e.checksum)}});
    layers.push_back({{"layer", layer.layer}, {"file", layer.file}, {"file_bytes", layer.file_bytes},
                      {"source_experts", layer.source_experts}, {"experts", std::move(experts)}});
  }
  return Json{{"format", kFormatName},
          {"version", l.version},
          {"model_type", l.model_type},
          {"fingerprint", l.fingerprint},
          {"quant", std::string(ops::weight_type_name(l.quant))},
          {"checksum", "xxh64"},
          {"slab_alignment", kSlabAlignment},
          {"slab_bytes", l.slab_bytes},
          {"tensors", std::move(tensors)},
          {"layers", std::move(layers)}};
}

Result<SidecarLayout> layout_from_json(const nlohmann::json& j, const std::string& src) {
  try {
    SidecarLayout l;
    if (get_string(j, "format", src) != kFormatName)
      fail(fmt::format("{}: \"format\" is not \"{}\"", src, kFormatName));
    l.version = get_u32(j, "version", src);
    if (l.version != kSidecarVersion)
      fail(fmt::format("{}: format version {} is not supported (this build reads version {}); rerun mach prune",
                       src, l.version, kSidecarVersion));
    l.model_type = get_string(j, "model_type", src);
    l.fingerprint = get_string(j, "fingerprint", src);
    const std::string quant = get_string(j, "quant", src);
    const auto q = ops::parse_weight_type(quant);
    if (!q) fail(fmt::format("{}: unknown quant \"{}\"", src, quant));
    l.quant = *q;
    if (get_string(j, "checksum", src) != "xxh64") fail(fmt::format("{}: \"checksum\" must be \"xxh64\"", src));
    if (get_u64(j, "slab_alignment", src) != kSlabAlignment)
      fail(fmt::format("{}: \"slab_alignment\" must be {}", src, kSlabAlignment));
    l.slab_bytes = get_u64(j, "slab_bytes", src);
    if (l.slab_bytes == 0 || l.slab_bytes % kSlabAlignment != 0)
      fail(fmt::format("{}: slab_bytes {} is not a positive multiple of {}", src, l.slab_bytes, kSlabAlignment));
    for (const auto& t : get_array(j, "tensors", src)) {
      const std::string where = fmt::format("{}: tensors[{}]", src, l.tensors.size());
      l.tensors.push_back({get_string(t, "name", where), get_u32(t, "rows", where), get_u32(t, "cols", where),
                           get_u64(t, "offset", where), get_u64(t, "bytes", where)});
    }
    check_tensors(l, src);
    for (const auto& lj : get_array(j, "layers", src)) {
      SidecarLayer layer;
      const std::string where = fmt::format("{}: layers[{}]", src, l.layers.size());
      layer.layer = get_u32(lj, "layer", where);
      if (!l.layers.empty() && layer.layer <= l.layers.back().layer)
        fail(fmt::format("{}: layer {} is not in ascending order", where, layer.layer));
      layer.file = get_string(lj, "file", where);
      layer.file_bytes = get_u64(lj, "file_bytes", where);
      layer.source_experts = get_u32(lj, "source_experts", where);
      for (const auto& ej : get_array(lj, "experts", where)) {
        const std::string ew = fmt::format("{}: layer {} expert {}", src, layer.layer, layer.experts.size());
        const auto sum = parse_hex64(get_string(ej, "xxh64", ew));
        if (!sum) fail(fmt::format("{}: \"xxh64\" must be 16 hex digits", ew));
        layer.experts.push_back({get_u32(ej, "source_id", ew), get_u64(ej, "offset", ew), get_u64(ej, "bytes", ew), *sum});
      }
      check_layer(l, layer, src);
      l.layers.push_back(std::move(layer));
    }
    if (l.layers.empty()) fail(fmt::format("{}: no layers", src));
    return l;
  } catch (const Exception& e) {
    return e.error();
  }
}

Result<Sidecar> Sidecar::open(const fs::path& dir) {
  const fs::path path = dir / kLayoutFile;
  std::ifstream in(path);
  if (!in) return Error{Errc::not_found, fmt::format("{}: cannot open; is this an engine-layout checkpoint made by "
                                                     "mach prune?", path.string())};
  nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded()) return Error{Errc::parse, fmt::format("{}: not valid JSON; rerun mach prune", path.string())};
  auto layout = layout_from_json(j, path.string());
  if (!layout) return layout.error();
  for (const auto& layer : layout->layers) {
    const fs::path file = dir / layer.file;
    std::error_code ec;
    const uint64_t size = fs::file_size(file, ec);
    if (ec) return Error{Errc::not_found, fmt::format("{}: layer {}: {}", file.string(), layer.layer, ec.message())};
    if (size != layer.file_bytes)
      return Error{Errc::parse, fmt::format("{}: layer {}: {} bytes, layout.json says {} (truncated or overwritten; "
                                            "rerun mach prune)", file.string(), layer.layer, size, layer.file_bytes)};
  }
  return Sidecar(dir, std::move(layout).value());
}

Result<runtime::IoBuffer> Sidecar::read_expert(uint32_t layer_number, uint32_t index) const {
  const SidecarLayer* layer = layout_.find_layer(layer_number);
  if (!layer || index >= layer->experts.size())
    return Error{Errc::not_found, fmt::format("{}: no expert {} in layer {}", dir_.string(), index, layer_number)};
  const SidecarExpert& e = layer->experts[index];
  const fs::path path = dir_ / layer->file;
  auto file = runtime::DirectFile::open(path.string());
  if (!file) return file.error();
  runtime::IoBuffer buf(e.bytes);
  uint64_t done = 0;
  while (done < e.bytes) {
    const ssize_t n = ::pread(file->fd(), buf.data() + done, e.bytes - done, static_cast<off_t>(e.offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      return Error{Errc::io, fmt::format("{}: layer {} expert {}: read failed: {}", path.string(), layer_number, index,
                                         std::strerror(errno))};
    if (n == 0)
      return Error{Errc::io, fmt::format("{}: layer {} expert {}: file ends before the slab does (truncated; rerun "
                                         "mach prune)", path.string(), layer_number, index)};
    done += static_cast<uint64_t>(n);
  }
  return buf;
}

Result<void> Sidecar::check_slab(uint32_t layer_number, uint32_t index, std::span<const std::byte> bytes) const {
  const SidecarLayer* layer = layout_.find_layer(layer_number);
  assert(layer && index < layer->experts.size());
  const uint64_t want = layer->experts[index].checksum, got = xxh64(bytes);
  if (got != want)
    return Error{Errc::io, fmt::format("{}: layer {} expert {}: checksum {} != {} in layout.json (corrupt; rerun mach "
                                       "prune)", (dir_ / layer->file).string(), layer_number, index, hex64(got),
                                       hex64(want))};
  return {};
}

Result<runtime::IoBuffer> Sidecar::read_verified(uint32_t layer_number, uint32_t index) const {
  auto buf = read_expert(layer_number, index);
  if (!buf) return buf.error();
  if (auto r = check_slab(layer_number, index, buf->span()); !r) return r.error();
  return buf;
}

Result<void> Sidecar::verify_expert(uint32_t layer_number, uint32_t index) const {
  auto buf = read_verified(layer_number, index);
  if (!buf) return buf.error();
  return {};
}

Result<void> Sidecar::verify_all() const {
  for (const auto& layer : layout_.layers)
    for (uint32_t i = 0; i < layer.experts.size(); ++i)
      if (auto r = verify_expert(layer.layer, i); !r) return r;
  return {};
}

ops::ExpertWeightsRef tensor_ref(const SidecarLayout& layout, size_t t, const gpu::Buffer* buffer, uint64_t base,
                                 uint32_t count) {
  assert(t < layout.tensors.size());
  const SlabTensor& st = layout.tensors[t];
  return {buffer, base + st.offset, layout.slab_bytes, count, layout.quant, st.rows, st.cols};
}

}  // namespace mach::experts
