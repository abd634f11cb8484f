// kumihimo-cli as a user runs it: make-tiny, inspect (report, --json, --tensors), tokenize, and
// bad input answered with one line on stderr naming the file and the cause, and a non-zero exit.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/io/safetensors.h"
#include "tests/test_util.h"
#include <ATen/ATen.h>

namespace fs = std::filesystem;
using kh::test::runCli;
using kh::test::TempDir;

namespace {

// One line on stderr, naming every fragment, exit code 1, nothing on stdout that looks like success.
void expectCliError(const std::vector<std::string>& args, std::initializer_list<std::string> fragments) {
  auto r = runCli(args);
  EXPECT_EQ(r.exitCode, 1) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "stderr must be exactly one line: " << r.err;
  EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
  for (const auto& f : fragments) EXPECT_NE(r.err.find(f), std::string::npos) << "'" << f << "' not in: " << r.err;
}

// A tiny model made once for the whole suite (make-tiny trains a tokenizer: ~1 s).
class CliTiny : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    for (const char* fam : {"gemma2", "llama"}) {
      auto r = runCli({"make-tiny", fam, "-o", dir_->file(fam)});
      ASSERT_EQ(r.exitCode, 0) << r.err;
    }
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string model(const char* fam) { return dir_->file(fam); }
  static TempDir* dir_;
};
TempDir* CliTiny::dir_ = nullptr;

}  // namespace

TEST_F(CliTiny, InspectReportsWhatAResearcherAsks) {
  auto r = runCli({"inspect", model("gemma2")});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  for (const char* want : {"Gemma2ForCausalLM", "Parameters", "BF16", "Size on disk", "Layers         4", "Heads          4 query, 2 key/value, head dim 16",
                           "tied", "sentencepiece", "Stop ids", "1 <eos>", "107 <end_of_turn>", "matches the Gemma2ForCausalLM layout",
                           "Memory to run", "cpu", "cuda"})
    EXPECT_NE(r.out.find(want), std::string::npos) << "missing '" << want << "' in:\n" << r.out;
  EXPECT_TRUE(r.err.empty()) << r.err;
}

TEST_F(CliTiny, InspectJsonCountsParametersLikeTheArchitecture) {
  auto r = runCli({"inspect", model("gemma2"), "--json"});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  // Gemma2 by hand: V=768, D=64, 4 heads x 16, 2 kv heads, I=128, 4 layers, tied, 4 norms a layer.
  const uint64_t V = 768, D = 64, Q = 64, KV = 32, I = 128, L = 4;
  const uint64_t perLayer = D * Q + 2 * D * KV + Q * D + 3 * D * I + 4 * D;
  EXPECT_EQ(j["parameters"].get<uint64_t>(), V * D + L * perLayer + D);
  EXPECT_EQ(j["architecture"], "Gemma2ForCausalLM");
  EXPECT_TRUE(j["tied_embeddings"].get<bool>());
  EXPECT_EQ(j["sliding_window_layers"].size(), 2u);  // layers 0 and 2
  std::set<int> stops;
  for (const auto& s : j["stop_ids"]) stops.insert(s["id"].get<int>());
  EXPECT_TRUE(stops.count(1)) << "<eos>";
  EXPECT_TRUE(stops.count(107)) << "<end_of_turn> must be a stop id although generation_config lists only 1";
  // bf16 on GPU: weights exactly 2 bytes a parameter.
  for (const auto& m : j["memory"])
    if (m["device"] == "cuda" && m["dtype"] == "BF16") EXPECT_EQ(m["weights"].get<uint64_t>(), 2 * j["parameters"].get<uint64_t>());
}

TEST_F(CliTiny, InspectTensorsListsEveryTensor) {
  auto r = runCli({"inspect", model("llama"), "--tensors", "--json"});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  // Llama, untied: embed + 4 x (2 norms + q,k,v,o + gate,up,down) + norm + lm_head.
  EXPECT_EQ(j["tensors"].size(), 1u + 4u * 9u + 1u + 1u);
  bool sawHead = false;
  for (const auto& t : j["tensors"]) sawHead |= t["name"] == "lm_head.weight";
  EXPECT_TRUE(sawHead) << "llm-jp-3 does not tie its head";
  auto text = runCli({"inspect", model("llama"), "--tensors"});
  EXPECT_NE(text.out.find("model.layers.3.mlp.down_proj.weight"), std::string::npos);
}

TEST_F(CliTiny, ShardedTinyModelInspectsTheSame) {
  TempDir d;
  auto mk = runCli({"make-tiny", "llama", "-o", d.file("m"), "--shard-size", "40KB"});
  ASSERT_EQ(mk.exitCode, 0) << mk.err;
  EXPECT_TRUE(fs::exists(d.file("m/model.safetensors.index.json")));
  auto a = nlohmann::json::parse(runCli({"inspect", d.file("m"), "--json"}).out);
  auto b = nlohmann::json::parse(runCli({"inspect", model("llama"), "--json"}).out);
  EXPECT_GT(a["weight_files"].size(), 1u);
  EXPECT_EQ(a["parameters"], b["parameters"]);
}

TEST_F(CliTiny, TokenizeRefusesInvalidUtf8) {
  expectCliError({"tokenize", model("llama"), std::string("ok \xE3\x81 broken")}, {"invalid UTF-8"});
  auto r = runCli({"tokenize", model("llama"), "名前は小野寺絢音"});
  EXPECT_EQ(r.exitCode, 0) << r.err;
  EXPECT_NE(r.out.find("ids"), std::string::npos);
}

TEST(Cli, BadInputGetsOneLineErrorAndNonZeroExit) {
  TempDir d;
  // Not a folder.
  expectCliError({"inspect", d.file("nope")}, {d.file("nope"), "not a folder"});
  // No config.
  fs::create_directory(d.file("empty"));
  expectCliError({"inspect", d.file("empty")}, {"no config.json"});
  // Pickle only.
  fs::create_directory(d.file("bin"));
  kh::test::writeFile(d.file("bin/config.json"),
                      R"({"architectures":["LlamaForCausalLM"],"vocab_size":8,"hidden_size":4,"intermediate_size":4,)"
                      R"("num_hidden_layers":1,"num_attention_heads":1})");
  kh::test::writeFile(d.file("bin/pytorch_model.bin"), "x");
  expectCliError({"inspect", d.file("bin")}, {"pytorch_model.bin", "pickle can run code"});
  // Truncated weights.
  kh::test::writeFile(d.file("bin/model.safetensors"), "\x08\x00");
  expectCliError({"inspect", d.file("bin")}, {"model.safetensors", "truncated file"});
  // Unknown architecture.
  kh::test::writeFile(d.file("bin/config.json"), R"({"architectures":["RwkvForCausalLM"],"model_type":"rwkv"})");
  expectCliError({"inspect", d.file("bin")}, {"config.json", "unknown architecture 'RwkvForCausalLM'"});
  // Usage errors exit 2.
  EXPECT_EQ(runCli({"inspect"}).exitCode, 2);
  EXPECT_EQ(runCli({"make-tiny", "falcon", "-o", d.file("f")}).exitCode, 1);
  EXPECT_FALSE(fs::exists(d.file("f"))) << "a failed make-tiny leaves nothing";
}

TEST(Cli, BundledDemoModelInspectsAndIsReproducible) {
  const std::string bundled = kh::test::sourceDir() + "/resources/models/tiny-llm-jp-3";
  auto r = runCli({"inspect", bundled});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  EXPECT_NE(r.out.find("matches the LlamaForCausalLM layout"), std::string::npos) << r.out;
  // The README's recipe for it still makes the same files: it is ours, not copied weights.
  TempDir d;
  ASSERT_EQ(runCli({"make-tiny", "llama", "-o", d.file("m"), "--seed", "0"}).exitCode, 0);
  for (const char* f : {"model.safetensors", "tokenizer.model", "config.json", "tokenizer_config.json",
                        "generation_config.json", "special_tokens_map.json"})
    EXPECT_EQ(kh::test::readFile(d.file(std::string("m/") + f)), kh::test::readFile(bundled + "/" + f)) << f;
}

TEST_F(CliTiny, GenerateStreamsAndReportsWhyItStopped) {
  auto r = runCli({"generate", model("gemma2"), "--prompt", "名前は", "--max-new-tokens", "5"});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  EXPECT_NE(r.err.find("[stop: length | 5 new tokens"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("tokens/s"), std::string::npos);
  auto c = runCli({"generate", model("gemma2"), "--chat", "--system", "丁寧に", "--prompt", "こんにちは", "--max-new-tokens", "3",
                   "--temperature", "0.7", "--seed", "4"});
  EXPECT_EQ(c.exitCode, 0) << c.err;
}

TEST_F(CliTiny, GenerationBadInputIsNamed) {
  expectCliError({"generate", model("llama"), "--prompt", ""}, {"--prompt", "empty"});
  expectCliError({"generate", model("llama"), "--prompt", "x", "--temperature", "-1"}, {"--temperature"});
  expectCliError({"generate", model("llama"), "--prompt", "x", "--top-p", "1.5"}, {"--top-p", "(0, 1]"});
  expectCliError({"generate", model("llama"), "--prompt", "x", "--device", "cuda:7"}, {"--device", "cuda:7"});
  expectCliError({"generate", model("llama"), "--prompt", "x", "--device", "quantum"}, {"--device", "quantum"});
  expectCliError({"logits", model("llama"), "--ids", "1,x,3"}, {"--ids", "'x' is not a token id"});
  expectCliError({"logits", model("llama"), "--ids", "1,99999"}, {"--ids", "outside the vocabulary"});
  std::string longPrompt;
  for (int i = 0; i < 5000; ++i) longPrompt += "名前";
  expectCliError({"generate", model("llama"), "--prompt", longPrompt}, {"prompt", "do not fit the model's context of 4096"});
}

TEST_F(CliTiny, LogitsJsonAndOutFileAgree) {
  TempDir d;
  auto r = runCli({"logits", model("llama"), "--ids", "1,5,9", "--json", "--out", d.file("l.safetensors")});
  ASSERT_EQ(r.exitCode, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["top"].size(), 10u);
  auto f = kh::SafetensorsFile::open(d.file("l.safetensors"));
  at::Tensor logits = f->tensor("logits");  // [3, V]
  EXPECT_EQ(logits.size(0), 3);
  EXPECT_EQ(logits[2].argmax().item<int64_t>(), j["top"][0][0].get<int64_t>());
  EXPECT_NEAR(logits[2].max().item<double>(), j["top"][0][1].get<double>(), 1e-6);
}

TEST_F(CliTiny, InteractiveChatTakesCommandsAndKeepsGoingAfterErrors) {
  auto r = runCli({"chat", model("gemma2"), "--max-new-tokens", "4"},
                  "/set temperature 0.5\n/system あなたは親切です\nこんにちは\n/set top_p 7\n/show\n/reset\n/quit\n");
  EXPECT_EQ(r.exitCode, 0) << r.err;
  EXPECT_NE(r.err.find("gemma format"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("(temperature = 0.5)"), std::string::npos);
  EXPECT_NE(r.err.find("[stop: length | 4 new tokens"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("error: --top-p"), std::string::npos) << "a bad /set is reported, the chat goes on";
  EXPECT_NE(r.err.find("temperature 0.5"), std::string::npos) << "/show after the failed /set keeps the old value";
  EXPECT_NE(r.err.find("(conversation cleared)"), std::string::npos);
}
