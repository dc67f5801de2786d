// SPDX-License-Identifier: MIT
// The `absolute` position type (spec §4): the fixed sinusoidal PE of Vaswani et al. (2017),
// x_i += PE(p_i), added to the first block's input.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <relpos/core.hpp>
#include <relpos/detail/encoding_checks.hpp>
#include <relpos/detail/growing_table.hpp>
#include <relpos/detail/shape_checks.hpp>
#include <relpos/detail/sinusoid.hpp>
#include <relpos/encodings/concept.hpp>

namespace relpos {

/// The keys of spec §4 `absolute`.
struct AbsoluteConfig {
  double base = 10000;  // ω_m = base^(−2m/d_model); > 0
  bool operator==(const AbsoluteConfig&) const = default;
};

/// PE(p)[2m] = sin(p·ω_m), PE(p)[2m+1] = cos(p·ω_m) (interleaved sin/cos, as in the
/// paper and the PyTorch tutorial), ω_m = base^(−2m/d_model), d_model even. The rows are
/// cached by position (P, d_model), angles in double then cast, grown automatically
/// (doubling) to the largest position seen, thread-safe (detail::GrowingTable), up to
/// detail::kMaxCachedScalars; positions past that are computed per token and not kept.
///
/// Hook: add_to_input.
template <Scalar T>
class AbsoluteSinusoidal {
 public:
  using Scalar = T;
  using Config = AbsoluteConfig;
  static constexpr const char* name = "absolute";

  // The model-file side (encodings/concept.hpp): the one rule of the config (config.json's
  // and the constructor's); one encoding shared by every layer (the first block uses it).
  static void check(const AbsoluteConfig& p, const ModelShape& m, const detail::Checker& c) {
    c.positive("base", p.base);
    c.even(name, "d_model", m.d_model);
  }
  template <TensorSource<T> Source>
  static auto loader(const AbsoluteConfig& p, const ModelShape& m, const Source&) {
    return [shared = AbsoluteSinusoidal(m.d_model, p)](Index) { return shared; };
  }

  /// d_model: the model width, even. Throws relpos::Error naming the key on a bad value.
  AbsoluteSinusoidal(Index d_model, const AbsoluteConfig& config = {})
      : config_(validated(d_model, config)),
        d_model_(d_model),
        omega_(detail::sinusoid_frequencies(d_model, config.base)),
        position_limit_(std::max<Index>(1, detail::kMaxCachedScalars / d_model)) {
    cache_ = std::make_shared<detail::GrowingTable<T>>(
        [d_model, omega = omega_](Index positions) {
          Matrix<T> table(positions, d_model);  // row p = PE(p)
          for (Index p = 0; p < positions; ++p) detail::sinusoid_row(p, omega, table.row(p).data());
          return table;
        },
        position_limit_);
  }

  const AbsoluteConfig& config() const { return config_; }
  Index d_model() const { return d_model_; }
  /// P: the positions 0..P−1 the cache covers now.
  Index cached_positions() const { return cache_->current().capacity; }
  /// Bytes of the cached rows PE(p), (P, d_model).
  std::size_t cached_bytes() const { return cache_->cached_bytes(); }

  /// x_i += PE(positions[i] + offset). x: (len, d_model), in place.
  void add_to_input(MatrixRef<T> x, const Positions& positions, std::int64_t offset = 0) const {
    if (x.cols() != d_model_) {
      throw Error(std::string(name) + ": input: expected " + std::to_string(d_model_) +
                  " columns (d_model), got " + std::to_string(x.cols()));
    }
    detail::check_positions(name, positions, x.rows(), offset);
    if (x.rows() == 0) return;
    // the cache grows to the largest position it may hold when that is worth it: always for
    // plain positions 0..len−1 (+ offset: a decoder's next tokens, so a warm step allocates
    // nothing), for explicit ids only when they are dense enough; other positions (hostile or
    // sparse ids) are computed per token instead
    Index cached = 0;
    for (Index i = 0; i < x.rows(); ++i) {
      const std::int64_t position = positions[i] + offset;
      if (position < position_limit_) cached = std::max(cached, static_cast<Index>(position) + 1);
    }
    const auto current = cache_->current();
    const auto snap = cached > current.capacity &&
                              detail::worth_growing(cached, positions.plain() ? cached : x.rows(),
                                                    position_limit_)
                          ? cache_->at_least(cached)
                          : current;
    Matrix<T> beyond;  // PE of one position past the cache: (1, d_model), not kept
    for (Index i = 0; i < x.rows(); ++i) {
      const std::int64_t position = positions[i] + offset;
      if (position < snap.capacity) {
        x.row(i) += snap.rows->row(position);
      } else {
        beyond.resize(1, d_model_);
        detail::sinusoid_row(position, omega_, beyond.data());
        x.row(i) += beyond;
      }
    }
  }

 private:
  static AbsoluteConfig validated(Index d_model, const AbsoluteConfig& config) {
    detail::check_positive("absolute: ", "d_model", d_model);
    check(config, ModelShape{.d_model = d_model, .n_heads = 1}, detail::Checker(name, "position"));
    return config;
  }

  AbsoluteConfig config_;
  Index d_model_;
  std::vector<double> omega_;  // base^(−2m/d_model), m < d_model/2
  Index position_limit_;       // the cache covers at most positions 0..limit−1
  std::shared_ptr<detail::GrowingTable<T>> cache_;  // (P, d_model): PE by position
};

static_assert(Encoding<AbsoluteSinusoidal<float>> && EncodesInput<AbsoluteSinusoidal<float>>,
              "AbsoluteSinusoidal must provide add_to_input");

}  // namespace relpos
