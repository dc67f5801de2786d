// SPDX-License-Identifier: MIT
// Multi-head self-attention (Vaswani et al. 2017) templated on a positional encoding (spec §3):
// packed q/k/v projections in PyTorch layout, key padding and causal masks, and the relative
// key/value terms of Shaw et al. 2018 computed by skewing (Huang et al. 2018), never through a
// (len × len × d) tensor.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <relpos/core.hpp>
#include <relpos/detail/gemm.hpp>
#include <relpos/detail/shape_checks.hpp>
#include <relpos/detail/skew.hpp>
#include <relpos/detail/softmax.hpp>
#include <relpos/detail/thread_pool.hpp>
#include <relpos/encodings/concept.hpp>
#include <relpos/encodings/none.hpp>
#include <relpos/io/safetensors.hpp>
#include <relpos/workspace.hpp>

namespace relpos {

/// Sizes and flags of one attention layer.
struct AttentionConfig {
  Index d_model = 0;    // model width; d_model % n_heads == 0
  Index n_heads = 0;    // heads; d_head = d_model / n_heads
  bool causal = false;  // key j visible to query i only when j <= i, by index (spec §2)

  Index d_head() const { return d_model / n_heads; }
  void validate() const {
    if (d_model < 1 || n_heads < 1 || d_model % n_heads != 0) {
      throw Error("attention: d_model (" + std::to_string(d_model) + ") must be a positive " +
                  "multiple of n_heads (" + std::to_string(n_heads) + ")");
    }
  }
};

/// What one sequence brings besides its activations (spec §2).
struct SequenceInputs {
  Positions positions;                // len and the positions p_i (plain 0..len−1 when no ids)
  const bool* key_padding = nullptr;  // len entries, true = padded key; null: no padding
};

/// A [batch, len] array the caller owns and keeps alive while it is used, or nothing.
/// Made from an lvalue only: binding a temporary (which would dangle) does not compile.
template <class A>
class Borrowed {
 public:
  Borrowed() = default;
  Borrowed(std::nullptr_t) {}       // NOLINT: nothing, as an absent optional
  Borrowed(const A& a) : p_(&a) {}  // NOLINT: implicit, so `{.padding = mask}` reads naturally
  Borrowed(const A&&) = delete;     // a temporary would dangle
  explicit operator bool() const { return p_ != nullptr; }
  const A& operator*() const { return *p_; }
  const A* operator->() const { return p_; }
  const A* get() const { return p_; }

 private:
  const A* p_ = nullptr;
};

/// What a batch brings besides its activations; both optional. Their shapes are checked
/// against the activations' [batch, len] at every forward.
struct BatchInputs {
  Borrowed<PaddingMask> padding{};    // [batch, len], true = padded key
  Borrowed<PositionIds> positions{};  // [batch, len], each >= 0; absent: 0..len−1

  /// Throws Error naming the tensor when a shape does not match [batch, len] or an id < 0.
  void check(Index batch, Index len) const {
    auto shape = [](Index r, Index c) {
      return "[" + std::to_string(r) + ", " + std::to_string(c) + "]";
    };
    if (padding && (padding->rows() != batch || padding->cols() != len)) {
      throw Error("padding_mask: expected " + shape(batch, len) + ", got " +
                  shape(padding->rows(), padding->cols()));
    }
    if (positions) {
      if (positions->rows() != batch || positions->cols() != len) {
        throw Error("position_ids: expected " + shape(batch, len) + ", got " +
                    shape(positions->rows(), positions->cols()));
      }
      for (Index b = 0; b < batch; ++b) {
        for (Index i = 0; i < len; ++i) {
          if ((*positions)(b, i) < 0) {
            throw Error("position_ids[" + std::to_string(b) + ", " + std::to_string(i) +
                        "]: expected >= 0, got " + std::to_string((*positions)(b, i)));
          }
        }
      }
    }
  }
  /// Item b's view (row b of each array; PaddingMask and PositionIds are row-major).
  SequenceInputs item(Index b, Index len) const {
    SequenceInputs s;
    s.positions.len = len;
    s.positions.call_length = len;
    if (positions) {
      s.positions.ids = positions->data() + b * len;
      s.positions.call_length = positions->size() > 0 ? positions->maxCoeff() + 1 : 0;
    }
    if (padding) s.key_padding = padding->data() + b * len;
    return s;
  }
};

namespace detail {
inline void check_batch_width(const char* what, Index got, Index want) {
  if (got != want) {
    throw Error(std::string(what) + ": input width (last dimension) expected " +
                std::to_string(want) + ", got " + std::to_string(got));
  }
}
template <class T>
void resize_like(Tensor3<T>& out, Index b, Index l, Index d) {
  if (out.dimension(0) != b || out.dimension(1) != l || out.dimension(2) != d) out.resize(b, l, d);
}
}  // namespace detail

/// Self-attention of spec §3, per head h:
///   e_ij = (q_i·k_j + [q_i·aK(c_ij)] + [xl]) / sqrt(d_head) + [b_h(c_ij)] + mask,
///   α_i = softmax_j(e_ij),  z_i = Σ_j α_ij (v_j + [aV(c_ij)]),  out = concat_h(z) · out_projᵀ +
///   bias,
/// with δ = p_j − p_i (key minus query) and c = the encoding's clamp of δ. The encoding's
/// hooks (encodings/concept.hpp) are asked at compile time: rotary rotates q and k in place;
/// relative tables give aK / aV rows, shared by all heads; score-bias encodings (t5, alibi)
/// give b_h for the R distances, gathered like the key term; xl gives per-head rows r_h(c)
/// and u, v for [xl] = u_h·k_j + (q_i + v_h)·r_h(c_ij), r_h gathered like the key term.
///
/// Relative terms by skewing: with the R distinct clamped distances [lo, hi] of the sequence,
/// QR = q_h · aK[lo..hi]ᵀ (len × R) is gathered into the scores, and the weights are summed
/// per distance into W (len × R) for z_h += W · aV[lo..hi]. Working memory per head is
/// O(len² + len·R), R <= 2·len − 1 for contiguous positions. Those (plain, or ids with an
/// offset) gather and scatter by three segments per row (detail::DistanceBands); other ids go
/// through a (len, len) index of c_ij − lo. Explicit position ids spread so
/// wide that R > 4·len take a sparse path instead: every pair sorted by distance, each
/// distance's row fetched once (O(len²) memory, O(len²·d_head) time), so R never sizes memory.
///
/// Memory, measured (benchmarks/bench_memory, float, one thread, batch 1): one block forward at
/// len 2048, d_model 512, 8 heads adds 56.5 MiB with `none` and 57.4 MiB with learned keys and
/// values, K = 64 (1.02×: contiguous positions build no index, and the (len, R) scratch is
/// small); the naive materialised path (detail/naive_attention.hpp) needs 529 MiB at len 1024.
///
/// Threads: batch items run in parallel, or, for a single sequence, its heads do
/// (detail/thread_pool.hpp); each head writes its own columns of z and each task always gets
/// the same scratch slot, so results are bit-identical whatever the thread count.
template <Scalar T, Encoding Enc = NoPosition<T>>
class MultiHeadAttention {
  static_assert(std::is_same_v<typename Enc::Scalar, T>,
                "MultiHeadAttention<T, Enc>: the encoding's Scalar must be T");

 public:
  AttentionConfig config;
  Matrix<T> in_proj_weight;   // (3 d_model, d_model), PyTorch [out, in]: rows q, then k, then v
  Vector<T> in_proj_bias;     // (3 d_model)
  Matrix<T> out_proj_weight;  // (d_model, d_model)
  Vector<T> out_proj_bias;    // (d_model)
  Enc encoding;               // this layer's positional encoding

  /// Zero weights of the configured sizes (fill them, or use load()). A bad config, or an
  /// encoding built for other sizes (n_heads, d_head, d_model), throws Error before anything
  /// is allocated.
  explicit MultiHeadAttention(AttentionConfig cfg, Enc enc = Enc())
      : config(cfg), encoding(std::move(enc)) {
    config.validate();
    check_encoding();
    const Index d = config.d_model;
    in_proj_weight = Matrix<T>::Zero(3 * d, d);
    in_proj_bias = Vector<T>::Zero(3 * d);
    out_proj_weight = Matrix<T>::Zero(d, d);
    out_proj_bias = Vector<T>::Zero(d);
  }

  /// The tensors `prefix`in_proj_weight [3d, d], in_proj_bias [3d], out_proj.weight [d, d],
  /// out_proj.bias [d] (prefix e.g. "layers.0.self_attn."); a missing or mis-shaped one
  /// throws Error naming it. The encoding loads its own tensors.
  static MultiHeadAttention load(const io::SafetensorsFile& file, const std::string& prefix,
                                 AttentionConfig cfg, Enc enc = Enc()) {
    MultiHeadAttention a(cfg, std::move(enc));
    const Index d = cfg.d_model;
    a.in_proj_weight = file.matrix<T>(prefix + "in_proj_weight", 3 * d, d);
    a.in_proj_bias = file.vector<T>(prefix + "in_proj_bias", 3 * d);
    a.out_proj_weight = file.matrix<T>(prefix + "out_proj.weight", d, d);
    a.out_proj_bias = file.vector<T>(prefix + "out_proj.bias", d);
    return a;
  }

  Index d_model() const { return config.d_model; }
  Index n_heads() const { return config.n_heads; }
  Index d_head() const { return config.d_head(); }

  /// The config, the four weights against it (in_proj_weight [3·d_model, d_model], ...) and
  /// the encoding's sizes against the layer's; else Error naming the field, the expected and
  /// the actual shape. O(1): forward calls it, since the weights are public fields.
  void validate() const {
    config.validate();
    const Index d = config.d_model;
    detail::check_matrix("in_proj_weight", in_proj_weight, 3 * d, d, "3·d_model, d_model");
    detail::check_vector("in_proj_bias", in_proj_bias, 3 * d, "3·d_model");
    detail::check_matrix("out_proj_weight", out_proj_weight, d, d, "d_model, d_model");
    detail::check_vector("out_proj_bias", out_proj_bias, d, "d_model");
    check_encoding();
  }

  /// One sequence: x, out (len, d_model), not aliased. Does not allocate once `ws` has seen
  /// this length (the encoding's own caches aside).
  void forward(ConstMatrixRef<T> x, MatrixRef<T> out, const SequenceInputs& in,
               SequenceWorkspace<T>& ws) const {
    validate();
    const Index len = x.rows(), d = d_model();
    if (x.cols() != d || out.rows() != len || out.cols() != d) {
      throw Error("MultiHeadAttention::forward: x and out: expected (len, d_model = " +
                  std::to_string(d) + "), got " + detail::shape_string(x.rows(), x.cols()) +
                  " and " + detail::shape_string(out.rows(), out.cols()));
    }
    if (in.positions.len != len) {
      throw Error("MultiHeadAttention::forward: positions: expected len " + std::to_string(len) +
                  " (the rows of x), got " + std::to_string(in.positions.len));
    }
    if (len == 0) return;  // no token, no output row (and no scratch to view)

    // q | k | v = x · in_projᵀ + bias: (len, 3 d_model), head h in columns h·d_head of each
    auto qkv = ws.qkv.matrix(len, 3 * d);
    detail::linear<T>(x, in_proj_weight, in_proj_bias, qkv);
    if constexpr (TransformsQK<Enc>) {
      // rotary: q and k of every head, in place, before any score
      MatrixRef<T> q(qkv.leftCols(d));
      MatrixRef<T> k(qkv.middleCols(d, d));
      encoding.transform_qk(q, k, in.positions, n_heads());
    }

    Relative rel;
    prepare_relative(in.positions, ws, rel);

    // heads in parallel, each writing its columns of z: (len, d_model)
    auto z = ws.z.matrix(len, d);
    if (ws.attention_record != nullptr) {
      ws.attention_record->emplace_back(static_cast<std::size_t>(n_heads()));
    }
    ws.ensure_slots(detail::slots_needed());
    detail::parallel_for(
        n_heads(), [&](Index h, int slot) { head_forward(h, qkv, z, in, rel, ws, ws.head(slot)); });

    detail::linear<T>(z, out_proj_weight, out_proj_bias, out);
  }

  /// A batch [batch, len, d_model] → out (resized if needed), items in parallel.
  void forward(const Tensor3<T>& x, Tensor3<T>& out, const BatchInputs& in,
               Workspace<T>& ws) const {
    const Index batch = x.dimension(0), len = x.dimension(1);
    detail::check_batch_width("attention", x.dimension(2), d_model());
    in.check(batch, len);
    detail::resize_like(out, batch, len, d_model());
    detail::for_each_item(batch, ws, [&](Index b, SequenceWorkspace<T>& sw) {
      forward(item(x, b), item(out, b), in.item(b, len), sw);
    });
  }

  /// Convenience: allocates its output and a workspace.
  Tensor3<T> forward(const Tensor3<T>& x, const BatchInputs& in = {}) const {
    Tensor3<T> out;
    Workspace<T> ws;
    forward(x, out, in, ws);
    return out;
  }

 private:
  using SparsePairs = std::vector<std::pair<std::int64_t, std::int64_t>>;
  using IndexMap = Eigen::Map<
      const Eigen::Matrix<std::int32_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;

  // The relative tables of one sequence, shared by its heads.
  struct Relative {
    bool keys = false, values = false;
    bool bias = false;       // score bias b_h(c) (t5, alibi)
    bool head_keys = false;  // Transformer-XL terms (xl)
    bool dense = true;       // skewing tables (else the sparse pair list in the workspace)
    bool banded = false;     // dense, and contiguous positions: segments, no index
    detail::DistanceRange range;
    detail::DistanceBands bands;
    DistanceRows<T> key_rows, value_rows;  // (R, d_head) each, when dense
    DistanceRows<T> head_key_rows;         // (R, n_heads·d_head) r(c), xl, when dense
    const std::int32_t* index = nullptr;   // (len, len) row-major: c_ij − lo, dense, not banded

    // scores(i, j) += by_distance(i, c_ij − lo), by bands or by the index
    template <class S, class B>
    void gather_add(S& scores, const B& by_distance) const {
      if (banded) {
        detail::gather_add(scores, by_distance, bands);
      } else {
        detail::gather_add(scores, by_distance, IndexMap(index, scores.rows(), scores.cols()));
      }
    }
  };

  void prepare_relative(const Positions& p, SequenceWorkspace<T>& ws, Relative& rel) const {
    if constexpr (HasKeyTerm<Enc> || HasValueTerm<Enc> || HasScoreBias<Enc> ||
                  HasHeadKeyTerm<Enc>) {
      rel.keys = detail::key_term_active(encoding);
      rel.values = detail::value_term_active(encoding);
      rel.bias = HasScoreBias<Enc>;
      rel.head_keys = HasHeadKeyTerm<Enc>;
      if (!rel.keys && !rel.values && !rel.bias && !rel.head_keys) return;
      rel.range = detail::distance_range(encoding, p);
      rel.dense = rel.range.count() <= detail::kDenseRangeFactor * std::max<Index>(p.len, 1);
      if (!rel.dense) {
        detail::build_sparse_pairs(encoding, p, ws.sparse_pairs);
        return;
      }
      rel.banded = detail::has_distance_bands(encoding, p, rel.range);
      if (rel.banded) {
        rel.bands = {rel.range.lo, rel.range.hi};
      } else {
        auto index = ws.distance_index.matrix(p.len, p.len);
        detail::build_distance_index(encoding, p, rel.range.lo, index);
        rel.index = index.data();
      }
      if constexpr (HasKeyTerm<Enc>) {
        if (rel.keys) {
          rel.key_rows = encoding.key_rows(rel.range.lo, rel.range.hi);
          check_rows("relative key rows", rel.key_rows.view());
        }
      }
      if constexpr (HasValueTerm<Enc>) {
        if (rel.values) {
          rel.value_rows = encoding.value_rows(rel.range.lo, rel.range.hi);
          check_rows("relative value rows", rel.value_rows.view());
        }
      }
      if constexpr (HasHeadKeyTerm<Enc>) {
        rel.head_key_rows = encoding.head_key_rows(rel.range.lo, rel.range.hi);
        check_head_rows(rel.head_key_rows.view());
      }
    } else {
      (void)p;
      (void)ws;
      (void)rel;
    }
  }

  // The sizes an encoding was built for against this layer's: per-head encodings (t5, alibi,
  // xl) by n_heads, per-head rows (learned, sinusoidal, rotary) by d_head, input and xl
  // encodings by d_model. A mismatch would index past a head's bias or a row's end.
  void check_encoding() const {
    const auto mismatch = [](const char* what, Index built, Index layer) {
      throw Error(std::string("encoding (") + Enc::name + "): built for " + what + " = " +
                  std::to_string(built) + ", but the attention layer has " + what + " = " +
                  std::to_string(layer));
    };
    if constexpr (requires(const Enc& e) {
                    { e.n_heads() } -> std::convertible_to<Index>;
                  }) {
      if (encoding.n_heads() != n_heads()) mismatch("n_heads", encoding.n_heads(), n_heads());
    }
    if constexpr (requires(const Enc& e) {
                    { e.d_head() } -> std::convertible_to<Index>;
                  }) {
      if (encoding.d_head() != d_head()) mismatch("d_head", encoding.d_head(), d_head());
    }
    if constexpr (requires(const Enc& e) {
                    { e.d_model() } -> std::convertible_to<Index>;
                  }) {
      if (encoding.d_model() != d_model()) mismatch("d_model", encoding.d_model(), d_model());
    }
    // t5: bidirectional defaults to !causal (spec §4), so the flag it was built for matters
    if constexpr (requires(const Enc& e) {
                    { e.follows_causal() } -> std::convertible_to<bool>;
                    { e.causal() } -> std::convertible_to<bool>;
                  }) {
      if (encoding.follows_causal() && encoding.causal() != config.causal) {
        throw Error(std::string("encoding (") + Enc::name +
                    "): built for causal = " + (encoding.causal() ? "true" : "false") +
                    " (bidirectional not given follows it), but the attention layer has causal = " +
                    (config.causal ? "true" : "false"));
      }
    }
  }

  void check_rows(const char* what, const ConstMatrixMap<T>& rows) const {
    if (rows.cols() != d_head()) {
      throw Error(std::string(Enc::name) + " " + what + ": width expected d_head = " +
                  std::to_string(d_head()) + ", got " + std::to_string(rows.cols()));
    }
  }

  void check_head_rows(const ConstMatrixMap<T>& rows) const {
    if (rows.cols() != d_model()) {
      throw Error(std::string(Enc::name) + " per-head relative key rows: width expected " +
                  "d_model = " + std::to_string(d_model()) + ", got " +
                  std::to_string(rows.cols()));
    }
  }

  template <class Qkv, class Z>
  void head_forward(Index h, const Qkv& qkv, Z& z, const SequenceInputs& in, const Relative& rel,
                    const SequenceWorkspace<T>& ws, HeadScratch<T>& scratch) const {
    const Index len = qkv.rows(), d = d_model(), dh = d_head();
    const auto q = qkv.middleCols(h * dh, dh);          // (len, d_head)
    const auto k = qkv.middleCols(d + h * dh, dh);      // (len, d_head)
    const auto v = qkv.middleCols(2 * d + h * dh, dh);  // (len, d_head)
    auto zh = z.middleCols(h * dh, dh);                 // (len, d_head)

    // scores: (len, len) = q · kᵀ
    auto scores = scratch.scores.matrix(len, len);
    detail::matmul_nt<T>(q, k, scores);
    // the 1/sqrt(d_head) scale covers q·k, q·aK and the xl terms alike (spec §3); a banded
    // key-term gather applies it in its own pass over the scores, saving one
    const T scale = T(1) / std::sqrt(static_cast<T>(dh));
    const bool fold_scale = rel.keys && rel.banded && !rel.head_keys;
    if (rel.keys) add_key_term(q, scores, rel, ws.sparse_pairs, scratch, fold_scale ? scale : T(1));
    if (rel.head_keys) add_head_key_term(h, q, k, scores, rel, ws.sparse_pairs, scratch);
    if (!fold_scale) scores *= scale;
    // b_h comes after the scale (spec §3, T5 / ALiBi convention)
    if (rel.bias) add_score_bias(h, scores, rel, ws.sparse_pairs, scratch);
    detail::masked_softmax_rows(scores, config.causal, in.key_padding);
    if (ws.attention_record != nullptr) ws.attention_record->back()[std::size_t(h)] = scores;

    // z_h = α · v, then the value term Σ_j α_ij aV(c_ij)
    detail::matmul_nn<T>(scores, v, zh);
    if (rel.values) add_value_term(scores, zh, rel, ws.sparse_pairs, scratch);
  }

  template <class Q, class S>
  void add_key_term(const Q& q, S& scores, const Relative& rel, const SparsePairs& pairs,
                    HeadScratch<T>& scratch, T banded_scale) const {
    if constexpr (HasKeyTerm<Enc>) {
      const Index len = q.rows();
      if (rel.dense) {
        // QR(i, c − lo) = q_i · aK(c): one product with the R distinct rows, then the skew gather
        auto qr = scratch.by_distance.matrix(len, rel.range.count());
        detail::matmul_nt<T>(q, rel.key_rows.view(), qr);
        if (rel.banded) {
          detail::gather_add(scores, qr, rel.bands, banded_scale);
        } else {
          rel.gather_add(scores, qr);
        }
      } else {
        for_each_distance(pairs, [&](std::int64_t c, auto first, auto last) {
          const DistanceRows<T> rows = encoding.key_rows(c, c);
          check_rows("relative key rows", rows.view());
          const ConstMatrixMap<T> table = rows.view();
          const auto a = table.row(0);  // aK(c): (1, d_head)
          for (auto it = first; it != last; ++it) {
            const Index i = it->second / len, j = it->second % len;
            scores(i, j) += q.row(i).dot(a);
          }
        });
      }
    } else {
      (void)q, (void)scores, (void)rel, (void)pairs, (void)scratch, (void)banded_scale;
    }
  }

  // u_h · k_j + (q_i + v_h) · r_h(c_ij) (Transformer-XL): q · r_hᵀ by the skew gather like
  // the key term, v_h · r_h(c) once per distance, u_h · k_j once per key.
  template <class Q, class K, class S>
  void add_head_key_term(Index h, const Q& q, const K& k, S& scores, const Relative& rel,
                         const SparsePairs& pairs, HeadScratch<T>& scratch) const {
    if constexpr (HasHeadKeyTerm<Enc>) {
      const Index len = q.rows(), dh = d_head();
      const auto u = encoding.content_bias().row(h);   // (1, d_head)
      const auto v = encoding.position_bias().row(h);  // (1, d_head)
      // u_h · k_j is the same for every query: one row, added along the scores' rows (their
      // contiguous direction; a column-wise loop here cost more than the whole xl term)
      auto uk = scratch.by_distance.matrix(1, len);  // (1, len)
      detail::matmul_nt<T>(u, k, uk);
      scores.rowwise() += uk.row(0);
      if (rel.dense) {
        const ConstMatrixMap<T> all = rel.head_key_rows.view();
        const auto r = all.middleCols(h * dh, dh);  // r_h(c): (R, d_head)
        // rows 0..len−1: q · r_hᵀ; row len: v_h · r_hᵀ, the same for every query, then added
        auto buffer = scratch.by_distance.matrix(len + 1, rel.range.count());
        auto qr = buffer.topRows(len);  // (len, R)
        detail::matmul_nt<T>(q, r, qr);
        detail::matmul_nt<T>(v, r, buffer.bottomRows(1));
        qr.rowwise() += buffer.row(len);
        rel.gather_add(scores, qr);
      } else {
        for_each_distance(pairs, [&](std::int64_t c, auto first, auto last) {
          const DistanceRows<T> rows = encoding.head_key_rows(c, c);
          check_head_rows(rows.view());
          const auto r = rows.view().row(0).segment(h * dh, dh);  // r_h(c): (1, d_head)
          const T vr = v.dot(r);
          for (auto it = first; it != last; ++it) {
            const Index i = it->second / len, j = it->second % len;
            scores(i, j) += q.row(i).dot(r) + vr;
          }
        });
      }
    } else {
      (void)h, (void)q, (void)k, (void)scores, (void)rel, (void)pairs, (void)scratch;
    }
  }

  // scores(i, j) += b_h(c_ij): the R values of head h, gathered by the distance index.
  template <class S>
  void add_score_bias(Index h, S& scores, const Relative& rel, const SparsePairs& pairs,
                      HeadScratch<T>& scratch) const {
    if constexpr (HasScoreBias<Enc>) {
      const Index len = scores.rows();
      if (rel.dense) {
        auto b = scratch.by_distance.matrix(1, rel.range.count());  // b_h(lo..hi)
        encoding.score_bias(h, rel.range.lo, rel.range.hi, b.data());
        if (rel.banded) {
          for (Index i = 0; i < len; ++i)
            detail::gather_add_row(scores.row(i), b.row(0), i, rel.bands);
        } else {
          const IndexMap index(rel.index, len, len);
          for (Index i = 0; i < len; ++i) {
            for (Index j = 0; j < len; ++j) scores(i, j) += b(0, index(i, j));
          }
        }
      } else {
        for_each_distance(pairs, [&](std::int64_t c, auto first, auto last) {
          T b{};
          encoding.score_bias(h, c, c, &b);
          for (auto it = first; it != last; ++it) scores(it->second / len, it->second % len) += b;
        });
      }
    } else {
      (void)h, (void)scores, (void)rel, (void)pairs, (void)scratch;
    }
  }

  template <class A, class Zh>
  void add_value_term(const A& alpha, Zh& zh, const Relative& rel, const SparsePairs& pairs,
                      HeadScratch<T>& scratch) const {
    if constexpr (HasValueTerm<Enc>) {
      const Index len = alpha.rows();
      if (rel.dense) {
        // W(i, c − lo) = Σ_{j: c_ij = c} α_ij, then z_h += W · aV[lo..hi]
        auto w = scratch.by_distance.matrix(len, rel.range.count());
        if (rel.banded) {
          detail::scatter_by_distance(w, alpha, rel.bands);
        } else {
          detail::scatter_by_distance(w, alpha, IndexMap(rel.index, len, len));
        }
        detail::matmul_nn<T>(w, rel.value_rows.view(), zh, /*accumulate=*/true);
      } else {
        for_each_distance(pairs, [&](std::int64_t c, auto first, auto last) {
          const DistanceRows<T> rows = encoding.value_rows(c, c);
          check_rows("relative value rows", rows.view());
          const ConstMatrixMap<T> table = rows.view();
          const auto a = table.row(0);  // aV(c): (1, d_head)
          for (auto it = first; it != last; ++it) {
            const Index i = it->second / len, j = it->second % len;
            if (alpha(i, j) != T(0)) zh.row(i) += alpha(i, j) * a;
          }
        });
      }
    } else {
      (void)alpha, (void)zh, (void)rel, (void)pairs, (void)scratch;
    }
  }

  // fn(c, first, last) for each run of equal distance c in the sorted sparse pair list.
  template <class F>
  static void for_each_distance(const SparsePairs& pairs, F&& fn) {
    auto it = pairs.begin();
    while (it != pairs.end()) {
      auto last = it;
      while (last != pairs.end() && last->first == it->first) ++last;
      fn(it->first, it, last);
      it = last;
    }
  }
};

}  // namespace relpos
