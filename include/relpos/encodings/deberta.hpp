// SPDX-License-Identifier: MIT
// The `deberta` position type (spec §7): He et al. (2021), "DeBERTa: Decoding-enhanced BERT
// with Disentangled Attention", in its v2/v3 form (log buckets, shared relative embeddings,
// projections shared with the content ones). Per head h, with c_ij from the bucketed distance:
//   e_ij = (q_i·k_j + [c2p] q_i·Pk_h(c_ij) + [p2c] k_j·Pq_h(c_ij)) / sqrt(d_head·(1+c2p+p2c)).
// c2p is a per-head key term, p2c the same gather with the roles of query and key swapped
// (encodings/concept.hpp: HasHeadKeyTerm, HasHeadQueryTerm, ScalesScores). Its backward
// (head_rows_backward, called by attention_grad.hpp) chains ∂L/∂Pk, ∂L/∂Pq through the
// projections P = R·Wᵀ + b and rel_norm into every tensor the model file has.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <relpos/backward_workspace.hpp>
#include <relpos/core.hpp>
#include <relpos/detail/checker.hpp>
#include <relpos/detail/shape_checks.hpp>
#include <relpos/encodings/concept.hpp>
#include <relpos/io/config_limits.hpp>
#include <relpos/tensor_source.hpp>

namespace relpos {

/// The keys of spec §7 `deberta`, with its defaults (DeBERTa-v3's).
struct DebertaConfig {
  Index position_buckets = 256;        // S: even, >= 2; 2S relative embeddings
  Index max_relative_positions = 512;  // M: > S/2 + 1, the distance the log buckets reach S − 1
  bool c2p = true;                     // content-to-position: q_i · Pk_h(c_ij)
  bool p2c = true;                     // position-to-content: k_j · Pq_h(c_ij)
  bool share_att_key = true;           // Pk, Pq from in_proj's key / query rows
  bool rel_norm = true;                // a LayerNorm on the relative embeddings
  bool operator==(const DebertaConfig&) const = default;
};

/// DeBERTa's log bucket of a signed distance x (spec §7, in double as the spec says): x itself
/// within ±S/2, else sign(x)·(S/2 + ceil(ln(|x|/mid) / ln((M − 1)/mid) · (mid − 1))). The result
/// is capped at ±(S + 1), beyond which every c clamps to the same edge row anyway, so that no
/// distance overflows the cast.
inline std::int64_t deberta_bucket(std::int64_t x, std::int64_t buckets,
                                   std::int64_t max_position) {
  const std::int64_t mid = buckets / 2;
  const double a = std::abs(static_cast<double>(x));
  if (a <= static_cast<double>(mid)) return x;
  const double m = static_cast<double>(mid);
  const double log_pos =
      std::ceil(std::log(a / m) / std::log(static_cast<double>(max_position - 1) / m) * (m - 1));
  const std::int64_t b =
      mid + static_cast<std::int64_t>(std::min(log_pos, static_cast<double>(buckets + 1)));
  return x < 0 ? -b : b;
}

/// The row of the relative embeddings that a distance δ = p_j − p_i uses (spec §7):
/// c = clamp(S − bucket(δ), 0, 2S − 1).
inline std::int64_t deberta_row(std::int64_t delta, std::int64_t buckets,
                                std::int64_t max_position) {
  return std::clamp<std::int64_t>(buckets - deberta_bucket(delta, buckets, max_position), 0,
                                  2 * buckets - 1);
}

/// One layer's disentangled terms. The rows are stored by relpos' clamped distance
/// b = clamp(bucket(δ), 1 − S, S), which is monotone in δ as attention's tiles need
/// (encodings/concept.hpp: clamp_distance); b is row S − b of Pk / Pq, so each table is Pk
/// (Pq) with its rows reversed: table row b + S − 1 = P row S − b. Each table is computed once
/// per layer (in double, cast once): (2S, d_model), head h in columns [h·d_head, (h+1)·d_head).
/// The relative embeddings R (after rel_norm) are shared by all layers; the projections are
/// the layer's.
///
/// Hooks: clamp_distance, head_key_rows (c2p, when on), head_query_rows (p2c, when on),
/// score_scale_factor (1 + c2p + p2c), and for backward head_rows_backward.
template <Scalar T>
class DebertaRelative {
 public:
  using Scalar = T;
  using Config = DebertaConfig;
  static constexpr const char* name = "deberta";
  static constexpr const char* rel_tensor = "position.rel_embeddings";
  static constexpr const char* norm_weight_tensor = "position.rel_norm.weight";
  static constexpr const char* norm_bias_tensor = "position.rel_norm.bias";

  // The model-file side (encodings/concept.hpp): the one rule of the config (config.json's and
  // the constructor's), R [2S, d_model] and its norm once, the separate projections per layer
  // when share_att_key is false, and their loading.
  static void check(const DebertaConfig& p, const ModelShape&, const detail::Checker& c) {
    c.range("position_buckets", p.position_buckets, 2, io::kMaxDistance);
    if (p.position_buckets % 2 != 0) {
      c.fail("position_buckets", "must be even, got " + std::to_string(p.position_buckets));
    }
    const Index low = p.position_buckets / 2 + 2;  // M > S/2 + 1
    if (p.max_relative_positions < low || p.max_relative_positions > io::kMaxDistance) {
      c.fail("max_relative_positions",
             "must be in [position_buckets/2 + 2 = " + std::to_string(low) + ", " +
                 std::to_string(io::kMaxDistance) + "], got " +
                 std::to_string(p.max_relative_positions));
    }
  }
  static std::vector<TensorSpec> tensors(const DebertaConfig& p, const ModelShape& m) {
    std::vector<TensorSpec> out{{rel_tensor, {2 * p.position_buckets, m.d_model}}};
    if (p.rel_norm) {
      out.push_back({norm_weight_tensor, {m.d_model}});
      out.push_back({norm_bias_tensor, {m.d_model}});
    }
    return out;
  }
  static std::vector<TensorSpec> layer_tensors(const DebertaConfig& p, const ModelShape& m,
                                               Index n) {
    std::vector<TensorSpec> out;
    if (p.share_att_key) return out;  // in_proj's rows, already a tensor of the layer
    const std::string prefix = layer_prefix(n);
    if (p.c2p) {
      out.push_back({prefix + "pos_key_proj.weight", {m.d_model, m.d_model}});
      out.push_back({prefix + "pos_key_proj.bias", {m.d_model}});
    }
    if (p.p2c) {
      out.push_back({prefix + "pos_query_proj.weight", {m.d_model, m.d_model}});
      out.push_back({prefix + "pos_query_proj.bias", {m.d_model}});
    }
    return out;
  }
  template <TensorSource<T> Source>
  static auto loader(const DebertaConfig& p, const ModelShape& m, const Source& source) {
    const Index d = m.d_model, rows = 2 * p.position_buckets;
    Matrix<T> rel = source.template matrix<T>(rel_tensor, rows, d);
    auto shared_rel =
        p.rel_norm
            ? normed_embeddings(rel, source.template vector<T>(norm_weight_tensor, d),
                                source.template vector<T>(norm_bias_tensor, d), m.layer_norm_eps)
            : plain_embeddings(std::move(rel));
    return [p, m, shared_rel, &source](Index n) {
      const Index d = m.d_model;
      const std::string prefix = layer_prefix(n);
      Projection key, query;
      if (p.share_att_key) {
        // in_proj_weight [3·d_model, d_model] = [Wq; Wk; Wv] (PyTorch's packing)
        const Matrix<T> w = source.template matrix<T>(prefix + "in_proj_weight", 3 * d, d);
        query.weight = w.topRows(d);
        key.weight = w.middleRows(d, d);
        if (m.bias) {
          const Vector<T> b = source.template vector<T>(prefix + "in_proj_bias", 3 * d);
          query.bias = b.head(d);
          key.bias = b.segment(d, d);
        }
      } else {
        if (p.c2p) key = read_projection(source, prefix + "pos_key_proj", d);
        if (p.p2c) query = read_projection(source, prefix + "pos_query_proj", d);
      }
      return DebertaRelative(d, m.n_heads, p, shared_rel, key, query);
    };
  }

  /// A projection y = W x + b: weight (d_model, d_model) [out, in]; bias d_model values, or
  /// empty for none.
  struct Projection {
    Matrix<T> weight;
    Vector<T> bias;
  };

  /// The relative embeddings every layer projects, shared by all layers (one copy).
  struct Embeddings {
    Matrix<T> rel;          // (2S, d_model): R after rel_norm, what the projections read
    Matrix<T> raw;          // (2S, d_model): position.rel_embeddings before rel_norm (with it)
    Vector<T> norm_weight;  // (d_model): rel_norm's weight; empty without rel_norm
    double eps = 0;         // rel_norm's eps
  };
  /// R without rel_norm (or R already normed, when no gradient is wanted through the norm).
  static std::shared_ptr<const Embeddings> plain_embeddings(Matrix<T> rel) {
    return std::make_shared<const Embeddings>(Embeddings{std::move(rel), {}, {}, 0.0});
  }
  /// R through rel_norm (weight, bias: d_model values): keeps raw R and the weight, so that
  /// backward reaches position.rel_embeddings and the norm's tensors.
  static std::shared_ptr<const Embeddings> normed_embeddings(const Matrix<T>& raw,
                                                             const Vector<T>& weight,
                                                             const Vector<T>& bias, double eps) {
    if (weight.size() != raw.cols() || bias.size() != raw.cols()) {
      throw Error(std::string(norm_weight_tensor) + " / .bias: expected [" +
                  std::to_string(raw.cols()) + "] each, got [" + std::to_string(weight.size()) +
                  "] and [" + std::to_string(bias.size()) + "]");
    }
    return std::make_shared<const Embeddings>(
        Embeddings{layer_normed(raw, weight, bias, eps), raw, weight, eps});
  }

  /// rel: R after its norm, (2S, d_model); key: the projection of Pk (used when c2p), query:
  /// that of Pq (used when p2c); an unused one may be empty. Throws relpos::Error naming the
  /// key or the tensor on a bad value or shape. Built so, backward's gradient of
  /// position.rel_embeddings is that of the R given (with rel_norm on, backward refuses it:
  /// build from normed_embeddings to differentiate through the norm).
  DebertaRelative(Index d_model, Index n_heads, const DebertaConfig& config, const Matrix<T>& rel,
                  const Projection& key, const Projection& query)
      : DebertaRelative(d_model, n_heads, config, plain_embeddings(rel), key, query) {}

  /// The same from shared embeddings (plain_embeddings, normed_embeddings; the loader gives
  /// every layer the same). With share_att_key false the projections are kept for backward
  /// (they are the layer's pos_key_proj / pos_query_proj); with it true, backward reads the
  /// layer's in_proj, whose query and key rows they are.
  DebertaRelative(Index d_model, Index n_heads, const DebertaConfig& config,
                  std::shared_ptr<const Embeddings> embeddings, const Projection& key,
                  const Projection& query)
      : config_(validated(d_model, n_heads, config)),
        n_heads_(n_heads),
        embeddings_(std::move(embeddings)) {
    RELPOS_ASSERT(embeddings_ != nullptr, "DebertaRelative: no embeddings");
    const Matrix<T>& rel = embeddings_->rel;
    const Index rows = 2 * config.position_buckets;
    if (rel.rows() != rows || rel.cols() != d_model) {
      throw Error(std::string(rel_tensor) + ": expected [2*position_buckets=" +
                  std::to_string(rows) + ", d_model=" + std::to_string(d_model) + "], got [" +
                  std::to_string(rel.rows()) + ", " + std::to_string(rel.cols()) + "]");
    }
    const Matrix<double> r = rel.template cast<double>();
    if (config.c2p) key_ = table(r, key, "key");
    if (config.p2c) query_ = table(r, query, "query");
    if (!config.share_att_key) {
      if (config.c2p) key_proj_ = key;
      if (config.p2c) query_proj_ = query;
    }
  }

  const DebertaConfig& config() const { return config_; }
  Index n_heads() const { return n_heads_; }
  Index position_buckets() const { return config_.position_buckets; }
  bool uses_head_keys() const { return config_.c2p; }
  bool uses_head_queries() const { return config_.p2c; }
  double score_scale_factor() const { return 1.0 + config_.c2p + config_.p2c; }

  /// b = clamp(bucket(δ), 1 − S, S): monotone in δ, and row S − b of Pk / Pq.
  std::int64_t clamp_distance(std::int64_t delta) const {
    const std::int64_t s = config_.position_buckets;
    return std::clamp<std::int64_t>(deberta_bucket(delta, s, config_.max_relative_positions), 1 - s,
                                    s);
  }
  /// Pk(S − b) for clamped b in [lo, hi]: (hi − lo + 1, d_model), no copy.
  DistanceRows<T> head_key_rows(Index lo, Index hi) const {
    RELPOS_ASSERT(config_.c2p, "DebertaRelative::head_key_rows: c2p is false");
    return rows(key_, lo, hi);
  }
  /// Pq(S − b) for clamped b in [lo, hi]: (hi − lo + 1, d_model), no copy.
  DistanceRows<T> head_query_rows(Index lo, Index hi) const {
    RELPOS_ASSERT(config_.p2c, "DebertaRelative::head_query_rows: p2c is false");
    return rows(query_, lo, hi);
  }

  /// The backward of head_key_rows / head_query_rows. gk, gq: (hi − lo + 1, d_model), ∂L/∂ of
  /// the rows Pk(S − b), Pq(S − b) for clamped b in [lo, hi] summed over a layer's pairs (an
  /// unused one empty); in_proj_weight (3·d_model, d_model) and in_proj_bias (3·d_model, or
  /// empty) are the layer's. Adds into grad (an AttentionGrad):
  ///   P = Rn·Wᵀ + b:  ∂L/∂W += ∂L/∂Pᵀ·Rn,  ∂L/∂b += Σ_rows ∂L/∂P,  ∂L/∂Rn = Σ_P ∂L/∂P·W,
  /// W, b being in_proj's query / key rows (share_att_key: their gradient goes to
  /// grad.in_proj_weight / in_proj_bias, which the caller has sized) or the layer's
  /// pos_query_proj / pos_key_proj (grad.pos_*_proj_weight / _bias); then through rel_norm
  /// (Rn = x̂·w + β, x̂ = (R − μ)/σ per row):  ∂L/∂w += Σ_rows ∂L/∂Rn ⊙ x̂,  ∂L/∂β += Σ_rows ∂L/∂Rn,
  ///   ∂L/∂R = (g − mean(g) − x̂·mean(g ⊙ x̂)) / σ with g = ∂L/∂Rn ⊙ w,
  /// into this layer's share of the shared tables' gradients, grad.rel_embeddings (2S,
  /// d_model), grad.rel_norm_weight, grad.rel_norm_bias (d_model), which the encoder sums.
  template <class Grad>
  void head_rows_backward(std::int64_t lo, std::int64_t hi, const Matrix<T>& gk,
                          const Matrix<T>& gq, const Matrix<T>& in_proj_weight,
                          const Vector<T>& in_proj_bias, Grad& grad) const {
    detail::EncodingBackwardScratch<T> scratch;
    head_rows_backward(lo, hi, gk, gq, in_proj_weight, in_proj_bias, grad, scratch);
  }
  /// The same with its temporaries in `scratch`: no allocation when warm.
  template <class Grad>
  void head_rows_backward(std::int64_t lo, std::int64_t hi, const Matrix<T>& gk,
                          const Matrix<T>& gq, const Matrix<T>& in_proj_weight,
                          const Vector<T>& in_proj_bias, Grad& grad,
                          detail::EncodingBackwardScratch<T>& scratch) const {
    const Index s = config_.position_buckets, d = embeddings_->rel.cols();
    RELPOS_ASSERT(1 - s <= lo && lo <= hi && hi <= s, "DebertaRelative: distance not clamped");
    if (config_.rel_norm && embeddings_->raw.size() == 0) {
      throw Error(
          "deberta backward: built from R after rel_norm, so position.rel_embeddings has no "
          "gradient; build it from DebertaRelative::normed_embeddings (the loader does)");
    }
    if (config_.share_att_key && (in_proj_weight.rows() != 3 * d || in_proj_weight.cols() != d ||
                                  (in_proj_bias.size() != 0 && in_proj_bias.size() != 3 * d))) {
      throw Error("deberta backward: in_proj: expected weight [" + std::to_string(3 * d) + ", " +
                  std::to_string(d) + "], got [" + std::to_string(in_proj_weight.rows()) + ", " +
                  std::to_string(in_proj_weight.cols()) + "]");
    }
    const Matrix<T>& rn = embeddings_->rel;  // (2S, d_model)
    Matrix<T>& g_rel = scratch.a;            // (2S, d_model): ∂L/∂Rn from both projections
    g_rel.setZero(2 * s, d);
    Matrix<T>& g_p = scratch.b;  // (2S, d_model): ∂L/∂P in P's row order (row S − b)
    g_p.resize(2 * s, d);
    // P = Rn·Wᵀ + b, W rows [first, first + d) of in_proj (shared) or the layer's own
    const auto chain = [&](const Matrix<T>& g, Index first, const Projection& own,
                           Matrix<T>& gw_own, Vector<T>& gb_own) {
      g_p.setZero();
      for (std::int64_t b = lo; b <= hi; ++b) g_p.row(s - b) = g.row(b - lo);
      if (config_.share_att_key) {
        g_rel.noalias() += g_p * in_proj_weight.middleRows(first, d);
        grad.in_proj_weight.middleRows(first, d).noalias() += g_p.transpose() * rn;
        if (in_proj_bias.size() != 0) {
          grad.in_proj_bias.segment(first, d) += g_p.colwise().sum().transpose();
        }
      } else {
        g_rel.noalias() += g_p * own.weight;
        if (gw_own.size() == 0) gw_own = Matrix<T>::Zero(d, d);
        gw_own.noalias() += g_p.transpose() * rn;
        if (own.bias.size() != 0) {
          if (gb_own.size() == 0) gb_own = Vector<T>::Zero(d);
          gb_own += g_p.colwise().sum().transpose();
        }
      }
    };
    if (config_.c2p) {
      chain(gk, d, key_proj_, grad.pos_key_proj_weight, grad.pos_key_proj_bias);
    }
    if (config_.p2c) {
      chain(gq, 0, query_proj_, grad.pos_query_proj_weight, grad.pos_query_proj_bias);
    }
    if (grad.rel_embeddings.size() == 0) grad.rel_embeddings = Matrix<T>::Zero(2 * s, d);
    if (!config_.rel_norm) {
      grad.rel_embeddings += g_rel;
      return;
    }
    if (grad.rel_norm_weight.size() == 0) grad.rel_norm_weight = Vector<T>::Zero(d);
    if (grad.rel_norm_bias.size() == 0) grad.rel_norm_bias = Vector<T>::Zero(d);
    // x̂ and 1/σ recomputed from raw R as the forward's norm computed them (in double)
    Eigen::RowVectorXd& w = scratch.w;  // (d_model)
    w = embeddings_->norm_weight.transpose().template cast<double>();
    for (Index r = 0; r < 2 * s; ++r) {
      Eigen::RowVectorXd& xhat = scratch.x;  // (d_model)
      xhat = embeddings_->raw.row(r).template cast<double>();
      xhat.array() -= xhat.mean();
      const double inv_std =
          1.0 / std::sqrt(xhat.squaredNorm() / static_cast<double>(d) + embeddings_->eps);
      xhat *= inv_std;
      // g_out = ∂L/∂Rn of the row, in double
      grad.rel_norm_weight +=
          (g_rel.row(r).template cast<double>().cwiseProduct(xhat)).transpose().template cast<T>();
      grad.rel_norm_bias += g_rel.row(r).transpose();
      Eigen::RowVectorXd& g = scratch.g;  // (d_model): g_out ⊙ w
      g = g_rel.row(r).template cast<double>().cwiseProduct(w);
      Eigen::RowVectorXd& g_raw = scratch.dx;  // (d_model)
      g_raw =
          inv_std * (g.array() - g.mean() - xhat.array() * g.cwiseProduct(xhat).mean()).matrix();
      grad.rel_embeddings.row(r) += g_raw.template cast<T>();
    }
  }

  /// LayerNorm over each row of x (in double, cast once): the rel_norm of spec §7.
  static Matrix<T> layer_normed(const Matrix<T>& x, const Vector<T>& weight, const Vector<T>& bias,
                                double eps) {
    Matrix<double> y = x.template cast<double>();
    for (Index r = 0; r < y.rows(); ++r) {
      const double mean = y.row(r).mean();
      y.row(r).array() -= mean;
      const double var = y.row(r).squaredNorm() / static_cast<double>(y.cols());
      y.row(r) *= 1.0 / std::sqrt(var + eps);
      y.row(r).array() *= weight.transpose().template cast<double>().array();
      y.row(r) += bias.transpose().template cast<double>();
    }
    return y.template cast<T>();
  }

 private:
  static std::string layer_prefix(Index n) { return "layers." + std::to_string(n) + ".self_attn."; }

  template <class Source>
  static Projection read_projection(const Source& source, const std::string& name, Index d) {
    return {source.template matrix<T>(name + ".weight", d, d),
            source.template vector<T>(name + ".bias", d)};
  }

  static DebertaConfig validated(Index d_model, Index n_heads, const DebertaConfig& config) {
    detail::check_head_split(name, d_model, n_heads);
    check(config, ModelShape{.d_model = d_model, .n_heads = n_heads},
          detail::Checker(name, "position"));
    return config;
  }

  // (R·Wᵀ + b) with its rows reversed: row b + S − 1 holds P row S − b.
  static std::shared_ptr<const Matrix<T>> table(const Matrix<double>& r, const Projection& p,
                                                const char* which) {
    const Index d = r.cols();
    if (p.weight.rows() != d || p.weight.cols() != d) {
      throw Error(std::string(name) + ": " + which + " projection weight: expected [" +
                  std::to_string(d) + ", " + std::to_string(d) + "], got [" +
                  std::to_string(p.weight.rows()) + ", " + std::to_string(p.weight.cols()) + "]");
    }
    if (p.bias.size() != 0 && p.bias.size() != d) {
      throw Error(std::string(name) + ": " + which + " projection bias: expected [" +
                  std::to_string(d) + "] or none, got [" + std::to_string(p.bias.size()) + "]");
    }
    Matrix<double> proj = r * p.weight.transpose().template cast<double>();
    if (p.bias.size() != 0) proj.rowwise() += p.bias.transpose().template cast<double>();
    return std::make_shared<const Matrix<T>>(proj.colwise().reverse().template cast<T>());
  }

  DistanceRows<T> rows(const std::shared_ptr<const Matrix<T>>& t, Index lo, Index hi) const {
    const Index s = config_.position_buckets;
    RELPOS_ASSERT(1 - s <= lo && lo <= hi && hi <= s, "DebertaRelative: distance not clamped");
    return DistanceRows<T>{t, lo + s - 1, lo, hi - lo + 1};
  }

  DebertaConfig config_;
  Index n_heads_;
  std::shared_ptr<const Embeddings> embeddings_;  // R, shared by every layer
  std::shared_ptr<const Matrix<T>> key_, query_;  // (2S, d_model), row b + S − 1
  Projection key_proj_, query_proj_;  // pos_key_proj / pos_query_proj (share_att_key false)
};

static_assert(Encoding<DebertaRelative<float>> && HasHeadKeyTerm<DebertaRelative<float>> &&
                  HasHeadQueryTerm<DebertaRelative<float>> &&
                  ScalesScores<DebertaRelative<float>> && !HasXlBiases<DebertaRelative<float>>,
              "DebertaRelative must provide the disentangled hooks");

}  // namespace relpos
