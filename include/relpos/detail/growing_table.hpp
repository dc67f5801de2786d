// SPDX-License-Identifier: MIT
// A table of rows that grows on demand (amortized doubling) and is read through immutable
// snapshots, so readers on other threads keep valid rows while a writer grows it.
#pragma once

#include <algorithm>
#include <functional>
#include <memory>
#include <mutex>
#include <utility>

#include <relpos/core.hpp>

namespace relpos::detail {

/// The most scalars a position table caches (128 MiB in float, 256 MiB in double). Rows
/// beyond it (a position or distance of 10^9 from hostile or sparse position ids) are
/// computed when asked and not kept, so no input can make a cache allocate without bound.
inline constexpr Index kMaxCachedScalars = Index{1} << 25;

/// Whether a request for `count` rows (tokens, or distances) that reaches capacity `needed`
/// should grow a cache to `needed`, at most `limit`. A cache is one contiguous span from 0,
/// so growing costs O(needed) rows whatever the request's size: worth it for a sequence's own
/// span (count >= needed / 2) or a small table, never for a few far rows (sparse position ids
/// spread to 10^6 would otherwise build millions of rows for a dozen tokens); those rows are
/// computed for the call instead.
inline bool worth_growing(Index needed, Index count, Index limit) {
  constexpr Index kAlwaysCached = 4096;  // rows cheap enough to keep whatever asked for them
  return needed <= limit && (needed <= kAlwaysCached || 2 * count >= needed);
}

/// The cache behind every position table (distances, rotary cos/sin, absolute PE).
/// `build(capacity)` makes the whole table for a capacity (its meaning is the owner's:
/// a maximum length, a number of positions); it must be a pure function of capacity, so
/// growing gives exactly the table a direct build at the larger capacity gives.
///
/// Thread safety: `at_least` may be called from any number of threads. A reader copies
/// the current snapshot under `mutex_` (a shared_ptr copy: no allocation, no compute);
/// a grower serializes on `grow_mutex_`, builds the new table outside `mutex_`, then
/// publishes it. Old snapshots stay alive as long as a reader holds them.
template <class T>
class GrowingTable {
 public:
  struct Snapshot {
    std::shared_ptr<const Matrix<T>> rows;  // (rows for `capacity`, width)
    Index capacity = 0;
  };
  using Builder = std::function<Matrix<T>(Index capacity)>;

  /// `limit`: the largest capacity worth building (a clamped table is complete there).
  GrowingTable(Builder build, Index limit) : build_(std::move(build)), limit_(limit) {}

  /// A snapshot whose capacity is >= min(capacity, limit); grows to at least twice the
  /// current capacity when it must grow, so n requests of rising length cost O(final size).
  Snapshot at_least(Index capacity) const {
    capacity = std::min(capacity, limit_);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (current_.capacity >= capacity && current_.rows) return current_;
    }
    std::lock_guard<std::mutex> grow(grow_mutex_);
    Index have = 0;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      // another thread may have grown it while this one waited for grow_mutex_
      if (current_.capacity >= capacity && current_.rows) return current_;
      have = current_.capacity;
    }
    const Index target = std::min(limit_, std::max(capacity, 2 * have));
    std::shared_ptr<const Matrix<T>> rows = std::make_shared<Matrix<T>>(build_(target));
    std::lock_guard<std::mutex> lock(mutex_);
    current_ = Snapshot{std::move(rows), target};
    return current_;
  }

  /// Installs a ready table (a fixed table that never grows).
  void publish(std::shared_ptr<Matrix<T>> rows, Index capacity) {
    std::lock_guard<std::mutex> lock(mutex_);
    current_ = Snapshot{std::move(rows), capacity};
  }

  /// Whether nobody but this table holds its rows: no reader keeps a snapshot of them. Only
  /// then may rewrite() change them, as a reader's rows must not change under it.
  bool rows_exclusive() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return !current_.rows || current_.rows.use_count() == 1;
  }

  /// Rewrites the current rows in place, fill(Matrix<T>& rows, Index capacity), for an owner
  /// whose builder's inputs changed (training updated a tensor): no allocation. Only when
  /// rows_exclusive(), and not while another thread reads or grows the table. Writing through
  /// the snapshot's pointer is defined: every table here is created non-const (at_least,
  /// publish), and only handed out as const.
  template <class Fill>
  void rewrite(Fill&& fill) {
    std::lock_guard<std::mutex> lock(mutex_);
    RELPOS_ASSERT(!current_.rows || current_.rows.use_count() == 1,
                  "GrowingTable::rewrite: a reader holds the rows");
    if (current_.rows) fill(const_cast<Matrix<T>&>(*current_.rows), current_.capacity);
  }

  /// The snapshot as it is now (possibly empty), without growing.
  Snapshot current() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return current_;
  }
  /// Bytes of the current rows (0 before the first build).
  std::size_t cached_bytes() const {
    const Snapshot snap = current();
    return snap.rows ? static_cast<std::size_t>(snap.rows->size()) * sizeof(T) : 0;
  }

 private:
  Builder build_;
  Index limit_;
  mutable std::mutex mutex_;       // guards current_
  mutable std::mutex grow_mutex_;  // one grower at a time
  mutable Snapshot current_;
};

}  // namespace relpos::detail
