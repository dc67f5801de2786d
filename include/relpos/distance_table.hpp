// SPDX-License-Identifier: MIT
// The cached table of relative-position rows a(c), one row per distinct clamped distance
// c = clamp(j − i, −K, K) (Shaw et al. 2018), and the zero-copy (len × len × d) view over it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include <relpos/core.hpp>
#include <relpos/detail/growing_table.hpp>
#include <relpos/distance_rows.hpp>

namespace relpos {

template <Scalar T>
class DistanceTable;

/// The (len × len × d) relative table t(i, j, :) = a(clamp(j − i)) of one sequence length,
/// as a view: O(len·d) memory at most, never len²·d.
///
/// It points into a snapshot of rows r(c), c in [−(len−1), len−1], where row c sits at
/// index c + zero_row. For query i the keys j = 0..len−1 have distances j − i, i.e. the
/// consecutive rows (−i .. len−1−i): query_slice(i) is a plain Map of them, for every i.
/// Without clamping (or when len − 1 <= K) the snapshot is the cached table itself (no
/// copy). With clamping and len − 1 > K, the view owns one padded (2·len − 1, d) copy in
/// which the rows beyond ±K repeat the edge rows, so query slices stay contiguous maps.
/// The view holds its snapshot alive: the table may grow meanwhile (on any thread).
template <Scalar T>
class RelativeView {
 public:
  Index len() const { return len_; }
  Index width() const { return rows_->cols(); }

  /// t(i, j, k) = a(clamp(j − i))[k]; distance is key minus query.
  T operator()(Index i, Index j, Index k) const {
    RELPOS_ASSERT(i >= 0 && i < len_ && j >= 0 && j < len_, "RelativeView index out of range");
    return (*rows_)(zero_row_ + j - i, k);
  }

  /// Query i's (len, d) slice: row j is a(clamp(j − i)). Zero-copy, contiguous.
  ConstMatrixMap<T> query_slice(Index i) const {
    RELPOS_ASSERT(i >= 0 && i < len_, "RelativeView::query_slice: query out of range");
    return ConstMatrixMap<T>(rows_->data() + (zero_row_ - i) * width(), len_, width());
  }

  /// A dense (len, len, d) copy, t(i, j, k): the only path that allocates len²·d.
  Tensor3<T> materialize() const {
    Tensor3<T> out(len_, len_, width());
    for (Index i = 0; i < len_; ++i) {
      MatrixMap<T>(out.data() + i * len_ * width(), len_, width()) = query_slice(i);
    }
    return out;
  }

 private:
  friend class DistanceTable<T>;
  RelativeView(std::shared_ptr<const Matrix<T>> rows, Index zero_row, Index len)
      : rows_(std::move(rows)), zero_row_(zero_row), len_(len) {}

  std::shared_ptr<const Matrix<T>> rows_;  // (≥ 2·len − 1, d), row c at zero_row_ + c
  Index zero_row_ = 0;
  Index len_ = 0;
};

/// Rows a(c) by clamped distance c, cached for a maximum length M: the snapshot holds
/// c in [−(M−1), M−1] at row c + M − 1 (with a maximum distance K, M <= K + 1, so the
/// table never exceeds the 2K + 1 distinct rows). O(M·d) memory: (2M − 1)·d scalars, at
/// most detail::kMaxCachedScalars; longer spans are computed per request, not cached.
///
/// Growth is automatic: a request for a distance beyond the cached span (rows(), view())
/// rebuilds the table for max(needed, 2M) (amortized doubling) and publishes it; a shorter
/// request reuses the current table, with no allocation and no recomputation. Growth
/// rebuilds every row with the same generator, so a grown table equals one built at the
/// larger size directly. Thread-safe: any number of threads may read and grow at once
/// (see detail::GrowingTable); what a reader got stays valid while it holds it. Copies of
/// a DistanceTable share one cache.
template <Scalar T>
class DistanceTable {
 public:
  /// Fills the width-d row of clamped distance c; must be a pure function of c.
  using RowGenerator = std::function<void(std::int64_t c, T* out)>;
  /// Fills `count` consecutive rows, of distances first .. first + count − 1, row-major into
  /// out; a pure function of each row's distance. For generators whose per-row cost is a
  /// product (Transformer-XL's r_net) a block makes it one matrix product instead of count
  /// matrix-vector products, so that growing the cache stays cheap.
  using BlockGenerator = std::function<void(std::int64_t first, Index count, T* out)>;

  /// A generated table of row width `width`, clamped to [−K, K] when max_distance = K,
  /// caching at most max_cached_scalars scalars.
  DistanceTable(Index width, RowGenerator generate, std::optional<Index> max_distance,
                Index max_cached_scalars = detail::kMaxCachedScalars)
      : DistanceTable(width, by_rows(width, std::move(generate)), max_distance,
                      max_cached_scalars) {}

  /// The same, with rows generated a block at a time.
  DistanceTable(Index width, BlockGenerator generate, std::optional<Index> max_distance,
                Index max_cached_scalars = detail::kMaxCachedScalars)
      : width_(width), max_distance_(max_distance) {
    RELPOS_ASSERT(width >= 1, "DistanceTable: width must be >= 1");
    RELPOS_ASSERT(!max_distance || *max_distance >= 0, "DistanceTable: K must be >= 0");
    // the longest M whose (2M − 1, d) table stays within max_cached_scalars
    cache_limit_ = std::max<Index>(1, (max_cached_scalars / width + 1) / 2);
    if (max_distance) cache_limit_ = std::min(cache_limit_, *max_distance + 1);
    generate_ = std::make_shared<const BlockGenerator>(std::move(generate));
    cache_ = std::make_shared<detail::GrowingTable<T>>(
        [width, gen = generate_](Index m) {
          Matrix<T> rows(2 * m - 1, width);  // row c + m − 1 holds a(c)
          (*gen)(-(m - 1), rows.rows(), rows.data());
          return rows;
        },
        cache_limit_);
  }

  /// A fixed table: the (2K + 1, d) rows for c = −K..K themselves (a learned table).
  /// It never grows: every clamped distance is already there.
  explicit DistanceTable(Matrix<T> rows)
      : width_(rows.cols()), max_distance_((rows.rows() - 1) / 2) {
    RELPOS_ASSERT(rows.rows() % 2 == 1 && rows.cols() >= 1,
                  "DistanceTable: a fixed table has 2K + 1 rows");
    const Index k = *max_distance_;
    cache_limit_ = k + 1;  // every request fits: distances are clamped to ±K
    cache_ = std::make_shared<detail::GrowingTable<T>>(
        [](Index) -> Matrix<T> {
          RELPOS_ASSERT(false, "DistanceTable: a fixed table is built once");
          return {};
        },
        k + 1);
    cache_->publish(std::make_shared<Matrix<T>>(std::move(rows)), k + 1);
  }

  Index width() const { return width_; }
  std::optional<Index> max_distance() const { return max_distance_; }

  /// c = clamp(δ, −K, K), or δ without a maximum distance (spec §3).
  std::int64_t clamp(std::int64_t delta) const {
    if (!max_distance_) return delta;
    const auto k = static_cast<std::int64_t>(*max_distance_);
    return std::clamp(delta, -k, k);
  }

  /// The rows a(c) for clamped distances c in [lo, hi], (hi − lo + 1, d); grows the cache
  /// when the span is not there yet. lo and hi must already be clamped. A span beyond what
  /// the cache may hold (detail::kMaxCachedScalars) is computed for this call only, and so is
  /// a short span far from 0 (see detail::worth_growing).
  DistanceRows<T> rows(std::int64_t lo, std::int64_t hi) const {
    RELPOS_ASSERT(lo <= hi, "DistanceTable::rows: lo > hi");
    RELPOS_ASSERT(clamp(lo) == lo && clamp(hi) == hi, "DistanceTable::rows: distance not clamped");
    const Index needed = std::max<Index>(-lo, hi) + 1;
    auto snap = cache_->current();
    if (needed > snap.capacity) {
      if (!detail::worth_growing(needed, hi - lo + 1, cache_limit_)) {
        auto block = std::make_shared<Matrix<T>>(hi - lo + 1, width_);  // row c − lo
        (*generate_)(lo, block->rows(), block->data());
        return DistanceRows<T>{std::move(block), 0, lo, hi - lo + 1};
      }
      snap = cache_->at_least(needed);
    }
    const Index zero_row = snap.capacity - 1;
    return DistanceRows<T>{std::move(snap.rows), zero_row + lo, lo, hi - lo + 1};
  }

  /// The (len × len × d) view of a sequence of `len` tokens at positions 0..len−1.
  RelativeView<T> view(Index len) const {
    if (len < 0) throw Error("DistanceTable::view: len: expected >= 0, got " + std::to_string(len));
    const Index span = std::max<Index>(len, 1);
    const Index distinct = max_distance_ ? std::min(span, *max_distance_ + 1) : span;
    auto padded = std::make_shared<Matrix<T>>();  // (2·len − 1, d), row c + len − 1
    if (distinct <= cache_limit_) {
      auto snap = cache_->at_least(distinct);
      if (snap.capacity >= span) {  // every distance of len is in the cached span: no copy
        const Index zero_row = snap.capacity - 1;
        return RelativeView<T>(std::move(snap.rows), zero_row, len);
      }
      // clamped and len − 1 > K: pad with the edge rows so query slices stay contiguous
      const Index k = snap.capacity - 1;
      padded->resize(2 * len - 1, width_);
      for (Index r = 0; r < padded->rows(); ++r) {
        padded->row(r) = snap.rows->row(clamp(r - (len - 1)) + k);
      }
    } else {  // longer than the cache may hold: this view's rows, computed now
      padded->resize(2 * len - 1, width_);
      if (!max_distance_) {
        (*generate_)(-(len - 1), padded->rows(), padded->data());
      } else {
        for (Index r = 0; r < padded->rows(); ++r) {
          (*generate_)(clamp(r - (len - 1)), 1, padded->row(r).data());
        }
      }
    }
    return RelativeView<T>(std::move(padded), len - 1, len);
  }

  /// view(len).materialize(): a dense (len, len, d) tensor.
  Tensor3<T> materialize(Index len) const { return view(len).materialize(); }

  /// Whether this table alone holds its rows: no copy of it shares its cache and no reader
  /// holds a snapshot (DistanceRows, RelativeView). Training changes a table in place only
  /// then (Model::assign_weights); otherwise it builds a new one, so a copy never sees another's
  /// update (copy-on-write).
  /// `holders`: the copies that may share it, all of one model (a table every layer shares).
  bool exclusive(Index holders = 1) const {
    return cache_.use_count() == holders && cache_->rows_exclusive();
  }

  /// A fixed table's rows set to `rows` (the same (2K + 1, d) shape), in place: no allocation.
  /// Requires exclusive(); every copy sharing the cache sees the new rows.
  void assign(ConstMatrixRef<T> rows) {
    RELPOS_ASSERT(!generate_ && cache_->rows_exclusive() &&
                      rows.rows() == 2 * max_distance_.value_or(0) + 1 && rows.cols() == width_,
                  "DistanceTable::assign: not an exclusive fixed table of this shape");
    cache_->rewrite([&](Matrix<T>& cached, Index) { cached = rows; });
  }

  /// A generated table's cached rows made again, in place, after the generator's inputs
  /// changed: fill(first, count, out) must give what the generator now gives (the owner's
  /// computation with its own scratch, so that no allocation happens). Requires exclusive().
  template <class Fill>
  void regenerate(Fill&& fill) {
    RELPOS_ASSERT(generate_ && cache_->rows_exclusive(), "DistanceTable::regenerate: rows held");
    cache_->rewrite(
        [&](Matrix<T>& cached, Index m) { fill(-(m - 1), cached.rows(), cached.data()); });
  }

  /// M, the maximum length the cache currently covers (0 before the first request).
  Index cached_length() const { return cache_->current().capacity; }
  /// Bytes of the cached rows: (2M − 1)·d·sizeof(T).
  std::size_t cached_bytes() const {
    const auto snap = cache_->current();
    return snap.rows ? static_cast<std::size_t>(snap.rows->size()) * sizeof(T) : 0;
  }
  /// The current table, (2M − 1, d), row c + M − 1 = a(c); null before the first request.
  std::shared_ptr<const Matrix<T>> snapshot() const { return cache_->current().rows; }

 private:
  Index width_;
  std::optional<Index> max_distance_;
  Index cache_limit_ = 0;  // the largest M the cache may reach
  static BlockGenerator by_rows(Index width, RowGenerator row) {
    return [width, row = std::move(row)](std::int64_t first, Index count, T* out) {
      for (Index r = 0; r < count; ++r) row(first + r, out + r * width);
    };
  }

  std::shared_ptr<const BlockGenerator> generate_;  // null for a fixed table
  std::shared_ptr<detail::GrowingTable<T>> cache_;
};

}  // namespace relpos
