// SPDX-License-Identifier: MIT
// The backward of the feed-forward network (feed_forward.hpp), y = linear2(act(linear1(x))),
// act = relu or exact gelu, with torch's derivatives: relu'(a) = 1 where a > 0, else 0 (0 at
// a = 0, as torch's threshold_backward); gelu'(a) = Φ(a) + a·φ(a) for gelu(a) = a·Φ(a).
#pragma once

#include <cmath>
#include <string>

#include <relpos/core.hpp>
#include <relpos/detail/gemm.hpp>
#include <relpos/detail/linear_grad.hpp>
#include <relpos/detail/shape_checks.hpp>
#include <relpos/feed_forward.hpp>

namespace relpos {

/// What the feed-forward's forward keeps for its backward: len·(d_model + 2·d_ff) scalars.
/// backward() reuses `hidden` as its buffer for ∂L/∂h, so a saved state serves one backward.
template <Scalar T>
struct FeedForwardSaved {
  Matrix<T> x;       // (len, d_model): the input, for ∂L/∂W1 (the caller may overwrite its own)
  Matrix<T> pre;     // (len, d_ff): a = linear1(x), the activation's pre-image, for act'(a)
  Matrix<T> hidden;  // (len, d_ff): h = act(a), for ∂L/∂W2
};

/// ∂L/∂ of the four tensors, named as in the model file (`<prefix>linear1.weight`, ...; prefix
/// e.g. "layers.0.", as FeedForward::load). backward() adds into them.
template <Scalar T>
struct FeedForwardGrad {
  Matrix<T> linear1_weight;  // (d_ff, d_model)
  Vector<T> linear1_bias;    // (d_ff)
  Matrix<T> linear2_weight;  // (d_model, d_ff)
  Vector<T> linear2_bias;    // (d_model)

  /// f(name, gradient) for each tensor, names as in the model file.
  template <class F>
  void for_each(const std::string& prefix, F&& f) {
    f(prefix + "linear1.weight", linear1_weight);
    f(prefix + "linear1.bias", linear1_bias);
    f(prefix + "linear2.weight", linear2_weight);
    f(prefix + "linear2.bias", linear2_bias);
  }
};

namespace detail {

// gelu'(a) = Φ(a) + a·φ(a), φ(a) = exp(−a²/2)/√(2π)
template <Scalar T>
T gelu_exact_derivative(T a) {
  const T inv_sqrt2 = static_cast<T>(0.70710678118654752440);
  const T inv_sqrt_2pi = static_cast<T>(0.39894228040143267794);
  return T(0.5) * (T(1) + std::erf(a * inv_sqrt2)) + a * inv_sqrt_2pi * std::exp(T(-0.5) * a * a);
}

}  // namespace detail

/// out = ffn(x) as FeedForward::forward computes it, keeping x, a and h in `saved`.
/// x, out: (len, d_model), not aliased.
template <Scalar T>
void forward_saving(const FeedForward<T>& ffn, detail::InRef<T> x, detail::OutRef<T> out,
                    FeedForwardSaved<T>& saved) {
  ffn.validate();
  // spec §7's options have no backward yet: refused, rather than a wrong gradient
  if (ffn.gated())
    throw Error("FeedForward forward_saving: linear3_weight: gated: no backward yet");
  if (!ffn.has_bias())
    throw Error("FeedForward forward_saving: linear1_bias: empty (bias false): no backward yet");
  if (ffn.activation == Activation::gelu_tanh)
    throw Error("FeedForward forward_saving: activation: gelu_tanh: no backward yet");
  if (x.cols() != ffn.d_model() || out.cols() != ffn.d_model() || out.rows() != x.rows()) {
    throw Error("FeedForward forward_saving: x and out: expected (len, d_model = " +
                std::to_string(ffn.d_model()) + "), got " +
                detail::shape_string(x.rows(), x.cols()) + " and " +
                detail::shape_string(out.rows(), out.cols()));
  }
  saved.x = x;
  saved.pre.resize(x.rows(), ffn.d_ff());
  saved.hidden.resize(x.rows(), ffn.d_ff());
  // a = x·W1ᵀ + b1
  detail::linear<T>(x, ffn.linear1_weight, ffn.linear1_bias, saved.pre);
  // h = act(a)
  if (ffn.activation == Activation::relu) {
    saved.hidden = saved.pre.cwiseMax(T(0));
  } else {
    saved.hidden = saved.pre.unaryExpr([](T v) { return detail::activate(Activation::gelu, v); });
  }
  // y = h·W2ᵀ + b2
  detail::linear<T>(saved.hidden, ffn.linear2_weight, ffn.linear2_bias, out);
}

/// From dy = ∂L/∂y (len, d_model): adds the four weight gradients into grad (empty ones start
/// at zero) and writes dx = ∂L/∂x (len, d_model). Spends saved.hidden (it becomes ∂L/∂a).
template <Scalar T>
void backward(const FeedForward<T>& ffn, FeedForwardSaved<T>& saved, detail::InRef<T> dy,
              detail::OutRef<T> dx, FeedForwardGrad<T>& grad) {
  const Index len = saved.x.rows();
  if (saved.x.cols() != ffn.d_model() || saved.pre.rows() != len ||
      saved.pre.cols() != ffn.d_ff() || saved.hidden.rows() != len ||
      saved.hidden.cols() != ffn.d_ff()) {
    throw Error("FeedForward backward: saved: expected x (len, " + std::to_string(ffn.d_model()) +
                "), a and h (len, " + std::to_string(ffn.d_ff()) + "), got " +
                detail::shape_string(saved.x.rows(), saved.x.cols()) + ", " +
                detail::shape_string(saved.pre.rows(), saved.pre.cols()) + ", " +
                detail::shape_string(saved.hidden.rows(), saved.hidden.cols()));
  }
  detail::check_output_grad("FeedForward backward", dy.rows(), dy.cols(), len, ffn.d_model());
  detail::prepare_grad<T>(grad.linear2_weight, ffn.d_model(), ffn.d_ff(), "linear2", ".weight");
  detail::prepare_grad<T>(grad.linear2_bias, ffn.d_model(), "linear2", ".bias");
  // ∂L/∂W2 += dyᵀ·h, ∂L/∂b2 += Σ dy
  detail::matmul_tn_accumulate<T>(dy, saved.hidden, grad.linear2_weight);
  grad.linear2_bias += dy.colwise().sum().transpose();
  // ∂L/∂h = dy·W2, written over h, which the line above was the last to read
  Matrix<T>& dh = saved.hidden;
  detail::matmul_nn<T>(dy, ffn.linear2_weight, dh);
  // ∂L/∂a = ∂L/∂h ⊙ act'(a)
  if (ffn.activation == Activation::relu) {
    dh.array() = (saved.pre.array() > T(0)).select(dh.array(), T(0));
  } else {
    dh.array() *= saved.pre.unaryExpr([](T v) { return detail::gelu_exact_derivative(v); }).array();
  }
  // ∂L/∂W1 += (∂L/∂a)ᵀ·x, ∂L/∂b1 += Σ ∂L/∂a, ∂L/∂x = (∂L/∂a)·W1
  detail::linear_backward<T>(saved.x, ffn.linear1_weight, dh, dx, grad.linear1_weight,
                             grad.linear1_bias, "linear1");
}

}  // namespace relpos
