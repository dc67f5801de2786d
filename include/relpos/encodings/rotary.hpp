// SPDX-License-Identifier: MIT
// The `rotary` position type (spec §4): RoPE of Su et al. (2021), rotating q and k of every
// head by position-dependent angles so that q_i · k_j depends on p_j − p_i only.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <relpos/core.hpp>
#include <relpos/detail/encoding_checks.hpp>
#include <relpos/detail/growing_table.hpp>
#include <relpos/encodings/concept.hpp>

namespace relpos {

/// The keys of spec §4 `rotary`.
struct RotaryConfig {
  double base = 10000;       // inv_freq_m = base^(−2m/r); > 0
  Index rotary_dim = 0;      // r: rotated components per head, even, <= d_head; 0 = d_head
  bool interleaved = false;  // pairing, see Rotary
};

/// RoPE. Each pair (a, b) of a head becomes (a·cosθ − b·sinθ, a·sinθ + b·cosθ) with
/// θ = p·inv_freq_m, p the token's position (plus an optional offset, e.g. the length of a
/// decoding cache). Pairing:
///   interleaved = false (GPT-NeoX / LLaMA / Hugging Face `rotate_half`): x[m] with x[m + r/2];
///   interleaved = true  (GPT-J / RoFormer): x[2m] with x[2m + 1].
/// Components at index >= r pass through (partial rotary).
///
/// cos/sin are cached per position in a table (P, r) = [cos θ_0..θ_{r/2−1} | sin ...],
/// computed in double and cast, grown automatically (doubling) to the largest position
/// seen, thread-safe as every relpos table (detail::GrowingTable). A call rotates in place
/// in one pass over the data with no temporary of the input's size. Memory of the cache
/// is P·r scalars (a position 10^6 costs 10^6·r, as Hugging Face's cache at
/// max_position_embeddings), at most detail::kMaxCachedScalars: positions past that are
/// computed per token, in double as well, and not kept.
///
/// Hook: transform_qk.
template <Scalar T>
class Rotary {
 public:
  using Scalar = T;
  static constexpr const char* name = "rotary";

  /// d_head: the width of one head. Throws relpos::Error naming the key on a bad value.
  Rotary(Index d_head, const RotaryConfig& config = {})
      : config_(validated(d_head, config)), d_head_(d_head) {
    const Index half = config_.rotary_dim / 2;
    for (Index m = 0; m < half; ++m) {
      inv_freq_.push_back(std::pow(
          config_.base, -2.0 * static_cast<double>(m) / static_cast<double>(config_.rotary_dim)));
    }
    position_limit_ = std::max<Index>(1, detail::kMaxCachedScalars / config_.rotary_dim);
    cache_ = std::make_shared<detail::GrowingTable<T>>(
        [inv_freq = inv_freq_](Index positions) {
          Matrix<T> table(positions, 2 * static_cast<Index>(inv_freq.size()));  // (P, r)
          for (Index p = 0; p < positions; ++p) cos_sin(inv_freq, p, table.row(p).data());
          return table;
        },
        position_limit_);
  }

  const RotaryConfig& config() const { return config_; }
  Index d_head() const { return d_head_; }
  Index rotary_dim() const { return config_.rotary_dim; }
  bool interleaved() const { return config_.interleaved; }
  /// P: the positions 0..P−1 the cos/sin cache covers now.
  Index cached_positions() const { return cache_->current().capacity; }

  /// Rotates every head of q and k in place. q, k: (len, n_heads·d_head), head h in
  /// columns [h·d_head, (h+1)·d_head). Token i is at position positions[i] + offset.
  void transform_qk(MatrixRef<T> q, MatrixRef<T> k, const Positions& positions, Index n_heads,
                    std::int64_t offset = 0) const {
    rotate(q, positions, n_heads, offset);
    rotate(k, positions, n_heads, offset);
  }

  /// Rotates x in place: (len, n_heads·d_head), e.g. one head's (len, d_head) block with
  /// n_heads = 1. Throws relpos::Error on a width that is not n_heads·d_head, or on
  /// positions that do not match the rows or are negative (after the offset).
  void rotate(MatrixRef<T> x, const Positions& positions, Index n_heads = 1,
              std::int64_t offset = 0) const {
    if (n_heads < 1 || x.cols() != n_heads * d_head_) {
      throw Error(std::string(name) + ": input: expected " + std::to_string(n_heads) +
                  " heads x d_head " + std::to_string(d_head_) + " = " +
                  std::to_string(n_heads * d_head_) + " columns, got " + std::to_string(x.cols()));
    }
    detail::check_positions(name, positions, x.rows(), offset);
    if (x.rows() == 0) return;
    // the cache grows to the largest position it may hold; positions past the limit
    // (hostile or sparse ids) are computed per token instead of growing it
    Index cached = 0;
    for (Index i = 0; i < x.rows(); ++i) {
      const std::int64_t position = positions[i] + offset;
      if (position < position_limit_) cached = std::max(cached, static_cast<Index>(position) + 1);
    }
    const auto snap = cached > 0 ? cache_->at_least(cached) : cache_->current();
    const Index half = config_.rotary_dim / 2;
    std::vector<T> beyond;  // cos | sin of one position past the cache: r values, not kept
    for (Index i = 0; i < x.rows(); ++i) {
      const std::int64_t position = positions[i] + offset;
      const T* cos = nullptr;
      if (position < snap.capacity) {
        cos = snap.rows->data() + position * snap.rows->cols();
      } else {
        beyond.resize(static_cast<std::size_t>(2 * half));
        cos_sin(inv_freq_, position, beyond.data());
        cos = beyond.data();
      }
      const T* sin = cos + half;
      T* row = x.data() + i * x.outerStride();
      for (Index h = 0; h < n_heads; ++h) {
        T* head = row + h * d_head_;
        // the pair of m: (head[m], head[m + r/2]) or (head[2m], head[2m + 1])
        const Index stride = config_.interleaved ? 2 : 1;
        const Index partner = config_.interleaved ? 1 : half;
        for (Index m = 0; m < half; ++m) {
          T& a = head[m * stride];
          T& b = head[m * stride + partner];
          const T a0 = a;
          a = a0 * cos[m] - b * sin[m];
          b = a0 * sin[m] + b * cos[m];
        }
      }
    }
  }

 private:
  static RotaryConfig validated(Index d_head, RotaryConfig config) {
    if (d_head < 1) {
      throw Error(std::string(name) + ".d_head: expected >= 1, got " + std::to_string(d_head));
    }
    detail::check_base(name, config.base);
    if (config.rotary_dim < 0 || config.rotary_dim > d_head) {
      throw Error(std::string(name) +
                  ".rotary_dim: expected in [0, d_head = " + std::to_string(d_head) +
                  "] (0 = d_head), got " + std::to_string(config.rotary_dim));
    }
    const bool defaulted = config.rotary_dim == 0;
    if (defaulted) config.rotary_dim = d_head;
    if (config.rotary_dim % 2 != 0) {
      throw Error(std::string(name) + ".rotary_dim: expected even (pairs are rotated), got " +
                  std::to_string(config.rotary_dim) + (defaulted ? " (the default, d_head)" : ""));
    }
    return config;
  }

  // cos(p·inv_freq_m) then sin(p·inv_freq_m), m < r/2: angles in double, cast once.
  static void cos_sin(const std::vector<double>& inv_freq, std::int64_t p, T* out) {
    const std::size_t half = inv_freq.size();
    for (std::size_t m = 0; m < half; ++m) {
      const double theta = static_cast<double>(p) * inv_freq[m];
      out[m] = static_cast<T>(std::cos(theta));
      out[half + m] = static_cast<T>(std::sin(theta));
    }
  }

  RotaryConfig config_;  // rotary_dim resolved (never 0)
  Index d_head_;
  std::vector<double> inv_freq_;  // base^(−2m/r), m < r/2
  Index position_limit_ = 1;      // the cache covers at most positions 0..limit−1
  std::shared_ptr<detail::GrowingTable<T>> cache_;  // (P, r): cos | sin by position
};

static_assert(Encoding<Rotary<float>> && TransformsQK<Rotary<float>>,
              "Rotary must provide transform_qk");

}  // namespace relpos
