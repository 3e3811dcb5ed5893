// mach synth: the engine layout it writes at each quant, the statistics of its weights, determinism, the
// atomic write, `mach check` on its output, and a float CPU forward pass over a 48-layer mini checkpoint that
// shows activations and routing stay sane through depth.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>

#include "experts/sidecar.hpp"
#include "experts/synth.hpp"
#include "model/config.hpp"
#include "model/safetensors.hpp"
#include "temp_dir.hpp"

namespace mach::experts {
namespace {
namespace fs = std::filesystem;
using mach::testing::TempDir;
using ops::WeightType;

constexpr WeightType kQuants[] = {WeightType::q4, WeightType::q8_0, WeightType::bf16};

SynthOptions mini(const fs::path& out, WeightType quant, uint64_t seed = 0) {
  SynthOptions o;
  o.shape = "qwen3-moe-mini";
  o.output = out;
  o.quant = quant;
  o.seed = seed;
  return o;
}

std::vector<char> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

std::map<std::string, std::vector<char>> tree(const fs::path& dir) {
  std::map<std::string, std::vector<char>> files;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) files[fs::relative(e.path(), dir).string()] = read_bytes(e.path());
  return files;
}

struct Stats {
  double mean = 0, std = 0;
};

Stats stats(std::span<const float> v) {
  double s = 0, s2 = 0;
  for (float x : v) s += x, s2 += double(x) * x;
  const double m = s / v.size();
  return {m, std::sqrt(std::max(0.0, s2 / v.size() - m * m))};
}

// `w`, n uniform samples, has mean 0 and standard deviation `want`, within 5 standard errors (uniform
// samples: the std's relative error is sqrt(0.2 / n)) plus 0.5% for bf16 and f16 rounding.
void expect_distribution(std::span<const float> w, double want, const std::string& what) {
  const double n = w.size();
  const Stats s = stats(w);
  EXPECT_NEAR(s.std, want, want * (5 * std::sqrt(0.2 / n) + 0.005)) << what;
  EXPECT_NEAR(s.mean, 0.0, want * 5 / std::sqrt(n)) << what;
}

// The non-expert tensors Qwen3Moe::load reads, with their shapes.
std::map<std::string, std::vector<uint64_t>> expected_tensors(const model::ModelConfig& c) {
  const uint64_t H = c.hidden_size, D = c.head_dim, qd = c.num_heads * D, kvd = c.num_kv_heads * D;
  std::map<std::string, std::vector<uint64_t>> t = {{"model.embed_tokens.weight", {c.vocab_size, H}},
                                                    {"lm_head.weight", {c.vocab_size, H}},
                                                    {"model.norm.weight", {H}}};
  for (uint32_t l = 0; l < c.num_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    t[p + "self_attn.q_proj.weight"] = {qd, H};
    t[p + "self_attn.k_proj.weight"] = {kvd, H};
    t[p + "self_attn.v_proj.weight"] = {kvd, H};
    t[p + "self_attn.o_proj.weight"] = {H, qd};
    t[p + "self_attn.q_norm.weight"] = {D};
    t[p + "self_attn.k_norm.weight"] = {D};
    t[p + "input_layernorm.weight"] = {H};
    t[p + "post_attention_layernorm.weight"] = {H};
    t[p + "mlp.gate.weight"] = {c.num_experts, H};
  }
  return t;
}

TEST(Synth, Presets) {
  const SynthShape* s = find_synth_shape("qwen3-30b-a3b");
  ASSERT_NE(s, nullptr);
  auto c = model::parse_model_config(nlohmann::json(synth_config(*s, s->layers, WeightType::q4, 0)));
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->model_type, "qwen3_moe");
  EXPECT_EQ(c->num_layers, 48u);
  EXPECT_EQ(c->hidden_size, 2048u);
  EXPECT_EQ(c->num_heads, 32u);
  EXPECT_EQ(c->num_kv_heads, 4u);
  EXPECT_EQ(c->head_dim, 128u);
  EXPECT_EQ(c->num_experts, 128u);
  EXPECT_EQ(c->num_experts_per_tok, 8u);
  EXPECT_EQ(c->moe_intermediate_size, 768u);
  EXPECT_EQ(c->vocab_size, 151936u);
  EXPECT_EQ(c->max_position_embeddings, 40960u);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c->rope.theta, 1e6);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_TRUE(c->norm_topk_prob);
  // The q4 slab of the real shape: 128 × 48 of them make the ~16 GB of experts.
  const auto slab = qwen3_moe_slab_layout(*c, WeightType::q4);
  EXPECT_EQ(slab.slab_bytes, 2654208u);
  for (const auto& shape : synth_shapes()) EXPECT_EQ(find_synth_shape(shape.name), &shape);
  EXPECT_EQ(find_synth_shape("qwen3-31b"), nullptr);
}

TEST(Synth, MiniAtEveryQuantOpensAndVerifies) {
  for (WeightType quant : kQuants) {
    SCOPED_TRACE(std::string(ops::weight_type_name(quant)));
    TempDir tmp("synth");
    std::vector<SynthProgress> progress;
    auto o = mini(tmp / "out", quant);
    o.on_progress = [&](const SynthProgress& p) { progress.push_back(p); };
    auto r = synthesize(o);
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->layers, 4u);
    EXPECT_EQ(r->experts, 64u);
    EXPECT_FALSE(fs::exists(tmp / "out.partial"));
    EXPECT_FALSE(fs::exists(tmp / "out" / ".synth"));
    EXPECT_FALSE(fs::exists(tmp / "out" / "tokenizer.json"));
    ASSERT_EQ(progress.size(), 5u);
    EXPECT_FALSE(progress[0].layer.has_value());
    EXPECT_EQ(progress[0].bytes, r->non_expert_bytes);
    EXPECT_EQ(progress[4].done, 4u);

    auto config = model::load_model_config(tmp / "out");
    ASSERT_TRUE(config.ok()) << config.error().message;
    EXPECT_EQ(config->num_layers, 4u);
    EXPECT_EQ(config->raw["mach_synth"]["shape"], "qwen3-moe-mini");

    auto st = model::SafetensorsFile::open(tmp / "out" / "model.safetensors");
    ASSERT_TRUE(st.ok()) << st.error().message;
    const auto expected = expected_tensors(*config);
    EXPECT_EQ(st->tensors().size(), expected.size());
    for (const auto& [name, shape] : expected) {
      const auto* t = st->find(name);
      ASSERT_NE(t, nullptr) << name;
      EXPECT_EQ(t->dtype, model::DType::bf16) << name;
      EXPECT_EQ(t->shape, shape) << name;
    }
    EXPECT_EQ(fs::file_size(tmp / "out" / "model.safetensors"), r->non_expert_bytes);

    auto sidecar = Sidecar::open(tmp / "out" / kSidecarDir);
    ASSERT_TRUE(sidecar.ok()) << sidecar.error().message;
    const auto& layout = sidecar->layout();
    EXPECT_EQ(layout.quant, quant);
    EXPECT_EQ(layout.fingerprint, model_fingerprint(*config, quant));
    EXPECT_EQ(layout.slab_bytes, qwen3_moe_slab_layout(*config, quant).slab_bytes);
    ASSERT_EQ(layout.layers.size(), 4u);
    EXPECT_EQ(layout.expert_bytes(), r->expert_bytes);
    std::set<uint64_t> checksums;
    for (const auto& layer : layout.layers) {
      ASSERT_EQ(layer.experts.size(), 16u);
      for (uint32_t e = 0; e < layer.experts.size(); ++e) {
        EXPECT_EQ(layer.experts[e].source_id, e);
        auto v = sidecar->verify_expert(layer.layer, e);
        EXPECT_TRUE(v.ok()) << v.error().message;
        checksums.insert(layer.experts[e].checksum);
      }
    }
    EXPECT_EQ(checksums.size(), 64u) << "every expert differs";
  }
}

TEST(Synth, WeightStatisticsMatchTheIntendedStd) {
  for (WeightType quant : kQuants) {
    SCOPED_TRACE(std::string(ops::weight_type_name(quant)));
    TempDir tmp("synth");
    ASSERT_TRUE(synthesize(mini(tmp / "out", quant, 3)).ok());
    auto config = model::load_model_config(tmp / "out").value();
    auto sidecar = Sidecar::open(tmp / "out" / kSidecarDir).value();
    const auto& layout = sidecar.layout();
    for (const auto& layer : layout.layers) {
      std::vector<std::vector<float>> pooled(layout.tensors.size());
      for (uint32_t e = 0; e < layer.experts.size(); ++e) {
        const auto slab = sidecar.read_expert(layer.layer, e).value();
        uint64_t end = 0;
        for (size_t t = 0; t < layout.tensors.size(); ++t) {
          const SlabTensor& st = layout.tensors[t];
          const auto w = ops::dequantize(quant, slab.span().subspan(st.offset, st.bytes), st.rows, st.cols);
          const double want = *synth_weight_std(config, st.name);
          expect_distribution(w, want, fmt::format("layer {} expert {} {}", layer.layer, e, st.name));
          pooled[t].insert(pooled[t].end(), w.begin(), w.end());
          end = st.offset + st.bytes;
        }
        for (uint64_t i = end; i < layout.slab_bytes; ++i) ASSERT_EQ(slab.data()[i], std::byte{0}) << "slab tail";
      }
      for (size_t t = 0; t < layout.tensors.size(); ++t) {
        expect_distribution(pooled[t], *synth_weight_std(config, layout.tensors[t].name),
                            fmt::format("layer {} {}, all experts", layer.layer, layout.tensors[t].name));
      }
    }
    auto st = model::SafetensorsFile::open(tmp / "out" / "model.safetensors").value();
    for (const auto& info : st.tensors()) {
      const auto v = st.to_f32(info).value();
      const auto want = synth_weight_std(config, info.name);
      ASSERT_TRUE(want.has_value()) << info.name;
      if (*want == 0) {
        EXPECT_TRUE(std::all_of(v.begin(), v.end(), [](float x) { return x == 1.0f; })) << info.name;
        continue;
      }
      expect_distribution(v, *want, info.name);
    }
  }
}

TEST(Synth, SameSeedSameBytesAnyThreadsOtherSeedDiffers) {
  TempDir tmp("synth");
  auto a = mini(tmp / "a", WeightType::q4, 7);
  a.threads = 1;
  auto b = mini(tmp / "b", WeightType::q4, 7);
  b.threads = 3;
  ASSERT_TRUE(synthesize(a).ok());
  ASSERT_TRUE(synthesize(b).ok());
  EXPECT_TRUE(tree(tmp / "a") == tree(tmp / "b"));
  ASSERT_TRUE(synthesize(mini(tmp / "c", WeightType::q4, 8)).ok());
  const auto ta = tree(tmp / "a"), tc = tree(tmp / "c");
  ASSERT_EQ(ta.size(), tc.size());
  for (const auto& [name, bytes] : ta) {
    if (name == "config.json") continue;  // differs in its seed only
    EXPECT_NE(bytes, tc.at(name)) << name;
  }
}

TEST(Synth, KilledRunLeavesNoOutputAndARerunCleansUp) {
  TempDir tmp("synth");
  const fs::path out = tmp / "out";
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {  // the child dies by SIGKILL once the first layer file is complete, other slabs in flight
    auto o = mini(out, WeightType::bf16);
    o.threads = 2;
    o.on_progress = [](const SynthProgress& p) {
      if (p.layer) ::kill(::getpid(), SIGKILL);
    };
    (void)synthesize(o);
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "the child was not killed mid-way";
  EXPECT_FALSE(fs::exists(out));
  EXPECT_TRUE(fs::exists(tmp / "out.partial" / ".synth"));
  EXPECT_FALSE(fs::exists(tmp / "out.partial" / "config.json"));
  EXPECT_FALSE(fs::exists(tmp / "out.partial" / kSidecarDir / kLayoutFile));

  auto r = synthesize(mini(out, WeightType::bf16));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_FALSE(fs::exists(tmp / "out.partial"));
  EXPECT_TRUE(Sidecar::open(out / kSidecarDir).value().verify_all().ok());
}

TEST(Synth, RefusesBadArguments) {
  TempDir tmp("synth");
  auto o = mini(tmp / "out", WeightType::q4);
  o.shape = "qwen3-31b";
  auto r = synthesize(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("qwen3-30b-a3b, qwen3-moe-mini"), std::string::npos) << r.error().message;

  o = mini(tmp / "out", WeightType::f32);
  ASSERT_FALSE(synthesize(o).ok());
  o = mini(tmp / "out", WeightType::q4);
  o.layers = 0;
  r = synthesize(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("--layers 0"), std::string::npos);

  fs::create_directories(tmp / "out");
  r = synthesize(mini(tmp / "out", WeightType::q4));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("already exists"), std::string::npos);

  fs::create_directories(tmp / "other.partial");  // not ours: no marker
  r = synthesize(mini(tmp / "other", WeightType::q4));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("not written by mach synth"), std::string::npos);
  EXPECT_TRUE(fs::exists(tmp / "other.partial"));
}

// ---- A float forward pass of qwen3_moe over the synthetic weights (test-only, T tokens, causal). ----

struct Forward {
  std::vector<double> residual_rms;  // after each layer
  std::vector<std::set<uint32_t>> experts_used;  // per layer, over all tokens
  double mean_top_weight = 0;        // the largest renormalized routing weight, averaged over tokens and layers
  std::vector<float> logits;         // [T, V]
};

void rms_norm(std::span<float> x, std::span<const float> w, double eps) {
  double s = 0;
  for (float v : x) s += double(v) * v;
  const double r = 1 / std::sqrt(s / x.size() + eps);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(x[i] * r * w[i]);
}

// y[n] = sum_k w[n, k] x[k]
std::vector<float> matvec(const std::vector<float>& w, std::span<const float> x, size_t n) {
  std::vector<float> y(n);
  const size_t k = x.size();
  for (size_t i = 0; i < n; ++i) {
    double s = 0;
    for (size_t j = 0; j < k; ++j) s += double(w[i * k + j]) * x[j];
    y[i] = static_cast<float>(s);
  }
  return y;
}

void rope(std::span<float> head, uint32_t pos, double theta) {
  const size_t half = head.size() / 2;
  for (size_t i = 0; i < half; ++i) {
    const double a = pos * std::pow(theta, -2.0 * i / head.size());
    const float x1 = head[i], x2 = head[i + half];
    head[i] = static_cast<float>(x1 * std::cos(a) - x2 * std::sin(a));
    head[i + half] = static_cast<float>(x2 * std::cos(a) + x1 * std::sin(a));
  }
}

Forward forward(const fs::path& dir, const std::vector<uint32_t>& tokens) {
  const auto c = model::load_model_config(dir).value();
  auto st = model::SafetensorsFile::open(dir / "model.safetensors").value();
  auto sidecar = Sidecar::open(dir / kSidecarDir).value();
  const auto& lay = sidecar.layout();
  auto w = [&](const std::string& name) { return st.to_f32(*st.find(name)).value(); };
  const size_t T = tokens.size(), H = c.hidden_size, D = c.head_dim, nh = c.num_heads, kvh = c.num_kv_heads;
  const size_t E = c.num_experts, K = c.num_experts_per_tok, I = c.moe_intermediate_size;
  const double eps = c.rms_norm_eps;
  Forward f;
  std::vector<std::vector<float>> x(T);
  const auto embed = w("model.embed_tokens.weight");
  for (size_t t = 0; t < T; ++t) x[t].assign(embed.begin() + tokens[t] * H, embed.begin() + (tokens[t] + 1) * H);
  for (uint32_t l = 0; l < c.num_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    const auto in_norm = w(p + "input_layernorm.weight"), post_norm = w(p + "post_attention_layernorm.weight");
    const auto wq = w(p + "self_attn.q_proj.weight"), wk = w(p + "self_attn.k_proj.weight"),
               wv = w(p + "self_attn.v_proj.weight"), wo = w(p + "self_attn.o_proj.weight");
    const auto qn = w(p + "self_attn.q_norm.weight"), kn = w(p + "self_attn.k_norm.weight");
    const auto router = w(p + "mlp.gate.weight");
    std::vector<std::vector<float>> q(T), k(T), v(T);
    for (size_t t = 0; t < T; ++t) {
      std::vector<float> h = x[t];
      rms_norm(h, in_norm, eps);
      q[t] = matvec(wq, h, nh * D), k[t] = matvec(wk, h, kvh * D), v[t] = matvec(wv, h, kvh * D);
      for (size_t i = 0; i < nh; ++i) {
        rms_norm({&q[t][i * D], D}, qn, eps);
        rope({&q[t][i * D], D}, static_cast<uint32_t>(t), c.rope.theta);
      }
      for (size_t i = 0; i < kvh; ++i) {
        rms_norm({&k[t][i * D], D}, kn, eps);
        rope({&k[t][i * D], D}, static_cast<uint32_t>(t), c.rope.theta);
      }
    }
    for (size_t t = 0; t < T; ++t) {
      std::vector<float> attn(nh * D);
      for (size_t i = 0; i < nh; ++i) {
        const size_t g = i / (nh / kvh);
        std::vector<double> s(t + 1);
        double mx = -1e300, sum = 0;
        for (size_t u = 0; u <= t; ++u) {
          double d = 0;
          for (size_t j = 0; j < D; ++j) d += double(q[t][i * D + j]) * k[u][g * D + j];
          s[u] = d / std::sqrt(double(D));
          mx = std::max(mx, s[u]);
        }
        for (auto& e : s) sum += (e = std::exp(e - mx));
        for (size_t u = 0; u <= t; ++u)
          for (size_t j = 0; j < D; ++j) attn[i * D + j] += static_cast<float>(s[u] / sum * v[u][g * D + j]);
      }
      const auto o = matvec(wo, attn, H);
      for (size_t j = 0; j < H; ++j) x[t][j] += o[j];
    }
    std::map<uint32_t, std::pair<std::vector<float>, std::vector<float>>> experts;  // dequantized when first used
    auto expert = [&](uint32_t e) -> const auto& {
      auto it = experts.find(e);
      if (it != experts.end()) return it->second;
      const auto slab = sidecar.read_expert(l, e).value();
      const auto& a = lay.tensors[0];
      const auto& b = lay.tensors[1];
      return experts[e] = {ops::dequantize(lay.quant, slab.span().subspan(a.offset, a.bytes), a.rows, a.cols),
                           ops::dequantize(lay.quant, slab.span().subspan(b.offset, b.bytes), b.rows, b.cols)};
    };
    f.experts_used.emplace_back();
    for (size_t t = 0; t < T; ++t) {
      std::vector<float> h = x[t];
      rms_norm(h, post_norm, eps);
      const auto logits = matvec(router, h, E);
      std::vector<uint32_t> ids(E);
      for (uint32_t e = 0; e < E; ++e) ids[e] = e;
      std::partial_sort(ids.begin(), ids.begin() + K, ids.end(),
                        [&](uint32_t a, uint32_t b) { return logits[a] > logits[b]; });
      double sum = 0;
      std::vector<double> p(K);
      for (size_t j = 0; j < K; ++j) sum += (p[j] = std::exp(logits[ids[j]] - logits[ids[0]]));
      f.mean_top_weight += p[0] / sum / (T * c.num_layers);
      for (size_t j = 0; j < K; ++j) {
        const uint32_t e = ids[j];
        f.experts_used.back().insert(e);
        const auto& [gate_up, down] = expert(e);
        const auto gu = matvec(gate_up, h, 2 * I);
        std::vector<float> act(I);
        for (size_t i = 0; i < I; ++i) act[i] = static_cast<float>(gu[i] / (1 + std::exp(-double(gu[i]))) * gu[I + i]);
        const auto y = matvec(down, act, H);
        for (size_t i = 0; i < H; ++i) x[t][i] += static_cast<float>(p[j] / sum * y[i]);
      }
    }
    double s = 0;
    for (const auto& row : x)
      for (float vv : row) s += double(vv) * vv;
    f.residual_rms.push_back(std::sqrt(s / (T * H)));
  }
  const auto final_norm = w("model.norm.weight"), head = w("lm_head.weight");
  for (size_t t = 0; t < T; ++t) {
    rms_norm(x[t], final_norm, eps);
    const auto logits = matvec(head, x[t], c.vocab_size);
    f.logits.insert(f.logits.end(), logits.begin(), logits.end());
  }
  return f;
}

TEST(Synth, ActivationsAndRoutingStaySaneThroughFortyEightLayers) {
  TempDir tmp("synth");
  auto o = mini(tmp / "out", WeightType::q4, 11);
  o.layers = 48;  // the depth of Qwen3-30B-A3B at the mini width
  ASSERT_TRUE(synthesize(o).ok());
  const std::vector<uint32_t> tokens = {1, 17, 300, 42, 42, 511, 9, 128, 77, 256, 3, 400};
  const Forward f = forward(tmp / "out", tokens);
  ASSERT_EQ(f.residual_rms.size(), 48u);
  fmt::print("residual rms after layers 1, 24, 48: {:.3f} {:.3f} {:.3f}; mean top routing weight {:.3f}; logit std "
             "{:.3f}\n", f.residual_rms[0], f.residual_rms[23], f.residual_rms[47], f.mean_top_weight, stats(f.logits).std);
  for (size_t l = 0; l < f.residual_rms.size(); ++l) {
    // Embeddings have rms 1 and the branches together add variance at most 1 (synth_weight_std).
    EXPECT_GT(f.residual_rms[l], 0.8) << "layer " << l;
    EXPECT_LT(f.residual_rms[l], 1.6) << "layer " << l;
    // 12 tokens × top-4 = 48 picks of 16 experts: spread routing uses most of them in every layer.
    EXPECT_GE(f.experts_used[l].size(), 12u) << "layer " << l;
  }
  EXPECT_GT(f.residual_rms.back(), f.residual_rms.front()) << "the layers add to the residual stream";
  EXPECT_LT(f.mean_top_weight, 0.6) << "routing weights are not one-hot";
  const Stats s = stats(f.logits);
  EXPECT_TRUE(std::all_of(f.logits.begin(), f.logits.end(), [](float v) { return std::isfinite(v); }));
  EXPECT_GT(s.std, 0.5);
  EXPECT_LT(s.std, 2.0);
}

// ---- The command line: mach synth, then mach check and mach generate on its output. ----

struct CliRun {
  int status = -1;
  std::string output;  // stdout and stderr
};

CliRun run_mach(const std::string& args) {
  const std::string cmd = std::string(MACH_BINARY_DIR) + "/mach " + args + " 2>&1";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  CliRun r;
  if (!pipe) return r;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, pipe)) r.output.append(buf, n);
  const int status = ::pclose(pipe);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

TEST(SynthCli, CheckAcceptsTheOutputAndGenerateAsksForTokenIds) {
  TempDir tmp("synth_cli");
  const std::string out = (tmp / "mini").string();
  const CliRun help = run_mach("synth --help");
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.output.find("qwen3-30b-a3b"), std::string::npos) << help.output;
  EXPECT_NE(help.output.find("qwen3-moe-mini"), std::string::npos) << help.output;

  const CliRun synth = run_mach("synth --shape qwen3-moe-mini --quant q8_0 --layers 2 --seed 5 --out " + out);
  ASSERT_EQ(synth.status, 0) << synth.output;
  EXPECT_NE(synth.output.find("synth: [2/2] layer"), std::string::npos) << synth.output;
  EXPECT_NE(synth.output.find("GB/s"), std::string::npos) << synth.output;

  const CliRun check = run_mach("check " + out + " --verify");
  EXPECT_EQ(check.status, 0) << check.output;
  EXPECT_NE(check.output.find("supported: yes"), std::string::npos) << check.output;
  EXPECT_NE(check.output.find("sidecar: verified"), std::string::npos) << check.output;
  EXPECT_NE(check.output.find("quantization: q8_0"), std::string::npos) << check.output;

  const CliRun generate = run_mach("generate " + out + " --prompt hello");
  EXPECT_EQ(generate.status, 1) << generate.output;
  EXPECT_NE(generate.output.find("tokenizer.json not found"), std::string::npos) << generate.output;
  EXPECT_NE(generate.output.find("--prompt-ids"), std::string::npos) << generate.output;

  const CliRun zero = run_mach("synth --shape qwen3-moe-mini --layers 0 --out " + out + "0");
  EXPECT_EQ(zero.status, 1);
  EXPECT_NE(zero.output.find("--layers 0: give 1 to"), std::string::npos) << zero.output;

  const CliRun again = run_mach("synth --shape qwen3-moe-mini --out " + out);
  EXPECT_EQ(again.status, 1);
  EXPECT_NE(again.output.find("already exists"), std::string::npos) << again.output;
}

}  // namespace
}  // namespace mach::experts
