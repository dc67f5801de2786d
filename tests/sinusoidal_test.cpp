// Tests for include/relpos/encodings/sinusoidal.hpp: the relative sinusoid s(c) against the
// float64 PyTorch reference (tools/golden_encodings.py), interleaved sin/cos, distance key
// minus query, clamping, far distances in float, the flags, and bad configurations.
#include <relpos/encodings/sinusoidal.hpp>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/expect_error.hpp"
#include "support/golden.hpp"

namespace {

using relpos::Index;
using relpos::Matrix;
using relpos::SinusoidalConfig;
using relpos::SinusoidalRelative;

// A float row is the double sinusoid cast once: within half an ulp of 1 (6e-8).
template <class T>
constexpr double kTableTol = std::is_same_v<T, float> ? 1e-7 : 1e-14;

template <class T>
class SinusoidalTest : public ::testing::Test {
 protected:
  relpos::io::SafetensorsFile golden =
      relpos::test::golden_file("encodings/sinusoidal.safetensors");
};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(SinusoidalTest, Scalars);

TYPED_TEST(SinusoidalTest, KeyRowsAreTheInterleavedSinusoid) {
  using T = TypeParam;
  const SinusoidalRelative<T> d8(8);
  EXPECT_TRUE(relpos::test::all_close(
      d8.key_rows(-20, 20).view(), this->golden.template matrix<double>("table_d8"), kTableTol<T>));
  SinusoidalConfig c;
  c.base = 100;
  const SinusoidalRelative<T> d6(6, c);
  EXPECT_TRUE(relpos::test::all_close(d6.key_rows(-7, 7).view(),
                                      this->golden.template matrix<double>("table_d6_base100"),
                                      kTableTol<T>));
  // the convention, in two numbers: s(c)[0] = sin(c), s(c)[1] = cos(c) (ω_0 = 1)
  const auto one = d8.key_rows(1, 1).view();
  EXPECT_NEAR(one(0, 0), std::sin(1.0), kTableTol<T>);
  EXPECT_NEAR(one(0, 1), std::cos(1.0), kTableTol<T>);
}

TYPED_TEST(SinusoidalTest, ViewsMatchTheReferenceWithAndWithoutClamping) {
  using T = TypeParam;
  const SinusoidalRelative<T> plain(4);
  EXPECT_TRUE(relpos::test::all_close(plain.key_view(5).materialize(),
                                      this->golden.template tensor3<double>("view_len5_d4"),
                                      kTableTol<T>));
  EXPECT_TRUE(relpos::test::all_close(plain.key_view(1).materialize(),
                                      this->golden.template tensor3<double>("view_len1_d4"),
                                      kTableTol<T>));
  SinusoidalConfig c;
  c.max_distance = 3;
  const SinusoidalRelative<T> k3(4, c);
  EXPECT_TRUE(relpos::test::all_close(k3.key_view(7).materialize(),
                                      this->golden.template tensor3<double>("view_len7_d4_K3"),
                                      kTableTol<T>));
  c.max_distance = 0;
  const SinusoidalRelative<T> k0(4, c);
  EXPECT_TRUE(relpos::test::all_close(k0.key_view(6).materialize(),
                                      this->golden.template tensor3<double>("view_len6_d4_K0"),
                                      kTableTol<T>));
  // the view's per-query slices give the same numbers as the dense copy
  const auto golden = this->golden.template tensor3<double>("view_len7_d4_K3");
  const auto view = k3.key_view(7);
  for (Index i = 0; i < 7; ++i) {
    for (Index j = 0; j < 7; ++j) {
      for (Index k = 0; k < 4; ++k) {
        EXPECT_NEAR(view.query_slice(i)(j, k), golden(i, j, k), kTableTol<T>);
      }
    }
  }
}

// Angles in double, then cast: at |c| ~ 10^6 a float row still matches the float64
// sinusoid to 1e-7 (a float angle would be off by up to ~0.03 there).
TYPED_TEST(SinusoidalTest, FarDistancesMatchFloat64) {
  using T = TypeParam;
  const auto distances = this->golden.template values<std::int64_t>("far_distances");
  const Matrix<double> expected = this->golden.template matrix<double>("far_d4");
  const SinusoidalRelative<T> enc(4);
  // one request for the whole span: a single build of 2·10^6 + 1 rows
  const auto all = enc.key_rows(-1000000, 1000000);
  Matrix<T> got(static_cast<Index>(distances.size()), 4);
  for (std::size_t r = 0; r < distances.size(); ++r) {
    got.row(static_cast<Index>(r)) = all.view().row(distances[r] - all.first);
  }
  EXPECT_TRUE(relpos::test::all_close(got, expected, kTableTol<T>));
}

// d 64 at |c| ~ 10^6 is beyond what the cache keeps (2^25 scalars): the rows are computed
// for the request, in double as well, and nothing is cached.
TYPED_TEST(SinusoidalTest, FarDistancesBeyondTheCacheAreComputedNotCached) {
  using T = TypeParam;
  const auto distances = this->golden.template values<std::int64_t>("far_distances");
  const SinusoidalRelative<T> enc(64);
  Matrix<T> got(static_cast<Index>(distances.size()), 64);
  for (std::size_t r = 0; r < distances.size(); ++r) {
    const auto c = static_cast<Index>(distances[r]);
    got.row(static_cast<Index>(r)) = enc.key_rows(c, c).view();
  }
  EXPECT_TRUE(
      relpos::test::all_close(got, this->golden.template matrix<double>("far_d64"), kTableTol<T>));
  EXPECT_EQ(enc.key_table().cached_length(), 0);
}

TYPED_TEST(SinusoidalTest, FlagsSelectTheHooksAndBothShareOneTable) {
  using T = TypeParam;
  const SinusoidalRelative<T> keys_only(4);
  EXPECT_TRUE(keys_only.uses_keys());
  EXPECT_FALSE(keys_only.uses_values());
  SinusoidalConfig c;
  c.keys = false;
  c.values = true;
  c.max_distance = 2;
  const SinusoidalRelative<T> values_only(4, c);
  EXPECT_FALSE(values_only.uses_keys());
  EXPECT_TRUE(values_only.uses_values());
  EXPECT_EQ(values_only.clamp_distance(-5), -2);
  EXPECT_EQ(values_only.clamp_distance(1), 1);
  EXPECT_EQ(keys_only.clamp_distance(-123456), -123456);
  c.keys = true;
  const SinusoidalRelative<T> both(4, c);
  EXPECT_EQ(Matrix<T>(both.key_rows(-2, 2).view()), Matrix<T>(both.value_rows(-2, 2).view()));
  EXPECT_EQ(Matrix<T>(both.value_rows(-2, 2).view()), Matrix<T>(keys_only.key_rows(-2, 2).view()));
}

TYPED_TEST(SinusoidalTest, ViewIsToeplitz) {
  using T = TypeParam;
  SinusoidalConfig c;
  c.max_distance = 2;
  const auto view = SinusoidalRelative<T>(6, c).key_view(9);
  for (Index s : {1, 3}) {
    for (Index i = 0; i + s < 9; ++i) {
      for (Index j = 0; j + s < 9; ++j) {
        for (Index k = 0; k < 6; ++k) EXPECT_EQ(view(i, j, k), view(i + s, j + s, k));
      }
    }
  }
}

using relpos::test::expect_error;

TEST(SinusoidalErrors, BadConfigurationsNameTheirKey) {
  expect_error([] { SinusoidalRelative<float>(5); },
               "sinusoidal: position.type: sinusoidal needs an even d_head, got 5");
  expect_error([] { SinusoidalRelative<float>(0); }, "sinusoidal: d_head: expected >= 1, got 0");
  SinusoidalConfig c;
  c.base = 0;
  expect_error([&] { SinusoidalRelative<float>(4, c); },
               "sinusoidal: position.base: must be > 0, got 0.0");
  c.base = -2.5;
  expect_error([&] { SinusoidalRelative<double>(4, c); }, "got -2.5");
  c.base = 10000;
  c.max_distance = -1;
  expect_error([&] { SinusoidalRelative<float>(4, c); },
               "sinusoidal: position.max_distance: must be >= 0, got -1");
  expect_error([] { SinusoidalRelative<float>(4).key_view(-3); }, "len: expected >= 0, got -3");
}

}  // namespace
