#include "text/tokenizer_json.hpp"

#include <fmt/format.h>

namespace mach::text {

namespace {

// Forwards every event to nlohmann's tree builder except the values of model.vocab and model.merges.
class TokenizerSax {
 public:
  using json = nlohmann::json;
  explicit TokenizerSax(TokenizerJson& out) : out_(out), dom_(out.rest, /*allow_exceptions=*/false) {}

  bool null() { return !capturing() && dom_.null(); }
  bool boolean(bool v) { return !capturing() && dom_.boolean(v); }
  bool number_integer(json::number_integer_t v) {
    if (capture_ == Capture::vocab) return add_vocab(v);
    return !capturing() && dom_.number_integer(v);
  }
  bool number_unsigned(json::number_unsigned_t v) {
    if (capture_ == Capture::vocab) return add_vocab(static_cast<int64_t>(std::min<json::number_unsigned_t>(v, INT64_MAX)));
    return !capturing() && dom_.number_unsigned(v);
  }
  bool number_float(json::number_float_t v, const json::string_t& s) { return !capturing() && dom_.number_float(v, s); }
  bool string(json::string_t& s) {
    if (capture_ == Capture::merges) {
      if (merge_depth_ == 2) {
        pair_.push_back(std::move(s));
        return true;
      }
      return add_legacy_merge(s, out_.parts);
    }
    return !capturing() && dom_.string(s);
  }
  bool binary(json::binary_t& b) { return !capturing() && dom_.binary(b); }
  bool start_object(std::size_t n) {
    if (capturing()) return false;
    if (at("vocab")) {
      capture_ = Capture::vocab;
      return true;
    }
    path_.emplace_back();
    return dom_.start_object(n);
  }
  bool key(json::string_t& k) {
    if (capture_ == Capture::vocab) {
      pending_key_ = std::move(k);
      return true;
    }
    if (capturing()) return false;
    path_.back() = k;
    return dom_.key(k);
  }
  bool end_object() {
    if (capture_ == Capture::vocab) {
      capture_ = Capture::none;
      out_.has_vocab = true;
      return dom_.null();  // model.vocab stays in the tree as null
    }
    path_.pop_back();
    return dom_.end_object();
  }
  bool start_array(std::size_t n) {
    if (capture_ == Capture::merges) {
      if (merge_depth_ != 1) return false;
      merge_depth_ = 2;
      pair_.clear();
      return true;
    }
    if (capturing()) return false;
    if (at("merges")) {
      capture_ = Capture::merges;
      merge_depth_ = 1;
      return true;
    }
    path_.emplace_back("[");
    return dom_.start_array(n);
  }
  bool end_array() {
    if (capture_ == Capture::merges) {
      if (merge_depth_ == 2) {
        if (pair_.size() != 2) return fail("a merge is not two tokens");
        out_.parts.merges.emplace_back(std::move(pair_[0]), std::move(pair_[1]));
        merge_depth_ = 1;
        return true;
      }
      capture_ = Capture::none;
      out_.has_merges = true;
      return dom_.null();
    }
    path_.pop_back();
    return dom_.end_array();
  }
  template <class Exception>
  bool parse_error(std::size_t position, const std::string&, const Exception& e) {
    return fail(fmt::format("not valid JSON at byte {}: {}", position, e.what()));
  }

  const std::string& error() const { return error_; }

 private:
  enum class Capture { none, vocab, merges };
  bool capturing() const { return capture_ != Capture::none; }
  // True when the value about to start is model.<name>.
  bool at(std::string_view name) const { return path_.size() == 2 && path_[0] == "model" && path_[1] == name; }
  bool add_vocab(int64_t id) {
    out_.parts.vocab.emplace_back(std::move(pending_key_), id);
    return true;
  }
  bool fail(std::string message) {
    if (error_.empty()) error_ = std::move(message);
    return false;
  }

  TokenizerJson& out_;
  nlohmann::detail::json_sax_dom_parser<json> dom_;
  std::vector<std::string> path_;  // the key of each open object ("[" for arrays)
  Capture capture_ = Capture::none;
  int merge_depth_ = 0;
  std::string pending_key_;
  std::vector<std::string> pair_;
  std::string error_;
};

}  // namespace

Result<TokenizerJson> read_tokenizer_json(std::string_view text) {
  TokenizerJson out;
  TokenizerSax sax(out);
  const bool ok = nlohmann::json::sax_parse(text.begin(), text.end(), &sax);
  if (!ok) {
    return Error{Errc::parse, fmt::format("tokenizer.json: {}", sax.error().empty() ? "malformed model.vocab or model.merges"
                                                                                     : sax.error())};
  }
  return out;
}

}  // namespace mach::text
