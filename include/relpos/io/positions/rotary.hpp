// SPDX-License-Identifier: MIT
// config.json's `position` object for `rotary` (spec §4); the struct, its defaults and checks
// are encodings/rotary.hpp's, the `scaling` object's JSON io/rotary_scaling_config.hpp's.
#pragma once

#include <string_view>

#include <relpos/detail/json_fields.hpp>
#include <relpos/encodings/rotary.hpp>
#include <relpos/io/rotary_scaling_config.hpp>

namespace relpos {
namespace io {
using RotaryPosition = RotaryConfig;
}  // namespace io

namespace detail {
template <>
struct PositionJson<RotaryConfig> {
  static constexpr KeySet keys{Rotary<float>::name,
                               {"base", "rotary_dim", "interleaved", "scaling"}};
  static RotaryConfig read(const JsonFields& f, std::string_view source) {
    RotaryConfig p;
    p.base = f.number("base").value_or(p.base);
    p.rotary_dim = f.integer("rotary_dim");
    p.interleaved = f.boolean("interleaved").value_or(p.interleaved);
    if (f.has("scaling")) p.scaling = io::detail::read_scaling(f.object()["scaling"], source);
    return p;
  }
  static void write(Json& j, const RotaryConfig& p) {
    j["base"] = p.base;
    put_optional(j, "rotary_dim", p.rotary_dim);
    j["interleaved"] = p.interleaved;
    if (p.scaling) j["scaling"] = io::scaling_to_json(*p.scaling);
  }
};
}  // namespace detail

}  // namespace relpos
