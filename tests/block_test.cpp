// Tests for include/relpos/block.hpp: torch.nn.TransformerEncoderLayer golden numbers (post-norm
// relu and pre-norm gelu, key padding, with and without a causal mask).
#include <relpos/block.hpp>

#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/golden.hpp"

namespace {

template <class T>
class BlockTyped : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(BlockTyped, Scalars);

template <class T>
constexpr double block_tol() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-10;
}

relpos::BlockConfig block_config(const nlohmann::json& c, bool causal) {
  relpos::BlockConfig b;
  b.d_model = c.at("d_model");
  b.n_heads = c.at("n_heads");
  b.d_ff = c.at("d_ff");
  b.activation = c.at("activation") == "gelu" ? relpos::Activation::gelu : relpos::Activation::relu;
  b.norm_first = c.at("norm_first");
  b.layer_norm_eps = c.at("layer_norm_eps");
  b.causal = causal;
  return b;
}

TYPED_TEST(BlockTyped, MatchesTorchTransformerEncoderLayer) {
  using T = TypeParam;
  for (const char* name : {"attention/none_block_post_relu.safetensors",
                           "attention/none_block_pre_gelu.safetensors"}) {
    SCOPED_TRACE(name);
    const auto f = relpos::test::golden_file(name);
    const auto config = nlohmann::json::parse(f.metadata().at("config"));
    const relpos::Tensor3<T> x = f.tensor3<T>("input");
    const std::vector<std::uint8_t> raw = f.values<std::uint8_t>("padding_mask");
    relpos::PaddingMask mask(x.dimension(0), x.dimension(1));
    for (relpos::Index i = 0; i < mask.size(); ++i) mask.data()[i] = raw[std::size_t(i)] != 0;
    const relpos::BatchInputs in{mask, nullptr};
    for (bool causal : {false, true}) {
      const auto block = relpos::Block<T>::load(f, "", block_config(config, causal));
      EXPECT_TRUE(relpos::test::all_close(block.forward(x, in),
                                          f.tensor3<double>(causal ? "output_causal" : "output"),
                                          block_tol<T>()))
          << "causal " << causal;
    }
  }
}

TEST(Block, InPlaceBatchForwardReusesTheWorkspace) {
  const auto f = relpos::test::golden_file("attention/none_block_pre_gelu.safetensors");
  const auto config = nlohmann::json::parse(f.metadata().at("config"));
  const auto block = relpos::Block<double>::load(f, "", block_config(config, false));
  const relpos::Tensor3<double> x = f.tensor3<double>("input");
  relpos::Workspace<double> ws;
  relpos::Tensor3<double> a = x, b = x;
  block.forward(a, {}, ws);
  block.forward(b, {}, ws);  // warm workspace: same result
  EXPECT_TRUE(relpos::test::all_close(a, b, 0));
  EXPECT_TRUE(relpos::test::all_close(a, block.forward(x), 0));
}

TEST(Block, MissingTensorIsNamed) {
  const auto f = relpos::test::golden_file("attention/none_block_post_relu.safetensors");
  const auto config = nlohmann::json::parse(f.metadata().at("config"));
  try {
    (void)relpos::Block<float>::load(f, "layers.0.", block_config(config, false));
    FAIL();
  } catch (const relpos::Error& e) {
    EXPECT_NE(std::string(e.what()).find("layers.0.self_attn.in_proj_weight"), std::string::npos)
        << e.what();
  }
}

}  // namespace
