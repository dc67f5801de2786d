// SPDX-License-Identifier: MIT
// Where a sequence's tokens sit (spec §2): the one input every encoding and the attention
// kernel read positions and distances from. On the lowest floor, beside core, because the
// distance tables, the skewing and the encodings all take it.
#pragma once

#include <cstdint>

#include <relpos/core.hpp>

namespace relpos {

/// The positions p_i of one sequence's tokens (spec §2). Without ids they are first..first +
/// len − 1 (0..len − 1 for a whole sequence). Distances are always key minus query: δ = p_j − p_i.
struct Positions {
  Index len = 0;
  const std::int64_t* ids = nullptr;  // len entries, or null for the plain first..first+len−1
  // ℓ of spec §4 rotary scaling: the largest position of the whole batch + 1, set by
  // BatchInputs::item; 0 = derive it from these positions alone
  std::int64_t call_length = 0;
  // without ids: the first token's position (non-zero only for a row block of a sequence,
  // rows(); a whole sequence starts at 0)
  std::int64_t first = 0;

  std::int64_t operator[](Index i) const { return ids != nullptr ? ids[i] : first + i; }
  /// No ids: the positions step by one from `first`.
  bool plain() const { return ids == nullptr; }

  /// Tokens [r0, r0 + n) as their own Positions: a block of query rows that attention takes
  /// at a time (attention.hpp). It keeps the whole sequence's ℓ, so rotary scaling sees the
  /// same call length in every block.
  Positions rows(Index r0, Index n) const {
    Positions p;
    p.len = n;
    p.call_length = call_length;
    if (p.call_length == 0 && len > 0) {
      std::int64_t largest = (*this)[0];
      for (Index i = 1; i < len; ++i) largest = largest > (*this)[i] ? largest : (*this)[i];
      p.call_length = largest + 1;
    }
    if (ids != nullptr) {
      p.ids = ids + r0;
    } else {
      p.first = first + r0;
    }
    return p;
  }
};

}  // namespace relpos
