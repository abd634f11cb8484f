// kumihimo-cli: the headless front end. Every job the workbench runs can be run from here.
// Errors become one line on stderr and a non-zero exit: 1 bad input, 2 usage, 3 internal bug.
#include <ATen/Parallel.h>

#include <iostream>
#include <thread>

#include "app/cli_commands.h"
#include "app/thread_waits.h"
#include "core/error.h"

int main(int argc, char** argv) {
  kh::app::restartCliWithShortThreadSpins(argc, argv);
  CLI::App app{"Kumihimo: merge, evolve, fine-tune, evaluate and chat with LLMs (headless)", "kumihimo-cli"};
  app.set_version_flag("--version", std::string("kumihimo-cli ") + KH_VERSION);
  app.require_subcommand(1);
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  app.add_option("--threads", threads, "CPU threads for tensor math (default: all cores)");
  kh::cli::Action run;
  kh::cli::addInspect(app, run);
  kh::cli::addMakeTiny(app, run);
  kh::cli::addTokenize(app, run);
  kh::cli::addLogits(app, run);
  kh::cli::addGenerate(app, run);
  kh::cli::addChat(app, run);
  kh::cli::addMerge(app, run);
  kh::cli::addEval(app, run);
  kh::cli::addTrain(app, run);
  kh::cli::addEvolve(app, run);
  kh::cli::addResume(app, run);
  kh::cli::addIndex(app, run);
  kh::cli::addRetrieve(app, run);
  kh::cli::addRetrievalEval(app, run);
  try {
    app.parse(argc, argv);
    at::set_num_threads(std::max(1, threads));  // Debian's libtorch starts with 1 thread
    if (run) run();
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "kumihimo-cli: " << e.what() << " (see --help)\n";
    return 2;
  } catch (const kh::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  } catch (const kh::Cancelled&) {
    std::cerr << "cancelled\n";
    return 130;
  } catch (const std::exception& e) {
    std::cerr << "internal error: " << e.what() << "\n";
    return 3;
  }
  return 0;
}
