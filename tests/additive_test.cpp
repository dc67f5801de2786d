// Tests for include/relpos/encodings/additive.hpp: x̃_i = x_i + Σ_{|j−i|<=w} r(clamp(j − i))
// against the float64 reference (both sources, clamping, windows 0 / inside / beyond len,
// len 1), the prefix-sum path against a naive loop, and what the formula can encode.
#include <relpos/encodings/additive.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <relpos/detail/sinusoid.hpp>

#include "support/expect_error.hpp"
#include "support/golden.hpp"

namespace {

using relpos::Additive;
using relpos::AdditiveConfig;
using relpos::AdditiveSource;
using relpos::Index;
using relpos::Matrix;
using relpos::Positions;

// Sums of up to 2w + 1 ≤ 19 rows in [−1, 1] (or N(0, 1) rows), accumulated in double and
// cast once, plus x: a few float roundings of values below ~20.
template <class T>
constexpr double kAdditiveTol = std::is_same_v<T, float> ? 4e-6 : 1e-13;

AdditiveConfig sinusoidal(Index w, std::optional<Index> k = {}, double base = 10000) {
  AdditiveConfig c;
  c.window = w;
  c.max_distance = k;
  c.base = base;
  return c;
}
AdditiveConfig learned(Index w, Index k) {
  AdditiveConfig c;
  c.source = AdditiveSource::learned;
  c.window = w;
  c.max_distance = k;
  return c;
}

template <class T>
class AdditiveTest : public ::testing::Test {
 protected:
  relpos::io::SafetensorsFile golden = relpos::test::golden_file("encodings/additive.safetensors");
  Matrix<double> expected(const std::string& name) const {
    return golden.template matrix<double>(name);
  }
  Matrix<T> input(const std::string& name) const { return golden.template matrix<T>(name); }
  ::testing::AssertionResult check(const Additive<T>& enc, Matrix<T> x, const std::string& name) {
    enc.add_to_input(x, Positions{x.rows()});
    return relpos::test::all_close(x, expected(name), kAdditiveTol<T>);
  }
};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(AdditiveTest, Scalars);

TYPED_TEST(AdditiveTest, SinusoidalSourceMatchesTheReference) {
  using T = TypeParam;
  const Matrix<T> x = this->input("x");  // (9, 6)
  EXPECT_TRUE(this->check(Additive<T>(6, sinusoidal(0)), x, "sin_w0"));
  EXPECT_TRUE(this->check(Additive<T>(6, sinusoidal(2)), x, "sin_w2"));
  EXPECT_TRUE(this->check(Additive<T>(6, sinusoidal(20)), x, "sin_w20"));  // window > len
  EXPECT_TRUE(this->check(Additive<T>(6, sinusoidal(3, 1)), x, "sin_w3_K1"));
  EXPECT_TRUE(this->check(Additive<T>(6, sinusoidal(2, {}, 100)), x, "sin_w2_base100"));
  EXPECT_TRUE(this->check(Additive<T>(6, sinusoidal(2)), this->input("x1"), "len1_sin_w2"));
}

TYPED_TEST(AdditiveTest, LearnedSourceMatchesTheReference) {
  using T = TypeParam;
  const Matrix<T> x = this->input("x");
  const Matrix<T> weight = this->input("weight");  // position.weight, K 2
  EXPECT_TRUE(this->check(Additive<T>(6, learned(3, 2), weight), x, "learned_w3_K2"));
  EXPECT_TRUE(this->check(Additive<T>(6, learned(1, 2), weight), x, "learned_w1_K2"));
  EXPECT_TRUE(this->check(Additive<T>(6, learned(3, 2), weight), Matrix<T>(x.topRows(8)),
                          "learned_w3_K2_len8"));
}

// The prefix-sum path (O(len·d) whatever w) against the literal double loop of the formula.
TYPED_TEST(AdditiveTest, PrefixSumsEqualTheNaiveWindowLoop) {
  using T = TypeParam;
  const Index len = 120, d = 8;
  for (const Index w : {0, 1, 17, 119, 500}) {
    for (const std::optional<Index> k : {std::optional<Index>{}, std::optional<Index>{5}}) {
      const Additive<T> enc(d, sinusoidal(w, k));
      const auto omega = relpos::detail::sinusoid_frequencies(d, 10000.0);
      Matrix<double> naive = Matrix<double>::Zero(len, d);
      std::vector<double> row(static_cast<std::size_t>(d));
      for (Index i = 0; i < len; ++i) {
        for (Index j = 0; j < len; ++j) {
          if (std::abs(j - i) > w) continue;
          const Index c = k ? std::clamp<Index>(j - i, -*k, *k) : j - i;
          relpos::detail::sinusoid_row(c, omega, row.data());
          for (Index m = 0; m < d; ++m) naive(i, m) += row[static_cast<std::size_t>(m)];
        }
      }
      EXPECT_TRUE(relpos::test::all_close(enc.encoding(len), naive,
                                          std::is_same_v<T, float> ? 2e-5 : 1e-11))
          << "window " << w << (k ? " clamped" : "");
    }
  }
}

// What the formula cannot encode: with a symmetric window, every interior token
// (w <= i <= len−1−w) gets the same vector; with the sinusoidal source its sines cancel
// and its cosines are the Dirichlet kernel 1 + 2·Σ_{δ=1}^{w} cos(δ·ω_m).
TYPED_TEST(AdditiveTest, InteriorTokensAreIndistinguishable) {
  using T = TypeParam;
  const Index len = 40, w = 5, d = 8;
  const Matrix<T> e = Additive<T>(d, sinusoidal(w)).encoding(len);
  const auto omega = relpos::detail::sinusoid_frequencies(d, 10000.0);
  for (Index i = w; i <= len - 1 - w; ++i) {
    for (Index m = 0; m < d / 2; ++m) {
      double dirichlet = 1;
      for (Index delta = 1; delta <= w; ++delta) {
        dirichlet += 2 * std::cos(static_cast<double>(delta) * omega[static_cast<std::size_t>(m)]);
      }
      EXPECT_NEAR(e(i, 2 * m), 0.0, kAdditiveTol<T>) << "i " << i << " m " << m;
      EXPECT_NEAR(e(i, 2 * m + 1), dirichlet, kAdditiveTol<T>) << "i " << i << " m " << m;
    }
  }
  // within w of an edge the window is cut, and each position differs from the interior
  for (Index i = 0; i < w; ++i) {
    EXPECT_GT((e.row(i) - e.row(w)).norm(), 1e-3) << i;
    EXPECT_GT((e.row(len - 1 - i) - e.row(w)).norm(), 1e-3) << len - 1 - i;
  }
  // the learned source: the interior vector is the sum of the 2w + 1 clamped rows
  std::mt19937_64 gen(9);
  const Matrix<T> weight = relpos::detail::normal_matrix<T>(7, d, gen, 1.0);  // K 3
  const Matrix<T> el = Additive<T>(d, learned(w, 3), weight).encoding(len);
  Matrix<double> interior = Matrix<double>::Zero(1, d);
  for (Index delta = -w; delta <= w; ++delta) {
    interior += weight.row(std::clamp<Index>(delta, -3, 3) + 3).template cast<double>();
  }
  for (Index i = w; i <= len - 1 - w; ++i) {
    EXPECT_TRUE(relpos::test::all_close(el.row(i), interior, kAdditiveTol<T>)) << i;
  }
}

// What it can: a window that covers the whole sequence gives every token its own vector.
TYPED_TEST(AdditiveTest, AWindowOverTheWholeSequenceSeparatesEveryPosition) {
  using T = TypeParam;
  const Index len = 12;
  const Matrix<T> e = Additive<T>(8, sinusoidal(len - 1)).encoding(len);
  for (Index i = 0; i < len; ++i) {
    for (Index j = i + 1; j < len; ++j) EXPECT_GT((e.row(i) - e.row(j)).norm(), 1e-3) << i << j;
  }
}

using relpos::test::expect_error;

TEST(AdditiveErrors, BadConfigurationsAndInputsAreNamed) {
  expect_error([] { Additive<float>(6, AdditiveConfig{}); },
               "additive: position.window: required key is missing");
  expect_error(
      [] { Additive<float>(7, sinusoidal(2)); },
      "additive: position.type: the sinusoidal additive source needs an even d_model, got 7");
  expect_error([] { Additive<float>(6, sinusoidal(2, -1)); },
               "additive: position.max_distance: must be >= 0, got -1");
  expect_error([] { Additive<float>(6, sinusoidal(2, {}, 0)); },
               "additive: position.base: must be > 0, got 0.0");
  expect_error([] { Additive<float>(6, learned(2, 2)); },
               "additive: position.source: the learned source needs position.weight");
  expect_error([] { Additive<float>(6, sinusoidal(2), Matrix<float>::Zero(5, 6)); },
               "additive: position.source: position.weight given, but the source is sinusoidal");
  AdditiveConfig no_k = learned(2, 0);
  no_k.max_distance.reset();
  expect_error([&] { Additive<float>(6, no_k, Matrix<float>::Zero(5, 6)); },
               "additive: position.max_distance: required with the learned source");
  expect_error([] { Additive<float>(6, learned(2, 2), Matrix<float>::Zero(4, 6)); },
               "position.weight: expected [2K+1=5, 6], got [4, 6]");
  const Additive<float> enc(6, sinusoidal(2));
  Matrix<float> x = Matrix<float>::Zero(3, 6);
  const std::int64_t ids[3] = {0, 1, 2};
  expect_error(
      [&] {
        enc.add_to_input(x, Positions{3, ids});
      },
      "additive: position ids: not supported");
  expect_error([&] { enc.add_to_input(x, Positions{2}); },
               "additive: positions: expected len 3 (the input's rows), got 2");
  Matrix<float> narrow = Matrix<float>::Zero(3, 4);
  expect_error([&] { enc.add_to_input(narrow, Positions{3}); },
               "additive: input: expected 6 columns (d_model), got 4");
  expect_error([&] { enc.encoding(-1); }, "additive: len: expected >= 0, got -1");
}

}  // namespace
