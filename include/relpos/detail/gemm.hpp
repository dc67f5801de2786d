// SPDX-License-Identifier: MIT
// The two matrix products of a forward pass, c = a·bᵀ (+ c) and c = a·b (+ c), behind one
// signature over strided row-major references, so Eigen's GEMM is instantiated once per
// scalar rather than once per expression type (blocks, maps, buffers): faster builds.
#pragma once

#include <Eigen/Core>

#include <relpos/core.hpp>

namespace relpos::detail {

/// c = a · bᵀ, or c += a · bᵀ when accumulate. a: (m, k), b: (n, k), c: (m, n); no aliasing.
template <Scalar T>
void matmul_nt(ConstMatrixRef<T> a, ConstMatrixRef<T> b, MatrixRef<T> c, bool accumulate = false) {
  if (accumulate) {
    c.noalias() += a * b.transpose();
  } else {
    c.noalias() = a * b.transpose();
  }
}

/// c = a · b, or c += a · b when accumulate. a: (m, k), b: (k, n), c: (m, n); no aliasing.
template <Scalar T>
void matmul_nn(ConstMatrixRef<T> a, ConstMatrixRef<T> b, MatrixRef<T> c, bool accumulate = false) {
  if (accumulate) {
    c.noalias() += a * b;
  } else {
    c.noalias() = a * b;
  }
}

/// out = x · weightᵀ + bias, a Linear in PyTorch layout. x: (m, in), weight: (out, in).
template <Scalar T>
void linear(ConstMatrixRef<T> x, const Matrix<T>& weight, const Vector<T>& bias, MatrixRef<T> out) {
  matmul_nt<T>(x, weight, out);
  out.rowwise() += bias.transpose();
}

}  // namespace relpos::detail
