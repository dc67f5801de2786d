// SPDX-License-Identifier: MIT
// The `absolute` position type (spec §4): the fixed sinusoidal PE of Vaswani et al. (2017),
// x_i += PE(p_i), added to the first block's input.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>

#include <relpos/core.hpp>
#include <relpos/detail/encoding_checks.hpp>
#include <relpos/detail/growing_table.hpp>
#include <relpos/detail/sinusoid.hpp>
#include <relpos/encodings/concept.hpp>

namespace relpos {

/// The keys of spec §4 `absolute`.
struct AbsoluteConfig {
  double base = 10000;  // ω_m = base^(−2m/d_model); > 0
};

/// PE(p)[2m] = sin(p·ω_m), PE(p)[2m+1] = cos(p·ω_m) (interleaved sin/cos, as in the
/// paper and the PyTorch tutorial), ω_m = base^(−2m/d_model), d_model even. The rows are
/// cached by position (P, d_model), angles in double then cast, grown automatically
/// (doubling) to the largest position seen, thread-safe (detail::GrowingTable).
///
/// Hook: add_to_input.
template <Scalar T>
class AbsoluteSinusoidal {
 public:
  using Scalar = T;
  static constexpr const char* name = "absolute";

  /// d_model: the model width, even. Throws relpos::Error naming the key on a bad value.
  AbsoluteSinusoidal(Index d_model, const AbsoluteConfig& config = {})
      : config_(validated(d_model, config)), d_model_(d_model) {
    cache_ = std::make_shared<detail::GrowingTable<T>>(
        [d_model, omega = detail::sinusoid_frequencies(d_model, config.base)](Index positions) {
          Matrix<T> table(positions, d_model);  // row p = PE(p)
          for (Index p = 0; p < positions; ++p) detail::sinusoid_row(p, omega, table.row(p).data());
          return table;
        },
        std::numeric_limits<Index>::max() / 4);
  }

  const AbsoluteConfig& config() const { return config_; }
  Index d_model() const { return d_model_; }
  /// P: the positions 0..P−1 the cache covers now.
  Index cached_positions() const { return cache_->current().capacity; }

  /// x_i += PE(positions[i] + offset). x: (len, d_model), in place.
  void add_to_input(MatrixRef<T> x, const Positions& positions, std::int64_t offset = 0) const {
    if (x.cols() != d_model_) {
      throw Error(std::string(name) + ": input: expected " + std::to_string(d_model_) +
                  " columns (d_model), got " + std::to_string(x.cols()));
    }
    detail::check_positions(name, positions, x.rows(), offset);
    if (x.rows() == 0) return;
    std::int64_t max_position = 0;
    for (Index i = 0; i < x.rows(); ++i)
      max_position = std::max(max_position, positions[i] + offset);
    const auto snap = cache_->at_least(static_cast<Index>(max_position) + 1);
    for (Index i = 0; i < x.rows(); ++i) x.row(i) += snap.rows->row(positions[i] + offset);
  }

 private:
  static AbsoluteConfig validated(Index d_model, const AbsoluteConfig& config) {
    detail::check_even_width(name, "d_model", d_model);
    detail::check_base(name, config.base);
    return config;
  }

  AbsoluteConfig config_;
  Index d_model_;
  std::shared_ptr<detail::GrowingTable<T>> cache_;  // (P, d_model): PE by position
};

static_assert(Encoding<AbsoluteSinusoidal<float>> && EncodesInput<AbsoluteSinusoidal<float>>,
              "AbsoluteSinusoidal must provide add_to_input");

}  // namespace relpos
