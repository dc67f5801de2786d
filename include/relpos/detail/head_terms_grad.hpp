// SPDX-License-Identifier: MIT
// The per-head relative terms inside attention's backward (attention_grad.hpp), for encodings
// whose rows have a backward hook (DeBERTa, He et al. 2021: c2p and p2c):
//   head key term    s_ij += q_i · r_h(c_ij)   (c2p, encodings/concept.hpp HasHeadKeyTerm)
//   head query term  s_ij += k_j · u_h(c_ij)   (p2c, HasHeadQueryTerm)
// before the scale, so with ds = ∂L/∂s:
//   ∂L/∂q_i += Σ_j ds_ij r_h(c_ij),   ∂L/∂r_h(c) = Σ_{c_ij = c} ds_ij q_i,
//   ∂L/∂k_j += Σ_i ds_ij u_h(c_ij),   ∂L/∂u_h(c) = Σ_{c_ij = c} ds_ij k_j.
// Every per-distance sum is a skew, as in the forward's tiles (detail/tiled_attention.hpp): a
// block of query rows' (n, len) matrix summed per distance into (n, R_block) for the key term;
// for the query term, by key, per block of kKeyBlock keys into (kKeyBlock, R_tile) with R_tile
// <= n + kKeyBlock − 1 for contiguous positions. Then one small product each: O(len·R) work on
// top of the score products, never a (len × len × d_head) tensor.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include <relpos/backward_workspace.hpp>
#include <relpos/core.hpp>
#include <relpos/detail/skew.hpp>
#include <relpos/encodings/concept.hpp>
#include <relpos/positions.hpp>

namespace relpos::detail {

/// One attention call's per-head terms, for one head's block of query rows [r0, r0 + n) at a
/// time against all len keys (attention backward's loop). Accumulates ∂L/∂ of the rows of the
/// call's clamped distances [lo, hi], (R, n_heads·d_head) each, handed to the encoding by
/// finish().
template <Scalar T, class Enc>
class HeadTermsBackward {
 public:
  using IndexMatrix = Eigen::Matrix<std::int32_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  static constexpr Index kKeyBlock = 64;

  /// The call's state, shared by its heads: the rows, and the call's sums of their gradients
  /// (R, n_heads·d_head) in `scratch`, zeroed here, which each head's task writes its own
  /// columns of.
  HeadTermsBackward(const Enc& enc, const Positions& p, Index n_heads, Index d_head,
                    AttentionBackwardScratch<T>& scratch)
      : enc_(enc), p_(p), dh_(d_head) {
    keys_ = head_key_term_active(enc);
    queries_ = head_query_term_active(enc);
    if (p.len == 0 || (!keys_ && !queries_)) return;
    range_ = distance_range(enc, p);
    const Index count = range_.count();
    if constexpr (HasHeadKeyTerm<Enc>) {
      if (keys_) {
        key_rows_ = enc.head_key_rows(range_.lo, range_.hi);
        scratch.grad_rows.setZero(count, n_heads * d_head);
        grad_key_ = &scratch.grad_rows;
      }
    }
    if constexpr (HasHeadQueryTerm<Enc>) {
      if (queries_) {
        query_rows_ = enc.head_query_rows(range_.lo, range_.hi);
        scratch.grad_query_rows.setZero(count, n_heads * d_head);
        grad_query_ = &scratch.grad_query_rows;
      }
    }
    // contiguous positions: c_ij depends on j − i only, one clamp per distance of the call
    contiguous_ = true;
    for (Index i = 1; i < p.len; ++i) contiguous_ = contiguous_ && p[i] == p[i - 1] + 1;
    if (contiguous_) {
      scratch.lut.resize(static_cast<std::size_t>(2 * p.len - 1));
      for (Index t = 0; t < 2 * p.len - 1; ++t) {
        scratch.lut[static_cast<std::size_t>(t)] =
            static_cast<std::int32_t>(enc.clamp_distance(t - (p.len - 1)) - range_.lo);
      }
    }
    lut_ = scratch.lut.data();
  }

  /// A copy of the call's state for one head's task, its temporaries in `slot` (blocks of up
  /// to `rows` query rows).
  HeadTermsBackward bind(HeadBackwardSlot<T>& slot, Index rows) const {
    HeadTermsBackward r = *this;
    if (p_.len == 0 || !active()) return r;
    const Index count = range_.count();
    slot.index.resize(rows, p_.len);
    slot.by_distance.resize(rows, count);
    slot.by_key.resize(kKeyBlock, count);  // a tile's window is at most the call's
    r.slot_ = &slot;
    return r;
  }

  bool active() const { return keys_ || queries_; }

  /// The block [r0, r0 + n): c_ij − lo for its pairs.
  void block(Index r0, Index n) {
    n_ = n;
    const Index len = p_.len;
    for (Index i = 0; i < n; ++i) {
      if (contiguous_) {
        const std::int32_t* row = lut_ + (len - 1 - (r0 + i));  // δ = j − (r0 + i)
        for (Index j = 0; j < len; ++j) slot_->index(i, j) = row[j];
      } else {
        const std::int64_t pi = p_[r0 + i];
        for (Index j = 0; j < len; ++j) {
          slot_->index(i, j) =
              static_cast<std::int32_t>(enc_.clamp_distance(p_[j] - pi) - range_.lo);
        }
      }
    }
  }

  /// s (n, len) += q_i · r_h(c_ij) + k_j · u_h(c_ij) for head h; qb (n, d_head) the block's
  /// queries, k (len, d_head) the head's keys.
  template <class Q, class K, class S>
  void add_scores(Index h, const Q& qb, const K& k, S& s) {
    if (keys_) {
      const auto [lo, count] = window(0, p_.len);
      auto w = slot_->by_distance.topLeftCorner(n_, count);  // (n, R_block)
      w.noalias() = qb * rows(key_rows_, h, lo, count).transpose();
      for (Index i = 0; i < n_; ++i) {
        for (Index j = 0; j < p_.len; ++j) s(i, j) += w(i, slot_->index(i, j) - lo);
      }
    }
    if (queries_) {
      for (Index t0 = 0; t0 < p_.len; t0 += kKeyBlock) {
        const Index tb = std::min(kKeyBlock, p_.len - t0);
        const auto [lo, count] = window(t0, tb);
        auto w = key_block(tb, count);  // (tb, R_tile): k_j · u_h(c)
        w.noalias() = k.middleRows(t0, tb) * rows(query_rows_, h, lo, count).transpose();
        for (Index i = 0; i < n_; ++i) {
          for (Index t = 0; t < tb; ++t) s(i, t0 + t) += w(t, slot_->index(i, t0 + t) - lo);
        }
      }
    }
  }

  /// From ds (n, len) = ∂L/∂s: dqb (n, d_head) += Σ_j ds_ij r_h(c_ij), dk (len, d_head) +=
  /// Σ_i ds_ij u_h(c_ij), and the rows' gradients per distance.
  template <class S, class Q, class K, class DQ, class DK>
  void backward(Index h, const S& ds, const Q& qb, const K& k, DQ&& dqb, DK&& dk) {
    if (keys_) {
      const auto [lo, count] = window(0, p_.len);
      auto w = slot_->by_distance.topLeftCorner(n_, count);  // (n, R_block): Σ_{c_ij = c} ds_ij
      w.setZero();
      for (Index i = 0; i < n_; ++i) {
        for (Index j = 0; j < p_.len; ++j) w(i, slot_->index(i, j) - lo) += ds(i, j);
      }
      dqb.noalias() += w * rows(key_rows_, h, lo, count);
      grad_key_->block(lo, h * dh_, count, dh_).noalias() += w.transpose() * qb;
    }
    if (queries_) {
      for (Index t0 = 0; t0 < p_.len; t0 += kKeyBlock) {
        const Index tb = std::min(kKeyBlock, p_.len - t0);
        const auto [lo, count] = window(t0, tb);
        auto w = key_block(tb, count);  // (tb, R_tile): Σ_{i: c_ij = c} ds_ij, by key
        w.setZero();
        for (Index i = 0; i < n_; ++i) {
          for (Index t = 0; t < tb; ++t) w(t, slot_->index(i, t0 + t) - lo) += ds(i, t0 + t);
        }
        dk.middleRows(t0, tb).noalias() += w * rows(query_rows_, h, lo, count);
        grad_query_->block(lo, h * dh_, count, dh_).noalias() +=
            w.transpose() * k.middleRows(t0, tb);
      }
    }
  }

  /// Hands the per-distance sums to the encoding (DeBERTa: DebertaRelative::head_rows_backward,
  /// which chains them into its projections and relative embeddings).
  template <class Grad>
  void finish(const Matrix<T>& in_proj_weight, const Vector<T>& in_proj_bias, Grad& grad,
              EncodingBackwardScratch<T>& scratch) const {
    if (p_.len == 0 || !active()) return;
    const Matrix<T>& gk = keys_ ? *grad_key_ : empty_;
    const Matrix<T>& gq = queries_ ? *grad_query_ : empty_;
    if constexpr (requires {
                    enc_.head_rows_backward(range_.lo, range_.hi, gk, gq, in_proj_weight,
                                            in_proj_bias, grad, scratch);
                  }) {
      enc_.head_rows_backward(range_.lo, range_.hi, gk, gq, in_proj_weight, in_proj_bias, grad,
                              scratch);
    } else {
      enc_.head_rows_backward(range_.lo, range_.hi, gk, gq, in_proj_weight, in_proj_bias, grad);
    }
  }

 private:
  struct Window {
    Index lo, count;  // columns [lo, lo + count) of the call's rows
  };
  // The distances the block's pairs with keys [t0, t0 + tb) use (the clamp is monotone, so
  // the smallest and largest column of the block's index bound them).
  Window window(Index t0, Index tb) const {
    std::int32_t lo = slot_->index(0, t0), hi = lo;
    for (Index i = 0; i < n_; ++i) {
      const auto seg = slot_->index.row(i).segment(t0, tb);
      lo = std::min(lo, seg.minCoeff());
      hi = std::max(hi, seg.maxCoeff());
    }
    return {lo, hi - lo + 1};
  }
  // Head h's columns of the call's rows for columns [lo, lo + count): (count, d_head).
  auto rows(const DistanceRows<T>& all, Index h, Index lo, Index count) const {
    return all.view().block(lo, h * dh_, count, dh_);
  }
  auto key_block(Index tb, Index count) { return slot_->by_key.topLeftCorner(tb, count); }

  const Enc& enc_;
  const Positions& p_;
  Index dh_;
  bool keys_ = false, queries_ = false, contiguous_ = false;
  DistanceRange range_;                    // the call's clamped distances
  DistanceRows<T> key_rows_, query_rows_;  // (R, n_heads·d_head) for range_
  Matrix<T>* grad_key_ = nullptr;  // (R, n_heads·d_head): ∂L/∂ of those rows, the call's
  Matrix<T>* grad_query_ = nullptr;
  Matrix<T> empty_;                    // the gradient of a term that is off (never read)
  const std::int32_t* lut_ = nullptr;  // contiguous (2·len − 1): c − lo for δ = t − (len − 1)
  HeadBackwardSlot<T>* slot_ = nullptr;  // the task's: index (rows, len), by_distance (rows, R),
                                         // by_key (kKeyBlock, R_tile)
  Index n_ = 0;
};

}  // namespace relpos::detail
