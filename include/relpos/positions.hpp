// SPDX-License-Identifier: MIT
// Where a sequence's tokens sit (spec §2): the one input every encoding and the attention
// kernel read positions and distances from. On the lowest floor, beside core, because the
// distance tables, the skewing and the encodings all take it.
#pragma once

#include <cstdint>

#include <relpos/core.hpp>

namespace relpos {

/// The positions p_i of one sequence's tokens (spec §2). Without ids they are 0..len-1.
/// Distances are always key minus query: δ = p_j − p_i.
struct Positions {
  Index len = 0;
  const std::int64_t* ids = nullptr;  // len entries, or null for the plain 0..len-1
  // ℓ of spec §4 rotary scaling: the largest position of the whole batch + 1, set by
  // BatchInputs::item; 0 = derive it from these positions alone
  std::int64_t call_length = 0;

  std::int64_t operator[](Index i) const { return ids != nullptr ? ids[i] : i; }
  bool plain() const { return ids == nullptr; }
};

}  // namespace relpos
