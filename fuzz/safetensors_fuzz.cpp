// libFuzzer target: a whole .safetensors file image (header length, JSON header, data) through the parser and
// the f32 reader. Built with -DMACH_FUZZ=ON (clang); tests/safetensors_test.cpp replays mutated files through
// this same entry point in every build.
#include <cstddef>
#include <cstdint>
#include <span>

#include "model/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto image = std::span(reinterpret_cast<const std::byte*>(data), size);
  auto file = mach::model::SafetensorsFile::parse(image, "fuzz.safetensors");
  if (!file) return 0;
  for (const auto& t : file->tensors()) {
    auto bytes = file->data(t);
    if (bytes.size() != t.nbytes) __builtin_trap();
    if (mach::model::is_float_convertible(t.dtype) && t.numel() <= (1u << 16)) {
      auto values = file->to_f32(t);
      if (!values || values->size() != t.numel()) __builtin_trap();
    }
  }
  return 0;
}
