// SPDX-License-Identifier: MIT
// config.json's `position` object for `deberta` (spec §7); the struct, its defaults, checks
// and tensors are encodings/deberta.hpp's.
#pragma once

#include <string_view>

#include <relpos/detail/json_fields.hpp>
#include <relpos/encodings/deberta.hpp>

namespace relpos {
namespace io {
using DebertaPosition = DebertaConfig;
}  // namespace io

namespace detail {
template <>
struct PositionJson<DebertaConfig> {
  static constexpr KeySet keys{
      DebertaRelative<float>::name,
      {"position_buckets", "max_relative_positions", "c2p", "p2c", "share_att_key", "rel_norm"}};
  static DebertaConfig read(const JsonFields& f, std::string_view) {
    DebertaConfig p;
    p.position_buckets = f.integer("position_buckets").value_or(p.position_buckets);
    p.max_relative_positions =
        f.integer("max_relative_positions").value_or(p.max_relative_positions);
    p.c2p = f.boolean("c2p").value_or(p.c2p);
    p.p2c = f.boolean("p2c").value_or(p.p2c);
    p.share_att_key = f.boolean("share_att_key").value_or(p.share_att_key);
    p.rel_norm = f.boolean("rel_norm").value_or(p.rel_norm);
    return p;
  }
  static void write(Json& j, const DebertaConfig& p) {
    j["position_buckets"] = p.position_buckets;
    j["max_relative_positions"] = p.max_relative_positions;
    j["c2p"] = p.c2p;
    j["p2c"] = p.p2c;
    j["share_att_key"] = p.share_att_key;
    j["rel_norm"] = p.rel_norm;
  }
};
}  // namespace detail

}  // namespace relpos
