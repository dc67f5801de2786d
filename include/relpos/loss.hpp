// SPDX-License-Identifier: MIT
// The training losses of spec §6 and their gradients: token cross-entropy of logits with
// ignore_index −100 and mean reduction (torch.nn.functional.cross_entropy), and the mean
// squared error over every element (torch.nn.functional.mse_loss).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include <relpos/core.hpp>
#include <relpos/detail/shape_checks.hpp>

namespace relpos {

// Targets are TokenIds (core.hpp): a class in [0, vocab_size), or kIgnoreTarget.

/// A target that is not counted (torch's default ignore_index).
inline constexpr std::int64_t kIgnoreTarget = -100;

namespace detail {

inline void check_targets(const TokenIds& targets, Index batch, Index len, Index vocab_size,
                          Index& counted) {
  if (targets.rows() != batch || targets.cols() != len) {
    throw Error("targets: expected " + shape_string(batch, len) +
                " (the logits' [batch, len]), got " + shape_string(targets.rows(), targets.cols()));
  }
  counted = 0;
  for (Index b = 0; b < batch; ++b) {
    for (Index i = 0; i < len; ++i) {
      const std::int64_t t = targets(b, i);
      if (t == kIgnoreTarget) continue;
      if (t < 0 || t >= vocab_size) {
        throw Error("targets" + shape_string(b, i) + ": expected 0 <= target < vocab_size " +
                    std::to_string(vocab_size) + " or -100 (ignored), got " + std::to_string(t));
      }
      ++counted;
    }
  }
  if (counted == 0) {
    throw Error("targets: no target to learn from (every position is -100)");
  }
}

}  // namespace detail

/// L = −(1/N) Σ_{(b,i): t ≠ −100} log softmax(z_bi)[t_bi], N the number of counted positions.
/// logits: [batch, len, vocab_size]; targets: [batch, len]. Returns L and writes dlogits (same
/// shape as logits) = ∂L/∂z: (softmax(z) − onehot(t))/N at counted positions, 0 at ignored
/// ones. A target outside [0, vocab_size) other than −100 throws Error naming its position
/// [b, i]; no counted position throws "no target to learn from". The sum is kept in double.
/// dlogits must not be logits itself.
template <Scalar T>
T cross_entropy(const Tensor3<T>& logits, const TokenIds& targets, Tensor3<T>& dlogits) {
  const Index batch = logits.dimension(0), len = logits.dimension(1), v = logits.dimension(2);
  detail::check_positive("cross_entropy: logits ", "vocab_size (last dimension)", v);
  Index counted = 0;
  detail::check_targets(targets, batch, len, v, counted);
  detail::resize_like(dlogits, batch, len, v);
  const T inv_n = T(1) / static_cast<T>(counted);
  double total = 0;
  for (Index b = 0; b < batch; ++b) {
    const auto z = item(logits, b);  // (len, vocab_size)
    auto g = item(dlogits, b);       // (len, vocab_size)
    for (Index i = 0; i < len; ++i) {
      const std::int64_t t = targets(b, i);
      if (t == kIgnoreTarget) {
        g.row(i).setZero();  // an ignored position adds nothing to L
        continue;
      }
      // log Σ exp(z) = m + log Σ exp(z − m), m the row max: exp() overflows in float past ~88
      const T m = z.row(i).maxCoeff();
      g.row(i).array() = (z.row(i).array() - m).exp();
      const T sum = g.row(i).sum();
      // −log softmax(z)[t] = log Σ exp(z) − z_t
      total += static_cast<double>(m + std::log(sum) - z(i, t));
      // ∂L/∂z = (softmax(z) − onehot(t))/N
      g.row(i) *= inv_n / sum;
      g(i, t) -= inv_n;
    }
  }
  return static_cast<T>(total / static_cast<double>(counted));
}

/// L = (1/n) Σ (output − target)², n = batch·len·d every element (padded positions included).
/// Returns L and writes doutput (output's shape) = ∂L/∂output = 2·(output − target)/n. A target
/// of another shape, or an empty output, throws Error.
template <Scalar T>
T mean_squared_error(const Tensor3<T>& output, const Tensor3<T>& target, Tensor3<T>& doutput) {
  if (output.dimensions() != target.dimensions()) {
    throw Error("target: expected [" + std::to_string(output.dimension(0)) + ", " +
                std::to_string(output.dimension(1)) + ", " + std::to_string(output.dimension(2)) +
                "] (the output's shape), got [" + std::to_string(target.dimension(0)) + ", " +
                std::to_string(target.dimension(1)) + ", " + std::to_string(target.dimension(2)) +
                "]");
  }
  if (output.size() == 0) throw Error("mean_squared_error: output is empty (no element)");
  detail::resize_like(doutput, output.dimension(0), output.dimension(1), output.dimension(2));
  const Index n = output.size();
  double total = 0;
  for (Index k = 0; k < n; ++k) {
    const T diff = output.data()[k] - target.data()[k];
    total += static_cast<double>(diff) * static_cast<double>(diff);
    // ∂L/∂o = 2·(o − t)/n
    doutput.data()[k] = T(2) * diff / static_cast<T>(n);
  }
  return static_cast<T>(total / static_cast<double>(n));
}

}  // namespace relpos
