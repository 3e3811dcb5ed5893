// RequestParser without sockets: requests out of bytes in any split, the queue bound, limits, 100-continue,
// trailers, HTTP/1.0, upgrades; and the fuzz target's past findings replayed.
#include "server/http/parser.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);  // fuzz/http_request_fuzz.cpp

namespace mach::server::http {
namespace {

std::vector<ParsedRequest> parse(std::string_view bytes, ParserLimits limits = {}, size_t step = 0,
                                 std::optional<ParseFailure>* failure = nullptr) {
  RequestParser p(limits);
  std::vector<ParsedRequest> out;
  if (step == 0) step = bytes.size();
  for (size_t i = 0; i < bytes.size(); i += step) {
    p.feed(bytes.substr(i, step));
    while (auto r = p.next()) out.push_back(std::move(*r));
  }
  if (failure) *failure = p.failure();
  return out;
}

const std::string kPipelined =
    "GET /v1/models?x=1&y=2 HTTP/1.1\r\nHost: a\r\nX-Mixed-Case: V\r\nX-Empty:\r\n\r\n"
    "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
    "POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n"
    "GET /last HTTP/1.1\r\nConnection: close\r\n\r\n";

TEST(HttpRequestParser, PipelinedRequestsInAnySplit) {
  for (size_t step : {0, 1, 2, 7, 64}) {
    const auto rs = parse(kPipelined, {}, step);
    ASSERT_EQ(rs.size(), 4u) << "step " << step;
    EXPECT_EQ(rs[0].request.method, "GET");
    EXPECT_EQ(rs[0].request.target, "/v1/models?x=1&y=2");
    EXPECT_EQ(rs[0].request.path, "/v1/models");
    EXPECT_EQ(rs[0].request.query, "x=1&y=2");
    EXPECT_EQ(rs[0].request.headers,
              (Headers{{"host", "a"}, {"x-mixed-case", "V"}, {"x-empty", ""}}));
    EXPECT_TRUE(rs[0].keep_alive);
    EXPECT_EQ(rs[1].request.body, "hello");
    EXPECT_EQ(rs[2].request.body, "abcde");
    EXPECT_EQ(rs[2].request.header("x-trailer"), nullptr);  // trailers are not headers
    EXPECT_EQ(rs[3].request.path, "/last");
    EXPECT_FALSE(rs[3].keep_alive);
  }
}

TEST(HttpRequestParser, QueueBoundKeepsTheRestUntilTaken) {
  std::string five;
  for (int i = 0; i < 5; ++i) five.append("GET /").append(std::to_string(i)).append(" HTTP/1.1\r\n\r\n");
  RequestParser p({1024, 1024, 2});
  p.feed(five);
  EXPECT_EQ(p.queued(), 2u);
  EXPECT_FALSE(p.wants_input());
  for (int i = 0; i < 5; ++i) {
    auto r = p.next();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->request.path, std::string(1, '/') + std::to_string(i));
    EXPECT_LE(p.queued(), 2u);
  }
  EXPECT_FALSE(p.next());
  EXPECT_TRUE(p.wants_input());
}

TEST(HttpRequestParser, HeaderLimitIsExactForCanonicalRequests) {
  const std::string req = "GET /abc HTTP/1.1\r\nHost: example\r\n\r\n";
  std::optional<ParseFailure> f;
  EXPECT_EQ(parse(req, {req.size(), 0, 4}, 0, &f).size(), 1u);
  EXPECT_FALSE(f);
  EXPECT_TRUE(parse(req, {req.size() - 1, 0, 4}, 0, &f).empty());
  ASSERT_TRUE(f);
  EXPECT_EQ(f->status, 431);
}

TEST(HttpRequestParser, BodyLimitByLengthAndByChunks) {
  std::optional<ParseFailure> f;
  EXPECT_EQ(parse("POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd", {1024, 4, 4}, 0, &f).size(), 1u);
  EXPECT_FALSE(f);
  parse("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", {1024, 4, 4}, 0, &f);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->status, 413);  // from the header alone
  parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", {1024, 4, 4}, 1,
        &f);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->status, 413);
}

TEST(HttpRequestParser, MalformedInputIs400AndLaterBytesAreIgnored) {
  RequestParser p({});
  p.feed("GET / HTTP/1.1\r\n\r\nNOT HTTP AT ALL\r\n\r\n");
  EXPECT_TRUE(p.next());
  ASSERT_TRUE(p.failure());
  EXPECT_EQ(p.failure()->status, 400);
  EXPECT_NE(p.failure()->message.find("malformed HTTP request"), std::string::npos);
  p.feed("GET / HTTP/1.1\r\n\r\n");
  EXPECT_FALSE(p.next());
  EXPECT_FALSE(p.wants_input());
}

TEST(HttpRequestParser, ExpectContinueWaitsUntilTheBodyStarts) {
  RequestParser p({});
  p.feed("POST /x HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n");
  ASSERT_NE(p.awaiting_continue(), nullptr);
  EXPECT_EQ(p.awaiting_continue()->path, "/x");
  p.continue_answered();
  EXPECT_EQ(p.awaiting_continue(), nullptr);
  p.feed("ok");
  EXPECT_EQ(p.next()->request.body, "ok");
  p.feed("POST /y HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok");  // did not wait
  EXPECT_EQ(p.awaiting_continue(), nullptr);
  p.feed("GET /z HTTP/1.1\r\nExpect: 100-continue\r\n\r\n");  // no body: nothing to continue
  EXPECT_EQ(p.awaiting_continue(), nullptr);
}

TEST(HttpRequestParser, Http10AndUpgrade) {
  auto rs = parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n");
  ASSERT_EQ(rs.size(), 2u);
  EXPECT_TRUE(rs[0].http_1_0);
  EXPECT_TRUE(rs[0].keep_alive);
  EXPECT_FALSE(rs[1].keep_alive);
  std::optional<ParseFailure> f;  // bytes after a request that closes the connection are not a request
  EXPECT_EQ(parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n", {}, 0, &f).size(), 1u);
  RequestParser p({});
  p.feed("GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello");
  auto r = p.next();
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->keep_alive);  // nothing after an upgrade is HTTP: answer, then close
  EXPECT_FALSE(p.next());
  EXPECT_FALSE(p.failure());
  EXPECT_FALSE(p.wants_input());
}

TEST(HttpRequestParser, FuzzTargetAcceptsSeedsAndReplaysRegressions) {
  const std::string seeds[] = {"\x40\x10\x85" + kPipelined, std::string("\x01\x01\x01") + kPipelined,
                               "\xff\xff\x13POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n"};
  for (const auto& s : seeds) {
    EXPECT_EQ(LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size()), 0);
  }
  const auto dir = std::filesystem::path(MACH_SOURCE_DIR) / "fuzz/regressions/http_request_fuzz";
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    std::ifstream f(e.path(), std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    EXPECT_EQ(LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), 0)
        << e.path();
  }
}

}  // namespace
}  // namespace mach::server::http
