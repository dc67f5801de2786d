// SPDX-License-Identifier: MIT
// The `none` position type (spec §4): no positional information. It has no hooks, so
// attention instantiated with it compiles to plain scaled dot-product attention.
#pragma once

#include <relpos/core.hpp>
#include <relpos/encodings/concept.hpp>

namespace relpos {

template <Scalar T>
struct NoPosition {
  using Scalar = T;
  static constexpr const char* name = "none";
};

static_assert(Encoding<NoPosition<float>>, "NoPosition must satisfy the Encoding concept");
static_assert(!has_attention_hooks<NoPosition<float>>, "NoPosition must add nothing to attention");

}  // namespace relpos
