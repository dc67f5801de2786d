// Tests for include/relpos/detail/gemm.hpp: c = a·bᵀ, c = a·b and c = aᵀ·b (+ c) on the
// operands the forward and backward passes give it (column blocks of wider matrices, one-row
// queries, empty and tiny shapes, shapes past every cache block of the packed kernel), in
// float and double, against a triple loop in float64. The same file runs in a build with
// RELPOS_BLAS, where the products go through cblas_?gemm instead of Eigen, and in programs
// compiled for AVX2 + FMA and for AVX-512 (tests/CMakeLists.txt), where float's go through
// detail/packed_gemm.hpp.
#include <relpos/detail/gemm.hpp>

#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <type_traits>

#include <gtest/gtest.h>

#include "support/golden.hpp"

namespace {

using relpos::Index;
using relpos::Matrix;

template <class T>
Matrix<T> random_matrix(Index rows, Index cols, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> uniform(-1, 1);
  Matrix<T> m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<T>(uniform(gen));
  return m;
}

// Σ_p a(i, p)·b(p, j) in float64, with b given as (k, n), plus c0 when accumulating.
template <class A, class B, class C>
Matrix<double> reference(const A& a, const B& b, const C& c0, bool accumulate) {
  Matrix<double> out = accumulate ? Matrix<double>(c0.template cast<double>())
                                  : Matrix<double>::Zero(a.rows(), b.cols());
  for (Index i = 0; i < a.rows(); ++i) {
    for (Index j = 0; j < b.cols(); ++j) {
      for (Index p = 0; p < a.cols(); ++p) out(i, j) += double(a(i, p)) * double(b(p, j));
    }
  }
  return out;
}

template <class T>
class GemmTest : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(GemmTest, Scalars);

// k terms of |x| <= 1: float's error grows with k·2^-24
template <class T>
double tol(Index k) {
  return (std::is_same_v<T, float> ? 4e-7 : 1e-15) * static_cast<double>(k + 1) * 4;
}

TYPED_TEST(GemmTest, ColumnBlocksOfWiderMatricesAndEdgeShapesMatchTheLoop) {
  using T = TypeParam;
  struct Case {
    Index m, n, k;
  };
  std::uint64_t seed = 1;
  // the last two: past the packed kernel's blocks of rows, columns and terms (KC), with edge
  // tiles on every side, packed on the stack (small blocks) and in the kept heap blocks
  for (const Case c :
       {Case{37, 29, 64}, Case{1, 300, 64}, Case{300, 1, 32}, Case{128, 96, 1}, Case{3, 4, 5},
        Case{50, 40, 0}, Case{0, 7, 8}, Case{40, 200, 389}, Case{151, 2085, 389}}) {
    for (const bool accumulate : {false, true}) {
      const std::string what = "m " + std::to_string(c.m) + " n " + std::to_string(c.n) + " k " +
                               std::to_string(c.k) + (accumulate ? " accumulate" : "");
      // operands as the attention takes them: a head's columns of a wider (rows, 3·k + 5)
      const Matrix<T> wide_a = random_matrix<T>(c.m, 3 * c.k + 5, ++seed);
      const Matrix<T> wide_bt = random_matrix<T>(c.n, 3 * c.k + 5, ++seed);  // b as (n, k)
      const Matrix<T> wide_b = random_matrix<T>(c.k, 2 * c.n + 3, ++seed);   // b as (k, n)
      const auto a = wide_a.middleCols(c.k + 2, c.k);                        // (m, k)
      const auto bt = wide_bt.middleCols(2 * c.k + 1, c.k);                  // (n, k)
      const auto b = wide_b.middleCols(c.n, c.n);                            // (k, n)
      const Matrix<T> wide_at = random_matrix<T>(c.k, 2 * c.m + 3, ++seed);  // a as (k, m)
      const auto at = wide_at.middleCols(c.m + 1, c.m);                      // (k, m)
      const Matrix<T> c0 = random_matrix<T>(c.m, c.n, ++seed);
      // the output a column block too: (m, n) inside (m, n + 6)
      Matrix<T> out(c.m, c.n + 6);
      out.setConstant(T(7));
      out.middleCols(2, c.n) = c0;
      relpos::detail::matmul_nt<T>(a, bt, out.middleCols(2, c.n), accumulate);
      EXPECT_TRUE(relpos::test::all_close(out.middleCols(2, c.n),
                                          reference(a, Matrix<T>(bt.transpose()), c0, accumulate),
                                          tol<T>(c.k)))
          << "nt " << what;
      EXPECT_TRUE((out.leftCols(2).array() == T(7)).all() &&
                  (out.rightCols(4).array() == T(7)).all())
          << "nt wrote outside its block, " << what;

      out.middleCols(2, c.n) = c0;
      relpos::detail::matmul_nn<T>(a, b, out.middleCols(2, c.n), accumulate);
      EXPECT_TRUE(relpos::test::all_close(out.middleCols(2, c.n), reference(a, b, c0, accumulate),
                                          tol<T>(c.k)))
          << "nn " << what;
      EXPECT_TRUE((out.leftCols(2).array() == T(7)).all() &&
                  (out.rightCols(4).array() == T(7)).all())
          << "nn wrote outside its block, " << what;

      out.middleCols(2, c.n) = c0;
      relpos::detail::matmul_tn<T>(at, b, out.middleCols(2, c.n), accumulate);
      EXPECT_TRUE(relpos::test::all_close(out.middleCols(2, c.n),
                                          reference(Matrix<T>(at.transpose()), b, c0, accumulate),
                                          tol<T>(c.k)))
          << "tn " << what;
      EXPECT_TRUE((out.leftCols(2).array() == T(7)).all() &&
                  (out.rightCols(4).array() == T(7)).all())
          << "tn wrote outside its block, " << what;
    }
  }
}

// The programs compiled for AVX2 + FMA or AVX-512 test the packed kernel, not Eigen's.
#if defined(__AVX2__) && defined(__FMA__)
static_assert(RELPOS_DETAIL_PACKED_GEMM, "an AVX2 + FMA build multiplies floats with packed_gemm");
#endif

// c = a·bᵀ must not read c: a NaN left in the output buffer does not survive (BLAS's beta = 0).
TYPED_TEST(GemmTest, OverwritingIgnoresWhatTheOutputHeld) {
  using T = TypeParam;
  const Matrix<T> a = random_matrix<T>(40, 64, 11), b = random_matrix<T>(50, 64, 12);
  Matrix<T> c(40, 50);
  c.setConstant(std::numeric_limits<T>::quiet_NaN());
  relpos::detail::matmul_nt<T>(a, b, c);
  EXPECT_TRUE(c.allFinite());
  EXPECT_TRUE(
      relpos::test::all_close(c, reference(a, Matrix<T>(b.transpose()), c, false), tol<T>(64)));
}

}  // namespace
