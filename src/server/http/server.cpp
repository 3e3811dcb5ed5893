#include <fmt/format.h>

#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/ip/address.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <array>
#include <cassert>
#include <cstdio>
#include <exception>

#include "server/http/connection.hpp"
#include "server/http/http.hpp"
#include "server/http/wire.hpp"

namespace mach::server::http {

using asio::awaitable;
using asio::use_awaitable;
using asio::experimental::as_tuple;
using asio::ip::tcp;

awaitable<void> Response::send_error(int status, std::string_view message, std::string_view type,
                                     std::string_view code, std::string_view param) {
  co_await send(status, "application/json", error_body(message, type, code, param));
}

struct Server::Impl {
  Impl(asio::io_context& io, ServerOptions options)
      : io(io), state(std::make_shared<ServerState>(std::move(options))), acceptor(io) {}
  asio::io_context& io;
  std::shared_ptr<ServerState> state;
  tcp::acceptor acceptor;
};

namespace {

void log_failure(std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    std::fprintf(stderr, "mach serve: a connection failed: %s\n", x.what());
  } catch (...) {
    std::fprintf(stderr, "mach serve: a connection failed with an unknown exception\n");
  }
}

// Reads and drops until the client closes.
awaitable<void> drain(tcp::socket& socket) {
  std::array<char, 4096> buf;
  for (;;) {
    auto [ec, n] = co_await socket.async_read_some(asio::buffer(buf), as_tuple(use_awaitable));
    if (ec) co_return;
  }
}

// Beyond max_connections: a 503 without reading the request, then a short drain so that closing does not
// reset the connection before the client read the answer.
awaitable<void> refuse_connection(std::shared_ptr<ServerState> state, tcp::socket socket) {
  ++state->refusing;
  ++state->counters.rejected_by_limit;
  state->count_response(503);
  const std::string body = error_body(
      fmt::format("The server has too many open connections (limit {}); retry later or raise the limit",
                  state->options.limits.max_connections),
      "server_error", "server_overloaded");
  Headers h;
  h.emplace_back("Content-Type", "application/json");
  h.emplace_back("Content-Length", std::to_string(body.size()));
  h.emplace_back("Connection", "close");
  h.emplace_back("Retry-After", "1");
  if (!state->options.cors_allow_origin.empty()) h.emplace_back("Access-Control-Allow-Origin", state->options.cors_allow_origin);
  const std::string head = response_head(503, h);
  const std::array<asio::const_buffer, 2> buffers = {asio::buffer(head), asio::buffer(body)};
  auto [ec, n] = co_await asio::async_write(socket, buffers, as_tuple(use_awaitable));
  if (!ec) {
    using namespace asio::experimental::awaitable_operators;
    socket.shutdown(tcp::socket::shutdown_send, ec);
    asio::steady_timer timer(socket.get_executor(), std::chrono::milliseconds(500));
    co_await (drain(socket) || timer.async_wait(use_awaitable));
  }
  asio::error_code ignored;
  socket.close(ignored);
  --state->refusing;
}

}  // namespace

Server::Server(asio::io_context& io, ServerOptions options) : impl_(std::make_unique<Impl>(io, std::move(options))) {}

Server::~Server() {
  impl_->state->stopping = true;
  asio::error_code ec;
  impl_->acceptor.close(ec);
}

void Server::route(std::string method, std::string path, Handler handler, bool auth) {
  assert(handler && "http::Server::route needs a handler");
  impl_->state->routes[std::move(path)].push_back(Route{std::move(method), std::move(handler), auth});
}

Result<void> Server::listen() {
  const auto& o = impl_->state->options;
  const std::string where = fmt::format("{}:{}", o.host, o.port);
  asio::error_code ec;
  tcp::endpoint endpoint;
  const auto address = asio::ip::make_address(o.host, ec);
  if (!ec) {
    endpoint = tcp::endpoint(address, o.port);
  } else {
    tcp::resolver resolver(impl_->io);
    const auto results = resolver.resolve(o.host, std::to_string(o.port), tcp::resolver::passive, ec);
    if (ec || results.empty()) {
      return Error{Errc::invalid_argument,
                   fmt::format("cannot listen on {}: the host does not resolve ({}); pass an IP address such as "
                               "127.0.0.1 or 0.0.0.0",
                               where, ec ? ec.message() : "no addresses")};
    }
    endpoint = results.begin()->endpoint();
  }
  auto& a = impl_->acceptor;
  auto fail = [&](const char* step) {
    asio::error_code ignored;
    a.close(ignored);
    return Error{Errc::io, fmt::format("cannot listen on {}: {} failed: {}", where, step, ec.message())};
  };
  if (a.open(endpoint.protocol(), ec); ec) return fail("socket");
  if (a.set_option(tcp::acceptor::reuse_address(true), ec); ec) return fail("SO_REUSEADDR");
  if (a.bind(endpoint, ec); ec) return fail("bind");
  if (a.listen(asio::socket_base::max_listen_connections, ec); ec) return fail("listen");
  return {};
}

tcp::endpoint Server::local_endpoint() const {
  asio::error_code ec;
  return impl_->acceptor.local_endpoint(ec);
}

awaitable<void> Server::run() {
  auto state = impl_->state;
  auto executor = co_await asio::this_coro::executor;
  while (!state->stopping && impl_->acceptor.is_open()) {
    auto [ec, socket] = co_await impl_->acceptor.async_accept(as_tuple(use_awaitable));
    if (state->stopping) break;
    if (ec) {
      if (ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor) break;
      // Out of file descriptors or a connection reset before accept: wait a little and go on.
      std::fprintf(stderr, "mach serve: accept failed: %s\n", ec.message().c_str());
      asio::steady_timer pause(executor, std::chrono::milliseconds(50));
      co_await pause.async_wait(as_tuple(use_awaitable));
      continue;
    }
    ++state->counters.connections_accepted;
    if (state->counters.connections_open >= state->options.limits.max_connections) {
      if (state->refusing < std::max<size_t>(16, state->options.limits.max_connections)) {
        asio::co_spawn(executor, refuse_connection(state, std::move(socket)), log_failure);
      }
      continue;  // a flood of refusals is closed without an answer
    }
    auto connection = std::make_shared<Connection>(state, std::move(socket));
    asio::co_spawn(executor, Connection::run(std::move(connection)), log_failure);
  }
}

void Server::stop() {
  auto& s = *impl_->state;
  s.stopping = true;
  asio::error_code ec;
  impl_->acceptor.close(ec);
  // A connection leaves the set when its coroutines end, never inside stop(); the copy keeps that an
  // implementation detail of Connection.
  const std::vector<Connection*> snapshot(s.connections.begin(), s.connections.end());
  for (Connection* c : snapshot) c->stop();
}

const ServerCounters& Server::counters() const { return impl_->state->counters; }

}  // namespace mach::server::http
