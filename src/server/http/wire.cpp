#include "server/http/wire.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

namespace mach::server::http {

const std::string* Request::header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (k == name) return &v;
  }
  return nullptr;
}

std::string error_body(std::string_view message, std::string_view type, std::string_view code,
                       std::string_view param) {
  auto or_null = [](std::string_view s) { return s.empty() ? nlohmann::json(nullptr) : nlohmann::json(s); };
  const nlohmann::json body = {{"error",
                                {{"message", message}, {"type", type}, {"param", or_null(param)},
                                 {"code", or_null(code)}}}};
  // Replacement keeps a body valid JSON even when a message quotes a client's invalid UTF-8.
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

static char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

std::string to_lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), lower);
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return lower(x) == lower(y);
         });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

const char* reason_phrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return "Unknown";
  }
}

std::string response_head(int status, const Headers& headers) {
  std::string out = fmt::format("HTTP/1.1 {} {}\r\n", status, reason_phrase(status));
  for (const auto& [k, v] : headers) {
    out += k;
    out += ": ";
    out += v;
    out += "\r\n";
  }
  out += "\r\n";
  return out;
}

std::string chunk_prefix(size_t n) { return fmt::format("{:x}\r\n", n); }

bool bearer_matches(const std::string* authorization, std::string_view key) {
  if (!authorization) return false;
  std::string_view v = trim(*authorization);
  constexpr std::string_view scheme = "bearer ";
  if (v.size() < scheme.size() || !iequals(v.substr(0, scheme.size()), scheme)) return false;
  v = trim(v.substr(scheme.size()));
  // Every byte of the key is visited whatever the client sent; a length mismatch is folded into diff.
  unsigned diff = v.size() == key.size() ? 0u : 1u;
  for (size_t i = 0; i < key.size(); ++i) {
    const unsigned char sent = i < v.size() ? static_cast<unsigned char>(v[i]) : 0;
    diff |= sent ^ static_cast<unsigned char>(key[i]);
  }
  return diff == 0;
}

}  // namespace mach::server::http
