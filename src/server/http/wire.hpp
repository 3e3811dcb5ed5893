// The byte-level pieces of HTTP/1.1 that the parser, the connection and the tests share: case rules,
// status lines, response heads, chunk framing, the bearer-key check. No sockets, no coroutines.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "server/http/http.hpp"

namespace mach::server::http {

std::string to_lower(std::string_view s);
bool iequals(std::string_view a, std::string_view b);  // ASCII case-insensitive
std::string_view trim(std::string_view s);             // spaces and tabs at both ends

// "OK", "Not Found", ...; "Unknown" for a status without a phrase here.
const char* reason_phrase(int status);

// "HTTP/1.1 <status> <reason>\r\n" then each header as "Name: value\r\n", then "\r\n".
std::string response_head(int status, const Headers& headers);

// The line before a chunk of n bytes: n in hex, then CRLF. The chunk itself ends with CRLF.
std::string chunk_prefix(size_t n);
inline constexpr std::string_view last_chunk = "0\r\n\r\n";

// True when `authorization` is "Bearer <key>" (scheme case-insensitive). The key is compared in time that
// depends only on the key's length, so a client cannot find it byte by byte by timing refusals.
bool bearer_matches(const std::string* authorization, std::string_view key);

}  // namespace mach::server::http
