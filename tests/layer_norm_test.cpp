// Tests for include/relpos/layer_norm.hpp: torch.nn.LayerNorm golden numbers (biased
// variance, eps inside the root) and the normalisation property.
#include <relpos/layer_norm.hpp>

#include <cmath>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/golden.hpp"

namespace {

template <class T>
class LayerNormTyped : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(LayerNormTyped, Scalars);

template <class T>
constexpr double norm_tol() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-12;
}

TYPED_TEST(LayerNormTyped, MatchesTorchLayerNorm) {
  using T = TypeParam;
  for (const char* name : {"attention/none_block_post_relu.safetensors",
                           "attention/none_block_pre_gelu.safetensors"}) {
    SCOPED_TRACE(name);
    const auto f = relpos::test::golden_file(name);
    const auto config = nlohmann::json::parse(f.metadata().at("config"));
    const relpos::Index d = config.at("d_model");
    const auto norm = relpos::LayerNorm<T>::load(f, "norm1", d, config.at("layer_norm_eps"));
    const relpos::Tensor3<T> x = f.tensor3<T>("input");
    const relpos::Tensor3<double> want = f.tensor3<double>("norm1_output");
    for (relpos::Index b = 0; b < x.dimension(0); ++b) {
      relpos::Matrix<T> out(x.dimension(1), d);
      norm.forward(relpos::item(x, b), out);
      EXPECT_TRUE(relpos::test::all_close(out, relpos::item(want, b), norm_tol<T>()))
          << "item " << b;
    }
  }
}

TYPED_TEST(LayerNormTyped, IdentityNormGivesZeroMeanUnitVarianceInPlace) {
  using T = TypeParam;
  const relpos::LayerNorm<T> norm(6, 1e-5);
  relpos::Matrix<T> x(2, 6);
  x << 1, 2, 3, 4, 5, 6,                   //
      1000, 1001, 1000, 1001, 1000, 1001;  // a large offset: two-pass statistics stay exact
  norm.forward(x, x);                      // in place is allowed
  for (relpos::Index i = 0; i < 2; ++i) {
    EXPECT_NEAR(static_cast<double>(x.row(i).mean()), 0.0, 1e-6);
    // biased variance: mean of squares is var / (var + eps)
    const double var = i == 0 ? 35.0 / 12.0 : 0.25;
    EXPECT_NEAR(static_cast<double>(x.row(i).squaredNorm()) / 6, var / (var + 1e-5), 1e-5);
  }
}

TEST(LayerNorm, BadSizesAndMissingTensorsThrow) {
  EXPECT_THROW(relpos::LayerNorm<float>(0, 1e-5), relpos::Error);
  EXPECT_THROW(relpos::LayerNorm<float>(4, 0.0), relpos::Error);
  const auto f = relpos::test::golden_file("attention/none_block_post_relu.safetensors");
  try {
    (void)relpos::LayerNorm<float>::load(f, "norm", 16, 1e-5);
    FAIL();
  } catch (const relpos::Error& e) {
    EXPECT_NE(std::string(e.what()).find("norm.weight"), std::string::npos) << e.what();
  }
}

}  // namespace
