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
#include <type_traits>
#include <variant>
#include <vector>

#include <relpos/core.hpp>
#include <relpos/io/rotary_scaling_config.hpp>

namespace relpos {

/// What rotary needs from a scaling: inv_freq_m (m < r/2) and the attention factor that
/// multiplies both cos and sin (so scores scale by its square), as Hugging Face does.
struct RotaryFrequencies {
  std::vector<double> inv_freq;  // r/2 values
  double attention_factor = 1.0;
};

namespace detail {

// base^(−2m/r), m < r/2
inline std::vector<double> rotary_base_frequencies(double base, Index r) {
  std::vector<double> out(static_cast<std::size_t>(r / 2));
  for (Index m = 0; m < r / 2; ++m) {
    out[static_cast<std::size_t>(m)] =
        std::pow(base, -2.0 * static_cast<double>(m) / static_cast<double>(r));
  }
  return out;
}

// YaRN's mscale: 0.1·a·ln s + 1, and 1 when s <= 1
inline double yarn_mscale(double s, double a) {
  return s <= 1 ? 1.0 : 0.1 * a * std::log(s) + 1.0;
}

}  // namespace detail

/// Whether the tables of `scaling` depend on the call length ℓ (dynamic, longrope).
inline bool scaling_depends_on_length(const io::RotaryScaling& scaling) {
  return std::holds_alternative<io::DynamicScaling>(scaling) ||
         std::holds_alternative<io::LongropeScaling>(scaling);
}

/// The smallest summary of ℓ that determines the tables: ℓ' = max(ℓ, L0) for dynamic,
/// 1 or 0 for longrope (long or short factors), 0 for the others. Two calls whose keys are
/// equal get the same frequencies, so a cache keyed by it never recomputes per token.
inline std::int64_t scaling_table_key(const io::RotaryScaling& scaling, std::int64_t length) {
  if (const auto* d = std::get_if<io::DynamicScaling>(&scaling)) {
    return std::max(length, d->original_max_position_embeddings);
  }
  if (const auto* l = std::get_if<io::LongropeScaling>(&scaling)) {
    return length > l->original_max_position_embeddings ? 1 : 0;
  }
  return 0;
}

/// inv_freq and attention factor of rotary with `base`, rotary dim r and optional scaling,
/// for a call of length ℓ (the largest position in the batch plus 1; only dynamic and
/// longrope look at it). The scaling must have passed io's check_scaling (factor > 0,
/// longrope arrays of r/2, r > 2 for ntk/dynamic): those are user errors named there.
inline RotaryFrequencies rotary_frequencies(double base, Index r,
                                            const std::optional<io::RotaryScaling>& scaling,
                                            std::int64_t length) {
  RELPOS_ASSERT(r >= 2 && r % 2 == 0, "rotary_frequencies: r must be even and >= 2");
  RotaryFrequencies out;
  out.inv_freq = detail::rotary_base_frequencies(base, r);
  if (!scaling) return out;
  const double rd = static_cast<double>(r);
  std::visit(
      [&](const auto& s) {
        using S = std::decay_t<decltype(s)>;
        if constexpr (std::is_same_v<S, io::LinearScaling>) {
          for (double& w : out.inv_freq) w /= s.factor;
        } else if constexpr (std::is_same_v<S, io::NtkScaling>) {
          RELPOS_ASSERT(r > 2, "rotary_frequencies: ntk needs r > 2");
          out.inv_freq =
              detail::rotary_base_frequencies(base * std::pow(s.factor, rd / (rd - 2)), r);
        } else if constexpr (std::is_same_v<S, io::DynamicScaling>) {
          RELPOS_ASSERT(r > 2, "rotary_frequencies: dynamic needs r > 2");
          const double l0 = static_cast<double>(s.original_max_position_embeddings);
          const double lp = static_cast<double>(scaling_table_key(*scaling, length));
          const double grown = s.factor * lp / l0 - (s.factor - 1);
          out.inv_freq = detail::rotary_base_frequencies(base * std::pow(grown, rd / (rd - 2)), r);
        } else if constexpr (std::is_same_v<S, io::YarnScaling>) {
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
        } else if constexpr (std::is_same_v<S, io::Llama3Scaling>) {
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
          static_assert(std::is_same_v<S, io::LongropeScaling>);
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
