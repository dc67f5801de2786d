// Tests for include/relpos/encodings/rotary.hpp: both pair layouts, partial rotary, base,
// explicit ids and offsets against the float64 reference; positions up to 10^6 in float;
// q_i · k_j depending only on j − i; strided blocks; threads; bad configurations.
#include <relpos/encodings/rotary.hpp>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "support/expect_error.hpp"
#include "support/golden.hpp"

namespace {

using relpos::Index;
using relpos::Matrix;
using relpos::Positions;
using relpos::Rotary;
using relpos::RotaryConfig;

// Outputs a·cosθ − b·sinθ of inputs |a|, |b| < ~4: float carries a few roundings of 6e-8·4.
template <class T>
constexpr double kRotaryTol = std::is_same_v<T, float> ? 2e-6 : 1e-13;

RotaryConfig cfg(Index r, bool interleaved, double base = 10000) {
  RotaryConfig c;
  c.rotary_dim = r;
  c.interleaved = interleaved;
  c.base = base;
  return c;
}

template <class T>
Matrix<T> random_matrix(Index rows, Index cols, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal;
  Matrix<T> m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<T>(normal(gen));
  return m;
}

template <class T>
class RotaryTest : public ::testing::Test {
 protected:
  relpos::io::SafetensorsFile golden = relpos::test::golden_file("encodings/rotary.safetensors");
  Matrix<double> expected(const std::string& name) const {
    return golden.template matrix<double>(name);
  }
  Matrix<T> input(const std::string& name) const { return golden.template matrix<T>(name); }
};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(RotaryTest, Scalars);

TYPED_TEST(RotaryTest, BothLayoutsFullPartialAndBaseMatchTheReference) {
  using T = TypeParam;
  const Positions plain{7};
  for (const bool inter : {false, true}) {
    const std::string layout = inter ? "interleaved" : "half";
    struct Case {
      Index r;
      double base;
      std::string suffix;
    };
    for (const Case& c :
         {Case{8, 10000, "_r8"}, Case{4, 10000, "_r4"}, Case{6, 500, "_r6_base500"}}) {
      Matrix<T> x = this->input("x");  // (7, 2 heads · 8)
      Rotary<T>(8, cfg(c.r, inter, c.base)).rotate(x, plain, 2);
      EXPECT_TRUE(relpos::test::all_close(x, this->expected(layout + c.suffix), kRotaryTol<T>))
          << layout << c.suffix;
    }
  }
}

// Wide heads: the interleaved loop spreads the table in blocks of 64 pairs, so r/2 = 128 and
// 85 (64 + 21) cross a block boundary; the half loop runs the same shapes. Reference: the
// formula in float64, straight from the definition (θ = p · base^(−2m/r)).
TYPED_TEST(RotaryTest, WideHeadsMatchTheFormulaInBothLayouts) {
  using T = TypeParam;
  const Index len = 9, n_heads = 3;
  for (const bool inter : {false, true}) {
    for (const auto& [d_head, r] : {std::pair<Index, Index>{256, 256}, {200, 170}}) {
      const Matrix<T> x0 = random_matrix<T>(len, n_heads * d_head, 18);  // (len, heads · d_head)
      Matrix<T> x = x0;
      Rotary<T>(d_head, cfg(r, inter, 500)).rotate(x, Positions{len}, n_heads);
      Matrix<double> want = x0.template cast<double>();
      for (Index i = 0; i < len; ++i) {
        for (Index h = 0; h < n_heads; ++h) {
          for (Index m = 0; m < r / 2; ++m) {
            const Index ia = h * d_head + (inter ? 2 * m : m);
            const Index ib = h * d_head + (inter ? 2 * m + 1 : m + r / 2);
            const double theta = static_cast<double>(i) * std::pow(500.0, -2.0 * m / r);
            const double a = x0(i, ia), b = x0(i, ib);
            want(i, ia) = a * std::cos(theta) - b * std::sin(theta);
            want(i, ib) = a * std::sin(theta) + b * std::cos(theta);
          }
        }
      }
      EXPECT_TRUE(relpos::test::all_close(x, want, kRotaryTol<T>))
          << (inter ? "interleaved" : "half") << " d_head " << d_head << " r " << r;
    }
  }
}

TYPED_TEST(RotaryTest, TransformQkRotatesQAndKAlike) {
  using T = TypeParam;
  Matrix<T> q = this->input("x");
  Matrix<T> k = this->input("x");
  Rotary<T>(8).transform_qk(q, k, Positions{7}, 2);
  EXPECT_TRUE(relpos::test::all_close(q, this->expected("half_r8"), kRotaryTol<T>));
  EXPECT_EQ(q, k);
}

TYPED_TEST(RotaryTest, ExplicitIdsAndOffsets) {
  using T = TypeParam;
  const auto ids = this->golden.template values<std::int64_t>("ids");
  const Positions p{7, ids.data()};
  Matrix<T> x = this->input("x");
  Rotary<T>(8).rotate(x, p, 2);
  EXPECT_TRUE(relpos::test::all_close(x, this->expected("half_r8_ids"), kRotaryTol<T>));
  x = this->input("x");
  Rotary<T>(8, cfg(4, true)).rotate(x, p, 2);
  EXPECT_TRUE(relpos::test::all_close(x, this->expected("interleaved_r4_ids"), kRotaryTol<T>));
  x = this->input("x");
  Rotary<T>(8).rotate(x, Positions{7}, 2, 10);
  EXPECT_TRUE(relpos::test::all_close(x, this->expected("half_r8_offset10"), kRotaryTol<T>));
  Matrix<T> one = this->input("x1");  // len 1, one head
  Rotary<T>(8).rotate(one, Positions{1}, 1, 5);
  EXPECT_TRUE(relpos::test::all_close(one, this->expected("x1_half_r8_offset5"), kRotaryTol<T>));
}

TYPED_TEST(RotaryTest, OddHeadWithPartialRotaryPassesTheRestThrough) {
  using T = TypeParam;
  for (const bool inter : {false, true}) {
    Matrix<T> x = this->input("x_odd");  // (3, 5), r = 4: column 4 passes through
    Rotary<T>(5, cfg(4, inter)).rotate(x, Positions{3});
    EXPECT_TRUE(relpos::test::all_close(
        x, this->expected(inter ? "odd_interleaved_r4" : "odd_half_r4"), kRotaryTol<T>));
    EXPECT_EQ(x.col(4), this->input("x_odd").col(4));
  }
}

// Unit pairs (a, b) = (1, 0) come out as (cos θ, sin θ) exactly: the cached table itself.
// At positions ~10^6, float must still be within 1e-7 of float64 (angles in double).
TYPED_TEST(RotaryTest, PositionsUpToAMillionMatchFloat64) {
  using T = TypeParam;
  const auto far = this->golden.template values<std::int64_t>("far_ids");
  const Positions p{4, far.data()};
  const double tol = std::is_same_v<T, float> ? 1e-7 : 1e-12;
  Matrix<T> half = this->input("far_unit_half");
  const Rotary<T> neox(8);
  neox.rotate(half, p);
  EXPECT_TRUE(relpos::test::all_close(half, this->expected("far_half_r8"), tol));
  EXPECT_EQ(neox.cached_positions(), 0);  // 4 far tokens: computed, no million-row table
  Matrix<T> inter = this->input("far_unit_interleaved");
  Rotary<T>(8, cfg(8, true)).rotate(inter, p);
  EXPECT_TRUE(relpos::test::all_close(inter, this->expected("far_interleaved_r8"), tol));
  // d_head 64: positions past 2^25 / 64 are computed per token, not cached
  Matrix<T> wide = this->input("far_unit_half_r64");
  const Rotary<T> rope64(64);
  rope64.rotate(wide, p);
  EXPECT_TRUE(relpos::test::all_close(wide, this->expected("far_half_r64"), tol));
  EXPECT_EQ(rope64.cached_positions(), 0);
  // a call mixing a near and a far position caches only the near one
  Matrix<T> mixed = this->input("far_unit_half_r64").topRows(2);
  const std::int64_t near_far[2] = {3, far[3]};
  rope64.rotate(mixed, Positions{2, near_far});
  EXPECT_EQ(rope64.cached_positions(), 4);
  EXPECT_TRUE(relpos::test::all_close(mixed.row(1), this->expected("far_half_r64").row(3), tol));
  Matrix<T> near = this->input("far_unit_half_r64").topRows(1);
  Rotary<T>(64).rotate(near, Positions{1}, 1, 3);
  EXPECT_EQ(Matrix<T>(mixed.row(0)), near);
}

// RoPE's point: after rotation q_i · k_j depends on p_j − p_i only. Shifting every
// position by s leaves every score unchanged, in both layouts, full and partial.
TYPED_TEST(RotaryTest, ScoresDependOnlyOnTheDistance) {
  using T = TypeParam;
  const Matrix<T> q0 = random_matrix<T>(6, 16, 1);
  const Matrix<T> k0 = random_matrix<T>(6, 16, 2);
  for (const bool inter : {false, true}) {
    for (const Index r : {8, 4}) {
      const Rotary<T> rope(16, cfg(r, inter));
      Matrix<T> q = q0, k = k0;
      rope.transform_qk(q, k, Positions{6}, 1);
      const Matrix<T> scores = q * k.transpose();
      for (const std::int64_t s : {1, 37, 4096}) {
        Matrix<T> qs = q0, ks = k0;
        rope.transform_qk(qs, ks, Positions{6}, 1, s);
        EXPECT_TRUE(relpos::test::all_close(qs * ks.transpose(), scores,
                                            std::is_same_v<T, float> ? 2e-5 : 1e-12))
            << "shift " << s << " r " << r << (inter ? " interleaved" : " half");
      }
      EXPECT_FALSE(relpos::test::all_close(scores, q0 * k0.transpose(), 1e-3));  // it did rotate
    }
  }
}

// A column block of a wider matrix (e.g. the q part of q|k|v) is rotated in place,
// through Eigen::Ref's outer stride, and nothing else is touched.
TYPED_TEST(RotaryTest, RotatesAStridedBlockInPlace) {
  using T = TypeParam;
  Matrix<T> qkv = random_matrix<T>(7, 48, 3);
  const Matrix<T> before = qkv;
  Rotary<T>(8).rotate(qkv.middleCols(16, 16), Positions{7}, 2);
  Matrix<T> alone = before.middleCols(16, 16);
  Rotary<T>(8).rotate(alone, Positions{7}, 2);
  EXPECT_EQ(Matrix<T>(qkv.middleCols(16, 16)), alone);
  EXPECT_EQ(Matrix<T>(qkv.leftCols(16)), Matrix<T>(before.leftCols(16)));
  EXPECT_EQ(Matrix<T>(qkv.rightCols(16)), Matrix<T>(before.rightCols(16)));
}

TYPED_TEST(RotaryTest, CacheGrowsToTheLargestPositionAndIsReused) {
  using T = TypeParam;
  const Rotary<T> rope(8);
  EXPECT_EQ(rope.cached_positions(), 0);
  Matrix<T> x = random_matrix<T>(10, 8, 4);
  rope.rotate(x, Positions{10});
  EXPECT_EQ(rope.cached_positions(), 10);
  rope.rotate(x.topRows(4), Positions{4}, 1, 3);  // positions 3..6: the cache is reused
  EXPECT_EQ(rope.cached_positions(), 10);
  rope.rotate(x, Positions{10}, 1, 6);  // position 15: grows to max(16, 2·10)
  EXPECT_EQ(rope.cached_positions(), 20);
}

// A few tokens far out (sparse ids) are rotated from cos/sin computed for the call; the cache
// grows for a sequence's own span. Both give the same values, bit for bit.
TYPED_TEST(RotaryTest, FarPositionsOfAFewTokensAreComputedNotCached) {
  using T = TypeParam;
  const Rotary<T> sparse(8), dense(8);
  const std::int64_t ids[2] = {1, 9000};
  Matrix<T> two = random_matrix<T>(2, 8, 5);
  const Matrix<T> original = two;
  sparse.rotate(two, Positions{2, ids});
  EXPECT_EQ(sparse.cached_positions(), 0);
  Matrix<T> all = Matrix<T>::Zero(9001, 8);
  all.row(1) = original.row(0);
  all.row(9000) = original.row(1);
  dense.rotate(all, Positions{9001});
  EXPECT_GE(dense.cached_positions(), 9001);
  EXPECT_EQ(Matrix<T>(two.row(0)), Matrix<T>(all.row(1)));
  EXPECT_EQ(Matrix<T>(two.row(1)), Matrix<T>(all.row(9000)));
  // plain positions past an offset are a sequence's next tokens (a decoder's step): cached
  Matrix<T> next = original.row(1);
  sparse.rotate(next, Positions{1}, 1, 9000);
  EXPECT_GE(sparse.cached_positions(), 9001);
  EXPECT_EQ(Matrix<T>(next.row(0)), Matrix<T>(all.row(9000)));
}

// Several threads rotate at rising positions while the cos/sin cache grows under them
// (run under ThreadSanitizer by ./dev tsan); each result equals the single-thread one.
TEST(RotaryThread, ConcurrentRotationsWhileTheCacheGrows) {
  const Rotary<float> shared(8);
  constexpr int kThreads = 4;
  std::vector<Matrix<float>> inputs, expected;
  for (int t = 0; t < kThreads; ++t) {
    inputs.push_back(random_matrix<float>(64, 16, 10 + t));
    Matrix<float> e = inputs.back();
    Rotary<float>(8).rotate(e, Positions{64}, 2, 1000 * t);
    expected.push_back(e);
  }
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 20; ++rep) {
        Matrix<float> x = inputs[t];
        shared.rotate(x, Positions{64}, 2, 1000 * t);
        if (x != expected[t]) ++bad;
        Matrix<float> y = inputs[t].topRows(8);
        shared.rotate(y, Positions{8}, 2, 5000 * rep + t);  // keeps growing the cache
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
}

using relpos::test::expect_error;

TEST(RotaryErrors, BadConfigurationsAndInputsAreNamed) {
  expect_error([] { Rotary<float>(8, cfg(10, false)); },
               "rotary: position.rotary_dim: must be <= d_head = 8, got 10");
  expect_error([] { Rotary<float>(8, cfg(3, false)); },
               "rotary: position.rotary_dim: must be even, got 3");
  expect_error([] { Rotary<float>(8, cfg(-2, false)); },
               "rotary: position.rotary_dim: must be >= 2, got -2");
  expect_error(
      [] { Rotary<float>(5); },
      "rotary: position.rotary_dim: must be even, got 5 (rotary_dim defaults to d_head = 5)");
  expect_error([] { Rotary<float>(0); }, "rotary: d_head: expected >= 1, got 0");
  expect_error([] { Rotary<double>(8, cfg(8, false, 0.0)); },
               "rotary: position.base: must be > 0, got 0.0");
  const Rotary<float> rope(8);
  Matrix<float> x = Matrix<float>::Zero(3, 16);
  expect_error([&] { rope.rotate(x, Positions{3}, 3); },
               "rotary: input: expected 3 heads x d_head 8 = 24 columns, got 16");
  expect_error([&] { rope.rotate(x, Positions{4}, 2); },
               "rotary: positions: expected len 3 (the input's rows), got 4");
  const std::int64_t ids[3] = {0, -4, 1};
  expect_error(
      [&] {
        rope.rotate(x, Positions{3, ids}, 2);
      },
      "rotary: positions: expected >= 0, got -4 at index 1");
  expect_error([&] { rope.rotate(x, Positions{3}, 2, -2); },
               "rotary: positions: expected >= 0, got -2 at index 0");
  const std::int64_t huge[3] = {0, 1, std::numeric_limits<std::int64_t>::max()};
  expect_error(
      [&] {
        rope.rotate(x, Positions{3, huge}, 2, 1);
      },
      "rotary: positions: 9223372036854775807 + offset 1 overflows at index 2");
  Matrix<float> k = x;
  expect_error([&] { rope.transform_qk(x, k, Positions{3}, 4); }, "columns, got 16");
}

}  // namespace
