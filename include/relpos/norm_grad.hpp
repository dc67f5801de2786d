// SPDX-License-Identifier: MIT
// The backward of a block's Norm (norm.hpp, spec §7's `norm`): LayerNorm's
// (layer_norm_grad.hpp) or RMSNorm's (rms_norm_grad.hpp), as the norm's kind says. Both keep a
// LayerNormSaved and fill a LayerNormGrad; an RMSNorm's has no bias.
#pragma once

#include <relpos/core.hpp>
#include <relpos/detail/linear_grad.hpp>
#include <relpos/layer_norm_grad.hpp>
#include <relpos/norm.hpp>
#include <relpos/rms_norm_grad.hpp>

namespace relpos {

/// out = norm(x) as Norm::forward computes it (the same bits), keeping x̂ and s in `saved`.
/// x, out: (len, d); they may be the same matrix.
template <Scalar T>
void forward_saving(const Norm<T>& norm, detail::InRef<T> x, detail::OutRef<T> out,
                    LayerNormSaved<T>& saved) {
  if (norm.kind == NormKind::layer) {
    detail::layer_norm_forward_saving<T>(norm, x, out, saved);
  } else {
    detail::rms_norm_forward_saving<T>(norm, x, out, saved);
  }
}

/// From dy = ∂L/∂y (len, d): adds ∂L/∂weight (and ∂L/∂bias for a LayerNorm) into grad and
/// writes dx = ∂L/∂x (len, d). dx may be dy itself.
template <Scalar T>
void backward(const Norm<T>& norm, const LayerNormSaved<T>& saved, detail::InRef<T> dy,
              detail::OutRef<T> dx, LayerNormGrad<T>& grad) {
  if (norm.kind == NormKind::layer) {
    detail::layer_norm_backward<T>(norm, saved, dy, dx, grad);
  } else {
    detail::rms_norm_backward<T>(norm, saved, dy, dx, grad);
  }
}

}  // namespace relpos
