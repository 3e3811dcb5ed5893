// tokenizer.json "normalizer": a chain of text rewrites applied to each section of input between added
// tokens, before pre-tokenization. Supported: NFC, NFD, NFKC, NFKD (ICU), Replace, Prepend, Lowercase,
// Strip and Sequence; any other type fails at load time naming the type.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mach/error.hpp"
#include "text/regex.hpp"

namespace mach::text {

class Normalizer {
 public:
  // config: the "normalizer" object (null means none).
  static Result<Normalizer> from_json(const nlohmann::json& config);

  bool empty() const { return steps_.empty(); }
  // text: valid UTF-8. Returns valid UTF-8.
  std::string apply(std::string_view text) const;

 private:
  enum class Kind { nfc, nfd, nfkc, nfkd, replace, prepend, lowercase, strip };
  struct Step {
    Kind kind;
    std::string text;             // Replace: the replacement; Prepend: the prefix
    std::optional<Regex> regex;   // Replace: what to replace
    bool strip_left = false, strip_right = false;
  };
  static Result<void> add_steps(const nlohmann::json& config, std::vector<Step>& steps);
  std::vector<Step> steps_;
};

}  // namespace mach::text
