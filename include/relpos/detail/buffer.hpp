// SPDX-License-Identifier: MIT
// Grow-only scratch storage: a forward pass asks for a (rows, cols) view each call, and the
// storage reallocates only when a larger shape than ever before comes (no per-call malloc).
#pragma once

#include <relpos/core.hpp>

namespace relpos::detail {

template <class E>
class Buffer {
 public:
  using Map = Eigen::Map<Eigen::Matrix<E, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>,
                         Eigen::AlignedMax>;

  /// A (rows, cols) row-major view of the storage, aligned as Eigen's own allocations (so a
  /// view's alignment, and thus Eigen's kernel choice, never depends on which buffer it is).
  /// Contents are unspecified. Earlier views stay valid unless this call had to grow.
  Map matrix(Index rows, Index cols) {
    reserve(rows * cols);
    return Map(storage_.data(), rows, cols);
  }
  E* data(Index n) {
    reserve(n);
    return storage_.data();
  }
  void reserve(Index n) {
    if (n > storage_.size()) storage_.resize(n);
  }
  Index capacity() const { return storage_.size(); }

 private:
  Eigen::Matrix<E, Eigen::Dynamic, 1> storage_;  // (capacity), Eigen-aligned
};

}  // namespace relpos::detail
