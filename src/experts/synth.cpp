#include "experts/synth.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cassert>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "experts/checksum.hpp"
#include "experts/file_write.hpp"
#include "experts/sidecar.hpp"
#include "model/safetensors_writer.hpp"

namespace mach::experts {
namespace fs = std::filesystem;
namespace {

constexpr const char* kMarker = ".synth";            // OUT.partial/.synth: this partial directory is ours
constexpr uint64_t kPieceElements = uint64_t{1} << 20;  // non-expert tensors are written in 2 MiB bf16 pieces
constexpr uint32_t kMaxLayers = 1024;

// Standard deviations of uniformly distributed integers: 0..65535 (a random u16), 0..15 (a q4 quant), and
// ±(0..127) (a q8_0 quant in sign-magnitude from one random byte).
const double kU16Std = std::sqrt((65536.0 * 65536.0 - 1) / 12);
const double kQ4Std = std::sqrt((16.0 * 16.0 - 1) / 12);
const double kQ8Std = std::sqrt(127.0 * 255.0 / 6.0);

constexpr SynthShape kShapes[] = {
    {"qwen3-30b-a3b", "Qwen3-30B-A3B: 48 layers, hidden 2048, 32/4 heads of 128, 128 experts top-8 of width 768, "
                      "vocab 151936",
     "qwen3_moe", 48, 2048, 32, 4, 128, 128, 8, 768, 6144, 151936, 40960, 1e-6, 1e6, 151643, 151645},
    {"qwen3-moe-mini", "qwen3_moe for tests (2-4 MB): 4 layers, hidden 128, 4/2 heads of 32, 16 experts top-4 of "
                       "width 64, vocab 512",
     "qwen3_moe", 4, 128, 4, 2, 32, 16, 4, 64, 256, 512, 4096, 1e-6, 1e6, 1, 2},
};

// Stateless 64-bit mixer (SplitMix64's finalizer): derives one independent stream key per piece of output.
uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t stream_key(uint64_t seed, uint64_t domain, uint64_t a, uint64_t b) {
  return mix64(mix64(mix64(mix64(seed) ^ domain) ^ a) ^ b);
}

// wyrand: one 64x64->128 multiply per 8 random bytes, several GB/s per core; good enough statistics for
// weights, and no hardware dependence (little-endian hosts write the same bytes).
class Rng {
 public:
  explicit Rng(uint64_t key) : s_(key) {}
  uint64_t next() {
    s_ += 0xa0761d6478bd642full;
    const __uint128_t m = static_cast<__uint128_t>(s_) * (s_ ^ 0xe7037ed1a0b428dbull);
    return static_cast<uint64_t>(m >> 64) ^ static_cast<uint64_t>(m);
  }
  void fill(std::byte* out, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      const uint64_t v = next();
      std::memcpy(out + i, &v, 8);
    }
    if (i < n) {
      const uint64_t v = next();
      std::memcpy(out + i, &v, n - i);
    }
  }

 private:
  uint64_t s_;
};

// n bf16 values, zero-mean uniform with standard deviation `std`. Converted in blocks on the stack so that
// the compiler vectorizes the conversion; the stream is consumed exactly as one fill of n * 2 bytes would.
void fill_bf16(std::byte* out, size_t n, double std, Rng& rng) {
  constexpr size_t kBlock = 512;  // a multiple of 4 values: every block but the last takes whole 8-byte draws
  const float k = static_cast<float>(std / kU16Std);
  uint16_t in[kBlock], result[kBlock];
  for (size_t first = 0; first < n; first += kBlock) {
    const size_t m = std::min(kBlock, n - first);
    rng.fill(reinterpret_cast<std::byte*>(in), m * 2);
    for (size_t i = 0; i < m; ++i) {
      uint32_t x = std::bit_cast<uint32_t>((static_cast<float>(in[i]) - 32767.5f) * k);
      x += 0x7fffu + ((x >> 16) & 1);  // round to nearest even; the value is finite
      result[i] = static_cast<uint16_t>(x >> 16);
    }
    std::memcpy(out + 2 * first, result, m * 2);
  }
}

void fill_bf16_ones(std::byte* out, size_t n) {
  const uint16_t one = ops::float_to_bf16(1.0f);
  for (size_t i = 0; i < n; ++i) std::memcpy(out + 2 * i, &one, 2);
}

template <class T>
void fill_repeated(std::byte* out, size_t n, T value) {
  for (size_t i = 0; i < n; ++i) std::memcpy(out + i * sizeof(T), &value, sizeof(T));
}

// One [rows, cols] matrix in `type`'s layout (weight_format.hpp), zero-mean with standard deviation `std`,
// made directly from random quants: q4 quants are uniform in 0..15 with one (scale, min) for every group,
// q8_0 quants uniform in -127..127 with one d. Padding bytes are left as they are (zero in a cleared slab).
void fill_matrix(std::byte* out, ops::WeightType type, uint64_t rows, uint64_t cols, double std, Rng& rng) {
  const uint64_t so = ops::scales_offset(type, rows, cols);
  switch (type) {
    case ops::WeightType::q4: {
      rng.fill(out, rows * cols / 2);  // every nibble uniform in 0..15
      const uint16_t scale = ops::float_to_half(static_cast<float>(std / kQ4Std));
      const uint16_t min = ops::float_to_half(-7.5f * ops::half_to_float(scale));
      fill_repeated(out + so, rows * (cols / 64), static_cast<uint32_t>(scale) | (static_cast<uint32_t>(min) << 16));
      break;
    }
    case ops::WeightType::q8_0: {
      rng.fill(out, rows * cols);
      for (uint64_t i = 0; i < rows * cols; ++i) {  // sign and magnitude: symmetric, never -128
        const auto b = static_cast<uint8_t>(out[i]);
        const int8_t q = static_cast<int8_t>((b & 0x80) ? -(b & 0x7f) : (b & 0x7f));
        std::memcpy(out + i, &q, 1);
      }
      fill_repeated(out + so, rows * (cols / 32), ops::float_to_half(static_cast<float>(std / kQ8Std)));
      break;
    }
    case ops::WeightType::bf16: fill_bf16(out, rows * cols, std, rng); break;
    default: assert(false && "synth writes q4, q8_0 and bf16 experts");
  }
}

struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(Fd&& o) noexcept : fd(std::exchange(o.fd, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    std::swap(fd, o.fd);
    return *this;
  }
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// Creates `path` at its final size, so that workers can pwrite pieces anywhere in it.
Result<Fd> create_sized(const fs::path& path, uint64_t bytes) {
  Fd f(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (f.fd < 0) return Error{Errc::io, fmt::format("cannot create {}: {}", path.string(), std::strerror(errno))};
  if (::ftruncate(f.fd, static_cast<off_t>(bytes)) != 0)
    return Error{Errc::io, fmt::format("cannot size {} to {} bytes: {}", path.string(), bytes, std::strerror(errno))};
  return f;
}

Result<void> sync(const Fd& f, const fs::path& path) {
  if (::fsync(f.fd) != 0) return Error{Errc::io, fmt::format("fsync {}: {}", path.string(), std::strerror(errno))};
  return {};
}

// Runs work(item, worker) for every item of [0, count) on up to `threads` threads, handing items out in
// order. After the first failure no new item starts, and that failure is returned.
Result<void> run_parallel(size_t count, size_t threads, const std::function<Result<void>(size_t, size_t)>& work) {
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mutex;
  std::optional<Error> first;
  auto loop = [&](size_t worker) {
    while (!failed.load(std::memory_order_relaxed)) {
      const size_t i = next.fetch_add(1);
      if (i >= count) return;
      if (auto r = work(i, worker); !r) {
        std::lock_guard lock(mutex);
        if (!first) first = r.error();
        failed = true;
      }
    }
  };
  threads = std::clamp<size_t>(threads, 1, std::max<size_t>(count, 1));
  std::vector<std::thread> pool;
  for (size_t w = 1; w < threads; ++w) pool.emplace_back(loop, w);
  loop(0);
  for (auto& t : pool) t.join();
  if (first) return *first;
  return {};
}

struct DenseTensor {
  model::TensorHeader header;
  double std = 0;  // 0: all ones (norm weights)
};

// The non-expert tensors of qwen3_moe, in file order, with the names Qwen3Moe::load reads.
std::vector<DenseTensor> dense_tensors(const model::ModelConfig& c) {
  const uint64_t H = c.hidden_size, D = c.head_dim, qd = uint64_t{c.num_heads} * D, kvd = uint64_t{c.num_kv_heads} * D;
  std::vector<DenseTensor> out;
  auto add = [&](std::string name, std::vector<uint64_t> shape) {
    const double std = *synth_weight_std(c, name);
    out.push_back({{std::move(name), model::DType::bf16, std::move(shape)}, std});
  };
  add("model.embed_tokens.weight", {c.vocab_size, H});
  for (uint32_t l = 0; l < c.num_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    add(p + "input_layernorm.weight", {H});
    add(p + "self_attn.q_proj.weight", {qd, H});
    add(p + "self_attn.k_proj.weight", {kvd, H});
    add(p + "self_attn.v_proj.weight", {kvd, H});
    add(p + "self_attn.o_proj.weight", {H, qd});
    add(p + "self_attn.q_norm.weight", {D});
    add(p + "self_attn.k_norm.weight", {D});
    add(p + "post_attention_layernorm.weight", {H});
    add(p + "mlp.gate.weight", {c.num_experts, H});
  }
  add("model.norm.weight", {H});
  add("lm_head.weight", {c.vocab_size, H});
  return out;
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

struct Job {
  const SynthOptions& options;
  const model::ModelConfig& config;
  SidecarLayout slab;  // tensors, slab_bytes, quant, fingerprint; no layers
  fs::path partial;
  size_t threads = 1;
  std::vector<std::vector<std::byte>> buffers;  // one per worker
  std::chrono::steady_clock::time_point start;
  std::mutex progress_mutex;

  std::byte* buffer(size_t worker, size_t bytes) {
    auto& b = buffers[worker];
    if (b.size() < bytes) b.resize(bytes);
    return b.data();
  }
  void report(SynthProgress p) {
    if (!options.on_progress) return;
    std::lock_guard lock(progress_mutex);
    p.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    options.on_progress(p);
  }
};

// model.safetensors: the header, then every tensor in 2 MiB pieces, each from its own random stream.
Result<uint64_t> write_non_experts(Job& job, uint32_t total_layers) {
  const auto tensors = dense_tensors(job.config);
  std::vector<model::TensorHeader> headers;
  for (const auto& t : tensors) headers.push_back(t.header);
  auto header = model::safetensors_header(headers, {{"format", "pt"}});
  if (!header) return header.error();
  struct Piece {
    uint32_t tensor;
    uint64_t index;   // piece of the tensor
    uint64_t offset;  // in the file
    uint64_t elements;
  };
  std::vector<Piece> pieces;
  uint64_t offset = header->size();
  for (uint32_t t = 0; t < tensors.size(); ++t) {
    const uint64_t n = model::tensor_data_bytes(tensors[t].header) / 2;
    for (uint64_t first = 0, i = 0; first < n; first += kPieceElements, ++i)
      pieces.push_back({t, i, offset + first * 2, std::min(kPieceElements, n - first)});
    offset += n * 2;
  }
  const fs::path path = job.partial / "model.safetensors";
  auto fd = create_sized(path, offset);
  if (!fd) return fd.error();
  if (auto r = pwrite_all(fd->fd, std::as_bytes(std::span(*header)), 0, path); !r) return r.error();
  auto r = run_parallel(pieces.size(), job.threads, [&](size_t i, size_t worker) -> Result<void> {
    const Piece& p = pieces[i];
    std::byte* out = job.buffer(worker, p.elements * 2);
    if (tensors[p.tensor].std == 0) {
      fill_bf16_ones(out, p.elements);
    } else {
      Rng rng(stream_key(job.options.seed, 1, p.tensor, p.index));
      fill_bf16(out, p.elements, tensors[p.tensor].std, rng);
    }
    return pwrite_all(fd->fd, {out, p.elements * 2}, p.offset, path);
  });
  if (!r) return r.error();
  if (auto s = sync(*fd, path); !s) return s.error();
  job.report({std::nullopt, 0, total_layers, offset, 0});
  return offset;
}

// Expert `e` of layer `l` as one slab: each tensor from its own stream, zeros between and after.
void build_slab(const Job& job, uint32_t l, uint32_t e, std::byte* slab) {
  std::memset(slab, 0, job.slab.slab_bytes);
  for (uint32_t t = 0; t < job.slab.tensors.size(); ++t) {
    const SlabTensor& st = job.slab.tensors[t];
    Rng rng(stream_key(job.options.seed, 2, (uint64_t{l} << 32) | e, t));
    fill_matrix(slab + st.offset, job.slab.quant, st.rows, st.cols, *synth_weight_std(job.config, st.name), rng);
  }
}

// Every layer file of the sidecar, slabs of all layers in parallel; each slab is hashed as it is written.
Result<SidecarLayout> write_experts(Job& job) {
  const uint32_t L = job.config.num_layers, E = job.config.num_experts;
  const uint64_t slab = job.slab.slab_bytes;
  SidecarLayout layout = job.slab;
  std::vector<Fd> files;
  std::vector<fs::path> paths;
  for (uint32_t l = 0; l < L; ++l) {
    SidecarLayer layer{l, layer_file_name(l), E * slab, E, {}};
    for (uint32_t e = 0; e < E; ++e) layer.experts.push_back({e, e * slab, slab, 0});
    paths.push_back(job.partial / kSidecarDir / layer.file);
    auto fd = create_sized(paths.back(), layer.file_bytes);
    if (!fd) return fd.error();
    files.push_back(std::move(fd).value());
    layout.layers.push_back(std::move(layer));
  }
  std::vector<std::atomic<uint32_t>> written(L);
  std::atomic<uint32_t> layers_done{0};
  auto r = run_parallel(uint64_t{L} * E, job.threads, [&](size_t i, size_t worker) -> Result<void> {
    const auto l = static_cast<uint32_t>(i / E), e = static_cast<uint32_t>(i % E);
    std::byte* out = job.buffer(worker, slab);
    build_slab(job, l, e, out);
    const std::span<const std::byte> bytes(out, slab);
    layout.layers[l].experts[e].checksum = xxh64(bytes);  // distinct element per item: no race
    if (auto w = pwrite_all(files[l].fd, bytes, e * slab, paths[l]); !w) return w;
    if (written[l].fetch_add(1, std::memory_order_acq_rel) + 1 < E) return {};
    if (auto s = sync(files[l], paths[l]); !s) return s;
    job.report({l, layers_done.fetch_add(1) + 1, L, layout.layers[l].file_bytes, 0});
    return {};
  });
  if (!r) return r.error();
  return layout;
}

// A leftover OUT.partial of an earlier synth run is removed (synth does not resume: regenerating is as fast
// as checking); one without the marker is somebody else's and is refused.
Result<void> claim_partial(const fs::path& partial, const nlohmann::ordered_json& run) {
  std::error_code ec;
  if (fs::exists(partial, ec)) {
    if (!fs::exists(partial / kMarker, ec))
      return Error{Errc::invalid_argument, fmt::format("{} exists and was not written by mach synth; remove it or "
                                                       "pick another --out", partial.string())};
    fs::remove_all(partial, ec);
    if (ec) return Error{Errc::io, fmt::format("cannot remove the unfinished {}: {}", partial.string(), ec.message())};
  }
  fs::create_directories(partial / kSidecarDir, ec);
  if (ec) return Error{Errc::io, fmt::format("cannot create {}: {}", partial.string(), ec.message())};
  return write_text_atomic(partial / kMarker, run.dump() + "\n");
}

Result<void> finish(const Job& job, const SidecarLayout& layout, const nlohmann::ordered_json& config) {
  if (auto r = write_text_atomic(job.partial / kSidecarDir / kLayoutFile, layout_to_json(layout).dump(1)); !r) return r;
  if (auto r = write_text_atomic(job.partial / "config.json", config.dump(2) + "\n"); !r) return r;
  std::error_code ec;
  fs::remove(job.partial / kMarker, ec);
  fs::rename(job.partial, job.options.output, ec);
  if (ec)
    return Error{Errc::io, fmt::format("cannot rename {} to {}: {}", job.partial.string(), job.options.output.string(),
                                       ec.message())};
  return {};
}

std::string shape_names() {
  std::string names;
  for (const auto& s : kShapes) names += (names.empty() ? "" : ", ") + std::string(s.name);
  return names;
}

}  // namespace

std::span<const SynthShape> synth_shapes() { return kShapes; }

const SynthShape* find_synth_shape(std::string_view name) {
  for (const auto& s : kShapes)
    if (s.name == name) return &s;
  return nullptr;
}

nlohmann::ordered_json synth_config(const SynthShape& s, uint32_t layers, ops::WeightType quant, uint64_t seed) {
  return {{"architectures", {"Qwen3MoeForCausalLM"}},
          {"model_type", s.model_type},
          {"hidden_size", s.hidden},
          {"intermediate_size", s.intermediate},
          {"moe_intermediate_size", s.moe_intermediate},
          {"num_hidden_layers", layers},
          {"num_attention_heads", s.heads},
          {"num_key_value_heads", s.kv_heads},
          {"head_dim", s.head_dim},
          {"num_experts", s.experts},
          {"num_experts_per_tok", s.top_k},
          {"norm_topk_prob", true},
          {"decoder_sparse_step", 1},
          {"mlp_only_layers", nlohmann::ordered_json::array()},
          {"vocab_size", s.vocab},
          {"max_position_embeddings", s.max_position_embeddings},
          {"rms_norm_eps", s.rms_norm_eps},
          {"rope_theta", s.rope_theta},
          {"rope_scaling", nullptr},
          {"attention_bias", false},
          {"attention_dropout", 0.0},
          {"hidden_act", "silu"},
          {"tie_word_embeddings", false},
          {"use_sliding_window", false},
          {"sliding_window", nullptr},
          {"bos_token_id", s.bos_token_id},
          {"eos_token_id", s.eos_token_id},
          {"torch_dtype", "bfloat16"},
          {"mach_synth", {{"shape", s.name},
                          {"quant", std::string(ops::weight_type_name(quant))},
                          {"seed", seed},
                          {"note", "random weights written by mach synth; no tokenizer: give token ids"}}}};
}

std::optional<double> synth_weight_std(const model::ModelConfig& c, std::string_view t) {
  const double H = c.hidden_size;
  // Residual-branch outputs: 2·layers branches each adding variance at most 1/(2·layers) to an embedding of
  // variance 1 keep the residual stream's rms between 1 and √2 at every depth.
  const double branch = 1.0 / std::sqrt(2.0 * c.num_layers);
  if (t == "gate_up") return 1 / std::sqrt(H);
  if (t == "down") return branch / std::sqrt(double(c.moe_intermediate_size));
  if (t == "model.embed_tokens.weight") return 1.0;
  if (t == "lm_head.weight") return 1 / std::sqrt(H);
  if (t == "model.norm.weight" || ends_with(t, "layernorm.weight") || ends_with(t, ".q_norm.weight") ||
      ends_with(t, ".k_norm.weight"))
    return 0.0;
  if (ends_with(t, ".q_proj.weight") || ends_with(t, ".k_proj.weight") || ends_with(t, ".v_proj.weight") ||
      ends_with(t, ".mlp.gate.weight"))
    return 1 / std::sqrt(H);
  if (ends_with(t, ".o_proj.weight")) return branch / std::sqrt(double(c.num_heads) * c.head_dim);
  return std::nullopt;
}

Result<SynthSummary> synthesize(const SynthOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  SynthOptions o = options;
  if (!o.output.has_filename()) o.output = o.output.parent_path();  // "out/" names "out", not "out/.partial"
  const SynthShape* shape = find_synth_shape(o.shape);
  if (!shape)
    return Error{Errc::invalid_argument, fmt::format("--shape {}: unknown; the shapes are {}", o.shape, shape_names())};
  if (o.quant != ops::WeightType::q4 && o.quant != ops::WeightType::q8_0 && o.quant != ops::WeightType::bf16)
    return Error{Errc::invalid_argument,
                 fmt::format("--quant {}: use q4, q8_0 or bf16", ops::weight_type_name(o.quant))};
  const uint32_t layers = o.layers.value_or(shape->layers);
  if (layers == 0 || layers > kMaxLayers)
    return Error{Errc::invalid_argument, fmt::format("--layers {}: give 1 to {}", layers, kMaxLayers)};
  if (o.output.empty()) return Error{Errc::invalid_argument, "--out: give the directory to write"};
  const auto config_json = synth_config(*shape, layers, o.quant, o.seed);
  auto config = model::parse_model_config(nlohmann::json(config_json), "synth config.json");
  if (!config) return config.error();
  const auto& c = *config;
  for (auto [rows, cols] : {std::pair{uint64_t{2} * c.moe_intermediate_size, uint64_t{c.hidden_size}},
                            std::pair{uint64_t{c.hidden_size}, uint64_t{c.moe_intermediate_size}}})
    if (!ops::shape_fits(o.quant, rows, cols))
      return Error{Errc::unsupported, fmt::format("--quant {} needs expert input widths that are multiples of {}; "
                                                  "shape {} has {}", ops::weight_type_name(o.quant),
                                                  ops::group_size(o.quant), shape->name, cols)};
  std::error_code ec;
  if (fs::exists(o.output, ec))
    return Error{Errc::invalid_argument,
                 fmt::format("--out {} already exists; remove it or pick another path", o.output.string())};

  Job job{o, c, qwen3_moe_slab_layout(c, o.quant), fs::path(o.output.string() + ".partial")};
  job.threads = o.threads ? o.threads : std::max(1u, std::thread::hardware_concurrency());
  job.buffers.resize(job.threads);
  job.start = start;
  const nlohmann::ordered_json run = {{"shape", shape->name}, {"layers", layers},
                                      {"quant", std::string(ops::weight_type_name(o.quant))}, {"seed", o.seed}};
  if (auto r = claim_partial(job.partial, run); !r) return r.error();

  SynthSummary summary;
  auto dense = write_non_experts(job, layers);
  if (!dense) return dense.error();
  summary.non_expert_bytes = *dense;
  auto layout = write_experts(job);
  if (!layout) return layout.error();
  summary.layers = layers;
  summary.experts = layout->expert_count();
  summary.expert_bytes = layout->expert_bytes();
  if (auto r = finish(job, *layout, config_json); !r) return r.error();
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

}  // namespace mach::experts
