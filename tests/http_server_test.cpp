// The HTTP layer over real loopback sockets: a Server on its own loop thread, test handlers, and blocking
// POSIX clients in the test thread that check the exact bytes of each answer. Every refusal is followed by
// proof that the server still serves, and the connection count must return to zero.
#include "server/http/http.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <asio/co_spawn.hpp>
#include <asio/experimental/channel.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "temp_dir.hpp"

namespace mach::server::http {
namespace {

using namespace std::chrono_literals;
using asio::awaitable;
using asio::use_awaitable;
using Clock = std::chrono::steady_clock;

// What the test handlers saw, written on the loop thread and read by the test thread.
struct Observed {
  std::atomic<int> waiting{0};         // /wait handlers blocked on their channel
  std::atomic<int> aborted{0};         // /wait and /stream handlers woken by cancellation
  std::atomic<int64_t> aborted_ns{0};  // when the last one woke (steady clock)
};

awaitable<void> sleep_for(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(use_awaitable);
}

void add_routes(Server& s, Observed& seen) {
  s.route("POST", "/echo", [](const Request& r, Response& res) -> awaitable<void> {
    co_await res.send(200, "text/plain", r.body);
  });
  // Answers after a pause: a pipelined request behind it must still be answered second.
  s.route("POST", "/slow", [](const Request& r, Response& res) -> awaitable<void> {
    co_await sleep_for(50ms);
    co_await res.send(200, "text/plain", "slow:" + r.body);
  });
  s.route("GET", "/health", [](const Request&, Response& res) -> awaitable<void> {
    co_await res.send(200, "application/json", "{\"status\":\"ok\"}");
  }, false);
  // SSE-like: ?n chunks "data: i\n\n", 5 ms apart, then "data: [DONE]\n\n".
  s.route("GET", "/stream", [&seen](const Request& r, Response& res) -> awaitable<void> {
    const int n = r.query.empty() ? 5 : std::stoi(r.query);
    co_await res.begin_stream(200, "text/event-stream");
    try {
      for (int i = 0; i < n; ++i) {
        if (!co_await res.write("data: {\"i\": " + std::to_string(i) + "}\n\n")) co_return;
        co_await sleep_for(5ms);
      }
    } catch (const asio::system_error& e) {
      if (e.code() == asio::error::operation_aborted) {
        seen.aborted_ns = Clock::now().time_since_epoch().count();
        ++seen.aborted;
      }
      throw;
    }
    co_await res.write("data: [DONE]\n\n");
    co_await res.end();
  });
  // Waits for a message that never comes: only the client going away ends it.
  s.route("POST", "/wait", [&seen](const Request&, Response&) -> awaitable<void> {
    asio::experimental::channel<void(asio::error_code, int)> ch(co_await asio::this_coro::executor, 1);
    ++seen.waiting;
    try {
      co_await ch.async_receive(use_awaitable);
    } catch (const asio::system_error& e) {
      // A channel reports cancellation as channel_cancelled, other operations as operation_aborted.
      if (e.code() == asio::experimental::error::channel_cancelled) {
        seen.aborted_ns = Clock::now().time_since_epoch().count();
        ++seen.aborted;
      }
      --seen.waiting;
      throw;
    }
  });
  s.route("POST", "/throw", [](const Request&, Response&) -> awaitable<void> {
    throw std::runtime_error("test handler failure");
    co_return;
  });
  // Writes 64 KiB chunks until the client is gone.
  s.route("GET", "/big", [](const Request&, Response& res) -> awaitable<void> {
    co_await res.begin_stream(200, "application/octet-stream");
    const std::string block(64 * 1024, 'b');
    while (co_await res.write(block)) {
    }
  });
  s.route("GET", "/silent", [](const Request&, Response&) -> awaitable<void> { co_return; });
}

// A Server on 127.0.0.1:0 with its own loop thread.
class TestServer {
 public:
  explicit TestServer(ServerOptions o = {}) {
    o.host = "127.0.0.1";
    o.port = 0;
    server_ = std::make_unique<Server>(io_, std::move(o));
    add_routes(*server_, seen);
    server_->listen().value_or_throw();
    port = server_->local_endpoint().port();
    asio::co_spawn(io_, server_->run(), [this](std::exception_ptr e) {
      run_returned = true;
      if (e) std::rethrow_exception(e);
    });
    thread_ = std::thread([this] { io_.run(); });
  }
  ~TestServer() {
    asio::post(io_, [this] { server_->stop(); });
    // Every connection and handler ends after stop(): the loop runs out of work by itself.
    auto done = std::async(std::launch::async, [this] { thread_.join(); });
    if (done.wait_for(5s) != std::future_status::ready) {
      ADD_FAILURE() << "the server did not stop within 5 s";
      io_.stop();
      done.wait();
    }
    EXPECT_TRUE(run_returned);
  }
  ServerCounters counters() {
    std::promise<ServerCounters> p;
    asio::post(io_, [&] { p.set_value(server_->counters()); });
    return p.get_future().get();
  }
  // Waits (up to 2 s) until no connection is open.
  bool connections_drain() {
    for (auto end = Clock::now() + 2s; Clock::now() < end; std::this_thread::sleep_for(5ms)) {
      if (counters().connections_open == 0) return true;
    }
    return false;
  }
  uint16_t port = 0;
  Observed seen;
  std::atomic<bool> run_returned{false};

 private:
  asio::io_context io_{1};
  std::unique_ptr<Server> server_;
  std::thread thread_;
};

struct Reply {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string head;  // status line and headers, as sent
  std::string body;  // de-chunked
  std::vector<std::string> chunks;
  std::string raw;
  const std::string& header(const std::string& k) const {
    static const std::string none;
    auto it = headers.find(k);
    return it == headers.end() ? none : it->second;
  }
  nlohmann::json json() const { return nlohmann::json::parse(body); }
};

// A blocking client; every read gives up after 5 s so that a broken server fails the test, not hangs it.
class Client {
 public:
  explicit Client(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) throw std::runtime_error("connect failed");
    timeval tv{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  ~Client() { close(); }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  void send(std::string_view s) {
    while (!s.empty()) {
      const ssize_t n = ::send(fd_, s.data(), s.size(), MSG_NOSIGNAL);
      if (n <= 0) throw std::runtime_error("send failed");
      s.remove_prefix(static_cast<size_t>(n));
    }
  }
  // One more byte into buf_; false on EOF or error.
  bool fill() {
    char tmp[65536];
    const ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n <= 0) return false;
    buf_.append(tmp, static_cast<size_t>(n));
    return true;
  }
  std::string take(size_t n) {
    while (buf_.size() < n) {
      if (!fill()) throw std::runtime_error("connection closed early");
    }
    std::string out = buf_.substr(0, n);
    buf_.erase(0, n);
    return out;
  }
  std::string line() {
    size_t p;
    while ((p = buf_.find("\r\n")) == std::string::npos) {
      if (!fill()) throw std::runtime_error("connection closed before a line ended");
    }
    return take(p + 2);
  }
  // Reads one response: the head, then a Content-Length body or chunks.
  Reply read() {
    Reply r;
    size_t p;
    while ((p = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (!fill()) throw std::runtime_error("connection closed before a response head: got '" + buf_ + "'");
    }
    r.head = take(p + 4);
    r.raw = r.head;
    r.status = std::stoi(r.head.substr(9, 3));
    size_t pos = r.head.find("\r\n") + 2;
    while (pos < r.head.size() - 2) {
      const size_t e = r.head.find("\r\n", pos);
      const std::string h = r.head.substr(pos, e - pos);
      const size_t c = h.find(':');
      std::string k = h.substr(0, c);
      for (auto& ch : k) ch = static_cast<char>(std::tolower(ch));
      r.headers[k] = h.substr(c + 2);
      pos = e + 2;
    }
    if (r.status < 200 || r.status == 204) return r;
    if (r.header("transfer-encoding") == "chunked") {
      for (;;) {
        const std::string size_line = line();
        r.raw += size_line;
        const size_t n = std::stoul(size_line, nullptr, 16);
        const std::string data = take(n + 2);
        r.raw += data;
        if (n == 0) break;
        r.chunks.push_back(data.substr(0, n));
        r.body += data.substr(0, n);
      }
    } else if (!r.header("content-length").empty()) {
      r.body = take(std::stoul(r.header("content-length")));
      r.raw += r.body;
    } else {
      while (fill()) {
      }
      r.body = std::move(buf_);
      buf_.clear();
      r.raw += r.body;
    }
    return r;
  }
  // True when the server closes the connection within `within`, with no byte sent before.
  bool closed_silently(std::chrono::milliseconds within) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(within.count())) <= 0) return false;
    char c;
    return ::recv(fd_, &c, 1, 0) <= 0 && buf_.empty();
  }
  bool closed() { return closed_silently(2000ms); }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  std::string buf_;
};

std::string post(std::string_view path, std::string_view body, std::string_view extra = "") {
  return "POST " + std::string(path) + " HTTP/1.1\r\nHost: t\r\n" + std::string(extra) +
         "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + std::string(body);
}

// One request on a fresh connection: the server still serves.
void expect_serves(uint16_t port) {
  Client c(port);
  c.send(post("/echo", "still here"));
  const Reply r = c.read();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "still here");
}

void expect_error(const Reply& r, int status, const std::string& type, const std::string& code = "") {
  EXPECT_EQ(r.status, status) << r.raw;
  EXPECT_EQ(r.header("content-type"), "application/json");
  EXPECT_EQ(r.header("access-control-allow-origin"), "*");
  const auto j = r.json();
  ASSERT_TRUE(j.contains("error")) << r.body;
  EXPECT_FALSE(j["error"]["message"].get<std::string>().empty());
  EXPECT_EQ(j["error"]["type"], type);
  if (code.empty()) {
    EXPECT_TRUE(j["error"]["code"].is_null());
  } else {
    EXPECT_EQ(j["error"]["code"], code);
  }
  EXPECT_TRUE(j["error"].contains("param"));
}

TEST(HttpServer, KeepAliveAnswersSeveralRequestsOnOneConnection) {
  TestServer s;
  Client c(s.port);
  for (int i = 0; i < 3; ++i) {
    c.send(post("/echo", "hello" + std::to_string(i)));
    const Reply r = c.read();
    EXPECT_EQ(r.raw, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\nConnection: keep-alive\r\n"
                     "Access-Control-Allow-Origin: *\r\n\r\nhello" + std::to_string(i));
  }
  const auto n = s.counters();
  EXPECT_EQ(n.connections_accepted, 1u);
  EXPECT_EQ(n.requests, 3u);
  EXPECT_EQ(n.responses_by_class[2], 3u);
  c.close();
  EXPECT_TRUE(s.connections_drain());
}

TEST(HttpServer, Http10ClosesAfterTheResponseUnlessKeepAlive) {
  TestServer s;
  Client c(s.port);
  c.send("GET /health HTTP/1.0\r\n\r\n");
  const Reply r = c.read();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("connection"), "close");
  EXPECT_TRUE(c.closed());
  Client k(s.port);
  for (int i = 0; i < 2; ++i) {
    k.send("GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    EXPECT_EQ(k.read().header("connection"), "keep-alive");
  }
}

TEST(HttpServer, PipelinedRequestsAreAnsweredInOrder) {
  TestServer s;
  Client c(s.port);
  // The first is slow: the two behind it are parsed meanwhile and must still come second and third.
  c.send(post("/slow", "a") + post("/echo", "b") + "GET /health HTTP/1.1\r\n\r\n");
  EXPECT_EQ(c.read().body, "slow:a");
  EXPECT_EQ(c.read().body, "b");
  EXPECT_EQ(c.read().body, "{\"status\":\"ok\"}");
  EXPECT_EQ(s.counters().requests, 3u);
}

TEST(HttpServer, ManyPipelinedRequestsBeyondTheQueueBoundAllGetAnswers) {
  ServerOptions o;
  o.limits.max_pipelined = 2;
  TestServer s(o);
  Client c(s.port);
  std::string all;
  for (int i = 0; i < 40; ++i) all += post("/echo", std::to_string(i));
  c.send(all);
  for (int i = 0; i < 40; ++i) EXPECT_EQ(c.read().body, std::to_string(i));
}

TEST(HttpServer, ChunkedRequestBodyIsDechunked) {
  TestServer s;
  Client c(s.port);
  c.send("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
  std::this_thread::sleep_for(10ms);
  c.send("1;ext=1\r\n \r\n6\r\nworld!\r\n0\r\nX-Trailer: t\r\n\r\n");
  const Reply r = c.read();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "hello world!");
  c.send(post("/echo", "next"));
  EXPECT_EQ(c.read().body, "next");
}

TEST(HttpServer, ExpectContinueIsAnsweredBeforeTheBody) {
  TestServer s;
  Client c(s.port);
  c.send("POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
  EXPECT_EQ(c.take(25), "HTTP/1.1 100 Continue\r\n\r\n");
  c.send("body");
  const Reply r = c.read();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "body");
}

TEST(HttpServer, ExpectContinueIsRefusedUpFrontWhenTheBodyWouldNotBeRead) {
  ServerOptions o;
  o.limits.max_body_bytes = 100;
  TestServer s(o);
  {
    Client c(s.port);  // too large: 413 before any body byte, then close
    c.send("POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 101\r\n\r\n");
    const Reply r = c.read();
    expect_error(r, 413, "invalid_request_error", "request_too_large");
    EXPECT_EQ(r.header("connection"), "close");
    EXPECT_TRUE(c.closed());
  }
  {
    Client c(s.port);  // no such route: 404 instead of 100
    c.send("POST /nowhere HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    const Reply r = c.read();
    expect_error(r, 404, "invalid_request_error");
    EXPECT_TRUE(c.closed());
  }
  expect_serves(s.port);
  EXPECT_EQ(s.counters().rejected_by_limit, 1u);
}

TEST(HttpServer, CorsPreflightAndOriginOnEveryResponse) {
  ServerOptions o;
  o.api_key = "sk-test";
  TestServer s(o);
  Client c(s.port);
  c.send("OPTIONS /echo HTTP/1.1\r\nHost: t\r\nOrigin: http://example.com\r\nAccess-Control-Request-Method: POST\r\n"
         "Access-Control-Request-Headers: authorization, content-type, x-stainless-os\r\n\r\n");
  const Reply r = c.read();
  EXPECT_EQ(r.raw, "HTTP/1.1 204 No Content\r\nAccess-Control-Allow-Origin: *\r\nAccess-Control-Allow-Methods: POST, "
                   "OPTIONS\r\nAccess-Control-Allow-Headers: Authorization, Content-Type, authorization, "
                   "content-type, x-stainless-os\r\nAccess-Control-Max-Age: 86400\r\nConnection: keep-alive\r\n\r\n");
  c.send("GET /nowhere HTTP/1.1\r\n\r\n");
  EXPECT_EQ(c.read().header("access-control-allow-origin"), "*");
}

TEST(HttpServer, BearerKeyOnAuthRoutesOnly) {
  ServerOptions o;
  o.api_key = "sk-test-key";
  TestServer s(o);
  Client c(s.port);
  c.send(post("/echo", "x"));
  Reply r = c.read();
  expect_error(r, 401, "invalid_request_error", "invalid_api_key");
  c.send(post("/echo", "x", "Authorization: Bearer sk-test-kez\r\n"));
  expect_error(c.read(), 401, "invalid_request_error", "invalid_api_key");
  c.send(post("/echo", "x", "Authorization: Bearer sk-test-key-longer\r\n"));
  expect_error(c.read(), 401, "invalid_request_error", "invalid_api_key");
  c.send(post("/echo", "x", "Authorization: Basic sk-test-key\r\n"));
  expect_error(c.read(), 401, "invalid_request_error", "invalid_api_key");
  c.send(post("/echo", "x", "Authorization: bearer sk-test-key\r\n"));
  r = c.read();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "x");
  c.send("GET /health HTTP/1.1\r\n\r\n");  // open route
  EXPECT_EQ(c.read().status, 200);
  c.send("OPTIONS /echo HTTP/1.1\r\n\r\n");  // preflight needs no key
  EXPECT_EQ(c.read().status, 204);
}

TEST(HttpServer, NoKeyMeansNoAuth) {
  TestServer s;
  Client c(s.port);
  c.send(post("/echo", "open"));
  EXPECT_EQ(c.read().body, "open");
}

TEST(HttpServer, UnknownPathIs404AndWrongMethodIs405WithAllow) {
  TestServer s;
  Client c(s.port);
  c.send("GET /v1/nothing HTTP/1.1\r\n\r\n");
  expect_error(c.read(), 404, "invalid_request_error");
  c.send("GET /echo HTTP/1.1\r\n\r\n");
  const Reply r = c.read();
  expect_error(r, 405, "invalid_request_error", "method_not_allowed");
  EXPECT_EQ(r.header("allow"), "POST, OPTIONS");
  EXPECT_EQ(r.header("connection"), "keep-alive");
  c.send(post("/echo", "after"));
  EXPECT_EQ(c.read().body, "after");
  EXPECT_EQ(s.counters().responses_by_class[4], 2u);
}

TEST(HttpServer, MalformedRequestIs400ThenClose) {
  TestServer s;
  Client c(s.port);
  c.send("GET / HTTP/1.1\r\nBad Header\r\n\r\n");
  const Reply r = c.read();
  expect_error(r, 400, "invalid_request_error");
  EXPECT_NE(r.json()["error"]["message"].get<std::string>().find("malformed HTTP request"), std::string::npos);
  EXPECT_EQ(r.header("connection"), "close");
  EXPECT_TRUE(c.closed());
  c.close();  // the server drains a closed connection until the client closes too (or 2 s pass)
  Client smuggle(s.port);  // both lengths: refused, never guessed
  smuggle.send("POST /echo HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
  expect_error(smuggle.read(), 400, "invalid_request_error");
  smuggle.close();
  expect_serves(s.port);
  EXPECT_TRUE(s.connections_drain());
}

TEST(HttpServer, HeadersOverTheLimitAre431) {
  ServerOptions o;
  o.limits.max_header_bytes = 1024;
  TestServer s(o);
  Client c(s.port);
  c.send("GET /health HTTP/1.1\r\nX-Big: " + std::string(2000, 'a') + "\r\n\r\n");
  const Reply r = c.read();
  expect_error(r, 431, "invalid_request_error", "request_header_fields_too_large");
  EXPECT_EQ(r.header("connection"), "close");
  EXPECT_TRUE(c.closed());
  expect_serves(s.port);
  EXPECT_EQ(s.counters().rejected_by_limit, 1u);
}

TEST(HttpServer, BodyOverTheLimitIs413ByContentLengthAndByChunks) {
  ServerOptions o;
  o.limits.max_body_bytes = 1000;
  TestServer s(o);
  {
    Client c(s.port);
    c.send(post("/echo", std::string(1000, 'x')));  // exactly the limit is fine
    EXPECT_EQ(c.read().status, 200);
    c.send("POST /echo HTTP/1.1\r\nContent-Length: 1001\r\n\r\n");
    const Reply r = c.read();
    expect_error(r, 413, "invalid_request_error", "request_too_large");
    EXPECT_EQ(r.header("connection"), "close");
    EXPECT_TRUE(c.closed());
  }
  {
    Client c(s.port);
    c.send("POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 3; ++i) c.send("190\r\n" + std::string(400, 'y') + "\r\n");  // 1200 bytes in all
    const Reply r = c.read();
    expect_error(r, 413, "invalid_request_error", "request_too_large");
    EXPECT_TRUE(c.closed());
  }
  expect_serves(s.port);
  EXPECT_EQ(s.counters().rejected_by_limit, 2u);
}

TEST(HttpServer, RequestRateOfOneConnectionIs429BeyondTheBucket) {
  ServerOptions o;
  o.limits.requests_per_second = 20;
  o.limits.request_burst = 2;
  TestServer s(o);
  Client c(s.port);
  c.send(post("/echo", "1") + post("/echo", "2") + post("/echo", "3"));
  EXPECT_EQ(c.read().status, 200);
  EXPECT_EQ(c.read().status, 200);
  const Reply r = c.read();
  expect_error(r, 429, "requests", "rate_limit_exceeded");
  EXPECT_EQ(r.header("connection"), "keep-alive");  // the stream is intact: the connection goes on
  std::this_thread::sleep_for(60ms);                // one token refills after 50 ms
  c.send(post("/echo", "4"));
  EXPECT_EQ(c.read().body, "4");
  expect_serves(s.port);  // the bucket is per connection
  EXPECT_EQ(s.counters().rejected_by_limit, 1u);
}

TEST(HttpServer, IncompleteRequestIs408AfterTheRequestTimeout) {
  ServerOptions o;
  o.limits.request_timeout = 150ms;
  TestServer s(o);
  Client c(s.port);
  const auto t0 = Clock::now();
  c.send("POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
  const Reply r = c.read();
  const auto waited = Clock::now() - t0;
  expect_error(r, 408, "invalid_request_error", "request_timeout");
  EXPECT_EQ(r.header("connection"), "close");
  EXPECT_GE(waited, 140ms);
  EXPECT_LT(waited, 2s);
  EXPECT_TRUE(c.closed());
  expect_serves(s.port);
  EXPECT_EQ(s.counters().rejected_by_limit, 1u);
}

TEST(HttpServer, RequestTimeoutRunsFromEachRequestsFirstByte) {
  ServerOptions o;
  o.limits.request_timeout = 250ms;
  TestServer s(o);
  Client c(s.port);
  c.send("POST /echo HTTP/1.1\r\nContent-Length: 1\r\n\r\n");  // the first request, without its body
  std::this_thread::sleep_for(150ms);
  c.send("aPOST /echo HTTP/1.1\r\nContent-Length: 1\r\n\r\n");  // its body, and the second one begins
  std::this_thread::sleep_for(150ms);                               // 300 ms after the first began
  c.send("b");
  EXPECT_EQ(c.read().body, "a");
  EXPECT_EQ(c.read().body, "b");
  EXPECT_EQ(s.counters().rejected_by_limit, 0u);
}

TEST(HttpServer, IdleKeepAliveConnectionIsClosedSilently) {
  ServerOptions o;
  o.limits.idle_timeout = 150ms;
  TestServer s(o);
  Client c(s.port);
  c.send(post("/echo", "x"));
  EXPECT_EQ(c.read().status, 200);
  EXPECT_FALSE(c.closed_silently(50ms));  // not before the timeout
  EXPECT_TRUE(c.closed_silently(1000ms));
  Client never(s.port);  // a connection that never sends a byte is idle too
  EXPECT_TRUE(never.closed_silently(1000ms));
  expect_serves(s.port);
  EXPECT_TRUE(s.connections_drain());
}

TEST(HttpServer, ClientThatStopsReadingIsGoneAfterTheIdleTimeout) {
  ServerOptions o;
  o.limits.idle_timeout = 150ms;
  TestServer s(o);
  Client c(s.port);
  c.send("GET /big HTTP/1.1\r\n\r\n");  // and never read: the server's writes stall
  for (auto end = Clock::now() + 3s; s.counters().client_gone == 0 && Clock::now() < end;) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(s.counters().client_gone, 1u);
  EXPECT_TRUE(s.connections_drain());
  expect_serves(s.port);
}

TEST(HttpServer, ConnectionsBeyondTheLimitGet503) {
  ServerOptions o;
  o.limits.max_connections = 2;
  TestServer s(o);
  auto a = std::make_unique<Client>(s.port);
  Client b(s.port);
  a->send(post("/echo", "a"));
  b.send(post("/echo", "b"));
  EXPECT_EQ(a->read().status, 200);  // both accepted and counted
  EXPECT_EQ(b.read().status, 200);
  {
    Client c(s.port);
    const Reply r = c.read();
    expect_error(r, 503, "server_error", "server_overloaded");
    EXPECT_EQ(r.header("connection"), "close");
    EXPECT_TRUE(c.closed());
  }
  a.reset();
  for (auto end = Clock::now() + 2s; s.counters().connections_open > 1 && Clock::now() < end;) {
    std::this_thread::sleep_for(5ms);
  }
  expect_serves(s.port);
  b.send(post("/echo", "b2"));
  EXPECT_EQ(b.read().body, "b2");
  EXPECT_EQ(s.counters().rejected_by_limit, 1u);
}

TEST(HttpServer, ClientDisconnectCancelsAWaitingHandler) {
  TestServer s;
  Client c(s.port);
  c.send(post("/wait", ""));
  for (auto end = Clock::now() + 2s; s.seen.waiting == 0 && Clock::now() < end;) std::this_thread::sleep_for(1ms);
  ASSERT_EQ(s.seen.waiting, 1);
  const auto closed_at = Clock::now();
  c.close();
  for (auto end = Clock::now() + 2s; s.seen.aborted == 0 && Clock::now() < end;) std::this_thread::sleep_for(1ms);
  ASSERT_EQ(s.seen.aborted, 1);
  const auto woke = Clock::time_point(Clock::duration(s.seen.aborted_ns.load()));
  EXPECT_LT(woke - closed_at, 100ms);
  EXPECT_EQ(s.seen.waiting, 0);
  EXPECT_TRUE(s.connections_drain());
  const auto n = s.counters();
  EXPECT_EQ(n.client_gone, 1u);
  EXPECT_EQ(n.responses_by_class[5], 0u);  // nobody to answer
  expect_serves(s.port);
}

TEST(HttpServer, ClientDisconnectMidStreamCancelsTheStream) {
  TestServer s;
  Client c(s.port);
  c.send("GET /stream?100000 HTTP/1.1\r\n\r\n");
  c.line();  // the status line: the stream has begun
  const auto closed_at = Clock::now();
  c.close();
  for (auto end = Clock::now() + 2s; s.seen.aborted == 0 && Clock::now() < end;) std::this_thread::sleep_for(1ms);
  ASSERT_EQ(s.seen.aborted, 1);
  EXPECT_LT(Clock::time_point(Clock::duration(s.seen.aborted_ns.load())) - closed_at, 100ms);
  EXPECT_TRUE(s.connections_drain());
  EXPECT_EQ(s.counters().client_gone, 1u);
}

TEST(HttpServer, ManyClientsGoingAwayLeaveNothingOpen) {
  TestServer s;
  constexpr int kClients = 20;
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(std::make_unique<Client>(s.port));
    clients.back()->send(i % 2 ? "GET /stream?100000 HTTP/1.1\r\n\r\n" : post("/wait", ""));
  }
  for (int i = 1; i < kClients; i += 2) clients[i]->line();  // every stream has begun
  for (auto end = Clock::now() + 2s; s.seen.waiting < kClients / 2 && Clock::now() < end;) {
    std::this_thread::sleep_for(1ms);
  }
  ASSERT_EQ(s.seen.waiting, kClients / 2);
  EXPECT_EQ(s.counters().connections_open, static_cast<uint64_t>(kClients));
  clients.clear();
  EXPECT_TRUE(s.connections_drain());
  for (auto end = Clock::now() + 2s; s.seen.aborted < kClients && Clock::now() < end;) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(s.seen.aborted, kClients);
  EXPECT_EQ(s.seen.waiting, 0);
  EXPECT_EQ(s.counters().client_gone, static_cast<uint64_t>(kClients));
}

TEST(HttpServer, SseFramingThroughChunkedEncoding) {
  TestServer s;
  Client c(s.port);
  c.send("GET /stream?4 HTTP/1.1\r\n\r\n");
  const Reply r = c.read();
  EXPECT_EQ(r.head, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                    "X-Accel-Buffering: no\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n"
                    "Access-Control-Allow-Origin: *\r\n\r\n");
  ASSERT_EQ(r.chunks.size(), 5u);  // one chunk per write
  for (int i = 0; i < 4; ++i) EXPECT_EQ(r.chunks[i], "data: {\"i\": " + std::to_string(i) + "}\n\n");
  EXPECT_EQ(r.chunks[4], "data: [DONE]\n\n");
  // The connection goes on after the last chunk.
  c.send(post("/echo", "after stream"));
  EXPECT_EQ(c.read().body, "after stream");
}

TEST(HttpServer, StreamToHttp10ClientIsDelimitedByClose) {
  TestServer s;
  Client c(s.port);
  c.send("GET /stream?2 HTTP/1.0\r\n\r\n");
  const Reply r = c.read();
  EXPECT_EQ(r.header("transfer-encoding"), "");
  EXPECT_EQ(r.header("connection"), "close");
  EXPECT_EQ(r.body, "data: {\"i\": 0}\n\ndata: {\"i\": 1}\n\ndata: [DONE]\n\n");
}

TEST(HttpServer, HandlerExceptionIs500AndTheConnectionGoesOn) {
  TestServer s;
  Client c(s.port);
  c.send(post("/throw", ""));
  const Reply r = c.read();
  expect_error(r, 500, "server_error");
  EXPECT_NE(r.body.find("test handler failure"), std::string::npos);
  c.send("GET /silent HTTP/1.1\r\n\r\n");  // returns without a response
  expect_error(c.read(), 500, "server_error");
  c.send(post("/echo", "ok"));
  EXPECT_EQ(c.read().body, "ok");
  EXPECT_EQ(s.counters().responses_by_class[5], 2u);
}

TEST(HttpServer, StopClosesIdleConnectionsAndRunReturns) {
  auto s = std::make_unique<TestServer>();
  Client c(s->port);
  c.send(post("/echo", "x"));
  EXPECT_EQ(c.read().status, 200);
  const auto t0 = Clock::now();
  s.reset();  // stop(), then the loop must run out of work: checked in ~TestServer
  EXPECT_LT(Clock::now() - t0, 1s);  // promptly, although this client never closes its side
  EXPECT_TRUE(c.closed());
}

TEST(HttpServer, ListenErrorNamesTheAddress) {
  TestServer s;
  asio::io_context io;
  ServerOptions o;
  o.port = s.port;  // taken
  Server second(io, o);
  const auto r = second.listen();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("127.0.0.1:" + std::to_string(s.port)), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("in use"), std::string::npos) << r.error().message;
}

// ---- real curl, when the machine has it ----------------------------------------------------------------

struct CurlResult {
  int exit_code;
  std::string out;
};

CurlResult curl(const std::string& args) {
  const std::string cmd = "/usr/bin/curl -sS " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  CurlResult r{-1, {}};
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  r.exit_code = ::pclose(p);
  return r;
}

#define REQUIRE_CURL() \
  if (!std::filesystem::exists("/usr/bin/curl")) GTEST_SKIP() << "/usr/bin/curl is missing (apt-get install curl)"

TEST(HttpServerCurl, StreamsWithNoBuffering) {
  REQUIRE_CURL();
  TestServer s;
  const auto r = curl("-N http://127.0.0.1:" + std::to_string(s.port) + "/stream?3");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(r.out, "data: {\"i\": 0}\n\ndata: {\"i\": 1}\n\ndata: {\"i\": 2}\n\ndata: [DONE]\n\n");
}

TEST(HttpServerCurl, ChunkedUploadOfAFile) {
  REQUIRE_CURL();
  TestServer s;
  mach::testing::TempDir dir("http_curl");
  std::string content;
  for (int i = 0; i < 20000; ++i) content += "line " + std::to_string(i) + "\n";
  std::ofstream(dir / "body.txt", std::ios::binary) << content;
  const auto r = curl("-H 'Transfer-Encoding: chunked' --data-binary @" + (dir / "body.txt").string() +
                      " http://127.0.0.1:" + std::to_string(s.port) + "/echo");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, content);
}

TEST(HttpServerCurl, KeyRequiredOnlyWhereAsked) {
  REQUIRE_CURL();
  ServerOptions o;
  o.api_key = "sk-curl";
  TestServer s(o);
  const std::string base = "http://127.0.0.1:" + std::to_string(s.port);
  auto r = curl("-w ' %{http_code}' --data-binary hi " + base + "/echo");
  EXPECT_NE(r.out.find("invalid_api_key"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" 401"), std::string::npos) << r.out;
  r = curl("-w ' %{http_code}' -H 'Authorization: Bearer sk-curl' --data-binary hi " + base + "/echo");
  EXPECT_EQ(r.out, "hi 200");
  r = curl("-w ' %{http_code}' " + base + "/health");
  EXPECT_EQ(r.out, "{\"status\":\"ok\"} 200");
}

}  // namespace
}  // namespace mach::server::http
