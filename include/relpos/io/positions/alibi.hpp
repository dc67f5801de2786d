// SPDX-License-Identifier: MIT
// config.json's `position` object for `alibi` (spec §4); the struct, its default and check
// are encodings/alibi.hpp's.
#pragma once

#include <string_view>

#include <relpos/detail/json_fields.hpp>
#include <relpos/encodings/alibi.hpp>

namespace relpos {
namespace io {
using AlibiPosition = AlibiConfig;
}  // namespace io

namespace detail {
template <>
struct PositionJson<AlibiConfig> {
  static constexpr KeySet keys{AlibiBias<float>::name, {"max_bias"}};
  static AlibiConfig read(const JsonFields& f, std::string_view) {
    AlibiConfig p;
    p.max_bias = f.number("max_bias").value_or(p.max_bias);
    return p;
  }
  static void write(Json& j, const AlibiConfig& p) { j["max_bias"] = p.max_bias; }
};
}  // namespace detail

}  // namespace relpos
