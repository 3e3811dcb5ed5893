#include "server/http/parser.hpp"

#include <llhttp.h>

#include <algorithm>
#include <utility>

#include "server/http/wire.hpp"

namespace mach::server::http {

struct RequestParser::Llhttp {
  llhttp_t parser;
  llhttp_settings_t settings;
};

namespace {

RequestParser& self(llhttp_t* p) { return *static_cast<RequestParser*>(p->data); }

}  // namespace

// The llhttp callbacks, friends of the parser by being its nested type.
struct RequestParser::Callbacks {
  static int on_message_begin(llhttp_t* p) {
    auto& s = self(p);
    s.current_ = Request{};
    s.field_.clear();
    s.value_.clear();
    s.header_bytes_ = 11;  // the request line's two spaces, "HTTP/" and CRLF, and the headers' final CRLF
    s.in_message_ = true;
    ++s.begun_;
    s.in_trailers_ = false;
    s.awaiting_continue_ = false;
    return 0;
  }
  static int on_method(llhttp_t* p, const char*, size_t n) { return self(p).count_header_bytes(n) ? 0 : HPE_USER; }
  static int on_version(llhttp_t* p, const char*, size_t n) { return self(p).count_header_bytes(n) ? 0 : HPE_USER; }
  static int on_url(llhttp_t* p, const char* at, size_t n) {
    auto& s = self(p);
    if (!s.count_header_bytes(n)) return HPE_USER;
    s.current_.target.append(at, n);
    return 0;
  }
  static int on_header_field(llhttp_t* p, const char* at, size_t n) {
    auto& s = self(p);
    if (!s.count_header_bytes(n)) return HPE_USER;
    s.field_.append(at, n);
    return 0;
  }
  static int on_header_value(llhttp_t* p, const char* at, size_t n) {
    auto& s = self(p);
    if (!s.count_header_bytes(n)) return HPE_USER;
    s.value_.append(at, n);
    return 0;
  }
  static int on_header_value_complete(llhttp_t* p) {
    auto& s = self(p);
    if (!s.count_header_bytes(4)) return HPE_USER;  // ": " and CRLF
    // Trailers of a chunked body are counted against the header limit but not merged into the headers.
    if (!s.in_trailers_) s.current_.headers.emplace_back(to_lower(s.field_), std::move(s.value_));
    s.field_.clear();
    s.value_.clear();
    return 0;
  }
  static int on_headers_complete(llhttp_t* p) {
    auto& s = self(p);
    auto& r = s.current_;
    s.in_trailers_ = true;
    r.method = llhttp_method_name(static_cast<llhttp_method_t>(llhttp_get_method(p)));
    const size_t q = r.target.find('?');
    r.path = r.target.substr(0, q);
    r.query = q == std::string::npos ? std::string() : r.target.substr(q + 1);
    const bool has_length = (p->flags & F_CONTENT_LENGTH) != 0;
    if (has_length && p->content_length > s.limits_.max_body_bytes) {
      s.fail(413, "request body of " + std::to_string(p->content_length) + " bytes is larger than the limit of " +
                      std::to_string(s.limits_.max_body_bytes) + " bytes; send a smaller body");
      return -1;  // HPE_CB_HEADERS_COMPLETE with our failure already recorded
    }
    const bool has_body = (p->flags & F_CHUNKED) != 0 || (has_length && p->content_length > 0);
    const std::string* expect = r.header("expect");
    s.awaiting_continue_ = has_body && expect && iequals(trim(*expect), "100-continue");
    return 0;
  }
  static int on_body(llhttp_t* p, const char* at, size_t n) {
    auto& s = self(p);
    s.awaiting_continue_ = false;  // the client sent its body without waiting
    if (s.current_.body.size() + n > s.limits_.max_body_bytes) {
      s.fail(413, "request body is larger than the limit of " + std::to_string(s.limits_.max_body_bytes) +
                      " bytes; send a smaller body");
      return HPE_USER;
    }
    s.current_.body.append(at, n);
    return 0;
  }
  static int on_message_complete(llhttp_t* p) {
    auto& s = self(p);
    const bool upgrade = llhttp_get_upgrade(p) != 0;
    const bool http_1_0 = p->http_major == 0 || (p->http_major == 1 && p->http_minor == 0);
    s.ready_.push_back(ParsedRequest{std::move(s.current_), llhttp_should_keep_alive(p) != 0 && !upgrade, http_1_0});
    s.current_ = Request{};
    s.in_message_ = false;
    s.awaiting_continue_ = false;
    s.upgraded_ = upgrade;
    return HPE_PAUSED;  // one request at a time, so that the queue bound holds
  }
};

RequestParser::RequestParser(ParserLimits limits) : llhttp_(std::make_unique<Llhttp>()), limits_(limits) {
  llhttp_settings_init(&llhttp_->settings);
  auto& st = llhttp_->settings;
  st.on_message_begin = Callbacks::on_message_begin;
  st.on_method = Callbacks::on_method;
  st.on_version = Callbacks::on_version;
  st.on_url = Callbacks::on_url;
  st.on_header_field = Callbacks::on_header_field;
  st.on_header_value = Callbacks::on_header_value;
  st.on_header_value_complete = Callbacks::on_header_value_complete;
  st.on_headers_complete = Callbacks::on_headers_complete;
  st.on_body = Callbacks::on_body;
  st.on_message_complete = Callbacks::on_message_complete;
  llhttp_init(&llhttp_->parser, HTTP_REQUEST, &llhttp_->settings);
  llhttp_->parser.data = this;
}

RequestParser::~RequestParser() = default;

bool RequestParser::count_header_bytes(size_t n) {
  header_bytes_ += n;
  if (header_bytes_ <= limits_.max_header_bytes) return true;
  fail(431, "request line and headers are larger than the limit of " + std::to_string(limits_.max_header_bytes) +
                " bytes; send fewer or shorter headers");
  return false;
}

void RequestParser::fail(int status, std::string message) {
  if (!failure_) failure_ = ParseFailure{status, std::move(message)};
  in_message_ = false;
  awaiting_continue_ = false;
  kept_.clear();
}

void RequestParser::feed(std::string_view bytes) {
  if (failure_ || upgraded_) return;
  kept_.append(bytes);
  parse_kept();
}

void RequestParser::parse_kept() {
  std::string data = std::move(kept_);
  kept_.clear();
  llhttp_t* h = &llhttp_->parser;
  const char* p = data.data();
  const char* end = data.data() + data.size();
  while (p < end && !failure_ && !upgraded_) {
    if (ready_.size() >= limits_.max_queued) {
      kept_.assign(p, end);
      return;
    }
    const llhttp_errno_t err = llhttp_execute(h, p, static_cast<size_t>(end - p));
    if (err == HPE_OK) return;
    if (err == HPE_PAUSED) {
      p = llhttp_get_error_pos(h);
      llhttp_resume(h);
      continue;
    }
    if (err == HPE_PAUSED_UPGRADE) return;  // upgraded_ is set; the rest is not HTTP
    if (!failure_) {
      const char* reason = llhttp_get_error_reason(h);
      fail(400, std::string("malformed HTTP request: ") + (reason ? reason : llhttp_errno_name(err)));
    }
  }
}

std::optional<ParsedRequest> RequestParser::next() {
  if (ready_.empty()) return std::nullopt;
  ParsedRequest r = std::move(ready_.front());
  ready_.pop_front();
  if (!kept_.empty()) parse_kept();
  return r;
}

bool RequestParser::wants_input() const {
  return !failure_ && !upgraded_ && kept_.empty() && ready_.size() < limits_.max_queued;
}

}  // namespace mach::server::http
