// SPDX-License-Identifier: MIT
// The normalisation of a block and of the final norm, LayerNorm or RMSNorm as config.json's
// `norm` says (spec §7): one type, so a Block is the same class whichever its model uses.
#pragma once

#include <string>
#include <utility>

#include <relpos/core.hpp>
#include <relpos/detail/shape_checks.hpp>
#include <relpos/layer_norm.hpp>
#include <relpos/rms_norm.hpp>
#include <relpos/tensor_source.hpp>

namespace relpos {

/// Which normalisation: torch.nn.LayerNorm (spec §1) or T5's RMSNorm (spec §7).
enum class NormKind { layer, rms };

/// A LayerNorm (weight and bias) or an RMSNorm (weight; bias empty), chosen by `kind`.
/// The fields are LayerNorm's, so code written for a LayerNorm block reads the same.
template <Scalar T>
struct Norm {
  NormKind kind = NormKind::layer;
  Vector<T> weight;  // (d): γ, or RMSNorm's w
  Vector<T> bias;    // (d): β for a LayerNorm; empty for an RMSNorm
  double eps = 1e-5;

  Norm() = default;
  /// The identity-initialised norm of width d; a width < 1 or eps <= 0 throws Error.
  Norm(NormKind k, Index d, double eps_)
      : Norm(k == NormKind::layer ? Norm(LayerNorm<T>(d, eps_)) : Norm(RMSNorm<T>(d, eps_))) {}
  Norm(LayerNorm<T> n)  // NOLINT: implicit, a LayerNorm is one kind of Norm
      : kind(NormKind::layer), weight(std::move(n.weight)), bias(std::move(n.bias)), eps(n.eps) {}
  Norm(RMSNorm<T> n)  // NOLINT: implicit, an RMSNorm is the other
      : kind(NormKind::rms), weight(std::move(n.weight)), eps(n.eps) {}

  /// `prefix`.weight [d] and, for a LayerNorm, `prefix`.bias [d].
  template <TensorSource<T> File>
  static Norm load(const File& file, const std::string& prefix, NormKind k, Index d, double eps) {
    if (k == NormKind::layer) return LayerNorm<T>::load(file, prefix, d, eps);
    return RMSNorm<T>::load(file, prefix, d, eps);
  }

  Index dim() const { return weight.size(); }

  /// weight [d], bias [d] for a LayerNorm and empty for an RMSNorm, d >= 1, eps > 0; else
  /// Error naming the field. O(1); forward calls it.
  void validate() const {
    detail::check_positive("weight: ", "size (d)", dim());
    if (kind == NormKind::layer) {
      detail::check_vector("bias", bias, dim(), "the size of weight");
    } else if (bias.size() != 0) {
      throw Error("bias: expected empty (an RMSNorm has none), got [" +
                  std::to_string(bias.size()) + "]");
    }
    if (!(eps > 0)) throw Error("eps: expected > 0, got " + std::to_string(eps));
  }

  /// out = Norm(x) row by row; x and out are (len, d) and may be the same matrix.
  void forward(ConstMatrixRef<T> x, MatrixRef<T> out) const {
    validate();
    if (x.cols() != dim() || out.cols() != dim() || out.rows() != x.rows()) {
      throw Error(std::string(kind == NormKind::layer ? "LayerNorm" : "RMSNorm") +
                  "::forward: x and out: expected (len, d = " + std::to_string(dim()) + "), got " +
                  detail::shape_string(x.rows(), x.cols()) + " and " +
                  detail::shape_string(out.rows(), out.cols()));
    }
    if (kind == NormKind::layer) {
      detail::layer_norm_rows<T>(x, weight, bias, eps, out);
    } else {
      detail::rms_norm_rows<T>(x, weight, eps, out);
    }
  }
};

}  // namespace relpos
