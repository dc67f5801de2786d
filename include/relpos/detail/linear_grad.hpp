// SPDX-License-Identifier: MIT
// The backward of a Linear in PyTorch layout, y = x·Wᵀ + b (the forward is detail::linear in
// detail/gemm.hpp): the products every module's backward is made of (feed-forward, output
// head, and next attention's in_proj / out_proj and xl's r_net).
#pragma once

#include <string>
#include <string_view>
#include <type_traits>

#include <relpos/core.hpp>
#include <relpos/detail/gemm.hpp>
#include <relpos/detail/shape_checks.hpp>

namespace relpos::detail {

// The matrix arguments of the free backward functions: T is deduced from the module (or the
// weight), and these non-deduced references then take a Matrix, a Map or a block alike (a
// plain Ref parameter would take part in deduction and reject them).
template <Scalar T>
using InRef = std::type_identity_t<ConstMatrixRef<T>>;
template <Scalar T>
using OutRef = std::type_identity_t<MatrixRef<T>>;

/// c += aᵀ · b. a: (k, m), b: (k, n), c: (m, n); no aliasing. The weight gradient's product
/// (a sum over the rows, i.e. tokens, of outer products), with the kept packing buffers of
/// detail/gemm.hpp (a warm backward allocates nothing for it).
template <Scalar T>
void matmul_tn_accumulate(ConstMatrixRef<T> a, ConstMatrixRef<T> b, MatrixRef<T> c) {
  matmul_tn<T>(a, b, c, /*accumulate=*/true);
}

/// Gradients accumulate (over batch items, and over layers for a shared table), so one that
/// is empty becomes zeros of the parameter's shape, and one of another shape is an Error
/// naming it, owner + field ("linear1" ".weight": "linear1.weight gradient: expected
/// [64, 16] ..."): it would be written out of bounds.
template <Scalar T>
void prepare_grad(Matrix<T>& g, Index rows, Index cols, std::string_view owner,
                  std::string_view field) {
  if (g.size() == 0) {
    g = Matrix<T>::Zero(rows, cols);
  } else if (g.rows() != rows || g.cols() != cols) {
    check_matrix(std::string(owner) + std::string(field) + " gradient", g, rows, cols,
                 "the parameter's shape");
  }
}
template <Scalar T>
void prepare_grad(Vector<T>& g, Index size, std::string_view owner, std::string_view field) {
  if (g.size() == 0) {
    g = Vector<T>::Zero(size);
  } else if (g.size() != size) {
    check_vector(std::string(owner) + std::string(field) + " gradient", g, size,
                 "the parameter's size");
  }
}

/// The gradient of a bias the layer does not have (spec §7 `bias: false`) stays empty: nothing
/// is named for it. One that is not empty is an Error naming it (it belongs to another layer).
template <Scalar T>
void check_absent_grad(const Vector<T>& g, std::string_view owner, std::string_view field) {
  if (g.size() != 0) {
    throw Error(std::string(owner) + std::string(field) +
                " gradient: expected empty (the layer has no bias: bias false), got [" +
                std::to_string(g.size()) + "]");
  }
}

/// dy: (rows, cols) = ∂L/∂(the module's output), else Error naming `what`.
inline void check_output_grad(std::string_view what, Index got_rows, Index got_cols, Index rows,
                              Index cols) {
  if (got_rows != rows || got_cols != cols) {
    throw Error(std::string(what) + ": output gradient expected " + shape_string(rows, cols) +
                " (the forward output's shape), got " + shape_string(got_rows, got_cols));
  }
}

/// Backward of y = x·Wᵀ + b over the rows of one sequence. x: (len, in), the forward's input;
/// weight: (out, in); dy: (len, out) = ∂L/∂y. Adds into dweight (out, in) and dbias (out) (empty
/// ones start at zero; `name` names them in errors, e.g. "head"); writes dx (len, in) = ∂L/∂x.
/// Without a bias (has_bias false: y = x·Wᵀ) dbias stays empty.
template <Scalar T>
void linear_backward(ConstMatrixRef<T> x, const Matrix<T>& weight, ConstMatrixRef<T> dy,
                     MatrixRef<T> dx, Matrix<T>& dweight, Vector<T>& dbias, std::string_view name,
                     bool has_bias = true) {
  if (x.cols() != weight.cols() || dx.rows() != x.rows() || dx.cols() != x.cols()) {
    throw Error(std::string(name) + " backward: x and dx: expected (len, " +
                std::to_string(weight.cols()) + "), got " + shape_string(x.rows(), x.cols()) +
                " and " + shape_string(dx.rows(), dx.cols()));
  }
  check_output_grad(name, dy.rows(), dy.cols(), x.rows(), weight.rows());
  prepare_grad<T>(dweight, weight.rows(), weight.cols(), name, ".weight");
  if (has_bias) {
    prepare_grad<T>(dbias, weight.rows(), name, ".bias");
  } else {
    check_absent_grad<T>(dbias, name, ".bias");
  }
  // ∂L/∂W += dyᵀ·x: each token adds the outer product of its dy and its x
  matmul_tn_accumulate<T>(dy, x, dweight);
  // ∂L/∂b += Σ_rows dy
  if (has_bias) dbias += dy.colwise().sum().transpose();
  // ∂L/∂x = dy·W
  matmul_nn<T>(dy, weight, dx);
}

}  // namespace relpos::detail
