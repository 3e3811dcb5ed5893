#include "server/openai/assembler.hpp"

#include <algorithm>

namespace mach::server::openai {

ChoiceAssembler::ChoiceAssembler(const text::Tokenizer& tokenizer, AssemblerOptions options)
    : tokenizer_(tokenizer),
      options_(std::move(options)),
      decoder_(tokenizer, /*skip_special_tokens=*/!options_.keep_special_tokens) {
  if (options_.format) parser_.emplace(*options_.format, options_.tools, options_.starts_in_reasoning);
}

text::OutputDelta ChoiceAssembler::release(std::string text) {
  if (text.empty()) return {};
  if (parser_) return parser_->push(text);
  text::OutputDelta d;
  d.content = std::move(text);
  return d;
}

text::OutputDelta ChoiceAssembler::push(std::span<const uint32_t> tokens) {
  text::OutputDelta out;
  for (uint32_t id : tokens) {
    if (stopped_ || finished_) break;
    ++tokens_;
    if (std::find(options_.stop_ids.begin(), options_.stop_ids.end(), id) != options_.stop_ids.end()) continue;
    held_ += decoder_.push(static_cast<text::TokenId>(id));
    if (options_.stop.empty()) {
      out.append(release(std::move(held_)));
      held_.clear();
      continue;
    }
    // The earliest stop string in the held text ends the choice.
    size_t cut = std::string::npos;
    for (const auto& s : options_.stop) cut = std::min(cut, held_.find(s));
    if (cut != std::string::npos) {
      out.append(release(held_.substr(0, cut)));
      held_.clear();
      stopped_ = true;
      break;
    }
    // Keep the longest suffix that is a proper prefix of some stop string; release the rest.
    size_t keep = 0;
    for (const auto& s : options_.stop) {
      for (size_t n = std::min(s.size() - 1, held_.size()); n > keep; --n) {
        if (held_.compare(held_.size() - n, n, s, 0, n) == 0) {
          keep = n;
          break;
        }
      }
    }
    // Never split a UTF-8 sequence: move the cut back to a code point boundary.
    size_t at = held_.size() - keep;
    while (at > 0 && at < held_.size() && (static_cast<unsigned char>(held_[at]) & 0xC0) == 0x80) --at;
    out.append(release(held_.substr(0, at)));
    held_.erase(0, at);
  }
  return out;
}

text::OutputDelta ChoiceAssembler::finish() {
  if (finished_) return {};
  finished_ = true;
  text::OutputDelta out;
  if (!stopped_) {
    held_ += decoder_.finish();
    size_t cut = std::string::npos;
    for (const auto& s : options_.stop) cut = std::min(cut, held_.find(s));
    if (cut != std::string::npos) {
      held_.resize(cut);
      stopped_ = true;
    }
    out.append(release(std::move(held_)));
    held_.clear();
  }
  if (parser_) out.append(parser_->finish());
  return out;
}

}  // namespace mach::server::openai
