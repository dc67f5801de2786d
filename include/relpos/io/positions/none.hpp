// SPDX-License-Identifier: MIT
// config.json's `position` object for `none` (spec §4): no keys.
#pragma once

#include <string_view>

#include <relpos/detail/json_fields.hpp>
#include <relpos/encodings/none.hpp>

namespace relpos {
namespace io {
using NonePosition = NoneConfig;
}  // namespace io

namespace detail {
template <>
struct PositionJson<NoneConfig> {
  static constexpr KeySet keys{NoPosition<float>::name, {}};
  static NoneConfig read(const JsonFields&, std::string_view) { return {}; }
  static void write(Json&, const NoneConfig&) {}
};
}  // namespace detail

}  // namespace relpos
