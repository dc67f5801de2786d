// SPDX-License-Identifier: MIT
// The `alibi` position type (spec §4, second wave): Press et al. (2022), a fixed linear
// penalty b_h(δ) = −m_h·|δ| per head (the symmetric form), no tensors.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <relpos/core.hpp>
#include <relpos/detail/shape_checks.hpp>
#include <relpos/encodings/concept.hpp>

namespace relpos {

/// The keys of spec §4 `alibi`.
struct AlibiConfig {
  double max_bias = 8.0;  // b > 0: the slopes run from 2^(−b/n) down to 2^(−b)
  bool operator==(const AlibiConfig&) const = default;
};

/// ALiBi's head slopes m_h in double. With n a power of two, m_h = 2^(−b·(h+1)/n);
/// otherwise, c = 2^floor(log2 n), the c slopes of that rule for c heads followed by
/// 2^(−b·(2k+1)/(2c)) for k < n − c (the odd steps of the rule for 2c heads, as the paper's
/// reference code does).
inline std::vector<double> alibi_slopes(Index n_heads, double max_bias) {
  RELPOS_ASSERT(n_heads >= 1, "alibi_slopes: n_heads must be >= 1");
  Index c = 1;
  while (c * 2 <= n_heads) c *= 2;
  std::vector<double> slopes;
  for (Index h = 0; h < c; ++h) {
    slopes.push_back(std::exp2(-max_bias * static_cast<double>(h + 1) / static_cast<double>(c)));
  }
  for (Index k = 0; k < n_heads - c; ++k) {
    slopes.push_back(
        std::exp2(-max_bias * static_cast<double>(2 * k + 1) / static_cast<double>(2 * c)));
  }
  return slopes;
}

/// The alibi score bias b_h(δ) = −m_h·|δ|, symmetric in δ (right for encoders; for causal
/// attention it equals the one-sided form up to a per-query constant, which softmax drops).
/// Nothing is stored but the n_heads slopes: attention asks for R values per head and
/// gathers them, never an (len × len) bias.
///
/// Hooks: clamp_distance (the identity: alibi does not saturate) and score_bias.
template <Scalar T>
class AlibiBias {
 public:
  using Scalar = T;
  using Config = AlibiConfig;
  static constexpr const char* name = "alibi";
  /// The slopes are fixed by the head count: the bias has no parameter, so no gradient (§6).
  static constexpr bool fixed_score_bias = true;

  // The model-file side (encodings/concept.hpp): the one rule of the config (config.json's
  // and the constructor's); no tensors, one encoding shared by every layer.
  static void check(const AlibiConfig& p, const ModelShape&, const detail::Checker& c) {
    c.positive("max_bias", p.max_bias);
  }
  template <TensorSource<T> Source>
  static auto loader(const AlibiConfig& p, const ModelShape& m, const Source&) {
    return [shared = AlibiBias(m.n_heads, p)](Index) { return shared; };
  }

  /// Throws relpos::Error naming the key on a bad value.
  AlibiBias(Index n_heads, const AlibiConfig& config = {}) : config_(config) {
    detail::check_positive("alibi: ", "n_heads", n_heads);
    check(config, ModelShape{.n_heads = n_heads}, detail::Checker(name, "position"));
    slopes_ = alibi_slopes(n_heads, config.max_bias);
  }

  const AlibiConfig& config() const { return config_; }
  Index n_heads() const { return static_cast<Index>(slopes_.size()); }
  const std::vector<double>& slopes() const { return slopes_; }

  std::int64_t clamp_distance(std::int64_t delta) const { return delta; }
  /// out[c − lo] = −m_h·|c| for c in [lo, hi], computed in double and cast once.
  void score_bias(Index h, Index lo, Index hi, T* out) const {
    RELPOS_ASSERT(h >= 0 && h < n_heads() && lo <= hi, "AlibiBias::score_bias: bad head or span");
    const double m = slopes_[static_cast<std::size_t>(h)];
    for (Index c = lo; c <= hi; ++c) {
      out[c - lo] = static_cast<T>(-m * std::abs(static_cast<double>(c)));
    }
  }

 private:
  AlibiConfig config_;
  std::vector<double> slopes_;  // m_h, one per head
};

static_assert(Encoding<AlibiBias<float>> && HasScoreBias<AlibiBias<float>>,
              "AlibiBias must provide the score-bias hook");

}  // namespace relpos
