// The subcommands of kumihimo-cli. Errors are thrown as kh::Error and turned into one line on
// stderr and a non-zero exit by main; nothing here prints an error itself.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace kh::cli {

// A parsed subcommand leaves its work in `run`; main calls it once global settings are applied.
using Action = std::function<void()>;
void addInspect(CLI::App& app, Action& run);
void addMakeTiny(CLI::App& app, Action& run);
void addTokenize(CLI::App& app, Action& run);
void addLogits(CLI::App& app, Action& run);
void addGenerate(CLI::App& app, Action& run);
void addChat(CLI::App& app, Action& run);
void addMerge(CLI::App& app, Action& run);
void addEvolve(CLI::App& app, Action& run);
void addResume(CLI::App& app, Action& run);

}  // namespace kh::cli
