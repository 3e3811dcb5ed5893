// Error values for failures callers should expect (bad input, missing file, no GPU, out of memory), and
// the exception that carries one across layers that cannot return it (GPU recording helpers, constructors).
#pragma once

#include <cassert>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>

namespace mach {

enum class Errc {
  invalid_argument,      // the caller passed something malformed; the message says what
  not_found,             // a file, tensor, model or route that does not exist
  io,                    // a read or write failed; the message carries errno's text
  parse,                 // malformed JSON, safetensors header, template, ...
  unsupported,           // valid input that this build or device cannot handle
  no_device,             // no usable Vulkan device
  out_of_device_memory,  // a GPU allocation failed
  device_lost,           // the GPU driver reported VK_ERROR_DEVICE_LOST
  gpu,                   // any other Vulkan failure
  cancelled,
};

const char* errc_name(Errc code);

struct Error {
  Errc code = Errc::invalid_argument;
  std::string message;  // one line a user can act on: what failed, where, and what to do
};

// Thrown where a value cannot be returned; what() is the message.
class Exception : public std::runtime_error {
 public:
  explicit Exception(Error error) : std::runtime_error(error.message), error_(std::move(error)) {}
  Exception(Errc code, std::string message) : Exception(Error{code, std::move(message)}) {}
  const Error& error() const { return error_; }
  Errc code() const { return error_.code; }

 private:
  Error error_;
};

// A value or an Error. Small on purpose: C++20 has no std::expected.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}
  Result(Error error) : v_(std::move(error)) {}
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return check(), std::get<0>(v_); }
  const T& value() const& { return check(), std::get<0>(v_); }
  T&& value() && { return check(), std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const Error& error() const {
    assert(!ok());
    return std::get<1>(v_);
  }
  // For tools and tests where an error ends the operation: throws mach::Exception.
  T value_or_throw() && {
    if (!ok()) throw Exception(std::get<1>(v_));
    return std::get<0>(std::move(v_));
  }

 private:
  void check() const {
    if (!ok()) throw Exception(std::get<1>(v_));
  }
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), failed_(true) {}
  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const Error& error() const {
    assert(failed_);
    return error_;
  }
  void value_or_throw() const {
    if (failed_) throw Exception(error_);
  }

 private:
  Error error_;
  bool failed_ = false;
};

}  // namespace mach
