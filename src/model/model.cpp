#include "model/model.hpp"

#include <fmt/format.h>

#include "experts/sidecar.hpp"
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

Result<void> run_step(gpu::Context& context, gpu::CommandList& cmd, Model& model, const StepBatch& batch) {
  if (gpu::CommandList* replay = model.replay_step(batch)) {
    context.wait(context.submit(*replay));
    return {};
  }
  cmd.begin();
  model.record_step(cmd, batch);
  context.wait(context.submit(cmd));
  while (model.step_pending()) {
    cmd.begin();
    if (auto r = model.continue_step(cmd); !r) return r;
    context.wait(context.submit(cmd));
  }
  return {};
}

namespace {

// The expert sidecar of an engine-layout checkpoint, checked against the config.json beside it; nullopt
// for a checkpoint that has none.
Result<std::optional<experts::Sidecar>> open_sidecar(const std::filesystem::path& dir, const ModelConfig& config) {
  const auto sidecar_dir = dir / experts::kSidecarDir;
  std::error_code ec;
  if (!std::filesystem::exists(sidecar_dir / experts::kLayoutFile, ec)) return std::optional<experts::Sidecar>();
  auto sidecar = experts::Sidecar::open(sidecar_dir);
  if (!sidecar) return sidecar.error();
  const auto& layout = sidecar->layout();
  if (layout.model_type != config.model_type)
    return Error{Errc::parse, fmt::format("{}: the sidecar is for model_type '{}', config.json says '{}'",
                                          sidecar_dir.string(), layout.model_type, config.model_type)};
  const std::string want = experts::model_fingerprint(config, layout.quant);
  if (layout.fingerprint != want)
    return Error{Errc::parse, fmt::format("{}: fingerprint {} does not match config.json's ({}): the sidecar belongs to "
                                          "another model or config.json was edited; rerun mach prune",
                                          sidecar_dir.string(), layout.fingerprint, want)};
  return std::optional<experts::Sidecar>(std::move(sidecar).value());
}

}  // namespace

Result<std::unique_ptr<Model>> load_model(const std::filesystem::path& dir, gpu::Context& context,
                                          const LoadOptions& options) {
  auto config = load_model_config(dir);
  if (!config) return config.error();
  auto sidecar = open_sidecar(dir, *config);
  if (!sidecar) return sidecar.error();
  if (options.streaming && !*sidecar)
    return Error{Errc::invalid_argument,
                 fmt::format("{}: --streaming reads experts from an expert sidecar, and this checkpoint has none; make "
                             "one with `mach prune --source {} --output OUT` and load OUT", dir.string(), dir.string())};
  auto checkpoint = Checkpoint::open(dir);
  if (!checkpoint) return checkpoint.error();
  const CheckpointSource source(std::move(checkpoint).value());
  switch (config->family) {
    case Family::qwen3_moe:
      return load_qwen3_moe(std::move(config).value(), source, std::move(sidecar).value(), context, options);
    default:
      return Error{Errc::unsupported,
                   fmt::format("{}: model_type '{}' is registered but this build cannot run it yet (see `mach archs`)",
                               dir.string(), config->model_type)};
  }
}

}  // namespace mach::model
