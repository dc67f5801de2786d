// SPDX-License-Identifier: MIT
// Upper bounds on the sizes a config.json may declare: a hostile file (n_layers 10^9) is
// refused with a message naming the bound before anything is allocated.
#pragma once

#include <cstdint>

namespace relpos::io {

inline constexpr std::int64_t kMaxDimension = std::int64_t(1) << 20;  // d_model, d_ff, n_heads,
                                                                      // vocab_size, num_buckets
inline constexpr std::int64_t kMaxLayers = 4096;                      // n_layers
inline constexpr std::int64_t kMaxDistance = std::int64_t(1) << 30;   // max_distance, window, L0
inline constexpr double kMaxParameters = 2147483648.0;  // 2^31 parameters (8 GiB in F32)

}  // namespace relpos::io
