// SPDX-License-Identifier: MIT
// config.json's `position` object for `additive` (spec §4); the struct, its defaults, checks
// and tensors are encodings/additive.hpp's.
#pragma once

#include <string>
#include <string_view>

#include <relpos/detail/json_fields.hpp>
#include <relpos/encodings/additive.hpp>

namespace relpos {
namespace io {
using AdditivePosition = AdditiveConfig;
using relpos::AdditiveSource;
}  // namespace io

namespace detail {
template <>
struct PositionJson<AdditiveConfig> {
  static constexpr KeySet keys{Additive<float>::name, {"source", "window", "max_distance", "base"}};
  static AdditiveConfig read(const JsonFields& f, std::string_view) {
    AdditiveConfig p;
    const std::string src = f.required(f.string("source"), "source");
    if (src == "sinusoidal") {
      p.source = AdditiveSource::sinusoidal;
    } else if (src == "learned") {
      p.source = AdditiveSource::learned;
    } else {
      f.fail("source", "expected \"sinusoidal\" or \"learned\", got \"" + src + "\"");
    }
    p.window = f.required(f.integer("window"), "window");
    p.max_distance = f.integer("max_distance");
    p.base = f.number("base").value_or(p.base);
    return p;
  }
  static void write(Json& j, const AdditiveConfig& p) {
    j["source"] = p.source == AdditiveSource::learned ? "learned" : "sinusoidal";
    put_optional(j, "window", p.window);  // required: present in a valid config
    put_optional(j, "max_distance", p.max_distance);
    j["base"] = p.base;
  }
};
}  // namespace detail

}  // namespace relpos
