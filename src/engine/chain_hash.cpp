#include "engine/chain_hash.hpp"

#include <fmt/format.h>

#include <bit>
#include <cstring>

namespace mach::engine {
namespace {

// The finalizer of MurmurHash3 (fmix64): every input bit affects every output bit.
constexpr uint64_t fmix64(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return h;
}

// One lane of the hash: a multiply-rotate accumulator over 64-bit words, finalized with the length.
class Lane {
 public:
  explicit Lane(uint64_t seed) : h_(seed) {}
  void add(uint64_t word) {
    h_ ^= fmix64(word * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull);
    h_ = std::rotl(h_, 27) * 0x87c37b91114253d5ull + 0x52dce729;
    ++n_;
  }
  uint64_t finish() const { return fmix64(h_ ^ n_); }

 private:
  uint64_t h_;
  uint64_t n_ = 0;
};

constexpr uint64_t kSeedLo = 0x6d61636870726566ull;  // "machpref"
constexpr uint64_t kSeedHi = 0x636861696e6b6579ull;  // "chainkey"

}  // namespace

std::string BlockKey::hex() const { return fmt::format("{:016x}{:016x}", hi, lo); }

BlockKey chain_key(const BlockKey& parent, std::span<const uint32_t> tokens) {
  Lane lo(kSeedLo), hi(kSeedHi);
  for (Lane* lane : {&lo, &hi}) {
    lane->add(parent.lo);
    lane->add(parent.hi);
  }
  // Two ids per word; an odd count leaves the high half zero, and the word count differs from the
  // one-more-id case only through the finalizer's length, so the length is mixed in explicitly.
  for (size_t i = 0; i < tokens.size(); i += 2) {
    const uint64_t word = tokens[i] | (i + 1 < tokens.size() ? uint64_t{tokens[i + 1]} << 32 : 0);
    lo.add(word);
    hi.add(word ^ 0xa5a5a5a5a5a5a5a5ull);
  }
  lo.add(tokens.size());
  hi.add(tokens.size());
  return {lo.finish(), hi.finish()};
}

std::vector<BlockKey> chain_keys(std::span<const uint32_t> tokens, uint32_t block_size, const BlockKey& parent) {
  std::vector<BlockKey> keys;
  keys.reserve(tokens.size() / block_size);
  BlockKey key = parent;
  for (size_t at = 0; at + block_size <= tokens.size(); at += block_size) {
    key = chain_key(key, tokens.subspan(at, block_size));
    keys.push_back(key);
  }
  return keys;
}

uint64_t checksum64(std::span<const std::byte> data) {
  Lane lane(kSeedLo ^ data.size());
  size_t at = 0;
  for (; at + 8 <= data.size(); at += 8) {
    uint64_t word;
    std::memcpy(&word, data.data() + at, 8);
    lane.add(word);
  }
  uint64_t tail = 0;
  if (at < data.size()) std::memcpy(&tail, data.data() + at, data.size() - at);
  lane.add(tail);
  return lane.finish();
}

}  // namespace mach::engine
