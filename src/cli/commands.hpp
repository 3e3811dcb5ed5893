// Subcommands of the `mach` binary. Each add_*_command registers its CLI11 subcommand and the callback
// that runs it; the callback stores its exit code in `exit_code`.
#pragma once

#include <CLI/CLI.hpp>

namespace mach::cli {

void add_devices_command(CLI::App& app, int& exit_code);
void add_archs_command(CLI::App& app, int& exit_code);
void add_generate_command(CLI::App& app, int& exit_code);
void add_bench_command(CLI::App& app, int& exit_code);
void add_tokenize_command(CLI::App& app, int& exit_code);
void add_template_command(CLI::App& app, int& exit_code);
void add_prune_command(CLI::App& app, int& exit_code);
void add_check_command(CLI::App& app, int& exit_code);
void add_serve_command(CLI::App& app, int& exit_code);
void add_synth_command(CLI::App& app, int& exit_code);

}  // namespace mach::cli
