// SPDX-License-Identifier: MIT
// The `deberta` position type (spec §7): He et al. (2021), "DeBERTa: Decoding-enhanced BERT
// with Disentangled Attention", in its v2/v3 form (log buckets, shared relative embeddings,
// projections shared with the content ones). Per head h, with c_ij from the bucketed distance:
//   e_ij = (q_i·k_j + [c2p] q_i·Pk_h(c_ij) + [p2c] k_j·Pq_h(c_ij)) / sqrt(d_head·(1+c2p+p2c)).
// c2p is a per-head key term, p2c the same gather with the roles of query and key swapped
// (encodings/concept.hpp: HasHeadKeyTerm, HasHeadQueryTerm, ScalesScores).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

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
/// score_scale_factor (1 + c2p + p2c).
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
    if (p.rel_norm) {
      rel = layer_normed(rel, source.template vector<T>(norm_weight_tensor, d),
                         source.template vector<T>(norm_bias_tensor, d), m.layer_norm_eps);
    }
    auto shared_rel = share(rel);
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
      return DebertaRelative(d, m.n_heads, p, *shared_rel, key, query);
    };
  }

  /// A projection y = W x + b: weight (d_model, d_model) [out, in]; bias d_model values, or
  /// empty for none.
  struct Projection {
    Matrix<T> weight;
    Vector<T> bias;
  };

  /// rel: R after its norm, (2S, d_model); key: the projection of Pk (used when c2p), query:
  /// that of Pq (used when p2c); an unused one may be empty. Throws relpos::Error naming the
  /// key or the tensor on a bad value or shape.
  DebertaRelative(Index d_model, Index n_heads, const DebertaConfig& config, const Matrix<T>& rel,
                  const Projection& key, const Projection& query)
      : config_(validated(d_model, n_heads, config)), n_heads_(n_heads) {
    const Index rows = 2 * config.position_buckets;
    if (rel.rows() != rows || rel.cols() != d_model) {
      throw Error(std::string(rel_tensor) + ": expected [2*position_buckets=" +
                  std::to_string(rows) + ", d_model=" + std::to_string(d_model) + "], got [" +
                  std::to_string(rel.rows()) + ", " + std::to_string(rel.cols()) + "]");
    }
    const Matrix<double> r = rel.template cast<double>();
    if (config.c2p) key_ = table(r, key, "key");
    if (config.p2c) query_ = table(r, query, "query");
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
  std::shared_ptr<const Matrix<T>> key_, query_;  // (2S, d_model), row b + S − 1
};

static_assert(Encoding<DebertaRelative<float>> && HasHeadKeyTerm<DebertaRelative<float>> &&
                  HasHeadQueryTerm<DebertaRelative<float>> &&
                  ScalesScores<DebertaRelative<float>> && !HasXlBiases<DebertaRelative<float>>,
              "DebertaRelative must provide the disentangled hooks");

}  // namespace relpos
