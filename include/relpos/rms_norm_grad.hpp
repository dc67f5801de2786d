// SPDX-License-Identifier: MIT
// The backward of RMSNorm (rms_norm.hpp, spec §7 `norm: "rms"`), row by row: y = x̂ ⊙ w with
// x̂ = x·s, s = 1/√(mean(x²) + eps), as autograd differentiates T5's T5LayerNorm. With
// g = dy ⊙ w and ∂s/∂x_k = −s³·x_k/d, ∂L/∂x = s·(g − x̂·mean(g ⊙ x̂)): LayerNorm's formula
// without the mean term, since no mean is subtracted.
#pragma once

#include <cmath>
#include <string>

#include <relpos/core.hpp>
#include <relpos/detail/linear_grad.hpp>
#include <relpos/detail/shape_checks.hpp>
#include <relpos/layer_norm_grad.hpp>
#include <relpos/rms_norm.hpp>

namespace relpos {

namespace detail {

// RMSNorm's and Norm's (kind rms) shared body: both have validate(), dim(), weight and eps.
// saved: x̂ = x·s (len, d) and s (len), LayerNormSaved's fields with s = 1/rms.
template <Scalar T, class N>
void rms_norm_forward_saving(const N& norm, InRef<T> x, OutRef<T> out, LayerNormSaved<T>& saved) {
  norm.validate();
  if (x.cols() != norm.dim() || out.cols() != norm.dim() || out.rows() != x.rows()) {
    throw Error("RMSNorm forward_saving: x and out: expected (len, d = " +
                std::to_string(norm.dim()) + "), got " + shape_string(x.rows(), x.cols()) +
                " and " + shape_string(out.rows(), out.cols()));
  }
  saved.x_hat.resize(x.rows(), x.cols());
  saved.inv_std.resize(x.rows());
  const T inv_d = T(1) / static_cast<T>(norm.dim());
  for (Index i = 0; i < x.rows(); ++i) {
    // s = 1/√(mean(x²) + eps), computed as rms_norm_rows does (the same bits)
    const T mean_square = x.row(i).squaredNorm() * inv_d;
    const T inv_rms = T(1) / std::sqrt(mean_square + static_cast<T>(norm.eps));
    saved.inv_std(i) = inv_rms;
    // x̂ = x·s, y = x̂ ⊙ w
    saved.x_hat.row(i).array() = x.row(i).array() * inv_rms;
    out.row(i).array() = saved.x_hat.row(i).array() * norm.weight.transpose().array();
  }
}

template <Scalar T, class N>
void rms_norm_backward(const N& norm, const LayerNormSaved<T>& saved, InRef<T> dy, OutRef<T> dx,
                       LayerNormGrad<T>& grad) {
  const Index len = saved.x_hat.rows(), d = norm.dim();
  if (saved.x_hat.cols() != d || saved.inv_std.size() != len) {
    throw Error("RMSNorm backward: saved: expected x̂ (len, d = " + std::to_string(d) +
                ") and s (len), got " + shape_string(saved.x_hat.rows(), saved.x_hat.cols()) +
                " and [" + std::to_string(saved.inv_std.size()) + "]");
  }
  check_output_grad("RMSNorm backward", dy.rows(), dy.cols(), len, d);
  check_output_grad("RMSNorm backward: dx", dx.rows(), dx.cols(), len, d);
  prepare_grad<T>(grad.weight, d, "RMSNorm", " weight");
  if (grad.bias.size() != 0) {
    throw Error("RMSNorm bias gradient: expected empty (an RMSNorm has no bias), got [" +
                std::to_string(grad.bias.size()) + "]");
  }
  const T inv_d = T(1) / static_cast<T>(d);
  for (Index i = 0; i < len; ++i) {
    const auto x_hat = saved.x_hat.row(i).array();
    // ∂L/∂w += dy ⊙ x̂ (summed over the rows)
    grad.weight.array() += (dy.row(i).array() * x_hat).transpose();
    // g = ∂L/∂x̂ = dy ⊙ w
    const auto g = dy.row(i).array() * norm.weight.transpose().array();
    const T mean_gx = (g * x_hat).sum() * inv_d;
    // ∂L/∂x = s·(g − x̂·mean(g ⊙ x̂)): s depends on every x of the row
    dx.row(i).array() = saved.inv_std(i) * (g - x_hat * mean_gx);
  }
}

}  // namespace detail

/// out = norm(x) as RMSNorm::forward computes it (the same bits), keeping x̂ and s in `saved`.
/// x, out: (len, d); they may be the same matrix.
template <Scalar T>
void forward_saving(const RMSNorm<T>& norm, detail::InRef<T> x, detail::OutRef<T> out,
                    LayerNormSaved<T>& saved) {
  detail::rms_norm_forward_saving<T>(norm, x, out, saved);
}

/// From dy = ∂L/∂y (len, d): adds ∂L/∂w into grad.weight (empty: starts at zero; grad.bias
/// must stay empty) and writes dx = ∂L/∂x (len, d). dx may be dy itself.
template <Scalar T>
void backward(const RMSNorm<T>& norm, const LayerNormSaved<T>& saved, detail::InRef<T> dy,
              detail::OutRef<T> dx, LayerNormGrad<T>& grad) {
  detail::rms_norm_backward<T>(norm, saved, dy, dx, grad);
}

}  // namespace relpos
