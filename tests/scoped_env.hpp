// Sets an environment variable for a scope (a kernel choice an op reads at record time); a null value leaves
// it alone. Restores what was there before.
#pragma once

#include <cstdlib>
#include <optional>
#include <string>

namespace mach::testing {

class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name), set_(value != nullptr) {
    if (!set_) return;
    if (const char* old = std::getenv(name)) old_ = old;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (!set_) return;
    if (old_)
      setenv(name_, old_->c_str(), 1);
    else
      unsetenv(name_);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  bool set_ = false;
  std::optional<std::string> old_;
};

}  // namespace mach::testing
