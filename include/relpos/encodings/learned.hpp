// SPDX-License-Identifier: MIT
// The `learned` position type (spec §4): Shaw et al. (2018) relative position
// representations, aK(c) = relative_key[c + K], aV(c) = relative_value[c + K], c = clamp(δ, −K, K).
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <relpos/core.hpp>
#include <relpos/detail/encoding_checks.hpp>
#include <relpos/detail/shape_checks.hpp>
#include <relpos/distance_table.hpp>
#include <relpos/encodings/concept.hpp>
#include <relpos/io/config_limits.hpp>

namespace relpos {

/// The keys of spec §4 `learned`, plus the tensor-name prefix used in error messages.
struct LearnedConfig {
  std::optional<Index> max_distance{};  // K >= 0, required: distances beyond ±K use the edge rows
  bool keys = true;                     // a relative_key table, aK, added to the scores
  bool values = true;                   // a relative_value table, aV, added to the outputs
  std::string tensor_prefix{};          // e.g. "layers.0.self_attn." so errors name the tensor
                                        // (not a config.json key: the loader sets it per layer)
  bool operator==(const LearnedConfig&) const = default;
};

/// Learned relative rows: two (2K + 1, d_head) tables, row c + K for clamped distance c
/// (δ = p_j − p_i, key minus query: row 0 is the farthest key to the left, −K). Each table
/// is its own fixed DistanceTable (no growth: clamping bounds it), shared by all heads.
///
/// Hooks: clamp_distance, key_rows, value_rows; attention asks uses_keys() / uses_values().
/// A table whose flag is false is absent (0 × 0) and its hook must not be called.
template <Scalar T>
class LearnedRelative {
 public:
  using Scalar = T;
  using Config = LearnedConfig;
  static constexpr const char* name = "learned";

  // The model-file side (encodings/concept.hpp): the one rule of the config (config.json's
  // and the constructor's), the two tables of each layer (layers.{n}.self_attn.relative_key
  // / relative_value) and their loading.
  static void check(const LearnedConfig& p, const ModelShape&, const detail::Checker& c) {
    if (!p.max_distance) c.fail("max_distance", "required key is missing");
    c.range("max_distance", *p.max_distance, 0, io::kMaxDistance);
  }
  static std::vector<TensorSpec> layer_tensors(const LearnedConfig& p, const ModelShape& m,
                                               Index n) {
    std::vector<TensorSpec> out;
    const std::string prefix = layer_prefix(n);
    const std::int64_t rows = 2 * p.max_distance.value_or(0) + 1;
    if (p.keys) out.push_back({prefix + "relative_key", {rows, m.d_head()}});
    if (p.values) out.push_back({prefix + "relative_value", {rows, m.d_head()}});
    return out;
  }
  template <TensorSource<T> Source>
  static auto loader(const LearnedConfig& p, const ModelShape& m, const Source& source) {
    return [p, d_head = m.d_head(), &source](Index n) {
      LearnedConfig lc = p;
      lc.tensor_prefix = layer_prefix(n);
      const Index rows = 2 * *p.max_distance + 1;
      return LearnedRelative(
          d_head, lc,
          p.keys ? source.template matrix<T>(lc.tensor_prefix + "relative_key", rows, d_head)
                 : Matrix<T>(),
          p.values ? source.template matrix<T>(lc.tensor_prefix + "relative_value", rows, d_head)
                   : Matrix<T>());
    };
  }

  /// From tensors: relative_key / relative_value, each (2K + 1, d_head) when its flag is
  /// on and empty (0 × 0) when off. Throws relpos::Error naming the tensor on a bad shape:
  /// "relative_key: expected [2K+1=9, 16], got [8, 16]".
  LearnedRelative(Index d_head, const LearnedConfig& config, Matrix<T> relative_key,
                  Matrix<T> relative_value)
      : config_(validated(d_head, config)),
        key_(table(d_head, config, "relative_key", config.keys, std::move(relative_key))),
        value_(table(d_head, config, "relative_value", config.values, std::move(relative_value))),
        d_head_(d_head) {}

  /// Tables drawn from N(0, stddev²) with std::mt19937_64(seed): the key table first, then
  /// the value table from the same stream, each row by row.
  static LearnedRelative random(Index d_head, const LearnedConfig& config, std::uint64_t seed,
                                double stddev = 1.0) {
    const LearnedConfig c = validated(d_head, config);
    const Index rows = 2 * *c.max_distance + 1;
    Matrix<T> key, value;
    std::mt19937_64 gen(seed);
    if (c.keys) key = detail::normal_matrix<T>(rows, d_head, gen, stddev);
    if (c.values) value = detail::normal_matrix<T>(rows, d_head, gen, stddev);
    return LearnedRelative(d_head, c, std::move(key), std::move(value));
  }

  const LearnedConfig& config() const { return config_; }
  Index d_head() const { return d_head_; }
  Index max_distance() const { return *config_.max_distance; }
  bool uses_keys() const { return config_.keys; }
  bool uses_values() const { return config_.values; }

  std::int64_t clamp_distance(std::int64_t delta) const {
    const auto k = static_cast<std::int64_t>(*config_.max_distance);
    return std::clamp(delta, -k, k);
  }

  /// aK(c) for clamped c in [lo, hi] ⊆ [−K, K]: (hi − lo + 1, d_head), no copy.
  DistanceRows<T> key_rows(Index lo, Index hi) const {
    RELPOS_ASSERT(config_.keys, "LearnedRelative::key_rows: keys is false");
    return key_.rows(lo, hi);
  }
  /// aV(c) for clamped c in [lo, hi] ⊆ [−K, K]: (hi − lo + 1, d_head), no copy.
  DistanceRows<T> value_rows(Index lo, Index hi) const {
    RELPOS_ASSERT(config_.values, "LearnedRelative::value_rows: values is false");
    return value_.rows(lo, hi);
  }

  /// The backward of key_rows / value_rows (attention_grad.hpp): g (hi − lo + 1, d_head) =
  /// ∂L/∂aK(c) (∂L/∂aV(c)) for clamped c in [lo, hi], added into grad's row c + K. grad is this
  /// layer's (2K + 1, d_head) gradient (the tables are per layer), empty = starts at zero.
  void key_rows_backward(Index lo, Index hi, ConstMatrixRef<T> g, Matrix<T>& grad) const {
    rows_backward("relative_key", config_.keys, lo, hi, g, grad);
  }
  void value_rows_backward(Index lo, Index hi, ConstMatrixRef<T> g, Matrix<T>& grad) const {
    rows_backward("relative_value", config_.values, lo, hi, g, grad);
  }

  // Training's in-place update (encodings/concept.hpp, TakesTensorsInPlace): the tables are
  // the layer's own, each the storage of its fixed DistanceTable.
  bool owns_tensors(Index) const { return key_.exclusive() && value_.exclusive(); }
  void check_assign(Index n, const detail::NamedTensors<T>& source) const {
    if (config_.keys) source.at({n, "self_attn.relative_key"}, {table_rows(), d_head_});
    if (config_.values) source.at({n, "self_attn.relative_value"}, {table_rows(), d_head_});
  }
  void assign(Index n, const detail::NamedTensors<T>& source) {
    const auto rows = [&](const char* path) {
      return ConstMatrixMap<T>(source.at({n, path}, {table_rows(), d_head_}).values.data(),
                               table_rows(), d_head_);
    };
    if (config_.keys) key_.assign(rows("self_attn.relative_key"));
    if (config_.values) value_.assign(rows("self_attn.relative_value"));
  }

  /// The (2K + 1, d_head) tables and their (len × len × d_head) views.
  const DistanceTable<T>& key_table() const { return key_; }
  const DistanceTable<T>& value_table() const { return value_; }
  RelativeView<T> key_view(Index len) const { return key_.view(len); }
  RelativeView<T> value_view(Index len) const { return value_.view(len); }
  /// Bytes of both tables (a table whose flag is off holds one placeholder row).
  std::size_t cached_bytes() const { return key_.cached_bytes() + value_.cached_bytes(); }

 private:
  static std::string layer_prefix(Index n) { return "layers." + std::to_string(n) + ".self_attn."; }
  Index table_rows() const { return 2 * *config_.max_distance + 1; }  // 2K + 1, both tables

  void rows_backward(const char* tensor, bool used, Index lo, Index hi, ConstMatrixRef<T> g,
                     Matrix<T>& grad) const {
    const Index k = *config_.max_distance, rows = 2 * k + 1;
    RELPOS_ASSERT(
        used && -k <= lo && lo <= hi && hi <= k && g.rows() == hi - lo + 1 && g.cols() == d_head_,
        "LearnedRelative::rows_backward: bad span");
    (void)used;
    if (grad.size() == 0) grad = Matrix<T>::Zero(rows, d_head_);
    if (grad.rows() != rows || grad.cols() != d_head_) {
      throw Error("grad." + config_.tensor_prefix + tensor + ": expected [" + std::to_string(rows) +
                  ", " + std::to_string(d_head_) + "], got [" + std::to_string(grad.rows()) + ", " +
                  std::to_string(grad.cols()) + "]");
    }
    grad.middleRows(lo + k, hi - lo + 1) += g;
  }

  static LearnedConfig validated(Index d_head, const LearnedConfig& config) {
    detail::check_positive("learned: ", "d_head", d_head);
    check(config, ModelShape{.d_model = d_head, .n_heads = 1}, detail::Checker(name, "position"));
    return config;
  }

  // The fixed table of one flag; an absent table is a 1-row placeholder never read.
  static DistanceTable<T> table(Index d_head, const LearnedConfig& config, const char* tensor,
                                bool used, Matrix<T> rows) {
    const std::string full = config.tensor_prefix + tensor;
    if (!used) {
      if (rows.size() != 0) {
        throw Error(full + ": given, but its flag (" +
                    (std::string(tensor) == "relative_key" ? "keys" : "values") + ") is false");
      }
      return DistanceTable<T>(Matrix<T>::Zero(1, d_head));
    }
    detail::check_table_shape(full, *config.max_distance, d_head, rows.rows(), rows.cols());
    return DistanceTable<T>(std::move(rows));
  }

  LearnedConfig config_;
  DistanceTable<T> key_;    // (2K + 1, d_head), row c + K
  DistanceTable<T> value_;  // (2K + 1, d_head), row c + K
  Index d_head_;
};

static_assert(Encoding<LearnedRelative<float>> && HasKeyTerm<LearnedRelative<float>> &&
                  HasValueTerm<LearnedRelative<float>>,
              "LearnedRelative must provide the key and value hooks");

}  // namespace relpos
