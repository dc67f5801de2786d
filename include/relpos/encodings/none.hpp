// SPDX-License-Identifier: MIT
// The `none` position type (spec §4): no positional information. It has no hooks, so
// attention instantiated with it compiles to plain scaled dot-product attention.
#pragma once

#include <relpos/core.hpp>
#include <relpos/encodings/concept.hpp>

namespace relpos {

/// The keys of spec §4 `none`: there are none.
struct NoneConfig {
  bool operator==(const NoneConfig&) const = default;
};

template <Scalar T>
struct NoPosition {
  using Scalar = T;
  using Config = NoneConfig;
  static constexpr const char* name = "none";

  template <TensorSource<T> Source>
  static auto loader(const NoneConfig&, const ModelShape&, const Source&) {
    return [](Index) { return NoPosition(); };
  }
};

static_assert(Encoding<NoPosition<float>>, "NoPosition must satisfy the Encoding concept");
static_assert(!has_attention_hooks<NoPosition<float>>, "NoPosition must add nothing to attention");

}  // namespace relpos
