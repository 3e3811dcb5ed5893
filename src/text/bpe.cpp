#include "text/bpe.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "text/utf8.hpp"

namespace mach::text {

const std::array<char32_t, 256>& byte_to_unicode() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      t[b] = printable ? static_cast<char32_t>(b) : next++;
    }
    return t;
  }();
  return table;
}

int unicode_to_byte(char32_t c) {
  static const std::array<int16_t, 324> inverse = [] {
    std::array<int16_t, 324> t{};
    t.fill(-1);
    const auto& forward = byte_to_unicode();
    for (int b = 0; b < 256; ++b) t[forward[b]] = static_cast<int16_t>(b);
    return t;
  }();
  return c < inverse.size() ? inverse[c] : -1;
}

// Strings with characters outside the alphabet are kept as they are: no byte sequence can produce them,
// so they only matter as added tokens, which are matched before BPE.
std::string byte_level_to_bytes(std::string_view mapped) {
  std::string out;
  out.reserve(mapped.size());
  for (size_t i = 0; i < mapped.size();) {
    const Utf8Step step = utf8_step(mapped, i);
    const int b = step.status == Utf8Status::ok ? unicode_to_byte(step.code_point) : -1;
    if (b < 0) return std::string(mapped);
    out.push_back(static_cast<char>(b));
    i += step.length;
  }
  return out;
}

namespace {

struct Symbol {
  TokenId id;        // -1: a code point the vocabulary lacks
  int32_t prev, next;
  uint32_t begin, len;  // bytes of the word; len 0 marks a symbol merged into its left neighbour
};

struct Candidate {
  int32_t rank;
  int32_t pos;  // the left symbol
  TokenId merged;
  // std::push_heap builds a max-heap: "less" means "merges later".
  bool operator<(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

}  // namespace

void VocabIndex::build(const std::vector<std::string>& strings) {
  size_t capacity = 16;
  while (capacity < strings.size() * 2) capacity <<= 1;
  slots_.assign(capacity, -1);
  mask_ = capacity - 1;
  for (size_t id = 0; id < strings.size(); ++id) {
    const std::string& s = strings[id];
    if (s.empty()) continue;
    for (size_t i = std::hash<std::string_view>{}(s) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i] < 0) {
        slots_[i] = static_cast<TokenId>(id);
        break;
      }
      if (strings[static_cast<size_t>(slots_[i])] == s) break;  // duplicate string: keep the lower id
    }
  }
}

void MergeTable::reserve(size_t count) {
  size_t capacity = 16;
  while (capacity < count * 2) capacity <<= 1;  // load factor at most 1/2
  slots_.assign(capacity, Slot{});
  mask_ = capacity - 1;
  size_ = 0;
}

void MergeTable::insert(TokenId left, TokenId right, Merge merge) {
  if ((size_ + 1) * 2 > slots_.size()) {
    std::vector<Slot> old = std::move(slots_);
    reserve(std::max<size_t>(size_ + 1, old.size()));
    for (const Slot& s : old) {
      if (s.key != kEmpty) insert(static_cast<TokenId>(s.key >> 32), static_cast<TokenId>(s.key & 0xFFFFFFFFu), s.merge);
    }
  }
  const uint64_t key = pack(left, right);
  for (size_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
    Slot& s = slots_[i];
    if (s.key == key) {
      s.merge = merge;
      return;
    }
    if (s.key == kEmpty) {
      s = {key, merge};
      ++size_;
      return;
    }
  }
}

BpeModel::BpeModel(BpeModel&& o) noexcept
    : vocab_(std::move(o.vocab_)),
      id_to_bytes_(std::move(o.id_to_bytes_)),
      merges_(std::move(o.merges_)),
      byte_ids_(o.byte_ids_),
      fallback_ids_(o.fallback_ids_),
      unk_id_(o.unk_id_),
      byte_level_(o.byte_level_),
      byte_fallback_(o.byte_fallback_),
      fuse_unk_(o.fuse_unk_),
      ignore_merges_(o.ignore_merges_) {}

BpeModel& BpeModel::operator=(BpeModel&& o) noexcept {
  if (this != &o) {
    vocab_ = std::move(o.vocab_);
    id_to_bytes_ = std::move(o.id_to_bytes_);
    merges_ = std::move(o.merges_);
    byte_ids_ = o.byte_ids_;
    fallback_ids_ = o.fallback_ids_;
    unk_id_ = o.unk_id_;
    byte_level_ = o.byte_level_;
    byte_fallback_ = o.byte_fallback_;
    fuse_unk_ = o.fuse_unk_;
    ignore_merges_ = o.ignore_merges_;
    cache_.clear();
  }
  return *this;
}

Result<BpeModel> BpeModel::from_json(const nlohmann::json& model, bool byte_level) {
  BpeParts parts;
  try {
    const auto& vocab = model.at("vocab");
    for (auto it = vocab.begin(); it != vocab.end(); ++it) parts.vocab.emplace_back(it.key(), it.value().get<int64_t>());
    for (const auto& entry : model.at("merges")) {
      if (entry.is_array()) {
        parts.merges.emplace_back(entry.at(0).get<std::string>(), entry.at(1).get<std::string>());
      } else if (!add_legacy_merge(entry.get<std::string>(), parts)) {
        return Error{Errc::parse, fmt::format("tokenizer.json: merge {:?} is not two tokens", entry.get<std::string>())};
      }
    }
  } catch (const nlohmann::json::exception& e) {
    return Error{Errc::parse, fmt::format("tokenizer.json: malformed BPE model: {}", e.what())};
  }
  return from_parts(model, std::move(parts), byte_level);
}

bool add_legacy_merge(std::string_view s, BpeParts& parts) {
  const size_t space = s.find(' ');
  if (space == std::string_view::npos) return false;
  const size_t next = s.find(' ', space + 1);
  parts.merges.emplace_back(std::string(s.substr(0, space)),
                            std::string(s.substr(space + 1, next == std::string_view::npos ? next : next - space - 1)));
  return true;
}

Result<BpeModel> BpeModel::from_parts(const nlohmann::json& model, BpeParts parts, bool byte_level) {
  BpeModel m;
  try {
    const std::string type = model.value("type", "BPE");
    if (type != "BPE") {
      return Error{Errc::unsupported,
                   fmt::format("tokenizer.json: model type '{}' is not supported (only BPE is)", type)};
    }
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      if (model.contains(key) && model[key].is_string() && !model[key].get<std::string>().empty()) {
        return Error{Errc::unsupported, fmt::format("tokenizer.json: BPE with a non-empty {} is not supported", key)};
      }
    }
    m.byte_level_ = byte_level;
    m.byte_fallback_ = model.value("byte_fallback", false);
    m.fuse_unk_ = model.value("fuse_unk", false);
    m.ignore_merges_ = model.value("ignore_merges", false);
    const auto convert = [&](std::string_view s) { return byte_level ? byte_level_to_bytes(s) : std::string(s); };

    for (auto& [token, id] : parts.vocab) {
      if (id < 0 || id > (1 << 24)) {
        return Error{Errc::parse, fmt::format("tokenizer.json: token {:?} has id {}, outside 0..2^24", token, id)};
      }
      if (static_cast<size_t>(id) >= m.id_to_bytes_.size()) m.id_to_bytes_.resize(static_cast<size_t>(id) + 1);
      m.id_to_bytes_[static_cast<size_t>(id)] = byte_level ? byte_level_to_bytes(token) : std::move(token);
    }
    m.vocab_.build(m.id_to_bytes_);

    m.byte_ids_.fill(-1);
    m.fallback_ids_.fill(-1);
    for (int b = 0; b < 256; ++b) {
      m.byte_ids_[b] = m.find(std::string(1, static_cast<char>(b)));
      m.fallback_ids_[b] = m.find(fmt::format("<0x{:02X}>", b));
    }
    if (model.contains("unk_token") && model["unk_token"].is_string()) {
      m.unk_id_ = m.find(convert(model["unk_token"].get<std::string>()));
    }

    m.merges_.reserve(parts.merges.size());
    int32_t rank = 0;
    std::string joined;
    for (const auto& [a, b] : parts.merges) {
      const std::string left = convert(a), right = convert(b);
      joined.assign(left).append(right);
      const TokenId ia = m.find(left), ib = m.find(right), merged = m.find(joined);
      // A merge whose parts or result the vocabulary lacks can never fire; Hugging Face refuses to load
      // such files, transformers.js ignores them; we ignore them too.
      if (ia >= 0 && ib >= 0 && merged >= 0) m.merges_.insert(ia, ib, {rank, merged});
      ++rank;
    }
  } catch (const nlohmann::json::exception& e) {
    return Error{Errc::parse, fmt::format("tokenizer.json: malformed BPE model: {}", e.what())};
  }
  return m;
}

TokenId BpeModel::find(std::string_view bytes) const {
  return vocab_.find(bytes, id_to_bytes_);
}

void BpeModel::encode_word(std::string_view word, std::vector<TokenId>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (const TokenId id = find(word); id >= 0) {
      out.push_back(id);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWord;
  if (cacheable) {
    std::lock_guard lock(cache_mutex_);
    if (const auto it = cache_.find(word); it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = out.size();
  bpe(word, out);
  if (cacheable) {
    std::lock_guard lock(cache_mutex_);
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    cache_.emplace(std::string(word), std::vector<TokenId>(out.begin() + static_cast<ptrdiff_t>(first), out.end()));
  }
}

void BpeModel::emit_unknown(std::string_view bytes, std::vector<TokenId>& out) const {
  if (byte_fallback_) {
    bool all = true;
    for (char c : bytes) all &= fallback_ids_[static_cast<unsigned char>(c)] >= 0;
    if (all) {
      for (char c : bytes) out.push_back(fallback_ids_[static_cast<unsigned char>(c)]);
      return;
    }
  }
  if (unk_id_ < 0) return;  // no unknown token: the text is dropped, as Hugging Face does
  if (fuse_unk_ && !out.empty() && out.back() == unk_id_) return;
  out.push_back(unk_id_);
}

void BpeModel::bpe(std::string_view word, std::vector<TokenId>& out) const {
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> heap;
  symbols.clear();
  heap.clear();
  for (size_t i = 0; i < word.size();) {
    size_t len = 1;
    TokenId id;
    if (byte_level_) {
      id = byte_ids_[static_cast<unsigned char>(word[i])];
    } else {
      len = std::max<size_t>(1, utf8_length_at(word, i));
      id = find(word.substr(i, len));
    }
    const auto n = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, n - 1, n + 1, static_cast<uint32_t>(i), static_cast<uint32_t>(len)});
    i += len;
  }
  symbols.back().next = -1;

  const auto push_candidate = [&](int32_t pos) {
    const Symbol& left = symbols[pos];
    if (left.next < 0 || left.id < 0 || symbols[left.next].id < 0) return;
    const MergeTable::Merge merge = merges_.find(left.id, symbols[left.next].id);
    if (merge.rank < 0) return;
    heap.push_back({merge.rank, pos, merge.merged});
    std::push_heap(heap.begin(), heap.end());
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) push_candidate(i);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[top.pos];
    if (left.len == 0 || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    // Stale when either side changed since the candidate was queued: the pair now there has another rank.
    if (merges_.find(left.id, right.id).rank != top.rank) continue;
    left.id = top.merged;
    left.len += right.len;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    right.len = 0;
    if (left.prev >= 0) push_candidate(left.prev);
    push_candidate(top.pos);
  }

  for (int32_t i = 0; i >= 0; i = symbols[i].next) {
    const Symbol& s = symbols[i];
    if (s.id >= 0) {
      out.push_back(s.id);
    } else {
      emit_unknown(word.substr(s.begin, s.len), out);
    }
  }
}

}  // namespace mach::text
