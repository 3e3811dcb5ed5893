// libFuzzer target for the HTTP request parser: arbitrary bytes in arbitrary pieces, requests taken at
// arbitrary moments, small limits. Invariants: no crash; the queue and the body never pass their bounds;
// nothing is parsed after a failure; feeding in pieces (and taking requests late) gives the same requests
// and the same failure as feeding everything at once (see below for the one allowed difference).
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string_view>
#include <vector>

#include "server/http/parser.hpp"

using namespace mach::server::http;

namespace {

struct Outcome {
  std::vector<ParsedRequest> requests;
  std::optional<int> failure;
};

bool same(const ParsedRequest& a, const ParsedRequest& b) {
  const Request& x = a.request;
  const Request& y = b.request;
  return x.method == y.method && x.target == y.target && x.path == y.path && x.query == y.query &&
         x.headers == y.headers && x.body == y.body && a.keep_alive == b.keep_alive && a.http_1_0 == b.http_1_0;
}

void take_all(RequestParser& p, const ParserLimits& limits, Outcome& out) {
  while (auto r = p.next()) {
    if (r->request.body.size() > limits.max_body_bytes) std::abort();
    out.requests.push_back(std::move(*r));
    if (p.queued() > limits.max_queued) std::abort();
  }
}

// step 0: everything in one piece.
Outcome run(std::string_view input, const ParserLimits& limits, size_t step, bool take_late) {
  RequestParser p(limits);
  Outcome out;
  if (step == 0) step = input.size() + 1;
  size_t piece = 0;
  for (size_t i = 0; i < input.size(); i += step, ++piece) {
    const bool failed = p.failure().has_value();
    const size_t queued = p.queued();
    p.feed(input.substr(i, step));
    if (failed && p.queued() != queued) std::abort();  // nothing is parsed after a failure
    if (p.queued() > limits.max_queued) std::abort();
    if (!take_late || piece % 3 == 2) take_all(p, limits, out);
  }
  take_all(p, limits, out);
  if (p.failure()) {
    out.failure = p.failure()->status;
    if (out.failure != 400 && out.failure != 413 && out.failure != 431) std::abort();
    if (p.wants_input() || p.in_message()) std::abort();
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  const ParserLimits limits{static_cast<size_t>(32 + data[0] * 4), static_cast<size_t>(data[1] * 2),
                            static_cast<size_t>(1 + data[2] % 4)};
  const size_t step = 1 + (data[2] >> 2) % 23;
  const bool take_late = (data[2] & 0x80) != 0;
  const std::string_view input(reinterpret_cast<const char*>(data + 3), size - 3);
  const Outcome whole = run(input, limits, 0, false);
  const Outcome pieces = run(input, limits, step, take_late);
  // llhttp reports a span (URL, header name or value) at the end of each piece, so a malformed request
  // over the header limit may be found too long (431) in pieces before it is found malformed (400) whole,
  // or the other way round; any other difference is a bug.
  const bool same_failure = whole.failure == pieces.failure ||
                            (whole.failure && pieces.failure && (*whole.failure == 400 || *pieces.failure == 400));
  if (!same_failure || whole.requests.size() != pieces.requests.size()) std::abort();
  for (size_t i = 0; i < whole.requests.size(); ++i) {
    if (!same(whole.requests[i], pieces.requests[i])) std::abort();
  }
  return 0;
}
