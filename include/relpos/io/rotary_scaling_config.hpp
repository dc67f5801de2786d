// SPDX-License-Identifier: MIT
// The optional `scaling` object of a rotary position in config.json (spec §4, second wave,
// with Hugging Face's key names): its strict reading and its JSON form. The structs and
// their one rule (relpos::check_scaling) are the encoding's own, in encodings/rotary_scaling.hpp.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include <relpos/core.hpp>
#include <relpos/detail/json_fields.hpp>
#include <relpos/encodings/rotary_scaling.hpp>
#include <relpos/io/config_limits.hpp>

namespace relpos::io {

// The types live with the rotary math (encodings/rotary_scaling.hpp); io names them too,
// as it always has.
using relpos::DynamicScaling;
using relpos::LinearScaling;
using relpos::Llama3Scaling;
using relpos::LongropeScaling;
using relpos::NtkScaling;
using relpos::RotaryScaling;
using relpos::YarnScaling;

namespace detail {

using relpos::detail::Json;
using relpos::detail::JsonFields;
using relpos::detail::KeySet;

inline constexpr std::array<KeySet, 6> kScalingKeys{{
    {"linear", {"factor"}},
    {"ntk", {"factor"}},
    {"dynamic", {"factor", "original_max_position_embeddings"}},
    {"yarn",
     {"factor", "original_max_position_embeddings", "beta_fast", "beta_slow", "mscale",
      "mscale_all_dim", "attention_factor", "truncate"}},
    {"llama3",
     {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}},
    {"longrope",
     {"short_factor", "long_factor", "original_max_position_embeddings", "max_position_embeddings",
      "attention_factor"}},
}};

inline RotaryScaling read_scaling(const Json& j, std::string_view source) {
  const JsonFields f(j, source, "position.scaling");
  const std::string type = relpos::detail::read_type(f, kScalingKeys, "scaling type");
  const double factor = type == "longrope" ? 1.0 : f.required(f.number("factor"), "factor");
  if (type == "linear") return LinearScaling{.factor = factor};
  if (type == "ntk") return NtkScaling{.factor = factor};
  if (type == "dynamic") {
    return DynamicScaling{
        .factor = factor,
        .original_max_position_embeddings = f.required(
            f.integer("original_max_position_embeddings"), "original_max_position_embeddings")};
  }
  if (type == "yarn") {
    YarnScaling s;
    s.factor = factor;
    s.original_max_position_embeddings = f.required(f.integer("original_max_position_embeddings"),
                                                    "original_max_position_embeddings");
    s.beta_fast = f.number("beta_fast").value_or(s.beta_fast);
    s.beta_slow = f.number("beta_slow").value_or(s.beta_slow);
    s.mscale = f.nullable_number("mscale");
    s.mscale_all_dim = f.nullable_number("mscale_all_dim");
    s.attention_factor = f.nullable_number("attention_factor");
    s.truncate = f.boolean("truncate").value_or(s.truncate);
    return s;
  }
  if (type == "llama3") {
    Llama3Scaling s;
    s.factor = factor;
    s.low_freq_factor = f.number("low_freq_factor").value_or(s.low_freq_factor);
    s.high_freq_factor = f.number("high_freq_factor").value_or(s.high_freq_factor);
    s.original_max_position_embeddings =
        f.integer("original_max_position_embeddings").value_or(s.original_max_position_embeddings);
    return s;
  }
  LongropeScaling s;
  s.short_factor = f.required(f.numbers("short_factor"), "short_factor");
  s.long_factor = f.required(f.numbers("long_factor"), "long_factor");
  s.original_max_position_embeddings =
      f.required(f.integer("original_max_position_embeddings"), "original_max_position_embeddings");
  s.max_position_embeddings =
      f.required(f.integer("max_position_embeddings"), "max_position_embeddings");
  s.attention_factor = f.nullable_number("attention_factor");
  return s;
}

}  // namespace detail

/// The JSON form of a scaling object; absent optionals left out.
inline nlohmann::ordered_json scaling_to_json(const RotaryScaling& scaling) {
  using Json = nlohmann::ordered_json;
  const auto opt = [](Json& j, const char* key, const auto& v) {
    if (v) j[key] = *v;
  };
  Json s;
  std::visit(
      [&](const auto& x) {
        using S = std::decay_t<decltype(x)>;
        s["type"] = std::string(S::type);
        if constexpr (std::is_same_v<S, LongropeScaling>) {
          s["short_factor"] = x.short_factor;
          s["long_factor"] = x.long_factor;
          s["original_max_position_embeddings"] = x.original_max_position_embeddings;
          s["max_position_embeddings"] = x.max_position_embeddings;
          opt(s, "attention_factor", x.attention_factor);
        } else {
          s["factor"] = x.factor;
        }
        if constexpr (std::is_same_v<S, DynamicScaling> || std::is_same_v<S, YarnScaling>)
          s["original_max_position_embeddings"] = x.original_max_position_embeddings;
        if constexpr (std::is_same_v<S, YarnScaling>) {
          s["beta_fast"] = x.beta_fast;
          s["beta_slow"] = x.beta_slow;
          opt(s, "mscale", x.mscale);
          opt(s, "mscale_all_dim", x.mscale_all_dim);
          opt(s, "attention_factor", x.attention_factor);
          s["truncate"] = x.truncate;
        }
        if constexpr (std::is_same_v<S, Llama3Scaling>) {
          s["low_freq_factor"] = x.low_freq_factor;
          s["high_freq_factor"] = x.high_freq_factor;
          s["original_max_position_embeddings"] = x.original_max_position_embeddings;
        }
      },
      scaling);
  return s;
}

}  // namespace relpos::io
