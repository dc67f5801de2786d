// SPDX-License-Identifier: MIT
// The `t5` position type (spec §4, second wave): Raffel et al. (2020), a learned bias per
// head and log-spaced distance bucket, added to the scores after the 1/sqrt(d_head) scale.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <relpos/core.hpp>
#include <relpos/detail/shape_checks.hpp>
#include <relpos/encodings/concept.hpp>
#include <relpos/io/config_limits.hpp>

namespace relpos {

/// The keys of spec §4 `t5`, plus the layer's causal flag and the tensor name used in error
/// messages.
struct T5Config {
  Index num_buckets = 32;               // B >= 2 (>= 4 when bidirectional)
  Index max_distance = 128;             // M > E = B'/2: distances from M on share the last bucket
  std::optional<bool> bidirectional{};  // absent: !causal (spec §4)
  bool causal = false;                  // the attention layer's flag; only sets the default above,
                                        // and the layer checks it against its own (not a
                                        // config.json key: the model's `causal` is)
  std::string tensor_name = "position.relative_attention_bias";

  /// bidirectional as given, else the spec's default: not causal.
  bool is_bidirectional() const { return bidirectional.value_or(!causal); }
  bool is_bidirectional(bool causal_model) const { return bidirectional.value_or(!causal_model); }
  bool operator==(const T5Config&) const = default;
};

/// The bucket rule's sizes, one rule for config.json and code: B' = B/2 buckets per side when
/// bidirectional (so B >= 4), else B' = B (B >= 2); E = B'/2 distances get a bucket each, and
/// the log bucket divides by ln(M/E), so M must exceed E.
inline Index t5_min_buckets(bool bidirectional) {
  return bidirectional ? 4 : 2;
}
inline Index t5_exact_range(Index num_buckets, bool bidirectional) {
  return (bidirectional ? num_buckets / 2 : num_buckets) / 2;
}

/// T5's bucket of δ = p_j − p_i (key minus query), exactly as spec §4: integers throughout,
/// the log taken only where n >= E (never log 0). Bidirectional: buckets [0, B/2) for
/// keys at or left of the query, [B/2, B) for keys to its right; causal: only keys to the
/// left (δ <= 0) are told apart, every δ > 0 is bucket 0.
inline std::int64_t t5_bucket(std::int64_t delta, std::int64_t num_buckets,
                              std::int64_t max_distance, bool bidirectional) {
  std::int64_t nb = num_buckets, off = 0, n = 0;
  if (bidirectional) {
    nb = num_buckets / 2;
    off = delta > 0 ? nb : 0;
    n = delta < 0 ? -delta : delta;
  } else {
    n = std::max<std::int64_t>(-delta, 0);
  }
  const std::int64_t exact = nb / 2;
  if (n < exact) return off + n;
  const double scaled = std::log(static_cast<double>(n) / static_cast<double>(exact)) /
                        std::log(static_cast<double>(max_distance) / static_cast<double>(exact)) *
                        static_cast<double>(nb - exact);
  // the clamp to nb − 1 happens in double first, so a far distance never overflows the cast
  const double big =
      std::min(static_cast<double>(exact) + std::trunc(scaled), static_cast<double>(nb - 1));
  return off + static_cast<std::int64_t>(big);
}

/// The t5 score bias b_h(δ) = relative_attention_bias[bucket(δ), h]. The table is shared
/// by all layers (spec §1: one `position.relative_attention_bias`): give every layer the
/// same SharedMatrix (or a copy of one instance; copies share it).
///
/// Hooks: clamp_distance (δ clamped to ±M: every |δ| >= M is already in the last bucket,
/// so attention sees at most 2M + 1 distinct distances) and score_bias.
template <Scalar T>
class T5Bias {
 public:
  using Scalar = T;
  using Config = T5Config;
  static constexpr const char* name = "t5";

  // The model-file side (encodings/concept.hpp): the one rule of the config (config.json's
  // and the constructor's), the one relative_attention_bias [num_buckets, n_heads] of all
  // layers, and its loading. bidirectional, when absent, follows m.causal.
  static void check(const T5Config& p, const ModelShape& m, const detail::Checker& c) {
    const bool bidirectional = p.is_bidirectional(m.causal);
    c.range("num_buckets", p.num_buckets, t5_min_buckets(bidirectional), io::kMaxDimension);
    const std::int64_t e = t5_exact_range(p.num_buckets, bidirectional);
    if (p.max_distance <= e)
      c.fail("max_distance", "must be > num_buckets' exact range E = " + std::to_string(e) +
                                 ", got " + std::to_string(p.max_distance));
    c.range("max_distance", p.max_distance, e + 1, io::kMaxDistance);
  }
  static std::vector<TensorSpec> tensors(const T5Config& p, const ModelShape& m) {
    return {{p.tensor_name, {p.num_buckets, m.n_heads}}};
  }
  template <TensorSource<T> Source>
  static auto loader(const T5Config& p, const ModelShape& m, const Source& source) {
    T5Config tc = p;
    tc.causal = m.causal;  // bidirectional, when absent, follows the model (spec §4)
    // one table for all layers (spec §1): the layers share the copies' table
    return [shared = T5Bias(m.n_heads, tc,
                            share(source.template matrix<T>(tc.tensor_name, p.num_buckets,
                                                            m.n_heads)))](Index) { return shared; };
  }

  /// relative_attention_bias: (num_buckets, n_heads), shared (share() makes one; every
  /// layer gets the same pointer, as spec §1 has one table). Throws relpos::Error naming the
  /// key or the tensor on a bad value or shape.
  T5Bias(Index n_heads, const T5Config& config, SharedMatrix<T> relative_attention_bias)
      : config_(validated(n_heads, config)),
        n_heads_(n_heads),
        bidirectional_(config.is_bidirectional()),
        table_(std::move(relative_attention_bias)) {
    if (!table_ || table_->rows() != config_.num_buckets || table_->cols() != n_heads) {
      throw Error(
          config_.tensor_name + ": expected [num_buckets=" + std::to_string(config_.num_buckets) +
          ", n_heads=" + std::to_string(n_heads) + "], got " +
          (table_
               ? "[" + std::to_string(table_->rows()) + ", " + std::to_string(table_->cols()) + "]"
               : std::string("nothing")));
    }
  }

  const T5Config& config() const { return config_; }
  Index n_heads() const { return n_heads_; }
  bool bidirectional() const { return bidirectional_; }
  /// Whether bidirectional follows the layer's causal flag (it was not given): the layer then
  /// checks causal() against its own.
  bool follows_causal() const { return !config_.bidirectional.has_value(); }
  bool causal() const { return config_.causal; }
  /// The shared (num_buckets, n_heads) table.
  const Matrix<T>& table() const { return *table_; }

  // Training's in-place update (encodings/concept.hpp, TakesTensorsInPlace): the one table,
  // held once by each of the model's layers. Every layer writes the same values into it.
  bool owns_tensors(Index n_layers) const { return table_.use_count() == n_layers; }
  void check_assign(Index, const detail::NamedTensors<T>& source) const {
    source.at({-1, config_.tensor_name}, {config_.num_buckets, n_heads_});
  }
  void assign(Index, const detail::NamedTensors<T>& source) {
    const auto& t = source.at({-1, config_.tensor_name}, {config_.num_buckets, n_heads_});
    // share() made the matrix non-const; owns_tensors() says nobody outside the model holds it
    const_cast<Matrix<T>&>(*table_) =
        ConstMatrixMap<T>(t.values.data(), config_.num_buckets, n_heads_);
  }

  std::int64_t bucket(std::int64_t delta) const {
    return t5_bucket(delta, config_.num_buckets, config_.max_distance, bidirectional_);
  }
  std::int64_t clamp_distance(std::int64_t delta) const {
    const auto m = static_cast<std::int64_t>(config_.max_distance);
    return std::clamp(delta, -m, m);
  }
  /// out[c − lo] = b_h(c) for c in [lo, hi].
  void score_bias(Index h, Index lo, Index hi, T* out) const {
    RELPOS_ASSERT(h >= 0 && h < n_heads_ && lo <= hi, "T5Bias::score_bias: bad head or span");
    for (Index c = lo; c <= hi; ++c) out[c - lo] = (*table_)(bucket(c), h);
  }
  /// The backward of score_bias (training): g[c − lo] = ∂L/∂b_h(c) for c in [lo, hi] (the score
  /// gradient summed over the pairs at clamped distance c; the bias is added after the
  /// 1/sqrt(d_head) scale, so without that factor) is added to grad(bucket(c), h): one
  /// gradient per bucket. grad: (num_buckets, n_heads), empty starts at zero.
  void score_bias_backward(Index h, Index lo, Index hi, const T* g, Matrix<T>& grad) const {
    RELPOS_ASSERT(h >= 0 && h < n_heads_ && lo <= hi, "T5Bias::score_bias_backward: bad span");
    if (grad.size() == 0) grad = Matrix<T>::Zero(config_.num_buckets, n_heads_);
    if (grad.rows() != config_.num_buckets || grad.cols() != n_heads_) {
      throw Error("grad." + config_.tensor_name + ": expected [" +
                  std::to_string(config_.num_buckets) + ", " + std::to_string(n_heads_) +
                  "], got [" + std::to_string(grad.rows()) + ", " + std::to_string(grad.cols()) +
                  "]");
    }
    for (Index c = lo; c <= hi; ++c) grad(bucket(c), h) += g[c - lo];
  }

 private:
  static T5Config validated(Index n_heads, const T5Config& config) {
    detail::check_positive("t5: ", "n_heads", n_heads);
    check(config, ModelShape{.n_heads = n_heads, .causal = config.causal},
          detail::Checker(name, "position"));
    return config;
  }

  T5Config config_;
  Index n_heads_;
  bool bidirectional_;     // config_.is_bidirectional()
  SharedMatrix<T> table_;  // (num_buckets, n_heads), shared by all layers
};

static_assert(Encoding<T5Bias<float>> && HasScoreBias<T5Bias<float>>,
              "T5Bias must provide the score-bias hook");

}  // namespace relpos
