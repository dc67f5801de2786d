// SPDX-License-Identifier: MIT
// The backward of the output head (spec §1, output_head): logits = hidden·headᵀ + bias, a
// Linear from d_model to vocab_size after the encoder (Encoder::logits).
#pragma once

#include <string>

#include <relpos/core.hpp>
#include <relpos/detail/linear_grad.hpp>

namespace relpos {

/// ∂L/∂head.weight and ∂L/∂head.bias. The head keeps nothing of its own for backward: its
/// input is the encoder's output (len, d_model), which the caller holds anyway.
template <Scalar T>
struct OutputHeadGrad {
  Matrix<T> weight;  // (vocab_size, d_model)
  Vector<T> bias;    // (vocab_size)

  /// f(name, gradient): "head.weight", "head.bias".
  template <class F>
  void for_each(F&& f) {
    f(std::string("head.weight"), weight);
    f(std::string("head.bias"), bias);
  }
};

/// One sequence: hidden (len, d_model) is the head's input, head_weight (vocab_size, d_model),
/// dlogits (len, vocab_size) = ∂L/∂logits. Adds into grad (empty: starts at zero) and writes
/// dhidden (len, d_model) = ∂L/∂hidden.
template <Scalar T>
void output_head_backward(const Matrix<T>& head_weight, detail::InRef<T> hidden,
                          detail::InRef<T> dlogits, detail::OutRef<T> dhidden,
                          OutputHeadGrad<T>& grad) {
  // ∂L/∂W += dlogitsᵀ·hidden, ∂L/∂b += Σ dlogits, ∂L/∂hidden = dlogits·W
  detail::linear_backward<T>(hidden, head_weight, dlogits, dhidden, grad.weight, grad.bias, "head");
}

}  // namespace relpos
