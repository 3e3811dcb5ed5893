// Draft sources for speculative decoding. A drafter proposes up to `max` tokens that may follow a
// sequence's tokens; the target model then verifies them in one forward pass (scheduler.cpp), so a bad
// draft costs time, never correctness.
//
// The first source is draft-free prompt lookup (n-gram): find the most recent earlier occurrence of the
// sequence's last n tokens (n from the preset's longest match down to its shortest) and propose what
// followed it. The interface takes a draft model, a DFlash block-diffusion draft or MTP heads later: each
// is a Drafter whose draft() may also record GPU work.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace mach::engine {

enum class Speculation {
  none,
  ngram,           // general prompt lookup: matches of 3..1 tokens, drafts up to draft_max
  summarization,   // outputs that copy long spans of the prompt: matches of 4..2 tokens, long drafts
  classification,  // short answers: matches of 2..1 tokens, drafts of at most 2
};

std::optional<Speculation> parse_speculation(std::string_view name);
std::string_view speculation_name(Speculation s);
// The draft length a preset uses when the request gives none.
uint32_t default_draft_max(Speculation s);

class Drafter {
 public:
  virtual ~Drafter() = default;
  // Up to `max` proposed continuations of `tokens` (prompt and generated so far); empty when none.
  virtual std::vector<uint32_t> draft(std::span<const uint32_t> tokens, uint32_t max) = 0;
};

class NgramDrafter final : public Drafter {
 public:
  NgramDrafter(uint32_t min_match, uint32_t max_match) : min_match_(min_match), max_match_(max_match) {}
  static NgramDrafter for_preset(Speculation s);
  std::vector<uint32_t> draft(std::span<const uint32_t> tokens, uint32_t max) override;

 private:
  uint32_t min_match_, max_match_;
};

}  // namespace mach::engine
