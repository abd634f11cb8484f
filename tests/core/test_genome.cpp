// The evolution genome against its layout by hand: gene order [group][model][filter slot][param],
// and the recipe it decodes to resolves every tensor to its own group's and filter's gene.
#include <gtest/gtest.h>

#include "core/error.h"
#include "core/evolve/genome.h"

using namespace kh::evolve;
using kh::merge::Method;

namespace {

GenomeSpec tiesSpec() {
  GenomeSpec s;
  s.method = Method::Ties;
  s.baseModel = "base";
  s.models = {"m1", "m2"};
  s.layers = 6;
  s.layerGranularity = 4;  // groups: layers 0-3, 4-5
  s.filters = {"self_attn", "mlp"};
  return s;
}

}  // namespace

TEST(Genome, LayoutIsGroupsByModelsByFiltersByParams) {
  GenomeSpec s = tiesSpec();
  EXPECT_EQ(s.groups(), 2);
  EXPECT_EQ(s.size(), 2u * 2u * 3u * 2u);
  EXPECT_EQ(s.index(0, 0, 0, 0), 0u);
  EXPECT_EQ(s.index(0, 0, 0, 1), 1u);   // density follows weight
  EXPECT_EQ(s.index(0, 0, 1, 0), 2u);   // then the next filter slot
  EXPECT_EQ(s.index(0, 1, 0, 0), 6u);   // then the next model
  EXPECT_EQ(s.index(1, 0, 0, 0), 12u);  // then the next layer group
  GenomeSpec slerp;
  slerp.method = Method::Slerp;
  slerp.baseModel = "a";
  slerp.models = {"b"};
  slerp.layers = 4;
  slerp.layerGranularity = 2;
  EXPECT_EQ(slerp.size(), 2u);
}

TEST(Genome, DecodedRecipeGivesEachTensorItsGroupAndFilterGene) {
  GenomeSpec s = tiesSpec();
  std::vector<double> x(s.size());
  for (size_t i = 0; i < x.size(); ++i) x[i] = 0.01 * static_cast<double>(i + 1);
  const auto r = decodeGenome(s, x);
  ASSERT_EQ(r.models.size(), 2u);
  auto weight = [&](size_t model, const std::string& tensor, int64_t layer) {
    return r.models[model].parameters.at("weight").resolve(tensor, layer, s.layers, false, "test");
  };
  auto density = [&](size_t model, const std::string& tensor, int64_t layer) {
    return r.models[model].parameters.at("density").resolve(tensor, layer, s.layers, false, "test");
  };
  // layer 5 is in group 1; mlp is filter slot 1; model 2 is index 1.
  EXPECT_NEAR(weight(1, "model.layers.5.mlp.up_proj.weight", 5), x[s.index(1, 1, 1, 0)], 1e-12);
  EXPECT_NEAR(density(1, "model.layers.5.mlp.up_proj.weight", 5), x[s.index(1, 1, 1, 1)], 1e-12);
  EXPECT_NEAR(weight(0, "model.layers.3.self_attn.q_proj.weight", 3), x[s.index(0, 0, 0, 0)], 1e-12);
  // Norms match neither filter: the default slot.
  EXPECT_NEAR(weight(0, "model.layers.2.input_layernorm.weight", 2), x[s.index(0, 0, 2, 0)], 1e-12);
  // A density gene of 0 decodes to the smallest density the merge accepts.
  x[s.index(0, 0, 0, 1)] = 0.0;
  EXPECT_DOUBLE_EQ(decodeGenome(s, x).models[0].parameters.at("density").resolve("model.layers.0.self_attn.k_proj.weight", 0, 6, false, "t"),
                   kMinDensity);
}

TEST(Genome, UnsupportedSetupsAreNamed) {
  GenomeSpec s = tiesSpec();
  s.method = Method::ModelStock;
  EXPECT_THROW(s.validate("evolve.yaml"), kh::Error);
  s = tiesSpec();
  s.baseModel.clear();
  EXPECT_THROW(s.validate("evolve.yaml"), kh::Error);
  s = tiesSpec();
  s.method = Method::Slerp;  // two models besides the base
  EXPECT_THROW(s.validate("evolve.yaml"), kh::Error);
}
