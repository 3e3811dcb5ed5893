// Generated token ids of one choice → what the client sees: UTF-8 text cut at stop strings, split by the
// model's output parser into content, reasoning_content and tool_calls. Incremental, so the same code
// serves streaming (every push() is one SSE chunk's worth) and non-streaming (the concatenation).
//
// Stop strings: text that could still become a stop string is held back until it either completes one (the
// text before it is released, the rest dropped, stopped() turns true and the caller cancels the sequence)
// or cannot (then it is released). Stop-token ids (end of turn, EOS) are never turned into text.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "text/output_parser.hpp"
#include "text/tokenizer.hpp"

namespace mach::server::openai {

struct AssemblerOptions {
  std::optional<text::OutputFormat> format;  // nullopt: plain text (completions, models without markup)
  nlohmann::ordered_json tools;              // the request's tools (qwen3_coder types values with them)
  bool starts_in_reasoning = false;
  bool keep_special_tokens = false;          // harmony's markers are special tokens its parser needs
  std::vector<std::string> stop;             // stop strings
  std::vector<uint32_t> stop_ids;            // never decoded
};

class ChoiceAssembler {
 public:
  ChoiceAssembler(const text::Tokenizer& tokenizer, AssemblerOptions options);

  // The visible additions from these tokens. Tokens after a matched stop string are ignored.
  text::OutputDelta push(std::span<const uint32_t> tokens);
  // End of generation: releases held text and flushes the parser.
  text::OutputDelta finish();
  bool stopped() const { return stopped_; }
  // Tokens pushed before the stop string matched (the usage's completion tokens).
  uint32_t tokens() const { return tokens_; }

 private:
  text::OutputDelta release(std::string text);

  const text::Tokenizer& tokenizer_;
  AssemblerOptions options_;
  text::StreamDecoder decoder_;
  std::optional<text::OutputParser> parser_;
  std::string held_;  // decoded, not yet released (a possible stop-string prefix)
  bool stopped_ = false;
  bool finished_ = false;
  uint32_t tokens_ = 0;
};

}  // namespace mach::server::openai
