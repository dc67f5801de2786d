// SPDX-License-Identifier: MIT
// The optional `scaling` object of a rotary position (spec §4, second wave: linear, NTK,
// dynamic NTK, YaRN, Llama 3, LongRoPE, with Hugging Face's key names): one struct per type in
// a std::variant, their strict reading, their checks and their JSON form.
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
#include <relpos/io/config_limits.hpp>

namespace relpos::io {

// ---- Rotary scaling (spec §4, second wave): each changes rotary's inv_freq ----------------
// s = factor, L0 = original_max_position_embeddings. Optional keys carry the spec's defaults.

/// ω'_m = ω_m / s (position interpolation).
struct LinearScaling {
  static constexpr std::string_view type = "linear";
  double factor = 1.0;  // s > 0, required
  bool operator==(const LinearScaling&) const = default;
};
/// base · s^(r/(r−2)) replaces base ("NTK-aware"); needs r > 2.
struct NtkScaling {
  static constexpr std::string_view type = "ntk";
  double factor = 1.0;  // s > 0, required
  bool operator==(const NtkScaling&) const = default;
};
/// NTK with s·ℓ'/L0 − (s − 1) in place of s, ℓ' = max(call length, L0); stateless per call.
struct DynamicScaling {
  static constexpr std::string_view type = "dynamic";
  double factor = 1.0;                                // s > 0, required
  std::int64_t original_max_position_embeddings = 0;  // L0 >= 1, required
  bool operator==(const DynamicScaling&) const = default;
};
/// YaRN: a ramp between ω_m and ω_m/s over dims [lo, hi], plus an attention factor.
struct YarnScaling {
  static constexpr std::string_view type = "yarn";
  double factor = 1.0;                                // s > 0, required
  std::int64_t original_max_position_embeddings = 0;  // L0 >= 1, required
  double beta_fast = 32.0;                            // > 0
  double beta_slow = 1.0;                             // > 0
  std::optional<double> mscale;                       // >= 0; null/absent: unused
  std::optional<double> mscale_all_dim;               // >= 0; null/absent: unused
  std::optional<double> attention_factor;             // > 0; null/absent: derived from s
  bool truncate = true;                               // floor lo / ceil hi
  bool operator==(const YarnScaling&) const = default;
};
/// Llama 3.1: high frequencies kept, low ones divided by s, a smooth band in between.
struct Llama3Scaling {
  static constexpr std::string_view type = "llama3";
  double factor = 1.0;                                   // s > 0, required
  double low_freq_factor = 1.0;                          // > 0
  double high_freq_factor = 4.0;                         // > low_freq_factor
  std::int64_t original_max_position_embeddings = 8192;  // L0 >= 1
  bool operator==(const Llama3Scaling&) const = default;
};
/// LongRoPE (Phi-3): ω'_m = ω_m / f_m, f = long_factor when the call is longer than L0.
struct LongropeScaling {
  static constexpr std::string_view type = "longrope";
  std::vector<double> short_factor;                   // r/2 numbers > 0, required
  std::vector<double> long_factor;                    // r/2 numbers > 0, required
  std::int64_t original_max_position_embeddings = 0;  // L0 >= 2, required
  std::int64_t max_position_embeddings = 0;           // Lmax >= 1, required
  std::optional<double> attention_factor;             // > 0; null/absent: from Lmax/L0
  bool operator==(const LongropeScaling&) const = default;
};
using RotaryScaling = std::variant<LinearScaling, NtkScaling, DynamicScaling, YarnScaling,
                                   Llama3Scaling, LongropeScaling>;

namespace detail {

using relpos::detail::Checker;
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

/// base > 1 is needed by YaRN (it divides by ln base); `r` is the rotary dim in use.
inline void check_scaling(const RotaryScaling& scaling, double base, std::int64_t r,
                          std::string_view source) {
  const Checker c(source, "position.scaling");
  const auto factor_and_length = [&](double factor, std::int64_t l0) {
    c.positive("factor", factor);
    c.range("original_max_position_embeddings", l0, 1, kMaxDistance);
  };
  const auto needs_r_above_2 = [&](std::string_view type) {
    // base·s^(r/(r−2)) is undefined for r = 2
    if (r <= 2)
      c.fail("type",
             std::string(type) + " scaling needs a rotary dim > 2, got " + std::to_string(r));
  };
  std::visit(
      [&](const auto& s) {
        using S = std::decay_t<decltype(s)>;
        if constexpr (std::is_same_v<S, LinearScaling>) {
          c.positive("factor", s.factor);
        } else if constexpr (std::is_same_v<S, NtkScaling>) {
          c.positive("factor", s.factor);
          needs_r_above_2(S::type);
        } else if constexpr (std::is_same_v<S, DynamicScaling>) {
          factor_and_length(s.factor, s.original_max_position_embeddings);
          needs_r_above_2(S::type);
        } else if constexpr (std::is_same_v<S, YarnScaling>) {
          factor_and_length(s.factor, s.original_max_position_embeddings);
          c.positive("beta_fast", s.beta_fast);
          c.positive("beta_slow", s.beta_slow);
          if (s.mscale && *s.mscale < 0) c.fail("mscale", "must be >= 0, got " + c.num(*s.mscale));
          if (s.mscale_all_dim && *s.mscale_all_dim < 0)
            c.fail("mscale_all_dim", "must be >= 0, got " + c.num(*s.mscale_all_dim));
          if (s.attention_factor) c.positive("attention_factor", *s.attention_factor);
          // corr(ρ) divides by ln(base)
          if (!(base > 1))
            c.fail("type", "yarn scaling needs position.base > 1, got " + c.num(base));
        } else if constexpr (std::is_same_v<S, Llama3Scaling>) {
          factor_and_length(s.factor, s.original_max_position_embeddings);
          c.positive("low_freq_factor", s.low_freq_factor);
          if (!(s.high_freq_factor > s.low_freq_factor))
            c.fail("high_freq_factor", "must be > low_freq_factor (" + c.num(s.low_freq_factor) +
                                           "), got " + c.num(s.high_freq_factor));
        } else {
          for (const auto* arr : {&s.short_factor, &s.long_factor}) {
            const std::string_view key = arr == &s.short_factor ? "short_factor" : "long_factor";
            if (std::int64_t(arr->size()) != r / 2)
              c.fail(key, "expected rotary_dim/2 = " + std::to_string(r / 2) + " numbers, got " +
                              std::to_string(arr->size()));
            for (std::size_t m = 0; m < arr->size(); ++m)
              c.positive(std::string(key) + "[" + std::to_string(m) + "]", (*arr)[m]);
          }
          // the attention factor divides by ln(L0)
          c.range("original_max_position_embeddings", s.original_max_position_embeddings, 2,
                  kMaxDistance);
          c.range("max_position_embeddings", s.max_position_embeddings, 1, kMaxDistance);
          if (s.attention_factor) c.positive("attention_factor", *s.attention_factor);
        }
      },
      scaling);
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
