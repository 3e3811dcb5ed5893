// HTTP/1.1 on the event loop: one coroutine per connection, requests parsed by llhttp, each request handed
// to a handler coroutine. Keep-alive and pipelining (responses in request order), chunked request bodies,
// `Expect: 100-continue`, CORS preflight, limits (header bytes, body bytes, requests per second of one
// connection, idle timeout, connections), bearer-key auth on the routes that ask for it.
//
// Every refusal (a limit, a parse error, an unknown route, a bad key) answers with an OpenAI-shaped JSON
// error and the proper status, and the server keeps serving.
//
// A handler runs with a cancellation slot: when its client goes away (the socket closes or errors) while
// the handler is still running, the connection emits terminal cancellation, so an awaiting handler sees
// asio::error::operation_aborted (asio::experimental::error::channel_cancelled from a channel's
// async_receive) and can release what it holds (the OpenAI routes cancel the sequence). From then on every
// co_await of an awaitable in that handler throws operation_aborted (Asio's throw_if_cancelled), so release
// synchronously (TokenStream::cancel() is); an exception that escapes because of it is not logged.
//
// Thread-safety: everything runs on the loop thread.
#pragma once

#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mach/error.hpp"

namespace mach::server::http {

using Headers = std::vector<std::pair<std::string, std::string>>;

struct Request {
  std::string method;  // "GET", "POST", ...
  std::string target;  // the request-target as sent
  std::string path;    // target up to '?'
  std::string query;   // after '?', without it
  Headers headers;     // names lower-cased, in arrival order
  std::string body;    // complete; chunked bodies already de-chunked
  std::string remote;  // peer address "ip:port"
  // The first header of that (lower-case) name, or nullptr.
  const std::string* header(std::string_view name) const;
};

// The body of an OpenAI-shaped error: {"error": {"message", "type", "param", "code"}}.
std::string error_body(std::string_view message, std::string_view type, std::string_view code = {},
                       std::string_view param = {});

// The response to one request. Either send() once, or begin_stream(), write()* and end(). A handler that
// returns without responding gets a 500 error response. After the client went away, writes return false
// and end() does nothing.
class Response {
 public:
  virtual ~Response() = default;
  // A complete response with Content-Length. CORS headers and Connection handling are added by the server.
  virtual asio::awaitable<void> send(int status, std::string content_type, std::string body,
                                     Headers extra = {}) = 0;
  // An OpenAI-shaped JSON error (error_body) with that status.
  asio::awaitable<void> send_error(int status, std::string_view message, std::string_view type,
                                   std::string_view code = {}, std::string_view param = {});
  // A streamed response (Transfer-Encoding: chunked), e.g. text/event-stream for SSE.
  virtual asio::awaitable<void> begin_stream(int status, std::string content_type, Headers extra = {}) = 0;
  // Writes one chunk and waits until the socket took it (back-pressure); false when the client is gone.
  virtual asio::awaitable<bool> write(std::string_view data) = 0;
  virtual asio::awaitable<void> end() = 0;
  virtual bool client_gone() const = 0;
};

using Handler = std::function<asio::awaitable<void>(const Request&, Response&)>;

struct Limits {
  size_t max_header_bytes = 64 * 1024;         // request line + headers: 431 beyond
  size_t max_body_bytes = 16 * 1024 * 1024;    // 413 beyond (also for chunked bodies, checked as they arrive)
  double requests_per_second = 50;             // per connection, token bucket: 429 beyond
  double request_burst = 100;
  std::chrono::milliseconds idle_timeout{60'000};    // keep-alive connection with no request: closed
  std::chrono::milliseconds request_timeout{30'000};  // headers + body must arrive within this: 408
  size_t max_connections = 1024;               // beyond: 503 and close
  size_t max_pipelined = 16;                   // requests parsed ahead of the one being answered
};

struct ServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 8080;  // 0: any free port (tests)
  Limits limits;
  std::string api_key;   // non-empty: routes added with auth = true need "Authorization: Bearer <key>"
  std::string cors_allow_origin = "*";
};

struct ServerCounters {
  uint64_t connections_accepted = 0;
  uint64_t connections_open = 0;
  uint64_t requests = 0;
  uint64_t responses_by_class[6] = {};  // [2] = 2xx, [4] = 4xx, [5] = 5xx
  uint64_t rejected_by_limit = 0;       // 408, 413, 429, 431, 503 answered by the server itself
  uint64_t client_gone = 0;             // handlers cancelled because the client went away
};

class Server {
 public:
  Server(asio::io_context& io, ServerOptions options);
  ~Server();
  // Exact-path routes. An unknown path answers 404, a known path with another method 405 (with Allow).
  void route(std::string method, std::string path, Handler handler, bool auth = true);
  // Binds and listens; the error names the address and the cause (e.g. "address already in use").
  Result<void> listen();
  asio::ip::tcp::endpoint local_endpoint() const;
  // Accepts until stop(); co_spawn once after listen().
  asio::awaitable<void> run();
  // Stops accepting and closes idle connections; running handlers finish.
  void stop();
  const ServerCounters& counters() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mach::server::http
