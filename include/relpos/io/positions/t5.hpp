// SPDX-License-Identifier: MIT
// config.json's `position` object for `t5` (spec §4); the struct, its defaults, checks and
// tensor are encodings/t5.hpp's.
#pragma once

#include <string_view>

#include <relpos/detail/json_fields.hpp>
#include <relpos/encodings/t5.hpp>

namespace relpos {
namespace io {
using T5Position = T5Config;
}  // namespace io

namespace detail {
template <>
struct PositionJson<T5Config> {
  static constexpr KeySet keys{T5Bias<float>::name,
                               {"num_buckets", "max_distance", "bidirectional"}};
  static T5Config read(const JsonFields& f, std::string_view) {
    T5Config p;
    p.num_buckets = f.integer("num_buckets").value_or(p.num_buckets);
    p.max_distance = f.integer("max_distance").value_or(p.max_distance);
    p.bidirectional = f.boolean("bidirectional");
    return p;
  }
  static void write(Json& j, const T5Config& p) {
    j["num_buckets"] = p.num_buckets;
    j["max_distance"] = p.max_distance;
    put_optional(j, "bidirectional", p.bidirectional);
  }
};
}  // namespace detail

}  // namespace relpos
