// SPDX-License-Identifier: MIT
// config.json's `position` object for `sinusoidal` (spec §4); the struct, its defaults and
// its checks are encodings/sinusoidal.hpp's.
#pragma once

#include <string_view>

#include <relpos/detail/json_fields.hpp>
#include <relpos/encodings/sinusoidal.hpp>

namespace relpos {
namespace io {
using SinusoidalPosition = SinusoidalConfig;
}  // namespace io

namespace detail {
template <>
struct PositionJson<SinusoidalConfig> {
  static constexpr KeySet keys{SinusoidalRelative<float>::name,
                               {"base", "max_distance", "keys", "values"}};
  static SinusoidalConfig read(const JsonFields& f, std::string_view) {
    SinusoidalConfig p;
    p.base = f.number("base").value_or(p.base);
    p.max_distance = f.integer("max_distance");
    p.keys = f.boolean("keys").value_or(p.keys);
    p.values = f.boolean("values").value_or(p.values);
    return p;
  }
  static void write(Json& j, const SinusoidalConfig& p) {
    j["base"] = p.base;
    put_optional(j, "max_distance", p.max_distance);
    j["keys"] = p.keys;
    j["values"] = p.values;
  }
};
}  // namespace detail

}  // namespace relpos
