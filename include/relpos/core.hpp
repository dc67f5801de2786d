// SPDX-License-Identifier: MIT
// Floor 0 of relpos: scalar and matrix aliases, the batch representation, the error type
// and RELPOS_ASSERT. Everything else in the library includes this header.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <type_traits>

#include <relpos/detail/eigen.hpp>

namespace relpos {

using Index = Eigen::Index;

/// The scalar types relpos is instantiated and tested with.
template <class T>
concept Scalar = std::is_same_v<T, float> || std::is_same_v<T, double>;

// Row-major everywhere: a row is a token, so a token's vector is contiguous, as in
// PyTorch's (batch, len, d) tensors and in the safetensors files we read.
template <class T>
using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using Vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;
template <class T>
using RowVector = Eigen::Matrix<T, 1, Eigen::Dynamic>;
template <class T>
using MatrixMap = Eigen::Map<Matrix<T>>;
template <class T>
using ConstMatrixMap = Eigen::Map<const Matrix<T>>;
template <class T>
using MatrixRef = Eigen::Ref<Matrix<T>>;
template <class T>
using ConstMatrixRef = Eigen::Ref<const Matrix<T>>;

/// A batch of activations, [batch, len, d], row-major (the last index is contiguous),
/// exactly PyTorch's batch_first layout. One item is viewed as a (len, d) Matrix with item().
template <class T>
using Tensor3 = Eigen::Tensor<T, 3, Eigen::RowMajor>;

/// Per-token integer data of a batch, [batch, len]: position ids.
using PositionIds = Eigen::Array<std::int64_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
/// Token ids of a batch, [batch, len] (also the targets of a loss, and token types).
using TokenIds = Eigen::Array<std::int64_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
/// Key padding mask, [batch, len]: true = padded key (torch's src_key_padding_mask).
using PaddingMask = Eigen::Array<bool, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Item b of a batch as a (len, d) row-major matrix, without copying.
template <class T>
MatrixMap<T> item(Tensor3<T>& batch, Index b) {
  return MatrixMap<T>(batch.data() + b * batch.dimension(1) * batch.dimension(2),
                      batch.dimension(1), batch.dimension(2));
}
template <class T>
ConstMatrixMap<T> item(const Tensor3<T>& batch, Index b) {
  return ConstMatrixMap<T>(batch.data() + b * batch.dimension(1) * batch.dimension(2),
                           batch.dimension(1), batch.dimension(2));
}

/// The one exception type of relpos: bad input from outside (files, flags, user shapes).
/// Its message names the thing that is wrong, what was expected and what was found.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
[[noreturn]] inline void assert_failed(const char* file, int line, const char* cond,
                                       const char* msg) {
  std::fprintf(stderr, "%s:%d: relpos internal check failed: %s (%s)\n", file, line, cond, msg);
  std::abort();
}
}  // namespace detail

}  // namespace relpos

// Programmer errors inside the library (a broken invariant, never bad user input). Stays on
// in release builds; define RELPOS_ASSERT before including relpos to route it elsewhere.
#ifndef RELPOS_ASSERT
#define RELPOS_ASSERT(cond, msg)                                                    \
  do {                                                                              \
    if (!(cond)) ::relpos::detail::assert_failed(__FILE__, __LINE__, #cond, (msg)); \
  } while (false)
#endif
