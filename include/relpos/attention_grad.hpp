// SPDX-License-Identifier: MIT
// The backward of multi-head self-attention (attention.hpp, spec §3), so far for position types
// none and rotary (every scaling; the gradient flows back through the rotation's transpose,
// encodings/rotary.hpp), the score biases t5 (one gradient per bucket of the shared table),
// kerple (r1, r2 per head, both forms: encodings/kerple.hpp) and alibi, the relative key and
// value terms of learned (Shaw et al. 2018: one gradient per clamped distance of the layer's
// relative_key / relative_value) and sinusoidal (fixed rows: the gradient flows through them to
// q and α only), Transformer-XL's per-head terms (the layer's r_net.weight, u and v shared by
// all layers: detail/head_key_grad.hpp, encodings/xl.hpp), DeBERTa's c2p and p2c (per-head
// terms with the roles of query and key swapped, detail/head_terms_grad.hpp; their rows'
// gradients chained into the projections and relative embeddings by
// DebertaRelative::head_rows_backward) under its scale 1/sqrt(d_head·(1 + c2p + p2c)), and the
// types that act on the block's input only: packed in_proj, out_proj, key padding and causal
// masks, and rows with no visible key (α_i = 0, so no gradient flows through them and none is
// NaN).
//
// Memory: like FlashAttention-2 (Dao 2023), backward keeps no (len × len) matrix. It recomputes
// the scores of kRows query rows at a time against all keys, and uses
// D_i = Σ_j α_ij ∂L/∂α_ij to form the softmax's gradient, so a step keeps O(len·d_model) per
// layer and works in O(kRows·len) more. The relative terms add an (kRows, R) matrix of sums per
// distance (RelativeTermsBackward), never a (len × len × d_head) tensor; xl's per-head terms
// the same plus the call's (R, d_model) ∂L/∂r(c) (HeadKeyTermsBackward), R <= 8·len.
// Every temporary comes from an AttentionBackwardScratch (backward_workspace.hpp), so a warm
// call allocates nothing; its heads run in parallel, one task per head writing only its own
// columns and partial sums, reduced in head order after the loop (the same bits for any thread
// count).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include <relpos/attention.hpp>
#include <relpos/backward_workspace.hpp>
#include <relpos/core.hpp>
#include <relpos/detail/gemm.hpp>
#include <relpos/detail/head_key_grad.hpp>
#include <relpos/detail/head_terms_grad.hpp>
#include <relpos/detail/linear_grad.hpp>
#include <relpos/detail/shape_checks.hpp>
#include <relpos/detail/skew.hpp>
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

/// ∂L/∂ of the layer's four tensors (two without biases), named as in the model file
/// (`<prefix>in_proj_weight`, ...; prefix e.g. "layers.0.self_attn.", as MultiHeadAttention::load).
/// backward() adds into them.
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
  /// learned: ∂L/∂ of this layer's own tables (2K + 1, d_head), `<prefix>relative_key` and
  /// `<prefix>relative_value` (spec §1; each layer has its own). Empty for the other types.
  Matrix<T> relative_key;
  Matrix<T> relative_value;
  /// deberta with share_att_key false: ∂L/∂ of the layer's `<prefix>pos_key_proj.weight` /
  /// `.bias` (c2p) and `pos_query_proj.*` (p2c); with it true, in_proj's rows get them.
  Matrix<T> pos_key_proj_weight, pos_query_proj_weight;  // (d_model, d_model)
  Vector<T> pos_key_proj_bias, pos_query_proj_bias;      // (d_model)
  /// deberta: this layer's share of ∂L/∂position.rel_embeddings (2S, d_model) and of
  /// position.rel_norm.weight / .bias (d_model). Shared by every layer, so left out of
  /// for_each, as relative_attention_bias: EncoderGrad sums them.
  Matrix<T> rel_embeddings;
  Vector<T> rel_norm_weight, rel_norm_bias;
  /// xl: ∂L/∂ of this layer's `<prefix>r_net.weight` (d_model, d_model), and ∂L/∂u, ∂L/∂v
  /// (n_heads, d_head) from this layer: u and v are shared by every layer, so, like t5's table,
  /// for_each leaves them out and EncoderGrad sums them into `position.r_w_bias` /
  /// `position.r_r_bias`.
  Matrix<T> r_net_weight;
  Matrix<T> r_w_bias;
  Matrix<T> r_r_bias;
  /// kerple: ∂L/∂r1, ∂L/∂r2 (n_heads) from this layer; shared, summed by EncoderGrad into
  /// `position.kerple_r1` / `position.kerple_r2`.
  Vector<T> kerple_r1;
  Vector<T> kerple_r2;

  /// f(name, gradient) for each of the layer's own tensors, names as in the model file; the
  /// biases only when backward has filled them (a layer with bias false has none).
  template <class F>
  void for_each(const std::string& prefix, F&& f) {
    f(prefix + "in_proj_weight", in_proj_weight);
    if (in_proj_bias.size() > 0) f(prefix + "in_proj_bias", in_proj_bias);
    f(prefix + "out_proj.weight", out_proj_weight);
    if (out_proj_bias.size() > 0) f(prefix + "out_proj.bias", out_proj_bias);
    if (relative_key.size() > 0) f(prefix + "relative_key", relative_key);
    if (relative_value.size() > 0) f(prefix + "relative_value", relative_value);
    if (pos_key_proj_weight.size() > 0) f(prefix + "pos_key_proj.weight", pos_key_proj_weight);
    if (pos_key_proj_bias.size() > 0) f(prefix + "pos_key_proj.bias", pos_key_proj_bias);
    if (pos_query_proj_weight.size() > 0) {
      f(prefix + "pos_query_proj.weight", pos_query_proj_weight);
    }
    if (pos_query_proj_bias.size() > 0) f(prefix + "pos_query_proj.bias", pos_query_proj_bias);
    if (r_net_weight.size() > 0) f(prefix + "r_net.weight", r_net_weight);
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

/// The backward of key_rows / value_rows: g (hi − lo + 1, d_head) = ∂L/∂aK(c) (∂L/∂aV(c)) for
/// clamped c in [lo, hi], added into the encoding's table gradient (learned:
/// LearnedRelative::key_rows_backward). Fixed rows (sinusoidal) have none.
template <class E>
concept RelativeRowsBackward = requires(const E& e, Index lo, Index hi,
                                        ConstMatrixRef<typename E::Scalar> g,
                                        Matrix<typename E::Scalar>& grad) {
  e.key_rows_backward(lo, hi, g, grad);
  e.value_rows_backward(lo, hi, g, grad);
};
/// The backward of a score bias with per-head parameters: g as ScoreBiasBackward's, added into
/// ∂L/∂ of the two [n_heads] tensors (kerple: KerpleBias::score_bias_backward, r1 and r2).
template <class E>
concept ScoreBiasParamsBackward = requires(const E& e, Index h, Index lo, Index hi,
                                           const typename E::Scalar* g,
                                           Vector<typename E::Scalar>& grad) {
  e.score_bias_backward(h, lo, hi, g, grad, grad);
};

/// The backward of head_key_rows: g (hi − lo + 1, n_heads·d_head) = ∂L/∂r(c), added into the
/// encoding's tensor (xl: XlRelative::head_key_rows_backward, r_net.weight); with Transformer-XL's
/// biases, position_biases_backward(∂L/∂u, ∂L/∂v, grad_u, grad_v) too.
template <class E>
concept HeadKeyRowsBackward = requires(const E& e, Index lo, Index hi,
                                       ConstMatrixRef<typename E::Scalar> g,
                                       Matrix<typename E::Scalar>& grad) {
  e.head_key_rows_backward(lo, hi, g, grad);
};
template <class E>
concept XlBiasesBackward = requires(const E& e, ConstMatrixRef<typename E::Scalar> g,
                                    Matrix<typename E::Scalar>& grad) {
  e.position_biases_backward(g, g, grad, grad);
};
/// The backward of head_key_rows / head_query_rows (DeBERTa's c2p / p2c): gk, gq (R,
/// n_heads·d_head) = ∂L/∂ of the rows for clamped distances [lo, hi], chained by the encoding
/// into its tensors' gradients in grad, the layer's in_proj given since DeBERTa's projections
/// may be its rows (DebertaRelative::head_rows_backward).
template <class E>
concept HeadRowsBackward = requires(const E& e, std::int64_t lo, std::int64_t hi,
                                    const Matrix<typename E::Scalar>& g,
                                    const Vector<typename E::Scalar>& b,
                                    AttentionGrad<typename E::Scalar>& grad) {
  e.head_rows_backward(lo, hi, g, g, g, b, grad);
};
template <class E>
concept FixedRelativeRows = requires {
  requires E::fixed_relative_rows;
};
template <class E>
concept FixedScoreBias = requires {
  requires E::fixed_score_bias;
};

/// Encodings whose attention backward exists so far: those with no hook inside attention
/// (none, and absolute / additive, which act on the block's input), rotary, the score biases
/// of t5 (with its table's gradient), kerple (r1, r2) and alibi (no parameter), the key / value
/// terms of learned (with their tables' gradients) and sinusoidal (fixed rows), Transformer-XL's
/// per-head terms (r_net.weight, u, v) and DeBERTa's (HeadRowsBackward). Anything else is
/// refused, never a silent zero gradient.
template <class Enc>
inline constexpr bool relative_rows_backward_supported =
    !(HasKeyTerm<Enc> || HasValueTerm<Enc>) || RelativeRowsBackward<Enc> || FixedRelativeRows<Enc>;
template <class Enc>
inline constexpr bool score_bias_backward_supported =
    !HasScoreBias<Enc> || ScoreBiasBackward<Enc> || ScoreBiasParamsBackward<Enc> ||
    FixedScoreBias<Enc>;
/// Per-head terms: DeBERTa's c2p and p2c through HeadRowsBackward (no Transformer-XL biases);
/// otherwise Transformer-XL's key term through HeadKeyRowsBackward (with its u, v) and no query
/// term.
template <class Enc>
inline constexpr bool head_terms_backward_supported =
    HeadRowsBackward<Enc>
        ? !HasXlBiases<Enc>
        : !HasHeadQueryTerm<Enc> &&
              (!HasHeadKeyTerm<Enc> ||
               (HeadKeyRowsBackward<Enc> && (!HasXlBiases<Enc> || XlBiasesBackward<Enc>)));
template <class Enc>
inline constexpr bool attention_backward_supported =
    head_terms_backward_supported<Enc>&& relative_rows_backward_supported<Enc>&&
        score_bias_backward_supported<Enc> &&
    (!TransformsQK<Enc> || TransformsQKBackward<Enc>);

/// The relative key and value terms of spec §3 inside attention's backward, for one head's
/// block of query rows [r0, r0 + n) against all len keys at a time:
///   score  e_ij += q_i·aK(c_ij) (before the 1/√d_head),  output  z_i += Σ_j α_ij aV(c_ij),
/// so  ∂L/∂q_i += Σ_j ∂L/∂s_ij aK(c_ij),  ∂L/∂aK(c) = Σ_{c_ij = c} ∂L/∂s_ij q_i  (s the score
/// before the scale), ∂L/∂α_ij += ∂L/∂z_i·aV(c_ij),  ∂L/∂aV(c) = Σ_{c_ij = c} α_ij ∂L/∂z_i.
/// Every per-distance sum is a skew (Huang et al. 2018, as the forward's tiles,
/// detail/tiled_attention.hpp): the block's (n, len) matrix is summed per distance into an
/// (n, R_window) one, then one small product with the window's rows, with q or with ∂L/∂z —
/// O(len·R) work on top of the score products and never a (len × len × d_head) tensor.
/// Contiguous positions under a saturating clamp use three bands per row (DistanceBands);
/// other ids a (n, len) index; ids spanning more than kDenseRangeFactor·2·len distances (no
/// clamp, wide gaps) go pair by pair, fetching each pair's row.
template <Scalar T, class Enc>
class RelativeTermsBackward {
 public:
  using IndexMatrix = Eigen::Matrix<std::int32_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

  /// The call's state, shared by its heads (no buffer: bind() gives each task its own).
  RelativeTermsBackward(const Enc& enc, const Positions& p) : enc_(enc), p_(p) {
    keys_ = key_term_active(enc);
    values_ = value_term_active(enc);
    if (p.len == 0 || (!keys_ && !values_)) return;
    range_ = distance_range(enc, p);
    const Index count = range_.count();
    dense_ = count <= kDenseRangeFactor * 2 * p.len;
    banded_ = dense_ && has_distance_bands(enc, p, range_);
    if (dense_) {
      if (keys_) key_rows_ = enc.key_rows(range_.lo, range_.hi);
      if (values_) value_rows_ = enc.value_rows(range_.lo, range_.hi);
    }
  }

  /// A copy of the call's state for one head's task: its temporaries in `slot` (for blocks of
  /// up to `rows` query rows), its per-distance sums (learned) in grad_key, grad_value (R,
  /// d_head), zeroed here, which finish() adds up in head order.
  RelativeTermsBackward bind(HeadBackwardSlot<T>& slot, Matrix<T>& grad_key, Matrix<T>& grad_value,
                             Index rows, Index d_head) const {
    RelativeTermsBackward r = *this;
    if (p_.len == 0 || (!keys_ && !values_)) return r;
    const Index count = range_.count();
    if (dense_) {
      slot.by_distance.resize(rows, count);
      if (!banded_) slot.index.resize(rows, p_.len);
    }
    r.by_distance_ = &slot.by_distance;
    r.index_ = &slot.index;
    if constexpr (RelativeRowsBackward<Enc>) {
      // learned: count <= 2K + 1, the table's own rows
      if (keys_) grad_key.setZero(count, d_head);
      if (values_) grad_value.setZero(count, d_head);
      r.grad_key_ = &grad_key;
      r.grad_value_ = &grad_value;
    } else {
      (void)grad_key, (void)grad_value, (void)d_head;
    }
    return r;
  }

  bool keys() const { return keys_; }
  bool values() const { return values_; }

  /// The block [r0, r0 + n): its distance window, and how its pairs map into it.
  void block(Index r0, Index n) {
    r0_ = r0;
    n_ = n;
    if (!dense_) return;
    const BlockWindow w = block_window(enc_, p_, r0, n, banded_, *index_);
    lo_ = w.lo;
    count_ = w.count;
    bands_ = w.bands;
  }

  /// s (n, len) += q_i·aK(c_ij), qb (n, d_head) the block's queries.
  template <class Q, class S>
  void add_key_scores(const Q& qb, S& s) {
    if (!dense_) {
      for_each_pair([&](Index i, Index j, std::int64_t c) {
        s(i, j) += qb.row(i).dot(enc_.key_rows(c, c).view().row(0));
      });
      return;
    }
    auto w = by_distance_->topLeftCorner(n_, count_);  // (n, R_window)
    w.noalias() = qb * window(key_rows_).transpose();
    gather(s, w);
  }

  /// da (n, len) += ∂L/∂z_i·aV(c_ij), dzb (n, d_head) the block's ∂L/∂z.
  template <class D, class A>
  void add_value_weights_grad(const D& dzb, A& da) {
    if (!dense_) {
      for_each_pair([&](Index i, Index j, std::int64_t c) {
        da(i, j) += dzb.row(i).dot(enc_.value_rows(c, c).view().row(0));
      });
      return;
    }
    auto w = by_distance_->topLeftCorner(n_, count_);
    w.noalias() = dzb * window(value_rows_).transpose();
    gather(da, w);
  }

  /// ∂L/∂aV(c) += Σ_{c_ij = c} α_ij ∂L/∂z_i (learned only: fixed rows have no gradient).
  template <class P, class D>
  void value_rows_grad(const P& alpha, const D& dzb) {
    if constexpr (RelativeRowsBackward<Enc>) {
      if (!dense_) {
        for_each_pair([&](Index i, Index j, std::int64_t c) {
          grad_value_->row(c - range_.lo) += alpha(i, j) * dzb.row(i);
        });
        return;
      }
      auto w = by_distance_->topLeftCorner(n_, count_);
      scatter(w, alpha);
      grad_value_->middleRows(lo_ - range_.lo, count_).noalias() += w.transpose() * dzb;
    } else {
      (void)alpha, (void)dzb;
    }
  }

  /// From ds (n, len) = ∂L/∂(the score before the 1/√d_head): dqb (n, d_head) += Σ_j ds_ij
  /// aK(c_ij) and, learned, ∂L/∂aK(c) += Σ_{c_ij = c} ds_ij q_i.
  template <class S, class Q, class DQ>
  void key_backward(const S& ds, const Q& qb, DQ&& dqb) {
    if (!dense_) {
      for_each_pair([&](Index i, Index j, std::int64_t c) {
        dqb.row(i) += ds(i, j) * enc_.key_rows(c, c).view().row(0);
        if constexpr (RelativeRowsBackward<Enc>)
          grad_key_->row(c - range_.lo) += ds(i, j) * qb.row(i);
      });
      return;
    }
    auto w = by_distance_->topLeftCorner(n_, count_);
    scatter(w, ds);
    dqb.noalias() += w * window(key_rows_);
    if constexpr (RelativeRowsBackward<Enc>) {
      grad_key_->middleRows(lo_ - range_.lo, count_).noalias() += w.transpose() * qb;
    } else {
      (void)qb;
    }
  }

  /// The per-distance sums of every head (`head_grad_key` / `_value`, [n_heads], as bind()
  /// filled them), added in head order and handed to the encoding's tables (learned: this
  /// layer's relative_key / relative_value gradients). Head 0's partial holds the sum.
  void finish(Index n_heads, std::vector<Matrix<T>>& head_grad_key,
              std::vector<Matrix<T>>& head_grad_value, Matrix<T>& grad_key,
              Matrix<T>& grad_value) const {
    if constexpr (RelativeRowsBackward<Enc>) {
      if (p_.len == 0) return;
      // head 0's partial gathers the others', in head order
      for (std::size_t h = 1; h < static_cast<std::size_t>(n_heads); ++h) {
        if (keys_) head_grad_key[0] += head_grad_key[h];
        if (values_) head_grad_value[0] += head_grad_value[h];
      }
      if (keys_) enc_.key_rows_backward(range_.lo, range_.hi, head_grad_key[0], grad_key);
      if (values_) enc_.value_rows_backward(range_.lo, range_.hi, head_grad_value[0], grad_value);
    } else {
      (void)n_heads, (void)head_grad_key, (void)head_grad_value, (void)grad_key, (void)grad_value;
    }
  }

 private:
  template <class F>
  void for_each_pair(F&& f) const {
    for (Index i = 0; i < n_; ++i) {
      const std::int64_t pi = p_[r0_ + i];
      for (Index j = 0; j < p_.len; ++j) f(i, j, enc_.clamp_distance(p_[j] - pi));
    }
  }
  // The call's rows for the block's window [lo_, lo_ + count_).
  ConstMatrixMap<T> window(const DistanceRows<T>& rows) const {
    const ConstMatrixMap<T> all = rows.view();
    return ConstMatrixMap<T>(all.data() + (lo_ - range_.lo) * all.cols(), count_, all.cols());
  }
  // s(i, j) += w(i, c_ij − lo_)
  template <class S, class W>
  void gather(S& s, const W& w) const {
    if (banded_) {
      detail::gather_add(s, w, bands_);
    } else {
      detail::gather_add(s, w, index_->topRows(n_));
    }
  }
  // w(i, c − lo_) = Σ_{j: c_ij = c} a(i, j)
  template <class W, class A>
  void scatter(W& w, const A& a) const {
    if (banded_) {
      scatter_by_distance(w, a, bands_);
    } else {
      scatter_by_distance(w, a, index_->topRows(n_));
    }
  }

  const Enc& enc_;
  const Positions& p_;
  bool keys_ = false, values_ = false, dense_ = false, banded_ = false;
  DistanceRange range_;                    // the call's clamped distances
  DistanceRows<T> key_rows_, value_rows_;  // (R, d_head) for range_, when dense
  Matrix<T>* grad_key_ = nullptr;          // (R, d_head): ∂L/∂aK per distance, bound head's
  Matrix<T>* grad_value_ = nullptr;        // (R, d_head): ∂L/∂aV
  Matrix<T>* by_distance_ = nullptr;       // (rows, R): a block's sums per distance (slot's)
  BackwardIndexMatrix* index_ = nullptr;   // (rows, len): c_ij − lo_, not banded (slot's)
  Index r0_ = 0, n_ = 0;                   // the block
  std::int64_t lo_ = 0;                    // its window [lo_, lo_ + count_)
  Index count_ = 1;
  DistanceBands bands_;  // banded, in block coordinates
};

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
inline constexpr Index kAttentionBackwardRows = 128;

/// From dy = ∂L/∂out (len, d_model): adds the four weight gradients into grad (empty ones start
/// at zero) and writes dx = ∂L/∂x (len, d_model). `in` must be the forward's. Every temporary
/// comes from `scratch` (backward_workspace.hpp), so a second call of the same shapes does not
/// allocate. The heads run in parallel unless this call is inside a parallel loop already (a
/// batch's items); the result is the same bits for any thread count.
template <Scalar T, Encoding Enc>
void backward(const MultiHeadAttention<T, Enc>& attn, const AttentionSaved<T>& saved,
              const SequenceInputs& in, detail::InRef<T> dy, detail::OutRef<T> dx,
              AttentionGrad<T>& grad, AttentionBackwardScratch<T>& scratch) {
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
  const bool has_bias = attn.config.bias;  // spec §7 bias false: no in_proj / out_proj bias
  if (has_bias) {
    detail::prepare_grad<T>(grad.in_proj_bias, 3 * d, "in_proj_bias", "");
  } else {
    detail::check_absent_grad<T>(grad.in_proj_bias, "in_proj_bias", "");
  }
  // ∂L/∂W_o += dyᵀ·z, ∂L/∂b_o += Σ dy, ∂L/∂z = dy·W_o
  Matrix<T>& dz = scratch.dz;
  dz.resize(len, d);
  detail::linear_backward<T>(saved.z, attn.out_proj_weight, dy, dz, grad.out_proj_weight,
                             grad.out_proj_bias, "out_proj", has_bias);
  // ∂L/∂(q | k | v): (len, 3·d_model), filled head by head
  Matrix<T>& dqkv = scratch.dqkv;
  dqkv.setZero(len, 3 * d);
  const T scale = score_scale(attn.encoding, dh);  // 1/sqrt(d_head·f), deberta's f = 1 + c2p + p2c
  const Index rows = std::min(kAttentionBackwardRows, std::max<Index>(len, 1));
  // score biases (t5, alibi, kerple): b_h(c) and ∂L/∂b_h(c) per clamped distance c in [c_lo,
  // c_hi], R = c_hi − c_lo + 1 values per head (t5 clamps to ±max_distance; alibi spans the
  // positions); ∂L/∂b_h in row h of scratch.dbias, handed to the encoding after the loop
  [[maybe_unused]] Index c_lo = 0, c_hi = -1;
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
      scratch.dbias.setZero(h_count, c_hi - c_lo + 1);
    }
  }
  // learned, sinusoidal: q_i·aK(c_ij) in the score, α_ij aV(c_ij) in the output
  [[maybe_unused]] std::optional<detail::RelativeTermsBackward<T, Enc>> rel;
  if constexpr (HasKeyTerm<Enc> || HasValueTerm<Enc>) {
    rel.emplace(attn.encoding, in.positions);
    if (scratch.head_grad_key.size() < static_cast<std::size_t>(h_count)) {
      scratch.head_grad_key.resize(static_cast<std::size_t>(h_count));
      scratch.head_grad_value.resize(static_cast<std::size_t>(h_count));
    }
  }
  // deberta: q_i·Pk_h(c_ij) (c2p) and k_j·Pq_h(c_ij) (p2c) in the score, before the scale
  [[maybe_unused]] std::optional<detail::HeadTermsBackward<T, Enc>> head_terms;
  if constexpr (detail::HeadRowsBackward<Enc>)
    head_terms.emplace(attn.encoding, in.positions, h_count, dh, scratch);
  // xl: q_i·r_h(c_ij) + u_h·k_j + v_h·r_h(c_ij) in the score (detail/head_key_grad.hpp); its
  // hook, not HasHeadKeyTerm, selects it: deberta's c2p is a head key term with its own above
  constexpr bool XlHeadKeys = detail::HeadKeyRowsBackward<Enc>;
  [[maybe_unused]] std::optional<detail::HeadKeyTermsBackward<T, Enc>> head_keys;
  if constexpr (XlHeadKeys) head_keys.emplace(attn.encoding, in.positions, h_count, dh, scratch);
  // One task per head: it reads the saved q, k, v and ∂L/∂z, and writes only its own columns of
  // dqkv, its own row of dbias, its own partial sums, and its own columns / rows of the
  // per-head rows' gradients (detail/thread_pool.hpp: disjoint writes, so the same bits for any
  // thread count).
  scratch.ensure_slots(detail::slots_needed());
  detail::parallel_for(h_count, [&](Index h, int slot_index) {
    detail::HeadBackwardSlot<T>& slot = scratch.slots[static_cast<std::size_t>(slot_index)];
    Matrix<T>& p = slot.p;    // α of a block of query rows, (rows, len)
    Matrix<T>& dp = slot.dp;  // ∂L/∂α, (rows, len)
    p.resize(rows, len);
    dp.resize(rows, len);
    [[maybe_unused]] T* dbias = nullptr;
    if constexpr (HasScoreBias<Enc>) {
      if (len > 0) {
        slot.bias.resize(static_cast<std::size_t>(c_hi - c_lo + 1));
        attn.encoding.score_bias(h, c_lo, c_hi, slot.bias.data());
        dbias = scratch.dbias.row(h).data();
      }
    }
    [[maybe_unused]] std::optional<detail::RelativeTermsBackward<T, Enc>> rel_h;
    if constexpr (HasKeyTerm<Enc> || HasValueTerm<Enc>) {
      const auto k = static_cast<std::size_t>(h);
      rel_h.emplace(
          rel->bind(slot, scratch.head_grad_key[k], scratch.head_grad_value[k], rows, dh));
    }
    [[maybe_unused]] std::optional<detail::HeadTermsBackward<T, Enc>> terms_h;
    if constexpr (detail::HeadRowsBackward<Enc>) terms_h.emplace(head_terms->bind(slot, rows));
    [[maybe_unused]] std::optional<detail::HeadKeyTermsBackward<T, Enc>> keys_h;
    if constexpr (XlHeadKeys) keys_h.emplace(head_keys->bind(slot, rows));

    const auto q = saved.qkv.middleCols(h * dh, dh);          // (len, d_head)
    const auto k = saved.qkv.middleCols(d + h * dh, dh);      // (len, d_head)
    const auto v = saved.qkv.middleCols(2 * d + h * dh, dh);  // (len, d_head)
    const auto dz_h = dz.middleCols(h * dh, dh);              // (len, d_head)
    auto dq = dqkv.middleCols(h * dh, dh);
    auto dk = dqkv.middleCols(d + h * dh, dh);
    auto dv = dqkv.middleCols(2 * d + h * dh, dh);
    if constexpr (XlHeadKeys) keys_h->head(h, k);
    for (Index r0 = 0; r0 < len; r0 += rows) {
      const Index n = std::min(rows, len - r0);
      auto pb = p.topRows(n);
      auto dpb = dp.topRows(n);
      // e = q·kᵀ/√d_head over the block's rows, recomputed (none is kept)
      detail::matmul_nt<T>(q.middleRows(r0, n), k, pb);
      if constexpr (HasKeyTerm<Enc> || HasValueTerm<Enc>) {
        rel_h->block(r0, n);
        if (rel_h->keys()) rel_h->add_key_scores(q.middleRows(r0, n), pb);  // + q_i·aK(c_ij)
      }
      if constexpr (detail::HeadRowsBackward<Enc>) {
        if (terms_h->active()) {
          terms_h->block(r0, n);
          terms_h->add_scores(h, q.middleRows(r0, n), k, pb);
        }
      }
      if constexpr (XlHeadKeys) {
        keys_h->block(r0, n);
        keys_h->add_scores(q.middleRows(r0, n), pb);
      }
      pb *= scale;
      if constexpr (HasScoreBias<Enc>) {
        // + b_h(c_ij), after the scale (spec §3)
        for (Index i = 0; i < n; ++i) {
          for (Index j = 0; j < len; ++j) {
            const auto c = attn.encoding.clamp_distance(in.positions[j] - in.positions[r0 + i]);
            pb(i, j) += slot.bias[static_cast<std::size_t>(c - c_lo)];
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
        // exp over the causal prefix in one vectorised pass, then the hidden keys set to 0
        auto row = pb.row(i);
        row.head(end).array() = (row.head(end).array() - max).exp();
        row.tail(len - end).setZero();
        if (in.key_padding != nullptr) {
          for (Index j = 0; j < end; ++j) {
            if (in.key_padding[j]) row(j) = T(0);
          }
        }
        row /= row.head(end).sum();
      }
      // ∂L/∂v += αᵀ·∂L/∂z
      detail::matmul_tn<T>(pb, dz_h.middleRows(r0, n), dv, /*accumulate=*/true);
      // ∂L/∂α = ∂L/∂z·vᵀ
      detail::matmul_nt<T>(dz_h.middleRows(r0, n), v, dpb);
      if constexpr (HasValueTerm<Enc>) {
        if (rel_h->values()) {
          // z_i = Σ_j α_ij (v_j + aV(c_ij)): ∂L/∂α_ij += ∂L/∂z_i·aV(c_ij), and the table's
          // ∂L/∂aV(c) = Σ_{c_ij = c} α_ij ∂L/∂z_i
          rel_h->add_value_weights_grad(dz_h.middleRows(r0, n), dpb);
          rel_h->value_rows_grad(pb, dz_h.middleRows(r0, n));
        }
      }
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
            dbias[c - c_lo] += dpb(i, j);
          }
        }
      }
      dpb *= scale;
      // with the 1/√d_head folded in: ∂L/∂q = ∂L/∂e·k, ∂L/∂k += ∂L/∂eᵀ·q
      detail::matmul_nn<T>(dpb, k, dq.middleRows(r0, n));
      detail::matmul_tn<T>(dpb, q.middleRows(r0, n), dk, /*accumulate=*/true);
      if constexpr (HasKeyTerm<Enc>) {
        if (rel_h->keys()) rel_h->key_backward(dpb, q.middleRows(r0, n), dq.middleRows(r0, n));
      }
      if constexpr (detail::HeadRowsBackward<Enc>) {
        if (terms_h->active()) {
          terms_h->backward(h, dpb, q.middleRows(r0, n), k, dq.middleRows(r0, n), dk);
        }
      }
      if constexpr (XlHeadKeys)
        keys_h->backward(dpb, q.middleRows(r0, n), k, dq.middleRows(r0, n), dk);
    }
    if constexpr (XlHeadKeys) keys_h->end_head();
  });
  // the sums several heads add into, in head order
  if constexpr (HasScoreBias<Enc>) {
    if (len > 0) {
      for (Index h = 0; h < h_count; ++h) {
        if constexpr (detail::ScoreBiasBackward<Enc>) {
          attn.encoding.score_bias_backward(h, c_lo, c_hi, scratch.dbias.row(h).data(),
                                            grad.relative_attention_bias);
        } else if constexpr (detail::ScoreBiasParamsBackward<Enc>) {
          attn.encoding.score_bias_backward(h, c_lo, c_hi, scratch.dbias.row(h).data(),
                                            grad.kerple_r1, grad.kerple_r2);
        }
      }
    }
  }
  if constexpr (HasKeyTerm<Enc> || HasValueTerm<Enc>) {
    rel->finish(h_count, scratch.head_grad_key, scratch.head_grad_value, grad.relative_key,
                grad.relative_value);
  }
  if constexpr (detail::HeadRowsBackward<Enc>) {
    head_terms->finish(attn.in_proj_weight, attn.in_proj_bias, grad, scratch.encoding);
  }
  if constexpr (XlHeadKeys)
    head_keys->finish(grad.r_net_weight, grad.r_w_bias, grad.r_r_bias, scratch.encoding);
  if constexpr (TransformsQK<Enc>) {
    // rotary: from ∂L/∂ of the rotated q, k to ∂L/∂ of in_proj's q, k (the rotation transposed)
    MatrixRef<T> dq(dqkv.leftCols(d));
    MatrixRef<T> dk(dqkv.middleCols(d, d));
    attn.encoding.transform_qk_backward(dq, dk, in.positions, h_count);
  }
  // ∂L/∂W_in += (∂L/∂qkv)ᵀ·x, ∂L/∂b_in += Σ ∂L/∂qkv, ∂L/∂x = ∂L/∂qkv·W_in
  detail::linear_backward<T>(saved.x, attn.in_proj_weight, dqkv, dx, grad.in_proj_weight,
                             grad.in_proj_bias, "in_proj", has_bias);
}

/// As above, with scratch of its own (allocated per call).
template <Scalar T, Encoding Enc>
void backward(const MultiHeadAttention<T, Enc>& attn, const AttentionSaved<T>& saved,
              const SequenceInputs& in, detail::InRef<T> dy, detail::OutRef<T> dx,
              AttentionGrad<T>& grad) {
  AttentionBackwardScratch<T> scratch;
  backward(attn, saved, in, dy, dx, grad, scratch);
}

}  // namespace relpos
