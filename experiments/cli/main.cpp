// calibq: the command line. Subcommands live in experiments/cli/cmd_*.cpp.
#include <c10/util/Exception.h>

#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>

#include "core/util/build_info.h"
#include "core/util/error.h"
#include "experiments/cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"calibq: KV-cache quantization of multimodal LLMs, from 16 bits down to 1"};
  app.require_subcommand(0, 1);
  app.set_version_flag("--version", [] { return calibq::version_text(); },
                       "Print the calibq and LibTorch versions and whether CUDA is on");
  calibq::cli::add_inspect_command(app);
  calibq::cli::add_quant_commands(app, argc, argv);
  calibq::cli::add_score_commands(app);
  calibq::cli::add_model_commands(app);
  calibq::cli::add_run_commands(app);
  calibq::cli::add_data_commands(app);
  calibq::cli::add_bench_commands(app, argc, argv);
  try {
    app.parse(argc, argv);
    if (app.get_subcommands().empty()) {
      std::cout << app.help();
      return 0;
    }
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const calibq::Error& e) {
    std::fflush(stdout);
    std::cerr << "calibq: error: " << e.what() << "\n";
    return 1;
  } catch (const c10::Error& e) {
    std::fflush(stdout);
    std::cerr << "calibq: error: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::cerr << "calibq: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
