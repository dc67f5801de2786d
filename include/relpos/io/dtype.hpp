// SPDX-License-Identifier: MIT
// The element types of safetensors files (the names and sizes of the reference format:
// "F32" is 4-byte little-endian IEEE float, "BF16" the top half of a float, ...).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <type_traits>

#include <relpos/detail/eigen.hpp>

namespace relpos::io {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

inline constexpr std::array<DType, 10> kAllDTypes = {
    DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64,
    DType::I32, DType::I16, DType::I8,  DType::U8,   DType::BOOL};

/// The name used in the header: "F32", "BF16", ...
constexpr std::string_view dtype_name(DType t) {
  constexpr std::array<std::string_view, 10> names = {"F64", "F32", "F16", "BF16", "I64",
                                                      "I32", "I16", "I8",  "U8",   "BOOL"};
  return names[static_cast<std::size_t>(t)];
}

/// Bytes per element.
constexpr std::size_t dtype_size(DType t) {
  constexpr std::array<std::size_t, 10> sizes = {8, 4, 2, 2, 8, 4, 2, 1, 1, 1};
  return sizes[static_cast<std::size_t>(t)];
}

constexpr std::optional<DType> parse_dtype(std::string_view name) {
  for (DType t : kAllDTypes) {
    if (dtype_name(t) == name) return t;
  }
  return std::nullopt;
}

/// The dtype that stores C++ type T as it is in memory (float -> F32, bool -> BOOL,
/// Eigen::half -> F16, Eigen::bfloat16 -> BF16, ...).
template <class T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, double>)
    return DType::F64;
  else if constexpr (std::is_same_v<T, float>)
    return DType::F32;
  else if constexpr (std::is_same_v<T, Eigen::half>)
    return DType::F16;
  else if constexpr (std::is_same_v<T, Eigen::bfloat16>)
    return DType::BF16;
  else if constexpr (std::is_same_v<T, std::int64_t>)
    return DType::I64;
  else if constexpr (std::is_same_v<T, std::int32_t>)
    return DType::I32;
  else if constexpr (std::is_same_v<T, std::int16_t>)
    return DType::I16;
  else if constexpr (std::is_same_v<T, std::int8_t>)
    return DType::I8;
  else if constexpr (std::is_same_v<T, std::uint8_t>)
    return DType::U8;
  else if constexpr (std::is_same_v<T, bool>)
    return DType::BOOL;
  else
    static_assert(sizeof(T) == 0, "no safetensors dtype stores this C++ type");
}

}  // namespace relpos::io
