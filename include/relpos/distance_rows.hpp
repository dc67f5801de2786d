// SPDX-License-Identifier: MIT
// The rows a distance table hands out (aK(δ), aV(δ), xl's R(δ)): what an encoding's key and
// value hooks return and attention gathers from. On the lowest floor, beside core, because
// the table (distance_table.hpp) and the encodings built on it both speak it.
#pragma once

#include <memory>

#include <relpos/core.hpp>

namespace relpos {

/// A contiguous block of a cached distance table: rows for the clamped distances
/// c = first .. first + rows() - 1, each of width d. It holds the table it points into
/// alive, so a thread that grows the cache never invalidates a reader's rows.
template <class T>
struct DistanceRows {
  std::shared_ptr<const Matrix<T>> table;  // the whole cached table, (n_rows, d)
  Index offset = 0;                        // row of `table` that holds distance `first`
  Index first = 0;                         // the smallest clamped distance in the block
  Index count = 0;                         // number of distances in the block

  ConstMatrixMap<T> view() const {
    return ConstMatrixMap<T>(table->data() + offset * table->cols(), count, table->cols());
  }
};

}  // namespace relpos
