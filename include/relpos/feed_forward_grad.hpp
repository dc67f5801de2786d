// SPDX-License-Identifier: MIT
// The backward of the feed-forward network (feed_forward.hpp), y = linear2(act(linear1(x))), or
// gated (spec §7): y = linear2(act(linear1(x)) ⊙ linear3(x)), with or without biases, with
// torch's derivatives: relu'(a) = 1 where a > 0, else 0 (0 at a = 0, as torch's
// threshold_backward); gelu'(a) = Φ(a) + a·φ(a) for gelu(a) = a·Φ(a); gelu_tanh'(a) =
// ½(1 + tanh u) + ½a·(1 − tanh²u)·√(2/π)(1 + 3·0.044715·a²), u = √(2/π)(a + 0.044715·a³).
// Gated, with m = act(a) ⊙ g (a = linear1 x, g = linear3 x): ∂L/∂a = ∂L/∂m ⊙ g ⊙ act'(a) and
// ∂L/∂g = ∂L/∂m ⊙ act(a).
#pragma once

#include <string>

#include <relpos/core.hpp>
#include <relpos/detail/gemm.hpp>
#include <relpos/detail/linear_grad.hpp>
#include <relpos/detail/shape_checks.hpp>
#include <relpos/feed_forward.hpp>

namespace relpos {

/// What the feed-forward's forward keeps for its backward: len·(d_model + 2·d_ff) scalars, and
/// len·d_ff more when gated. backward() reuses `hidden` (and, gated, `pre` and `gate`) as its
/// buffers, so a saved state serves one backward.
template <Scalar T>
struct FeedForwardSaved {
  Matrix<T> x;       // (len, d_model): the input, for ∂L/∂W1 (the caller may overwrite its own)
  Matrix<T> pre;     // (len, d_ff): a = linear1(x), the activation's pre-image, for act'(a)
  Matrix<T> hidden;  // (len, d_ff): h = act(a), or m = act(a) ⊙ g when gated, for ∂L/∂W2
  Matrix<T> gate;    // (len, d_ff): g = linear3(x) when gated, else empty
};

/// ∂L/∂ of the layer's tensors, named as in the model file (`<prefix>linear1.weight`, ...;
/// prefix e.g. "layers.0.", as FeedForward::load). backward() adds into them; the biases stay
/// empty for a layer without biases, linear3's for a plain one.
template <Scalar T>
struct FeedForwardGrad {
  Matrix<T> linear1_weight;  // (d_ff, d_model)
  Vector<T> linear1_bias;    // (d_ff), or empty
  Matrix<T> linear2_weight;  // (d_model, d_ff)
  Vector<T> linear2_bias;    // (d_model), or empty
  Matrix<T> linear3_weight;  // (d_ff, d_model) when gated, else empty
  Vector<T> linear3_bias;    // (d_ff) when gated with biases, else empty

  /// f(name, gradient) for each tensor the layer has (the weights, and the biases and linear3
  /// once backward has filled them), names as in the model file.
  template <class F>
  void for_each(const std::string& prefix, F&& f) {
    f(prefix + "linear1.weight", linear1_weight);
    if (linear1_bias.size() > 0) f(prefix + "linear1.bias", linear1_bias);
    f(prefix + "linear2.weight", linear2_weight);
    if (linear2_bias.size() > 0) f(prefix + "linear2.bias", linear2_bias);
    if (linear3_weight.size() > 0) f(prefix + "linear3.weight", linear3_weight);
    if (linear3_bias.size() > 0) f(prefix + "linear3.bias", linear3_bias);
  }
};

namespace detail {

/// use(act'(a)): the activation's derivative over an Eigen array expression a (the file
/// comment's formulas), as an expression in Eigen's packet erf, exp and tanh, like
/// with_activation for the forward.
template <Scalar T, class Derived, class Use>
void with_activation_derivative(Activation act, const Eigen::ArrayBase<Derived>& a, Use&& use) {
  const T inv_sqrt2 = static_cast<T>(0.70710678118654752440);       // 1/√2
  const T inv_sqrt_2pi = static_cast<T>(0.39894228040143267794);    // 1/√(2π)
  const T sqrt_2_over_pi = static_cast<T>(0.79788456080286535588);  // √(2/π)
  const T c = T(0.044715);
  switch (act) {
    case Activation::relu:
      use((a > T(0)).template cast<T>());
      return;
    case Activation::gelu:
      // Φ(a) + a·φ(a), φ(a) = exp(−a²/2)/√(2π)
      use(T(0.5) * (T(1) + (a * inv_sqrt2).erf()) +
          inv_sqrt_2pi * a * (T(-0.5) * a.square()).exp());
      return;
    case Activation::gelu_tanh:
      break;
  }
  // ½(1 + t) + ½a·(1 − t²)·√(2/π)(1 + 3c·a²), t = tanh u: t appears twice, so the pass
  // computes tanh twice per element, still in packets and cheaper than one libm call
  const auto t = (sqrt_2_over_pi * (a + c * a.cube())).tanh();
  use(T(0.5) * (T(1) + t) +
      (T(0.5) * sqrt_2_over_pi) * a * (T(1) - t.square()) * (T(1) + (T(3) * c) * a.square()));
}

// The bias gradient of a linear: prepared when the layer has biases, else it must stay empty.
template <Scalar T>
void prepare_bias_grad(Vector<T>& g, bool has_bias, Index size, const char* owner) {
  if (has_bias) {
    prepare_grad<T>(g, size, owner, ".bias");
  } else {
    check_absent_grad<T>(g, owner, ".bias");
  }
}

}  // namespace detail

/// out = ffn(x) as FeedForward::forward computes it, keeping x, a, h (and g) in `saved`.
/// x, out: (len, d_model), not aliased.
template <Scalar T>
void forward_saving(const FeedForward<T>& ffn, detail::InRef<T> x, detail::OutRef<T> out,
                    FeedForwardSaved<T>& saved) {
  ffn.validate();
  if (x.cols() != ffn.d_model() || out.cols() != ffn.d_model() || out.rows() != x.rows()) {
    throw Error("FeedForward forward_saving: x and out: expected (len, d_model = " +
                std::to_string(ffn.d_model()) + "), got " +
                detail::shape_string(x.rows(), x.cols()) + " and " +
                detail::shape_string(out.rows(), out.cols()));
  }
  saved.x = x;
  saved.pre.resize(x.rows(), ffn.d_ff());
  saved.hidden.resize(x.rows(), ffn.d_ff());
  // a = x·W1ᵀ (+ b1)
  detail::linear<T>(x, ffn.linear1_weight, ffn.linear1_bias, saved.pre);
  if (ffn.gated()) {
    // g = x·W3ᵀ (+ b3), m = act(a) ⊙ g
    saved.gate.resize(x.rows(), ffn.d_ff());
    detail::linear<T>(x, ffn.linear3_weight, ffn.linear3_bias, saved.gate);
    detail::with_activation<T>(ffn.activation, saved.pre.array(), [&](const auto& act_a) {
      saved.hidden.array() = act_a * saved.gate.array();
    });
  } else {
    // h = act(a)
    saved.gate.resize(0, 0);
    detail::with_activation<T>(ffn.activation, saved.pre.array(),
                               [&](const auto& act_a) { saved.hidden.array() = act_a; });
  }
  // y = m·W2ᵀ (+ b2)
  detail::linear<T>(saved.hidden, ffn.linear2_weight, ffn.linear2_bias, out);
}

/// From dy = ∂L/∂y (len, d_model): adds the weight gradients into grad (empty ones start at
/// zero) and writes dx = ∂L/∂x (len, d_model). Spends saved.hidden, saved.pre and saved.gate.
template <Scalar T>
void backward(const FeedForward<T>& ffn, FeedForwardSaved<T>& saved, detail::InRef<T> dy,
              detail::OutRef<T> dx, FeedForwardGrad<T>& grad) {
  const Index len = saved.x.rows(), d_ff = ffn.d_ff();
  const bool gated = ffn.gated(), bias = ffn.has_bias();
  if (saved.x.cols() != ffn.d_model() || saved.pre.rows() != len || saved.pre.cols() != d_ff ||
      saved.hidden.rows() != len || saved.hidden.cols() != d_ff ||
      (gated && (saved.gate.rows() != len || saved.gate.cols() != d_ff))) {
    throw Error("FeedForward backward: saved: expected x (len, " + std::to_string(ffn.d_model()) +
                "), a and h" + (gated ? " and g" : "") + " (len, " + std::to_string(d_ff) +
                "), got " + detail::shape_string(saved.x.rows(), saved.x.cols()) + ", " +
                detail::shape_string(saved.pre.rows(), saved.pre.cols()) + ", " +
                detail::shape_string(saved.hidden.rows(), saved.hidden.cols()) +
                (gated ? ", " + detail::shape_string(saved.gate.rows(), saved.gate.cols()) : ""));
  }
  detail::check_output_grad("FeedForward backward", dy.rows(), dy.cols(), len, ffn.d_model());
  detail::prepare_grad<T>(grad.linear2_weight, ffn.d_model(), d_ff, "linear2", ".weight");
  detail::prepare_bias_grad<T>(grad.linear2_bias, bias, ffn.d_model(), "linear2");
  // ∂L/∂W2 += dyᵀ·m, ∂L/∂b2 += Σ dy
  detail::matmul_tn_accumulate<T>(dy, saved.hidden, grad.linear2_weight);
  if (bias) grad.linear2_bias += dy.colwise().sum().transpose();
  // ∂L/∂m = dy·W2, written over m, which the line above was the last to read
  Matrix<T>& dm = saved.hidden;
  detail::matmul_nn<T>(dy, ffn.linear2_weight, dm);
  const Activation act = ffn.activation;
  if (gated) {
    // ∂L/∂a = ∂L/∂m ⊙ g ⊙ act'(a) (over ∂L/∂m) and ∂L/∂g = ∂L/∂m ⊙ act(a) (over a, which
    // nothing reads after): three vectorized passes, g ⊙ act'(a) first into g's buffer
    detail::with_activation_derivative<T>(act, saved.pre.array(),
                                          [&](const auto& slope) { saved.gate.array() *= slope; });
    detail::with_activation<T>(act, saved.pre.array(),
                               [&](const auto& act_a) { saved.pre.array() = dm.array() * act_a; });
    dm.array() *= saved.gate.array();
    Matrix<T>& d_gate = saved.pre;
    // ∂L/∂W3 += (∂L/∂g)ᵀ·x, ∂L/∂b3 += Σ ∂L/∂g, ∂L/∂x = ∂L/∂g·W3
    detail::linear_backward<T>(saved.x, ffn.linear3_weight, d_gate, dx, grad.linear3_weight,
                               grad.linear3_bias, "linear3", bias);
    // then linear1's, through its weight gradient and ∂L/∂x += ∂L/∂a·W1 (both branches)
    detail::prepare_grad<T>(grad.linear1_weight, d_ff, ffn.d_model(), "linear1", ".weight");
    detail::prepare_bias_grad<T>(grad.linear1_bias, bias, d_ff, "linear1");
    detail::matmul_tn_accumulate<T>(dm, saved.x, grad.linear1_weight);
    if (bias) grad.linear1_bias += dm.colwise().sum().transpose();
    detail::matmul_nn<T>(dm, ffn.linear1_weight, dx, /*accumulate=*/true);
    return;
  }
  // ∂L/∂a = ∂L/∂h ⊙ act'(a)
  if (act == Activation::relu) {
    dm.array() = (saved.pre.array() > T(0)).select(dm.array(), T(0));
  } else {
    detail::with_activation_derivative<T>(act, saved.pre.array(),
                                          [&](const auto& slope) { dm.array() *= slope; });
  }
  // ∂L/∂W1 += (∂L/∂a)ᵀ·x, ∂L/∂b1 += Σ ∂L/∂a, ∂L/∂x = (∂L/∂a)·W1
  detail::linear_backward<T>(saved.x, ffn.linear1_weight, dm, dx, grad.linear1_weight,
                             grad.linear1_bias, "linear1", bias);
}

}  // namespace relpos
