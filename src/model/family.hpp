// The loader of each family, called by load_model (model.cpp). One line per family file.
#pragma once

#include <memory>
#include <optional>

#include "experts/sidecar.hpp"
#include "model/model.hpp"
#include "model/tensor_source.hpp"

namespace mach::model {

// `sidecar`: the routed experts of an engine-layout checkpoint (then `src` holds no expert tensors).
Result<std::unique_ptr<Model>> load_qwen3_moe(ModelConfig config, const TensorSource& src,
                                              std::optional<experts::Sidecar> sidecar, gpu::Context& context,
                                              const LoadOptions& options);

}  // namespace mach::model
