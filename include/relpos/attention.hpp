// SPDX-License-Identifier: MIT
// Multi-head self-attention (Vaswani et al. 2017) templated on a positional encoding (spec §3):
// packed q/k/v projections in PyTorch layout, key padding and causal masks, and the relative
// terms computed per tile by skewing (Huang et al. 2018) in a streaming kernel, never through
// a (len × len) or (len × len × d) tensor.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <relpos/core.hpp>
#include <relpos/detail/gemm.hpp>
#include <relpos/detail/shape_checks.hpp>
#include <relpos/detail/thread_pool.hpp>
#include <relpos/detail/tiled_attention.hpp>
#include <relpos/encodings/concept.hpp>
#include <relpos/encodings/none.hpp>
#include <relpos/tensor_source.hpp>
#include <relpos/workspace.hpp>

namespace relpos {

/// Sizes and flags of one attention layer.
struct AttentionConfig {
  Index d_model = 0;    // model width; d_model % n_heads == 0
  Index n_heads = 0;    // heads; d_head = d_model / n_heads
  bool causal = false;  // key j visible to query i only when j <= i, by index (spec §2)
  bool bias = true;     // false: in_proj and out_proj have no bias (spec §7 `bias: false`)

  Index d_head() const { return d_model / n_heads; }
  void validate() const { detail::check_head_split("attention", d_model, n_heads); }
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

/// Self-attention of spec §3, per head h:
///   e_ij = (q_i·k_j + [q_i·aK(c_ij)] + [xl]) / sqrt(d_head) + [b_h(c_ij)] + mask,
///   α_i = softmax_j(e_ij),  z_i = Σ_j α_ij (v_j + [aV(c_ij)]),  out = concat_h(z) · out_projᵀ +
///   bias,
/// with δ = p_j − p_i (key minus query) and c = the encoding's clamp of δ. The encoding's
/// hooks (encodings/concept.hpp) are asked at compile time: rotary rotates q and k in place;
/// relative tables give aK / aV rows, shared by all heads; score-bias encodings (t5, alibi)
/// give b_h for the distances; xl gives per-head rows r_h(c) and u, v for
/// [xl] = u_h·k_j + (q_i + v_h)·r_h(c_ij).
///
/// The formula is computed in one place, detail::TiledAttention (detail/tiled_attention.hpp),
/// which also serves cached decoding (kv_cache.hpp): queries in tiles of 128 against keys in
/// tiles of Bk (256 for float, d_head 64) with an online softmax, every relative term applied
/// per tile by local skewing. Working memory is O(len·d_model) plus per-thread tiles at any
/// length: no (len × len) matrix exists, except the weights Model::attention_weights asks for
/// (SequenceWorkspace::attention_record). Causal attention skips the tiles above the
/// diagonal, padding the fully padded key tiles.
///
/// A forward projects k | v for every token, then takes the queries kQueryRows at a time: the
/// block's q (rotary at the block's positions), the kernel with the block's queries against
/// every key (the geometry with queries apart from keys that decoding uses; causal by the
/// block's first row), and the out-projection into the block's rows of out, added to them by
/// forward_add (a block's residual). So only k | v is (len, 2·d_model); q and z are
/// (kQueryRows, d_model), and a block runs in place on x with no (len, d_model) branch.
///
/// Threads: tasks are (head, query tile) pairs for a single sequence, batch items otherwise
/// (detail/thread_pool.hpp); each task runs its key tiles in a fixed order into its own rows
/// and columns of z, so results are bit-identical whatever the thread count.
template <Scalar T, Encoding Enc = NoPosition<T>>
class MultiHeadAttention {
  static_assert(std::is_same_v<typename Enc::Scalar, T>,
                "MultiHeadAttention<T, Enc>: the encoding's Scalar must be T");

 public:
  AttentionConfig config;
  Matrix<T> in_proj_weight;   // (3 d_model, d_model), PyTorch [out, in]: rows q, then k, then v
  Vector<T> in_proj_bias;     // (3 d_model), empty when !config.bias
  Matrix<T> out_proj_weight;  // (d_model, d_model)
  Vector<T> out_proj_bias;    // (d_model), empty when !config.bias
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
    out_proj_weight = Matrix<T>::Zero(d, d);
    if (config.bias) {
      in_proj_bias = Vector<T>::Zero(3 * d);
      out_proj_bias = Vector<T>::Zero(d);
    }
  }

  /// The tensors `prefix`in_proj_weight [3d, d], in_proj_bias [3d], out_proj.weight [d, d],
  /// out_proj.bias [d] (prefix e.g. "layers.0.self_attn."; no biases when !cfg.bias); a
  /// missing or mis-shaped one throws Error naming it. The encoding loads its own tensors.
  template <TensorSource<T> File>
  static MultiHeadAttention load(const File& file, const std::string& prefix, AttentionConfig cfg,
                                 Enc enc = Enc()) {
    MultiHeadAttention a(cfg, std::move(enc));
    const Index d = cfg.d_model;
    a.in_proj_weight = file.template matrix<T>(prefix + "in_proj_weight", 3 * d, d);
    a.out_proj_weight = file.template matrix<T>(prefix + "out_proj.weight", d, d);
    if (cfg.bias) {
      a.in_proj_bias = file.template vector<T>(prefix + "in_proj_bias", 3 * d);
      a.out_proj_bias = file.template vector<T>(prefix + "out_proj.bias", d);
    }
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
    detail::check_matrix("out_proj_weight", out_proj_weight, d, d, "d_model, d_model");
    if (config.bias) {
      detail::check_vector("in_proj_bias", in_proj_bias, 3 * d, "3·d_model");
      detail::check_vector("out_proj_bias", out_proj_bias, d, "d_model");
    } else if (in_proj_bias.size() != 0 || out_proj_bias.size() != 0) {
      throw Error("in_proj_bias, out_proj_bias: expected empty (config.bias is false), got [" +
                  std::to_string(in_proj_bias.size()) + "] and [" +
                  std::to_string(out_proj_bias.size()) + "]");
    }
    check_encoding();
  }

  /// Query rows per block of a forward (see forward_add): q and z are (kQueryRows, d_model)
  /// at most whatever the length, 2 MiB each for float at d_model 512. A multiple of the
  /// tiles' 128 queries, so a block's query tiles are the whole sequence's; 1024 rows give
  /// 8 heads × 8 query tiles = 64 tasks per block, enough for the thread pool.
  static constexpr Index kQueryRows = 1024;

  /// One sequence: out = attn(x); x, out (len, d_model), not aliased. Does not allocate
  /// once `ws` has seen this length (the encoding's own caches aside).
  void forward(ConstMatrixRef<T> x, MatrixRef<T> out, const SequenceInputs& in,
               SequenceWorkspace<T>& ws) const {
    run(x, out, in, ws, /*accumulate=*/false);
  }

  /// One sequence: out += attn(x), the residual add of a block done by the out-projection's
  /// product itself, so no (len, d_model) branch exists. x and out (len, d_model) may be the
  /// same matrix (a post-norm block: x += attn(x)): k | v are projected from every row of x
  /// first, then each block of kQueryRows rows makes its q from x's rows before the
  /// out-projection adds into those same rows. Working memory: k | v (len, 2·d_model), the
  /// block's q and z (kQueryRows, d_model each) and attention's tiles.
  void forward_add(ConstMatrixRef<T> x, MatrixRef<T> out, const SequenceInputs& in,
                   SequenceWorkspace<T>& ws) const {
    run(x, out, in, ws, /*accumulate=*/true);
  }

  /// out += attn(y) for a y (len, d_model) given by blocks of rows: rows(r0, n) returns y's
  /// rows [r0, r0 + n) as an (n, d_model) matrix, valid until its next call. A pre-norm block
  /// passes norm1 of x's rows made into a (kQueryRows, d_model) buffer, so no normalised
  /// (len, d_model) copy exists. rows is called for the blocks in order twice, first for k | v,
  /// then for each block's q, before out's rows of the block change (out may be y's source).
  template <class Rows>
  void forward_add_rows(Rows&& rows, MatrixRef<T> out, const SequenceInputs& in,
                        SequenceWorkspace<T>& ws) const {
    validate();
    check_out("forward_add_rows", out.rows(), d_model(), out, in);
    project(rows, out, in, ws, /*accumulate=*/true);
  }

  /// A batch [batch, len, d_model] → out (resized if needed), items in parallel.
  void forward(const Tensor3<T>& x, Tensor3<T>& out, const BatchInputs& in,
               Workspace<T>& ws) const {
    const Index batch = x.dimension(0), len = x.dimension(1);
    detail::check_batch_width("attention", x.dimension(2), d_model());
    in.check(batch, len);
    detail::resize_like(out, batch, len, d_model());
    ws.for_each_item(batch, [&](Index b, SequenceWorkspace<T>& sw) {
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
  // out (=, or += when accumulate) concat_h(z) · out_projᵀ + bias for x, block by block of
  // query rows; out may alias x only when accumulate (forward_add).
  void run(ConstMatrixRef<T> x, MatrixRef<T> out, const SequenceInputs& in,
           SequenceWorkspace<T>& ws, bool accumulate) const {
    validate();
    check_out(accumulate ? "forward_add" : "forward", x.rows(), x.cols(), out, in);
    project([&](Index r0, Index n) { return x.middleRows(r0, n); }, out, in, ws, accumulate);
  }

  // x (len, cols) and out against d_model, the positions against len.
  void check_out(const char* form, Index len, Index cols, ConstMatrixRef<T> out,
                 const SequenceInputs& in) const {
    const Index d = d_model();
    if (cols != d || out.rows() != len || out.cols() != d) {
      throw Error(std::string("MultiHeadAttention::") + form +
                  ": x and out: expected (len, d_model = " + std::to_string(d) + "), got " +
                  detail::shape_string(len, cols) + " and " +
                  detail::shape_string(out.rows(), out.cols()));
    }
    if (in.positions.len != len) {
      throw Error("MultiHeadAttention::forward: positions: expected len " + std::to_string(len) +
                  " (the rows of x), got " + std::to_string(in.positions.len));
    }
  }

  // The forward for an input given by blocks of rows (forward_add_rows), shapes checked.
  template <class Rows>
  void project(Rows&& rows, MatrixRef<T> out, const SequenceInputs& in, SequenceWorkspace<T>& ws,
               bool accumulate) const {
    const Index len = out.rows(), d = d_model();
    if (len == 0) return;  // no token, no output row (and no scratch to view)
    const Index block_rows = std::min(len, kQueryRows);

    // k | v = x · in_proj[d:3d]ᵀ + bias: (len, 2 d_model), head h in columns h·d_head of each;
    // made from every row of x before any row of out changes (out may be x)
    auto kv = ws.kv.matrix(len, 2 * d);
    // in_proj_bias's entries [start, start + n), or none when the layer has no biases
    const auto in_bias = [&](Index start, Index n) {
      return in_proj_bias.segment(config.bias ? start : 0, config.bias ? n : 0);
    };
    for (Index r0 = 0; r0 < len; r0 += block_rows) {
      const Index n = std::min(block_rows, len - r0);
      detail::linear<T>(rows(r0, n), in_proj_weight.bottomRows(2 * d), in_bias(d, 2 * d),
                        kv.middleRows(r0, n));
    }
    auto q_all = ws.q.matrix(block_rows, d);  // (block_rows, d_model): one block's queries
    auto z_all = ws.z.matrix(block_rows, d);  // (block_rows, d_model): heads' outputs
    if constexpr (TransformsQK<Enc>) {
      // rotary: k once, at every position; the hook rotates a pair (q, k), so the block's z
      // rows, not used yet, take the q side's place
      for (Index r0 = 0; r0 < len; r0 += block_rows) {
        const Index n = std::min(block_rows, len - r0);
        MatrixRef<T> spare(z_all.topRows(n));
        spare.setZero();
        MatrixRef<T> k(kv.block(r0, 0, n, d));
        encoding.transform_qk(spare, k, in.positions.rows(r0, n), n_heads());
      }
    }

    std::vector<Matrix<T>>* weights = nullptr;
    if (ws.attention_record != nullptr) {  // the explicit path: (len, len) weights per head
      ws.attention_record->emplace_back(static_cast<std::size_t>(n_heads()), Matrix<T>(len, len));
      weights = &ws.attention_record->back();
    }
    detail::TiledAttention<T, Enc> attention(encoding, n_heads(), d_head());
    for (Index r0 = 0; r0 < len; r0 += block_rows) {
      const Index n = std::min(block_rows, len - r0);
      const Positions positions = in.positions.rows(r0, n);
      // q of the block: x's rows [r0, r0 + n), read before out's same rows are written
      MatrixRef<T> q(q_all.topRows(n));
      MatrixRef<T> z(z_all.topRows(n));
      detail::linear<T>(rows(r0, n), in_proj_weight.topRows(d), in_bias(0, d), q);
      if constexpr (TransformsQK<Enc>) {
        z.setZero();  // the k side's place, as above
        encoding.transform_qk(q, z, positions, n_heads());
      }
      // the block's queries against every key; causal by index: query r0 + i sees j <= r0 + i
      const detail::AttentionGeometry geometry{.queries = positions,
                                               .keys = in.positions,
                                               .causal = config.causal,
                                               .causal_offset = r0,
                                               .key_padding = in.key_padding};
      attention.run(q, kv.leftCols(d), kv.rightCols(d), geometry, z, ws.attention, weights, r0);
      auto o = out.middleRows(r0, n);  // (n, d_model)
      detail::linear<T>(z, out_proj_weight, out_proj_bias, o, accumulate);
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
};

}  // namespace relpos
