// Tests for include/relpos/feed_forward.hpp: torch's linear2(act(linear1(x))) with relu and
// exact (erf) gelu, golden numbers from tools/golden_attention.py.
#include <relpos/feed_forward.hpp>

#include <cmath>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/golden.hpp"

namespace {

template <class T>
class FeedForwardTyped : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(FeedForwardTyped, Scalars);

template <class T>
constexpr double ffn_tol() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-12;
}

TYPED_TEST(FeedForwardTyped, MatchesTorchReluAndExactGelu) {
  using T = TypeParam;
  for (const char* name : {"attention/none_block_post_relu.safetensors",
                           "attention/none_block_pre_gelu.safetensors"}) {
    SCOPED_TRACE(name);
    const auto f = relpos::test::golden_file(name);
    const auto config = nlohmann::json::parse(f.metadata().at("config"));
    const auto act =
        config.at("activation") == "gelu" ? relpos::Activation::gelu : relpos::Activation::relu;
    const auto ffn =
        relpos::FeedForward<T>::load(f, "", config.at("d_model"), config.at("d_ff"), act);
    const relpos::Tensor3<T> x = f.tensor3<T>("input");
    const relpos::Tensor3<double> want = f.tensor3<double>("ffn_output");
    relpos::SequenceWorkspace<T> ws;
    for (relpos::Index b = 0; b < x.dimension(0); ++b) {
      relpos::Matrix<T> out(x.dimension(1), x.dimension(2));
      ffn.forward(relpos::item(x, b), out, ws);
      EXPECT_TRUE(relpos::test::all_close(out, relpos::item(want, b), ffn_tol<T>()))
          << "item " << b;
    }
  }
}

TEST(FeedForward, GeluIsTheExactErfForm) {
  // one hidden unit, identity weights: out = gelu(x); gelu(1) = Φ(1) = 0.8413447460685429,
  // the tanh approximation would give 0.8411919906082768
  relpos::FeedForward<double> ffn(1, 1, relpos::Activation::gelu);
  ffn.linear1_weight(0, 0) = 1;
  ffn.linear2_weight(0, 0) = 1;
  relpos::Matrix<double> x(3, 1), out(3, 1);
  x << 1, -2, 0;
  relpos::SequenceWorkspace<double> ws;
  ffn.forward(x, out, ws);
  EXPECT_NEAR(out(0, 0), 0.8413447460685429, 1e-15);
  EXPECT_NEAR(out(1, 0), -2 * 0.022750131948179195, 1e-15);
  EXPECT_EQ(out(2, 0), 0.0);
}

TEST(FeedForward, MisShapedTensorIsNamed) {
  const auto f = relpos::test::golden_file("attention/none_block_post_relu.safetensors");
  try {
    (void)relpos::FeedForward<float>::load(f, "", 16, 64, relpos::Activation::relu);
    FAIL();
  } catch (const relpos::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("linear1.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[64, 16]"), std::string::npos) << msg;
  }
}

}  // namespace
