// `mach synth --shape NAME --quant q4|q8_0|bf16 --out DIR [--layers N] [--seed S] [--threads N]`: writes an
// engine-layout checkpoint of a reference model's exact shape with random weights (src/experts/synth.hpp),
// one progress line per finished file on stderr.
#include <fmt/format.h>

#include "cli/commands.hpp"
#include "experts/synth.hpp"

namespace mach::cli {
namespace {

struct SynthArgs {
  std::string shape, quant = "q4", out;
  uint32_t layers = 0, threads = 0;
  uint64_t seed = 0;
  const CLI::Option* layers_given = nullptr;
};

int run_synth(const SynthArgs& a) {
  auto fail = [](const Error& e) {
    fmt::print(stderr, "mach synth: {}\n", e.message);
    return 1;
  };
  experts::SynthOptions o;
  o.shape = a.shape;
  o.output = a.out;
  const auto quant = ops::parse_weight_type(a.quant);
  if (!quant || (*quant != ops::WeightType::q4 && *quant != ops::WeightType::q8_0 && *quant != ops::WeightType::bf16))
    return fail({Errc::invalid_argument, fmt::format("--quant {}: use q4, q8_0 or bf16", a.quant)});
  o.quant = *quant;
  if (a.layers_given->count()) o.layers = a.layers;
  o.seed = a.seed;
  o.threads = a.threads;
  o.on_progress = [](const experts::SynthProgress& p) {
    if (!p.layer) {
      fmt::print(stderr, "synth: model.safetensors: {:.1f} MiB, {:.2f} s\n", p.bytes / 1048576.0, p.seconds);
      return;
    }
    fmt::print(stderr, "synth: [{}/{}] layer {}: {:.1f} MiB, {:.2f} s\n", p.done, p.total, *p.layer,
               p.bytes / 1048576.0, p.seconds);
  };
  auto s = experts::synthesize(o);
  if (!s) return fail(s.error());
  const double bytes = static_cast<double>(s->expert_bytes + s->non_expert_bytes);
  fmt::print(stderr, "synth: wrote {}: {} layers, {} experts ({:.1f} MiB, {}), non-expert weights {:.1f} MiB (bf16); "
             "{:.2f} s, {:.2f} GB/s\n", a.out, s->layers, s->experts, s->expert_bytes / 1048576.0, a.quant,
             s->non_expert_bytes / 1048576.0, s->seconds, bytes / s->seconds / 1e9);
  return 0;
}

std::string shapes_footer() {
  std::string text = "Shapes:\n";
  for (const auto& s : experts::synth_shapes()) text += fmt::format("  {:<16} {}\n", s.name, s.description);
  text += "No tokenizer is written: run synthetic checkpoints with token ids (--prompt-ids).\n";
  return text;
}

}  // namespace

void add_synth_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("synth", "write an engine-layout checkpoint of a real model's shape with random "
                                          "weights (for benchmarks)");
  static SynthArgs a;
  cmd->add_option("--shape", a.shape, "model shape (listed below)")->required();
  cmd->add_option("--quant", a.quant, "expert format in the sidecar: q4 (default), q8_0, bf16");
  cmd->add_option("--out", a.out, "output directory (must not exist; DIR.partial holds an unfinished run)")
      ->required();
  a.layers_given =
      cmd->add_option("--layers", a.layers, "layers to write (default: the shape's); fewer makes a cut-down model");
  cmd->add_option("--seed", a.seed, "random seed (default 0); the output depends only on shape, layers, quant, seed");
  cmd->add_option("--threads", a.threads, "worker threads (default: one per hardware thread)");
  cmd->footer(shapes_footer());
  cmd->callback([&exit_code] { exit_code = run_synth(a); });
}

}  // namespace mach::cli
