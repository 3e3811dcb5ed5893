// tokenizer.json "pre_tokenizer": splits a normalized section of text into words, the units BPE runs on
// (BPE never merges across words). Supported: Split (all five delimiter behaviours, invert), ByteLevel
// (add_prefix_space, use_regex with the GPT-2 pattern), Metaspace, Digits and Sequence.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mach/error.hpp"
#include "text/regex.hpp"

namespace mach::text {

// A word: [begin, end) byte offsets into the Words buffer.
struct WordSpan {
  uint32_t begin = 0, end = 0;
};

// The words of one section. Pre-tokenizers that insert text (a prefix space, a metaspace) append the new
// word to `buffer` instead of editing in place, so spans stay valid.
struct Words {
  std::string buffer;
  std::vector<WordSpan> spans;
  std::string_view view(WordSpan s) const { return std::string_view(buffer).substr(s.begin, s.end - s.begin); }
};

class PreTokenizer {
 public:
  // config: the "pre_tokenizer" object (null means the whole section is one word).
  static Result<PreTokenizer> from_json(const nlohmann::json& config);

  // Replaces words.spans by the split of every span. words.buffer holds valid UTF-8. first_section: this
  // is the first section of the input (Metaspace's prepend_scheme "first" looks at it).
  void split(Words& words, bool first_section) const;

  // True when a ByteLevel step maps bytes to the GPT-2 alphabet: the vocabulary is then byte-level and BPE
  // starts from single bytes instead of code points.
  bool byte_level() const { return byte_level_; }

 private:
  enum class Kind { split, byte_level, metaspace, digits };
  enum class Behavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };
  struct Step {
    Kind kind;
    std::optional<Regex> regex;  // split; byte_level with use_regex; digits
    Behavior behavior = Behavior::isolated;
    bool invert = false;
    bool add_prefix_space = false;   // byte_level, metaspace
    std::string replacement;         // metaspace
    bool metaspace_split = true;
    bool prepend_first_only = false;  // metaspace prepend_scheme "first"
  };
  static Result<void> add_steps(const nlohmann::json& config, std::vector<Step>& steps, bool& byte_level);
  void apply(const Step& step, bool first_section, Words& words, std::vector<WordSpan>& out) const;

  std::vector<Step> steps_;
  bool byte_level_ = false;
};

}  // namespace mach::text
