// Op cases for the embedding gather from every weight format, odd row widths for the 16-bit formats (rows that
// start mid-word), an out-of-range id, and Gemma's sqrt(H) multiplier.
#include <fmt/format.h>

#include <cmath>

#include "op_case.hpp"
#include "ops/embedding.hpp"
#include "ops/reference/embedding.hpp"
#include "ops/weight_format.hpp"

namespace mach::test {
namespace {

class EmbeddingCase : public SimpleOpCase {
 public:
  EmbeddingCase(ops::WeightType type, uint32_t vocab, uint32_t h, uint32_t tokens, float multiplier)
      : type_(type), vocab_(vocab), h_(h), tokens_(tokens), multiplier_(multiplier) {}
  std::string op() const override { return "embedding"; }
  std::string params() const override {
    return fmt::format("type={} v={} h={} t={} mult={}", ops::weight_type_name(type_), vocab_, h_, tokens_,
                       multiplier_);
  }
  double max_nmse() const override { return 1e-12; }
  double bytes() const override {
    return double(ops::weight_bytes(type_, vocab_, h_)) / vocab_ * tokens_ + 4.0 * tokens_ * h_;
  }

  void prepare(gpu::Context& context, Rng& rng) override {
    const auto values = rng.normal_vec(uint64_t{vocab_} * h_);
    const auto packed = ops::quantize(type_, values, vocab_, h_);
    const auto table = ops::dequantize(type_, packed, vocab_, h_);
    std::vector<uint32_t> ids(tokens_);
    for (auto& id : ids) id = rng.below(vocab_);
    if (tokens_ > 2) ids[1] = vocab_ + 3;  // out of range: a zero row
    table_ = GuardedBuffer(context, packed.size(), "table");
    table_.upload(packed);
    ids_ = GuardedBuffer(context, tokens_ * 4ull, "ids");
    ids_.upload(ids);
    output_ = GuardedBuffer(context, uint64_t{tokens_} * h_ * 4, "out");
    expected_.resize(uint64_t{tokens_} * h_);
    ref::embedding(table, vocab_, h_, ids, expected_, multiplier_);
    inputs_ = {&table_, &ids_};
  }
  void record(gpu::CommandList& cmd) override {
    const auto binding = table_.in();
    const ops::WeightRef ref{binding.buffer, binding.offset, type_, vocab_, h_};
    ops::embedding(cmd, ref, ids_.in(), output_.out(), tokens_, multiplier_);
  }

 private:
  ops::WeightType type_;
  uint32_t vocab_, h_, tokens_;
  float multiplier_;
  GuardedBuffer table_, ids_;
};

const bool registered = register_cases([](CaseSet set, CaseList& cases) {
  using W = ops::WeightType;
  if (set == CaseSet::test) {
    cases.push_back(std::make_unique<EmbeddingCase>(W::f32, 50, 33, 7, 1.0f));
    cases.push_back(std::make_unique<EmbeddingCase>(W::f16, 51, 37, 5, 1.0f));
    cases.push_back(std::make_unique<EmbeddingCase>(W::bf16, 47, 65, 9, std::sqrt(65.0f)));
    cases.push_back(std::make_unique<EmbeddingCase>(W::q8_0, 29, 96, 6, 1.0f));
    cases.push_back(std::make_unique<EmbeddingCase>(W::q4, 31, 192, 4, 16.0f));
    cases.push_back(std::make_unique<EmbeddingCase>(W::q4, 3, 64, 1, 1.0f));
  } else {
    for (W type : {W::f16, W::bf16, W::q8_0, W::q4})
      cases.push_back(std::make_unique<EmbeddingCase>(type, 8192, 4096, 512, 1.0f));
  }
});

}  // namespace
}  // namespace mach::test
