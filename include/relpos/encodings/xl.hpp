// SPDX-License-Identifier: MIT
// The `xl` position type (spec §4, second wave): Transformer-XL's relative score terms
// (Dai et al. 2019) u_h·k_j + (q_i + v_h)·r_h(Δ), Δ = p_i − p_j, with the halves-concatenated
// sinusoid R(Δ) = [sin(Δω) | cos(Δω)] over d_model projected by each layer's r_net.
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <relpos/backward_workspace.hpp>
#include <relpos/core.hpp>
#include <relpos/detail/gemm.hpp>
#include <relpos/detail/shape_checks.hpp>
#include <relpos/detail/sinusoid.hpp>
#include <relpos/distance_table.hpp>
#include <relpos/encodings/concept.hpp>
#include <relpos/io/config_limits.hpp>

namespace relpos {

/// The keys of spec §4 `xl`, plus the tensor-name prefix used in error messages.
struct XlConfig {
  double base = 10000;                // ω_k = base^(−2k/d_model); > 0
  std::optional<Index> max_distance;  // K >= 0: Δ clamped to [−K, K]; absent: no clamping
  std::string tensor_prefix;          // e.g. "layers.0.self_attn." for r_net.weight (not a
                                      // config.json key: the loader sets it per layer)
  bool operator==(const XlConfig&) const = default;
};

/// R(Δ)[k] = sin(Δ·ω_k), R(Δ)[D/2 + k] = cos(Δ·ω_k), k < D/2, ω_k = base^(−2k/D): the
/// halves concatenated as in Transformer-XL (not interleaved as `sinusoidal`). out: D values.
inline void xl_sinusoid(double delta, Index dim, double base, double* out) {
  detail::sinusoid_row_halves(delta, detail::sinusoid_frequencies(dim, base), out);
}

/// One layer's Transformer-XL terms. The rows r(c) = r_net.weight · R(−c), indexed by the
/// clamped δ = p_j − p_i like every relpos distance table (so Δ = p_i − p_j = −c), are
/// computed in double, cast, and cached in a DistanceTable (grown by doubling, thread-safe,
/// at most 2K + 1 rows when clamped); head h uses columns [h·d_head, (h+1)·d_head). u and v
/// (r_w_bias, r_r_bias) are shared by all layers: pass every layer the same SharedMatrix.
///
/// Hooks: clamp_distance, head_key_rows, content_bias (u), position_bias (v), and their
/// backward (head_key_rows_backward: ∂L/∂r_net.weight from ∂L/∂r(c); position_biases_backward:
/// ∂L/∂u, ∂L/∂v; attention_grad.hpp). There is no value term.
template <Scalar T>
class XlRelative {
 public:
  using Scalar = T;
  using Config = XlConfig;
  static constexpr const char* name = "xl";

  // The model-file side (encodings/concept.hpp): the one rule of the config (config.json's
  // and the constructor's); u and v (position.r_w_bias, position.r_r_bias: [n_heads,
  // d_head]) shared by all layers, each layer's r_net.weight [d_model, d_model], and their
  // loading.
  static void check(const XlConfig& p, const ModelShape& m, const detail::Checker& c) {
    c.positive("base", p.base);
    if (p.max_distance) c.range("max_distance", *p.max_distance, 0, io::kMaxDistance);
    c.even(name, "d_model", m.d_model);
  }
  static std::vector<TensorSpec> tensors(const XlConfig&, const ModelShape& m) {
    return {{"position.r_w_bias", {m.n_heads, m.d_head()}},
            {"position.r_r_bias", {m.n_heads, m.d_head()}}};
  }
  static std::vector<TensorSpec> layer_tensors(const XlConfig&, const ModelShape& m, Index n) {
    return {{layer_prefix(n) + "r_net.weight", {m.d_model, m.d_model}}};
  }
  template <TensorSource<T> Source>
  static auto loader(const XlConfig& p, const ModelShape& m, const Source& source) {
    const Index d_head = m.d_head();
    const SharedMatrix<T> u =
        share(source.template matrix<T>("position.r_w_bias", m.n_heads, d_head));
    const SharedMatrix<T> v =
        share(source.template matrix<T>("position.r_r_bias", m.n_heads, d_head));
    return [p, m, u, v, &source](Index n) {
      XlConfig xc = p;
      xc.tensor_prefix = layer_prefix(n);
      return XlRelative(
          m.d_model, m.n_heads, xc,
          source.template matrix<T>(xc.tensor_prefix + "r_net.weight", m.d_model, m.d_model), u, v);
    };
  }

  /// r_net_weight: (d_model, d_model) [out, in]; u, v: (n_heads, d_head). Throws
  /// relpos::Error naming the key or tensor on a bad value or shape.
  XlRelative(Index d_model, Index n_heads, const XlConfig& config, Matrix<T> r_net_weight,
             SharedMatrix<T> u, SharedMatrix<T> v)
      : config_(validated(d_model, n_heads, config)),
        u_(checked(std::move(u), "position.r_w_bias", n_heads, d_model / n_heads)),
        v_(checked(std::move(v), "position.r_r_bias", n_heads, d_model / n_heads)),
        omega_(std::make_shared<const std::vector<double>>(
            detail::sinusoid_frequencies(d_model, config_.base))),
        weight_(checked_weight(d_model, config_, std::move(r_net_weight))),
        table_(make_table(d_model, config_, omega_, weight_)) {}

  const XlConfig& config() const { return config_; }
  Index n_heads() const { return u_->rows(); }
  Index d_model() const { return table_.width(); }
  std::int64_t clamp_distance(std::int64_t delta) const { return table_.clamp(delta); }
  /// r(c) for clamped c in [lo, hi]: (hi − lo + 1, d_model).
  DistanceRows<T> head_key_rows(Index lo, Index hi) const { return table_.rows(lo, hi); }
  const Matrix<T>& content_bias() const { return *u_; }   // u: (n_heads, d_head)
  const Matrix<T>& position_bias() const { return *v_; }  // v: (n_heads, d_head)
  const DistanceTable<T>& table() const { return table_; }

  /// The backward of head_key_rows: g (hi − lo + 1, d_model) = ∂L/∂r(c) for clamped c in
  /// [lo, hi] (all heads side by side). r(c) = r_net.weight · R(−c), so
  ///   ∂L/∂r_net.weight += Σ_c ∂L/∂r(c) · R(−c)ᵀ = gᵀ · [R(−lo); …; R(−hi)],
  /// one (d_model × R) by (R × d_model) product in T (as every other weight gradient of the
  /// layer; in double it took as long as the rest of xl's backward at d_model 512), the
  /// sinusoids computed in double as the forward's and rounded once. grad: (d_model, d_model),
  /// zero-filled when empty.
  void head_key_rows_backward(Index lo, Index hi, ConstMatrixRef<T> g, Matrix<T>& grad) const {
    detail::EncodingBackwardScratch<T> scratch;
    head_key_rows_backward(lo, hi, g, grad, scratch);
  }
  /// The same with its temporary (the sinusoids) in `scratch`: no allocation when warm.
  void head_key_rows_backward(Index lo, Index hi, ConstMatrixRef<T> g, Matrix<T>& grad,
                              detail::EncodingBackwardScratch<T>& scratch) const {
    const Index d = d_model(), count = hi - lo + 1;
    RELPOS_ASSERT(count >= 1 && g.rows() == count && g.cols() == d,
                  "XlRelative::head_key_rows_backward: bad span");
    if (grad.size() == 0) grad = Matrix<T>::Zero(d, d);
    if (grad.rows() != d || grad.cols() != d) {
      throw Error("grad." + config_.tensor_prefix + "r_net.weight: expected [" + std::to_string(d) +
                  ", " + std::to_string(d) + "], got [" + std::to_string(grad.rows()) + ", " +
                  std::to_string(grad.cols()) + "]");
    }
    Matrix<T>& sinusoids = scratch.a;  // (count, d_model), row c − lo: R(Δ = −c)
    sinusoids.resize(count, d);
    for (Index r = 0; r < count; ++r) {
      detail::sinusoid_row_halves(-static_cast<double>(lo + r), *omega_, sinusoids.row(r).data());
    }
    grad.noalias() += g.transpose() * sinusoids;
  }

  /// The backward of the two biases: du, dv (n_heads, d_head) = ∂L/∂u and ∂L/∂v of this
  /// layer's terms u_h·k_j and v_h·r_h(c_ij) (attention sums them: Σ_ij ∂L/∂s_ij k_j and
  /// Σ_c (Σ_{c_ij = c} ∂L/∂s_ij) r_h(c)), added into grad_u, grad_v (position.r_w_bias,
  /// position.r_r_bias; zero-filled when empty). u and v enter as they are, so the chain rule
  /// ends here; the layers' sums are EncoderGrad's.
  void position_biases_backward(ConstMatrixRef<T> du, ConstMatrixRef<T> dv, Matrix<T>& grad_u,
                                Matrix<T>& grad_v) const {
    add_bias_grad(du, grad_u, "position.r_w_bias");
    add_bias_grad(dv, grad_v, "position.r_r_bias");
  }
  /// Bytes of the cached rows r(c).
  std::size_t cached_bytes() const { return table_.cached_bytes(); }

  // Training's in-place update (encodings/concept.hpp, TakesTensorsInPlace): u and v, held
  // once by each of the model's layers; this layer's r_net (held by it and by its table's
  // generator) and the cached rows r(c), generated again from it.
  bool owns_tensors(Index n_layers) const {
    return u_.use_count() == n_layers && v_.use_count() == n_layers && table_.exclusive() &&
           weight_.use_count() == 2;
  }
  void check_assign(Index n, const detail::NamedTensors<T>& source) const {
    const Index d = d_model(), h = n_heads();
    source.at({-1, "position.r_w_bias"}, {h, d / h});
    source.at({-1, "position.r_r_bias"}, {h, d / h});
    source.at({n, "self_attn.r_net.weight"}, {d, d});
  }
  void assign(Index n, const detail::NamedTensors<T>& source) {
    const Index d = d_model(), h = n_heads();
    const auto matrix = [&](const TensorName& name, Index rows, Index cols) {
      return ConstMatrixMap<T>(source.at(name, {rows, cols}).values.data(), rows, cols);
    };
    // share() made u and v non-const; owns_tensors() says nobody outside the model holds them
    const_cast<Matrix<T>&>(*u_) = matrix({-1, "position.r_w_bias"}, h, d / h);
    const_cast<Matrix<T>&>(*v_) = matrix({-1, "position.r_r_bias"}, h, d / h);
    *weight_ = matrix({n, "self_attn.r_net.weight"}, d, d).template cast<double>();
    table_.regenerate([&](std::int64_t first, Index count, T* out) {
      generate_rows(*weight_, *omega_, first, count, out, regenerate_scratch_);
    });
  }

 private:
  void add_bias_grad(ConstMatrixRef<T> g, Matrix<T>& grad, const char* tensor) const {
    if (grad.size() == 0) grad = Matrix<T>::Zero(u_->rows(), u_->cols());
    if (grad.rows() != u_->rows() || grad.cols() != u_->cols()) {
      throw Error(std::string("grad.") + tensor + ": expected [" + std::to_string(u_->rows()) +
                  ", " + std::to_string(u_->cols()) + "], got [" + std::to_string(grad.rows()) +
                  ", " + std::to_string(grad.cols()) + "]");
    }
    grad += g;
  }

  static std::string layer_prefix(Index n) { return "layers." + std::to_string(n) + ".self_attn."; }

  static XlConfig validated(Index d_model, Index n_heads, const XlConfig& config) {
    detail::check_head_split(name, d_model, n_heads);
    check(config, ModelShape{.d_model = d_model, .n_heads = n_heads},
          detail::Checker(name, "position"));
    return config;
  }

  static SharedMatrix<T> checked(SharedMatrix<T> m, const char* tensor, Index rows, Index cols) {
    if (!m || m->rows() != rows || m->cols() != cols) {
      throw Error(std::string(tensor) + ": expected [n_heads=" + std::to_string(rows) +
                  ", d_head=" + std::to_string(cols) + "], got " +
                  (m ? "[" + std::to_string(m->rows()) + ", " + std::to_string(m->cols()) + "]"
                     : std::string("nothing")));
    }
    return m;
  }

  static std::shared_ptr<Matrix<double>> checked_weight(Index d, const XlConfig& config,
                                                        Matrix<T> w) {
    if (w.rows() != d || w.cols() != d) {
      throw Error(config.tensor_prefix + "r_net.weight: expected [d_model=" + std::to_string(d) +
                  ", d_model=" + std::to_string(d) + "], got [" + std::to_string(w.rows()) + ", " +
                  std::to_string(w.cols()) + "]");
    }
    return std::make_shared<Matrix<double>>(w.template cast<double>());
  }

  // The sinusoids R(Δ) and their product with r_net, a chunk of rows at a time.
  struct RowsScratch {
    Matrix<double> sinusoids, rows;  // (chunk, d_model) each
  };

  // r(c) = r_net.weight · R(Δ = −c) for c = first .. first + count − 1, in double and cast
  // once: a chunk of rows is one product (a long table costs a matrix product, not a
  // matrix-vector product per row). The table's generator and the in-place update both come
  // here, so a table updated in place has the bits of one built afresh.
  static void generate_rows(const Matrix<double>& weight, const std::vector<double>& omega,
                            std::int64_t first, Index count, T* out, RowsScratch& scratch) {
    constexpr Index kChunk = 256;
    const Index d = weight.rows();
    scratch.sinusoids.resize(std::min(count, kChunk), d);
    scratch.rows.resize(scratch.sinusoids.rows(), d);
    for (Index r0 = 0; r0 < count; r0 += kChunk) {
      const Index n = std::min(kChunk, count - r0);
      for (Index r = 0; r < n; ++r) {
        detail::sinusoid_row_halves(-static_cast<double>(first + r0 + r), omega,
                                    scratch.sinusoids.row(r).data());
      }
      auto rows = scratch.rows.topRows(n);
      detail::matmul_nt<double>(scratch.sinusoids.topRows(n), weight, rows);
      MatrixMap<T>(out + r0 * d, n, d) = rows.template cast<T>();
    }
  }

  static DistanceTable<T> make_table(Index d, const XlConfig& config,
                                     std::shared_ptr<const std::vector<double>> omega,
                                     std::shared_ptr<const Matrix<double>> weight) {
    return DistanceTable<T>(d,
                            typename DistanceTable<T>::BlockGenerator(
                                [weight, omega](std::int64_t first, Index count, T* out) {
                                  RowsScratch scratch;
                                  generate_rows(*weight, *omega, first, count, out, scratch);
                                }),
                            config.max_distance, kCachedScalars);
  }

  // The most scalars of r(c) a layer caches: 32 MiB in float, the rows of every distance of an
  // 8192-token sequence at d_model 512. The rows are d_model wide and every layer has its own
  // r_net, so the tables' usual budget (detail::kMaxCachedScalars, 128 MiB) let one layer's
  // cache outweigh the activations it serves (a one-layer 65536-token relpos-encode peaked at
  // 691 MiB with it, 475 with this; none takes 416); longer sequences generate their rows per
  // call, a chunk of keys at a time (detail::TiledAttention).
  static constexpr Index kCachedScalars = Index{1} << 23;

  XlConfig config_;
  SharedMatrix<T> u_, v_;  // (n_heads, d_head) each, shared by all layers
  // ω_k, computed once per layer: past the table's cache rows are generated per attention call,
  // where d/2 powers per row were a third of the sinusoids' cost; the table's generator and the
  // backward take R(Δ) from the same bits
  std::shared_ptr<const std::vector<double>> omega_;
  std::shared_ptr<Matrix<double>> weight_;  // r_net.weight in double, read by table_'s generator
  DistanceTable<T> table_;                  // r(c): (rows, d_model)
  RowsScratch regenerate_scratch_;          // assign()'s, so that a warm update allocates nothing
};

static_assert(Encoding<XlRelative<float>> && HasHeadKeyTerm<XlRelative<float>>,
              "XlRelative must provide the Transformer-XL hooks");

}  // namespace relpos
