// Model folders: configs of every family (as their real config.json files state them), sharded
// weights, and every bad folder the foundation issue lists, each refused with a one-line error.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/io/checkpoint.h"
#include "core/io/safetensors.h"
#include "core/model/config.h"
#include "core/model/model_folder.h"
#include "core/text/tokenizer.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using kh::test::TempDir;
using nlohmann::json;

namespace {

// Runs f; it must throw kh::Error whose one-line message contains every fragment.
template <class F>
void expectError(F f, std::initializer_list<std::string> fragments) {
  try {
    f();
    FAIL() << "no error; expected one mentioning '" << *fragments.begin() << "'";
  } catch (const kh::Error& e) {
    std::string m = e.what();
    for (const auto& frag : fragments) EXPECT_NE(m.find(frag), std::string::npos) << "'" << frag << "' not in: " << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
}

// The real config.json of llm-jp-3-3.7b (fields as published).
const char* kLlmJp3Config = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 1, "eos_token_id": 2, "head_dim": 128, "hidden_act": "silu", "hidden_size": 3072,
  "initializer_range": 0.02, "intermediate_size": 8192, "max_position_embeddings": 4096, "mlp_bias": false,
  "model_type": "llama", "num_attention_heads": 24, "num_hidden_layers": 28, "num_key_value_heads": 24,
  "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 10000,
  "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.44.0",
  "use_cache": true, "vocab_size": 99584})";

// gemma-2-2b-jpn-it.
const char* kGemma2Config = R"({
  "architectures": ["Gemma2ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "attn_logit_softcapping": 50.0, "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": 1,
  "final_logit_softcapping": 30.0, "head_dim": 256, "hidden_act": "gelu_pytorch_tanh",
  "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2304, "initializer_range": 0.02,
  "intermediate_size": 9216, "max_position_embeddings": 8192, "model_type": "gemma2",
  "num_attention_heads": 8, "num_hidden_layers": 26, "num_key_value_heads": 4, "pad_token_id": 0,
  "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "sliding_window": 4096,
  "torch_dtype": "float32", "transformers_version": "4.44.2", "use_cache": true, "vocab_size": 256000})";

// llm-jp-1.3b-v1.0.
const char* kLlmJp13bConfig = R"({
  "activation_function": "gelu", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1, "bos_token_id": 7,
  "embd_pdrop": 0.1, "eos_token_id": 7, "initializer_range": 0.02, "layer_norm_epsilon": 1e-05,
  "model_type": "gpt2", "n_embd": 2048, "n_head": 16, "n_inner": 8192, "n_layer": 24, "n_positions": 2048,
  "reorder_and_upcast_attn": false, "resid_pdrop": 0.1, "scale_attn_by_inverse_layer_idx": false,
  "scale_attn_weights": true, "torch_dtype": "float16", "use_cache": true, "vocab_size": 50688})";

// Mistral-7B-Instruct-v0.2 (sliding_window null) and Mistral-7B-v0.1 (4096).
const char* kMistralConfig = R"({
  "architectures": ["MistralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
  "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
  "max_position_embeddings": 32768, "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32,
  "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "sliding_window": null,
  "tie_word_embeddings": false, "torch_dtype": "bfloat16", "use_cache": true, "vocab_size": 32000})";

// Qwen2-7B-Instruct.
const char* kQwen2Config = R"({
  "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
  "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 3584, "initializer_range": 0.02,
  "intermediate_size": 18944, "max_position_embeddings": 32768, "max_window_layers": 28, "model_type": "qwen2",
  "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0, "sliding_window": 131072, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "use_cache": true, "use_sliding_window": false, "vocab_size": 152064})";

kh::ModelConfig parse(const char* text) {
  json j = json::parse(text);
  return kh::familyFor(j, "config.json").parse(j, "config.json");
}

uint64_t layoutParams(const kh::ModelConfig& c) {
  uint64_t n = 0;
  for (const auto& e : kh::findFamily(c.family)->layout(c)) {
    if (e.optional) continue;
    uint64_t k = 1;
    for (auto d : e.shape) k *= static_cast<uint64_t>(d);
    n += k;
  }
  return n;
}

}  // namespace

TEST(ModelConfig, LlmJp3IsLlamaWithPublishedSizes) {
  auto c = parse(kLlmJp3Config);
  EXPECT_EQ(c.family, "llama");
  EXPECT_EQ(c.hiddenSize, 3072);
  EXPECT_EQ(c.numHeads, 24);
  EXPECT_EQ(c.numKvHeads, 24);
  EXPECT_EQ(c.headDim, 128);
  EXPECT_EQ(c.vocabSize, 99584);
  EXPECT_DOUBLE_EQ(c.normEps, 1e-5);
  EXPECT_FALSE(c.tieWordEmbeddings);
  EXPECT_EQ(c.eosIds, std::vector<int>{2});
  // Published size: 3.78 B parameters (llm-jp-3-3.7b model card).
  EXPECT_NEAR(static_cast<double>(layoutParams(c)) / 1e9, 3.78, 0.01);
}

TEST(ModelConfig, Gemma2CarriesEveryDetailEnginesGetWrong) {
  auto c = parse(kGemma2Config);
  EXPECT_EQ(c.family, "gemma2");
  EXPECT_TRUE(c.normAddsOne);
  EXPECT_TRUE(c.scaleEmbeddings);
  EXPECT_EQ(c.activation, "gelu_pytorch_tanh");
  EXPECT_DOUBLE_EQ(c.attnScale, 1.0 / 16.0);  // query_pre_attn_scalar 256
  EXPECT_DOUBLE_EQ(c.attnLogitSoftcap, 50.0);
  EXPECT_DOUBLE_EQ(c.finalLogitSoftcap, 30.0);
  EXPECT_TRUE(c.tieWordEmbeddings);
  ASSERT_EQ(c.layerWindow.size(), 26u);
  EXPECT_EQ(c.layerWindow[0], 4096) << "layer 0 slides";
  EXPECT_EQ(c.layerWindow[1], 0);
  EXPECT_EQ(c.slidingLayers(), 13);
  // gemma-2-2b: 2.61 B parameters.
  EXPECT_NEAR(static_cast<double>(layoutParams(c)) / 1e9, 2.61, 0.01);
  // Older configs name the activation hidden_act only; the 9B copies use query_pre_attn_scalar 224.
  json j = json::parse(kGemma2Config);
  j.erase("hidden_activation");
  j["hidden_act"] = "gelu_pytorch_tanh";
  j["query_pre_attn_scalar"] = 224;
  auto c2 = kh::familyFor(j, "x").parse(j, "x");
  EXPECT_EQ(c2.activation, "gelu_pytorch_tanh");
  EXPECT_DOUBLE_EQ(c2.attnScale, 1.0 / std::sqrt(224.0));
}

TEST(ModelConfig, LayerTypesListWinsAndIsChecked) {
  // Newer transformers write layer_types explicitly; it overrides the alternation.
  json j = json::parse(kGemma2Config);
  j["num_hidden_layers"] = 3;
  j["layer_types"] = {"full_attention", "sliding_attention", "sliding_attention"};
  auto c = kh::familyFor(j, "x").parse(j, "x");
  EXPECT_EQ(c.layerWindow, (std::vector<int64_t>{0, 4096, 4096}));
  j["layer_types"] = {"full_attention"};
  expectError([&] { kh::familyFor(j, "m/config.json").parse(j, "m/config.json"); },
              {"m/config.json: field 'layer_types'", "each of the 3 layers"});
}

TEST(ModelConfig, LlmJp13bIsGpt2WithConv1DLayout) {
  auto c = parse(kLlmJp13bConfig);
  EXPECT_EQ(c.family, "gpt2");
  EXPECT_EQ(c.activation, "gelu") << "llm-jp-1.3b uses exact GELU";
  EXPECT_EQ(c.intermediateSize, 8192);
  EXPECT_TRUE(c.learnedPositions);
  EXPECT_TRUE(c.tieWordEmbeddings);
  EXPECT_EQ(c.eosIds, std::vector<int>{7});
  EXPECT_EQ(c.bosId, 7);
  bool sawConv1D = false;
  for (const auto& e : kh::findFamily("gpt2")->layout(c))
    if (e.name == "transformer.h.0.attn.c_attn.weight") {
      sawConv1D = true;
      EXPECT_EQ(e.shape, (std::vector<int64_t>{2048, 6144})) << "Conv1D is [in, out], q/k/v fused";
    }
  EXPECT_TRUE(sawConv1D);
  EXPECT_NEAR(static_cast<double>(layoutParams(c)) / 1e9, 1.32, 0.01);
}

TEST(ModelConfig, MistralWindowNullMeansFullAttention) {
  auto c = parse(kMistralConfig);
  EXPECT_EQ(c.family, "mistral");
  EXPECT_EQ(c.slidingLayers(), 0);
  EXPECT_DOUBLE_EQ(c.ropeTheta, 1e6);
  EXPECT_NEAR(static_cast<double>(layoutParams(c)) / 1e9, 7.24, 0.01);  // Mistral-7B: 7.24 B
  json j = json::parse(kMistralConfig);
  j["sliding_window"] = 4096;
  EXPECT_EQ(kh::familyFor(j, "x").parse(j, "x").slidingLayers(), 32);
}

TEST(ModelConfig, Qwen2HasQkvBias) {
  auto c = parse(kQwen2Config);
  EXPECT_EQ(c.family, "qwen2");
  EXPECT_TRUE(c.qkvBias);
  EXPECT_FALSE(c.oProjBias);
  EXPECT_EQ(c.slidingLayers(), 0);
  EXPECT_NEAR(static_cast<double>(layoutParams(c)) / 1e9, 7.62, 0.01);  // Qwen2-7B: 7.62 B
}

TEST(ModelConfig, MissingFieldAndUnknownArchitectureAreNamed) {
  json j = json::parse(kLlmJp3Config);
  j.erase("hidden_size");
  expectError([&] { kh::familyFor(j, "m/config.json").parse(j, "m/config.json"); },
              {"m/config.json", "missing required field 'hidden_size'"});
  json u = json::parse(R"({"architectures":["FalconForCausalLM"],"model_type":"falcon"})");
  expectError([&] { kh::familyFor(u, "m/config.json"); }, {"m/config.json", "unknown architecture 'FalconForCausalLM'", "LlamaForCausalLM"});
}

TEST(ModelConfig, EveryRegisteredFamilyParsesAndLaysOut) {
  // Walks the registry (CONVENTIONS 2): a family added without a config here fails this test.
  std::map<std::string, const char*> configs = {{"llama", kLlmJp3Config}, {"gemma2", kGemma2Config},
                                                {"gpt2", kLlmJp13bConfig}, {"mistral", kMistralConfig},
                                                {"qwen2", kQwen2Config}};
  for (const auto* f : kh::families()) {
    ASSERT_TRUE(configs.count(f->name)) << "no real config for family " << f->name;
    auto c = parse(configs[f->name]);
    EXPECT_EQ(c.family, f->name);
    EXPECT_GT(f->layout(c).size(), static_cast<size_t>(c.numLayers));
  }
}

// ---------------------------------------------------------------------------------------------
// Folders.

namespace {
void writeConfig(const std::string& dir, const json& j) { kh::test::writeFile(dir + "/config.json", j.dump()); }

json tinyLlamaConfig() {
  return json{{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"vocab_size", 8}, {"hidden_size", 4},
              {"intermediate_size", 6}, {"num_hidden_layers", 1}, {"num_attention_heads", 2}, {"num_key_value_heads", 1},
              {"eos_token_id", 2}, {"tie_word_embeddings", true}};
}

// All tensors of tinyLlamaConfig(), split over two shards.
void writeShardedLlama(const std::string& dir) {
  writeConfig(dir, tinyLlamaConfig());
  auto c = kh::familyFor(tinyLlamaConfig(), "x").parse(tinyLlamaConfig(), "x");
  std::vector<kh::TensorSpec> plan;
  for (const auto& e : kh::findFamily("llama")->layout(c))
    if (!e.optional) plan.push_back({e.name, kh::st::DType::BF16, e.shape});
  kh::WriterOptions o;
  o.shardBytes = 64;
  kh::SafetensorsWriter w(dir, plan, o);
  for (const auto& p : plan) w.write(p.name, at::ones(p.shape, at::kBFloat16));
  w.finish();
}
}  // namespace

TEST(ModelFolder, ShardedFolderOpensLazilyAndMatchesLayout) {
  TempDir d;
  writeShardedLlama(d.path());
  auto m = kh::ModelFolder::open(d.path());
  EXPECT_TRUE(m.layout.ok()) << m.layout.summary();
  EXPECT_GT(m.weights->files().size(), 2u);
  EXPECT_EQ(m.weights->tensor("model.layers.0.mlp.down_proj.weight").sizes(), (at::IntArrayRef{4, 6}));
  ASSERT_FALSE(m.stopTokens.empty());
  EXPECT_EQ(m.stopTokens[0].id, 2);
}

TEST(ModelFolder, LayoutReportNamesMissingUnexpectedAndMisshaped) {
  TempDir d;
  writeConfig(d.path(), tinyLlamaConfig());
  kh::saveSafetensors(d.file("model.safetensors"),
                      {{"model.embed_tokens.weight", at::zeros({8, 5})},  // wrong shape
                       {"model.norm.weight", at::zeros({4})},
                       {"model.layers.0.self_attn.rotary_emb.inv_freq", at::zeros({1})},  // ignorable
                       {"surprise", at::zeros({1})}});
  auto m = kh::ModelFolder::open(d.path());
  EXPECT_FALSE(m.layout.ok());
  EXPECT_EQ(m.layout.unexpected, std::vector<std::string>{"surprise"});
  EXPECT_EQ(m.layout.ignored.size(), 1u);
  ASSERT_EQ(m.layout.misshaped.size(), 1u);
  EXPECT_EQ(m.layout.misshaped[0], "model.embed_tokens.weight: [8, 5], expected [8, 4]");
  EXPECT_NE(std::find(m.layout.missing.begin(), m.layout.missing.end(), "model.layers.0.mlp.up_proj.weight"),
            m.layout.missing.end());
  expectError([&] { m.requireExactLayout(); }, {d.path(), "missing", "1 unexpected (surprise)"});
}

TEST(ModelFolder, IndexNamingMissingShardIsRefused) {
  TempDir d;
  writeShardedLlama(d.path());
  auto idx = json::parse(kh::test::readFile(d.file("model.safetensors.index.json")));
  const std::string shard = idx["weight_map"]["model.norm.weight"];
  fs::remove(d.file(shard));
  expectError([&] { kh::CheckpointWeights::open(d.path()); },
              {"model.safetensors.index.json", "names shard '" + shard + "', which is missing"});
}

TEST(ModelFolder, IndexWithPathTraversalIsRefused) {
  for (std::string evil : {"../outside.safetensors", "/etc/passwd.safetensors", "sub/../../x.safetensors"}) {
    TempDir d;
    writeConfig(d.path(), tinyLlamaConfig());
    kh::saveSafetensors(d.file("model-00001-of-00001.safetensors"), {{"a", at::zeros({1})}});
    kh::test::writeFile(d.file("model.safetensors.index.json"),
                        json{{"metadata", {{"total_size", 4}}}, {"weight_map", {{"a", evil}}}}.dump());
    expectError([&] { kh::CheckpointWeights::open(d.path()); },
                {"model.safetensors.index.json", "'" + evil + "' is not a plain file name"});
  }
}

TEST(ModelFolder, IndexPointingAtWrongShardIsRefused) {
  TempDir d;
  kh::saveSafetensors(d.file("a.safetensors"), {{"x", at::zeros({1})}});
  kh::saveSafetensors(d.file("b.safetensors"), {{"y", at::zeros({1})}});
  kh::test::writeFile(d.file("model.safetensors.index.json"),
                      json{{"weight_map", {{"x", "b.safetensors"}, {"y", "b.safetensors"}}}}.dump());
  expectError([&] { kh::CheckpointWeights::open(d.path()); }, {"tensor 'x' is mapped to 'b.safetensors', which does not contain it"});
}

TEST(ModelFolder, PickleOnlyFolderIsRefusedWithHint) {
  TempDir d;
  writeConfig(d.path(), tinyLlamaConfig());
  kh::test::writeFile(d.file("pytorch_model.bin"), "PK\x03\x04 not really");
  expectError([&] { kh::ModelFolder::open(d.path()); }, {d.path(), "pytorch_model.bin", "pickle can run code", "hint: convert"});
}

TEST(ModelFolder, MissingConfigAndUnknownArchitecture) {
  TempDir d;
  expectError([&] { kh::ModelFolder::open(d.path()); }, {d.path(), "no config.json"});
  writeConfig(d.path(), json{{"architectures", {"MambaForCausalLM"}}, {"model_type", "mamba"}});
  expectError([&] { kh::ModelFolder::open(d.path()); }, {"config.json", "unknown architecture 'MambaForCausalLM'"});
  kh::test::writeFile(d.file("config.json"), "{not json");
  expectError([&] { kh::ModelFolder::open(d.path()); }, {"config.json", "not valid JSON"});
}

TEST(ModelFolder, GenerationConfigStopIdsWin) {
  TempDir d;
  writeShardedLlama(d.path());
  kh::test::writeFile(d.file("generation_config.json"), R"({"eos_token_id": [2, 5], "bos_token_id": 1})");
  auto m = kh::ModelFolder::open(d.path());
  ASSERT_GE(m.stopTokens.size(), 2u);
  EXPECT_EQ(m.stopTokens[0].id, 2);
  EXPECT_EQ(m.stopTokens[1].id, 5);
  EXPECT_EQ(m.stopTokens[1].source, "generation_config.json");
}

TEST(ModelFolder, TokenizerJsonFolderGetsItsEndOfTurnStopAndLoadsOnce) {
  // A Qwen2-style folder whose only tokenizer is tokenizer.json: <|im_end|> must be a stop id.
  TempDir d;
  writeShardedLlama(d.path());
  std::filesystem::copy_file(kh::test::sourceDir() + "/tests/golden/hf_tokenizer/bpe_bytelevel/tokenizer.json",
                             d.file("tokenizer.json"));
  auto m = kh::ModelFolder::open(d.path());
  ASSERT_TRUE(m.tokenizer) << m.tokenizerError;
  const int imEnd = m.tokenizer->pieceToId("<|im_end|>");
  ASSERT_GE(imEnd, 0);
  bool found = false;
  for (const auto& s : m.stopTokens) found |= s.id == imEnd && s.source == "chat template end of turn";
  EXPECT_TRUE(found);
  EXPECT_EQ(m.requireTokenizer().get(), m.tokenizer.get());
}

TEST(ModelFolder, UnloadableTokenizerDoesNotStopOpeningButIsNamedWhenNeeded) {
  TempDir d;
  writeShardedLlama(d.path());
  kh::test::writeFile(d.file("tokenizer.json"), R"({"model": {"type": "WordPiece", "vocab": {}}})");
  auto m = kh::ModelFolder::open(d.path());  // inspect and merge still work
  EXPECT_FALSE(m.tokenizer);
  expectError([&] { m.requireTokenizer(); }, {d.path(), "cannot load the tokenizer", "tokenizer.json"});
}
