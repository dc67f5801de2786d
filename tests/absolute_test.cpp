// Tests for include/relpos/encodings/absolute.hpp: x_i += PE(p_i) with interleaved sin/cos,
// against the float64 reference, with ids, offsets, len 1 and positions near 10^6.
#include <relpos/encodings/absolute.hpp>

#include <cstdint>
#include <functional>
#include <string>

#include <gtest/gtest.h>

#include "support/expect_error.hpp"
#include "support/golden.hpp"

namespace {

using relpos::AbsoluteConfig;
using relpos::AbsoluteSinusoidal;
using relpos::Index;
using relpos::Matrix;
using relpos::Positions;

// x (|x| < ~4) plus a sinusoid in [−1, 1]: one float rounding of each and of the sum.
template <class T>
constexpr double kAbsoluteTol = std::is_same_v<T, float> ? 1e-6 : 1e-14;

template <class T>
class AbsoluteTest : public ::testing::Test {
 protected:
  relpos::io::SafetensorsFile golden = relpos::test::golden_file("encodings/absolute.safetensors");
  Matrix<double> expected(const std::string& name) const {
    return golden.template matrix<double>(name);
  }
  Matrix<T> input(const std::string& name) const { return golden.template matrix<T>(name); }
};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(AbsoluteTest, Scalars);

TYPED_TEST(AbsoluteTest, AddsThePositionEncodingOfEachToken) {
  using T = TypeParam;
  Matrix<T> x = this->input("x");
  AbsoluteSinusoidal<T>(6).add_to_input(x, Positions{7});
  EXPECT_TRUE(relpos::test::all_close(x, this->expected("plain"), kAbsoluteTol<T>));
  AbsoluteConfig c;
  c.base = 100;
  x = this->input("x");
  AbsoluteSinusoidal<T>(6, c).add_to_input(x, Positions{7});
  EXPECT_TRUE(relpos::test::all_close(x, this->expected("plain_base100"), kAbsoluteTol<T>));
  Matrix<T> one = this->input("x1");
  AbsoluteSinusoidal<T>(6).add_to_input(one, Positions{1});
  EXPECT_TRUE(relpos::test::all_close(one, this->expected("len1"), kAbsoluteTol<T>));
  // the convention: PE(p)[0] = sin(p), PE(p)[1] = cos(p) (ω_0 = 1)
  Matrix<T> zero = Matrix<T>::Zero(3, 4);
  AbsoluteSinusoidal<T>(4).add_to_input(zero, Positions{3});
  EXPECT_NEAR(zero(2, 0), std::sin(2.0), kAbsoluteTol<T>);
  EXPECT_NEAR(zero(2, 1), std::cos(2.0), kAbsoluteTol<T>);
}

TYPED_TEST(AbsoluteTest, ExplicitIdsAndOffset) {
  using T = TypeParam;
  const auto ids = this->golden.template values<std::int64_t>("ids");
  const AbsoluteSinusoidal<T> pe(6);
  Matrix<T> x = this->input("x");
  pe.add_to_input(x, Positions{7, ids.data()});
  EXPECT_TRUE(relpos::test::all_close(x, this->expected("with_ids"), kAbsoluteTol<T>));
  EXPECT_EQ(pe.cached_positions(), 31);  // the largest id is 30
  x = this->input("x");
  pe.add_to_input(x, Positions{7}, 3);
  EXPECT_TRUE(relpos::test::all_close(x, this->expected("offset3"), kAbsoluteTol<T>));
  EXPECT_EQ(pe.cached_positions(), 31);  // positions 3..9 reuse the cache
}

TYPED_TEST(AbsoluteTest, PositionsNearAMillionMatchFloat64) {
  using T = TypeParam;
  const auto far = this->golden.template values<std::int64_t>("far_ids");
  Matrix<T> x = Matrix<T>::Zero(2, 8);
  const AbsoluteSinusoidal<T> pe8(8);
  pe8.add_to_input(x, Positions{2, far.data()});
  EXPECT_TRUE(relpos::test::all_close(x, this->expected("far_pe_d8"),
                                      std::is_same_v<T, float> ? 1e-7 : 1e-12));
  // two far tokens: rows computed for the call, no table of a million positions
  EXPECT_EQ(pe8.cached_positions(), 0);
  // d_model 64: positions past 2^25 / 64 are computed per token, not cached
  Matrix<T> wide = Matrix<T>::Zero(2, 64);
  const AbsoluteSinusoidal<T> pe64(64);
  pe64.add_to_input(wide, Positions{2, far.data()});
  EXPECT_TRUE(relpos::test::all_close(wide, this->expected("far_pe_d64"),
                                      std::is_same_v<T, float> ? 1e-7 : 1e-12));
  EXPECT_EQ(pe64.cached_positions(), 0);
}

using relpos::test::expect_error;

TEST(AbsoluteErrors, BadConfigurationsAndInputsAreNamed) {
  expect_error([] { AbsoluteSinusoidal<float>(7); },
               "absolute: position.type: absolute needs an even d_model, got 7");
  AbsoluteConfig c;
  c.base = -1;
  expect_error([&] { AbsoluteSinusoidal<double>(8, c); },
               "absolute: position.base: must be > 0, got -1.0");
  const AbsoluteSinusoidal<float> pe(8);
  Matrix<float> x = Matrix<float>::Zero(2, 6);
  expect_error([&] { pe.add_to_input(x, Positions{2}); },
               "absolute: input: expected 8 columns (d_model), got 6");
  Matrix<float> y = Matrix<float>::Zero(2, 8);
  const std::int64_t ids[2] = {3, -1};
  expect_error(
      [&] {
        pe.add_to_input(y, Positions{2, ids});
      },
      "absolute: positions: expected >= 0, got -1 at index 1");
  expect_error([&] { pe.add_to_input(y, Positions{5}); },
               "absolute: positions: expected len 2 (the input's rows), got 5");
}

}  // namespace
