// SPDX-License-Identifier: MIT
// The `additive` position type (spec §4): x̃_i = x_i + Σ_{j∈N(i)} r(clamp(j − i, −K, K)) with
// N(i) = {j : |j − i| <= window, 0 <= j < len}, on the first block's input, in O(len·d).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <relpos/core.hpp>
#include <relpos/detail/encoding_checks.hpp>
#include <relpos/detail/shape_checks.hpp>
#include <relpos/detail/sinusoid.hpp>
#include <relpos/distance_table.hpp>
#include <relpos/encodings/concept.hpp>
#include <relpos/io/config_limits.hpp>

namespace relpos {

/// Where the rows r(c) come from.
enum class AdditiveSource {
  sinusoidal,  // r(c) = s(c), the sinusoid of spec §4 `sinusoidal` over d_model
  learned,     // r(c) = position.weight[c + K]
};

/// The keys of spec §4 `additive`.
struct AdditiveConfig {
  AdditiveSource source = AdditiveSource::sinusoidal;  // required in config.json
  std::optional<Index> window{};      // w >= 0, required: N(i) = {j : |j − i| <= w}
  std::optional<Index> max_distance;  // K >= 0; required with the learned source
  double base = 10000;                // sinusoidal source: ω_m = base^(−2m/d_model); > 0
  bool operator==(const AdditiveConfig&) const = default;
};

/// The additive formula, computed as a running sum over the distance table: for token i the
/// window covers distances δ in [max(−i, −w), min(len−1−i, w)], a contiguous range of rows
/// that moves by at most one row at each end from one token to the next (accumulated in
/// double). Cost O(len·d) whatever the window; scratch one row of d doubles.
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
  using Config = AdditiveConfig;
  static constexpr const char* name = "additive";

  // Defined over indices (spec §4): explicit position ids are an error, and a window that
  // looks ahead cannot be decoded token by token (encodings/concept.hpp's traits).
  static constexpr bool takes_position_ids = false;
  static constexpr const char* cache_refusal =
      "is defined over a window of indices on both sides and cannot be decoded with a cache";

  // The model-file side (encodings/concept.hpp): the one rule of the config (config.json's
  // and the constructors'), the learned source's position.weight, one encoding for the
  // first block.
  static void check(const AdditiveConfig& p, const ModelShape& m, const detail::Checker& c) {
    if (!p.window) c.fail("window", "required key is missing");
    c.range("window", *p.window, 0, io::kMaxDistance);
    if (p.max_distance) c.range("max_distance", *p.max_distance, 0, io::kMaxDistance);
    if (p.source == AdditiveSource::learned && !p.max_distance)
      c.fail("max_distance", "required with the learned source");
    if (p.source == AdditiveSource::sinusoidal) {
      c.positive("base", p.base);
      c.even("the sinusoidal additive source", "d_model", m.d_model);
    }
  }
  static std::vector<TensorSpec> tensors(const AdditiveConfig& p, const ModelShape& m) {
    if (p.source != AdditiveSource::learned) return {};
    return {{"position.weight", {2 * p.max_distance.value_or(0) + 1, m.d_model}}};
  }
  template <TensorSource<T> Source>
  static auto loader(const AdditiveConfig& p, const ModelShape& m, const Source& source) {
    const Additive shared =
        p.source == AdditiveSource::learned
            ? Additive(
                  m.d_model, p,
                  source.template matrix<T>("position.weight", 2 * *p.max_distance + 1, m.d_model))
            : Additive(m.d_model, p);
    return [shared](Index) { return shared; };
  }

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

  // Training's in-place update (encodings/concept.hpp, TakesTensorsInPlace): the learned
  // source's table, which every layer's copy shares (the loader gives each layer the same).
  bool owns_tensors(Index n_layers) const { return table_.exclusive(n_layers); }
  void check_assign(Index, const detail::NamedTensors<T>& source) const {
    if (config_.source == AdditiveSource::learned)
      source.at({-1, "position.weight"}, {table_rows(), d_model()});
  }
  void assign(Index, const detail::NamedTensors<T>& source) {
    if (config_.source != AdditiveSource::learned) return;
    const auto& t = source.at({-1, "position.weight"}, {table_rows(), d_model()});
    table_.assign(ConstMatrixMap<T>(t.values.data(), table_rows(), d_model()));
  }
  const DistanceTable<T>& table() const { return table_; }
  /// Bytes of the cached rows r(c).
  std::size_t cached_bytes() const { return table_.cached_bytes(); }

  /// x_i += Σ_{j∈N(i)} r_ij. x: (len, d_model), in place; positions must be plain 0..len−1.
  void add_to_input(MatrixRef<T> x, const Positions& positions) const {
    if (x.cols() != d_model()) {
      throw Error(std::string(name) + ": input: expected " + std::to_string(d_model()) +
                  " columns (d_model), got " + std::to_string(x.cols()));
    }
    if (!positions.plain() || positions.first != 0) {
      throw Error(std::string(name) +
                  ": position ids: not supported (the formula is defined over indices)");
    }
    if (positions.len != x.rows()) {
      throw Error(std::string(name) + ": positions: expected len " + std::to_string(x.rows()) +
                  " (the input's rows), got " + std::to_string(positions.len));
    }
    accumulate(x.rows(), [&](Index i, Index c0, Index n, const double* sum) {
      T* row = &x(i, c0);  // contiguous: MatrixRef rows have inner stride 1
      for (Index c = 0; c < n; ++c) row[c] += static_cast<T>(sum[c]);
    });
  }

  /// The backward of add_to_input (training): x̃ = x + S, so ∂L/∂x = ∂L/∂x̃ (nothing to do), and
  /// with the learned source ∂L/∂position.weight[c + K] += Σ_δ:clamp(δ)=c Σ_{i: δ ∈ window(i)} g_i.
  /// Token i's window holds δ in [max(−i, −w), min(len−1−i, w)], so for |δ| <= min(w, len−1) the
  /// tokens that take r(δ) are i in [max(0, −δ), min(len, len − δ)): one difference of prefix
  /// sums of g, O(len·d_model) in all. g: (len, d_model) = ∂L/∂x̃; grad: (2K + 1, d_model),
  /// empty starts at zero. The sinusoidal source has no tensor: grad is left as it is.
  void add_to_input_backward(ConstMatrixRef<T> g, Matrix<T>& grad) const {
    if (g.cols() != d_model()) {
      throw Error(std::string(name) + ": input gradient: expected " + std::to_string(d_model()) +
                  " columns (d_model), got " + std::to_string(g.cols()));
    }
    if (config_.source != AdditiveSource::learned) return;
    const Index rows = 2 * *config_.max_distance + 1, len = g.rows();
    if (grad.size() == 0) grad = Matrix<T>::Zero(rows, d_model());
    if (grad.rows() != rows || grad.cols() != d_model()) {
      throw Error("grad.position.weight: expected " + detail::shape_string(rows, d_model()) +
                  ", got " + detail::shape_string(grad.rows(), grad.cols()));
    }
    if (len == 0) return;
    Matrix<T> prefix = Matrix<T>::Zero(len + 1, d_model());  // row k: Σ_{i<k} g_i
    for (Index i = 0; i < len; ++i) prefix.row(i + 1) = prefix.row(i) + g.row(i);
    const Index span = std::min(*config_.window, len - 1);
    for (Index delta = -span; delta <= span; ++delta) {
      const Index lo = std::max<Index>(0, -delta), hi = std::min(len, len - delta);
      grad.row(table_.clamp(delta) + *config_.max_distance) += prefix.row(hi) - prefix.row(lo);
    }
  }

  /// The (len, d_model) term the formula adds, Σ_{j∈N(i)} r_ij for each i.
  Matrix<T> encoding(Index len) const {
    if (len < 0)
      throw Error(std::string(name) + ": len: expected >= 0, got " + std::to_string(len));
    Matrix<T> out(len, d_model());
    accumulate(len, [&](Index i, Index c0, Index n, const double* sum) {
      T* row = &out(i, c0);
      for (Index c = 0; c < n; ++c) row[c] = static_cast<T>(sum[c]);
    });
    return out;
  }

 private:
  // Calls emit(i, c0, n, S_i + c0) for i = 0..len−1 and each chunk [c0, c0 + n) of at most 512
  // columns, S_i = Σ_{δ=lo_i}^{hi_i} r(clamp(δ)), lo_i = max(−i, −w), hi_i = min(len−1−i, w), as
  // a running sum in double: going from i to i+1 the window gains δ = −(i+1) while i+1 <= w
  // and loses δ = len−1−i while len−1−i <= w. Each row enters and leaves at most once, so the
  // cost is O(len·d) for any window, and the accumulator is a 4 KiB stack array (no heap).
  // Plain loops over raw rows: the compiler vectorizes the float → double widening, which
  // Eigen 3.4's cast() does one scalar at a time (3× slower here).
  template <class Emit>
  void accumulate(Index len, Emit&& emit) const {
    if (len == 0) return;
    const Index span = std::min(*config_.window, len - 1);  // D: the sum runs over δ in [−D, D]
    const DistanceRows<T> rows = table_.rows(table_.clamp(-span), table_.clamp(span));
    const ConstMatrixMap<T> block = rows.view();
    constexpr Index kChunk = 512;  // one pass over the table rows for d_model <= 512
    std::array<double, kChunk> sum;
    for (Index c0 = 0; c0 < d_model(); c0 += kChunk) {
      const Index n = std::min(kChunk, d_model() - c0);
      auto r = [&](Index delta) {
        return block.data() + (table_.clamp(delta) - rows.first) * block.cols() + c0;
      };
      double* acc = sum.data();
      std::fill_n(acc, n, 0.0);
      for (Index delta = 0; delta <= span; ++delta) {  // S_0
        const T* in = r(delta);
        for (Index c = 0; c < n; ++c) acc[c] += static_cast<double>(in[c]);
      }
      for (Index i = 0;; ++i) {
        emit(i, c0, n, static_cast<const double*>(acc));
        if (i + 1 == len) break;
        if (i + 1 <= span) {
          const T* in = r(-(i + 1));
          for (Index c = 0; c < n; ++c) acc[c] += static_cast<double>(in[c]);
        }
        if (len - 1 - i <= span) {
          const T* out = r(len - 1 - i);
          for (Index c = 0; c < n; ++c) acc[c] -= static_cast<double>(out[c]);
        }
      }
    }
  }

  // The constructor's facts, then the config's one rule: which constructor was called must
  // match config.source (the learned one takes position.weight).
  static AdditiveConfig validated(Index d_model, const AdditiveConfig& config,
                                  AdditiveSource expected) {
    detail::check_positive("additive: ", "d_model", d_model);
    const detail::Checker c(name, "position");
    if (config.source != expected)
      c.fail("source", expected == AdditiveSource::learned
                           ? "position.weight given, but the source is sinusoidal"
                           : "the learned source needs position.weight");
    check(config, ModelShape{.d_model = d_model, .n_heads = 1}, c);
    return config;
  }

  static DistanceTable<T> checked(Index d_model, const AdditiveConfig& config, Matrix<T> weight) {
    detail::check_table_shape("position.weight", *config.max_distance, d_model, weight.rows(),
                              weight.cols());
    return DistanceTable<T>(std::move(weight));
  }

  Index table_rows() const { return 2 * config_.max_distance.value_or(0) + 1; }  // learned: 2K + 1

  AdditiveConfig config_;
  DistanceTable<T> table_;  // r(c) by clamped distance, width d_model
};

static_assert(Encoding<Additive<float>> && EncodesInput<Additive<float>>,
              "Additive must provide add_to_input");

}  // namespace relpos
