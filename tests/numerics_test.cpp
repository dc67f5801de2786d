// SPDX-License-Identifier: MIT
// Numerics at the edges (issue 7): float softmax with logits near ±1e4, fully masked rows,
// rotary and sinusoidal tables far out (positions up to 10^6) against a long-double
// reference, and LayerNorm of a constant row. References are computed here in long double
// from the formulas of spec §2–4, independently of the library's double path.
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

#include <gtest/gtest.h>

#include <relpos/core.hpp>
#include <relpos/detail/softmax.hpp>
#include <relpos/encodings/rotary.hpp>
#include <relpos/encodings/sinusoidal.hpp>
#include <relpos/layer_norm.hpp>

namespace {

using relpos::Index;
using relpos::Matrix;

// softmax of one row in long double, max-subtracted; masked entries (mask[j]) get 0
std::vector<long double> softmax_reference(const std::vector<long double>& x,
                                           const std::vector<bool>& mask) {
  long double max = -std::numeric_limits<long double>::infinity();
  for (std::size_t j = 0; j < x.size(); ++j)
    if (!mask[j]) max = std::max(max, x[j]);
  std::vector<long double> out(x.size(), 0.0L);
  long double sum = 0;
  for (std::size_t j = 0; j < x.size(); ++j) {
    if (!mask[j]) sum += (out[j] = std::exp(x[j] - max));
  }
  for (long double& v : out) v /= sum;
  return out;
}

TEST(NumericsSoftmax, FloatLogitsNearPlusMinus1e4StayFiniteAndCorrect) {
  // rows of logits at ±1e4 with O(1) spreads (exp(1e4) overflows any float type), one row
  // spanning the whole range, one all equal; float spacing at 1e4 is 2^-10, so the inputs are
  // exact floats and the reference sees the same numbers
  const std::vector<std::vector<float>> rows = {
      {1e4f, 1e4f - 1, 1e4f - 2.5f, 1e4f - 30, 1e4f + 0.5f},
      {-1e4f, -1e4f - 1, -1e4f + 3, -1e4f - 0.25f, -1e4f},
      {1e4f, -1e4f, 0, 1e4f - 1, -1e4f + 1},
      {-1e4f, -1e4f, -1e4f, -1e4f, -1e4f},
  };
  Matrix<float> s(Index(rows.size()), 5);
  for (Index i = 0; i < s.rows(); ++i)
    for (Index j = 0; j < 5; ++j) s(i, j) = rows[std::size_t(i)][std::size_t(j)];
  relpos::detail::masked_softmax_rows(s, false, nullptr);
  for (Index i = 0; i < s.rows(); ++i) {
    std::vector<long double> x(rows[std::size_t(i)].begin(), rows[std::size_t(i)].end());
    const std::vector<long double> ref = softmax_reference(x, std::vector<bool>(5, false));
    for (Index j = 0; j < 5; ++j) {
      ASSERT_TRUE(std::isfinite(s(i, j))) << "row " << i << " col " << j;
      EXPECT_NEAR(s(i, j), double(ref[std::size_t(j)]), 1e-6) << "row " << i << " col " << j;
    }
    EXPECT_NEAR(s.row(i).sum(), 1.0f, 1e-6f) << "row " << i;
  }
}

TEST(NumericsSoftmax, FullyMaskedRowIsZeroNotNaN) {
  // padded keys: every key of row 0 hidden; causal + padding: row 0 sees only key 0, padded
  const Matrix<float> s{{1e4f, -1e4f, 3, 0}, {1, 2, 3, 4}, {-1e4f, 5, 5, 1e4f}};
  const bool all_padded[4] = {true, true, true, true};
  Matrix<float> a = s;
  relpos::detail::masked_softmax_rows(a, false, all_padded);
  EXPECT_TRUE((a.array() == 0.0f).all()) << a;

  const bool first_padded[4] = {true, false, false, false};
  Matrix<float> c = s;
  relpos::detail::masked_softmax_rows(c, true, first_padded);
  EXPECT_TRUE((c.row(0).array() == 0.0f).all()) << c;  // its only visible key is padded
  for (Index i = 1; i < 3; ++i) {
    std::vector<long double> x(s.row(i).data(), s.row(i).data() + 4);
    std::vector<bool> mask = {true, false, false, false};
    for (Index j = i + 1; j < 4; ++j) mask[std::size_t(j)] = true;  // causal: j <= i
    const std::vector<long double> ref = softmax_reference(x, mask);
    for (Index j = 0; j < 4; ++j) EXPECT_NEAR(c(i, j), double(ref[std::size_t(j)]), 1e-6);
  }
}

// Spec §4: ω_m = base^(−2m/d), s(c)[2m] = sin(c·ω_m), s(c)[2m+1] = cos(c·ω_m).
TEST(NumericsTables, SinusoidalRowsAtDistance1e6MatchLongDouble) {
  const Index d = 8;
  const relpos::SinusoidalRelative<float> enc(d, {10000.0, std::nullopt, true, false});
  // the far ends of a 10^6-token sequence, and a few distances just inside them
  for (const std::int64_t lo : {std::int64_t(-1000000), std::int64_t(999990)}) {
    const std::int64_t hi = lo + 10;
    const relpos::DistanceRows<float> rows = enc.key_rows(lo, hi);
    const auto view = rows.view();
    ASSERT_EQ(view.rows(), hi - lo + 1);
    double worst = 0;
    for (std::int64_t c = lo; c <= hi; ++c) {
      for (Index m = 0; m < d / 2; ++m) {
        const long double w = std::pow(10000.0L, -2.0L * m / d);
        const long double angle = static_cast<long double>(c) * w;
        worst = std::max({worst, std::abs(double(view(c - lo, 2 * m)) - double(std::sin(angle))),
                          std::abs(double(view(c - lo, 2 * m + 1)) - double(std::cos(angle)))});
      }
    }
    EXPECT_LE(worst, 1e-6) << "distances [" << lo << ", " << hi << "]";
  }
}

// Spec §4 rotary: θ = p·base^(−2m/r); a unit vector (1 at m, 0 at its partner) rotates to
// (cos θ, sin θ), so the rotated values are the table's entries.
TEST(NumericsTables, RotaryAtPosition1e6MatchesLongDouble) {
  const Index d_head = 8, half = d_head / 2;
  const relpos::Rotary<float> rope(d_head, {10000.0, std::nullopt, false});
  const std::vector<std::int64_t> ids = {0, 1, 999999, 1000000};
  const relpos::Positions positions{Index(ids.size()), ids.data()};
  double worst = 0;
  for (Index m = 0; m < half; ++m) {
    Matrix<float> x = Matrix<float>::Zero(Index(ids.size()), d_head);
    x.col(m).setOnes();  // pairs (x[m], x[m + r/2]) in the half layout
    rope.rotate(x, positions);
    for (Index i = 0; i < x.rows(); ++i) {
      const long double theta =
          static_cast<long double>(ids[std::size_t(i)]) * std::pow(10000.0L, -2.0L * m / d_head);
      worst = std::max({worst, std::abs(double(x(i, m)) - double(std::cos(theta))),
                        std::abs(double(x(i, m + half)) - double(std::sin(theta)))});
    }
  }
  EXPECT_LE(worst, 1e-6);
}

TEST(NumericsLayerNorm, ConstantRowDoesNotDivideByZero) {
  // variance 0: the output is exactly β (x − mean = 0), never NaN from 0/0
  const Index d = 16;
  relpos::LayerNorm<float> norm(d, 1e-5);
  for (Index k = 0; k < d; ++k) {
    norm.weight(k) = 0.5f + 0.1f * float(k);
    norm.bias(k) = -0.25f * float(k);
  }
  Matrix<float> x(4, d);
  x.row(0).setConstant(0.0f);
  x.row(1).setConstant(1e4f);
  x.row(2).setConstant(-3.0f);
  x.row(3).setConstant(0.1f);  // not exact in binary: its mean may be off by one rounding
  Matrix<float> y(4, d);
  norm.forward(x, y);
  ASSERT_TRUE(y.allFinite()) << y;
  for (Index i = 0; i < 3; ++i) {
    EXPECT_EQ(y.row(i), norm.bias.transpose()) << "row " << i;  // exact: x − mean is 0
  }
  // row 3: |x − mean| <= a few ulps of 0.1 (~1e-8), times 1/sqrt(eps) = 316 and γ <= 2
  EXPECT_LE((y.row(3) - norm.bias.transpose()).cwiseAbs().maxCoeff(), 1e-4f);
  // the same with the smallest eps a config may give
  relpos::LayerNorm<double> tiny(d, std::numeric_limits<double>::denorm_min());
  Matrix<double> xd = Matrix<double>::Constant(1, d, 7.0), yd(1, d);
  tiny.forward(xd, yd);
  EXPECT_TRUE(yd.allFinite()) << yd;
}

}  // namespace
