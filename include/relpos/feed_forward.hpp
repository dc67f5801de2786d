// SPDX-License-Identifier: MIT
// The position-wise feed-forward network of a Transformer block (Vaswani et al. 2017), as in
// torch.nn.TransformerEncoderLayer: linear2(act(linear1(x))), act = relu or exact gelu (erf).
#pragma once

#include <algorithm>
#include <cmath>
#include <string>

#include <relpos/core.hpp>
#include <relpos/detail/gemm.hpp>
#include <relpos/detail/shape_checks.hpp>
#include <relpos/tensor_source.hpp>
#include <relpos/workspace.hpp>

namespace relpos {

/// The feed-forward activation. gelu is the exact form x·Φ(x) = x/2·(1 + erf(x/√2)), torch's
/// default (approximate="none"), not the tanh approximation.
enum class Activation { relu, gelu /* exact, erf-based, as torch's "gelu" */ };

template <Scalar T>
struct FeedForward {
  Activation activation = Activation::relu;
  Matrix<T> linear1_weight;  // (d_ff, d_model), PyTorch [out, in]
  Vector<T> linear1_bias;    // (d_ff)
  Matrix<T> linear2_weight;  // (d_model, d_ff)
  Vector<T> linear2_bias;    // (d_model)

  FeedForward() = default;
  /// Zero weights of the given sizes (fill them, or use load()). Sizes < 1 throw Error
  /// before anything is allocated.
  FeedForward(Index d_model, Index d_ff, Activation act) : activation(act) {
    detail::check_positive("FeedForward: ", "d_model", d_model);
    detail::check_positive("FeedForward: ", "d_ff", d_ff);
    linear1_weight = Matrix<T>::Zero(d_ff, d_model);
    linear1_bias = Vector<T>::Zero(d_ff);
    linear2_weight = Matrix<T>::Zero(d_model, d_ff);
    linear2_bias = Vector<T>::Zero(d_model);
  }

  /// `prefix`linear1.weight [d_ff, d_model], .bias [d_ff], `prefix`linear2.weight
  /// [d_model, d_ff], .bias [d_model] (prefix e.g. "layers.0.").
  template <TensorSource<T> File>
  static FeedForward load(const File& file, const std::string& prefix, Index d_model, Index d_ff,
                          Activation act) {
    FeedForward f(d_model, d_ff, act);
    f.linear1_weight = file.template matrix<T>(prefix + "linear1.weight", d_ff, d_model);
    f.linear1_bias = file.template vector<T>(prefix + "linear1.bias", d_ff);
    f.linear2_weight = file.template matrix<T>(prefix + "linear2.weight", d_model, d_ff);
    f.linear2_bias = file.template vector<T>(prefix + "linear2.bias", d_model);
    return f;
  }

  Index d_model() const { return linear1_weight.cols(); }
  Index d_ff() const { return linear1_weight.rows(); }

  /// The four weights agree with linear1_weight's [d_ff, d_model], each at least 1 wide;
  /// else Error naming the field, the expected and the actual shape. O(1); forward calls it.
  void validate() const {
    detail::check_positive("linear1_weight: ", "rows (d_ff)", d_ff());
    detail::check_positive("linear1_weight: ", "columns (d_model)", d_model());
    detail::check_vector("linear1_bias", linear1_bias, d_ff(), "d_ff");
    detail::check_matrix("linear2_weight", linear2_weight, d_model(), d_ff(), "d_model, d_ff");
    detail::check_vector("linear2_bias", linear2_bias, d_model(), "d_model");
  }

  /// Rows per pass of forward(): the hidden layer is (kRows, d_ff) at most whatever the
  /// length, so a long input's feed-forward adds 4 MiB (float, d_ff 2048), not len·d_ff.
  static constexpr Index kRows = 512;

  /// out = linear2(act(linear1(x))); x, out: (len, d_model), not aliased. Rows are
  /// independent, so they go kRows at a time through the hidden layer in ws.hidden.
  void forward(ConstMatrixRef<T> x, MatrixRef<T> out, SequenceWorkspace<T>& ws) const {
    validate();
    if (x.cols() != d_model() || out.cols() != d_model() || out.rows() != x.rows()) {
      throw Error("FeedForward::forward: x and out: expected (len, d_model = " +
                  std::to_string(d_model()) + "), got " + detail::shape_string(x.rows(), x.cols()) +
                  " and " + detail::shape_string(out.rows(), out.cols()));
    }
    for (Index r0 = 0; r0 < x.rows(); r0 += kRows) {
      const Index n = std::min(kRows, x.rows() - r0);
      // h: (n, d_ff)
      auto h = ws.hidden.matrix(n, d_ff());
      detail::linear<T>(x.middleRows(r0, n), linear1_weight, linear1_bias, h);
      if (activation == Activation::relu) {
        h = h.cwiseMax(T(0));
      } else {
        const T inv_sqrt2 = static_cast<T>(0.70710678118654752440);
        h = h.unaryExpr([inv_sqrt2](T v) { return T(0.5) * v * (T(1) + std::erf(v * inv_sqrt2)); });
      }
      detail::linear<T>(h, linear2_weight, linear2_bias, out.middleRows(r0, n));
    }
  }
};

}  // namespace relpos
