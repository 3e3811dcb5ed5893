// Where a family's loader reads checkpoint tensors from: safetensors files today, GGUF and the engine
// layout later. Names are the checkpoint's own (e.g. "model.layers.0.self_attn.q_proj.weight").
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mach/error.hpp"

namespace mach::model {

struct TensorShape {
  std::vector<uint64_t> dims;
  uint64_t elements() const {
    uint64_t n = 1;
    for (uint64_t d : dims) n *= d;
    return n;
  }
};

class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual bool has(const std::string& name) const = 0;
  // not_found when absent (the message names the checkpoint and the tensor).
  virtual Result<TensorShape> shape(const std::string& name) const = 0;
  // The tensor converted to f32 (from f32, f16 or bf16), row-major. Errors name the file and tensor.
  virtual Result<std::vector<float>> read_f32(const std::string& name) const = 0;
};

}  // namespace mach::model
