// `kumihimo-cli merge` as a user runs it: Ctrl-C mid-merge leaves neither the output nor its
// OUT.partial-<pid> folder and exits non-zero with one line; the progress line names the tensor
// being merged; a partial folder left by a merge that died is removed and reported.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>
#include <thread>

#include "core/io/checkpoint.h"
#include "core/merge/executor.h"
#include "core/model/tiny.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using kh::test::runCli;
using kh::test::TempDir;

namespace {

std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  return out;
}

// ties onto m0 of m1, m2 (models made in `dir`).
std::string tiesRecipe(const TempDir& dir, const kh::TinyOptions& shape) {
  std::string yaml = "merge_method: ties\nbase_model: " + dir.file("m0") + "\nmodels:\n";
  for (int i = 0; i < 3; ++i) {
    kh::TinyOptions o = shape;
    o.seed = static_cast<uint64_t>(20 + i);
    o.withTokenizer = false;
    kh::makeTinyCheckpoint(dir.file("m" + std::to_string(i)), o);
    if (i > 0) yaml += "  - model: " + dir.file("m" + std::to_string(i)) + "\n    parameters: {weight: 0.5, density: 0.5}\n";
  }
  yaml += "dtype: bfloat16\n";
  kh::test::writeFile(dir.file("recipe.yaml"), yaml);
  return dir.file("recipe.yaml");
}

}  // namespace

TEST(MergeCli, CtrlCMidMergeLeavesNoOutputAndNoPartialFolder) {
  TempDir dir, outDir;
  kh::TinyOptions shape;
  shape.layers = 2;
  shape.hidden = 1024;
  shape.heads = 8;
  shape.kvHeads = 8;
  shape.intermediate = 4096;  // ~33 M parameters a model: the merge takes a good fraction of a second
  const std::string recipe = tiesRecipe(dir, shape);
  const std::string out = outDir.file("merged"), err = dir.file("stderr");
  const pid_t pid = kh::test::startCli({"merge", recipe, "-o", out}, "/dev/null", err);
  // Ctrl-C as soon as the merge has begun writing: its partial folder exists.
  const std::string partial = fs::path(out).parent_path().string() + "/" + kh::merge::partialFolderName("merged", pid);
  int status = 0;
  bool exited = false, seen = false;
  for (int waited = 0; waited < 120000 && !seen; ++waited) {
    if (waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      break;
    }
    seen = fs::exists(partial);
    if (!seen) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (!exited) {
    kill(pid, SIGINT);
    waitpid(pid, &status, 0);
  }
  const std::string stderrText = kh::test::readFile(err);
  ASSERT_TRUE(seen) << "the merge never created " << partial << "\n" << stderrText;
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  if (WEXITSTATUS(status) == 0) GTEST_SKIP() << "the merge finished before Ctrl-C arrived: make the models bigger";
  EXPECT_EQ(WEXITSTATUS(status), 130) << stderrText;
  EXPECT_FALSE(fs::exists(out)) << "a cancelled merge must not appear at OUT";
  EXPECT_TRUE(entries(outDir.path()).empty()) << "left behind: " << entries(outDir.path())[0];
  // The last line says what happened, in one line.
  std::string last = stderrText.substr(0, stderrText.find_last_not_of('\n') + 1);
  last = last.substr(last.find_last_of("\r\n") + 1);
  if (last.rfind("\033[K", 0) == 0) last = last.substr(3);
  EXPECT_EQ(last, out + ": not written, merge cancelled") << stderrText;
}

TEST(MergeCli, ProgressNamesTheTensorAndAStalePartialFolderIsRemoved) {
  TempDir dir, outDir;
  kh::TinyOptions shape;
  const std::string recipe = tiesRecipe(dir, shape);
  const std::string out = outDir.file("merged");
  // A merge killed earlier (its process is gone) left its partial folder.
  const pid_t gone = fork();
  if (gone == 0) _exit(0);
  int st = 0;
  waitpid(gone, &st, 0);
  const std::string stale = outDir.file(kh::merge::partialFolderName("merged", gone));
  fs::create_directory(stale);
  kh::test::writeFile(stale + "/model.safetensors-00001-of-00002.partial", "cut short");
  auto r = runCli({"merge", recipe, "-o", out});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_NE(r.err.find("note: removed " + stale), std::string::npos) << r.err;
  // stderr is a pipe here: no redrawn fragments (\r), a plain progress line per tenth at most;
  // the last counts every tensor and names the last one merged.
  EXPECT_EQ(r.err.find('\r'), std::string::npos) << r.err;
  std::vector<std::string> progress;
  std::istringstream lines(r.err);
  for (std::string l; std::getline(lines, l);)
    if (l.rfind("[", 0) == 0 && l.find(" tensors  ETA ") != std::string::npos) progress.push_back(l);
  ASSERT_FALSE(progress.empty()) << r.err;
  EXPECT_LE(progress.size(), 11u) << r.err;
  const std::string line = progress.back();
  auto names = kh::CheckpointWeights::open(out)->names();
  const std::string total = std::to_string(names.size());
  EXPECT_NE(line.find(total + "/" + total + " tensors"), std::string::npos) << line;
  const std::string tensor = line.substr(line.rfind(' ') + 1);
  EXPECT_NE(std::find(names.begin(), names.end(), tensor), names.end()) << "the line ends '" << tensor << "', not a tensor";
}
