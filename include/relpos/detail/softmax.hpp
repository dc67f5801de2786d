// SPDX-License-Identifier: MIT
// Row-wise masked softmax in place, max-subtracted, with spec §2's rule that a query with no
// visible key gets all-zero weights (its attention output is then out_proj's bias, not NaN).
#pragma once

#include <cmath>
#include <limits>

#include <relpos/core.hpp>

namespace relpos::detail {

/// scores: (len_q, len_k) → attention weights α, in place. Key j is hidden from query i when
/// key_padding[j] (null: nothing padded) or, when causal, j > i (by index, spec §2). Hidden
/// entries come out exactly 0, as exp(−inf) would.
template <class Derived>
void masked_softmax_rows(Eigen::MatrixBase<Derived>& scores, bool causal, const bool* key_padding) {
  using T = typename Derived::Scalar;
  const Index len_k = scores.cols();
  for (Index i = 0; i < scores.rows(); ++i) {
    auto row = scores.row(i);
    const Index end = causal ? std::min(i + 1, len_k) : len_k;  // keys j < end may be visible
    // subtract the row max over visible keys: exp() overflows in float past ~88
    T max = -std::numeric_limits<T>::infinity();
    bool any = false;
    if (key_padding == nullptr) {
      any = end > 0;
      if (any) max = row.head(end).maxCoeff();
    } else {
      for (Index j = 0; j < end; ++j) {
        if (!key_padding[j]) {
          max = any ? std::max(max, row(j)) : row(j);
          any = true;
        }
      }
    }
    if (!any) {
      row.setZero();  // no visible key: α_i = 0 (spec §2)
      continue;
    }
    row.head(end).array() = (row.head(end).array() - max).exp();
    row.tail(len_k - end).setZero();
    if (key_padding != nullptr) {
      for (Index j = 0; j < end; ++j) {
        if (key_padding[j]) row(j) = T(0);
      }
    }
    row /= row.head(end).sum();  // >= 1: the max entry contributes exp(0)
  }
}

}  // namespace relpos::detail
