// SPDX-License-Identifier: MIT
// A model's starting weights for training from scratch, drawn as tools/reference.py's
// RefEncoder draws them (PyTorch's module defaults, plus its own choices for the position
// tensors), so a model trained in C++ starts from the same distributions as the committed
// ones trained in PyTorch (the same distributions, not the same numbers: the generators
// differ). Which rule applies is read from the tensor's name (spec §1):
//   embed.weight                           N(0, 1)                  (nn.Embedding)
//   self_attn.in_proj_weight               U(±√(6 / (d + 3d)))      (xavier_uniform_)
//   self_attn.in_proj_bias, out_proj.bias  0
//   other .weight of a linear map          U(±1/√fan_in)            (nn.Linear)
//   other .bias of a linear map            U(±1/√fan_in)
//   norm weights, biases                   1, 0                     (nn.LayerNorm)
//   relative_key / relative_value, position.weight, r_w_bias, r_r_bias   0.1·N(0, 1)
//   position.relative_attention_bias       0.5·N(0, 1)
//   position.kerple_r1 / r2                0.1 + 1.9·U(0, 1)
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <relpos/io/config.hpp>
#include <relpos/io/safetensors.hpp>
#include <relpos/io/safetensors_writer.hpp>

namespace relpos_demo {

inline bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

/// The values of one tensor (row-major) by the rules above; fan_in is the input width of the
/// linear map the tensor belongs to (its weight's last dimension).
inline std::vector<float> initial_values(const std::string& name,
                                         const std::vector<std::int64_t>& shape, double fan_in,
                                         std::mt19937_64& rng) {
  std::int64_t count = 1;
  for (const std::int64_t d : shape) count *= d;
  std::vector<float> v(static_cast<std::size_t>(count));
  auto fill_normal = [&](double scale) {
    std::normal_distribution<double> n(0.0, 1.0);
    for (float& x : v) x = static_cast<float>(scale * n(rng));
  };
  auto fill_uniform = [&](double lo, double hi) {
    std::uniform_real_distribution<double> u(lo, hi);
    for (float& x : v) x = static_cast<float>(u(rng));
  };
  auto fill = [&](float c) {
    for (float& x : v) x = c;
  };
  const bool is_norm = name.find("norm") != std::string::npos;
  if (name == "embed.weight" || name == "pos_embed.weight" || name == "type_embed.weight") {
    fill_normal(1.0);
  } else if (is_norm) {
    fill(ends_with(name, ".weight") ? 1.0f : 0.0f);
  } else if (ends_with(name, "self_attn.in_proj_weight")) {
    const double bound = std::sqrt(6.0 / static_cast<double>(shape[0] + shape[1]));
    fill_uniform(-bound, bound);
  } else if (ends_with(name, "self_attn.in_proj_bias") || ends_with(name, "out_proj.bias")) {
    fill(0.0f);
  } else if (name == "position.relative_attention_bias") {
    fill_normal(0.5);
  } else if (ends_with(name, "relative_key") || ends_with(name, "relative_value") ||
             name == "position.weight" || name == "position.r_w_bias" ||
             name == "position.r_r_bias") {
    fill_normal(0.1);
  } else if (name == "position.kerple_r1" || name == "position.kerple_r2") {
    fill_uniform(0.1, 2.0);
  } else if (ends_with(name, ".weight") || ends_with(name, ".bias")) {  // a linear map
    const double bound = 1.0 / std::sqrt(fan_in);
    fill_uniform(-bound, bound);
  } else {
    fill_normal(0.1);
  }
  return v;
}

/// Every tensor `config` needs, drawn by the rules above from `seed`, as an in-memory
/// safetensors file (F32), ready for Model or TrainableModel.
inline relpos::io::SafetensorsFile initial_weights(const relpos::io::ModelConfig& c,
                                                   std::uint64_t seed) {
  const std::vector<relpos::TensorSpec> specs = relpos::io::expected_tensors(c);
  std::mt19937_64 rng(seed);
  // a linear bias's fan_in is its weight's last dimension
  auto fan_in_of = [&](const std::string& bias) -> double {
    const std::string weight = bias.substr(0, bias.size() - 4) + "weight";
    for (const relpos::TensorSpec& s : specs) {
      if (s.name == weight) return static_cast<double>(s.shape.back());
    }
    return 1.0;
  };
  relpos::io::SafetensorsWriter w;
  for (const relpos::TensorSpec& s : specs) {
    std::vector<std::int64_t> shape = s.shape;
    if (!shape.empty() && shape[0] == relpos::io::kAnyRows) shape[0] = 512;  // pos_embed rows
    const double fan_in =
        ends_with(s.name, ".bias") ? fan_in_of(s.name) : static_cast<double>(shape.back());
    w.add(s.name, initial_values(s.name, shape, fan_in, rng), shape);
  }
  return relpos::io::SafetensorsFile::from_bytes(w.bytes(), "<initial weights>");
}

}  // namespace relpos_demo
