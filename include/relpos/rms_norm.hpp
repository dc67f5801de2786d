// SPDX-License-Identifier: MIT
// Root-mean-square layer normalisation (Zhang & Sennrich 2019), as T5's T5LayerNorm (spec §7
// `norm: "rms"`): x · w / sqrt(mean(x²) + eps) over the last dimension; no mean subtracted,
// a weight and no bias.
#pragma once

#include <cmath>
#include <string>

#include <relpos/core.hpp>
#include <relpos/detail/shape_checks.hpp>
#include <relpos/tensor_source.hpp>

namespace relpos {

namespace detail {
/// out = RMSNorm(x) row by row with weight w: x, out (len, d), may alias.
template <Scalar T>
void rms_norm_rows(ConstMatrixRef<T> x, const Vector<T>& weight, double eps, MatrixRef<T> out) {
  const T inv_d = T(1) / static_cast<T>(x.cols());
  for (Index i = 0; i < x.rows(); ++i) {
    const T mean_square = x.row(i).squaredNorm() * inv_d;
    const T inv_rms = T(1) / std::sqrt(mean_square + static_cast<T>(eps));
    out.row(i).array() = x.row(i).array() * inv_rms * weight.transpose().array();
  }
}
}  // namespace detail

template <Scalar T>
struct RMSNorm {
  Vector<T> weight;  // (d): w
  double eps = 1e-5;

  RMSNorm() = default;
  /// The identity-initialised norm of width d (w = 1). A width < 1 or eps <= 0 throws Error
  /// before anything is allocated.
  RMSNorm(Index d, double eps_) : eps(eps_) {
    if (d < 1) throw Error("RMSNorm: width expected >= 1, got " + std::to_string(d));
    if (!(eps_ > 0)) throw Error("RMSNorm: eps expected > 0, got " + std::to_string(eps_));
    weight = Vector<T>::Ones(d);
  }

  /// `prefix`.weight [d] (e.g. prefix "layers.0.norm1"); there is no bias tensor.
  template <TensorSource<T> File>
  static RMSNorm load(const File& file, const std::string& prefix, Index d, double eps) {
    RMSNorm n(d, eps);
    n.weight = file.template vector<T>(prefix + ".weight", d);
    return n;
  }

  Index dim() const { return weight.size(); }

  /// weight [d], d >= 1, eps > 0; else Error naming the field. O(1); forward calls it.
  void validate() const {
    detail::check_positive("weight: ", "size (d)", dim());
    if (!(eps > 0)) throw Error("eps: expected > 0, got " + std::to_string(eps));
  }

  /// out = RMSNorm(x) row by row; x and out are (len, d) and may be the same matrix.
  void forward(ConstMatrixRef<T> x, MatrixRef<T> out) const {
    validate();
    if (x.cols() != dim() || out.cols() != dim() || out.rows() != x.rows()) {
      throw Error("RMSNorm::forward: x and out: expected (len, d = " + std::to_string(dim()) +
                  "), got " + detail::shape_string(x.rows(), x.cols()) + " and " +
                  detail::shape_string(out.rows(), out.cols()));
    }
    detail::rms_norm_rows<T>(x, weight, eps, out);
  }
};

}  // namespace relpos
