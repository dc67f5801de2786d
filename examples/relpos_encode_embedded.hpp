// SPDX-License-Identifier: MIT
// The default model compiled into relpos-encode (examples/models/rotary), so the binary runs
// from any folder without --model. The definitions are generated at build time by
// examples/embed_model.cmake from the model's config.json and model.safetensors.
#pragma once

#include <cstddef>

namespace relpos_encode {

extern const bool kHasDefaultModel;  // false when the model folder was missing at build time
extern const unsigned char kDefaultConfig[];  // config.json bytes
extern const std::size_t kDefaultConfigSize;
extern const unsigned char kDefaultWeights[];  // model.safetensors bytes
extern const std::size_t kDefaultWeightsSize;

}  // namespace relpos_encode
