#include "model/model.hpp"

#include <fmt/format.h>

#include "model/family.hpp"
#include "model/safetensors.hpp"

namespace mach::model {
namespace {

// The safetensors checkpoint as a TensorSource.
class CheckpointSource final : public TensorSource {
 public:
  explicit CheckpointSource(Checkpoint checkpoint) : checkpoint_(std::move(checkpoint)) {}
  bool has(const std::string& name) const override { return checkpoint_.contains(name); }
  Result<TensorShape> shape(const std::string& name) const override {
    auto ref = checkpoint_.find(name);
    if (!ref) return ref.error();
    return TensorShape{ref->info->shape};
  }
  Result<std::vector<float>> read_f32(const std::string& name) const override { return checkpoint_.read_f32(name); }

 private:
  Checkpoint checkpoint_;
};

}  // namespace

std::string model_fingerprint(const ModelConfig& c, ops::WeightType weight_type, uint64_t weights_digest) {
  return fmt::format("{} weights={} kv=f16 layers={} hidden={} heads={}/{} head_dim={} experts={}/{} "
                     "moe_width={} vocab={} rope_theta={} weights_digest={:016x}",
                     c.model_type, ops::weight_type_name(weight_type), c.num_layers, c.hidden_size, c.num_heads,
                     c.num_kv_heads, c.head_dim, c.num_experts_per_tok, c.num_experts, c.moe_intermediate_size,
                     c.vocab_size, c.rope.theta, weights_digest);
}

Result<std::unique_ptr<Model>> load_model(const std::filesystem::path& dir, gpu::Context& context,
                                          const LoadOptions& options) {
  auto config = load_model_config(dir);
  if (!config) return config.error();
  auto checkpoint = Checkpoint::open(dir);
  if (!checkpoint) return checkpoint.error();
  const CheckpointSource source(std::move(checkpoint).value());
  switch (config->family) {
    case Family::qwen3_moe:
      return load_qwen3_moe(std::move(config).value(), source, context, options);
    default:
      return Error{Errc::unsupported,
                   fmt::format("{}: model_type '{}' is registered but this build cannot run it yet (see `mach archs`)",
                               dir.string(), config->model_type)};
  }
}

}  // namespace mach::model
