// SPDX-License-Identifier: MIT
// Test helper of the score-bias and rotary-scaling encodings (t5, alibi, xl, kerple): runs one
// attention layer on a golden file of tools/golden_t5_alibi_xl_scaling.py or
// tools/golden_kerple.py (RefAttention in float64) and compares it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <relpos/attention.hpp>
#include <relpos/io/safetensors.hpp>

#include "support/golden.hpp"

namespace relpos::test {

template <class T>
struct EncodingTol;
template <>
struct EncodingTol<float> {
  static constexpr double golden = 1e-5;  // float against the float64 reference
};
template <>
struct EncodingTol<double> {
  static constexpr double golden = 1e-10;
};

/// The golden file tests/data/<folder>/attention_<name>.safetensors and its config.
struct EncodingCase {
  io::SafetensorsFile file;
  nlohmann::json config;
};
inline EncodingCase encoding_case(const std::string& name,
                                  const std::string& folder = "t5_alibi_xl_scaling") {
  auto f = golden_file(folder + "/attention_" + name + ".safetensors");
  auto config = nlohmann::json::parse(f.metadata().at("config"));
  return {std::move(f), std::move(config)};
}
inline AttentionConfig encoding_case_attention_config(const nlohmann::json& config) {
  return {config.at("d_model").get<Index>(), config.at("n_heads").get<Index>(),
          config.at("causal").get<bool>()};
}

/// Runs the layer (weights self_attn.*) with `enc` on the file's input, padding mask and
/// position ids, and compares with its `output`.
template <class T, class Enc>
::testing::AssertionResult matches_encoding_golden(const EncodingCase& c, Enc enc) {
  const auto& f = c.file;
  const auto attn = MultiHeadAttention<T, Enc>::load(f, "self_attn.",
                                                     encoding_case_attention_config(c.config), enc);
  const Tensor3<T> x = f.tensor3<T>("input");
  const Index batch = x.dimension(0), len = x.dimension(1);
  const std::vector<std::uint8_t> raw = f.values<std::uint8_t>("padding_mask", {batch, len});
  PaddingMask mask(batch, len);
  for (Index i = 0; i < mask.size(); ++i) mask.data()[i] = raw[static_cast<std::size_t>(i)] != 0;
  PositionIds ids;
  BatchInputs in{mask, nullptr};
  if (f.contains("position_ids")) {
    const std::vector<std::int64_t> v = f.values<std::int64_t>("position_ids", {batch, len});
    ids.resize(batch, len);
    for (Index i = 0; i < ids.size(); ++i) ids.data()[i] = v[static_cast<std::size_t>(i)];
    in.positions = ids;
  }
  return all_close(attn.forward(x, in), f.tensor3<double>("output"), EncodingTol<T>::golden);
}

/// The layer of case `c` with `enc` gives the same output when every position is shifted to
/// p_i = offset + i: a property of any encoding whose scores depend on j − i only.
template <class T, class Enc>
::testing::AssertionResult shift_changes_nothing(const EncodingCase& c, Enc enc,
                                                 std::int64_t offset, double tol) {
  const auto attn = MultiHeadAttention<T, Enc>::load(
      c.file, "self_attn.", encoding_case_attention_config(c.config), std::move(enc));
  const Tensor3<T> x = c.file.tensor3<T>("input");
  const Index batch = x.dimension(0), len = x.dimension(1);
  PositionIds shifted(batch, len);
  for (Index b = 0; b < batch; ++b) {
    for (Index i = 0; i < len; ++i) shifted(b, i) = offset + i;
  }
  return all_close(attn.forward(x, {nullptr, shifted}), attn.forward(x), tol);
}

}  // namespace relpos::test
