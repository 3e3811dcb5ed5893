// One client connection: three coroutines joined together.
//   reader     reads the socket into the RequestParser, also while a handler runs, so that a client that
//              goes away is noticed at once (EOF or error: the running handler gets terminal cancellation);
//   responder  takes parsed requests in order and answers each (limits, CORS, routing, auth, the handler),
//              answers "100 Continue", and answers a parse failure last, then closes;
//   watchdog   enforces the request timeout (408), the idle keep-alive timeout (silent close), the stalled
//              write (no progress for the idle timeout: the client counts as gone) and the lingering close
//              (after a final response, unread bytes are drained for a while so that closing does not
//              reset the connection before the client read the response).
// Only the responder (and handlers it runs) writes to the socket.
//
// Thread-safety: everything runs on the loop thread.
#pragma once

#include <asio/awaitable.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "server/http/http.hpp"
#include "server/http/parser.hpp"

namespace mach::server::http {

class Connection;

struct Route {
  std::string method;
  Handler handler;
  bool auth;
};

// What the server and its connections share; connections hold it, so a connection that outlives its Server
// (the loop still runs) still finds its counters and routes.
struct ServerState {
  explicit ServerState(ServerOptions o) : options(std::move(o)) {}
  ServerOptions options;
  std::map<std::string, std::vector<Route>, std::less<>> routes;  // by path
  ServerCounters counters;
  std::unordered_set<Connection*> connections;
  size_t refusing = 0;  // connections being answered 503
  bool stopping = false;
  void count_response(int status);
};

class Connection {
 public:
  using Clock = std::chrono::steady_clock;
  Connection(std::shared_ptr<ServerState> state, asio::ip::tcp::socket socket);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Serves until the connection is closed; co_spawn it.
  static asio::awaitable<void> run(std::shared_ptr<Connection> self);
  // Server::stop(): close now when idle, else after the response in progress.
  void stop();

 private:
  friend class ConnectionResponse;

  asio::awaitable<void> read_loop();
  asio::awaitable<void> respond_loop();
  asio::awaitable<void> watchdog();
  asio::awaitable<void> wait();
  void notify();
  void note_parser_progress();
  Clock::time_point deadline() const;
  Clock::time_point write_deadline() const;
  void on_deadline();
  void client_went_away();
  void close_socket();
  void begin_close();  // after a final response: shut down sending, linger, then close
  bool take_token();
  bool has_token();
  const std::optional<ParseFailure>& failure() const;

  // Answers one request; false when the connection must close after it.
  asio::awaitable<bool> serve(ParsedRequest parsed);
  asio::awaitable<bool> run_handler(const Route& route, ParsedRequest& parsed, bool keep_alive);
  asio::awaitable<bool> answer_continue(const Request& request);
  asio::awaitable<bool> preflight(const Request& request, bool keep_alive);
  // A refusal: routing, auth and limits before a handler ran, and whatever could not be answered in order.
  struct Refusal {
    int status;
    std::string message;
    std::string type;
    std::string code;
    Headers extra;
  };
  std::optional<Refusal> check_route(const Request& request, const Route** route);
  asio::awaitable<bool> refuse(const Refusal& r, bool keep_alive);

  // Writers; false (and the client counted gone) when the socket failed.
  asio::awaitable<bool> write(std::string_view a, std::string_view b = {}, std::string_view c = {});
  asio::awaitable<bool> write_response(int status, std::string_view content_type, std::string_view body,
                                       const Headers& extra, bool keep_alive);
  Headers cors_headers() const;

  std::shared_ptr<ServerState> state_;
  const Limits& limits_;
  asio::ip::tcp::socket socket_;
  std::string remote_;
  RequestParser parser_;
  asio::steady_timer wake_;   // never expires: cancel() wakes whoever waits for a state change
  asio::steady_timer watch_;  // the watchdog's next deadline

  std::optional<ParseFailure> timeout_failure_;  // 408 set by the watchdog
  Clock::time_point request_started_{};
  uint64_t timed_request_ = 0;  // parser_.requests_begun() when request_started_ was taken
  Clock::time_point idle_since_;
  Clock::time_point linger_until_{};
  Clock::time_point write_started_{};
  bool writing_ = false;  // a write is in flight since write_started_
  double tokens_;
  Clock::time_point tokens_at_;

  asio::cancellation_signal* handler_signal_ = nullptr;  // set while a handler runs
  bool busy_ = false;           // the responder is answering a request
  bool gone_ = false;           // the client went away (EOF, error, failed write)
  bool closing_ = false;        // we close: no more requests are answered
  bool socket_closed_ = false;
  bool reader_done_ = false;
  bool responder_done_ = false;
};

}  // namespace mach::server::http
