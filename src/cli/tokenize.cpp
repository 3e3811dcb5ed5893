// `mach tokenize DIR (--text T | --file F) [--no-special] [--add-special]` prints {"ids": [...]};
// `mach tokenize DIR --decode --ids 1,2,3 [--skip-special]` prints {"text": "..."}.
#include <fmt/format.h>

#include <charconv>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/commands.hpp"
#include "text/tokenizer.hpp"

namespace mach::cli {

namespace {

struct TokenizeArgs {
  std::string dir, text, file, ids;
  bool decode = false, no_special = false, add_special = false, skip_special = false;
  bool has_text = false;  // --text was given (it may be empty)
};

Result<std::vector<text::TokenId>> parse_ids(std::string_view list) {
  std::vector<text::TokenId> ids;
  while (!list.empty()) {
    const size_t comma = list.find(',');
    std::string_view item = list.substr(0, comma);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    text::TokenId id = 0;
    const auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), id);
    if (item.empty() || ec != std::errc() || end != item.data() + item.size()) {
      return Error{Errc::invalid_argument, fmt::format("--ids: '{}' is not a token id (want e.g. --ids 1,2,3)", item)};
    }
    ids.push_back(id);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return ids;
}

Result<void> run(const TokenizeArgs& args) {
  auto tokenizer = text::Tokenizer::load(args.dir);
  if (!tokenizer) return tokenizer.error();
  if (args.decode) {
    auto ids = parse_ids(args.ids);
    if (!ids) return ids.error();
    for (text::TokenId id : *ids) {
      if (!tokenizer->valid_id(id)) {
        return Error{Errc::invalid_argument,
                     fmt::format("--ids: {} is outside the vocabulary (0..{})", id, tokenizer->vocab_size() - 1)};
      }
    }
    fmt::print("{}\n", nlohmann::json{{"text", tokenizer->decode(*ids, args.skip_special)}}.dump());
    return {};
  }
  if (!args.has_text && args.file.empty()) {
    return Error{Errc::invalid_argument, "give the text to encode with --text or --file (or --decode --ids)"};
  }
  std::string input = args.text;
  if (!args.file.empty()) {
    std::ifstream in(args.file, std::ios::binary);
    if (!in) return Error{Errc::not_found, fmt::format("--file: cannot open {}", args.file)};
    std::ostringstream ss;
    ss << in.rdbuf();
    input = ss.str();
  }
  const auto ids = tokenizer->encode(input, {.match_special = !args.no_special, .add_special_tokens = args.add_special});
  fmt::print("{}\n", nlohmann::json{{"ids", ids}}.dump());
  return {};
}

}  // namespace

void add_tokenize_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("tokenize", "encode text to token ids, or decode ids to text, with a model's tokenizer");
  static TokenizeArgs args;
  cmd->add_option("dir", args.dir, "directory with tokenizer.json and tokenizer_config.json")->required();
  auto* text = cmd->add_option("--text", args.text, "text to encode");
  auto* file = cmd->add_option("--file", args.file, "read the text to encode from this file");
  cmd->add_flag("--no-special", args.no_special, "encode special tokens written in the text as plain text");
  cmd->add_flag("--add-special", args.add_special, "add the tokenizer's BOS/EOS (post-processor)");
  auto* decode = cmd->add_flag("--decode", args.decode, "decode --ids instead of encoding");
  auto* ids = cmd->add_option("--ids", args.ids, "comma-separated token ids to decode");
  cmd->add_flag("--skip-special", args.skip_special, "leave special tokens out of decoded text");
  text->excludes(file);
  decode->needs(ids);
  ids->needs(decode);
  decode->excludes(text)->excludes(file);
  cmd->callback([&exit_code, text] {
    args.has_text = text->count() > 0;
    if (auto r = run(args); !r) {
      fmt::print(stderr, "mach tokenize: {}\n", r.error().message);
      exit_code = 1;
    }
  });
}

}  // namespace mach::cli
