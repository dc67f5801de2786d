// SPDX-License-Identifier: MIT
// The per-head key term of spec §3 inside attention's backward (Transformer-XL, Dai et al.
// 2019): for head h, the score before the 1/√d_head gains
//   q_i·r_h(c_ij) + [xl] u_h·k_j + v_h·r_h(c_ij),
// r_h(c) head h's slice of the encoding's rows r(c) (head_key_rows), c_ij the clamped
// p_j − p_i. With ds = ∂L/∂(that score):
//   ∂L/∂q_i    += Σ_j ds_ij r_h(c_ij)
//   ∂L/∂r_h(c)  = Σ_{c_ij = c} ds_ij (q_i + v_h)          (handed to head_key_rows_backward)
//   ∂L/∂k_j    += u_h Σ_i ds_ij,   ∂L/∂u_h = Σ_j (Σ_i ds_ij) k_j
//   ∂L/∂v_h     = Σ_c S_h(c) r_h(c),  S_h(c) = Σ_{c_ij = c} ds_ij   (position_biases_backward)
// Every per-distance sum is a skew (detail/skew.hpp), as RelativeTermsBackward's: a block's
// (n, len) matrix summed per distance into an (n, R_window) one, then one small product, so
// the work is O(len·R) on top of the score products and nothing is (len × len × d_head).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include <relpos/backward_workspace.hpp>
#include <relpos/core.hpp>
#include <relpos/detail/shape_checks.hpp>
#include <relpos/detail/skew.hpp>
#include <relpos/distance_rows.hpp>
#include <relpos/encodings/concept.hpp>
#include <relpos/positions.hpp>

namespace relpos::detail {

/// One attention backward's per-head key terms: the call's rows r(c) for its clamped distances
/// [lo, hi] (R of them, R <= kDenseRangeFactor·2·len, else an Error), a block of query rows
/// [r0, r0 + n) at a time against all len keys, head by head (head(), then block() /
/// add_scores() / backward() per block, end_head()), then finish() hands the sums to the
/// encoding's hooks.
template <Scalar T, class Enc>
class HeadKeyTermsBackward {
 public:
  using IndexMatrix = Eigen::Matrix<std::int32_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  static constexpr bool kXl = HasXlBiases<Enc>;

  /// The call's state, shared by its heads: the rows r(c), and the call's sums ∂L/∂r(c) (R,
  /// n_heads·d_head) and xl's ∂L/∂u, ∂L/∂v (n_heads, d_head) in `scratch`, zeroed here, which
  /// each head's task writes its own columns / row of.
  HeadKeyTermsBackward(const Enc& enc, const Positions& p, Index n_heads, Index d_head,
                       AttentionBackwardScratch<T>& scratch)
      : enc_(enc), p_(p), dh_(d_head) {
    active_ = p.len > 0 && head_key_term_active(enc);
    if (!active_) return;
    range_ = distance_range(enc, p);
    const Index count = range_.count();
    if (count > kDenseRangeFactor * 2 * p.len) {
      throw Error(std::string("attention backward: position ids span ") + std::to_string(count) +
                  " distances for " + std::to_string(p.len) + " tokens; the " + Enc::name +
                  " backward keeps one row per distance and supports at most " +
                  std::to_string(kDenseRangeFactor * 2) + "·len");
    }
    banded_ = has_distance_bands(enc, p, range_);
    rows_ = enc.head_key_rows(range_.lo, range_.hi);
    if (rows_.view().rows() != count || rows_.view().cols() != n_heads * d_head) {
      throw Error(std::string(Enc::name) + " per-head key rows: expected " +
                  shape_string(count, n_heads * d_head) + ", got " +
                  shape_string(rows_.view().rows(), rows_.view().cols()));
    }
    scratch.grad_rows.setZero(count, n_heads * d_head);
    grad_rows_ = &scratch.grad_rows;
    if constexpr (kXl) {
      scratch.du.setZero(n_heads, d_head);
      scratch.dv.setZero(n_heads, d_head);
      du_ = &scratch.du;
      dv_ = &scratch.dv;
    }
  }

  /// A copy of the call's state for one head's task, its temporaries in `slot` (blocks of up
  /// to `rows` query rows).
  HeadKeyTermsBackward bind(HeadBackwardSlot<T>& slot, Index rows) const {
    HeadKeyTermsBackward r = *this;
    if (!active_) return r;
    const Index count = range_.count();
    slot.by_distance.resize(rows, count);
    if (!banded_) slot.index.resize(rows, p_.len);
    r.slot_ = &slot;
    if constexpr (kXl) {
      slot.sums.resize(count);
      slot.vr.resize(count);
      slot.uk.resize(p_.len);
      slot.column_sums.resize(p_.len);
    }
    return r;
  }

  bool active() const { return active_; }

  /// Starts head h; k (len, d_head) its keys.
  template <class K>
  void head(Index h, const K& k) {
    h_ = h;
    if constexpr (kXl) {
      if (!active_) return;
      slot_->vr.noalias() = head_rows(0, range_.count()) * enc_.position_bias().row(h).transpose();
      slot_->uk.noalias() = k * enc_.content_bias().row(h).transpose();
      slot_->sums.setZero();
    } else {
      (void)k;
    }
  }

  /// The block [r0, r0 + n): its distance window, and how its pairs map into it.
  void block(Index r0, Index n) {
    if (!active_) return;
    r0_ = r0;
    n_ = n;
    const BlockWindow w = block_window(enc_, p_, r0, n, banded_, slot_->index);
    lo_ = w.lo;
    count_ = w.count;
    bands_ = w.bands;
  }

  /// s (n, len) += q_i·r_h(c_ij) [+ v_h·r_h(c_ij) + u_h·k_j], qb (n, d_head) the block's
  /// queries: the forward's terms, recomputed.
  template <class Q, class S>
  void add_scores(const Q& qb, S& s) {
    if (!active_) return;
    auto w = slot_->by_distance.topLeftCorner(n_, count_);  // (n, R_window)
    w.noalias() = qb * window().transpose();
    if constexpr (kXl) w.rowwise() += slot_->vr.segment(lo_ - range_.lo, count_).transpose();
    gather(s, w);
    if constexpr (kXl) s.rowwise() += slot_->uk.transpose();
  }

  /// From ds (n, len) = ∂L/∂(the score before the 1/√d_head): dqb (n, d_head) += Σ_j ds_ij
  /// r_h(c_ij), ∂L/∂r_h(c) += Σ_{c_ij = c} ds_ij q_i, and for xl ∂L/∂k (len, d_head) += u_h Σ_i
  /// ds_ij, ∂L/∂u_h, and the per-distance sums S_h(c) for ∂L/∂v_h and v_h's share of ∂L/∂r_h.
  template <class S, class Q, class K, class DQ, class DK>
  void backward(const S& ds, const Q& qb, const K& k, DQ&& dqb, DK&& dk) {
    if (!active_) return;
    auto w = slot_->by_distance.topLeftCorner(n_, count_);
    scatter(w, ds);
    dqb.noalias() += w * window();
    grad_rows_->block(lo_ - range_.lo, h_ * dh_, count_, dh_).noalias() += w.transpose() * qb;
    if constexpr (kXl) {
      slot_->sums.segment(lo_ - range_.lo, count_) += w.colwise().sum().transpose();
      RowVector<T>& column_sums = slot_->column_sums;  // (1, len): Σ_i ds_ij
      column_sums.noalias() = ds.colwise().sum();
      dk.noalias() += column_sums.transpose() * enc_.content_bias().row(h_);
      du_->row(h_).noalias() += column_sums * k;
    } else {
      (void)k, (void)dk;
    }
  }

  /// Ends head h: v_h's share, ∂L/∂r_h(c) += S_h(c) v_h and ∂L/∂v_h = Σ_c S_h(c) r_h(c).
  void end_head() {
    if constexpr (kXl) {
      if (!active_) return;
      const Index count = range_.count();
      grad_rows_->middleCols(h_ * dh_, dh_).noalias() += slot_->sums * enc_.position_bias().row(h_);
      dv_->row(h_).noalias() += slot_->sums.transpose() * head_rows(0, count);
    }
  }

  /// Hands the sums to the encoding: ∂L/∂r(c) to head_key_rows_backward (xl: into grad_rows,
  /// the layer's r_net.weight gradient), ∂L/∂u and ∂L/∂v to position_biases_backward.
  void finish(Matrix<T>& grad_rows, Matrix<T>& grad_u, Matrix<T>& grad_v,
              EncodingBackwardScratch<T>& scratch) const {
    if (!active_) return;
    if constexpr (requires {
                    enc_.head_key_rows_backward(range_.lo, range_.hi, *grad_rows_, grad_rows,
                                                scratch);
                  }) {
      enc_.head_key_rows_backward(range_.lo, range_.hi, *grad_rows_, grad_rows, scratch);
    } else {
      enc_.head_key_rows_backward(range_.lo, range_.hi, *grad_rows_, grad_rows);
    }
    if constexpr (kXl) {
      enc_.position_biases_backward(*du_, *dv_, grad_u, grad_v);
    } else {
      (void)grad_u, (void)grad_v;
    }
  }

 private:
  // Head h_'s slice of `count` call rows from `first`: (count, d_head).
  auto head_rows(Index first, Index count) const {
    return rows_.view().block(first, h_ * dh_, count, dh_);
  }
  // Head h_'s rows for the block's window [lo_, lo_ + count_).
  auto window() const { return head_rows(lo_ - range_.lo, count_); }
  // s(i, j) += w(i, c_ij − lo_)
  template <class S, class W>
  void gather(S& s, const W& w) const {
    if (banded_) {
      gather_add(s, w, bands_);
    } else {
      gather_add(s, w, slot_->index.topRows(n_));
    }
  }
  // w(i, c − lo_) = Σ_{j: c_ij = c} a(i, j)
  template <class W, class A>
  void scatter(W& w, const A& a) const {
    if (banded_) {
      scatter_by_distance(w, a, bands_);
    } else {
      scatter_by_distance(w, a, slot_->index.topRows(n_));
    }
  }

  const Enc& enc_;
  const Positions& p_;
  Index dh_;
  bool active_ = false, banded_ = false;
  DistanceRange range_;                  // the call's clamped distances
  DistanceRows<T> rows_;                 // (R, n_heads·d_head): r(c) for range_
  Matrix<T>* grad_rows_ = nullptr;       // (R, n_heads·d_head): ∂L/∂r(c), the call's
  Matrix<T>* du_ = nullptr;              // xl (n_heads, d_head): the call's ∂L/∂u
  Matrix<T>* dv_ = nullptr;              // xl: ∂L/∂v
  HeadBackwardSlot<T>* slot_ = nullptr;  // the task's temporaries: by_distance (rows, R),
                                         // index (rows, len), xl's sums, vr (R), uk (len)
  Index h_ = 0, r0_ = 0, n_ = 0;
  std::int64_t lo_ = 0;  // the block's window [lo_, lo_ + count_)
  Index count_ = 1;
  DistanceBands bands_;  // banded, in block coordinates
};

}  // namespace relpos::detail
