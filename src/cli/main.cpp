// The `mach` command. Invoked as `mach-NAME` (a symlink), it runs subcommand NAME.
#include <fmt/format.h>

#include <filesystem>
#include <string>
#include <vector>

#include "cli/commands.hpp"
#include "mach/error.hpp"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  const std::string invoked = std::filesystem::path(args[0]).filename().string();
  if (invoked.rfind("mach-", 0) == 0) args.insert(args.begin() + 1, invoked.substr(5));

  CLI::App app{"mach: a Mixture-of-Experts inference engine and OpenAI-compatible server"};
  app.set_version_flag("--version", "mach 0.1.0");
  app.require_subcommand(1);
  int exit_code = 0;
  mach::cli::add_serve_command(app, exit_code);
  mach::cli::add_devices_command(app, exit_code);
  mach::cli::add_archs_command(app, exit_code);
  mach::cli::add_generate_command(app, exit_code);
  mach::cli::add_bench_command(app, exit_code);
  mach::cli::add_tokenize_command(app, exit_code);
  mach::cli::add_template_command(app, exit_code);
  mach::cli::add_prune_command(app, exit_code);
  mach::cli::add_check_command(app, exit_code);
  mach::cli::add_synth_command(app, exit_code);

  std::vector<const char*> cargs;
  for (const auto& a : args) cargs.push_back(a.c_str());
  try {
    app.parse(static_cast<int>(cargs.size()), cargs.data());
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const mach::Exception& e) {
    fmt::print(stderr, "mach: {}\n", e.what());
    return 1;
  }
  return exit_code;
}
