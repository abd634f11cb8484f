// ModernBERT (ruri-v3) encoder embedder against the python reference (tests/tools/
// make_modernbert_golden.py, golden.json): hand-derived token ids; embeddings of the padded,
// batched C++ forward within fp32 tolerance of the reference's one-unpadded-sequence-at-a-time
// float64 forward; the sliding window changes the result and still matches; ruri-v3 prefixes
// chosen from the folder name; refusals by name.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/retrieval/encoder_embedder.h"
#include "tests/core/encoder_golden.h"
#include "tests/test_util.h"

using namespace kh::retrieval;
using kh::test::TempDir;

namespace {

constexpr int kDim = 32;

using kh::test::caseOf;
using kh::test::errorOf;
using kh::test::golden;
using kh::test::goldenDir;
using kh::test::maxDiff;

// A copy of a golden folder (under the same name, so the auto prefix style is kept) with its
// config.json edited.
std::string copyWithConfig(const TempDir& d, const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
  const std::string dst = d.file(name);
  std::filesystem::create_directories(dst);
  for (const auto& e : std::filesystem::directory_iterator(goldenDir(name)))
    std::filesystem::copy_file(e.path(), dst + "/" + e.path().filename().string());
  auto cfg = nlohmann::json::parse(kh::test::readFile(dst + "/config.json"));
  edit(cfg);
  kh::test::writeFile(dst + "/config.json", cfg.dump());
  return dst;
}

std::vector<std::string> textsOf(const nlohmann::json& g) {
  std::vector<std::string> t;
  for (const auto& c : g["cases"]) t.push_back(c["text"]);
  return t;
}

}  // namespace

class ModernBertGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(ModernBertGolden, HandDerivedIdsAndReferenceEmbeddingsPaddedOrNot) {
  const auto g = golden(GetParam());
  const auto texts = textsOf(g);
  // Batches of 1 (no padding), 3 (length-sorted: 5, 9, 9 | 10, 11, 14 tokens) and 6 (the
  // 5-token text padded to 14): padding must not change any embedding.
  for (int batch : {1, 3, 6}) {
    EncoderEmbedder emb(goldenDir(GetParam()), "none", batch);
    ASSERT_EQ(emb.dim(), kDim);
    for (size_t i = 0; i < texts.size(); ++i)
      EXPECT_EQ(emb.tokenIds(texts[i]), g["cases"][i]["ids"].get<std::vector<int64_t>>()) << GetParam() << ": " << texts[i];
    const auto v = emb.embedRaw(texts);
    for (size_t i = 0; i < texts.size(); ++i) {
      const auto want = g["cases"][i]["embedding"].get<std::vector<double>>();
      EXPECT_LT(maxDiff(v.data() + i * kDim, want), 2e-5) << GetParam() << " batch " << batch << ": " << texts[i];
      double n = 0;
      for (int k = 0; k < kDim; ++k) n += double(v[i * kDim + k]) * v[i * kDim + k];
      EXPECT_NEAR(n, 1.0, 1e-5);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Tiny, ModernBertGolden, ::testing::Values("ruri-v3-tiny", "modernbert_mlm_tiny"));

TEST(ModernBertEncoder, SlidingWindowMattersAndMatchesTheReference) {
  const auto g = golden("ruri-v3-tiny");
  const auto texts = textsOf(g);
  TempDir d;
  const int narrow = g["narrow_window_local_attention"];
  const std::string dir = copyWithConfig(d, "ruri-v3-tiny", [&](nlohmann::json& c) { c["local_attention"] = narrow; });
  EncoderEmbedder emb(dir, "none", 6);
  const auto v = emb.embedRaw(texts);
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto want = g["cases"][i]["narrow_window"].get<std::vector<double>>();
    const auto wide = g["cases"][i]["embedding"].get<std::vector<double>>();
    EXPECT_LT(maxDiff(v.data() + i * kDim, want), 2e-5) << texts[i];
    EXPECT_GT(maxDiff(v.data() + i * kDim, wide), 0.02) << texts[i] << ": the window made no difference";
  }
}

TEST(ModernBertEncoder, OldAndNewConfigKeysMeanTheSame) {
  const auto g = golden("ruri-v3-tiny");
  const auto texts = textsOf(g);
  TempDir d1, d2, d3;
  // New style (transformers >= 4.57): layer_types + rope_parameters instead of the two thetas.
  const std::string fresh = copyWithConfig(d1, "ruri-v3-tiny", [](nlohmann::json& c) {
    c["layer_types"] = {"full_attention", "sliding_attention", "sliding_attention", "full_attention"};
    c["rope_parameters"] = {{"full_attention", {{"rope_type", "default"}, {"rope_theta", c["global_rope_theta"]}}},
                            {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", c["local_rope_theta"]}}}};
    c.erase("global_rope_theta");
    c.erase("local_rope_theta");
  });
  const auto v = EncoderEmbedder(fresh, "none", 6).embedRaw(texts);
  for (size_t i = 0; i < texts.size(); ++i)
    EXPECT_LT(maxDiff(v.data() + i * kDim, g["cases"][i]["embedding"].get<std::vector<double>>()), 2e-5) << texts[i];
  // Older transformers: a null local_rope_theta means the global base on local layers too, the
  // same as writing it out; and the local base does matter.
  const std::string nullLocal = copyWithConfig(d2, "ruri-v3-tiny", [](nlohmann::json& c) { c["local_rope_theta"] = nullptr; });
  const std::string sameBase =
      copyWithConfig(d3, "ruri-v3-tiny", [](nlohmann::json& c) { c["local_rope_theta"] = c["global_rope_theta"]; });
  const auto a = EncoderEmbedder(nullLocal, "none", 6).embedRaw(texts);
  const auto b = EncoderEmbedder(sameBase, "none", 6).embedRaw(texts);
  for (size_t i = 0; i < texts.size(); ++i) {
    std::vector<double> bi(b.begin() + static_cast<std::ptrdiff_t>(i * kDim), b.begin() + static_cast<std::ptrdiff_t>((i + 1) * kDim));
    EXPECT_LT(maxDiff(a.data() + i * kDim, bi), 1e-6) << texts[i];
    EXPECT_GT(maxDiff(a.data() + i * kDim, g["cases"][i]["embedding"].get<std::vector<double>>()), 1e-3) << texts[i];
  }
}

TEST(ModernBertEncoder, RuriV3PrefixesFromTheFolderName) {
  const auto g = golden("ruri-v3-tiny");
  EncoderEmbedder emb(goldenDir("ruri-v3-tiny"));  // auto: the folder name says ruri-v3
  EXPECT_EQ(emb.prefixes().style, "ruri-v3");
  EXPECT_EQ(emb.identity().substr(emb.identity().size() - 8), ":ruri-v3");
  const auto p = emb.embed({"名前は小野寺絢音です。"});
  EXPECT_LT(maxDiff(p.data(), caseOf(g, "検索文書: 名前は小野寺絢音です。")["embedding"].get<std::vector<double>>()), 2e-5);
  const auto q = emb.embedQuery("あなたの名前は?");
  EXPECT_LT(maxDiff(q.data(), caseOf(g, "検索クエリ: あなたの名前は?")["embedding"].get<std::vector<double>>()), 2e-5);
  // A bare folder spec is an encoder because config.json says modernbert.
  EXPECT_EQ(openEmbedder(goldenDir("ruri-v3-tiny"))->identity(), emb.identity());
}

TEST(ModernBertEncoder, RefusesWhatIsNotImplementedByName) {
  struct Case {
    std::function<void(nlohmann::json&)> edit;
    std::vector<std::string> said;
  };
  const std::vector<Case> cases = {
      {[](nlohmann::json& c) { c["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 2.0}}; }, {"config.json", "rope_scaling"}},
      {[](nlohmann::json& c) { c["architectures"] = {"ModernBertForSequenceClassification"}; },
       {"ModernBertForSequenceClassification", "not a ModernBERT sentence encoder"}},
      {[](nlohmann::json& c) { c["hidden_activation"] = "swiglu"; }, {"hidden_activation 'swiglu'"}},
      {[](nlohmann::json& c) {
         c["layer_types"] = {"full_attention", "full_attention", "sliding_attention", "full_attention"};
       },
       {"layer_types[1]", "global_attn_every_n_layers 3"}},
      {[](nlohmann::json& c) { c["rope_parameters"] = {{"full_attention", {{"rope_type", "yarn"}}}}; }, {"rope_type 'yarn'"}},
      // Biases the config promises but the weights lack: named.
      {[](nlohmann::json& c) { c["norm_bias"] = true; }, {"missing", "embeddings.norm.bias"}},
      {[](nlohmann::json& c) { c["num_hidden_layers"] = 5; }, {"missing", "layers.4."}},
      {[](nlohmann::json& c) { c["intermediate_size"] = 40; }, {"mis-shaped", "layers.0.mlp.Wi.weight"}},
  };
  for (const auto& c : cases) {
    TempDir d;
    const std::string dir = copyWithConfig(d, "ruri-v3-tiny", c.edit);
    const std::string msg = errorOf([&] { EncoderEmbedder e(dir); });
    for (const auto& s : c.said) EXPECT_NE(msg.find(s), std::string::npos) << msg;
  }
}
