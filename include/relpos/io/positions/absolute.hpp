// SPDX-License-Identifier: MIT
// config.json's `position` object for `absolute` (spec §4); the struct, its defaults and its
// checks are encodings/absolute.hpp's.
#pragma once

#include <string_view>

#include <relpos/detail/json_fields.hpp>
#include <relpos/encodings/absolute.hpp>

namespace relpos {
namespace io {
using AbsolutePosition = AbsoluteConfig;
}  // namespace io

namespace detail {
template <>
struct PositionJson<AbsoluteConfig> {
  static constexpr KeySet keys{AbsoluteSinusoidal<float>::name, {"base"}};
  static AbsoluteConfig read(const JsonFields& f, std::string_view) {
    AbsoluteConfig p;
    p.base = f.number("base").value_or(p.base);
    return p;
  }
  static void write(Json& j, const AbsoluteConfig& p) { j["base"] = p.base; }
};
}  // namespace detail

}  // namespace relpos
