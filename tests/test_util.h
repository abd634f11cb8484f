// Helpers shared by the tests: temporary folders that clean up, file I/O, running the CLI.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace kh::test {

// A fresh empty folder under $TMPDIR, removed (recursively) when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void writeFile(const std::string& path, const std::string& bytes);
std::string readFile(const std::string& path);
std::string sourceDir();  // the repository root

struct CliResult {
  int exitCode = -1;
  std::string out, err;
};
// Runs kumihimo-cli with the given arguments (no shell), capturing stdout and stderr; `input`
// becomes its standard input.
CliResult runCli(const std::vector<std::string>& args, const std::string& input = "");
// Starts kumihimo-cli without waiting (for tests that signal it mid-run): stdout and stderr go to
// the given files (created or truncated; "/dev/null" to drop), stdin comes from stdinPath.
pid_t startCli(const std::vector<std::string>& args, const std::string& stdoutPath, const std::string& stderrPath,
               const std::string& stdinPath = "/dev/null");

}  // namespace kh::test
