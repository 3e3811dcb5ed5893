#include "mach/error.hpp"

namespace mach {

const char* errc_name(Errc code) {
  switch (code) {
    case Errc::invalid_argument: return "invalid_argument";
    case Errc::not_found: return "not_found";
    case Errc::io: return "io";
    case Errc::parse: return "parse";
    case Errc::unsupported: return "unsupported";
    case Errc::no_device: return "no_device";
    case Errc::out_of_device_memory: return "out_of_device_memory";
    case Errc::device_lost: return "device_lost";
    case Errc::gpu: return "gpu";
    case Errc::cancelled: return "cancelled";
  }
  return "unknown";
}

}  // namespace mach
