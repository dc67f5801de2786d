// SPDX-License-Identifier: MIT
// The `additive` position type (spec §4): x̃_i = x_i + Σ_{j∈N(i)} r(clamp(j − i, −K, K)) with
// N(i) = {j : |j − i| <= window, 0 <= j < len}, on the first block's input, in O(len·d).
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <utility>

#include <relpos/core.hpp>
#include <relpos/detail/encoding_checks.hpp>
#include <relpos/detail/sinusoid.hpp>
#include <relpos/distance_table.hpp>
#include <relpos/encodings/concept.hpp>

namespace relpos {

/// Where the rows r(c) come from.
enum class AdditiveSource {
  sinusoidal,  // r(c) = s(c), the sinusoid of spec §4 `sinusoidal` over d_model
  learned,     // r(c) = position.weight[c + K]
};

/// The keys of spec §4 `additive`.
struct AdditiveConfig {
  AdditiveSource source = AdditiveSource::sinusoidal;  // required in config.json
  Index window = -1;                  // w >= 0, required: N(i) = {j : |j − i| <= w}
  std::optional<Index> max_distance;  // K >= 0; required with the learned source
  double base = 10000;                // sinusoidal source: ω_m = base^(−2m/d_model); > 0
};

/// The additive formula, computed with prefix sums over the distance table: for token i
/// the window covers distances δ in [max(−i, −w), min(len−1−i, w)], a contiguous range of
/// rows, so its sum is a difference of two prefix sums (accumulated in double). Cost
/// O(len·d + min(w, len)·d) whatever the window; memory O(len·d).
///
/// What the formula can and cannot encode:
/// - The sum depends on i only through the clipping of the window at the sequence edges.
///   Every interior token (w <= i <= len−1−w) gets the same vector Σ_{|δ|<=w} r(clamp(δ)),
///   so positions are distinguishable only within w of either edge; in the interior it
///   adds a constant bias and no position information. A window w >= len − 1 makes every
///   window the whole sequence, and the sums Σ_{δ=−i}^{len−1−i} r(δ) differ by token.
/// - With the sinusoidal source the interior vector has zero sine components (sin is odd,
///   the window symmetric) and cosine components 1 + 2·Σ_{δ=1}^{w} cos(δ·ω_m).
/// - It depends on len: a token within w of the end changes when the sequence grows, and
///   it says nothing about the order of two tokens beyond what the edge terms give.
/// - It is defined over indices: explicit position ids are an error (spec §4).
///
/// Hook: add_to_input.
template <Scalar T>
class Additive {
 public:
  using Scalar = T;
  static constexpr const char* name = "additive";

  /// The sinusoidal source. d_model even. Throws relpos::Error naming the key.
  Additive(Index d_model, const AdditiveConfig& config)
      : config_(validated(d_model, config, AdditiveSource::sinusoidal)),
        table_(
            d_model,
            [omega = detail::sinusoid_frequencies(d_model, config.base)](std::int64_t c, T* out) {
              detail::sinusoid_row(c, omega, out);
            },
            config.max_distance) {}

  /// The learned source: weight is `position.weight`, (2K + 1, d_model), row c + K.
  Additive(Index d_model, const AdditiveConfig& config, Matrix<T> weight)
      : config_(validated(d_model, config, AdditiveSource::learned)),
        table_(checked(d_model, config_, std::move(weight))) {}

  /// The learned source with position.weight drawn from N(0, stddev²), std::mt19937_64(seed).
  static Additive random(Index d_model, const AdditiveConfig& config, std::uint64_t seed,
                         double stddev = 1.0) {
    const AdditiveConfig c = validated(d_model, config, AdditiveSource::learned);
    std::mt19937_64 gen(seed);
    return Additive(d_model, c,
                    detail::normal_matrix<T>(2 * *c.max_distance + 1, d_model, gen, stddev));
  }

  const AdditiveConfig& config() const { return config_; }
  Index d_model() const { return table_.width(); }
  const DistanceTable<T>& table() const { return table_; }

  /// x_i += Σ_{j∈N(i)} r_ij. x: (len, d_model), in place; positions must be plain 0..len−1.
  void add_to_input(MatrixRef<T> x, const Positions& positions) const {
    if (x.cols() != d_model()) {
      throw Error(std::string(name) + ": input: expected " + std::to_string(d_model()) +
                  " columns (d_model), got " + std::to_string(x.cols()));
    }
    if (!positions.plain()) {
      throw Error(std::string(name) +
                  ": position ids: not supported (the formula is defined over indices)");
    }
    if (positions.len != x.rows()) {
      throw Error(std::string(name) + ": positions: expected len " + std::to_string(x.rows()) +
                  " (the input's rows), got " + std::to_string(positions.len));
    }
    accumulate(x.rows(), [&](Index i, const auto& sum) { x.row(i) += sum.template cast<T>(); });
  }

  /// The (len, d_model) term the formula adds, Σ_{j∈N(i)} r_ij for each i.
  Matrix<T> encoding(Index len) const {
    if (len < 0)
      throw Error(std::string(name) + ": len: expected >= 0, got " + std::to_string(len));
    Matrix<T> out(len, d_model());
    accumulate(len, [&](Index i, const auto& sum) { out.row(i) = sum.template cast<T>(); });
    return out;
  }

 private:
  // Calls emit(i, Σ_{δ=lo_i}^{hi_i} r(clamp(δ))) for i = 0..len−1, with the sum as a
  // double row expression: prefix(t) = Σ_{δ=−D}^{t−D−1} r(clamp(δ)), D = min(w, len − 1).
  template <class Emit>
  void accumulate(Index len, Emit&& emit) const {
    if (len == 0) return;
    const Index span = std::min(config_.window, len - 1);  // D
    const DistanceRows<T> rows = table_.rows(table_.clamp(-span), table_.clamp(span));
    const auto block = rows.view();                  // (clamped distances of [−D, D], d)
    Matrix<double> prefix(2 * span + 2, d_model());  // (2D + 2, d)
    prefix.row(0).setZero();
    for (Index t = 0; t <= 2 * span; ++t) {
      const Index c = table_.clamp(t - span);
      prefix.row(t + 1) = prefix.row(t) + block.row(c - rows.first).template cast<double>();
    }
    for (Index i = 0; i < len; ++i) {
      const Index lo = std::max(-i, -span);
      const Index hi = std::min(len - 1 - i, span);
      emit(i, prefix.row(hi + span + 1) - prefix.row(lo + span));
    }
  }

  static AdditiveConfig validated(Index d_model, const AdditiveConfig& config,
                                  AdditiveSource expected) {
    const std::string n = name;
    if (config.source != expected) {
      throw Error(n + ".source: " +
                  (expected == AdditiveSource::learned
                       ? "position.weight given, but the source is sinusoidal"
                       : "the learned source needs position.weight"));
    }
    if (config.window < 0) {
      throw Error(n + ".window: required, expected >= 0, got " + std::to_string(config.window));
    }
    if (config.max_distance && *config.max_distance < 0) {
      throw Error(n + ".max_distance: expected >= 0, got " + std::to_string(*config.max_distance));
    }
    if (expected == AdditiveSource::sinusoidal) {
      detail::check_even_width(name, "d_model", d_model);
      detail::check_base(name, config.base);
    } else {
      if (d_model < 1) throw Error(n + ".d_model: expected >= 1, got " + std::to_string(d_model));
      if (!config.max_distance) throw Error(n + ".max_distance: required with the learned source");
    }
    return config;
  }

  static DistanceTable<T> checked(Index d_model, const AdditiveConfig& config, Matrix<T> weight) {
    detail::check_table_shape("position.weight", *config.max_distance, d_model, weight.rows(),
                              weight.cols());
    return DistanceTable<T>(std::move(weight));
  }

  AdditiveConfig config_;
  DistanceTable<T> table_;  // r(c) by clamped distance, width d_model
};

static_assert(Encoding<Additive<float>> && EncodesInput<Additive<float>>,
              "Additive must provide add_to_input");

}  // namespace relpos
