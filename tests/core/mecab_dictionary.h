// Test helpers for the MeCab tokenizer tests: the tiny hand-written dictionary
// (tests/golden/mecab_tiny) compiled with Debian's mecab-dict-index, and an environment variable
// set for one scope. A missing mecab-dict-index is a failure (it is in scripts/kumihimo.sh's
// package list), never a skip.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "tests/test_util.h"

namespace kh::test {

// Compiles tests/golden/mecab_tiny into `out` (created) and returns it: sys.dic, matrix.bin,
// char.bin, unk.dic, dicrc and an empty mecabrc, as unidic-lite's dicdir holds them. Each pair of
// `lexiconEdits` replaces text in lexicon.csv first (to make another dictionary).
inline std::string compileTinyMecabDictionary(const std::string& out,
                                              const std::vector<std::pair<std::string, std::string>>& lexiconEdits = {}) {
  namespace fs = std::filesystem;
  const std::string tool = KH_MECAB_DICT_INDEX;
  if (tool.empty() || !fs::exists(tool))
    throw std::runtime_error("mecab-dict-index not found ('" + tool + "'): install Debian's mecab-utils (scripts/kumihimo.sh does)");
  const std::string src = kh::test::sourceDir() + "/tests/golden/mecab_tiny";
  const std::string work = out + ".src";
  fs::create_directories(out);
  fs::create_directories(work);
  for (const char* f : {"dicrc", "char.def", "unk.def", "matrix.def", "lexicon.csv"}) {
    std::string bytes = readFile(src + "/" + f);
    if (std::string(f) == "lexicon.csv")
      for (const auto& [from, to] : lexiconEdits) {
        const size_t at = bytes.find(from);
        if (at == std::string::npos) throw std::runtime_error("lexicon.csv has no '" + from + "'");
        bytes.replace(at, from.size(), to);
      }
    writeFile(work + "/" + f, bytes);
  }
  const std::string log = out + ".log";
  const std::string cmd = "'" + tool + "' -d '" + work + "' -o '" + out + "' -f utf-8 -t utf-8 > '" + log + "' 2>&1";
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("mecab-dict-index failed: " + readFile(log));
  fs::copy_file(work + "/dicrc", out + "/dicrc", fs::copy_options::overwrite_existing);
  writeFile(out + "/mecabrc", "");
  return out;
}

// Sets (or with nullptr unsets) an environment variable until the end of the scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = std::string(old);
    if (value) setenv(name, value, 1);
    else unsetenv(name);
  }
  ScopedEnv(const char* name, const std::string& value) : ScopedEnv(name, value.c_str()) {}
  ~ScopedEnv() {
    if (old_) setenv(name_.c_str(), old_->c_str(), 1);
    else unsetenv(name_.c_str());
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

}  // namespace kh::test
