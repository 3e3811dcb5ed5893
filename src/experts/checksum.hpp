// The slab checksum of the expert sidecar: XXH64 (seed 0), written here so that the format needs no new
// dependency. It runs at several GB/s per core, so `mach check --verify` and the streaming miss path can
// afford to hash every slab they read; it detects corruption, it does not authenticate.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace mach::experts {

uint64_t xxh64(std::span<const std::byte> data, uint64_t seed = 0);

// 16 lower-case hex digits, the spelling layout.json uses (JSON numbers lose precision above 2^53).
std::string hex64(uint64_t value);
// Exactly 16 hex digits; nullopt otherwise.
std::optional<uint64_t> parse_hex64(std::string_view text);

}  // namespace mach::experts
