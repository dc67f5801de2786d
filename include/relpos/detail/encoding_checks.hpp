// SPDX-License-Identifier: MIT
// Validation helpers of the encodings' tensors and inputs: each failure throws relpos::Error
// naming the tensor or input, the expected and the actual value. (Config keys have one rule
// per encoding, its static check(), in detail/checker.hpp's convention.)
#pragma once

#include <cstdint>
#include <random>
#include <string>

#include <relpos/core.hpp>

namespace relpos::detail {

/// "relative_key: expected [2K+1=9, 16], got [8, 16]"
inline void check_table_shape(const std::string& name, Index k, Index d, Index rows, Index cols) {
  if (rows != 2 * k + 1 || cols != d) {
    throw Error(name + ": expected [2K+1=" + std::to_string(2 * k + 1) + ", " + std::to_string(d) +
                "], got [" + std::to_string(rows) + ", " + std::to_string(cols) + "]");
  }
}

/// The positions of a (len, ·) input (a relpos::Positions): as many as rows, each
/// p_i + offset >= 0.
template <class P>
void check_positions(const char* encoding, const P& p, Index rows, std::int64_t offset) {
  if (p.len != rows) {
    throw Error(std::string(encoding) + ": positions: expected len " + std::to_string(rows) +
                " (the input's rows), got " + std::to_string(p.len));
  }
  for (Index i = 0; i < p.len; ++i) {
    std::int64_t shifted = 0;
    if (__builtin_add_overflow(p[i], offset, &shifted)) {
      throw Error(std::string(encoding) + ": positions: " + std::to_string(p[i]) + " + offset " +
                  std::to_string(offset) + " overflows at index " + std::to_string(i));
    }
    if (shifted < 0) {
      throw Error(std::string(encoding) + ": positions: expected >= 0, got " +
                  std::to_string(p[i] + offset) + " at index " + std::to_string(i));
    }
  }
}

/// A (rows, cols) matrix of N(0, stddev²) draws (in double, then cast) from gen, row by row.
template <class T>
Matrix<T> normal_matrix(Index rows, Index cols, std::mt19937_64& gen, double stddev) {
  std::normal_distribution<double> normal(0.0, stddev);
  Matrix<T> m(rows, cols);
  for (Index r = 0; r < rows; ++r) {
    for (Index c = 0; c < cols; ++c) m(r, c) = static_cast<T>(normal(gen));
  }
  return m;
}

}  // namespace relpos::detail
