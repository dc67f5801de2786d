// SPDX-License-Identifier: MIT
// config.json's `position` object for `kerple` (spec §4, third wave); the struct, its checks
// and tensors are encodings/kerple.hpp's.
#pragma once

#include <string>
#include <string_view>

#include <relpos/detail/json_fields.hpp>
#include <relpos/encodings/kerple.hpp>

namespace relpos {
namespace io {
using KerplePosition = KerpleConfig;
}  // namespace io

namespace detail {
template <>
struct PositionJson<KerpleConfig> {
  static constexpr KeySet keys{KerpleBias<float>::name, {"form"}};
  static KerpleConfig read(const JsonFields& f, std::string_view) {
    KerpleConfig p;
    const std::string form = f.required(f.string("form"), "form");
    if (form == "log") {
      p.form = KerpleForm::log;
    } else if (form == "power") {
      p.form = KerpleForm::power;
    } else {
      f.fail("form", "expected \"log\" or \"power\", got \"" + form + "\"");
    }
    return p;
  }
  static void write(Json& j, const KerpleConfig& p) {
    if (p.form) j["form"] = kerple_form_name(*p.form);  // required: present in a valid config
  }
};
}  // namespace detail

}  // namespace relpos
