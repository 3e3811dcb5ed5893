// HTTP/1.x request parsing without sockets: bytes in, complete requests (or one failure) out. The server's
// connections use it, and so do the fuzzer and the unit tests, which is why it knows nothing of time,
// sockets or coroutines (clang 14 cannot build coroutines under the fuzzer's sanitizers).
//
// The parser stops after each complete request while `max_queued` requests wait to be taken, so a client
// that pipelines thousands of tiny requests in one packet costs at most that many parsed requests; the
// bytes behind them are kept (one read's worth, as the connection reads only while `wants_input()`).
//
// Thread-safety: none; one connection owns one parser.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "server/http/http.hpp"

namespace mach::server::http {

struct ParsedRequest {
  Request request;     // remote is left empty: the connection knows it
  bool keep_alive;     // HTTP/1.1 without "Connection: close", or HTTP/1.0 with "Connection: keep-alive"
  bool http_1_0;       // the response cannot be chunked: a stream is delimited by closing the connection
};

// The stream cannot be parsed past this point: answer `status` and close.
struct ParseFailure {
  int status;  // 400 malformed, 413 body over the limit, 431 headers over the limit
  std::string message;
};

struct ParserLimits {
  size_t max_header_bytes = 64 * 1024;
  size_t max_body_bytes = 16 * 1024 * 1024;
  size_t max_queued = 16;
};

class RequestParser {
 public:
  explicit RequestParser(ParserLimits limits);
  ~RequestParser();
  RequestParser(const RequestParser&) = delete;
  RequestParser& operator=(const RequestParser&) = delete;

  // Appends bytes and parses as far as the queue allows. After a failure, bytes are ignored.
  void feed(std::string_view bytes);
  // The next complete request in arrival order; taking one lets the parser go on with kept bytes.
  std::optional<ParsedRequest> next();
  // False after a failure, while the queue is full, or while bytes are kept: the caller should not read.
  bool wants_input() const;
  // A request has begun (its first byte arrived) and is not complete yet: the request timeout runs.
  bool in_message() const { return in_message_; }
  // How many requests have begun so far: tells a new request from the one that was in progress before.
  uint64_t requests_begun() const { return begun_; }
  size_t queued() const { return ready_.size(); }
  const std::optional<ParseFailure>& failure() const { return failure_; }

  // The request whose headers are complete, that sent "Expect: 100-continue" and none of whose body has
  // arrived: the caller answers "100 Continue" or refuses, then calls continue_answered(). Null otherwise.
  const Request* awaiting_continue() const { return awaiting_continue_ ? &current_ : nullptr; }
  void continue_answered() { awaiting_continue_ = false; }

  // Callbacks from llhttp (C linkage needs them public; not for callers).
  struct Callbacks;

 private:
  void parse_kept();
  void fail(int status, std::string message);
  bool count_header_bytes(size_t n);

  struct Llhttp;
  std::unique_ptr<Llhttp> llhttp_;
  ParserLimits limits_;
  std::string kept_;  // bytes not parsed yet because the queue is full
  std::deque<ParsedRequest> ready_;
  std::optional<ParseFailure> failure_;
  // The request being parsed.
  Request current_;
  std::string field_, value_;
  size_t header_bytes_ = 0;
  uint64_t begun_ = 0;
  bool in_message_ = false;
  bool in_trailers_ = false;
  bool awaiting_continue_ = false;
  bool upgraded_ = false;  // an Upgrade/CONNECT request ended the HTTP stream: nothing after it is parsed
};

}  // namespace mach::server::http
