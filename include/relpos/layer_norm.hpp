// SPDX-License-Identifier: MIT
// Layer normalisation over the last dimension (Ba et al. 2016), as torch.nn.LayerNorm:
// biased variance, eps inside the square root, then an element-wise affine map.
#pragma once

#include <cmath>
#include <string>

#include <relpos/core.hpp>
#include <relpos/detail/shape_checks.hpp>
#include <relpos/tensor_source.hpp>

namespace relpos {

namespace detail {
/// out = LayerNorm(x) row by row with γ = weight, β = bias: x, out (len, d), may alias.
template <Scalar T>
void layer_norm_rows(ConstMatrixRef<T> x, const Vector<T>& weight, const Vector<T>& bias,
                     double eps, MatrixRef<T> out) {
  const T inv_d = T(1) / static_cast<T>(x.cols());
  for (Index i = 0; i < x.rows(); ++i) {
    // two passes (mean, then squared deviations): no cancellation in float
    const T mean = x.row(i).sum() * inv_d;
    const T var = (x.row(i).array() - mean).square().sum() * inv_d;  // biased, as torch
    const T inv_std = T(1) / std::sqrt(var + static_cast<T>(eps));
    out.row(i).array() =
        (x.row(i).array() - mean) * inv_std * weight.transpose().array() + bias.transpose().array();
  }
}
}  // namespace detail

template <Scalar T>
struct LayerNorm {
  Vector<T> weight;  // (d): γ
  Vector<T> bias;    // (d): β
  double eps = 1e-5;

  LayerNorm() = default;
  /// The identity-initialised norm of width d (γ = 1, β = 0), as torch's default. A width
  /// < 1 or eps <= 0 throws Error before anything is allocated.
  LayerNorm(Index d, double eps_) : eps(eps_) {
    if (d < 1) throw Error("LayerNorm: width expected >= 1, got " + std::to_string(d));
    if (!(eps_ > 0)) throw Error("LayerNorm: eps expected > 0, got " + std::to_string(eps_));
    weight = Vector<T>::Ones(d);
    bias = Vector<T>::Zero(d);
  }

  /// `prefix`.weight and `prefix`.bias, both [d] (e.g. prefix "layers.0.norm1").
  template <TensorSource<T> File>
  static LayerNorm load(const File& file, const std::string& prefix, Index d, double eps) {
    LayerNorm n(d, eps);
    n.weight = file.template vector<T>(prefix + ".weight", d);
    n.bias = file.template vector<T>(prefix + ".bias", d);
    return n;
  }

  Index dim() const { return weight.size(); }

  /// weight and bias both [d], d >= 1, eps > 0; else Error naming the field. O(1); forward
  /// calls it.
  void validate() const {
    detail::check_positive("weight: ", "size (d)", dim());
    detail::check_vector("bias", bias, dim(), "the size of weight");
    if (!(eps > 0)) throw Error("eps: expected > 0, got " + std::to_string(eps));
  }

  /// out = LayerNorm(x) row by row; x and out are (len, d) and may be the same matrix.
  void forward(ConstMatrixRef<T> x, MatrixRef<T> out) const {
    validate();
    if (x.cols() != dim() || out.cols() != dim() || out.rows() != x.rows()) {
      throw Error("LayerNorm::forward: x and out: expected (len, d = " + std::to_string(dim()) +
                  "), got " + detail::shape_string(x.rows(), x.cols()) + " and " +
                  detail::shape_string(out.rows(), out.cols()));
    }
    detail::layer_norm_rows<T>(x, weight, bias, eps, out);
  }
};

}  // namespace relpos
