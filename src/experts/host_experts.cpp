#include "experts/host_experts.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "experts/slab_reader.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace mach::experts {
namespace {

void cpu_relax() {
#if defined(__x86_64__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

constexpr uint32_t kGateRows = 32;  // gate (and up) rows per item of the gate/up phase
constexpr uint32_t kDownRows = 64;  // output rows per item of the down phase

uint32_t ceil_div(uint32_t a, uint32_t b) { return (a + b - 1) / b; }

float silu(float v) { return v / (1.0f + std::exp(-v)); }

// One q4 group's integer dot product: 32 bytes of nibble pairs (q[j] low, q[j + 32] high) with 64 int8 values.
int32_t q4_group_dot(const uint8_t* b, const int8_t* x) {
  int32_t s = 0;
  for (uint32_t j = 0; j < 32; ++j) s += (b[j] & 15) * x[j] + (b[j] >> 4) * x[j + 32];
  return s;
}

// The portable dot products of rows [r0, r1) of a q4 or q8_0 matrix with quantized activations.
void dot_rows_portable(const HostMatrix& m, uint32_t r0, uint32_t r1, const int8_t* xq, const float* xs,
                       const float* xsum, float* out) {
  const uint32_t gs = ops::group_size(m.type), G = m.cols / gs;
  const auto* quants = reinterpret_cast<const uint8_t*>(m.data);
  const auto* scales =
      reinterpret_cast<const uint16_t*>(m.data + ops::scales_offset(m.type, m.rows, m.cols));
  for (uint32_t r = r0; r < r1; ++r) {
    float acc = 0;
    if (m.type == ops::WeightType::q4) {
      for (uint32_t g = 0; g < G; ++g) {
        const int32_t s = q4_group_dot(quants + (uint64_t{r} * G + g) * 32, xq + g * 64);
        const uint16_t* sm = scales + (uint64_t{r} * G + g) * 2;
        acc += ops::half_to_float(sm[0]) * xs[g] * static_cast<float>(s) + ops::half_to_float(sm[1]) * xsum[g];
      }
    } else {
      const auto* q = reinterpret_cast<const int8_t*>(quants) + uint64_t{r} * m.cols;
      for (uint32_t g = 0; g < G; ++g) {
        int32_t s = 0;
        for (uint32_t j = 0; j < 32; ++j) s += q[g * 32 + j] * xq[g * 32 + j];
        acc += ops::half_to_float(scales[uint64_t{r} * G + g]) * xs[g] * static_cast<float>(s);
      }
    }
    out[r - r0] = acc;
  }
}

// Bytes ahead of the current groups that the AVX2 kernel prefetches ($MACH_HOST_PREFETCH, 0: none).
uint32_t prefetch_distance() {
  static const uint32_t distance = [] {
    const char* env = std::getenv("MACH_HOST_PREFETCH");
    return env ? static_cast<uint32_t>(std::strtoul(env, nullptr, 10)) / 64 * 64 : 2048u;
  }();
  return distance;
}

#if defined(__x86_64__)
// q4 rows with AVX2 for N tokens at once (1..kRowTokens): a group's 32 bytes split into the low nibbles
// (values 0..31) and the high ones (32..63) once, multiplied with each token's int8 activations by vpmaddubsw
// (u8 x s8, pairs summed in int16: at most 2 * 15 * 127) and widened by vpmaddwd; each group's eight int32
// lanes are scaled in float by scale_w * scale_x. Eight groups' (scale, min) halves convert at once (F16C).
// Every token's sums run in the same order whatever N is, so a token's result does not depend on its
// neighbours.
template <uint32_t N>
__attribute__((target("avx2,fma,f16c"))) void dot_rows_q4_avx2(const HostMatrix& m, uint32_t r0, uint32_t r1,
                                                                const RowActs* acts) {
  const uint32_t G = m.cols / 64;
  const auto* quants = reinterpret_cast<const uint8_t*>(m.data);
  const auto* scales = reinterpret_cast<const uint16_t*>(m.data + ops::scales_offset(m.type, m.rows, m.cols));
  const __m256i nibble = _mm256_set1_epi8(0x0F);
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i natural = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
  const uint32_t ahead = prefetch_distance();
  for (uint32_t r = r0; r < r1; ++r) {
    const uint8_t* row = quants + uint64_t{r} * G * 32;
    const uint16_t* sm = scales + uint64_t{r} * G * 2;
    __m256 acc[N], acc_min[N];
    for (uint32_t j = 0; j < N; ++j) acc[j] = acc_min[j] = _mm256_setzero_ps();
    uint32_t g = 0;
    for (; g + 8 <= G; g += 8) {
      // The hardware prefetchers stop at 4 KiB pages and restart per item: ask for the bytes `ahead` of
      // these eight groups (the next rows follow this one in memory).
      if (ahead)
        for (uint32_t line = 0; line < 256; line += 64)
          _mm_prefetch(reinterpret_cast<const char*>(row + g * 32 + ahead + line), _MM_HINT_T0);
      // s0 m0 s1 m1 s2 m2 s3 m3 | s4 m4 ... s7 m7 -> scales and mins of the eight groups, in order.
      const __m256 a = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sm + 2 * g)));
      const __m256 b = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sm + 2 * g + 8)));
      const __m256 sc = _mm256_permutevar8x32_ps(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)), natural);
      const __m256 mn = _mm256_permutevar8x32_ps(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1)), natural);
      alignas(32) float cs[N][8];
      for (uint32_t j = 0; j < N; ++j) {
        acc_min[j] = _mm256_fmadd_ps(mn, _mm256_loadu_ps(acts[j].sum + g), acc_min[j]);
        _mm256_store_ps(cs[j], _mm256_mul_ps(sc, _mm256_loadu_ps(acts[j].scale + g)));
      }
      for (uint32_t i = 0; i < 8; ++i) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + (g + i) * 32));
        const __m256i lo = _mm256_and_si256(v, nibble);
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
        for (uint32_t j = 0; j < N; ++j) {
          const int8_t* x = acts[j].q + (g + i) * 64;
          const __m256i p = _mm256_add_epi16(
              _mm256_maddubs_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x))),
              _mm256_maddubs_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 32))));
          acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones)), _mm256_set1_ps(cs[j][i]), acc[j]);
        }
      }
    }
    for (uint32_t j = 0; j < N; ++j) {
      const RowActs& t = acts[j];
      float tail = 0;
      for (uint32_t gt = g; gt < G; ++gt) {  // the groups past the last eight (cols not a multiple of 512)
        const int32_t sum = q4_group_dot(row + gt * 32, t.q + gt * 64);
        tail += _cvtsh_ss(sm[2 * gt]) * t.scale[gt] * static_cast<float>(sum) + _cvtsh_ss(sm[2 * gt + 1]) * t.sum[gt];
      }
      const __m256 v = _mm256_add_ps(acc[j], acc_min[j]);
      __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
      h = _mm_add_ps(h, _mm_movehl_ps(h, h));
      h = _mm_add_ss(h, _mm_movehdup_ps(h));
      t.out[r - r0] = _mm_cvtss_f32(h) + tail;
    }
  }
}
#endif

bool simd_allowed() {
  const char* env = std::getenv("MACH_HOST_SIMD");
  return !(env && std::string_view(env) == "0");
}

}  // namespace

bool host_has_avx2() {
#if defined(__x86_64__)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

void quantize_acts(std::span<const float> v, uint32_t group, int8_t* q, float* scale, float* sum) {
  assert(v.size() % group == 0);
  for (size_t g = 0; g < v.size() / group; ++g) {
    const float* x = v.data() + g * group;
    float amax = 0, s = 0;
    for (uint32_t j = 0; j < group; ++j) {
      amax = std::max(amax, std::fabs(x[j]));
      s += x[j];
    }
    const float d = amax / 127.0f;
    const float inv = d > 0 ? 1.0f / d : 0.0f;
    for (uint32_t j = 0; j < group; ++j)
      q[g * group + j] = static_cast<int8_t>(std::clamp(std::nearbyint(x[j] * inv), -127.0f, 127.0f));
    scale[g] = d;
    sum[g] = s;
  }
}

void QuantizedActs::resize(uint64_t rows, uint32_t width, uint32_t group) {
  width_ = width;
  group_ = group;
  q_.resize(rows * width);
  scale_.resize(rows * width / group);
  sum_.resize(scale_.size());
}

void QuantizedActs::quantize(uint64_t row, const float* values) {
  const uint64_t g = row * width_ / group_;
  quantize_acts(std::span(values, width_), group_, q_.data() + row * width_, scale_.data() + g, sum_.data() + g);
}

RowActs QuantizedActs::row(uint64_t row, float* out) const {
  const uint64_t g = row * width_ / group_;
  return {q_.data() + row * width_, scale_.data() + g, sum_.data() + g, out};
}

void dot_rows(const HostMatrix& m, uint32_t r0, uint32_t r1, std::span<const RowActs> acts, bool simd) {
  assert(m.type == ops::WeightType::q4 || m.type == ops::WeightType::q8_0);
#if defined(__x86_64__)
  if (simd && m.type == ops::WeightType::q4) {
    for (size_t at = 0; at < acts.size(); at += kRowTokens) {
      const RowActs* a = acts.data() + at;
      switch (std::min<size_t>(kRowTokens, acts.size() - at)) {
        case 1: dot_rows_q4_avx2<1>(m, r0, r1, a); break;
        case 2: dot_rows_q4_avx2<2>(m, r0, r1, a); break;
        case 3: dot_rows_q4_avx2<3>(m, r0, r1, a); break;
        default: dot_rows_q4_avx2<4>(m, r0, r1, a); break;
      }
    }
    return;
  }
#endif
  (void)simd;
  for (const RowActs& a : acts) dot_rows_portable(m, r0, r1, a.q, a.scale, a.sum, a.out);
}

// ---- WorkerPool ----

WorkerPool::WorkerPool(unsigned threads, std::chrono::microseconds spin) : spin_(spin) {
  for (unsigned i = 1; i < std::max(1u, threads); ++i) workers_.emplace_back([this] { worker_main(); });
}

WorkerPool::~WorkerPool() {
  stop_.store(true);
  state_.fetch_add(uint64_t{1} << 32);  // a new generation wakes the sleepers, which then see stop_
  state_.notify_all();
  for (auto& t : workers_) t.join();
}

void WorkerPool::start(std::vector<uint32_t> phase_items, std::function<void(uint32_t, uint32_t)> fn) {
  assert(!running_);
  ends_.clear();
  uint32_t total = 0;
  for (uint32_t n : phase_items) ends_.push_back(total += n);
  fn_ = std::move(fn);
  done_.store(0, std::memory_order_relaxed);
  total_.store(total, std::memory_order_relaxed);
  const uint64_t generation = (state_.load(std::memory_order_relaxed) >> 32) + 1;
  started_ = std::chrono::steady_clock::now();
  finished_.store(started_.time_since_epoch().count(), std::memory_order_relaxed);
  state_.store(generation << 32, std::memory_order_release);  // publishes the job above
  state_.notify_all();
  running_ = true;
}

void WorkerPool::work(uint64_t generation) {
  uint64_t s = state_.load(std::memory_order_acquire);
  for (;;) {
    if ((s >> 32) != generation) return;
    const uint32_t item = static_cast<uint32_t>(s);
    if (item >= total_.load(std::memory_order_relaxed)) return;
    if (!state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
    // The item is ours and its job current: the job's fields are stable until done_ reaches its total.
    const uint32_t phase = static_cast<uint32_t>(std::upper_bound(ends_.begin(), ends_.end(), item) - ends_.begin());
    const uint32_t first = phase ? ends_[phase - 1] : 0;
    // Every item of the earlier phases was taken before this one, by threads that are running them.
    while (done_.load(std::memory_order_acquire) < first) cpu_relax();
    fn_(phase, item - first);
    // The job's end: the latest end of an item, recorded before the item counts as done.
    const int64_t now = std::chrono::steady_clock::now().time_since_epoch().count();
    int64_t seen = finished_.load(std::memory_order_relaxed);
    while (seen < now && !finished_.compare_exchange_weak(seen, now, std::memory_order_relaxed)) {
    }
    done_.fetch_add(1, std::memory_order_acq_rel);
    s = state_.load(std::memory_order_acquire);
  }
}

void WorkerPool::wait() {
  if (!running_) return;
  const uint64_t generation = state_.load(std::memory_order_acquire) >> 32;
  work(generation);
  const uint32_t total = total_.load(std::memory_order_relaxed);
  while (done_.load(std::memory_order_acquire) < total) cpu_relax();
  const auto end = std::chrono::steady_clock::time_point(
      std::chrono::steady_clock::duration(finished_.load(std::memory_order_relaxed)));
  last_job_ns_ = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(end - started_).count());
  running_ = false;
}

void WorkerPool::worker_main() {
  uint64_t seen = 0;  // the last generation this thread worked on
  for (;;) {
    uint64_t s = state_.load(std::memory_order_acquire);
    const auto spin_until = std::chrono::steady_clock::now() + spin_;
    uint32_t polls = 0;
    while ((s >> 32) == seen && !stop_.load(std::memory_order_relaxed)) {
      if ((spin_.count() == 0 || ++polls % 256 == 0) && std::chrono::steady_clock::now() > spin_until) {
        state_.wait(s, std::memory_order_acquire);  // until the state changes (a new job, or an item taken)
      } else {
        cpu_relax();
      }
      s = state_.load(std::memory_order_acquire);
    }
    if (stop_.load()) return;
    seen = s >> 32;
    work(seen);
  }
}

// ---- HostExperts ----

HostExperts::HostExperts(const SidecarLayout& layout, unsigned threads)
    : layout_(layout),
      H_(layout.tensors.back().rows),
      I_(layout.tensors.back().cols),
      pool_(threads ? threads : std::max(1u, std::thread::hardware_concurrency())) {}

uint32_t choose_host_experts(uint32_t experts, uint32_t slots, double host_gb_per_s, double upload_gb_per_s) {
  if (slots >= experts || !(host_gb_per_s > 0) || !(upload_gb_per_s > 0)) return 0;
  const double share = host_gb_per_s / (host_gb_per_s + upload_gb_per_s);
  return static_cast<uint32_t>(std::lround((experts - slots) * share));
}

Result<std::unique_ptr<HostExperts>> HostExperts::create(gpu::Context& context, const Sidecar& sidecar,
                                                         SlabReader& reader,
                                                         const std::map<uint32_t, std::vector<uint32_t>>& pinned,
                                                         uint32_t per_layer, unsigned threads) {
  const SidecarLayout& layout = sidecar.layout();
  if (layout.quant != ops::WeightType::q4 && layout.quant != ops::WeightType::q8_0)
    return Error{Errc::unsupported,
                 fmt::format("--host-experts computes q4 and q8_0 experts; this sidecar's are {} (re-run mach prune "
                             "with --quant q4, or leave --host-experts at 0)", ops::weight_type_name(layout.quant))};
  if (layout.tensors.size() != 2 || layout.tensors[0].name != "gate_up" || layout.tensors[1].name != "down")
    return Error{Errc::unsupported, "--host-experts needs the gate_up + down slab layout of qwen3_moe experts"};
  std::unique_ptr<HostExperts> h(new HostExperts(layout, threads));
  h->per_layer_ = per_layer;
  h->stride_ = (layout.slab_bytes + kSlabAlignment - 1) / kSlabAlignment * kSlabAlignment;  // O_DIRECT reads
  h->simd_ = simd_allowed() && host_has_avx2() && layout.quant == ops::WeightType::q4;  // q8_0: portable
  for (const auto& l : layout.layers) h->experts_ = std::max<uint32_t>(h->experts_, l.experts.size());
  const uint32_t layers = layout.layers.back().layer + 1;
  h->slot_of_.assign(uint64_t{layers} * h->experts_, -1);
  h->buffer_of_.assign(layers, -1);
  std::vector<SlabRead> reads;
  for (const auto& l : layout.layers) {
    const uint32_t E = static_cast<uint32_t>(l.experts.size());
    const auto pin = pinned.find(l.layer);
    std::vector<uint32_t> chosen;
    for (uint32_t e = E; e-- > 0 && chosen.size() < per_layer;)
      if (pin == pinned.end() || std::find(pin->second.begin(), pin->second.end(), e) == pin->second.end())
        chosen.push_back(e);
    if (chosen.size() < per_layer)
      return Error{Errc::invalid_argument,
                   fmt::format("--host-experts {}: layer {} has {} experts{}; give at most {}", per_layer, l.layer, E,
                               pin == pinned.end() ? "" : fmt::format(", {} of them pinned", pin->second.size()),
                               chosen.size())};
    std::sort(chosen.begin(), chosen.end());
    try {
      h->buffers_.push_back(context.create_buffer(chosen.size() * h->stride_, gpu::MemoryKind::host_readback,
                                                  fmt::format("host experts {}", l.layer)));
    } catch (const Exception& e) {
      return Error{e.error().code,
                   fmt::format("--host-experts {}: {:.2f} GiB of host memory per layer could not be allocated ({}); "
                               "give fewer", per_layer, double(chosen.size() * h->stride_) / 1073741824.0,
                               e.error().message)};
    }
    h->buffer_of_[l.layer] = static_cast<int>(h->buffers_.size() - 1);
    for (size_t i = 0; i < chosen.size(); ++i) {
      h->slot_of_[uint64_t{l.layer} * h->experts_ + chosen[i]] = static_cast<int>(i);
      reads.push_back({l.layer, chosen[i], h->buffers_.back().mapped() + i * h->stride_});
    }
    h->bytes_ += chosen.size() * layout.slab_bytes;
  }
  for (size_t at = 0; at < reads.size(); at += 64) {
    const auto batch = std::span(reads).subspan(at, std::min<size_t>(64, reads.size() - at));
    const std::vector<Result<void>> results = reader.read(batch);
    for (const auto& r : results)
      if (!r) return Error{r.error().code, fmt::format("--host-experts: {}", r.error().message)};
  }
  return h;
}

bool HostExperts::holds(uint32_t layer, uint32_t expert) const {
  const uint64_t i = uint64_t{layer} * experts_ + expert;
  return expert < experts_ && i < slot_of_.size() && slot_of_[i] >= 0;
}

HostExperts::Source HostExperts::source(uint32_t layer, uint32_t expert) const {
  assert(holds(layer, expert));
  return {&buffers_[buffer_of_[layer]], slot_of_[uint64_t{layer} * experts_ + expert] * stride_};
}

HostMatrix HostExperts::matrix(uint32_t layer, uint32_t expert, size_t t) const {
  const SlabTensor& st = layout_.tensors[t];
  const Source src = source(layer, expert);
  return {src.buffer->mapped() + src.offset + st.offset, layout_.quant, st.rows, st.cols};
}

std::span<const uint32_t> HostExperts::start(uint32_t layer, std::span<const uint32_t> ids, uint32_t k,
                                             const float* x, float* y) {
  pairs_.clear();
  tasks_.clear();
  tokens_.clear();
  for (uint32_t p = 0; p < ids.size(); ++p)
    if (holds(layer, ids[p])) pairs_.push_back(p);
  if (pairs_.empty()) return {};
  layer_ = layer;
  k_ = k;
  x_ = x;
  y_ = y;
  // Tasks by expert (ascending), each with its pairs; act_ rows in pairs_ order.
  std::vector<uint32_t> order(pairs_);
  std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return ids[a] < ids[b]; });
  for (uint32_t p : order) {
    if (tasks_.empty() || tasks_.back().expert != ids[p]) tasks_.push_back({ids[p], {}});
    tasks_.back().pairs.push_back(p);
  }
  const uint32_t tokens = static_cast<uint32_t>(ids.size() / k);
  token_slot_.assign(tokens, UINT32_MAX);
  for (uint32_t p : pairs_)
    if (token_slot_[p / k] == UINT32_MAX) {
      token_slot_[p / k] = static_cast<uint32_t>(tokens_.size());
      tokens_.push_back(p / k);
    }
  pair_row_.assign(ids.size(), UINT32_MAX);
  for (uint32_t i = 0; i < pairs_.size(); ++i) pair_row_[pairs_[i]] = i;
  const uint32_t group = ops::group_size(layout_.quant);
  xq_.resize(tokens_.size(), H_, group);
  act_.resize(uint64_t{pairs_.size()} * I_);
  aq_.resize(pairs_.size(), I_, group);
  const uint32_t T = static_cast<uint32_t>(tasks_.size());
  pool_.start({static_cast<uint32_t>(tokens_.size()), T * ceil_div(I_, kGateRows), static_cast<uint32_t>(pairs_.size()),
               T * ceil_div(H_, kDownRows)},
              [this](uint32_t phase, uint32_t item) { run(phase, item); });
  return pairs_;
}

void HostExperts::wait() { pool_.wait(); }

void HostExperts::run(uint32_t phase, uint32_t item) {
  const uint32_t H = H_, I = I_;
  switch (phase) {
    case 0: {  // quantize a token's input
      xq_.quantize(item, x_ + uint64_t{tokens_[item]} * H);
      return;
    }
    case 1: {  // gate and up rows [i0, i1) of one expert, for each of its pairs, and their SwiGLU
      const uint32_t blocks = ceil_div(I, kGateRows);
      const Task& task = tasks_[item / blocks];
      const uint32_t i0 = item % blocks * kGateRows, i1 = std::min(I, i0 + kGateRows);
      const HostMatrix gate_up = matrix(layer_, task.expert, 0);
      // kRowTokens pairs at a time share each row's unpacked weights.
      float gate[kRowTokens][kGateRows], up[kRowTokens][kGateRows];
      RowActs g_acts[kRowTokens], u_acts[kRowTokens];
      for (size_t at = 0; at < task.pairs.size(); at += kRowTokens) {
        const uint32_t n = static_cast<uint32_t>(std::min<size_t>(kRowTokens, task.pairs.size() - at));
        for (uint32_t j = 0; j < n; ++j) {
          const uint64_t xs = token_slot_[task.pairs[at + j] / k_];
          g_acts[j] = xq_.row(xs, gate[j]);
          u_acts[j] = xq_.row(xs, up[j]);
        }
        dot_rows(gate_up, i0, i1, std::span(g_acts, n), simd_);
        dot_rows(gate_up, I + i0, I + i1, std::span(u_acts, n), simd_);
        for (uint32_t j = 0; j < n; ++j) {
          float* a = act_.data() + uint64_t{pair_row_[task.pairs[at + j]]} * I;
          for (uint32_t i = i0; i < i1; ++i) a[i] = silu(gate[j][i - i0]) * up[j][i - i0];
        }
      }
      return;
    }
    case 2: {  // quantize a pair's SwiGLU output
      aq_.quantize(item, act_.data() + uint64_t{item} * I);
      return;
    }
    default: {  // down rows [r0, r1) of one expert, for each of its pairs
      const uint32_t blocks = ceil_div(H, kDownRows);
      const Task& task = tasks_[item / blocks];
      const uint32_t r0 = item % blocks * kDownRows, r1 = std::min(H, r0 + kDownRows);
      const HostMatrix down = matrix(layer_, task.expert, 1);
      RowActs acts[kRowTokens];
      for (size_t at = 0; at < task.pairs.size(); at += kRowTokens) {
        const uint32_t n = static_cast<uint32_t>(std::min<size_t>(kRowTokens, task.pairs.size() - at));
        for (uint32_t j = 0; j < n; ++j) {
          const uint32_t p = task.pairs[at + j];
          acts[j] = aq_.row(pair_row_[p], y_ + uint64_t{p} * H + r0);
        }
        dot_rows(down, r0, r1, std::span(acts, n), simd_);
      }
      return;
    }
  }
}

}  // namespace mach::experts
