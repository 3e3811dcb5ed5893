// Added tokens (tokenizer.json "added_tokens"): strings matched in the input before normalization and BPE,
// leftmost-longest, with Hugging Face's flags: lstrip/rstrip swallow the whitespace beside the token,
// single_word only matches when no word character touches it, special tokens can be switched off per call.
#pragma once

#include <bitset>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "text/bpe.hpp"

namespace mach::text {

struct AddedToken {
  std::string content;
  TokenId id = -1;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;  // matched in normalized text rather than in the raw input
  bool single_word = false;
};

// One piece of a split: text (token < 0) or the added token `token` (an index into the matcher's list).
struct Segment {
  uint32_t begin = 0, end = 0;
  int32_t token = -1;
};

class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  // patterns[i] is what to look for for tokens[i] (the content, or its normalized form).
  AddedTokenMatcher(const std::vector<AddedToken>& tokens, const std::vector<std::string>& patterns,
                    const std::vector<bool>& include);

  bool empty() const { return nodes_.size() <= 1; }
  // Splits text (valid UTF-8) into segments covering it; appends to out.
  void split(std::string_view text, bool match_special, std::vector<Segment>& out) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;  // sorted by byte
    int32_t token = -1;
  };
  int32_t child(int32_t node, unsigned char byte) const;
  std::vector<AddedToken> tokens_;  // a copy: the flags are read on every match
  std::vector<Node> nodes_;
  std::bitset<256> first_bytes_;
};

}  // namespace mach::text
