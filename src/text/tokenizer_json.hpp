// Reads tokenizer.json with a streaming (SAX) parser: model.vocab and model.merges, which hold nearly all
// of the file (hundreds of thousands of entries), go straight into flat vectors; the rest becomes a JSON
// tree as usual. Halves load time against building a tree of the whole file.
#pragma once

#include <nlohmann/json.hpp>

#include <string_view>

#include "mach/error.hpp"
#include "text/bpe.hpp"

namespace mach::text {

struct TokenizerJson {
  nlohmann::json rest;  // the file without model.vocab and model.merges (null there)
  BpeParts parts;
  bool has_vocab = false, has_merges = false;
};

Result<TokenizerJson> read_tokenizer_json(std::string_view text);

}  // namespace mach::text
