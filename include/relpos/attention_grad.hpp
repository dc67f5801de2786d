// SPDX-License-Identifier: MIT
// The backward of multi-head self-attention (attention.hpp, spec §3), so far for position types
// none and rotary (every scaling; the gradient flows back through the rotation's transpose,
// encodings/rotary.hpp), the score biases t5 (one gradient per bucket of the shared table) and
// alibi, and the types that act on the block's input only: packed in_proj,
// out_proj, key padding and causal masks, and rows with no visible key (α_i = 0, so no gradient
// flows through them and none is NaN). The relative terms of the encodings plug in here next,
// through the same hooks as the forward.
//
// Memory: like FlashAttention-2 (Dao 2023), backward keeps no (len × len) matrix. It recomputes
// the scores of kRows query rows at a time against all keys, and uses
// D_i = Σ_j α_ij ∂L/∂α_ij to form the softmax's gradient, so a step keeps O(len·d_model) per
// layer and works in O(kRows·len) more.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include <relpos/attention.hpp>
#include <relpos/core.hpp>
#include <relpos/detail/gemm.hpp>
#include <relpos/detail/linear_grad.hpp>
#include <relpos/detail/shape_checks.hpp>
#include <relpos/detail/tiled_attention.hpp>
#include <relpos/encodings/none.hpp>
#include <relpos/workspace.hpp>

namespace relpos {

/// What attention's forward keeps for its backward: len·5·d_model scalars, no (len × len).
template <Scalar T>
struct AttentionSaved {
  Matrix<T> x;    // (len, d_model): the input, for ∂L/∂in_proj_weight
  Matrix<T> qkv;  // (len, 3·d_model): q | k | v after in_proj (q, k rotated for rotary), heads
                  // side by side in each
  Matrix<T> z;    // (len, d_model): the heads' outputs before out_proj, for ∂L/∂out_proj.weight
};

/// ∂L/∂ of the layer's four tensors, named as in the model file (`<prefix>in_proj_weight`, ...;
/// prefix e.g. "layers.0.self_attn.", as MultiHeadAttention::load). backward() adds into them.
template <Scalar T>
struct AttentionGrad {
  Matrix<T> in_proj_weight;   // (3·d_model, d_model)
  Vector<T> in_proj_bias;     // (3·d_model)
  Matrix<T> out_proj_weight;  // (d_model, d_model)
  Vector<T> out_proj_bias;    // (d_model)
  /// t5: ∂L/∂position.relative_attention_bias (num_buckets, n_heads) from this layer. The table
  /// is shared by every layer, so it is not one of this layer's tensors: for_each leaves it out,
  /// and EncoderGrad sums the layers' into its `position.relative_attention_bias`.
  Matrix<T> relative_attention_bias;

  /// f(name, gradient) for each of the layer's own tensors, names as in the model file.
  template <class F>
  void for_each(const std::string& prefix, F&& f) {
    f(prefix + "in_proj_weight", in_proj_weight);
    f(prefix + "in_proj_bias", in_proj_bias);
    f(prefix + "out_proj.weight", out_proj_weight);
    f(prefix + "out_proj.bias", out_proj_bias);
  }
};

namespace detail {

/// The backward of transform_qk: dq, dk (len, n_heads·d_head) from ∂L/∂ of the transformed q
/// and k to ∂L/∂ of q and k before it, in place (rotary: Rotary::transform_qk_backward).
template <class E>
concept TransformsQKBackward = requires(const E& e, MatrixRef<typename E::Scalar> dq,
                                        MatrixRef<typename E::Scalar> dk, const Positions& p,
                                        Index h) {
  e.transform_qk_backward(dq, dk, p, h);
};

/// The backward of score_bias: g[c − lo] = ∂L/∂b_h(c) for clamped c in [lo, hi], added into
/// the encoding's table gradient (t5: T5Bias::score_bias_backward). A bias with no tensor
/// (alibi) has none.
template <class E>
concept ScoreBiasBackward = requires(const E& e, Index h, Index lo, Index hi,
                                     const typename E::Scalar* g,
                                     Matrix<typename E::Scalar>& grad) {
  e.score_bias_backward(h, lo, hi, g, grad);
};

/// Encodings whose attention backward exists so far: those with no hook inside attention
/// (none, and absolute / additive, which act on the block's input), rotary, and the score
/// biases (t5, alibi).
template <class Enc>
inline constexpr bool attention_backward_supported =
    !HasKeyTerm<Enc> && !HasValueTerm<Enc> && !HasHeadKeyTerm<Enc> &&
    (!TransformsQK<Enc> || TransformsQKBackward<Enc>);

inline void check_attention_io(const char* what, Index x_rows, Index x_cols, Index out_rows,
                               Index out_cols, Index d, Index positions_len) {
  if (x_cols != d || out_rows != x_rows || out_cols != d) {
    throw Error(std::string(what) + ": x and out: expected (len, d_model = " + std::to_string(d) +
                "), got " + shape_string(x_rows, x_cols) + " and " +
                shape_string(out_rows, out_cols));
  }
  if (positions_len != x_rows) {
    throw Error(std::string(what) + ": positions: expected len " + std::to_string(x_rows) +
                " (the rows of x), got " + std::to_string(positions_len));
  }
}

}  // namespace detail

/// out = attn(x) as MultiHeadAttention::forward computes it (the same products and the same
/// kernel, so the same bits), keeping x, q | k | v and z in `saved`. x, out: (len, d_model).
template <Scalar T, Encoding Enc>
void forward_saving(const MultiHeadAttention<T, Enc>& attn, detail::InRef<T> x,
                    detail::OutRef<T> out, const SequenceInputs& in, SequenceWorkspace<T>& ws,
                    AttentionSaved<T>& saved) {
  static_assert(detail::attention_backward_supported<Enc>,
                "attention backward: no backward for this position type's terms yet");
  attn.validate();
  // spec §7's bias false has no backward yet: refused, rather than a wrong gradient
  if (!attn.config.bias)
    throw Error("attention forward_saving: in_proj_bias: empty (bias false): no backward yet");
  const Index len = x.rows(), d = attn.d_model();
  detail::check_attention_io("attention forward_saving", x.rows(), x.cols(), out.rows(), out.cols(),
                             d, in.positions.len);
  saved.x = x;
  saved.qkv.resize(len, 3 * d);
  saved.z.resize(len, d);
  if (len == 0) return;
  // q | k | v = x·in_projᵀ + bias
  detail::linear<T>(x, attn.in_proj_weight, attn.in_proj_bias, saved.qkv);
  if constexpr (TransformsQK<Enc>) {
    // rotary: q and k rotated in place, as the forward does; saved so, the scores recompute
    MatrixRef<T> q(saved.qkv.leftCols(d));
    MatrixRef<T> k(saved.qkv.middleCols(d, d));
    attn.encoding.transform_qk(q, k, in.positions, attn.n_heads());
  }
  // z = softmax(q·kᵀ/√d_head + mask)·v per head, by the forward's own kernel
  const detail::AttentionGeometry geometry{.queries = in.positions,
                                           .keys = in.positions,
                                           .causal = attn.config.causal,
                                           .causal_offset = 0,
                                           .key_padding = in.key_padding};
  detail::TiledAttention<T, Enc>(attn.encoding, attn.n_heads(), attn.d_head())
      .run(saved.qkv.leftCols(d), saved.qkv.middleCols(d, d), saved.qkv.rightCols(d), geometry,
           saved.z, ws.attention);
  // out = z·out_projᵀ + bias
  detail::linear<T>(saved.z, attn.out_proj_weight, attn.out_proj_bias, out);
}

/// Query rows per block of backward: the recomputed scores and their gradient are two
/// (kAttentionBackwardRows, len) matrices.
inline constexpr Index kAttentionBackwardRows = 64;

/// From dy = ∂L/∂out (len, d_model): adds the four weight gradients into grad (empty ones start
/// at zero) and writes dx = ∂L/∂x (len, d_model). `in` must be the forward's.
template <Scalar T, Encoding Enc>
void backward(const MultiHeadAttention<T, Enc>& attn, const AttentionSaved<T>& saved,
              const SequenceInputs& in, detail::InRef<T> dy, detail::OutRef<T> dx,
              AttentionGrad<T>& grad) {
  static_assert(detail::attention_backward_supported<Enc>,
                "attention backward: no backward for this position type's terms yet");
  const Index len = saved.x.rows(), d = attn.d_model(), h_count = attn.n_heads(),
              dh = attn.d_head();
  if (saved.x.cols() != d || saved.qkv.rows() != len || saved.qkv.cols() != 3 * d ||
      saved.z.rows() != len || saved.z.cols() != d) {
    throw Error("attention backward: saved: expected x (len, " + std::to_string(d) +
                "), qkv (len, " + std::to_string(3 * d) + "), z (len, " + std::to_string(d) +
                "), got " + detail::shape_string(saved.x.rows(), saved.x.cols()) + ", " +
                detail::shape_string(saved.qkv.rows(), saved.qkv.cols()) + ", " +
                detail::shape_string(saved.z.rows(), saved.z.cols()));
  }
  detail::check_attention_io("attention backward", len, d, dx.rows(), dx.cols(), d,
                             in.positions.len);
  detail::check_output_grad("attention backward", dy.rows(), dy.cols(), len, d);
  detail::prepare_grad<T>(grad.in_proj_weight, 3 * d, d, "in_proj_weight", "");
  detail::prepare_grad<T>(grad.in_proj_bias, 3 * d, "in_proj_bias", "");
  // ∂L/∂W_o += dyᵀ·z, ∂L/∂b_o += Σ dy, ∂L/∂z = dy·W_o
  Matrix<T> dz(len, d);
  detail::linear_backward<T>(saved.z, attn.out_proj_weight, dy, dz, grad.out_proj_weight,
                             grad.out_proj_bias, "out_proj");
  // ∂L/∂(q | k | v): (len, 3·d_model), filled head by head
  Matrix<T> dqkv = Matrix<T>::Zero(len, 3 * d);
  const T scale = T(1) / std::sqrt(static_cast<T>(dh));
  const Index rows = std::min(kAttentionBackwardRows, std::max<Index>(len, 1));
  Matrix<T> p(rows, len), dp(rows, len);  // α and ∂L/∂α of a block of query rows
  // score biases (t5, alibi): b_h(c) and ∂L/∂b_h(c) per clamped distance c in [c_lo, c_hi],
  // R = c_hi − c_lo + 1 values per head (t5 clamps to ±max_distance; alibi spans the positions)
  [[maybe_unused]] Index c_lo = 0, c_hi = -1;
  [[maybe_unused]] std::vector<T> bias, dbias;
  if constexpr (HasScoreBias<Enc>) {
    if (len > 0) {
      std::int64_t p_min = in.positions[0], p_max = in.positions[0];
      for (Index i = 1; i < len; ++i) {
        p_min = std::min(p_min, in.positions[i]);
        p_max = std::max(p_max, in.positions[i]);
      }
      c_lo = attn.encoding.clamp_distance(p_min - p_max);
      c_hi = attn.encoding.clamp_distance(p_max - p_min);
      if (c_hi - c_lo + 1 > 64 * len + 1024) {
        throw Error(std::string("attention backward: position ids span ") +
                    std::to_string(c_hi - c_lo + 1) + " distances for " + std::to_string(len) +
                    " tokens; the " + Enc::name +
                    " backward keeps one value per distance and supports at most 64·len + 1024");
      }
      bias.resize(static_cast<std::size_t>(c_hi - c_lo + 1));
      dbias.resize(bias.size());
    }
  }
  for (Index h = 0; h < h_count; ++h) {
    if constexpr (HasScoreBias<Enc>) {
      if (len > 0) {
        attn.encoding.score_bias(h, c_lo, c_hi, bias.data());
        std::fill(dbias.begin(), dbias.end(), T(0));
      }
    }
    const auto q = saved.qkv.middleCols(h * dh, dh);          // (len, d_head)
    const auto k = saved.qkv.middleCols(d + h * dh, dh);      // (len, d_head)
    const auto v = saved.qkv.middleCols(2 * d + h * dh, dh);  // (len, d_head)
    const auto dz_h = dz.middleCols(h * dh, dh);              // (len, d_head)
    auto dq = dqkv.middleCols(h * dh, dh);
    auto dk = dqkv.middleCols(d + h * dh, dh);
    auto dv = dqkv.middleCols(2 * d + h * dh, dh);
    for (Index r0 = 0; r0 < len; r0 += rows) {
      const Index n = std::min(rows, len - r0);
      auto pb = p.topRows(n);
      auto dpb = dp.topRows(n);
      // e = q·kᵀ/√d_head over the block's rows, recomputed (none is kept)
      pb.noalias() = q.middleRows(r0, n) * k.transpose();
      pb *= scale;
      if constexpr (HasScoreBias<Enc>) {
        // + b_h(c_ij), after the scale (spec §3)
        for (Index i = 0; i < n; ++i) {
          for (Index j = 0; j < len; ++j) {
            const auto c = attn.encoding.clamp_distance(in.positions[j] - in.positions[r0 + i]);
            pb(i, j) += bias[static_cast<std::size_t>(c - c_lo)];
          }
        }
      }
      // α = softmax over the visible keys; a row with none visible is all zeros (spec §2)
      for (Index i = 0; i < n; ++i) {
        const Index end = attn.config.causal ? std::min(r0 + i + 1, len) : len;
        T max = -std::numeric_limits<T>::infinity();
        for (Index j = 0; j < end; ++j) {
          if (in.key_padding == nullptr || !in.key_padding[j]) max = std::max(max, pb(i, j));
        }
        if (max == -std::numeric_limits<T>::infinity()) {
          pb.row(i).setZero();
          continue;
        }
        T sum = 0;
        for (Index j = 0; j < len; ++j) {
          const bool visible = j < end && (in.key_padding == nullptr || !in.key_padding[j]);
          pb(i, j) = visible ? std::exp(pb(i, j) - max) : T(0);
          sum += pb(i, j);
        }
        pb.row(i) /= sum;
      }
      // ∂L/∂v += αᵀ·∂L/∂z
      dv.noalias() += pb.transpose() * dz_h.middleRows(r0, n);
      // ∂L/∂α = ∂L/∂z·vᵀ
      dpb.noalias() = dz_h.middleRows(r0, n) * v.transpose();
      // ∂L/∂e = α ⊙ (∂L/∂α − D), D_i = Σ_j α_ij ∂L/∂α_ij (softmax's Jacobian; α = 0 where masked)
      for (Index i = 0; i < n; ++i) {
        const T d_i = pb.row(i).dot(dpb.row(i));
        dpb.row(i).array() = pb.row(i).array() * (dpb.row(i).array() - d_i);
      }
      if constexpr (HasScoreBias<Enc>) {
        // ∂L/∂b_h(c) = Σ over the pairs at clamped distance c of ∂L/∂e_ij (no 1/√d_head: the
        // bias is added after it)
        for (Index i = 0; i < n; ++i) {
          for (Index j = 0; j < len; ++j) {
            const auto c = attn.encoding.clamp_distance(in.positions[j] - in.positions[r0 + i]);
            dbias[static_cast<std::size_t>(c - c_lo)] += dpb(i, j);
          }
        }
      }
      dpb *= scale;
      // with the 1/√d_head folded in: ∂L/∂q = ∂L/∂e·k, ∂L/∂k += ∂L/∂eᵀ·q
      dq.middleRows(r0, n).noalias() = dpb * k;
      dk.noalias() += dpb.transpose() * q.middleRows(r0, n);
    }
    if constexpr (detail::ScoreBiasBackward<Enc>) {
      if (len > 0) {
        attn.encoding.score_bias_backward(h, c_lo, c_hi, dbias.data(),
                                          grad.relative_attention_bias);
      }
    }
  }
  if constexpr (TransformsQK<Enc>) {
    // rotary: from ∂L/∂ of the rotated q, k to ∂L/∂ of in_proj's q, k (the rotation transposed)
    MatrixRef<T> dq(dqkv.leftCols(d));
    MatrixRef<T> dk(dqkv.middleCols(d, d));
    attn.encoding.transform_qk_backward(dq, dk, in.positions, h_count);
  }
  // ∂L/∂W_in += (∂L/∂qkv)ᵀ·x, ∂L/∂b_in += Σ ∂L/∂qkv, ∂L/∂x = ∂L/∂qkv·W_in
  detail::linear_backward<T>(saved.x, attn.in_proj_weight, dqkv, dx, grad.in_proj_weight,
                             grad.in_proj_bias, "in_proj");
}

}  // namespace relpos
