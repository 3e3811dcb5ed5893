// The BPE model of tokenizer.json: vocabulary, ranked merges, byte fallback and unknown-token handling.
//
// Strings are kept as raw bytes: for a byte-level vocabulary (GPT-2 alphabet, "Ġ" for space) every token
// is converted back to the bytes it stands for at load time, so encoding never builds the mapped string
// and decoding is a table lookup. BPE on a word starts from single bytes (byte-level) or from code points
// (SentencePiece-style vocabularies such as Gemma's), then applies merges lowest rank first, leftmost
// first among equal ranks: the order Hugging Face tokenizers and transformers.js use.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "mach/error.hpp"

namespace mach::text {

using TokenId = int32_t;

// std::unordered_map keyed by std::string that can be probed with a std::string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

// Token strings → ids: open addressing over ids, the strings themselves living in the model's id_to_bytes
// table. One array probe per lookup instead of a node walk: loading does a million lookups, encoding one per
// symbol.
class VocabIndex {
 public:
  // strings[id] is token id's bytes ("" for unused ids). On duplicates the lower id wins.
  void build(const std::vector<std::string>& strings);
  TokenId find(std::string_view s, const std::vector<std::string>& strings) const {
    if (slots_.empty()) return -1;
    const size_t h = std::hash<std::string_view>{}(s);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      const TokenId id = slots_[i];
      if (id < 0) return -1;
      if (strings[static_cast<size_t>(id)] == s) return id;
    }
  }

 private:
  std::vector<TokenId> slots_;  // -1: empty
  size_t mask_ = 0;
};

// Merge ranks keyed by the (left, right) token pair: open addressing with linear probing in one array, because
// BPE looks up a pair for every candidate merge and a node-based map costs a cache miss per lookup.
class MergeTable {
 public:
  struct Merge {
    int32_t rank = -1;  // -1: no merge
    TokenId merged = -1;
  };
  void reserve(size_t count);
  // Later entries for the same pair replace earlier ones (as Hugging Face's map does).
  void insert(TokenId left, TokenId right, Merge merge);
  Merge find(TokenId left, TokenId right) const {
    if (slots_.empty()) return {};
    const uint64_t key = pack(left, right);
    for (size_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.key == key) return s.merge;
      if (s.key == kEmpty) return {};
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  struct Slot {
    uint64_t key = kEmpty;
    Merge merge;
  };
  static uint64_t pack(TokenId a, TokenId b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  static size_t hash(uint64_t key) { return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> 20); }
  std::vector<Slot> slots_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

// The two big parts of a BPE model as read from tokenizer.json (strings as written there), so that a
// streaming reader can hand them over without building a JSON tree of a million nodes.
struct BpeParts {
  std::vector<std::pair<std::string, int64_t>> vocab;            // token → id
  std::vector<std::pair<std::string, std::string>> merges;       // in rank order
};
// Adds a merge written the old way ("a b"); false when there is no space.
bool add_legacy_merge(std::string_view merge, BpeParts& parts);

class BpeModel {
 public:
  // model: the "model" object of tokenizer.json (type BPE). byte_level: the pre-tokenizer maps bytes to the
  // GPT-2 alphabet, so vocabulary strings are converted back to raw bytes.
  static Result<BpeModel> from_json(const nlohmann::json& model, bool byte_level);
  // model: the model object for its settings (its vocab and merges are not read); parts: vocab and merges.
  static Result<BpeModel> from_parts(const nlohmann::json& model, BpeParts parts, bool byte_level);

  BpeModel() = default;
  BpeModel(BpeModel&& other) noexcept;
  BpeModel& operator=(BpeModel&& other) noexcept;

  // Appends the ids of one pre-tokenized word (raw UTF-8 bytes). Thread-safe.
  void encode_word(std::string_view word, std::vector<TokenId>& out) const;

  // The id of a token given as raw bytes, or -1.
  TokenId find(std::string_view bytes) const;
  // Raw bytes of every vocabulary token, indexed by id ("" for ids the vocabulary does not use).
  const std::vector<std::string>& id_to_bytes() const { return id_to_bytes_; }
  bool byte_fallback() const { return byte_fallback_; }
  TokenId unk_id() const { return unk_id_; }

 private:
  void bpe(std::string_view word, std::vector<TokenId>& out) const;
  void emit_unknown(std::string_view bytes, std::vector<TokenId>& out) const;

  VocabIndex vocab_;
  std::vector<std::string> id_to_bytes_;
  MergeTable merges_;
  std::array<TokenId, 256> byte_ids_{};           // byte-level: the token of each single byte
  std::array<TokenId, 256> fallback_ids_{};       // byte fallback: the <0xNN> tokens
  TokenId unk_id_ = -1;
  bool byte_level_ = false;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;

  // Words seen before (most are); bounded, cleared when full. Words longer than kMaxCachedWord are not
  // cached: they rarely repeat.
  static constexpr size_t kMaxCachedWord = 256;
  static constexpr size_t kMaxCacheEntries = 1 << 16;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<TokenId>, StringHash, std::equal_to<>> cache_;
};

// The GPT-2 byte-to-character map: printable Latin-1 bytes map to themselves, the rest to U+0100 and up.
const std::array<char32_t, 256>& byte_to_unicode();
// The inverse, or -1 for characters outside the alphabet.
int unicode_to_byte(char32_t c);
// A byte-level token string ("Ġhello") as the bytes it stands for (" hello"); a string with characters
// outside the alphabet is returned unchanged.
std::string byte_level_to_bytes(std::string_view mapped);

}  // namespace mach::text
