// SPDX-License-Identifier: MIT
// config.json's `position` object for `learned` (spec §4); the struct, its defaults, checks
// and tensors are encodings/learned.hpp's.
#pragma once

#include <string_view>

#include <relpos/detail/json_fields.hpp>
#include <relpos/encodings/learned.hpp>

namespace relpos {
namespace io {
using LearnedPosition = LearnedConfig;
}  // namespace io

namespace detail {
template <>
struct PositionJson<LearnedConfig> {
  static constexpr KeySet keys{LearnedRelative<float>::name, {"max_distance", "keys", "values"}};
  static LearnedConfig read(const JsonFields& f, std::string_view) {
    LearnedConfig p;
    p.max_distance = f.required(f.integer("max_distance"), "max_distance");
    p.keys = f.boolean("keys").value_or(p.keys);
    p.values = f.boolean("values").value_or(p.values);
    return p;
  }
  static void write(Json& j, const LearnedConfig& p) {
    put_optional(j, "max_distance", p.max_distance);  // required: present in a valid config
    j["keys"] = p.keys;
    j["values"] = p.values;
  }
};
}  // namespace detail

}  // namespace relpos
