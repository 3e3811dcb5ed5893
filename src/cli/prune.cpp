// `mach prune --source CKPT --output OUT [--keep plan.jsonl] [--quant q4|q8_0|bf16]`: writes an
// engine-layout checkpoint with the expert sidecar (src/experts/prune.hpp), one progress line per layer on
// stderr. Rerun the same command after an interruption to resume.
#include <fmt/format.h>

#include "cli/commands.hpp"
#include "experts/prune.hpp"

namespace mach::cli {
namespace {

struct PruneArgs {
  std::string source, output, keep, quant = "bf16";
  uint32_t threads = 0;
};

int run_prune(const PruneArgs& a) {
  auto fail = [](const Error& e) {
    fmt::print(stderr, "mach prune: {}\n", e.message);
    return 1;
  };
  experts::PruneOptions o;
  o.source = a.source;
  o.output = a.output;
  const auto quant = ops::parse_weight_type(a.quant);
  if (!quant || (*quant != ops::WeightType::q4 && *quant != ops::WeightType::q8_0 && *quant != ops::WeightType::bf16))
    return fail({Errc::invalid_argument, fmt::format("--quant {}: use q4, q8_0 or bf16", a.quant)});
  o.quant = *quant;
  o.threads = a.threads;
  if (!a.keep.empty()) {
    auto plan = experts::parse_keep_plan(a.keep);
    if (!plan) return fail(plan.error());
    o.keep = std::move(plan).value();
  }
  o.on_layer = [](const experts::PruneProgress& p) {
    fmt::print(stderr, "prune: [{}/{}] layer {}: {} experts, {:.1f} MiB, {}\n", p.done, p.total, p.layer, p.experts,
               p.bytes / 1048576.0, p.resumed ? "already complete (checksums match)" : fmt::format("{:.2f} s", p.seconds));
  };
  auto summary = experts::prune(o);
  if (!summary) return fail(summary.error());
  fmt::print(stderr, "prune: wrote {}: {} MoE layers, {} experts ({:.1f} MiB, {}), non-expert weights {:.1f} MiB{}\n",
             a.output, summary->moe_layers, summary->experts, summary->expert_bytes / 1048576.0, a.quant,
             summary->non_expert_bytes / 1048576.0,
             summary->resumed_layers ? fmt::format(", {} layers resumed", summary->resumed_layers) : "");
  return 0;
}

}  // namespace

void add_prune_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("prune", "write an engine-layout checkpoint with the expert sidecar");
  static PruneArgs a;
  cmd->add_option("--source", a.source, "Hugging Face checkpoint directory")->required();
  cmd->add_option("--output", a.output, "output directory (must not exist; OUTPUT.partial holds an unfinished run)")
      ->required();
  cmd->add_option("--keep", a.keep, "JSONL of {\"layer\": L, \"experts\": [ids]}: keep only these experts");
  cmd->add_option("--quant", a.quant, "expert format in the sidecar: bf16 (default), q8_0, q4");
  cmd->add_option("--threads", a.threads, "experts quantized at once (default: one per hardware thread)");
  cmd->callback([&exit_code] { exit_code = run_prune(a); });
}

}  // namespace mach::cli
