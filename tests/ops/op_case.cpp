#include "op_case.hpp"

#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>

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
