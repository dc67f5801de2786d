// SPDX-License-Identifier: MIT
// The two matrix products of a forward pass, c = a·bᵀ (+ c) and c = a·b (+ c), behind one
// signature over strided row-major references, so Eigen's GEMM is instantiated once per
// scalar rather than once per expression type (blocks, maps, buffers): faster builds.
//
// Three back ends. By default Eigen's own GEMM, or for float, when the translation unit is
// compiled for AVX-512 or AVX2 + FMA, relpos's packed kernel (detail/packed_gemm.hpp), which
// runs 1.2-1.35× Eigen's rate there. With RELPOS_USE_CBLAS defined (the CMake option
// RELPOS_BLAS=OpenBLAS, BLIS, ... sets it on relpos::relpos and links the library), these
// functions call cblas_sgemm / cblas_dgemm instead. That routes relpos's products only: a
// global EIGEN_USE_BLAS would also change every other Eigen product of the user's translation
// unit (and its link), and it routes through Eigen's Fortran-BLAS wrappers, which relpos's
// strided row-major references reach with no gain. A CBLAS takes row-major operands with a
// leading dimension, which is what these references are, so no operand is copied.
#pragma once

#include <algorithm>
#include <climits>
#include <cstddef>
#include <type_traits>
#include <vector>

#include <relpos/core.hpp>
#include <relpos/detail/packed_gemm.hpp>

#if defined(RELPOS_USE_CBLAS)
#include <cblas.h>
#endif

// Eigen's blocked GEMM packs panels of both operands into buffers sized by its cache blocking
// (Goto & van de Geijn 2008). Above EIGEN_STACK_ALLOCATION_LIMIT (128 KiB) it takes them from
// the heap on every product: 48 allocations per block forward at d_model 512, each paying
// fresh page faults. Eigen 3.4 lets a caller hand the kernel its own buffers through
// internal::level3_blocking, so large products here reuse buffers kept per thread. These are
// Eigen 3.4 internals; any other version, and EIGEN_USE_BLAS (whose sgemm / dgemm pack on
// their own), take the plain expression path.
#if EIGEN_VERSION_AT_LEAST(3, 4, 0) && !EIGEN_VERSION_AT_LEAST(3, 4, 90) && !defined(EIGEN_USE_BLAS)
#define RELPOS_DETAIL_GEMM_REUSES_PACKING 1
#else
#define RELPOS_DETAIL_GEMM_REUSES_PACKING 0
#endif

namespace relpos::detail {

#if RELPOS_DETAIL_GEMM_REUSES_PACKING

/// Eigen's blocking sizes with caller-owned packing buffers (a null buffer: Eigen's own,
/// on the stack while it fits there).
template <class T>
class PackingBlocking : public Eigen::internal::level3_blocking<T, T> {
 public:
  PackingBlocking(Index mc, Index nc, Index kc, T* block_a, T* block_b) {
    this->m_mc = mc;
    this->m_nc = nc;
    this->m_kc = kc;
    this->m_blockA = block_a;
    this->m_blockB = block_b;
  }
};

/// The packing buffers of the calling thread; they only grow, so once a thread has run the
/// largest product of a forward it never allocates for one again.
template <class T>
struct PackingBuffers {
  std::vector<T, Eigen::aligned_allocator<T>> a, b;

  // A buffer of `size` scalars, or null when Eigen's stack buffer will do.
  static T* reserve(std::vector<T, Eigen::aligned_allocator<T>>& v, std::size_t size) {
    if (size * sizeof(T) <= EIGEN_STACK_ALLOCATION_LIMIT) return nullptr;
    if (v.size() < size) v.resize(size);
    return v.data();
  }
};

template <class T>
PackingBuffers<T>& packing_buffers() {
  thread_local PackingBuffers<T> buffers;
  return buffers;
}

/// Eigen's blocking sizes for a row-major c (m, n) += (m, k)·(k, n), over the calling thread's
/// kept packing buffers. Eigen runs a row-major product as the column-major cᵀ = op(b)ᵀ · aᵀ:
/// its rows are our n, its columns our m (gemm_blocking_space does the same swap).
template <class T>
PackingBlocking<T> kept_blocking(Index m, Index n, Index k) {
  Index kc = k, mc = n, nc = m;
  Eigen::internal::computeProductBlockingSizes<T, T, 1, Index>(kc, mc, nc, Index{1});
  const std::size_t size_a = static_cast<std::size_t>(kc * std::min(mc, n));
  const std::size_t size_b = static_cast<std::size_t>(kc * std::min(nc, m));
  PackingBuffers<T>& buffers = packing_buffers<T>();
  return PackingBlocking<T>(mc, nc, kc, PackingBuffers<T>::reserve(buffers.a, size_a),
                            PackingBuffers<T>::reserve(buffers.b, size_b));
}

/// c += a · op(b) with c row-major (m, n), a row-major (m, k); op(b) is b (k, n) row-major when
/// BOrder is RowMajor, and bᵀ of a row-major (n, k) b when ColMajor (bᵀ read in place).
template <class T, int BOrder>
void gemm_accumulate(ConstMatrixRef<T> a, const T* b, Index ldb, MatrixRef<T> c, Index k) {
  const Index m = c.rows(), n = c.cols();
  PackingBlocking<T> blocking = kept_blocking<T>(m, n, k);
  Eigen::internal::general_matrix_matrix_product<Index, T, Eigen::RowMajor, false, T, BOrder, false,
                                                 Eigen::RowMajor, 1>::run(m, n, k, a.data(),
                                                                          a.outerStride(), b, ldb,
                                                                          c.data(), 1,
                                                                          c.outerStride(), T(1),
                                                                          blocking);
}

/// c += aᵀ · b with c row-major (m, n), a row-major (k, m) (so aᵀ is column-major, read in
/// place), b row-major (k, n): the weight gradients' product (backward), with the same kept
/// packing buffers as gemm_accumulate.
template <class T>
void gemm_accumulate_tn(ConstMatrixRef<T> a, ConstMatrixRef<T> b, MatrixRef<T> c) {
  const Index m = c.rows(), n = c.cols(), k = a.rows();
  PackingBlocking<T> blocking = kept_blocking<T>(m, n, k);
  Eigen::internal::general_matrix_matrix_product<Index, T, Eigen::ColMajor, false, T,
                                                 Eigen::RowMajor, false, Eigen::RowMajor,
                                                 1>::run(m, n, k, a.data(), a.outerStride(),
                                                         b.data(), b.outerStride(), c.data(), 1,
                                                         c.outerStride(), T(1), blocking);
}

#endif  // RELPOS_DETAIL_GEMM_REUSES_PACKING

// Products Eigen would not run through its blocked GEMM (vectors, tiny or empty shapes) keep
// the expression path, as Eigen's own product dispatch does.
inline bool blocked_gemm_shape(Index m, Index n, Index k) {
  return m > 1 && n > 1 && k > 0 && m + n + k >= EIGEN_GEMM_TO_COEFFBASED_THRESHOLD;
}

/// c (+)= A·B through the packed kernel when T is float, it is compiled in, and the shape is
/// a blocked one; A(i, p) = a[i·a_rs + p·a_cs], B(p, j) = b[p·b_rs + j·b_cs]. False otherwise.
template <Scalar T>
bool packed_product(Index k, const T* a, Index a_rs, Index a_cs, const T* b, Index b_rs, Index b_cs,
                    MatrixRef<T> c, bool accumulate) {
#if RELPOS_DETAIL_PACKED_GEMM
  if constexpr (std::is_same_v<T, float>) {
    if (!blocked_gemm_shape(c.rows(), c.cols(), k)) return false;
    packed_gemm(c.rows(), c.cols(), k, {a, a_rs, a_cs}, {b, b_rs, b_cs}, c.data(), c.outerStride(),
                accumulate);
    return true;
  }
#endif
  (void)k, (void)a, (void)a_rs, (void)a_cs, (void)b, (void)b_rs, (void)b_cs, (void)c;
  (void)accumulate;
  return false;
}

#if defined(RELPOS_USE_CBLAS)

/// c = a · op(b) + beta · c through the CBLAS, all row-major with unit inner stride (what
/// MatrixRef guarantees); op(b) = bᵀ of a row-major (n, k) b when trans_b, else b (k, n).
/// False, doing nothing, when the shape is empty or a dimension does not fit the CBLAS's int:
/// the caller then takes Eigen's path.
template <Scalar T>
bool cblas_gemm(ConstMatrixRef<T> a, ConstMatrixRef<T> b, bool trans_b, MatrixRef<T> c, T beta) {
  const Index m = c.rows(), n = c.cols(), k = a.cols();
  const auto fits = [](Index v) { return v > 0 && v <= INT_MAX; };
  // a leading dimension must be >= the row's width even when Eigen stores a one-row block
  // with another stride
  const Index lda = std::max(a.outerStride(), k), ldb = std::max(b.outerStride(), b.cols()),
              ldc = std::max(c.outerStride(), n);
  if (!fits(m) || !fits(n) || !fits(k) || !fits(lda) || !fits(ldb) || !fits(ldc)) return false;
  const CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
  const auto i = [](Index v) { return static_cast<int>(v); };
  if constexpr (std::is_same_v<T, float>) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, tb, i(m), i(n), i(k), 1.0f, a.data(), i(lda), b.data(),
                i(ldb), beta, c.data(), i(ldc));
  } else {
    cblas_dgemm(CblasRowMajor, CblasNoTrans, tb, i(m), i(n), i(k), 1.0, a.data(), i(lda), b.data(),
                i(ldb), beta, c.data(), i(ldc));
  }
  return true;
}

#endif  // RELPOS_USE_CBLAS

/// c = a · bᵀ, or c += a · bᵀ when accumulate. a: (m, k), b: (n, k), c: (m, n); no aliasing.
template <Scalar T>
void matmul_nt(ConstMatrixRef<T> a, ConstMatrixRef<T> b, MatrixRef<T> c, bool accumulate = false) {
#if defined(RELPOS_USE_CBLAS)
  if (cblas_gemm<T>(a, b, /*trans_b=*/true, c, accumulate ? T(1) : T(0))) return;
#endif
  // B = bᵀ: B(p, j) = b(j, p)
  if (packed_product<T>(a.cols(), a.data(), a.outerStride(), 1, b.data(), 1, b.outerStride(), c,
                        accumulate))
    return;
#if RELPOS_DETAIL_GEMM_REUSES_PACKING
  if (blocked_gemm_shape(c.rows(), c.cols(), a.cols())) {
    if (!accumulate) c.setZero();
    gemm_accumulate<T, Eigen::ColMajor>(a, b.data(), b.outerStride(), c, a.cols());
    return;
  }
#endif
  if (accumulate) {
    c.noalias() += a * b.transpose();
  } else {
    c.noalias() = a * b.transpose();
  }
}

/// c = a · b, or c += a · b when accumulate. a: (m, k), b: (k, n), c: (m, n); no aliasing.
template <Scalar T>
void matmul_nn(ConstMatrixRef<T> a, ConstMatrixRef<T> b, MatrixRef<T> c, bool accumulate = false) {
#if defined(RELPOS_USE_CBLAS)
  if (cblas_gemm<T>(a, b, /*trans_b=*/false, c, accumulate ? T(1) : T(0))) return;
#endif
  if (packed_product<T>(a.cols(), a.data(), a.outerStride(), 1, b.data(), b.outerStride(), 1, c,
                        accumulate))
    return;
#if RELPOS_DETAIL_GEMM_REUSES_PACKING
  if (blocked_gemm_shape(c.rows(), c.cols(), a.cols())) {
    if (!accumulate) c.setZero();
    gemm_accumulate<T, Eigen::RowMajor>(a, b.data(), b.outerStride(), c, a.cols());
    return;
  }
#endif
  if (accumulate) {
    c.noalias() += a * b;
  } else {
    c.noalias() = a * b;
  }
}

/// c = aᵀ · b, or c += aᵀ · b when accumulate. a: (k, m), b: (k, n), c: (m, n); no aliasing.
/// A sum over the rows (tokens) of outer products: the weight gradients of backward.
template <Scalar T>
void matmul_tn(ConstMatrixRef<T> a, ConstMatrixRef<T> b, MatrixRef<T> c, bool accumulate = false) {
  // A = aᵀ: A(i, p) = a(p, i)
  if (packed_product<T>(a.rows(), a.data(), 1, a.outerStride(), b.data(), b.outerStride(), 1, c,
                        accumulate))
    return;
#if RELPOS_DETAIL_GEMM_REUSES_PACKING
  if (blocked_gemm_shape(c.rows(), c.cols(), a.rows())) {
    if (!accumulate) c.setZero();
    gemm_accumulate_tn<T>(a, b, c);
    return;
  }
#endif
  if (accumulate) {
    c.noalias() += a.transpose() * b;
  } else {
    c.noalias() = a.transpose() * b;
  }
}

/// out = x · weightᵀ + bias, or out += x · weightᵀ + bias when accumulate: a Linear in
/// PyTorch layout. x: (m, in), weight: (out, in), bias: (out), or empty for a Linear without
/// one (spec §7 `bias: false`). The bias goes into out first and the product accumulates onto
/// it, as torch's addmm(bias, x, weightᵀ) does, so out is not read and written a second time
/// after the GEMM.
template <Scalar T>
void linear(ConstMatrixRef<T> x, ConstMatrixRef<T> weight, const Eigen::Ref<const Vector<T>>& bias,
            MatrixRef<T> out, bool accumulate = false) {
  if (bias.size() == 0) {
    matmul_nt<T>(x, weight, out, accumulate);
    return;
  }
  if (accumulate) {
    out.rowwise() += bias.transpose();
  } else {
    out.rowwise() = bias.transpose();
  }
  matmul_nt<T>(x, weight, out, /*accumulate=*/true);
}

}  // namespace relpos::detail
