// SPDX-License-Identifier: MIT
// The position-wise feed-forward network of a Transformer block (Vaswani et al. 2017), as in
// torch.nn.TransformerEncoderLayer: linear2(act(linear1(x))), act = relu, exact gelu (erf) or
// gelu's tanh approximation; or gated (spec §7, Shazeer 2020 "GLU variants", T5 v1.1):
// linear2(act(linear1(x)) ⊙ linear3(x)); with or without bias tensors.
#pragma once

#include <algorithm>
#include <string>

#include <relpos/core.hpp>
#include <relpos/detail/gemm.hpp>
#include <relpos/detail/shape_checks.hpp>
#include <relpos/tensor_source.hpp>
#include <relpos/workspace.hpp>

namespace relpos {

/// The feed-forward activation. gelu is the exact form x·Φ(x) = x/2·(1 + erf(x/√2)), torch's
/// default (approximate="none"); gelu_tanh is its tanh approximation (Hendrycks & Gimpel
/// 2016), torch's approximate="tanh" and Hugging Face's gelu_new (spec §7).
enum class Activation {
  relu,
  gelu,      // exact, erf-based, as torch's "gelu"
  gelu_tanh  // 0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³)))
};

namespace detail {
/// use(act(a)): the activation of an Eigen array expression a, by the formulas above, handed on
/// as an expression so the caller fuses it into its own pass (h = act(a) ⊙ g, say). Eigen's
/// erf and tanh run as SIMD packets for float (double: libm per element), where one std::erf
/// call per element made exact gelu cost ~15× a relu pass at d_ff 2048.
template <Scalar T, class Derived, class Use>
void with_activation(Activation act, const Eigen::ArrayBase<Derived>& a, Use&& use) {
  const T inv_sqrt2 = static_cast<T>(0.70710678118654752440);       // 1/√2
  const T sqrt_2_over_pi = static_cast<T>(0.79788456080286535588);  // √(2/π)
  switch (act) {
    case Activation::relu:
      use(a.max(T(0)));
      return;
    case Activation::gelu:
      use(T(0.5) * a * (T(1) + (a * inv_sqrt2).erf()));
      return;
    case Activation::gelu_tanh:
      use(T(0.5) * a * (T(1) + (sqrt_2_over_pi * (a + T(0.044715) * a.cube())).tanh()));
      return;
  }
}
}  // namespace detail

/// The shape of a feed-forward layer (spec §1 and §7's `ffn`, `bias`, `activation`).
struct FeedForwardConfig {
  Index d_model = 0;
  Index d_ff = 0;
  Activation activation = Activation::relu;
  bool gated = false;  // ffn "gated": linear3 [d_ff, d_model] multiplies act(linear1 x)
  bool bias = true;    // false: no linear{1,2,3}.bias tensors (T5)
};

template <Scalar T>
struct FeedForward {
  Activation activation = Activation::relu;
  // Biases are empty when the layer has none (bias: false); linear3 is empty unless gated.
  Matrix<T> linear1_weight;  // (d_ff, d_model), PyTorch [out, in]
  Vector<T> linear1_bias;    // (d_ff), or empty
  Matrix<T> linear2_weight;  // (d_model, d_ff)
  Vector<T> linear2_bias;    // (d_model), or empty
  Matrix<T> linear3_weight;  // (d_ff, d_model) when gated, else empty
  Vector<T> linear3_bias;    // (d_ff) when gated with biases, else empty

  FeedForward() = default;
  /// Zero weights of the given sizes (fill them, or use load()). Sizes < 1 throw Error
  /// before anything is allocated.
  explicit FeedForward(const FeedForwardConfig& c) : activation(c.activation) {
    detail::check_positive("FeedForward: ", "d_model", c.d_model);
    detail::check_positive("FeedForward: ", "d_ff", c.d_ff);
    linear1_weight = Matrix<T>::Zero(c.d_ff, c.d_model);
    linear2_weight = Matrix<T>::Zero(c.d_model, c.d_ff);
    if (c.gated) linear3_weight = Matrix<T>::Zero(c.d_ff, c.d_model);
    if (c.bias) {
      linear1_bias = Vector<T>::Zero(c.d_ff);
      linear2_bias = Vector<T>::Zero(c.d_model);
      if (c.gated) linear3_bias = Vector<T>::Zero(c.d_ff);
    }
  }
  /// The plain layer with biases (spec §1).
  FeedForward(Index d_model, Index d_ff, Activation act)
      : FeedForward(FeedForwardConfig{d_model, d_ff, act}) {}

  /// `prefix`linear1.weight [d_ff, d_model], .bias [d_ff], `prefix`linear2.weight
  /// [d_model, d_ff], .bias [d_model], and when gated `prefix`linear3.weight [d_ff, d_model],
  /// .bias [d_ff] (prefix e.g. "layers.0."); no .bias tensor when c.bias is false.
  template <TensorSource<T> File>
  static FeedForward load(const File& file, const std::string& prefix, const FeedForwardConfig& c) {
    FeedForward f(c);
    f.linear1_weight = file.template matrix<T>(prefix + "linear1.weight", c.d_ff, c.d_model);
    f.linear2_weight = file.template matrix<T>(prefix + "linear2.weight", c.d_model, c.d_ff);
    if (c.gated)
      f.linear3_weight = file.template matrix<T>(prefix + "linear3.weight", c.d_ff, c.d_model);
    if (c.bias) {
      f.linear1_bias = file.template vector<T>(prefix + "linear1.bias", c.d_ff);
      f.linear2_bias = file.template vector<T>(prefix + "linear2.bias", c.d_model);
      if (c.gated) f.linear3_bias = file.template vector<T>(prefix + "linear3.bias", c.d_ff);
    }
    return f;
  }
  template <TensorSource<T> File>
  static FeedForward load(const File& file, const std::string& prefix, Index d_model, Index d_ff,
                          Activation act) {
    return load(file, prefix, FeedForwardConfig{d_model, d_ff, act});
  }

  Index d_model() const { return linear1_weight.cols(); }
  Index d_ff() const { return linear1_weight.rows(); }
  bool gated() const { return linear3_weight.size() != 0; }
  bool has_bias() const { return linear1_bias.size() != 0; }
  FeedForwardConfig config() const { return {d_model(), d_ff(), activation, gated(), has_bias()}; }

  /// The weights agree with linear1_weight's [d_ff, d_model], each at least 1 wide, and the
  /// biases are all present or all empty (linear1_bias decides); else Error naming the field,
  /// the expected and the actual shape. O(1); forward calls it.
  void validate() const {
    detail::check_positive("linear1_weight: ", "rows (d_ff)", d_ff());
    detail::check_positive("linear1_weight: ", "columns (d_model)", d_model());
    detail::check_matrix("linear2_weight", linear2_weight, d_model(), d_ff(), "d_model, d_ff");
    if (gated())
      detail::check_matrix("linear3_weight", linear3_weight, d_ff(), d_model(), "d_ff, d_model");
    const auto bias = [&](const char* name, const Vector<T>& b, bool present, Index n,
                          const char* what) {
      if (has_bias() && present) {
        detail::check_vector(name, b, n, what);
      } else if (b.size() != 0) {
        throw Error(std::string(name) + ": expected empty (" +
                    (has_bias() ? "no linear3_weight" : "linear1_bias is empty: no biases") +
                    "), got [" + std::to_string(b.size()) + "]");
      }
    };
    bias("linear1_bias", linear1_bias, true, d_ff(), "d_ff");
    bias("linear2_bias", linear2_bias, true, d_model(), "d_model");
    bias("linear3_bias", linear3_bias, gated(), d_ff(), "d_ff");
  }

  /// Rows per pass of forward(): the hidden layer is (kRows, d_ff) at most whatever the
  /// length, so a long input's feed-forward adds 4 MiB (float, d_ff 2048), not len·d_ff.
  static constexpr Index kRows = 512;
  /// Hidden columns per pass of a gated forward: its linear1 and linear3 outputs for kRows rows
  /// take 2 · 512 KiB (float), about one core's L2, so act(a) ⊙ g reads them from there, where
  /// a full (kRows, d_ff) pair (8 MiB) made that pass a trip to L3 (d_ff 2048, len 512: 128
  /// columns 1.52× the plain FFN, 256 1.46×, 512 1.51×, all d_ff at once 1.55×).
  static constexpr Index kGateCols = 256;

  /// out = linear2(act(linear1(x))) (⊙ linear3(x) when gated); x, out: (len, d_model), not aliased.
  /// Rows are independent, so they go kRows at a time through the hidden layer in ws.hidden.
  void forward(ConstMatrixRef<T> x, MatrixRef<T> out, SequenceWorkspace<T>& ws) const {
    run(x, out, ws, /*accumulate=*/false);
  }

  /// out += ffn(x): a block's residual add done by linear2's product itself, so no (len,
  /// d_model) branch exists. x and out may be the same matrix (x += ffn(x)): each chunk of
  /// kRows rows makes its hidden layer from x's rows before linear2 adds into them.
  void forward_add(ConstMatrixRef<T> x, MatrixRef<T> out, SequenceWorkspace<T>& ws) const {
    run(x, out, ws, /*accumulate=*/true);
  }

 private:
  void run(ConstMatrixRef<T> x, MatrixRef<T> out, SequenceWorkspace<T>& ws, bool accumulate) const {
    validate();
    if (x.cols() != d_model() || out.cols() != d_model() || out.rows() != x.rows()) {
      throw Error(std::string("FeedForward::") + (accumulate ? "forward_add" : "forward") +
                  ": x and out: expected (len, d_model = " + std::to_string(d_model()) + "), got " +
                  detail::shape_string(x.rows(), x.cols()) + " and " +
                  detail::shape_string(out.rows(), out.cols()));
    }
    for (Index r0 = 0; r0 < x.rows(); r0 += kRows) {
      const Index n = std::min(kRows, x.rows() - r0);
      // h: (n, d_ff)
      auto h = ws.hidden.matrix(n, d_ff());
      if (gated()) {
        // h = act(linear1 x) ⊙ linear3 x, kGateCols columns at a time, g: (n, kGateCols)
        using BiasRef = Eigen::Ref<const Vector<T>>;
        for (Index c0 = 0; c0 < d_ff(); c0 += kGateCols) {
          const Index w = std::min(kGateCols, d_ff() - c0);
          auto a = h.middleCols(c0, w);
          auto g = ws.gate.matrix(n, w);
          const bool b = has_bias();
          detail::linear<T>(x.middleRows(r0, n), linear1_weight.middleRows(c0, w),
                            b ? BiasRef(linear1_bias.segment(c0, w)) : BiasRef(linear1_bias), a);
          detail::linear<T>(x.middleRows(r0, n), linear3_weight.middleRows(c0, w),
                            b ? BiasRef(linear3_bias.segment(c0, w)) : BiasRef(linear3_bias), g);
          detail::with_activation<T>(activation, a.array(),
                                     [&](const auto& act_a) { a.array() = act_a * g.array(); });
        }
      } else {
        detail::linear<T>(x.middleRows(r0, n), linear1_weight, linear1_bias, h);
        detail::with_activation<T>(activation, h.array(),
                                   [&](const auto& act_h) { h.array() = act_h; });
      }
      // x's rows [r0, r0 + n) are read: out's may change now (n, d_model)
      detail::linear<T>(h, linear2_weight, linear2_bias, out.middleRows(r0, n), accumulate);
    }
  }
};

}  // namespace relpos
