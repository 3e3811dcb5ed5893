// Keys of the prefix cache: a block of B token ids is named by a 128-bit hash of its parent block's key and
// its own ids, so a key names the whole token prefix up to the end of its block (a chain), not just the
// block. Two 64-bit lanes with different seeds make the 128 bits; not cryptographic (nobody gains from a
// collision here, and the cache keeps each block's token ids and compares them on a hit anyway).
// Also a 64-bit checksum for the prefix cache's disk files.
#pragma once

#include <compare>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace mach::engine {

struct BlockKey {
  uint64_t lo = 0, hi = 0;
  auto operator<=>(const BlockKey&) const = default;
  std::string hex() const;  // 32 lowercase hex digits, hi first
};

// The parent of a sequence's first block.
inline constexpr BlockKey kRootKey{};

struct BlockKeyHash {
  size_t operator()(const BlockKey& k) const { return static_cast<size_t>(k.lo); }
};

// The key of a block with these token ids whose parent block has key `parent`.
BlockKey chain_key(const BlockKey& parent, std::span<const uint32_t> tokens);

// The keys of the full blocks of `tokens` (a partial last block has no key): [tokens.size() / block_size].
std::vector<BlockKey> chain_keys(std::span<const uint32_t> tokens, uint32_t block_size,
                                 const BlockKey& parent = kRootKey);

// A 64-bit checksum of bytes (detects flipped bits and torn writes, not tampering).
uint64_t checksum64(std::span<const std::byte> data);

}  // namespace mach::engine
