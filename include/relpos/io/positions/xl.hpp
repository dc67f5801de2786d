// SPDX-License-Identifier: MIT
// config.json's `position` object for `xl` (spec §4); the struct, its defaults, checks and
// tensors are encodings/xl.hpp's.
#pragma once

#include <string_view>

#include <relpos/detail/json_fields.hpp>
#include <relpos/encodings/xl.hpp>

namespace relpos {
namespace io {
using XlPosition = XlConfig;
}  // namespace io

namespace detail {
template <>
struct PositionJson<XlConfig> {
  static constexpr KeySet keys{XlRelative<float>::name, {"base", "max_distance"}};
  static XlConfig read(const JsonFields& f, std::string_view) {
    XlConfig p;
    p.base = f.number("base").value_or(p.base);
    p.max_distance = f.integer("max_distance");
    return p;
  }
  static void write(Json& j, const XlConfig& p) {
    j["base"] = p.base;
    put_optional(j, "max_distance", p.max_distance);
  }
};
}  // namespace detail

}  // namespace relpos
