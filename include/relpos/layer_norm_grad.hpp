// SPDX-License-Identifier: MIT
// The backward of LayerNorm (layer_norm.hpp), row by row: y = x̂·γ + β with x̂ = (x − μ)·s and
// s = 1/√(var + eps), var the biased variance, as torch.nn.LayerNorm's autograd.
#pragma once

#include <cmath>
#include <string>
#include <string_view>

#include <relpos/core.hpp>
#include <relpos/detail/linear_grad.hpp>
#include <relpos/detail/shape_checks.hpp>
#include <relpos/layer_norm.hpp>

namespace relpos {

/// What LayerNorm's forward keeps for its backward: len·(d + 1) scalars. x itself is not
/// kept: x̂ and s determine ∂L/∂x. An RMSNorm keeps the same (x̂ = x·s, s = 1/rms).
template <Scalar T>
struct LayerNormSaved {
  Matrix<T> x_hat;    // (len, d): (x − μ)·s, the normalised input before γ and β
  Vector<T> inv_std;  // (len): s = 1/√(var + eps) of each row
};

/// ∂L/∂γ and ∂L/∂β, named as the tensors (`<prefix>.weight`, `<prefix>.bias`, e.g.
/// layers.0.norm1 or the final norm's `norm`). backward() adds into them. An RMSNorm
/// (rms_norm_grad.hpp) uses the same struct with `bias` left empty: it has no bias tensor.
template <Scalar T>
struct LayerNormGrad {
  Vector<T> weight;  // (d)
  Vector<T> bias;    // (d), or empty for an RMSNorm

  /// f(name, gradient) for each tensor, names as in the model file: prefix "layers.0.norm1";
  /// `.bias` only when it is there (a LayerNorm's backward fills it, an RMSNorm has none).
  template <class F>
  void for_each(const std::string& prefix, F&& f) {
    f(prefix + ".weight", weight);
    if (bias.size() > 0) f(prefix + ".bias", bias);
  }
};

namespace detail {
// LayerNorm's and Norm's shared body: both have validate(), dim(), weight, bias and eps.
template <Scalar T, class N>
void layer_norm_forward_saving(const N& norm, detail::InRef<T> x, detail::OutRef<T> out,
                               LayerNormSaved<T>& saved) {
  norm.validate();
  if (x.cols() != norm.dim() || out.cols() != norm.dim() || out.rows() != x.rows()) {
    throw Error("LayerNorm forward_saving: x and out: expected (len, d = " +
                std::to_string(norm.dim()) + "), got " + detail::shape_string(x.rows(), x.cols()) +
                " and " + detail::shape_string(out.rows(), out.cols()));
  }
  saved.x_hat.resize(x.rows(), x.cols());
  saved.inv_std.resize(x.rows());
  const T inv_d = T(1) / static_cast<T>(norm.dim());
  for (Index i = 0; i < x.rows(); ++i) {
    // μ, then the biased variance over the squared deviations (two passes, as forward)
    const T mean = x.row(i).sum() * inv_d;
    const T var = (x.row(i).array() - mean).square().sum() * inv_d;
    const T inv_std = T(1) / std::sqrt(var + static_cast<T>(norm.eps));
    saved.inv_std(i) = inv_std;
    // x̂ = (x − μ)·s
    saved.x_hat.row(i).array() = (x.row(i).array() - mean) * inv_std;
    // y = x̂·γ + β
    out.row(i).array() = saved.x_hat.row(i).array() * norm.weight.transpose().array() +
                         norm.bias.transpose().array();
  }
}

template <Scalar T, class N>
void layer_norm_backward(const N& norm, const LayerNormSaved<T>& saved, detail::InRef<T> dy,
                         detail::OutRef<T> dx, LayerNormGrad<T>& grad) {
  const Index len = saved.x_hat.rows(), d = norm.dim();
  if (saved.x_hat.cols() != d || saved.inv_std.size() != len) {
    throw Error("LayerNorm backward: saved: expected x̂ (len, d = " + std::to_string(d) +
                ") and s (len), got " +
                detail::shape_string(saved.x_hat.rows(), saved.x_hat.cols()) + " and [" +
                std::to_string(saved.inv_std.size()) + "]");
  }
  detail::check_output_grad("LayerNorm backward", dy.rows(), dy.cols(), len, d);
  detail::check_output_grad("LayerNorm backward: dx", dx.rows(), dx.cols(), len, d);
  detail::prepare_grad<T>(grad.weight, d, "LayerNorm", " weight");
  detail::prepare_grad<T>(grad.bias, d, "LayerNorm", " bias");
  const T inv_d = T(1) / static_cast<T>(d);
  for (Index i = 0; i < len; ++i) {
    const auto x_hat = saved.x_hat.row(i).array();
    // ∂L/∂γ += dy ⊙ x̂, ∂L/∂β += dy (summed over the rows)
    grad.weight.array() += (dy.row(i).array() * x_hat).transpose();
    grad.bias.array() += dy.row(i).array().transpose();
    // g = ∂L/∂x̂ = dy ⊙ γ, used through its two row means (not stored: no allocation)
    const auto g = dy.row(i).array() * norm.weight.transpose().array();
    const T mean_g = g.sum() * inv_d;
    const T mean_gx = (g * x_hat).sum() * inv_d;
    // ∂L/∂x = s·(g − mean(g) − x̂·mean(g ⊙ x̂)): μ and var depend on every x of the row
    dx.row(i).array() = saved.inv_std(i) * (g - mean_g - x_hat * mean_gx);
  }
}
}  // namespace detail

/// out = norm(x) as LayerNorm::forward computes it (the same operations in the same order, so
/// the same bits), keeping x̂ and s in `saved`. x, out: (len, d); they may be the same matrix.
template <Scalar T>
void forward_saving(const LayerNorm<T>& norm, detail::InRef<T> x, detail::OutRef<T> out,
                    LayerNormSaved<T>& saved) {
  detail::layer_norm_forward_saving<T>(norm, x, out, saved);
}

/// From dy = ∂L/∂y (len, d): adds ∂L/∂γ and ∂L/∂β into grad (empty ones start at zero) and
/// writes dx = ∂L/∂x (len, d). dx may be dy itself (each row is read before it is written).
template <Scalar T>
void backward(const LayerNorm<T>& norm, const LayerNormSaved<T>& saved, detail::InRef<T> dy,
              detail::OutRef<T> dx, LayerNormGrad<T>& grad) {
  detail::layer_norm_backward<T>(norm, saved, dy, dx, grad);
}

}  // namespace relpos
