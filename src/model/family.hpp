// The loader of each family, called by load_model (model.cpp). One line per family file.
#pragma once

#include <memory>

#include "model/model.hpp"
#include "model/tensor_source.hpp"

namespace mach::model {

Result<std::unique_ptr<Model>> load_qwen3_moe(ModelConfig config, const TensorSource& src, gpu::Context& context,
                                              const LoadOptions& options);

}  // namespace mach::model
