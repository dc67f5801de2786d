// Tests for include/relpos/encodings/learned.hpp: Shaw et al. tables of (2K + 1, d_head),
// row c + K for clamped distance c = clamp(j − i, −K, K), against the float64 reference,
// shape checks naming the tensor, and the seeded normal initialization.
#include <relpos/encodings/learned.hpp>

#include <cmath>
#include <functional>
#include <string>

#include <gtest/gtest.h>

#include "support/expect_error.hpp"
#include "support/golden.hpp"

namespace {

using relpos::Index;
using relpos::LearnedConfig;
using relpos::LearnedRelative;
using relpos::Matrix;

// Rows are copied from the tensors (a cast for float): exact in double, one rounding
// (relative 2^-24) in float; compared with that relative tolerance and no absolute one.
template <class T>
constexpr double kRtol = std::is_same_v<T, float> ? 0x1p-24 : 0.0;

LearnedConfig config(Index k, bool keys = true, bool values = true) {
  LearnedConfig c;
  c.max_distance = k;
  c.keys = keys;
  c.values = values;
  return c;
}

template <class T>
class LearnedTest : public ::testing::Test {
 protected:
  relpos::io::SafetensorsFile golden = relpos::test::golden_file("encodings/learned.safetensors");
  LearnedRelative<T> make() const {
    return LearnedRelative<T>(5, config(3), golden.template matrix<T>("relative_key"),
                              golden.template matrix<T>("relative_value"));
  }
};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(LearnedTest, Scalars);

TYPED_TEST(LearnedTest, ViewsGatherRowCPlusKWithEdgeRowsBeyondK) {
  using T = TypeParam;
  const auto enc = this->make();
  for (Index len : {9, 3, 1}) {
    const std::string n = std::to_string(len);
    EXPECT_TRUE(relpos::test::all_close(enc.key_view(len).materialize(),
                                        this->golden.template tensor3<double>("key_view_len" + n),
                                        0, kRtol<T>))
        << "len " << len;
    EXPECT_TRUE(relpos::test::all_close(enc.value_view(len).materialize(),
                                        this->golden.template tensor3<double>("value_view_len" + n),
                                        0, kRtol<T>))
        << "len " << len;
  }
}

TYPED_TEST(LearnedTest, HooksReturnTheTableRowsWithoutCopying) {
  using T = TypeParam;
  const auto enc = this->make();
  EXPECT_TRUE(enc.uses_keys());
  EXPECT_TRUE(enc.uses_values());
  const auto all = enc.key_rows(-3, 3);
  EXPECT_TRUE(relpos::test::all_close(
      all.view(), this->golden.template matrix<double>("relative_key"), 0, kRtol<T>));
  const auto part = enc.value_rows(-1, 2);  // c = −1..2 are rows 2..5
  EXPECT_EQ(part.first, -1);
  EXPECT_EQ(part.count, 4);
  EXPECT_EQ(part.view().data(), enc.value_table().snapshot()->data() + 2 * 5);
  EXPECT_EQ(enc.clamp_distance(-100), -3);
  EXPECT_EQ(enc.clamp_distance(2), 2);
  EXPECT_EQ(enc.clamp_distance(4), 3);
}

TYPED_TEST(LearnedTest, ViewIsToeplitz) {
  const auto view = this->make().key_view(8);
  for (Index i = 0; i + 2 < 8; ++i) {
    for (Index j = 0; j + 2 < 8; ++j) {
      for (Index k = 0; k < 5; ++k) EXPECT_EQ(view(i, j, k), view(i + 2, j + 2, k));
    }
  }
}

TYPED_TEST(LearnedTest, SeededNormalInitIsReproducible) {
  using T = TypeParam;
  const auto a = LearnedRelative<T>::random(64, config(50), 42);
  const auto b = LearnedRelative<T>::random(64, config(50), 42);
  const auto c = LearnedRelative<T>::random(64, config(50), 43);
  const Matrix<T> ka = a.key_rows(-50, 50).view();
  const Matrix<T> va = a.value_rows(-50, 50).view();
  EXPECT_EQ(ka, Matrix<T>(b.key_rows(-50, 50).view()));
  EXPECT_EQ(va, Matrix<T>(b.value_rows(-50, 50).view()));
  EXPECT_NE(ka, Matrix<T>(c.key_rows(-50, 50).view()));
  EXPECT_NE(ka, va);  // the value table continues the stream
  // 6464 draws of N(0, 1): mean within 4.5 sigma/sqrt(n) = 0.056, std within 5%
  const double mean = ka.template cast<double>().mean();
  const double var = (ka.template cast<double>().array() - mean).square().mean();
  EXPECT_NEAR(mean, 0.0, 0.056);
  EXPECT_NEAR(std::sqrt(var), 1.0, 0.05);
  const auto scaled = LearnedRelative<T>::random(64, config(50), 42, 0.02);
  EXPECT_TRUE(relpos::test::all_close(scaled.key_rows(-50, 50).view(), ka * T(0.02), 1e-6));
}

TYPED_TEST(LearnedTest, AFlagThatIsOffHasNoTable) {
  using T = TypeParam;
  const LearnedRelative<T> enc(5, config(3, true, false),
                               this->golden.template matrix<T>("relative_key"), Matrix<T>());
  EXPECT_TRUE(enc.uses_keys());
  EXPECT_FALSE(enc.uses_values());
  const auto r = LearnedRelative<T>::random(4, config(2, false, true), 1);
  EXPECT_FALSE(r.uses_keys());
  EXPECT_EQ(r.value_rows(-2, 2).count, 5);
}

using relpos::test::expect_error;

TEST(LearnedErrors, WrongShapesAndKeysAreNamed) {
  const Matrix<float> ok = Matrix<float>::Zero(9, 16);
  expect_error([&] { LearnedRelative<float>(16, config(4), Matrix<float>::Zero(8, 16), ok); },
               "relative_key: expected [2K+1=9, 16], got [8, 16]");
  expect_error([&] { LearnedRelative<float>(16, config(4), ok, Matrix<float>::Zero(9, 15)); },
               "relative_value: expected [2K+1=9, 16], got [9, 15]");
  LearnedConfig prefixed = config(4);
  prefixed.tensor_prefix = "layers.1.self_attn.";
  expect_error([&] { LearnedRelative<float>(16, prefixed, ok, Matrix<float>::Zero(16, 9)); },
               "layers.1.self_attn.relative_value: expected [2K+1=9, 16], got [16, 9]");
  expect_error([&] { LearnedRelative<float>(16, config(4, false, true), ok, ok); },
               "relative_key: given, but its flag (keys) is false");
  expect_error([&] { LearnedRelative<float>(16, config(4), Matrix<float>(), ok); },
               "relative_key: expected [2K+1=9, 16], got [0, 0]");
  expect_error([] { LearnedRelative<float>::random(16, LearnedConfig{}, 1); },
               "learned: position.max_distance: required key is missing");
  expect_error([] { LearnedRelative<double>::random(0, config(2), 1); },
               "learned: d_head: expected >= 1, got 0");
  expect_error([] { LearnedRelative<float>::random(4, config(2), 1).key_view(-2); },
               "len: expected >= 0, got -2");
}

}  // namespace
