// Tests for include/relpos/distance_table.hpp: the layout (row c + M − 1 holds distance c),
// growth (automatic, doubling, equal to a direct build), reuse without allocation, the
// zero-copy (len × len × d) view with and without clamping, and readers on several threads
// while the cache grows.
#include <relpos/distance_table.hpp>

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <relpos/detail/sinusoid.hpp>

#include "support/golden.hpp"

namespace {

using relpos::DistanceTable;
using relpos::Index;
using relpos::Matrix;

// An exact row: a(c)[k] = 100·c + k, representable in float for |c| < 10^5.
template <class T>
void exact_row(std::int64_t c, T* out, Index d) {
  for (Index k = 0; k < d; ++k) out[k] = static_cast<T>(100 * c + k);
}

template <class T>
DistanceTable<T> exact_table(Index d, std::optional<Index> k = std::nullopt) {
  return DistanceTable<T>(
      d, [d](std::int64_t c, T* out) { exact_row(c, out, d); }, k);
}

template <class T>
DistanceTable<T> sinusoid_table(Index d, std::optional<Index> k = std::nullopt,
                                Index max_cached = relpos::detail::kMaxCachedScalars) {
  return DistanceTable<T>(
      d,
      [omega = relpos::detail::sinusoid_frequencies(d, 10000.0)](std::int64_t c, T* out) {
        relpos::detail::sinusoid_row(c, omega, out);
      },
      k, max_cached);
}

template <class T>
class DistanceTableTest : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(DistanceTableTest, Scalars);

TYPED_TEST(DistanceTableTest, RowOfDistanceCSitsAtCPlusMMinus1) {
  using T = TypeParam;
  const auto table = exact_table<T>(3);
  const auto rows = table.rows(-4, 2);
  EXPECT_EQ(rows.first, -4);
  EXPECT_EQ(rows.count, 7);
  const Index m = table.cached_length();
  ASSERT_EQ(m, 5);  // the first request builds exactly max(|lo|, |hi|) + 1
  EXPECT_EQ(rows.table->rows(), 2 * m - 1);
  for (Index c = -(m - 1); c <= m - 1; ++c) {
    for (Index k = 0; k < 3; ++k) EXPECT_EQ((*rows.table)(c + m - 1, k), T(100 * c + k));
  }
  const auto block = rows.view();
  for (Index r = 0; r < rows.count; ++r) EXPECT_EQ(block(r, 1), T(100 * (r - 4) + 1));
}

TYPED_TEST(DistanceTableTest, ShorterRequestsReuseTheTable) {
  using T = TypeParam;
  const auto table = exact_table<T>(4);
  const auto big = table.rows(-10, 10);
  const auto* before = table.snapshot().get();
  const auto small = table.rows(-3, 5);
  const auto view = table.view(6);
  EXPECT_EQ(table.cached_length(), 11);
  EXPECT_EQ(small.table.get(), before);  // no new table: no allocation, no recomputation
  EXPECT_EQ(table.snapshot().get(), before);
  // the view's slices point into the cached table itself
  EXPECT_EQ(view.query_slice(2).data(), before->data() + (10 - 2) * 4);
  EXPECT_EQ(small.view().data(), before->data() + (10 - 3) * 4);
}

TYPED_TEST(DistanceTableTest, GrowthIsAutomaticAndDoubles) {
  using T = TypeParam;
  const auto table = exact_table<T>(2);
  EXPECT_EQ(table.cached_length(), 0);
  EXPECT_EQ(table.snapshot(), nullptr);
  table.rows(-5, 5);
  EXPECT_EQ(table.cached_length(), 6);
  const auto held = table.rows(-6, 0);  // one more than cached: doubles to 12
  EXPECT_EQ(table.cached_length(), 12);
  table.view(100);  // far more than double: exactly what is needed
  EXPECT_EQ(table.cached_length(), 100);
  // a reader's rows stay valid after the table they came from was replaced
  EXPECT_EQ(held.view()(0, 1), T(-600 + 1));
  EXPECT_EQ(held.table->rows(), 23);
}

TYPED_TEST(DistanceTableTest, GrowthEqualsADirectBuildAtTheLargerSize) {
  using T = TypeParam;
  const auto grown = sinusoid_table<T>(8);
  for (Index n : {1, 3, 10, 33, 70}) grown.rows(-n, n);
  const auto direct = sinusoid_table<T>(8);
  direct.rows(-70, 70);
  const auto a = grown.rows(-70, 70).view();
  const auto b = direct.rows(-70, 70).view();
  EXPECT_EQ(Matrix<T>(a), Matrix<T>(b));  // bitwise: every row is regenerated from c
}

TYPED_TEST(DistanceTableTest, ClampedTableStopsAtTwoKPlusOneRows) {
  using T = TypeParam;
  const auto table = exact_table<T>(3, 2);
  EXPECT_EQ(table.clamp(-9), -2);
  EXPECT_EQ(table.clamp(1), 1);
  EXPECT_EQ(table.clamp(7), 2);
  table.view(50);
  EXPECT_EQ(table.cached_length(), 3);  // K + 1: the 2K + 1 distinct rows, never more
  EXPECT_EQ(table.cached_bytes(), 5 * 3 * sizeof(T));
  const auto v = table.view(6);
  for (Index i = 0; i < 6; ++i) {
    for (Index j = 0; j < 6; ++j)
      EXPECT_EQ(v(i, j, 0), T(100 * table.clamp(j - i))) << i << "," << j;
  }
}

// With clamping and len − 1 > K, a query's rows repeat the edge rows: the view pads one
// (2·len − 1, d) copy so that query_slice(i) is still a contiguous Map, row j = a(clamp(j − i)).
TYPED_TEST(DistanceTableTest, ClampedQuerySlicesAreContiguousAndRepeatEdgeRows) {
  using T = TypeParam;
  const auto table = exact_table<T>(2, 1);
  const auto v = table.view(5);
  for (Index i = 0; i < 5; ++i) {
    const auto slice = v.query_slice(i);
    ASSERT_EQ(slice.rows(), 5);
    ASSERT_EQ(slice.cols(), 2);
    for (Index j = 0; j < 5; ++j) {
      EXPECT_EQ(slice(j, 0), T(100 * std::clamp<Index>(j - i, -1, 1)));
      EXPECT_EQ(slice(j, 1), v(i, j, 1));
    }
  }
  // the cached table itself stays (2K + 1, d)
  EXPECT_EQ(table.snapshot()->rows(), 3);
}

TYPED_TEST(DistanceTableTest, ViewIsToeplitzAndEqualsMaterialize) {
  using T = TypeParam;
  for (const std::optional<Index> k : {std::optional<Index>{}, std::optional<Index>{2}}) {
    const auto table = sinusoid_table<T>(4, k);
    for (Index len : {0, 1, 2, 7}) {
      const auto v = table.view(len);
      const relpos::Tensor3<T> dense = table.materialize(len);
      ASSERT_EQ(dense.dimension(0), len);
      ASSERT_EQ(dense.dimension(1), len);
      ASSERT_EQ(dense.dimension(2), 4);
      for (Index i = 0; i < len; ++i) {
        for (Index j = 0; j < len; ++j) {
          for (Index c = 0; c < 4; ++c) {
            EXPECT_EQ(v(i, j, c), dense(i, j, c));
            EXPECT_EQ(v.query_slice(i)(j, c), dense(i, j, c));
            // Toeplitz: t(i, j) == t(i + s, j + s)
            if (i + 1 < len && j + 1 < len) {
              EXPECT_EQ(v(i, j, c), v(i + 1, j + 1, c));
            }
          }
        }
      }
    }
  }
}

TYPED_TEST(DistanceTableTest, ViewMatchesTheFloat64Sinusoid) {
  using T = TypeParam;
  const auto golden = relpos::test::golden_file("encodings/sinusoidal.safetensors");
  const double tol = std::is_same_v<T, float> ? 1e-7 : 1e-14;
  EXPECT_TRUE(relpos::test::all_close(sinusoid_table<T>(4).materialize(5),
                                      golden.tensor3<double>("view_len5_d4"), tol));
  EXPECT_TRUE(relpos::test::all_close(sinusoid_table<T>(4, 3).materialize(7),
                                      golden.tensor3<double>("view_len7_d4_K3"), tol));
}

TYPED_TEST(DistanceTableTest, FixedTableNeverGrows) {
  using T = TypeParam;
  Matrix<T> rows(5, 2);  // K = 2
  for (Index r = 0; r < 5; ++r) rows.row(r).setConstant(T(r));
  const DistanceTable<T> table(rows);
  ASSERT_EQ(table.max_distance(), 2);
  EXPECT_EQ(table.cached_length(), 3);
  const auto* data = table.snapshot().get();
  const auto block = table.rows(-2, 2);
  EXPECT_EQ(block.table.get(), data);
  EXPECT_EQ(Matrix<T>(block.view()), rows);
  EXPECT_EQ(table.view(9)(0, 8, 0), T(4));  // distance 8 -> clamp 2 -> row 4
  EXPECT_EQ(table.view(9)(8, 0, 0), T(0));  // distance −8 -> clamp −2 -> row 0
  EXPECT_EQ(table.snapshot().get(), data);
}

// Past the cache limit (here (2M − 1)·d <= 36 scalars: M <= 5) rows and views are computed
// for the request and not kept, with the same values as an unlimited table.
TYPED_TEST(DistanceTableTest, SpansBeyondTheCacheLimitAreComputedNotKept) {
  using T = TypeParam;
  for (const std::optional<Index> k : {std::optional<Index>{}, std::optional<Index>{8}}) {
    const auto capped = sinusoid_table<T>(4, k, 36);
    const auto unlimited = sinusoid_table<T>(4, k);
    EXPECT_EQ(Matrix<T>(capped.rows(-3, 3).view()), Matrix<T>(unlimited.rows(-3, 3).view()));
    EXPECT_EQ(capped.cached_length(), 4);
    const auto far = capped.rows(-7, 8);
    EXPECT_EQ(far.first, -7);
    EXPECT_EQ(far.count, 16);
    EXPECT_EQ(Matrix<T>(far.view()), Matrix<T>(unlimited.rows(-7, 8).view()));
    for (Index len : {5, 6, 12}) {
      const relpos::Tensor3<T> a = capped.materialize(len);
      const relpos::Tensor3<T> b = unlimited.materialize(len);
      EXPECT_TRUE(relpos::test::all_close(a, b, 0.0)) << "len " << len;
    }
    EXPECT_LE(capped.cached_length(), 5);
    EXPECT_LE(capped.cached_bytes(), 36 * sizeof(T));
  }
}

// A few rows far from 0 (sparse position ids) are computed for the call: growing the
// contiguous cache to them would build rows for every distance in between.
TYPED_TEST(DistanceTableTest, FarShortSpansAreComputedNotCached) {
  using T = TypeParam;
  const auto table = exact_table<T>(2);
  table.rows(-5, 5);
  ASSERT_EQ(table.cached_length(), 6);
  const auto far = table.rows(50000, 50001);
  EXPECT_EQ(table.cached_length(), 6);
  EXPECT_EQ(far.view()(0, 0), T(5000000));
  EXPECT_EQ(far.view()(1, 1), T(5000101));
  table.rows(-4000, -3999);  // within ±4096, a table small enough to keep whole
  EXPECT_EQ(table.cached_length(), 4001);
  table.rows(-9000, 8000);  // a sequence's own span: grows
  EXPECT_EQ(table.cached_length(), 9001);
}

// A block generator is called once per span (and per row only for clamped views beyond the
// cache limit); every route gives the same rows as the per-row generator.
TYPED_TEST(DistanceTableTest, BlockGeneratorGivesTheRowGeneratorsRows) {
  using T = TypeParam;
  for (const std::optional<Index> k : {std::optional<Index>{}, std::optional<Index>{3}}) {
    const DistanceTable<T> blocks(
        2, typename DistanceTable<T>::BlockGenerator([](std::int64_t first, Index count, T* out) {
          for (Index r = 0; r < count; ++r) exact_row(first + r, out + 2 * r, 2);
        }),
        k, 8);
    const auto rows = exact_table<T>(2, k);
    EXPECT_EQ(Matrix<T>(blocks.rows(-1, 1).view()), Matrix<T>(rows.rows(-1, 1).view()));
    if (!k) {
      EXPECT_EQ(Matrix<T>(blocks.rows(-9, 7).view()), Matrix<T>(rows.rows(-9, 7).view()));
    }
    for (Index len : {2, 9}) {
      EXPECT_TRUE(relpos::test::all_close(blocks.materialize(len), rows.materialize(len), 0.0))
          << "len " << len;
    }
  }
}

TYPED_TEST(DistanceTableTest, NegativeLengthThrowsNamingLen) {
  const auto table = exact_table<TypeParam>(2);
  try {
    table.view(-1);
    ADD_FAILURE() << "view(-1) did not throw";
  } catch (const relpos::Error& e) {
    EXPECT_NE(std::string(e.what()).find("len: expected >= 0, got -1"), std::string::npos)
        << e.what();
  }
}

// The memory figure: the cached table for M = 4096, d = 64 in float is
// (2·4096 − 1)·64·4 bytes ≈ 2.0 MiB, against 4 GiB for a materialized (4096, 4096, 64).
TEST(DistanceTableMemory, CachedTableAtM4096D64IsTwoMegabytesInFloat) {
  const auto table = sinusoid_table<float>(64);
  const auto view = table.view(4096);
  EXPECT_EQ(table.cached_length(), 4096);
  EXPECT_EQ(table.cached_bytes(), std::size_t{2 * 4096 - 1} * 64 * sizeof(float));
  EXPECT_EQ(view.query_slice(0).rows(), 4096);
  std::printf("[ MEMORY   ] cached sinusoidal table, M 4096, d 64, float: %zu bytes\n",
              table.cached_bytes());
}

// Readers on several threads while the cache grows (run under ThreadSanitizer by
// ./dev tsan): every row a reader sees must be the generator's, whatever growth happened.
TEST(DistanceTableThread, ReadersSeeCorrectRowsWhileTheCacheGrows) {
  const auto table = exact_table<float>(4);
  constexpr int kThreads = 4;
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&table, &bad, t] {
      for (Index n = 1 + t; n < 400; n += 3 + t) {
        const auto rows = table.rows(-n, n / 2);
        const auto block = rows.view();
        for (Index r = 0; r < rows.count; r += 7) {
          if (block(r, 3) != float(100 * (rows.first + r) + 3)) ++bad;
        }
        const auto view = table.view(n / 3 + 1);
        if (view(0, view.len() - 1, 0) != float(100 * (view.len() - 1))) ++bad;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GE(table.cached_length(), 397);
}

}  // namespace
