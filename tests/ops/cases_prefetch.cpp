// Op cases for the L2 prefetch (ops/prefetch.hpp): each sink word must be the XOR of exactly the units its
// workgroup was to read (a workgroup that skipped a unit, read past its range or read the wrong expert's slot
// changes it; one that wrote nothing leaves the guard pattern). The weights are random bytes: the prefetch
// never decodes them.
#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <cmath>

#include "op_case.hpp"
#include "ops/prefetch.hpp"

namespace mach::test {
namespace {

uint32_t xor_words(std::span<const std::byte> bytes) {
  uint32_t v = 0;
  for (size_t i = 0; i + 4 <= bytes.size(); i += 4) {
    uint32_t w;
    std::memcpy(&w, bytes.data() + i, 4);
    v ^= w;
  }
  return v;
}

// The sink words of one range: the XOR of each kPrefetchUnitsPerWorkgroup units.
void append_range_words(std::span<const std::byte> range, std::vector<uint32_t>& words) {
  const size_t per = size_t{ops::kPrefetchUnitsPerWorkgroup} * 16;
  for (size_t at = 0; at < range.size(); at += per) words.push_back(xor_words(range.subspan(at, std::min(per, range.size() - at))));
}

std::vector<std::byte> random_bytes(size_t n, Rng& rng) {
  std::vector<std::byte> b(n);
  for (auto& x : b) x = static_cast<std::byte>(rng.engine()() & 0xff);
  return b;
}

// Dense (experts == 0): one [rows, cols] matrix at a 16-byte offset that is not the buffer's start. Experts:
// a stack of `experts` matrices with a padded stride, a slot table that leaves some experts out, and `pairs`
// distinct ids (XOR cancels a range read twice, so duplicates would hide a double read).
class PrefetchCase : public OpCase {
 public:
  PrefetchCase(ops::WeightType type, uint32_t rows, uint32_t cols, uint32_t experts = 0, uint32_t pairs = 0)
      : type_(type), rows_(rows), cols_(cols), experts_(experts), pairs_(pairs) {}
  std::string op() const override { return experts_ ? "l2_prefetch_experts" : "l2_prefetch"; }
  std::string params() const override {
    return fmt::format("type={} n={} k={} experts={} pairs={}", ops::weight_type_name(type_), rows_, cols_, experts_,
                       pairs_);
  }
  double max_nmse() const override { return 0; }
  double bytes() const override { return static_cast<double>(matrix_bytes()) * std::max(1u, pairs_); }

  void prepare(gpu::Context& context, Rng& rng) override {
    const uint64_t mb = matrix_bytes();
    if (experts_ == 0) {
      const uint64_t offset = 48;  // 3 units in: below any storage-buffer offset alignment
      auto bytes = random_bytes(offset + mb + 64, rng);
      append_range_words(std::span(bytes).subspan(offset, mb), expected_);
      w_ = GuardedBuffer(context, bytes.size(), "w");
      w_.upload(bytes);
      ref_ = {w_.in().buffer, w_.in().offset + offset, type_, rows_, cols_};
      ranges_ = 1;
    } else {
      stride_ = mb + 1024;
      auto bytes = random_bytes(stride_ * experts_, rng);
      w_ = GuardedBuffer(context, bytes.size(), "w");
      w_.upload(bytes);
      // Experts 0, 3, 6, ... have no slot; the others sit in slots of a rotated order.
      std::vector<uint32_t> table(experts_ + 5), ids;
      for (uint32_t e = 0; e < table.size(); ++e) table[e] = e % 3 == 0 ? ops::kNoSlot : (e * 7 + 1) % experts_;
      for (uint32_t j = 0; j < pairs_; ++j) {
        const uint32_t e = (j * 5 + 2) % table.size();  // distinct while pairs <= table.size()
        ids.push_back(e);
        if (table[e] != ops::kNoSlot)
          append_range_words(std::span(bytes).subspan(table[e] * stride_, mb), expected_);
        else
          expected_.resize(expected_.size() + ops::prefetch_sink_words(type_, rows_, cols_, 1), 0u);
      }
      ids_ = GuardedBuffer(context, ids.size() * 4, "ids");
      table_ = GuardedBuffer(context, table.size() * 4, "slot_table");
      ids_.upload(ids);
      table_.upload(table);
      ranges_ = pairs_;
    }
    assert(expected_.size() == ops::prefetch_sink_words(type_, rows_, cols_, ranges_));
    sink_ = GuardedBuffer(context, uint64_t{ops::prefetch_sink_words(type_, rows_, cols_, ranges_)} * 4, "sink");
  }
  void record(gpu::CommandList& cmd) override {
    if (experts_ == 0) {
      ops::prefetch_weights(cmd, ref_, sink_.out());
    } else {
      const ops::ExpertWeightsRef stack{w_.in().buffer, w_.in().offset, stride_, experts_, type_, rows_, cols_};
      ops::prefetch_experts(cmd, stack, {ids_.in(), table_.in(), experts_ + 5, 1}, pairs_, sink_.out());
    }
  }
  void poison() override { sink_.poison(); }
  CheckResult check(gpu::Context&) override {
    CheckResult r;
    const auto got = sink_.download<uint32_t>();
    for (size_t i = 0; i < expected_.size(); ++i) {
      if (got.size() != expected_.size() || got[i] != expected_[i]) {
        r.nmse = INFINITY;
        r.detail = fmt::format("sink word {} of {} is {:08x}, expected {:08x}", i, expected_.size(),
                               i < got.size() ? got[i] : 0u, expected_[i]);
        break;
      }
    }
    std::string why;
    for (const GuardedBuffer* b : {&w_, &sink_, &ids_, &table_}) {
      if (b->bytes() > 0 && !b->guards_intact(&why)) {
        r.guards_ok = false;
        r.detail += why;
      }
    }
    return r;
  }

 private:
  uint64_t matrix_bytes() const { return ops::weight_bytes(type_, rows_, cols_); }
  ops::WeightType type_;
  uint32_t rows_, cols_, experts_, pairs_;
  uint32_t ranges_ = 1;
  std::vector<uint32_t> expected_;  // the sink's words
  uint64_t stride_ = 0;
  ops::WeightRef ref_;
  GuardedBuffer w_, ids_, table_, sink_;
};

const bool registered = register_cases([](CaseSet set, CaseList& cases) {
  using ops::WeightType;
  if (set == CaseSet::test) {
    cases.push_back(std::make_unique<PrefetchCase>(WeightType::q4, 5, 64));       // less than one workgroup
    cases.push_back(std::make_unique<PrefetchCase>(WeightType::q4, 300, 256));    // several, the last partial
    cases.push_back(std::make_unique<PrefetchCase>(WeightType::bf16, 129, 1000));
    cases.push_back(std::make_unique<PrefetchCase>(WeightType::q4, 96, 192, 10, 8));
    cases.push_back(std::make_unique<PrefetchCase>(WeightType::q8_0, 7, 32, 4, 3));
  } else {
    // Qwen3-30B-A3B's o projection and one token's down projections (8 of 128 experts).
    cases.push_back(std::make_unique<PrefetchCase>(WeightType::q4, 2048, 4096));
    cases.push_back(std::make_unique<PrefetchCase>(WeightType::q4, 2048, 768, 128, 8));
  }
});

}  // namespace
}  // namespace mach::test
