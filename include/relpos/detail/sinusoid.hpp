// SPDX-License-Identifier: MIT
// The sinusoid of Vaswani et al. (2017) shared by the absolute, relative and additive
// encodings (spec §4): s(c)[2m] = sin(c·ω_m), s(c)[2m+1] = cos(c·ω_m), ω_m = base^(−2m/d);
// Transformer-XL's halves layout of the same angles (xl), and the frequencies rotary starts from.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include <relpos/core.hpp>

namespace relpos::detail {

/// ω_m = base^(−2m/d) for m in [0, d/2), in double: the angle c·ω_m must stay exact to
/// ~1e-10 at c = 10^6, which a float frequency (rounding error ~6e-8 · 10^6) would not.
inline std::vector<double> sinusoid_frequencies(Index d, double base) {
  std::vector<double> omega(static_cast<std::size_t>(d / 2));
  for (Index m = 0; m < d / 2; ++m) {
    omega[static_cast<std::size_t>(m)] =
        std::pow(base, -2.0 * static_cast<double>(m) / static_cast<double>(d));
  }
  return omega;
}

/// Writes the d = 2·omega.size() entries of s(c) to out, interleaved sin/cos (spec §4: even
/// index sin, odd index cos). Angles in double, cast to T only at the end, so a float table
/// is within one rounding (~6e-8) of the float64 sinusoid at any distance.
template <class T>
void sinusoid_row(std::int64_t c, const std::vector<double>& omega, T* out) {
  const double cd = static_cast<double>(c);
  for (std::size_t m = 0; m < omega.size(); ++m) {
    const double angle = cd * omega[m];
    out[2 * m] = static_cast<T>(std::sin(angle));
    out[2 * m + 1] = static_cast<T>(std::cos(angle));
  }
}

/// The same angles in Transformer-XL's layout (Dai et al. 2019, the halves concatenated):
/// out[m] = sin(Δ·ω_m), out[d/2 + m] = cos(Δ·ω_m). In double, cast to T once.
template <class T>
void sinusoid_row_halves(double delta, const std::vector<double>& omega, T* out) {
  const std::size_t half = omega.size();
  for (std::size_t m = 0; m < half; ++m) {
    const double angle = delta * omega[m];
    out[m] = static_cast<T>(std::sin(angle));
    out[half + m] = static_cast<T>(std::cos(angle));
  }
}

}  // namespace relpos::detail
