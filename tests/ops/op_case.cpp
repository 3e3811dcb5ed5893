#include "op_case.hpp"

#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>

#include "ops/reference/matmul.hpp"
#include "ops/weight_format.hpp"

namespace mach::test {

GuardedBuffer::GuardedBuffer(gpu::Context& context, uint64_t bytes, std::string label)
    : context_(&context), bytes_(bytes) {
  buffer_ = context.create_buffer(kGuardBytes * 2 + padded(), gpu::MemoryKind::device, std::move(label));
  context.fill(buffer_, 0, buffer_.size(), kGuardWord);
}

void GuardedBuffer::upload_bytes(std::span<const std::byte> data) {
  assert(data.size() <= bytes_);
  context_->upload(buffer_, kGuardBytes, data);
}

void GuardedBuffer::poison() {
  if (bytes_ >= 4) context_->fill(buffer_, kGuardBytes, bytes_ / 4 * 4, 0x7fc00000u);  // quiet NaN
}

std::vector<std::byte> GuardedBuffer::download_bytes() const {
  std::vector<std::byte> out(bytes_);
  context_->download(buffer_, kGuardBytes, out);
  return out;
}

bool GuardedBuffer::guards_intact(std::string* why) const {
  const uint64_t tail = buffer_.size() - kGuardBytes - bytes_;
  std::vector<std::byte> head(kGuardBytes), rest(tail);
  context_->download(buffer_, 0, head);
  context_->download(buffer_, kGuardBytes + bytes_, rest);
  uint32_t word = kGuardWord;
  const auto* pattern = reinterpret_cast<const std::byte*>(&word);
  for (uint64_t i = 0; i < head.size(); ++i) {
    if (head[i] != pattern[i % 4]) {
      if (why) *why = fmt::format("'{}': guard byte {} before the output was overwritten", buffer_.label(), kGuardBytes - i);
      return false;
    }
  }
  // The tail guard starts at bytes_, which need not be a multiple of 4: compare against the absolute offset.
  for (uint64_t i = 0; i < rest.size(); ++i) {
    const uint64_t absolute = kGuardBytes + bytes_ + i;
    if (rest[i] != pattern[absolute % 4]) {
      if (why) *why = fmt::format("'{}': guard byte {} after the output was overwritten", buffer_.label(), i);
      return false;
    }
  }
  return true;
}

namespace {

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

template <class T>
void put(std::vector<std::byte>& out, uint64_t offset, T value) {
  std::memcpy(out.data() + offset, &value, sizeof(T));
}

}  // namespace

std::vector<std::byte> random_weights(ops::WeightType type, uint32_t rows, uint32_t cols, Rng& rng) {
  std::vector<std::byte> out(ops::weight_bytes(type, rows, cols));
  uint64_t state = rng.engine()();
  const uint64_t elements = uint64_t{rows} * cols;
  // Float types: elements from a table of normal samples, 4 per 64-bit draw.
  std::vector<float> table = rng.normal_vec(4096);
  switch (type) {
    case ops::WeightType::f32:
      for (uint64_t i = 0; i < elements; i += 4) {
        const uint64_t r = splitmix64(state);
        for (uint64_t j = 0; j < 4 && i + j < elements; ++j) put(out, (i + j) * 4, table[(r >> (16 * j)) & 4095]);
      }
      break;
    case ops::WeightType::f16:
    case ops::WeightType::bf16: {
      std::vector<uint16_t> bits(table.size());
      for (size_t i = 0; i < table.size(); ++i)
        bits[i] = type == ops::WeightType::f16 ? ops::float_to_half(table[i]) : ops::float_to_bf16(table[i]);
      for (uint64_t i = 0; i < elements; i += 4) {
        const uint64_t r = splitmix64(state);
        for (uint64_t j = 0; j < 4 && i + j < elements; ++j) put(out, (i + j) * 2, bits[(r >> (16 * j)) & 4095]);
      }
      break;
    }
    case ops::WeightType::q8_0:
    case ops::WeightType::q4: {
      const uint64_t quant_bytes = type == ops::WeightType::q8_0 ? elements : elements / 2;
      for (uint64_t i = 0; i < quant_bytes; i += 8) {
        uint64_t r = splitmix64(state);
        if (type == ops::WeightType::q8_0) {
          // q8_0 quants are in [-127, 127]: turn -128 (0x80) bytes into -127.
          for (int j = 0; j < 8; ++j)
            if (((r >> (8 * j)) & 0xff) == 0x80) r |= uint64_t{1} << (8 * j);
        }
        std::memcpy(out.data() + i, &r, std::min<uint64_t>(8, quant_bytes - i));
      }
      const uint64_t so = ops::scales_offset(type, rows, cols);
      const uint64_t groups = elements / ops::group_size(type);
      for (uint64_t g = 0; g < groups; ++g) {
        const float u = static_cast<float>(splitmix64(state) >> 40) / 16777216.0f;  // [0, 1)
        if (type == ops::WeightType::q8_0) {
          put(out, so + g * 2, ops::float_to_half(0.004f + 0.012f * u));  // |w| up to ~2
        } else {
          const float scale = 0.1f + 0.2f * u;
          const uint32_t min_bits = ops::float_to_half(-(6.0f + u * 3.0f) * scale);
          const uint32_t word = ops::float_to_half(scale) | (min_bits << 16);
          put(out, so + g * 4, word);
        }
      }
      break;
    }
  }
  return out;
}

GappedMatrices gapped_matrices(ops::WeightType type, std::span<const uint32_t> ns, uint32_t k,
                               std::span<const float> x, uint32_t tokens, Rng& rng) {
  GappedMatrices m;
  for (uint32_t n : ns) {
    m.bytes.resize(m.bytes.size() + 512);  // a gap (not read)
    m.offsets.push_back(m.bytes.size());
    const auto w = random_weights(type, n, k, rng);
    m.bytes.insert(m.bytes.end(), w.begin(), w.end());
    m.bytes.resize((m.bytes.size() + 255) / 256 * 256);
    m.products.emplace_back(uint64_t{tokens} * n);
    ref::mul_mat(type, w, n, k, x, m.products.back(), tokens);
  }
  return m;
}

size_t q4h_words_unlike_prep(gpu::Context& context, const GuardedBuffer& y, const GuardedBuffer& xh,
                             const GuardedBuffer& xg, uint32_t rows, uint32_t k) {
  const uint64_t n = uint64_t{rows} * k;
  GuardedBuffer want_xh(context, n * 2, "xh by q4h_prep"), want_xg(context, n / 4, "xg by q4h_prep");
  auto cmd = context.begin_commands();
  cmd->begin();
  const struct {
    uint32_t rows, k;
  } push{rows, k};
  cmd->dispatch(context.pipeline("q4h_prep"), {y.in(), want_xh.out(), want_xg.out()}, push,
                gpu::flat_groups(n / 64));  // one workgroup per 64-column group
  context.wait(context.submit(*cmd));
  size_t words = 0;
  for (const auto& [got, want] : {std::pair{&xh, &want_xh}, std::pair{&xg, &want_xg}}) {
    const auto a = got->download_bytes(), b = want->download_bytes();
    if (a.size() != b.size()) return SIZE_MAX;
    for (size_t i = 0; i < a.size(); i += 4) words += std::memcmp(&a[i], &b[i], 4) != 0;
  }
  return words;
}

double nmse(std::span<const float> out, std::span<const float> ref) {
  if (out.size() != ref.size()) return INFINITY;
  double err = 0, norm = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (!std::isfinite(out[i])) return INFINITY;
    const double d = static_cast<double>(out[i]) - ref[i];
    err += d * d;
    norm += static_cast<double>(ref[i]) * ref[i];
  }
  return norm > 0 ? err / norm : err;
}

CheckResult SimpleOpCase::check(gpu::Context&) {
  CheckResult r;
  const auto got = output_.download<float>();
  r.nmse = nmse(got, expected_);
  std::string why;
  if (!output_.guards_intact(&why)) {
    r.guards_ok = false;
    r.detail = why;
  }
  for (const GuardedBuffer* in : inputs_) {
    if (!in->guards_intact(&why)) {
      r.guards_ok = false;
      r.detail = why;
    }
  }
  return r;
}

namespace {
std::vector<CaseFactory>& factories() {
  static std::vector<CaseFactory> list;
  return list;
}
}  // namespace

bool register_cases(CaseFactory factory) {
  factories().push_back(std::move(factory));
  return true;
}

CaseList all_cases(CaseSet set) {
  CaseList cases;
  for (const auto& f : factories()) f(set, cases);
  return cases;
}

}  // namespace mach::test
