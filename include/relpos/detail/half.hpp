// SPDX-License-Identifier: MIT
// Exact conversion of IEEE 754 binary16 (F16) and bfloat16 (BF16) bit patterns to float,
// as safetensors stores them: every value of either format is a float, so nothing rounds.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace relpos::detail {

// binary16: 1 sign bit, 5 exponent bits (bias 15), 10 mantissa bits.
inline float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h >> 15) << 31;
  const std::uint32_t exponent = (h >> 10) & 0x1fu;
  const std::uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {
    // zero or subnormal: mantissa * 2^-24, exact in float (which has 8 more exponent bits)
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 0x1f) {
    if (mantissa == 0) return std::bit_cast<float>(sign | 0x7f800000u);  // inf
    // NaN: payload kept in the top mantissa bits, quiet bit set, as F16C hardware and
    // PyTorch convert (numpy keeps a signalling NaN signalling; both are NaN)
    return std::bit_cast<float>(sign | 0x7fc00000u | (mantissa << 13));
  }
  return std::bit_cast<float>(sign | ((exponent - 15 + 127) << 23) | (mantissa << 13));
}

// bfloat16 is the top half of a float's bit pattern (NaNs too, bit for bit, as PyTorch).
inline float bfloat16_to_float(std::uint16_t b) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
}

}  // namespace relpos::detail
