// SPDX-License-Identifier: MIT
// The `sinusoidal` position type (spec §4): fixed relative rows aK(c) = aV(c) = s(c), the
// sinusoid of Vaswani et al. (2017) evaluated at the clamped distance c = clamp(j − i, −K, K).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <relpos/core.hpp>
#include <relpos/detail/encoding_checks.hpp>
#include <relpos/detail/shape_checks.hpp>
#include <relpos/detail/sinusoid.hpp>
#include <relpos/distance_table.hpp>
#include <relpos/encodings/concept.hpp>
#include <relpos/io/config_limits.hpp>

namespace relpos {

/// The keys of spec §4 `sinusoidal`.
struct SinusoidalConfig {
  double base = 10000;                // ω_m = base^(−2m/d_head); > 0
  std::optional<Index> max_distance;  // K >= 0: distances clamped to [−K, K]; none = no clamp
  bool keys = true;                   // add q_i · s(c) to the score (aK = s)
  bool values = false;                // add Σ_j α_ij s(c) to the output (aV = s)
  bool operator==(const SinusoidalConfig&) const = default;
};

/// Relative sinusoidal rows s(c)[2m] = sin(c·ω_m), s(c)[2m+1] = cos(c·ω_m) (interleaved
/// sin/cos, as the absolute PE of Vaswani et al.), c = δ = p_j − p_i (key minus query).
/// One cached DistanceTable serves keys and values. Angles are computed in double and
/// cast, so a float row at distance 10^6 is within ~6e-8 of the float64 sinusoid.
///
/// Hooks: clamp_distance, key_rows, value_rows (both exist at compile time; attention asks
/// uses_keys() / uses_values() at run time, per the `keys` / `values` flags).
template <Scalar T>
class SinusoidalRelative {
 public:
  using Scalar = T;
  using Config = SinusoidalConfig;
  static constexpr const char* name = "sinusoidal";
  /// aK and aV are fixed sinusoids, not parameters: backward sends no gradient to them, only
  /// through them to q and to α (attention_grad.hpp).
  static constexpr bool fixed_relative_rows = true;

  // The model-file side (encodings/concept.hpp): the one rule of the config (config.json's
  // and the constructor's); one table shared by every layer.
  static void check(const SinusoidalConfig& p, const ModelShape& m, const detail::Checker& c) {
    c.positive("base", p.base);
    if (p.max_distance) c.range("max_distance", *p.max_distance, 0, io::kMaxDistance);
    c.even(name, "d_head", m.d_head());
  }
  template <TensorSource<T> Source>
  static auto loader(const SinusoidalConfig& p, const ModelShape& m, const Source&) {
    return [shared = SinusoidalRelative(m.d_head(), p)](Index) { return shared; };
  }

  /// d_head: the row width, even. Throws relpos::Error naming the key on a bad value.
  SinusoidalRelative(Index d_head, const SinusoidalConfig& config = {})
      : config_(validated(d_head, config)),
        table_(
            d_head,
            [omega = detail::sinusoid_frequencies(d_head, config.base)](std::int64_t c, T* out) {
              detail::sinusoid_row(c, omega, out);
            },
            config.max_distance) {}

  const SinusoidalConfig& config() const { return config_; }
  Index d_head() const { return table_.width(); }
  bool uses_keys() const { return config_.keys; }
  bool uses_values() const { return config_.values; }

  std::int64_t clamp_distance(std::int64_t delta) const { return table_.clamp(delta); }

  /// aK(c) for clamped c in [lo, hi]: (hi − lo + 1, d_head). Grows the cache if needed.
  DistanceRows<T> key_rows(Index lo, Index hi) const {
    RELPOS_ASSERT(config_.keys, "SinusoidalRelative::key_rows: keys is false");
    return table_.rows(lo, hi);
  }
  /// aV(c) for clamped c in [lo, hi]: (hi − lo + 1, d_head). The same rows as key_rows.
  DistanceRows<T> value_rows(Index lo, Index hi) const {
    RELPOS_ASSERT(config_.values, "SinusoidalRelative::value_rows: values is false");
    return table_.rows(lo, hi);
  }

  /// The key and value tables, named as every relative encoding names them (learned's
  /// key_table() / value_table()): here both are the one cached table of s(c).
  const DistanceTable<T>& key_table() const { return table_; }
  const DistanceTable<T>& value_table() const { return table_; }
  /// The (len × len × d_head) tables s(clamp(j − i)) as views (materialize() copies one).
  RelativeView<T> key_view(Index len) const { return table_.view(len); }
  RelativeView<T> value_view(Index len) const { return table_.view(len); }
  /// Bytes of the cached rows (one table serves keys and values).
  std::size_t cached_bytes() const { return table_.cached_bytes(); }

 private:
  static SinusoidalConfig validated(Index d_head, const SinusoidalConfig& config) {
    detail::check_positive("sinusoidal: ", "d_head", d_head);
    check(config, ModelShape{.d_model = d_head, .n_heads = 1}, detail::Checker(name, "position"));
    return config;
  }

  SinusoidalConfig config_;
  DistanceTable<T> table_;
};

static_assert(Encoding<SinusoidalRelative<float>> && HasKeyTerm<SinusoidalRelative<float>> &&
                  HasValueTerm<SinusoidalRelative<float>>,
              "SinusoidalRelative must provide the key and value hooks");

}  // namespace relpos
