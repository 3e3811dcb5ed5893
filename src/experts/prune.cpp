#include "experts/prune.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <fstream>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "experts/checksum.hpp"
#include "experts/file_write.hpp"
#include "experts/sidecar.hpp"
#include "model/config.hpp"
#include "model/safetensors.hpp"
#include "model/safetensors_writer.hpp"

namespace mach::experts {
namespace fs = std::filesystem;
namespace {

constexpr const char* kStateDir = ".prune";

struct Job {
  const PruneOptions& options;
  const model::Checkpoint& ckpt;
  const model::ModelConfig& source_config;
  SidecarLayout slab;  // output layout without layers: tensors, slab_bytes, quant, fingerprint
  std::map<uint32_t, std::vector<uint32_t>> kept;  // MoE layer -> source ids, every MoE layer present
  fs::path partial;
};

std::string layer_prefix(uint32_t l) { return fmt::format("model.layers.{}.", l); }

bool is_fused(const model::Checkpoint& ck, uint32_t l) { return ck.contains(layer_prefix(l) + "mlp.experts.gate_up_proj"); }
bool is_moe_layer(const model::Checkpoint& ck, uint32_t l) {
  return is_fused(ck, l) || ck.contains(layer_prefix(l) + "mlp.experts.0.gate_proj.weight");
}

// A [rows, cols] matrix as f32: the whole tensor `name` of shape `dims`, or slice `index` of its first
// dimension when `index` is set (fused expert stacks).
Result<std::vector<float>> read_matrix(const model::Checkpoint& ck, const std::string& name,
                                       const std::vector<uint64_t>& dims, std::optional<uint32_t> index) {
  auto ref = ck.find(name);
  if (!ref) return ref.error();
  const model::TensorInfo& info = *ref->info;
  if (info.shape != dims)
    return Error{Errc::parse, fmt::format("{}: tensor '{}' has shape [{}], expected [{}]", ck.source(), name,
                                          fmt::join(info.shape, ", "), fmt::join(dims, ", "))};
  if (!index) return ref->file->to_f32(info);
  model::TensorInfo slice = info;
  slice.shape.erase(slice.shape.begin());
  slice.nbytes = info.nbytes / dims[0];
  slice.offset = info.offset + *index * slice.nbytes;
  return ref->file->to_f32(slice);
}

// Expert `e`'s matrices as f32: gate_up [2I, H] (gate rows, then up rows) and down [H, I].
Result<std::pair<std::vector<float>, std::vector<float>>> read_expert(const Job& job, uint32_t l, uint32_t e) {
  const auto& c = job.source_config;
  const uint64_t E = c.num_experts, H = c.hidden_size, I = c.moe_intermediate_size;
  const std::string p = layer_prefix(l);
  if (is_fused(job.ckpt, l)) {
    auto gu = read_matrix(job.ckpt, p + "mlp.experts.gate_up_proj", {E, 2 * I, H}, e);
    if (!gu) return gu.error();
    auto dn = read_matrix(job.ckpt, p + "mlp.experts.down_proj", {E, H, I}, e);
    if (!dn) return dn.error();
    return std::pair{std::move(gu).value(), std::move(dn).value()};
  }
  const std::string ep = fmt::format("{}mlp.experts.{}.", p, e);
  auto g = read_matrix(job.ckpt, ep + "gate_proj.weight", {I, H}, std::nullopt);
  if (!g) return g.error();
  auto u = read_matrix(job.ckpt, ep + "up_proj.weight", {I, H}, std::nullopt);
  if (!u) return u.error();
  auto d = read_matrix(job.ckpt, ep + "down_proj.weight", {H, I}, std::nullopt);
  if (!d) return d.error();
  std::vector<float> gu = std::move(g).value();
  gu.insert(gu.end(), u->begin(), u->end());
  return std::pair{std::move(gu), std::move(d).value()};
}

fs::path manifest_path(const Job& job, uint32_t l) {
  return job.partial / kStateDir / fmt::format("layer_{:02}.json", l);
}
fs::path layer_path(const Job& job, uint32_t l) { return job.partial / kSidecarDir / layer_file_name(l); }

// The layer as a previous run finished it, when its manifest matches this run and its file its checksums.
std::optional<SidecarLayer> completed_layer(const Job& job, uint32_t l) {
  auto text = read_text(manifest_path(job, l));
  if (!text) return std::nullopt;
  const auto j = nlohmann::json::parse(*text, nullptr, false);
  if (j.is_discarded()) return std::nullopt;
  auto layout = layout_from_json(j, manifest_path(job, l).string());
  if (!layout || layout->fingerprint != job.slab.fingerprint || layout->slab_bytes != job.slab.slab_bytes ||
      layout->quant != job.slab.quant || layout->layers.size() != 1)
    return std::nullopt;
  SidecarLayer layer = layout->layers[0];
  const auto& ids = job.kept.at(l);
  if (layer.layer != l || layer.experts.size() != ids.size()) return std::nullopt;
  std::ifstream in(layer_path(job, l), std::ios::binary);
  std::error_code ec;
  if (!in || fs::file_size(layer_path(job, l), ec) != layer.file_bytes || ec) return std::nullopt;
  std::vector<std::byte> slab(job.slab.slab_bytes);
  for (size_t i = 0; i < ids.size(); ++i) {
    const SidecarExpert& e = layer.experts[i];
    in.seekg(static_cast<std::streamoff>(e.offset));
    in.read(reinterpret_cast<char*>(slab.data()), static_cast<std::streamsize>(slab.size()));
    if (!in || e.source_id != ids[i] || xxh64(slab) != e.checksum) return std::nullopt;
  }
  return layer;
}

// Source expert `id` as one slab: its matrices quantized at their offsets, zeros elsewhere.
Result<void> build_slab(const Job& job, uint32_t l, uint32_t id, std::vector<std::byte>& slab) {
  auto w = read_expert(job, l, id);
  if (!w) return w.error();
  slab.assign(job.slab.slab_bytes, std::byte{0});
  const std::vector<float>* parts[] = {&w->first, &w->second};
  for (size_t t = 0; t < job.slab.tensors.size(); ++t) {
    const SlabTensor& st = job.slab.tensors[t];
    const auto q = ops::quantize(job.slab.quant, *parts[t], st.rows, st.cols);
    assert(q.size() == st.bytes);
    std::memcpy(slab.data() + st.offset, q.data(), q.size());
  }
  return {};
}

// Builds the slabs of ids[first, first + slabs.size()) on one thread each (quantizing is the slow part).
Result<void> build_batch(const Job& job, uint32_t l, size_t first, std::vector<std::vector<std::byte>>& slabs) {
  const auto& ids = job.kept.at(l);
  std::vector<Result<void>> results(slabs.size());
  std::vector<std::thread> threads;
  for (size_t k = 1; k < slabs.size(); ++k)
    threads.emplace_back([&, k] { results[k] = build_slab(job, l, ids[first + k], slabs[k]); });
  results[0] = build_slab(job, l, ids[first], slabs[0]);
  for (auto& t : threads) t.join();
  for (auto& r : results)
    if (!r) return r;
  return {};
}

Result<SidecarLayer> write_layer(const Job& job, uint32_t l) {
  const auto& ids = job.kept.at(l);
  SidecarLayer layer{l, layer_file_name(l), ids.size() * job.slab.slab_bytes, job.source_config.num_experts, {}};
  const fs::path path = layer_path(job, l), tmp = path.string() + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Error{Errc::io, fmt::format("cannot create {}: {}", tmp.string(), std::strerror(errno))};
  const size_t threads = job.options.threads ? job.options.threads : std::max(1u, std::thread::hardware_concurrency());
  Result<void> r;
  for (size_t first = 0; first < ids.size() && r; first += threads) {
    std::vector<std::vector<std::byte>> slabs(std::min(threads, ids.size() - first));
    r = build_batch(job, l, first, slabs);
    for (size_t k = 0; k < slabs.size() && r; ++k) {
      const size_t i = first + k;
      layer.experts.push_back({ids[i], i * job.slab.slab_bytes, job.slab.slab_bytes, xxh64(slabs[k])});
      r = write_all(fd, slabs[k], tmp);
    }
  }
  if (r && ::fsync(fd) != 0) r = Error{Errc::io, fmt::format("fsync {}: {}", tmp.string(), std::strerror(errno))};
  ::close(fd);
  if (!r) return r.error();
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) return Error{Errc::io, fmt::format("cannot rename {}: {}", tmp.string(), ec.message())};
  SidecarLayout manifest = job.slab;
  manifest.layers = {layer};
  if (auto w = write_text_atomic(manifest_path(job, l), layout_to_json(manifest).dump(1)); !w) return w.error();
  return layer;
}

// Every tensor but the routed experts, in its source dtype; router rows of dropped experts removed.
Result<uint64_t> write_non_experts(const Job& job, const fs::path& path) {
  std::vector<model::TensorToWrite> out;
  std::deque<std::vector<std::byte>> owned;
  uint64_t bytes = 0;
  for (const auto& name : job.ckpt.tensor_names()) {
    auto ref = job.ckpt.find(name);
    if (!ref) return ref.error();
    const model::TensorInfo& info = *ref->info;
    model::TensorToWrite t{name, info.dtype, info.shape, ref->file->data(info)};
    bool skip = false;
    for (const auto& [l, ids] : job.kept) {
      const std::string p = layer_prefix(l);
      if (name.rfind(p + "mlp.experts.", 0) == 0) skip = true;
      if (name == p + "mlp.gate.weight" && ids.size() != job.source_config.num_experts) {
        if (info.shape.size() != 2 || info.shape[0] != job.source_config.num_experts)
          return Error{Errc::parse, fmt::format("{}: router '{}' is not [{}, hidden]", job.ckpt.source(), name,
                                                job.source_config.num_experts)};
        const uint64_t row = t.data.size() / info.shape[0];
        auto& rows = owned.emplace_back();
        for (uint32_t id : ids) rows.insert(rows.end(), t.data.begin() + id * row, t.data.begin() + (id + 1) * row);
        t.shape[0] = ids.size();
        t.data = rows;
      }
    }
    if (skip) continue;
    bytes += t.data.size();
    out.push_back(std::move(t));
  }
  const fs::path tmp = path.string() + ".tmp";
  if (auto r = model::write_safetensors(tmp, out, {{"format", "pt"}}); !r) return r.error();
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) return Error{Errc::io, fmt::format("cannot rename {}: {}", tmp.string(), ec.message())};
  return bytes;
}

// The kept source ids per MoE layer (all of them without a plan), checked for consistency.
Result<std::map<uint32_t, std::vector<uint32_t>>> kept_experts(const PruneOptions& o, const model::Checkpoint& ck,
                                                               const model::ModelConfig& c) {
  std::map<uint32_t, std::vector<uint32_t>> kept;
  std::vector<uint32_t> all(c.num_experts);
  for (uint32_t e = 0; e < c.num_experts; ++e) all[e] = e;
  for (uint32_t l = 0; l < c.num_layers; ++l)
    if (is_moe_layer(ck, l)) kept[l] = all;
  if (kept.empty()) return Error{Errc::parse, fmt::format("{}: no expert tensors found", ck.source())};
  if (!o.keep) return kept;
  for (const auto& [l, ids] : *o.keep) {
    if (!kept.count(l)) return Error{Errc::invalid_argument, fmt::format("--keep: layer {} has no experts", l)};
    if (ids.empty() || ids.back() >= c.num_experts)
      return Error{Errc::invalid_argument, fmt::format("--keep: layer {}: expert ids must be in 0..{} and not empty", l,
                                                       c.num_experts - 1)};
    kept[l] = ids;
  }
  const size_t n = kept.begin()->second.size();
  for (const auto& [l, ids] : kept) {
    if (ids.size() != n)
      return Error{Errc::invalid_argument,
                   fmt::format("--keep: layer {} keeps {} experts and layer {} keeps {}; every MoE layer must keep the "
                               "same number (config.json has one expert count)", kept.begin()->first, n, l, ids.size())};
  }
  if (n < c.num_experts_per_tok)
    return Error{Errc::invalid_argument, fmt::format("--keep: {} experts per layer is fewer than num_experts_per_tok {}",
                                                     n, c.num_experts_per_tok)};
  return kept;
}

bool is_tokenizer_file(const std::string& name) {
  static const std::set<std::string> names = {"generation_config.json", "special_tokens_map.json", "vocab.json",
                                              "merges.txt", "added_tokens.json"};
  return names.count(name) || name.rfind("tokenizer", 0) == 0 || name.rfind("chat_template", 0) == 0;
}

// OUT.partial/.prune/run.json names the run; a partial directory of another run is refused, not mixed.
Result<void> claim_partial(const Job& job, const fs::path& source) {
  std::error_code ec;
  const fs::path canonical = fs::weakly_canonical(source, ec);
  const nlohmann::json run = {{"source", (ec ? source : canonical).string()},
                              {"fingerprint", job.slab.fingerprint},
                              {"quant", std::string(ops::weight_type_name(job.slab.quant))},
                              {"keep", job.kept}};
  const fs::path state = job.partial / kStateDir, run_path = state / "run.json";
  fs::create_directories(state, ec);
  if (!ec) fs::create_directories(job.partial / kSidecarDir, ec);
  if (ec) return Error{Errc::io, fmt::format("cannot create {}: {}", job.partial.string(), ec.message())};
  if (auto text = read_text(run_path)) {
    const auto old = nlohmann::json::parse(*text, nullptr, false);
    if (old != run)
      return Error{Errc::invalid_argument, fmt::format("{} holds an unfinished prune of another source, quant or keep "
                                                       "plan; delete it or rerun with the same arguments",
                                                       job.partial.string())};
    return {};
  }
  return write_text_atomic(run_path, run.dump(1));
}

// The source's config.json with config.json's expert count set to the keep plan's.
Result<nlohmann::json> output_config(const fs::path& source, uint32_t source_experts, uint32_t kept) {
  auto text = read_text(source / "config.json");
  if (!text) return text.error();
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
  if (j.is_discarded()) return Error{Errc::parse, fmt::format("{}/config.json: not valid JSON", source.string())};
  if (kept != source_experts) {
    bool found = false;
    for (const char* key : {"num_experts", "num_local_experts"})
      if (j.contains(key)) j[key] = kept, found = true;
    if (!found) j["num_experts"] = kept;
  }
  return j;
}

// Writes (or keeps, when a previous run finished them) every MoE layer file; returns the layout.
Result<SidecarLayout> write_layers(const Job& job, PruneSummary& summary) {
  SidecarLayout layout = job.slab;
  summary.moe_layers = static_cast<uint32_t>(job.kept.size());
  for (const auto& [l, ids] : job.kept) {
    const auto start = std::chrono::steady_clock::now();
    PruneProgress p{l, static_cast<uint32_t>(layout.layers.size() + 1), summary.moe_layers,
                    static_cast<uint32_t>(ids.size()), 0, false, 0};
    if (auto done = completed_layer(job, l)) {
      layout.layers.push_back(std::move(*done));
      p.resumed = true;
      ++summary.resumed_layers;
    } else {
      auto layer = write_layer(job, l);
      if (!layer) return layer.error();
      layout.layers.push_back(std::move(layer).value());
    }
    p.bytes = layout.layers.back().file_bytes;
    p.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    summary.experts += ids.size();
    summary.expert_bytes += p.bytes;
    if (job.options.on_layer) job.options.on_layer(p);
    if (job.options.continue_after && !job.options.continue_after(l))
      return Error{Errc::cancelled, fmt::format("prune stopped after layer {}; rerun to resume", l)};
  }
  return layout;
}

// layout.json, config.json and the tokenizer files, then OUT.partial becomes OUT.
Result<void> finish(const Job& job, const SidecarLayout& layout, const nlohmann::json& config) {
  if (auto r = write_text_atomic(job.partial / kSidecarDir / kLayoutFile, layout_to_json(layout).dump(1)); !r) return r;
  if (auto r = write_text_atomic(job.partial / "config.json", config.dump(2) + "\n"); !r) return r;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(job.options.source, ec)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file(ec) || !is_tokenizer_file(name)) continue;
    fs::copy_file(entry.path(), job.partial / name, fs::copy_options::overwrite_existing, ec);
    if (ec) return Error{Errc::io, fmt::format("cannot copy {}: {}", entry.path().string(), ec.message())};
  }
  if (ec) return Error{Errc::io, fmt::format("cannot list {}: {}", job.options.source.string(), ec.message())};
  fs::remove_all(job.partial / kStateDir, ec);
  fs::rename(job.partial, job.options.output, ec);
  if (ec)
    return Error{Errc::io, fmt::format("cannot rename {} to {}: {}", job.partial.string(),
                                       job.options.output.string(), ec.message())};
  return {};
}

}  // namespace

Result<KeepPlan> parse_keep_plan(const fs::path& path, const char* flag) {
  std::ifstream in(path);
  if (!in) return Error{Errc::not_found, fmt::format("{} {}: cannot open", flag, path.string())};
  KeepPlan plan;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const auto j = nlohmann::json::parse(line, nullptr, false);
    const std::string where = fmt::format("{} {}:{}", flag, path.string(), n);
    if (j.is_discarded() || !j.is_object() || !j.contains("layer") || !j["layer"].is_number_unsigned() ||
        !j.contains("experts") || !j["experts"].is_array())
      return Error{Errc::parse, fmt::format("{}: expected {{\"layer\": L, \"experts\": [ids]}}", where)};
    std::vector<uint32_t> ids;
    for (const auto& e : j["experts"]) {
      if (!e.is_number_unsigned() || e.get<uint64_t>() > UINT32_MAX)
        return Error{Errc::parse, fmt::format("{}: expert ids must be non-negative integers", where)};
      ids.push_back(e.get<uint32_t>());
    }
    std::sort(ids.begin(), ids.end());
    if (std::adjacent_find(ids.begin(), ids.end()) != ids.end())
      return Error{Errc::parse, fmt::format("{}: repeated expert id", where)};
    const uint64_t layer = j["layer"].get<uint64_t>();
    if (layer > UINT32_MAX || !plan.emplace(static_cast<uint32_t>(layer), std::move(ids)).second)
      return Error{Errc::parse, fmt::format("{}: layer {} repeated or out of range", where, layer)};
  }
  return plan;
}

Result<PruneSummary> prune(const PruneOptions& options) {
  PruneOptions o = options;
  if (!o.output.has_filename()) o.output = o.output.parent_path();  // "out/" names "out", not "out/.partial"
  auto source_config = model::load_model_config(o.source);
  if (!source_config) return source_config.error();
  if (source_config->family != model::Family::qwen3_moe)
    return Error{Errc::unsupported, fmt::format("mach prune supports qwen3_moe so far; {} is not yet supported",
                                                source_config->model_type)};
  std::error_code ec;
  if (fs::exists(o.output, ec))
    return Error{Errc::invalid_argument, fmt::format("--output {} already exists; remove it or pick another path",
                                                     o.output.string())};
  auto ckpt = model::Checkpoint::open(o.source);
  if (!ckpt) return ckpt.error();
  auto kept = kept_experts(o, *ckpt, *source_config);
  if (!kept) return kept.error();
  auto config_json = output_config(o.source, source_config->num_experts,
                                   static_cast<uint32_t>(kept->begin()->second.size()));
  if (!config_json) return config_json.error();
  auto out_config = model::parse_model_config(*config_json);
  if (!out_config) return out_config.error();
  const auto& c = *out_config;
  for (auto [rows, cols] : {std::pair{uint64_t{2} * c.moe_intermediate_size, uint64_t{c.hidden_size}},
                            std::pair{uint64_t{c.hidden_size}, uint64_t{c.moe_intermediate_size}}})
    if (!ops::shape_fits(o.quant, rows, cols))
      return Error{Errc::unsupported, fmt::format("--quant {} needs expert input widths that are multiples of {}; this "
                                                  "model has {}", ops::weight_type_name(o.quant),
                                                  ops::group_size(o.quant), cols)};

  Job job{o, *ckpt, *source_config, qwen3_moe_slab_layout(c, o.quant), std::move(kept).value(),
          fs::path(o.output.string() + ".partial")};
  if (auto r = claim_partial(job, o.source); !r) return r.error();
  PruneSummary summary;
  const fs::path weights = job.partial / "model.safetensors";
  if (!fs::exists(weights, ec)) {
    auto bytes = write_non_experts(job, weights);
    if (!bytes) return bytes.error();
  }
  summary.non_expert_bytes = fs::file_size(weights, ec);
  auto layout = write_layers(job, summary);
  if (!layout) return layout.error();
  if (auto r = finish(job, *layout, *config_json); !r) return r.error();
  return summary;
}

}  // namespace mach::experts
