#include "experts/check.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "experts/sidecar.hpp"
#include "model/config.hpp"
#include "model/safetensors.hpp"

namespace mach::experts {
namespace fs = std::filesystem;
namespace {

constexpr const char* kNotBuilt = "not built yet";

PathVerdict blocked(std::string path, std::string reason) { return {std::move(path), "blocked", std::move(reason)}; }

// The serving paths every family that runs shares (the server, speculative decoding, batching, the prefix
// cache); a family whose forward pass has not landed has none of them.
std::vector<PathVerdict> serving_paths(const model::ArchInfo& arch) {
  std::vector<PathVerdict> p;
  if (arch.status != model::SupportStatus::runs) {
    const std::string why = fmt::format("the {} forward pass is {}", arch.model_type, kNotBuilt);
    for (const char* path : {"openai_http", "specdec", "prefix_kv_reuse"}) p.push_back(blocked(path, why));
    if (arch.continuous_batching) p.push_back(blocked("continuous_batching", why));
    else p.push_back({"continuous_batching", "n/a", "the architecture runs one sequence per step"});
    return p;
  }
  p.push_back({"openai_http", "ok", "mach serve: the OpenAI API over HTTP/SSE"});
  p.push_back({"specdec", "ok", "draft-free n-gram speculation (--speculation, per request \"speculation\"), exact"});
  if (arch.continuous_batching)
    p.push_back({"continuous_batching", "ok", "sequences join and leave between steps (--max-batch)"});
  else
    p.push_back({"continuous_batching", "n/a", "the architecture runs one sequence per step"});
  p.push_back({"prefix_kv_reuse", "ok", "--prefix-cache: repeated prompt prefixes restore their KV (RAM, then disk)"});
  return p;
}

void sort_paths(std::vector<PathVerdict>& paths) {
  static const std::vector<std::string> order = {"openai_http", "expert_streaming", "resident_stacked", "specdec",
                                                 "continuous_batching", "prefix_kv_reuse"};
  std::sort(paths.begin(), paths.end(), [](const auto& a, const auto& b) {
    return std::find(order.begin(), order.end(), a.path) < std::find(order.begin(), order.end(), b.path);
  });
}

bool path_exists(const fs::path& p) {
  std::error_code ec;
  return fs::exists(p, ec);
}

bool is_expert_tensor(const std::string& name) { return name.find(".experts.") != std::string::npos; }

std::string detect_layout(const model::Checkpoint& ck) {
  bool fused = false, per_expert = false;
  for (const auto& name : ck.tensor_names()) {
    if (name.find(".experts.gate_up_proj") != std::string::npos) fused = true;
    if (name.find(".experts.0.") != std::string::npos) per_expert = true;
  }
  return fused ? "fused" : per_expert ? "per-expert" : "unknown";
}

uint64_t kv_bytes(const model::ModelConfig& c, uint64_t context) {
  uint64_t bytes = 0;
  for (uint32_t l = 0; l < c.num_layers; ++l) {
    const std::string_view type = c.layer_type(l);
    if (type == "linear_attention") continue;  // recurrent state, not KV
    const uint64_t tokens = type == "sliding_attention" && c.sliding_window ? std::min<uint64_t>(context, c.sliding_window)
                                                                           : context;
    bytes += 2 * tokens * c.kv_heads_of(l) * c.head_dim_of(l) * 2;  // K and V, f16
  }
  return bytes;
}

std::string verdict(uint64_t working_set, std::optional<uint64_t> gpu) {
  if (!gpu) return "unknown";
  if (working_set * 10 <= *gpu * 9) return "fits";
  return working_set <= *gpu ? "tight" : "wont_fit";
}

void add_memory(CheckReport& r, const CheckOptions& o, const model::ModelConfig& c, const model::Checkpoint* ck,
                const SidecarLayout* sidecar) {
  MemoryEstimate m;
  if (sidecar) {
    m.expert_bytes = sidecar->expert_bytes();
  } else {
    const uint64_t H = c.hidden_size, I = c.moe_intermediate_size;
    const uint64_t per_expert = ops::shape_fits(o.expert_quant, 2 * I, H) && ops::shape_fits(o.expert_quant, H, I)
                                    ? ops::weight_bytes(o.expert_quant, 2 * I, H) + ops::weight_bytes(o.expert_quant, H, I)
                                    : 3 * H * I * 2;
    m.expert_bytes = per_expert * c.num_experts * c.num_layers;
  }
  if (ck) {
    for (const auto& f : ck->files())
      for (const auto& t : f.tensors())
        if (!is_expert_tensor(t.name)) m.non_expert_bytes += t.nbytes;
  }
  m.kv_bytes = kv_bytes(c, o.context_length);
  const uint64_t base = m.non_expert_bytes + m.kv_bytes;
  if (o.expert_cache_gb) {
    m.mode = "streaming";
    m.working_set_bytes = base + std::min<uint64_t>(m.expert_bytes, static_cast<uint64_t>(*o.expert_cache_gb * (1ull << 30)));
    m.host_spare_bytes = o.host_spare_bytes;
    if (o.host_spare_bytes) m.host_tier_bytes = std::min(m.expert_bytes, *o.host_spare_bytes);
  } else {
    m.mode = "resident";
    m.working_set_bytes = base + m.expert_bytes;
  }
  m.gpu_bytes = o.gpu_memory_bytes;
  m.gpu_name = o.gpu_name;
  m.verdict = verdict(m.working_set_bytes, m.gpu_bytes);
  r.memory = m;
}

// expert_streaming for a family that runs: it reads experts from an engine layout's sidecar.
PathVerdict streaming_path(const CheckReport& r) {
  if (r.layout == "engine+sidecar")
    return r.sidecar == "valid" || r.sidecar == "verified"
               ? PathVerdict{"expert_streaming", "ok",
                             "mach generate --streaming reads the experts from the sidecar through a GPU bank of slots; "
                             "the sidecar is ready for it"}
               : blocked("expert_streaming", "the expert sidecar is invalid: " + r.sidecar);
  return {"expert_streaming", "needs_artifact",
          fmt::format("streaming reads experts from an expert sidecar: mach prune --source {} --output OUT", r.model)};
}

// resident_stacked for a family that runs, given what the directory holds.
PathVerdict resident_path(const CheckReport& r) {
  if (r.memory && r.memory->mode == "resident" && r.memory->verdict == "wont_fit")
    return blocked("resident_stacked", r.layout == "engine+sidecar"
                                           ? "every expert resident does not fit in GPU memory; use --streaming"
                                           : "every expert resident does not fit in GPU memory; try --quant q4, or "
                                             "mach prune and --streaming");
  if (r.layout == "engine+sidecar")
    return {"resident_stacked", "ok", "mach generate loads every expert of the sidecar onto the GPU"};
  if (r.layout == "none") return {"resident_stacked", "needs_artifact", "no model.safetensors in the directory"};
  if (r.layout == "unknown") return {"resident_stacked", "unknown", "no expert tensors recognised"};
  return {"resident_stacked", "ok", "mach generate loads every expert onto the GPU"};
}

void add_sidecar(CheckReport& r, const CheckOptions& o, const model::ModelConfig* c, std::optional<Sidecar>& out) {
  const fs::path dir = o.model / kSidecarDir;
  if (!path_exists(dir)) {
    r.sidecar = "absent";
    return;
  }
  auto s = Sidecar::open(dir);
  if (!s) {
    r.sidecar = s.error().message;
    r.problems.push_back(s.error().message);
    return;
  }
  if (c && s->layout().fingerprint != model_fingerprint(*c, s->layout().quant)) {
    r.sidecar = "fingerprint differs from config.json: the sidecar belongs to another model or quant";
    r.problems.push_back(fmt::format("{}: {}", dir.string(), r.sidecar));
    return;
  }
  for (const auto& layer : s->layout().layers) {
    if (c && (layer.layer >= c->num_layers || layer.experts.size() != c->num_experts)) {
      r.sidecar = fmt::format("layer {} has {} experts; config.json has {} layers of {} experts", layer.layer,
                              layer.experts.size(), c->num_layers, c->num_experts);
      r.problems.push_back(fmt::format("{}: {}", dir.string(), r.sidecar));
      return;
    }
  }
  r.sidecar = "valid";
  if (o.verify_checksums) {
    if (auto v = s->verify_all(); !v) {
      r.sidecar = v.error().message;
      r.problems.push_back(v.error().message);
      return;
    }
    r.sidecar = "verified";
  }
  out.emplace(std::move(s).value());
}

}  // namespace

std::vector<PathVerdict> arch_paths(const model::ArchInfo& arch) {
  std::vector<PathVerdict> p = serving_paths(arch);
  if (arch.status == model::SupportStatus::runs) {
    p.push_back({"resident_stacked", "ok", "mach generate loads every expert onto the GPU"});
    p.push_back({"expert_streaming", "ok", "mach generate --streaming on an engine layout (mach prune)"});
  } else {
    p.push_back(blocked("resident_stacked", fmt::format("the {} forward pass is {}", arch.model_type, kNotBuilt)));
    p.push_back(blocked("expert_streaming", fmt::format("the {} forward pass is {}", arch.model_type, kNotBuilt)));
  }
  sort_paths(p);
  return p;
}

CheckReport check_model(const CheckOptions& o) {
  CheckReport r;
  r.model = o.model.string();
  for (const char* name : {"config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"})
    r.artifacts[name] = path_exists(o.model / name);
  r.artifacts["weights"] = path_exists(o.model / "model.safetensors") ||
                           path_exists(o.model / "model.safetensors.index.json");
  r.artifacts["expert_sidecar"] = path_exists(o.model / kSidecarDir / kLayoutFile);

  auto config = model::load_model_config(o.model);
  if (!config) {
    r.problems.push_back(config.error().message);
    r.layout = "unknown";
    return r;
  }
  r.model_type = config->model_type;
  const model::ArchInfo& arch = model::arch_info(config->family);

  std::optional<Sidecar> sidecar;
  add_sidecar(r, o, &*config, sidecar);
  std::optional<model::Checkpoint> ck;
  if (r.artifacts["weights"]) {
    auto opened = model::Checkpoint::open(o.model);
    if (opened) ck.emplace(std::move(opened).value());
    else r.problems.push_back(opened.error().message);
  }
  if (r.sidecar != "absent") r.layout = "engine+sidecar";
  else if (ck) r.layout = detect_layout(*ck);
  else r.layout = r.artifacts["weights"] ? "unknown" : "none";
  if (sidecar) {
    r.quantization = std::string(ops::weight_type_name(sidecar->layout().quant));
  } else if (ck) {
    for (const auto& name : ck->tensor_names())
      if (is_expert_tensor(name)) {
        r.quantization = std::string(model::dtype_name(ck->find(name)->info->dtype));
        break;
      }
  }
  add_memory(r, o, *config, ck ? &*ck : nullptr, sidecar ? &sidecar->layout() : nullptr);

  r.supported = arch.status == model::SupportStatus::runs && r.problems.empty();
  if (arch.status != model::SupportStatus::runs) {
    r.paths = arch_paths(arch);
    r.problems.push_back(fmt::format("{} is registered but its forward pass is {}", arch.model_type, kNotBuilt));
  } else {
    r.paths = serving_paths(arch);
    r.paths.push_back(streaming_path(r));
    r.paths.push_back(resident_path(r));
    sort_paths(r.paths);
  }
  const bool resident_ok = std::any_of(r.paths.begin(), r.paths.end(), [](const PathVerdict& p) {
    return p.path == "resident_stacked" && p.status == "ok";
  });
  const bool streaming_ok = std::any_of(r.paths.begin(), r.paths.end(), [](const PathVerdict& p) {
    return p.path == "expert_streaming" && p.status == "ok";
  });
  r.suggested_command =
      resident_ok    ? fmt::format("mach serve {}", r.model)
      : streaming_ok ? fmt::format("mach serve {} --streaming", r.model)
      : r.layout == "engine+sidecar" ? fmt::format("mach check {} --verify", r.model)
                                     : "";
  return r;
}

nlohmann::json report_to_json(const CheckReport& r) {
  nlohmann::json paths = nlohmann::json::object();
  for (const auto& p : r.paths) paths[p.path] = {{"status", p.status}, {"reason", p.reason}};
  nlohmann::json j = {{"model", r.model},
                      {"model_type", r.model_type},
                      {"supported", r.supported},
                      {"layout", r.layout},
                      {"quantization", r.quantization},
                      {"artifacts", r.artifacts},
                      {"sidecar", r.sidecar},
                      {"paths", paths},
                      {"suggested_command", r.suggested_command},
                      {"problems", r.problems}};
  if (r.memory) {
    const auto& m = *r.memory;
    j["memory"] = {{"expert_bytes", m.expert_bytes},
                   {"non_expert_bytes", m.non_expert_bytes},
                   {"kv_bytes", m.kv_bytes},
                   {"mode", m.mode},
                   {"working_set_bytes", m.working_set_bytes},
                   {"gpu_bytes", m.gpu_bytes ? nlohmann::json(*m.gpu_bytes) : nlohmann::json("unknown")},
                   {"gpu", m.gpu_name},
                   {"verdict", m.verdict}};
    if (m.mode == "streaming") {
      j["memory"]["host_spare_bytes"] =
          m.host_spare_bytes ? nlohmann::json(*m.host_spare_bytes) : nlohmann::json("unknown");
      j["memory"]["host_tier_bytes"] = m.host_tier_bytes;
    }
  }
  return j;
}

}  // namespace mach::experts
