// kumihimo-cli eval as a user runs it: a tiny model on a small suite; the table, the run folder
// (results.json, items.jsonl) and each stored score recomputed from the stored output; bad suites
// answered with one line naming file:line. Tiny models answer gibberish: structure, not scores.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/eval/suite.h"
#include "tests/test_util.h"

using kh::test::runCli;
using kh::test::TempDir;
using kh::test::writeFile;

TEST(CliEval, PrintsTableAndWritesRunFolder) {
  TempDir d;
  auto mk = runCli({"make-tiny", "gemma2", "-o", d.file("m"), "--dtype", "F32"});
  ASSERT_EQ(mk.exitCode, 0) << mk.err;
  writeFile(d.file("q.jsonl"),
            "{\"id\": \"a\", \"prompt\": \"問題：1+1は？\", \"references\": [\"2\"]}\n"
            "{\"id\": \"b\", \"prompt\": \"あなたの名前は？\", \"references\": [\"小野寺絢音\"]}\n"
            "{\"id\": \"c\", \"prompt\": \"出身は？\", \"references\": [\"盛岡\"], \"split\": \"heldout\"}\n"
            "{\"id\": \"d\", \"prompt\": \"3×4は？\", \"references\": [\"12\"]}\n");
  writeFile(d.file("mc.jsonl"), "{\"prompt\": \"こむぎは\", \"choices\": [\"犬\", \"猫\"], \"references\": [\"犬\"]}\n");
  writeFile(d.file("suite.yaml"),
            "name: cli-demo\n"
            "tasks:\n"
            "  - name: qa\n"
            "    data: q.jsonl\n"
            "    metrics: [japanese, char_f1, contains]\n"
            "    chat: true\n"
            "    max_new_tokens: 5\n"
            "  - name: choice\n"
            "    data: mc.jsonl\n"
            "    metrics: [mc_loglik]\n"
            "    weight: 0.5\n");
  auto r = runCli({"--threads", "1", "eval", d.file("m"), d.file("suite.yaml"), "-o", d.file("run"), "--batch-size", "2"});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  for (const char* want : {"task", "metric", "mean", "qa  ", "japanese", "char_f1", "contains", "mc_loglik", "fitness"})
    EXPECT_NE(r.out.find(want), std::string::npos) << "'" << want << "' not in:\n" << r.out;
  // Table rows: "qa  char_f1  0.xxxx  3" — three fitness items, one choice item.
  std::istringstream table(r.out);
  std::string line;
  int rows = 0;
  while (std::getline(table, line)) {
    std::istringstream row(line);
    std::string task, metric;
    double mean = -1;
    int n = -1;
    if (!(row >> task >> metric >> mean >> n)) continue;
    ++rows;
    EXPECT_EQ(n, task == "qa" ? 3 : 1) << line;
    EXPECT_GE(mean, 0.0);
    EXPECT_LE(mean, 1.0);
  }
  EXPECT_EQ(rows, 4);

  auto results = nlohmann::json::parse(kh::test::readFile(d.file("run/results.json")));
  EXPECT_EQ(results["suite"], "cli-demo");
  EXPECT_EQ(results["split"], "fitness");
  EXPECT_EQ(results["items"], 4);
  ASSERT_EQ(results["tasks"].size(), 2u);
  EXPECT_EQ(results["tasks"][0]["metrics"][0]["count"], 3);
  EXPECT_EQ(results["config"]["batch_size"], 2);
  const double fitness = results["tasks"][0]["metrics"][0]["mean"].get<double>() + 0.5 * results["tasks"][1]["metrics"][0]["mean"].get<double>();
  EXPECT_NEAR(results["fitness"].get<double>(), fitness, 1e-9);
  EXPECT_FALSE(std::filesystem::exists(d.file("run/results.json.partial")));

  // Every stored score is what the metric gives for the stored output.
  auto suite = kh::eval::loadSuite(d.file("suite.yaml"));
  std::istringstream items(kh::test::readFile(d.file("run/items.jsonl")));
  int n = 0;
  double sumF1 = 0;
  while (std::getline(items, line)) {
    auto j = nlohmann::json::parse(line);
    ++n;
    for (const char* key : {"task", "id", "split", "prompt", "output", "scores", "stop_reason", "prompt_tokens", "new_tokens"})
      EXPECT_TRUE(j.contains(key)) << key << " missing in " << line;
    if (j["task"] != "qa") {
      EXPECT_EQ(j["stop_reason"], "loglik");
      EXPECT_EQ(j["choice_loglik"].size(), 2u);
      continue;
    }
    EXPECT_NE(j["prompt"].get<std::string>().find("<start_of_turn>user"), std::string::npos) << "chat template not applied";
    EXPECT_LE(j["new_tokens"].get<int>(), 5);
    const auto& task = suite.tasks[0];
    const kh::eval::TaskItem* item = nullptr;
    for (const auto& it : task.items)
      if (it.id == j["id"]) item = &it;
    ASSERT_NE(item, nullptr);
    EXPECT_EQ(item->split, "fitness");
    for (const auto& m : task.metrics)
      EXPECT_EQ(j["scores"][m.name()].get<double>(), kh::eval::scoreOutput(m, j["output"].get<std::string>(), item->references))
          << m.name() << " of " << line;
    sumF1 += j["scores"]["char_f1"].get<double>();
  }
  EXPECT_EQ(n, 4);
  EXPECT_NEAR(results["tasks"][0]["metrics"][1]["mean"].get<double>(), sumF1 / 3, 1e-9);

  // --split heldout: qa's one heldout item; the choice task has none (n = 0).
  auto h = runCli({"--threads", "1", "eval", d.file("m"), d.file("suite.yaml"), "-o", d.file("run2"), "--split", "heldout"});
  ASSERT_EQ(h.exitCode, 0) << h.err;
  auto hr = nlohmann::json::parse(kh::test::readFile(d.file("run2/results.json")));
  EXPECT_EQ(hr["items"], 1);
  EXPECT_EQ(hr["tasks"][0]["metrics"][0]["count"], 1);
  EXPECT_EQ(hr["tasks"][1]["metrics"][0]["count"], 0);
}

TEST(CliEval, BadSuiteIsOneLineNamingFileAndLine) {
  TempDir d;
  writeFile(d.file("q.jsonl"), "{\"prompt\": \"a\", \"references\": [\"1\"]}\n");
  writeFile(d.file("s.yaml"), "name: s\ntasks:\n  - name: t\n    data: q.jsonl\n    metrics: [contains, rouge]\n");
  // The suite is checked before the model is opened: no model needed for this error.
  auto r = runCli({"eval", d.file("nomodel"), d.file("s.yaml")});
  EXPECT_EQ(r.exitCode, 1) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("s.yaml:5: unknown metric 'rouge'"), std::string::npos) << r.err;
  auto s = runCli({"eval", d.file("nomodel"), d.file("s.yaml"), "--split", "test"});
  EXPECT_NE(s.err.find("--split"), std::string::npos) << s.err;
}
