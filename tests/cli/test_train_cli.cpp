// kumihimo-cli train as a user runs it: the audit first, progress and eval lines, a run folder whose
// merged model chat/inspect can open, the PEFT adapter applied with --adapter, and bad input answered
// with one line naming the file (and line).
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "tests/test_util.h"

using kh::test::runCli;
using kh::test::TempDir;
using kh::test::writeFile;

namespace {
std::string qaData(int n) {
  const char* nums[] = {"一", "二", "三", "四", "五", "六", "七", "八", "九", "十"};
  std::string s;
  for (int i = 0; i < n; ++i)
    s += std::string(R"({"conversations": [{"from": "human", "value": ")") + nums[i % 10] + nums[(i / 10) % 10] +
         R"(の次は"}, {"from": "gpt", "value": ")" + nums[(i + 1) % 10] + "です\"}]}\n";
  return s;
}
int lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }
}  // namespace

TEST(CliTrain, LoraRunPrintsAuditProgressAndWritesAdapterAndMergedModel) {
  TempDir d;
  ASSERT_EQ(runCli({"make-tiny", "llama", "-o", d.file("m"), "--layers", "2"}).exitCode, 0);
  writeFile(d.file("data.jsonl"), qaData(24));
  writeFile(d.file("t.yaml"), "model: " + d.file("m") + "\ndata: " + d.file("data.jsonl") +
                                  "\nlora: {rank: 4, alpha: 8, target_modules: 'q_proj|v_proj|o_proj'}\nsteps: 6\nbatch_size: 4\n"
                                  "eval_every: 3\neval_prompts: 3\neval_max_new_tokens: 4\nlearning_rate: 0.005\nmerged_dtype: fp32\n");
  auto r = runCli({"--threads", "1", "train", d.file("t.yaml"), "-o", d.file("run")});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  EXPECT_NE(r.err.find("label audit (llm-jp-3"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("(100.0%)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("step 6/6"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("tokens/s  ETA"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("eval step 3: loss"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("adapter (PEFT)"), std::string::npos) << r.out;
  for (const char* f : {"config.yaml", "audit.txt", "metrics.jsonl", "state.json", "adapter/adapter_config.json", "merged/config.json"})
    EXPECT_TRUE(std::filesystem::exists(d.file("run/") + f)) << f;
  // The merged folder (fp32) is a normal model; the adapter on the base gives the same greedy answer.
  auto viaMerged = runCli({"--threads", "1", "generate", d.file("run/merged"), "--dtype", "fp32", "--chat", "--prompt", "三の次は", "--max-new-tokens", "6"});
  ASSERT_EQ(viaMerged.exitCode, 0) << viaMerged.err;
  auto viaAdapter = runCli({"--threads", "1", "generate", d.file("m"), "--dtype", "fp32", "--adapter", d.file("run/adapter"), "--chat", "--prompt",
                            "三の次は", "--max-new-tokens", "6"});
  ASSERT_EQ(viaAdapter.exitCode, 0) << viaAdapter.err;
  EXPECT_EQ(viaMerged.out, viaAdapter.out);
  // `resume` recognises a training run (and this one is finished).
  auto again = runCli({"resume", d.file("run")});
  EXPECT_NE(again.exitCode, 0);
  EXPECT_NE(again.err.find("the run is finished"), std::string::npos) << again.err;
}

TEST(CliTrain, FullFineTuningWritesAMergedModel) {
  TempDir d;
  ASSERT_EQ(runCli({"make-tiny", "gemma2", "-o", d.file("m"), "--layers", "1"}).exitCode, 0);
  writeFile(d.file("data.jsonl"), qaData(8));
  writeFile(d.file("t.yaml"), "model: " + d.file("m") + "\ndata: " + d.file("data.jsonl") +
                                  "\nmethod: full\nsteps: 3\nbatch_size: 2\neval_prompts: 2\neval_max_new_tokens: 3\n");
  auto r = runCli({"--threads", "1", "train", d.file("t.yaml"), "-o", d.file("run")});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  EXPECT_NE(r.err.find("stop ids: 1 <eos> 107 <end_of_turn>"), std::string::npos) << r.err;
  auto insp = runCli({"inspect", d.file("run/merged")});
  EXPECT_EQ(insp.exitCode, 0) << insp.err;
}

TEST(CliTrain, BadInputIsOneLine) {
  TempDir d;
  ASSERT_EQ(runCli({"make-tiny", "llama", "-o", d.file("m"), "--layers", "1"}).exitCode, 0);
  writeFile(d.file("bad.jsonl"), qaData(2) + "{\"prompt\": 3\n");
  writeFile(d.file("t.yaml"), "model: " + d.file("m") + "\ndata: " + d.file("bad.jsonl") + "\n");
  auto r = runCli({"train", d.file("t.yaml"), "-o", d.file("run")});
  EXPECT_NE(r.exitCode, 0);
  EXPECT_NE(r.err.find("bad.jsonl:3"), std::string::npos) << r.err;
  EXPECT_EQ(lines(r.err), 1) << r.err;
  writeFile(d.file("ok.jsonl"), qaData(4));
  writeFile(d.file("t2.yaml"), "model: " + d.file("m") + "\ndata: " + d.file("ok.jsonl") + "\nlora: {target_modules: nothing_here}\n");
  r = runCli({"train", d.file("t2.yaml"), "-o", d.file("run2")});
  EXPECT_NE(r.exitCode, 0);
  EXPECT_NE(r.err.find("matches no linear layer"), std::string::npos) << r.err;
  writeFile(d.file("t3.yaml"), "model: " + d.file("m") + "\ndata: " + d.file("ok.jsonl") + "\nmask_end_of_turn: true\n");
  r = runCli({"train", d.file("t3.yaml"), "-o", d.file("run3")});
  EXPECT_NE(r.exitCode, 0);
  EXPECT_NE(r.err.find("would not learn to stop"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(d.file("run3")));
  r = runCli({"train", "--resume", d.file("m")});
  EXPECT_NE(r.exitCode, 0);
  EXPECT_NE(r.err.find("not a training run"), std::string::npos) << r.err;
  EXPECT_EQ(lines(r.err), 1) << r.err;
}
