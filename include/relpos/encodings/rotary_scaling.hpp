// SPDX-License-Identifier: MIT
// Rotary frequency scaling (spec §4 second wave, Hugging Face's conventions): linear position
// interpolation, NTK-aware and dynamic NTK base changes, YaRN (Peng et al. 2023), Llama 3.1's
// band-wise scaling and LongRoPE (Ding et al. 2024, Phi-3), computed in double.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include <relpos/core.hpp>
#include <relpos/detail/checker.hpp>
#include <relpos/detail/sinusoid.hpp>
#include <relpos/io/config_limits.hpp>

namespace relpos {

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

/// What rotary needs from a scaling: inv_freq_m (m < r/2) and the attention factor that
/// multiplies both cos and sin (so scores scale by its square), as Hugging Face does.
struct RotaryFrequencies {
  std::vector<double> inv_freq;  // r/2 values
  double attention_factor = 1.0;
};

namespace detail {

// YaRN's mscale: 0.1·a·ln s + 1, and 1 when s <= 1
inline double yarn_mscale(double s, double a) {
  return s <= 1 ? 1.0 : 0.1 * a * std::log(s) + 1.0;
}

}  // namespace detail

/// The one rule of a scaling, however it was made (config.json or code): throws
/// relpos::Error "<source>: position.scaling.<key>: <what>" (detail/checker.hpp), `source`
/// naming where it came from ("config.json", or "rotary" for a Rotary built in code).
/// `base` is rotary's (YaRN divides by ln base, so it needs base > 1); `r` is the rotary dim in
/// use.
inline void check_scaling(const RotaryScaling& scaling, double base, std::int64_t r,
                          std::string_view source) {
  const detail::Checker c(source, "position.scaling");
  const auto factor_and_length = [&](double factor, std::int64_t l0) {
    c.positive("factor", factor);
    c.range("original_max_position_embeddings", l0, 1, io::kMaxDistance);
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
                  io::kMaxDistance);
          c.range("max_position_embeddings", s.max_position_embeddings, 1, io::kMaxDistance);
          if (s.attention_factor) c.positive("attention_factor", *s.attention_factor);
        }
      },
      scaling);
}

/// Whether the tables of `scaling` depend on the call length ℓ (dynamic, longrope).
inline bool scaling_depends_on_length(const RotaryScaling& scaling) {
  return std::holds_alternative<DynamicScaling>(scaling) ||
         std::holds_alternative<LongropeScaling>(scaling);
}

/// The smallest summary of ℓ that determines the tables: ℓ' = max(ℓ, L0) for dynamic,
/// 1 or 0 for longrope (long or short factors), 0 for the others. Two calls whose keys are
/// equal get the same frequencies, so a cache keyed by it never recomputes per token.
inline std::int64_t scaling_table_key(const RotaryScaling& scaling, std::int64_t length) {
  if (const auto* d = std::get_if<DynamicScaling>(&scaling)) {
    return std::max(length, d->original_max_position_embeddings);
  }
  if (const auto* l = std::get_if<LongropeScaling>(&scaling)) {
    return length > l->original_max_position_embeddings ? 1 : 0;
  }
  return 0;
}

/// inv_freq and attention factor of rotary with `base`, rotary dim r and optional scaling,
/// for a call of length ℓ (the largest position in the batch plus 1; only dynamic and
/// longrope look at it). The scaling must have passed check_scaling (factor > 0,
/// longrope arrays of r/2, r > 2 for ntk/dynamic): those are user errors named there.
inline RotaryFrequencies rotary_frequencies(double base, Index r,
                                            const std::optional<RotaryScaling>& scaling,
                                            std::int64_t length) {
  RELPOS_ASSERT(r >= 2 && r % 2 == 0, "rotary_frequencies: r must be even and >= 2");
  RotaryFrequencies out;
  out.inv_freq = detail::sinusoid_frequencies(r, base);
  if (!scaling) return out;
  const double rd = static_cast<double>(r);
  std::visit(
      [&](const auto& s) {
        using S = std::decay_t<decltype(s)>;
        if constexpr (std::is_same_v<S, LinearScaling>) {
          for (double& w : out.inv_freq) w /= s.factor;
        } else if constexpr (std::is_same_v<S, NtkScaling>) {
          RELPOS_ASSERT(r > 2, "rotary_frequencies: ntk needs r > 2");
          out.inv_freq = detail::sinusoid_frequencies(r, base * std::pow(s.factor, rd / (rd - 2)));
        } else if constexpr (std::is_same_v<S, DynamicScaling>) {
          RELPOS_ASSERT(r > 2, "rotary_frequencies: dynamic needs r > 2");
          const double l0 = static_cast<double>(s.original_max_position_embeddings);
          const double lp = static_cast<double>(scaling_table_key(*scaling, length));
          const double grown = s.factor * lp / l0 - (s.factor - 1);
          out.inv_freq = detail::sinusoid_frequencies(r, base * std::pow(grown, rd / (rd - 2)));
        } else if constexpr (std::is_same_v<S, YarnScaling>) {
          // the dims whose wavelength makes beta rotations over L0 (Peng et al. 2023, eq. 17)
          const double l0 = static_cast<double>(s.original_max_position_embeddings);
          const auto corr = [&](double rho) {
            return rd * std::log(l0 / (2 * std::numbers::pi * rho)) / (2 * std::log(base));
          };
          double lo = corr(s.beta_fast), hi = corr(s.beta_slow);
          if (s.truncate) {
            lo = std::floor(lo);
            hi = std::ceil(hi);
          }
          lo = std::max(lo, 0.0);
          hi = std::min(hi, rd - 1);
          if (hi == lo) hi += 0.001;  // no division by zero in the ramp
          for (std::size_t m = 0; m < out.inv_freq.size(); ++m) {
            const double ramp = std::clamp((static_cast<double>(m) - lo) / (hi - lo), 0.0, 1.0);
            const double w = out.inv_freq[m];
            out.inv_freq[m] = w * (1 - ramp) + (w / s.factor) * ramp;
          }
          if (s.attention_factor) {
            out.attention_factor = *s.attention_factor;
          } else if (s.mscale && s.mscale_all_dim) {
            out.attention_factor = detail::yarn_mscale(s.factor, *s.mscale) /
                                   detail::yarn_mscale(s.factor, *s.mscale_all_dim);
          } else {
            out.attention_factor = detail::yarn_mscale(s.factor, 1.0);
          }
        } else if constexpr (std::is_same_v<S, Llama3Scaling>) {
          const double l0 = static_cast<double>(s.original_max_position_embeddings);
          const double low = s.low_freq_factor, high = s.high_freq_factor;
          for (double& w : out.inv_freq) {
            const double wavelength = 2 * std::numbers::pi / w;
            if (wavelength < l0 / high) continue;  // high frequencies kept
            if (wavelength > l0 / low) {
              w /= s.factor;  // low frequencies interpolated
            } else {
              const double sigma = (l0 / wavelength - low) / (high - low);
              w = (1 - sigma) * w / s.factor + sigma * w;
            }
          }
        } else {
          static_assert(std::is_same_v<S, LongropeScaling>);
          RELPOS_ASSERT(static_cast<Index>(s.long_factor.size()) == r / 2 &&
                            static_cast<Index>(s.short_factor.size()) == r / 2,
                        "rotary_frequencies: longrope factors must have r/2 entries");
          const auto& f =
              length > s.original_max_position_embeddings ? s.long_factor : s.short_factor;
          for (std::size_t m = 0; m < out.inv_freq.size(); ++m) out.inv_freq[m] /= f[m];
          const double l0 = static_cast<double>(s.original_max_position_embeddings);
          const double lmax = static_cast<double>(s.max_position_embeddings);
          if (s.attention_factor) {
            out.attention_factor = *s.attention_factor;
          } else if (lmax > l0) {
            out.attention_factor = std::sqrt(1 + std::log(lmax / l0) / std::log(l0));
          }
        }
      },
      *scaling);
  return out;
}

}  // namespace relpos
