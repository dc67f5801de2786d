// SPDX-License-Identifier: MIT
// The relative terms of spec §3 without a (len × len × d) tensor, by "skewing" (Huang et al.
// 2018, Music Transformer): products with the R distinct distance rows, then a gather into a
// block of scores (key term) or a scatter of a block's weights by distance (value term).
// detail/tiled_attention.hpp applies them to one tile at a time.
#pragma once

#include <algorithm>
#include <cstdint>

#include <relpos/core.hpp>
#include <relpos/detail/buffer.hpp>
#include <relpos/encodings/concept.hpp>

namespace relpos::detail {

/// Whether an encoding's key / value term is in use: the hook exists and, where the
/// encoding can switch it off at run time (sinusoidal's keys / values flags), it is on.
template <class E>
bool key_term_active(const E& e) {
  if constexpr (!HasKeyTerm<E>) {
    return false;
  } else if constexpr (requires { e.uses_keys(); }) {
    return e.uses_keys();
  } else {
    return true;
  }
}
template <class E>
bool value_term_active(const E& e) {
  if constexpr (!HasValueTerm<E>) {
    return false;
  } else if constexpr (requires { e.uses_values(); }) {
    return e.uses_values();
  } else {
    return true;
  }
}

/// The same for the per-head terms (xl's key rows, deberta's query rows; their run-time flags
/// uses_head_keys() / uses_head_queries()).
template <class E>
bool head_key_term_active(const E& e) {
  if constexpr (!HasHeadKeyTerm<E>) {
    return false;
  } else if constexpr (requires { e.uses_head_keys(); }) {
    return e.uses_head_keys();
  } else {
    return true;
  }
}
template <class E>
bool head_query_term_active(const E& e) {
  if constexpr (!HasHeadQueryTerm<E>) {
    return false;
  } else if constexpr (requires { e.uses_head_queries(); }) {
    return e.uses_head_queries();
  } else {
    return true;
  }
}

/// The clamped distances a sequence can use: [lo, hi] with lo = clamp(min δ), hi = clamp(max δ)
/// (clamping is monotone), δ = p_j − p_i over all pairs.
struct DistanceRange {
  std::int64_t lo = 0;
  std::int64_t hi = 0;
  std::int64_t count() const { return hi - lo + 1; }
};

template <class E>
DistanceRange distance_range(const E& e, const Positions& p) {
  if (p.len == 0) return {};
  std::int64_t min_p = p[0], max_p = p[0];
  for (Index i = 1; i < p.len; ++i) {
    min_p = std::min(min_p, p[i]);
    max_p = std::max(max_p, p[i]);
  }
  return {static_cast<std::int64_t>(e.clamp_distance(min_p - max_p)),
          static_cast<std::int64_t>(e.clamp_distance(max_p - min_p))};
}

/// Rows are fetched for a call's R distances while R <= kDenseRangeFactor · (queries + keys),
/// and a tile uses a window of them while its own R_tile <= kDenseRangeFactor · (Bq + Bk), so
/// rows and windows stay O(len). Contiguous positions (plain, offset, left padding) always
/// have R <= queries + keys − 1; only explicit ids with wide gaps go the sparse way.
inline constexpr Index kDenseRangeFactor = 4;

/// index(i, j) = clamp(p_j − p_i) − lo: the column of distance row of each (query, key) pair.
template <class E>
void build_distance_index(
    const E& e, const Positions& p, std::int64_t lo,
    Eigen::Ref<Eigen::Matrix<std::int32_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>
        index) {
  for (Index i = 0; i < p.len; ++i) {
    const std::int64_t pi = p[i];
    for (Index j = 0; j < p.len; ++j) {
      index(i, j) = static_cast<std::int32_t>(e.clamp_distance(p[j] - pi) - lo);
    }
  }
}

/// scores(i, j) += by_distance(i, index(i, j)): the skew gather of the key term.
template <class S, class B, class I>
void gather_add(Eigen::MatrixBase<S>& scores, const Eigen::MatrixBase<B>& by_distance,
                const Eigen::MatrixBase<I>& index) {
  for (Index i = 0; i < scores.rows(); ++i) {
    for (Index j = 0; j < scores.cols(); ++j) scores(i, j) += by_distance(i, index(i, j));
  }
}

/// by_distance(i, c) = Σ_{j : index(i, j) = c} α(i, j): the weights summed per distance, so
/// that Σ_j α_ij aV(c_ij) = (by_distance · aV)_i (value term).
template <class W, class A, class I>
void scatter_by_distance(Eigen::MatrixBase<W>& by_distance, const Eigen::MatrixBase<A>& alpha,
                         const Eigen::MatrixBase<I>& index) {
  by_distance.setZero();
  for (Index i = 0; i < alpha.rows(); ++i) {
    for (Index j = 0; j < alpha.cols(); ++j) by_distance(i, index(i, j)) += alpha(i, j);
  }
}

/// Contiguous positions (p_j − p_i = j − i: plain, or ids with an offset) under a saturating
/// clamp (c(δ) = min(max(δ, lo), hi), true of every encoding here): row i of the distance index
/// is then column 0 for j < i + lo, the band j − i − lo for j in [i + lo, i + hi], and column
/// R − 1 beyond. Gather and scatter then run on three contiguous segments per row instead of
/// an index lookup per pair, and no (len × len) index is built (at len 2048, K = 64 the value
/// scatter went from 17 ms to under 3 ms per head).
struct DistanceBands {
  std::int64_t lo = 0;  // the sequence's smallest clamped distance (DistanceRange::lo)
  std::int64_t hi = 0;

  /// Row i: [0, begin) reads column 0, [begin, end) the band from column band_column, the rest
  /// column R − 1.
  Index begin(Index i, Index len) const { return std::clamp<std::int64_t>(i + lo, 0, len); }
  Index end(Index i, Index len) const { return std::clamp<std::int64_t>(i + hi + 1, 0, len); }
  Index band_column(Index i, Index len) const { return begin(i, len) - i - lo; }
};

/// The distances a block of query rows [r0, r0 + n) meets against all len keys, as the
/// backward passes walk them: the window [lo, lo + count) of clamped distances, and how a pair
/// maps into it, by `bands` (contiguous positions, in block coordinates) or, otherwise, by
/// `index` (n, len) = c_ij − lo, which block_window fills.
struct BlockWindow {
  std::int64_t lo = 0;
  Index count = 1;
  DistanceBands bands;
};

template <class E, class IndexMatrix>
BlockWindow block_window(const E& enc, const Positions& p, Index r0, Index n, bool banded,
                         IndexMatrix& index) {
  const Index len = p.len;
  BlockWindow w;
  if (banded) {
    // δ_ij = j − (r0 + i): the window spans δ in [−r0 − (n − 1), len − 1 − r0]
    w.lo = enc.clamp_distance(-r0 - (n - 1));
    const std::int64_t hi = enc.clamp_distance(len - 1 - r0);
    w.count = hi - w.lo + 1;
    w.bands = {w.lo + r0, hi + r0};
    return w;
  }
  std::int64_t qmin = p[r0], qmax = qmin, kmin = p[0], kmax = kmin;
  for (Index i = 1; i < n; ++i) qmin = std::min(qmin, p[r0 + i]), qmax = std::max(qmax, p[r0 + i]);
  for (Index j = 1; j < len; ++j) kmin = std::min(kmin, p[j]), kmax = std::max(kmax, p[j]);
  w.lo = enc.clamp_distance(kmin - qmax);
  w.count = enc.clamp_distance(kmax - qmin) - w.lo + 1;
  for (Index i = 0; i < n; ++i) {
    const std::int64_t pi = p[r0 + i];
    for (Index j = 0; j < len; ++j) {
      index(i, j) = static_cast<std::int32_t>(enc.clamp_distance(p[j] - pi) - w.lo);
    }
  }
  return w;
}

/// Whether `p` and the encoding's clamp have the banded structure of DistanceBands (checked,
/// not assumed: an encoding with another clamp falls back to the index).
template <class E>
bool has_distance_bands(const E& e, const Positions& p, const DistanceRange& range) {
  for (Index i = 1; i < p.len; ++i) {
    if (p[i] != p[i - 1] + 1) return false;
  }
  for (std::int64_t delta = 1 - p.len; delta <= p.len - 1; ++delta) {
    if (e.clamp_distance(delta) != std::clamp(delta, range.lo, range.hi)) return false;
  }
  return true;
}

/// scores_row(j) = (scores_row(j) + dist_row(column of (i, j))) · scale for one query i (banded
/// gather; the scale lets attention fold its 1/sqrt(d_head) into the same pass over the row).
template <class S, class D, class T = typename D::Scalar>
void gather_add_row(S&& scores_row, const D& dist_row, Index i, const DistanceBands& bands,
                    T scale = T(1)) {
  const Index len = scores_row.size(), a = bands.begin(i, len), b = bands.end(i, len);
  scores_row.head(a) = (scores_row.head(a).array() + dist_row(0)) * scale;
  if (b > a) {
    scores_row.segment(a, b - a) =
        (scores_row.segment(a, b - a) + dist_row.segment(bands.band_column(i, len), b - a)) * scale;
  }
  scores_row.tail(len - b) =
      (scores_row.tail(len - b).array() + dist_row(dist_row.size() - 1)) * scale;
}

/// scores(i, j) = (scores(i, j) + by_distance(i, c_ij − lo)) · scale: the banded skew gather of
/// the key term.
template <class S, class B, class T = typename B::Scalar>
void gather_add(Eigen::MatrixBase<S>& scores, const Eigen::MatrixBase<B>& by_distance,
                const DistanceBands& bands, T scale = T(1)) {
  for (Index i = 0; i < scores.rows(); ++i) {
    gather_add_row(scores.row(i), by_distance.row(i), i, bands, scale);
  }
}

/// The banded scatter: by_distance(i, c − lo) = Σ_{j : c_ij = c} α(i, j).
template <class W, class A>
void scatter_by_distance(Eigen::MatrixBase<W>& by_distance, const Eigen::MatrixBase<A>& alpha,
                         const DistanceBands& bands) {
  by_distance.setZero();
  const Index len = alpha.cols(), last = by_distance.cols() - 1;
  for (Index i = 0; i < alpha.rows(); ++i) {
    const Index a = bands.begin(i, len), b = bands.end(i, len);
    by_distance(i, 0) += alpha.row(i).head(a).sum();
    if (b > a) {
      by_distance.row(i).segment(bands.band_column(i, len), b - a) +=
          alpha.row(i).segment(a, b - a);
    }
    by_distance(i, last) += alpha.row(i).tail(len - b).sum();
  }
}

}  // namespace relpos::detail
