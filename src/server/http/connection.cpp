#include "server/http/connection.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/experimental/channel_error.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <cstdio>
#include <exception>
#include <stdexcept>

#include "server/http/wire.hpp"

namespace mach::server::http {

using asio::awaitable;
using asio::use_awaitable;
using asio::experimental::as_tuple;

namespace {

// How long a connection we close keeps draining what the client still sends (see begin_close); shorter
// once the server stops, whose clients may keep their side open until they see our FIN.
constexpr std::chrono::milliseconds kLinger{2000};
constexpr std::chrono::milliseconds kStopLinger{100};

std::string describe(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "an exception that is not a std::exception";
  }
}

bool is_cancellation(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const asio::system_error& x) {
    return x.code() == asio::error::operation_aborted || x.code() == asio::experimental::error::channel_cancelled;
  } catch (...) {
    return false;
  }
}

std::string endpoint_text(const asio::ip::tcp::socket& s) {
  asio::error_code ec;
  const auto ep = s.remote_endpoint(ec);
  if (ec) return "unknown";
  const auto a = ep.address();
  return a.is_v6() ? fmt::format("[{}]:{}", a.to_string(), ep.port()) : fmt::format("{}:{}", a.to_string(), ep.port());
}

}  // namespace

void ServerState::count_response(int status) {
  const int cls = status / 100;
  if (cls >= 1 && cls <= 5) ++counters.responses_by_class[cls];
}

// The Response a handler writes through. Streams to an HTTP/1.0 client are not chunked (it cannot decode
// chunks): the body runs to the end of the connection, which closes after end().
class ConnectionResponse final : public Response {
 public:
  ConnectionResponse(Connection& c, bool keep_alive, bool http_1_0)
      : c_(c), keep_alive_(keep_alive), http_1_0_(http_1_0) {}

  awaitable<void> send(int status, std::string content_type, std::string body, Headers extra) override {
    if (state_ != State::none) throw std::logic_error("http::Response::send after the response was sent");
    state_ = State::ended;
    co_await c_.write_response(status, content_type, body, extra, keep_alive_);
  }

  awaitable<void> begin_stream(int status, std::string content_type, Headers extra) override {
    if (state_ != State::none) throw std::logic_error("http::Response::begin_stream after the response was sent");
    state_ = State::streaming;
    if (http_1_0_) keep_alive_ = false;
    Headers h;
    h.emplace_back("Content-Type", std::move(content_type));
    h.emplace_back("Cache-Control", "no-cache");
    h.emplace_back("X-Accel-Buffering", "no");
    if (!http_1_0_) h.emplace_back("Transfer-Encoding", "chunked");
    h.emplace_back("Connection", keep_alive_ ? "keep-alive" : "close");
    for (auto& x : c_.cors_headers()) h.push_back(std::move(x));
    for (auto& x : extra) h.push_back(std::move(x));
    c_.state_->count_response(status);
    const std::string head = response_head(status, h);
    co_await c_.write(head);
  }

  awaitable<bool> write(std::string_view data) override {
    if (state_ != State::streaming) throw std::logic_error("http::Response::write outside a stream");
    if (c_.gone_) co_return false;
    if (data.empty()) co_return true;  // an empty chunk would end the body
    if (http_1_0_) co_return co_await c_.write(data);
    const std::string prefix = chunk_prefix(data.size());
    co_return co_await c_.write(prefix, data, "\r\n");
  }

  awaitable<void> end() override {
    if (state_ == State::ended) co_return;
    if (state_ != State::streaming) throw std::logic_error("http::Response::end without begin_stream");
    state_ = State::ended;
    if (!c_.gone_ && !http_1_0_) co_await c_.write(last_chunk);
  }

  bool client_gone() const override { return c_.gone_; }

  enum class State { none, streaming, ended };
  State state() const { return state_; }
  bool keep_alive() const { return keep_alive_; }

 private:
  Connection& c_;
  bool keep_alive_;
  bool http_1_0_;
  State state_ = State::none;
};

Connection::Connection(std::shared_ptr<ServerState> state, asio::ip::tcp::socket socket)
    : state_(std::move(state)),
      limits_(state_->options.limits),
      socket_(std::move(socket)),
      remote_(endpoint_text(socket_)),
      parser_(ParserLimits{limits_.max_header_bytes, limits_.max_body_bytes, std::max<size_t>(1, limits_.max_pipelined)}),
      wake_(socket_.get_executor(), Clock::time_point::max()),
      watch_(socket_.get_executor()),
      idle_since_(Clock::now()),
      tokens_(limits_.request_burst),
      tokens_at_(Clock::now()) {
  asio::error_code ec;
  socket_.set_option(asio::ip::tcp::no_delay(true), ec);  // stream chunks leave at once
  ++state_->counters.connections_open;
  state_->connections.insert(this);
}

Connection::~Connection() {
  --state_->counters.connections_open;
  state_->connections.erase(this);
}

awaitable<void> Connection::run(std::shared_ptr<Connection> self) {
  using namespace asio::experimental::awaitable_operators;
  co_await (self->read_loop() && self->respond_loop() && self->watchdog());
  self->close_socket();
}

void Connection::stop() {
  if (closing_) {
    linger_until_ = std::min(linger_until_, Clock::now() + kStopLinger);
  } else if (!busy_ && parser_.queued() == 0 && !parser_.in_message()) {
    closing_ = true;
    close_socket();
  }
  notify();
}

void Connection::notify() {
  wake_.cancel();
  watch_.cancel();
}

awaitable<void> Connection::wait() { co_await wake_.async_wait(as_tuple(use_awaitable)); }

const std::optional<ParseFailure>& Connection::failure() const {
  return parser_.failure() ? parser_.failure() : timeout_failure_;
}

void Connection::close_socket() {
  if (socket_closed_) return;
  socket_closed_ = true;
  asio::error_code ec;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  socket_.close(ec);
  notify();
}

void Connection::begin_close() {
  closing_ = true;
  asio::error_code ec;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_send, ec);
  linger_until_ = Clock::now() + (state_->stopping ? kStopLinger : kLinger);
  notify();
}

void Connection::client_went_away() {
  if (gone_) return;
  gone_ = true;
  if (handler_signal_) {
    ++state_->counters.client_gone;
    handler_signal_->emit(asio::cancellation_type::terminal);
  }
  notify();
}

void Connection::note_parser_progress() {
  // The request timeout runs from the read that brought a request's first byte.
  if (parser_.in_message() && parser_.requests_begun() != timed_request_) {
    timed_request_ = parser_.requests_begun();
    request_started_ = Clock::now();
  }
}

// ---- reader --------------------------------------------------------------------------------------------

awaitable<void> Connection::read_loop() {
  std::array<char, 16 * 1024> buf;
  while (!socket_closed_) {
    // After a failure or once we close, bytes are read and dropped: that is how the client's EOF is seen.
    const bool draining = closing_ || failure().has_value();
    if (!draining && !parser_.wants_input()) {
      if (responder_done_) break;
      co_await wait();
      continue;
    }
    auto [ec, n] = co_await socket_.async_read_some(asio::buffer(buf), as_tuple(use_awaitable));
    if (ec) break;
    if (closing_ || failure()) continue;
    parser_.feed(std::string_view(buf.data(), n));
    note_parser_progress();
    notify();
  }
  reader_done_ = true;
  if (!closing_) client_went_away();
  notify();
}

// ---- watchdog ------------------------------------------------------------------------------------------

Connection::Clock::time_point Connection::write_deadline() const {
  return writing_ ? write_started_ + limits_.idle_timeout : Clock::time_point::max();
}

Connection::Clock::time_point Connection::deadline() const {
  if (socket_closed_) return Clock::time_point::max();
  const auto write = write_deadline();
  if (closing_) return std::min(write, linger_until_);
  if (failure()) return write;  // the responder answers it
  if (parser_.in_message()) return std::min(write, request_started_ + limits_.request_timeout);
  if (busy_ || parser_.queued() > 0) return write;  // a handler may stream for long
  return std::min(write, idle_since_ + limits_.idle_timeout);
}

void Connection::on_deadline() {
  if (write_deadline() <= Clock::now()) {
    // The client stopped reading: a write made no progress for the idle timeout. It counts as gone, so
    // a handler stuck behind it is cancelled instead of holding its resources forever.
    client_went_away();
    close_socket();
  } else if (closing_) {
    close_socket();
  } else if (parser_.in_message()) {
    ++state_->counters.rejected_by_limit;
    timeout_failure_ = ParseFailure{408, fmt::format("the request did not arrive within {} ms; send the whole "
                                                     "request (headers and body) without pausing",
                                                     limits_.request_timeout.count())};
    notify();
  } else {
    closing_ = true;  // idle keep-alive connection: closed without a word, as HTTP allows
    close_socket();
  }
}

awaitable<void> Connection::watchdog() {
  while (!(reader_done_ && responder_done_)) {
    const auto d = deadline();
    if (d <= Clock::now()) {
      on_deadline();
      continue;
    }
    watch_.expires_at(d);
    co_await watch_.async_wait(as_tuple(use_awaitable));
  }
}

// ---- responder -----------------------------------------------------------------------------------------

awaitable<void> Connection::respond_loop() {
  while (!gone_ && !closing_) {
    if (parser_.queued() > 0) {
      ParsedRequest parsed = std::move(*parser_.next());
      note_parser_progress();
      notify();  // the reader may read again
      busy_ = true;
      const bool go_on = co_await serve(std::move(parsed));
      busy_ = false;
      idle_since_ = Clock::now();
      if (!go_on || state_->stopping) begin_close();
      notify();
      continue;
    }
    if (const Request* r = parser_.awaiting_continue()) {
      busy_ = true;
      const bool go_on = co_await answer_continue(*r);
      busy_ = false;
      if (!go_on) begin_close();
      continue;
    }
    if (const auto& f = failure()) {
      if (f->status == 413 || f->status == 431) ++state_->counters.rejected_by_limit;
      const char* code = f->status == 413 ? "request_too_large"
                         : f->status == 431 ? "request_header_fields_too_large"
                         : f->status == 408 ? "request_timeout"
                                            : "";
      const Refusal refusal{f->status, f->message, "invalid_request_error", code, {}};
      co_await refuse(refusal, false);
      begin_close();
      continue;
    }
    if (reader_done_) break;
    if (state_->stopping && !parser_.in_message()) {
      begin_close();
      continue;
    }
    co_await wait();
  }
  responder_done_ = true;
  notify();
}

bool Connection::has_token() {
  if (limits_.requests_per_second <= 0) return true;
  const auto now = Clock::now();
  const double elapsed = std::chrono::duration<double>(now - tokens_at_).count();
  tokens_ = std::min(limits_.request_burst, tokens_ + elapsed * limits_.requests_per_second);
  tokens_at_ = now;
  return tokens_ >= 1.0;
}

bool Connection::take_token() {
  if (!has_token()) return false;
  if (limits_.requests_per_second > 0) tokens_ -= 1.0;
  return true;
}

Headers Connection::cors_headers() const {
  if (state_->options.cors_allow_origin.empty()) return {};
  return {{"Access-Control-Allow-Origin", state_->options.cors_allow_origin}};
}

std::optional<Connection::Refusal> Connection::check_route(const Request& r, const Route** route) {
  const auto it = state_->routes.find(r.path);
  if (it == state_->routes.end()) {
    return Refusal{404, fmt::format("Invalid URL ({} {}): no such route", r.method, r.path), "invalid_request_error",
                   "", {}};
  }
  std::string allow;
  for (const Route& x : it->second) {
    if (x.method == r.method) {
      const std::string& key = state_->options.api_key;
      if (x.auth && !key.empty() && !bearer_matches(r.header("authorization"), key)) {
        return Refusal{401,
                       "Incorrect or missing API key: send the header 'Authorization: Bearer <key>' with the key "
                       "the server was started with",
                       "invalid_request_error", "invalid_api_key", {{"WWW-Authenticate", "Bearer"}}};
      }
      *route = &x;
      return std::nullopt;
    }
    allow += allow.empty() ? x.method : ", " + x.method;
  }
  allow += ", OPTIONS";
  return Refusal{405, fmt::format("Method {} is not allowed on {}; allowed: {}", r.method, r.path, allow),
                 "invalid_request_error", "method_not_allowed", {{"Allow", allow}}};
}

awaitable<bool> Connection::serve(ParsedRequest parsed) {
  ++state_->counters.requests;
  Request& r = parsed.request;
  r.remote = remote_;
  const bool keep_alive = parsed.keep_alive && !state_->stopping;
  if (!take_token()) {
    ++state_->counters.rejected_by_limit;
    const Refusal refusal{429,
                          fmt::format("Rate limit reached: at most {} requests per second on one connection (bursts "
                                      "of {}); slow down or open another connection",
                                      limits_.requests_per_second, limits_.request_burst),
                          "requests", "rate_limit_exceeded", Headers{{"Retry-After", "1"}}};
    co_return co_await refuse(refusal, keep_alive);
  }
  if (r.method == "OPTIONS") co_return co_await preflight(r, keep_alive);
  const Route* route = nullptr;
  if (auto refusal = check_route(r, &route)) co_return co_await refuse(*refusal, keep_alive);
  co_return co_await run_handler(*route, parsed, keep_alive);
}

awaitable<bool> Connection::preflight(const Request& r, bool keep_alive) {
  const auto it = state_->routes.find(r.path);
  if (it == state_->routes.end()) {
    const Refusal refusal{404, fmt::format("Invalid URL (OPTIONS {}): no such route", r.path),
                          "invalid_request_error", "", {}};
    co_return co_await refuse(refusal, keep_alive);
  }
  std::string methods;
  for (const Route& x : it->second) methods += x.method + ", ";
  methods += "OPTIONS";
  // Browsers ask for the headers their client sends (the OpenAI SDK adds x-stainless-*); with any origin
  // allowed, allowing the headers asked for adds nothing a non-browser client could not do anyway.
  std::string allow_headers = "Authorization, Content-Type";
  if (const std::string* asked = r.header("access-control-request-headers")) {
    std::string clean;
    for (char ch : *asked) {
      if (std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == ',' || ch == ' ') clean += ch;
    }
    if (!trim(clean).empty()) allow_headers += ", " + std::string(trim(clean));
  }
  Headers h = cors_headers();
  h.emplace_back("Access-Control-Allow-Methods", methods);
  h.emplace_back("Access-Control-Allow-Headers", allow_headers);
  h.emplace_back("Access-Control-Max-Age", "86400");
  h.emplace_back("Connection", keep_alive ? "keep-alive" : "close");
  state_->count_response(204);
  const std::string head = response_head(204, h);
  co_return co_await write(head) && keep_alive;
}

awaitable<bool> Connection::refuse(const Refusal& x, bool keep_alive) {
  const std::string body = error_body(x.message, x.type, x.code);
  co_return co_await write_response(x.status, "application/json", body, x.extra, keep_alive) && keep_alive;
}

awaitable<bool> Connection::answer_continue(const Request& r) {
  // The body is read only when its handler would run; otherwise the final answer goes out now and the
  // connection closes (the client may or may not send the body: the stream's state is unknown).
  const Route* route = nullptr;
  std::optional<Refusal> refusal = check_route(r, &route);
  if (!refusal && !has_token()) {
    ++state_->counters.rejected_by_limit;
    refusal = Refusal{429, "Rate limit reached on this connection; slow down or open another connection",
                      "requests", "rate_limit_exceeded", {{"Retry-After", "1"}}};
  }
  if (refusal) {
    ++state_->counters.requests;
    co_await refuse(*refusal, false);
    co_return false;
  }
  parser_.continue_answered();
  constexpr std::string_view interim = "HTTP/1.1 100 Continue\r\n\r\n";
  co_return co_await write(interim);
}

awaitable<bool> Connection::run_handler(const Route& route, ParsedRequest& parsed, bool keep_alive) {
  if (gone_) co_return false;
  ConnectionResponse response(*this, keep_alive, parsed.http_1_0);
  asio::cancellation_signal signal;
  handler_signal_ = &signal;
  auto [error] = co_await asio::co_spawn(socket_.get_executor(), route.handler(parsed.request, response),
                                         asio::bind_cancellation_slot(signal.slot(), as_tuple(use_awaitable)));
  handler_signal_ = nullptr;
  const Request& r = parsed.request;
  if (error) {
    if (gone_ && is_cancellation(error)) co_return false;  // cancelled because the client went away
    std::fprintf(stderr, "mach serve: %s %s from %s: the handler failed: %s\n", r.method.c_str(), r.path.c_str(),
                 remote_.c_str(), describe(error).c_str());
    if (response.state() == ConnectionResponse::State::none && !gone_) {
      const Refusal refusal{500, "The server failed while handling the request: " + describe(error),
                            "server_error", "", {}};
      co_return co_await refuse(refusal, keep_alive);
    }
    co_return false;  // a stream cut short: closing tells the client its body is incomplete
  }
  switch (response.state()) {
    case ConnectionResponse::State::none:
      if (gone_) co_return false;
      std::fprintf(stderr, "mach serve: %s %s: the handler returned without a response\n", r.method.c_str(),
                   r.path.c_str());
      {
        const Refusal refusal{500, "The server returned no response", "server_error", "", {}};
        co_return co_await refuse(refusal, keep_alive);
      }
    case ConnectionResponse::State::streaming:
      co_await response.end();
      break;
    case ConnectionResponse::State::ended:
      break;
  }
  co_return !gone_ && response.keep_alive();
}

// ---- writers -------------------------------------------------------------------------------------------

awaitable<bool> Connection::write(std::string_view a, std::string_view b, std::string_view c) {
  if (gone_ || socket_closed_) co_return false;
  const std::array<asio::const_buffer, 3> buffers = {asio::buffer(a), asio::buffer(b), asio::buffer(c)};
  writing_ = true;
  write_started_ = Clock::now();
  if (write_deadline() < watch_.expiry()) watch_.cancel();  // the watchdog sleeps longer: wake it
  auto [ec, n] = co_await asio::async_write(socket_, buffers, as_tuple(use_awaitable));
  writing_ = false;
  if (ec) {
    client_went_away();
    close_socket();
    co_return false;
  }
  co_return true;
}

awaitable<bool> Connection::write_response(int status, std::string_view content_type, std::string_view body,
                                           const Headers& extra, bool keep_alive) {
  Headers h;
  h.emplace_back("Content-Type", content_type);
  h.emplace_back("Content-Length", std::to_string(body.size()));
  h.emplace_back("Connection", keep_alive ? "keep-alive" : "close");
  for (auto& x : cors_headers()) h.push_back(std::move(x));
  for (const auto& x : extra) h.push_back(x);
  state_->count_response(status);
  const std::string head = response_head(status, h);
  co_return co_await write(head, body);
}

}  // namespace mach::server::http
