// SPDX-License-Identifier: MIT
// Streaming attention over tiles: the one attention core of relpos (full forward and cached
// decoding). Queries are taken Bq at a time against keys Bk at a time with an online softmax
// (running row max m, sum l, accumulator rescaled: Milakov & Gimelshein 2018, as in
// FlashAttention, Dao et al. 2022), so no (len_q × len_k) matrix ever exists. Every relative
// term of spec §3 is applied per tile by local skewing (Huang et al. 2018): inside a tile whose
// query and key positions are contiguous the distances span at most Bq + Bk − 1 values, so the
// key term is one small product q_tile · a[window]ᵀ followed by a gather, the value term a
// scatter of the tile's weights by distance followed by one small product with a[window]. A
// tile whose distances all clamp to one value (beyond ±K) has a window of one row: a per-row
// scalar for keys, a row sum for values.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include <relpos/core.hpp>
#include <relpos/detail/buffer.hpp>
#include <relpos/detail/gemm.hpp>
#include <relpos/detail/skew.hpp>
#include <relpos/detail/thread_pool.hpp>
#include <relpos/encodings/concept.hpp>
#include <relpos/workspace.hpp>

namespace relpos::detail {

/// The tile shape, chosen once from d_head and the scalar size. Bq = 128 queries: Eigen packs
/// each key and value tile once per query tile, so a taller query tile repacks them less
/// often (at len 2048, d_model 512, float: a layer took 397 ms with Bq = 128, 415 with 64;
/// 256 gained nothing more). Bk: the largest power of two in [64, 512] such that the key and
/// value tiles (2 · Bk · d_head) and the score tile (Bq · Bk) fit in 256 KiB, a conservative
/// share of a core's L2. float, d_head 64: Bk = 256; double: 128.
struct TileShape {
  Index queries = 128;
  Index keys = 256;
  // The most distance-row scalars one pass over the keys fetches: a call whose clamped
  // distances times the rows' widths exceed it takes its keys in chunks, each with its own
  // rows (see TiledAttention::run). 2^23: 32 MiB in float, about an eighth of what xl's rows,
  // d_model wide, take for the 2·65536 distances of a 65536-token sequence (beyond what a table
  // caches, detail::kMaxCachedScalars, so generated for the call).
  Index row_scalars = Index{1} << 23;
};
template <class T>
TileShape tile_shape(Index d_head) {
  constexpr Index kBudget = Index{256} * 1024 / static_cast<Index>(sizeof(T));
  TileShape s;
  s.keys = 64;
  while (s.keys < 512 && 2 * s.keys * (2 * d_head + s.queries) <= kBudget) s.keys *= 2;
  return s;
}

/// Grows a buffer geometrically (a length that increases by one per decoded token allocates
/// O(log n) times in all) and views it as (rows, cols).
template <class E>
typename Buffer<E>::Map grown(Buffer<E>& b, Index rows, Index cols) {
  if (rows * cols > b.capacity()) b.reserve(std::max<Index>(rows * cols, 2 * b.capacity()));
  return b.matrix(rows, cols);
}

/// Queries and keys of one attention call, both with positions (spec §2). Query i sees key j
/// when j is not padded and, if causal, j <= causal_offset + i (by index: the full forward has
/// offset 0, a decoded chunk the number of tokens cached before it).
struct AttentionGeometry {
  Positions queries;  // n_q positions
  Positions keys;     // n_k positions
  bool causal = false;
  Index causal_offset = 0;
  const bool* key_padding = nullptr;  // n_k flags, true = padded; null: none
};

/// Attention of spec §3 for every head of one call, streamed over tiles:
///   z_i = Σ_j softmax_j(e_ij) (v_j + [aV(c_ij)]),
///   e_ij = (q_i·k_j + [q_i·aK(c_ij)] + [u_h·k_j + (q_i + v_h)·r_h(c_ij)]) / sqrt(d_head)
///          + [b_h(c_ij)],
/// c_ij = clamp(p_j − p_i). Terms in brackets exist when the encoding has the hook
/// (encodings/concept.hpp); rotary has already rotated q and k.
///
/// How a tile finds its distances (one object per path, each term written once against it):
/// - banded: positions contiguous in both queries and keys (plain, offset, decoding) under a
///   saturating clamp: three segments per row (DistanceBands), no index;
/// - indexed: other explicit ids whose tile spans <= kDenseRangeFactor · (Bq + Bk) distances,
///   or contiguous positions under a clamp that does not saturate (deberta's log buckets): a
///   (Bq, Bk) index into the tile's window (for contiguous positions read from one table of
///   the call's clamped distances, so clamp_distance runs once per distance, not per pair);
/// - sparse: wider tiles, or calls whose distances span more than kDenseRangeFactor ·
///   (n_q + n_k) (no rows are fetched for the call then): the tile's pairs sorted by distance,
///   each distance's row fetched once.
/// Tiles above the causal diagonal and fully padded key tiles are skipped. A query with no
/// visible key gets z = 0 (spec §2). Tasks are (head, query tile) pairs on the thread pool, each
/// running its key tiles in a fixed order into its own rows of z: bit-identical results for
/// any thread count.
template <Scalar T, Encoding Enc>
class TiledAttention {
 public:
  /// shape: the tiles (tile_shape by default; tests pass small ones to cross many tiles).
  TiledAttention(const Enc& enc, Index n_heads, Index d_head)
      : TiledAttention(enc, n_heads, d_head, tile_shape<T>(d_head)) {}
  TiledAttention(const Enc& enc, Index n_heads, Index d_head, TileShape shape)
      : enc_(enc), n_heads_(n_heads), d_head_(d_head), shape_(shape) {
    RELPOS_ASSERT(shape.queries >= 1 && shape.keys >= 1, "TiledAttention: empty tile shape");
  }

  /// q: (n_q, n_heads·d_head), k, v: (n_k, n_heads·d_head), heads side by side; z: (n_q,
  /// n_heads·d_head), written. weights: null, or n_heads matrices of n_k columns that receive
  /// the attention weights α in rows [weights_row0, weights_row0 + n_q) (the explicit path of
  /// Model::attention_weights, the only one that holds (len × len) memory; a block of query
  /// rows writes its rows of the sequence's matrices).
  void run(ConstMatrixRef<T> q, ConstMatrixRef<T> k, ConstMatrixRef<T> v,
           const AttentionGeometry& g, MatrixRef<T> z, AttentionScratch<T>& scratch,
           std::vector<Matrix<T>>* weights = nullptr, Index weights_row0 = 0) {
    RELPOS_ASSERT(q.rows() == g.queries.len && k.rows() == g.keys.len && v.rows() == k.rows() &&
                      z.rows() == q.rows(),
                  "TiledAttention::run: shapes do not match the positions");
    weights_row0_ = weights_row0;
    const Index n_q = q.rows();
    if (n_q == 0) return;
    if (k.rows() == 0) {
      z.setZero();
      return;
    }
    plan(g);
    const Index q_tiles = (n_q + shape_.queries - 1) / shape_.queries;
    scratch.tiles.resize(
        std::max<std::size_t>(scratch.tiles.size(), static_cast<std::size_t>(slots_needed())));
    const Index chunk = keys_per_pass(n_q, k.rows());
    if (weights != nullptr || chunk >= k.rows()) {
      fetch(k, g, scratch);
      parallel_for(n_heads_ * q_tiles, [&](Index task, int slot) {
        const Index h = task / q_tiles, i0 = (task % q_tiles) * shape_.queries;
        Task t{*this,
               q,
               k,
               v,
               g,
               scratch,
               scratch.tiles[static_cast<std::size_t>(slot)],
               h,
               i0,
               std::min(shape_.queries, n_q - i0)};
        t.run(z, weights != nullptr ? &(*weights)[static_cast<std::size_t>(h)] : nullptr);
      });
      return;
    }
    run_in_key_chunks(q, k, v, g, z, scratch, chunk);
  }

 private:
  static constexpr bool kRelative = HasKeyTerm<Enc> || HasValueTerm<Enc> || HasScoreBias<Enc> ||
                                    HasHeadKeyTerm<Enc> || HasHeadQueryTerm<Enc>;
  static constexpr bool kPerHead = HasHeadKeyTerm<Enc> || HasHeadQueryTerm<Enc>;

  // The online softmax of one (head, query tile): the unnormalised accumulator and the running
  // row max m and sum l.
  struct RowState {
    MatrixRef<T> acc;   // (bq, d_head): Σ_j exp(e_ij − m_i) (v_j + [aV(c_ij)])
    MatrixMap<T> m, l;  // (bq, 1)
  };
  static void start(RowState& st) {
    st.acc.setZero();
    st.m.setConstant(-std::numeric_limits<T>::infinity());
    st.l.setZero();
  }
  // z_i = acc_i / l_i; a query with no visible key (l = 0: else the max contributes 1) gets
  // z_i = 0 (spec §2). zh may be st.acc itself.
  static void finish(const RowState& st, MatrixRef<T> zh) {
    for (Index r = 0; r < zh.rows(); ++r) {
      if (st.l(r, 0) != T(0)) {
        zh.row(r) = st.acc.row(r) / st.l(r, 0);
      } else {
        zh.row(r).setZero();
      }
    }
  }

  // The keys one pass takes: all of them, or, when the call's rows (its clamped distances times
  // the widths of the rows its terms fetch) would exceed shape_.row_scalars, the most keys
  // whose rows stay within it (n_q + keys − 1 distances for contiguous positions), a multiple
  // of Bk, evened out over the passes.
  Index keys_per_pass(Index n_q, Index n_k) const {
    if constexpr (!kRelative) {
      (void)n_q;
      return n_k;
    } else {
      Index width = 0;
      if (call_.keys) width += d_head_;
      if (call_.values) width += d_head_;
      if (call_.head_keys) width += n_heads_ * d_head_;
      if (call_.head_queries) width += n_heads_ * d_head_;
      if (!call_.dense || width == 0 || call_.range.count() * width <= shape_.row_scalars) {
        return n_k;
      }
      const Index bk = shape_.keys;
      const Index most = std::max(bk, (shape_.row_scalars / width - n_q + 1) / bk * bk);
      const Index passes = (n_k + most - 1) / most;
      return ((n_k + passes - 1) / passes + bk - 1) / bk * bk;
    }
  }

  // A call whose rows exceed shape_.row_scalars (xl at 65536 tokens: d_model-wide rows for
  // 2·65536 distances, generated for the call) takes its keys `chunk` at a time, each chunk
  // with the rows of its own distances only, so the rows take O(chunk · width) memory, not
  // O(len · width). The softmax state outlives a chunk: the accumulator is z itself, m and l
  // are the call's. chunk is a multiple of Bk, so each query tile meets the same key tiles in
  // the same order as in one pass: the same sums, bit for bit, given the same rows.
  void run_in_key_chunks(ConstMatrixRef<T> q, ConstMatrixRef<T> k, ConstMatrixRef<T> v,
                         const AttentionGeometry& g, MatrixRef<T> z, AttentionScratch<T>& scratch,
                         Index chunk) {
    const Index n_q = q.rows(), n_k = k.rows(), dh = d_head_;
    const Index q_tiles = (n_q + shape_.queries - 1) / shape_.queries;
    auto m = grown(scratch.row_max, n_heads_, n_q);
    auto l = grown(scratch.row_sum, n_heads_, n_q);
    const auto state = [&](Index h, Index i0, Index bq) {
      return RowState{z.block(i0, h * dh, bq, dh), MatrixMap<T>(&m(h, i0), bq, 1),
                      MatrixMap<T>(&l(h, i0), bq, 1)};
    };
    z.setZero();
    m.setConstant(-std::numeric_limits<T>::infinity());
    l.setZero();
    for (Index k0 = 0; k0 < n_k; k0 += chunk) {
      if (g.causal && k0 > g.causal_offset + n_q - 1) break;  // no query sees these keys or later
      const Index kc = std::min(chunk, n_k - k0);
      // the chunk as a call of its own: keys [k0, k0 + kc), the causal offset by their index
      const AttentionGeometry gc{
          .queries = g.queries,
          .keys = g.keys.rows(k0, kc),
          .causal = g.causal,
          .causal_offset = g.causal_offset - k0,
          .key_padding = g.key_padding != nullptr ? g.key_padding + k0 : nullptr};
      const auto kk = k.middleRows(k0, kc), vk = v.middleRows(k0, kc);
      plan(gc);
      fetch(kk, gc, scratch);
      parallel_for(n_heads_ * q_tiles, [&](Index task, int slot) {
        const Index h = task / q_tiles, i0 = (task % q_tiles) * shape_.queries;
        const Index bq = std::min(shape_.queries, n_q - i0);
        Task t{*this, q,  kk, vk, gc, scratch, scratch.tiles[static_cast<std::size_t>(slot)],
               h,     i0, bq};
        RowState st = state(h, i0, bq);
        t.attend(st);
      });
    }
    for (Index h = 0; h < n_heads_; ++h) {
      for (Index i0 = 0; i0 < n_q; i0 += shape_.queries) {
        const Index bq = std::min(shape_.queries, n_q - i0);
        const RowState st = state(h, i0, bq);
        finish(st, st.acc);
      }
    }
  }

  // What the whole call shares: which terms are on, the call's clamped distances [lo, hi] and,
  // when dense, their rows, fetched once.
  struct Call {
    bool keys = false, values = false;
    bool head_keys = false, head_queries = false;  // per-head terms (xl, deberta)
    bool dense = false;       // rows for [lo, hi] fetched (else every tile is sparse)
    bool contiguous = false;  // δ_ij = j − i + shift for all pairs
    bool banded = false;      // contiguous positions, saturating clamp
    bool lookup = false;      // contiguous, dense, not banded: AttentionScratch::distances
    std::int64_t shift = 0;   // contiguous: δ_ij = j − i + shift
    DistanceRange range;
    DistanceRows<T> key_rows, value_rows;    // (R, d_head)
    DistanceRows<T> head_rows, head_q_rows;  // (R, n_heads·d_head)
  };

  // The call's terms, clamped distances and path (no rows yet: keys_per_pass reads them).
  void plan(const AttentionGeometry& g) {
    call_ = Call{};
    if constexpr (kRelative) {
      call_.keys = key_term_active(enc_);
      call_.values = value_term_active(enc_);
      call_.head_keys = head_key_term_active(enc_);
      call_.head_queries = head_query_term_active(enc_);
      const Positions &pq = g.queries, &pk = g.keys;
      std::int64_t qmin = pq[0], qmax = qmin, kmin = pk[0], kmax = kmin;
      for (Index i = 1; i < pq.len; ++i) qmin = std::min(qmin, pq[i]), qmax = std::max(qmax, pq[i]);
      for (Index j = 1; j < pk.len; ++j) kmin = std::min(kmin, pk[j]), kmax = std::max(kmax, pk[j]);
      // clamping is monotone: the extreme δ give the extreme c
      call_.range = {static_cast<std::int64_t>(enc_.clamp_distance(kmin - qmax)),
                     static_cast<std::int64_t>(enc_.clamp_distance(kmax - qmin))};
      const Index count = call_.range.count();
      call_.dense = count <= kDenseRangeFactor * (pq.len + pk.len);
      call_.contiguous = contiguous(pq) && contiguous(pk);
      if (call_.contiguous) call_.shift = pk[0] - pq[0];
      call_.banded = call_.dense && call_.contiguous && saturating(pq, pk);
      call_.lookup = call_.dense && call_.contiguous && !call_.banded;
    } else {
      (void)g;
    }
  }

  // What the call's tiles share: the table of clamped distances, the rows, the per-head biases.
  void fetch(ConstMatrixRef<T> k, const AttentionGeometry& g, AttentionScratch<T>& s) {
    if constexpr (kRelative) {
      const Positions &pq = g.queries, &pk = g.keys;
      [[maybe_unused]] const Index count = call_.range.count();
      if (call_.lookup) {
        // clamp(δ) − lo for δ = shift − (n_q − 1) … shift + n_k − 1: one clamp_distance per
        // distance of the call instead of one per pair, head and tile (deberta's is a log)
        const Index n = pq.len + pk.len - 1;
        auto lut = grown(s.distances, n, 1);
        const std::int64_t d0 = call_.shift - (pq.len - 1);
        for (Index i = 0; i < n; ++i) {
          lut(i, 0) = static_cast<std::int32_t>(enc_.clamp_distance(d0 + i) - call_.range.lo);
        }
      }
      if (call_.dense) {
        const std::int64_t lo = call_.range.lo, hi = call_.range.hi;
        if constexpr (HasKeyTerm<Enc>) {
          if (call_.keys) call_.key_rows = checked(enc_.key_rows(lo, hi), d_head_, "key rows");
        }
        if constexpr (HasValueTerm<Enc>) {
          if (call_.values) {
            call_.value_rows = checked(enc_.value_rows(lo, hi), d_head_, "value rows");
          }
        }
        if constexpr (HasHeadKeyTerm<Enc>) {
          if (call_.head_keys) {
            call_.head_rows =
                checked(enc_.head_key_rows(lo, hi), n_heads_ * d_head_, "per-head key rows");
          }
        }
        if constexpr (HasHeadQueryTerm<Enc>) {
          if (call_.head_queries) {
            call_.head_q_rows =
                checked(enc_.head_query_rows(lo, hi), n_heads_ * d_head_, "per-head query rows");
          }
        }
        if constexpr (HasScoreBias<Enc>) {
          auto b = grown(s.bias, n_heads_, count);  // (n_heads, R)
          for (Index h = 0; h < n_heads_; ++h) enc_.score_bias(h, lo, hi, &b(h, 0));
        }
        if constexpr (HasXlBiases<Enc>) {
          // v_h · r_h(c): the same for every query, once per head and distance
          auto vr = grown(s.head_bias, n_heads_, count);  // (n_heads, R)
          const ConstMatrixMap<T> r = call_.head_rows.view();
          for (Index h = 0; h < n_heads_; ++h) {
            vr.row(h).noalias() =
                enc_.position_bias().row(h) * r.middleCols(h * d_head_, d_head_).transpose();
          }
        }
      }
      if constexpr (HasXlBiases<Enc>) {
        // u_h · k_j: the same for every query, once per head and key
        auto uk = grown(s.key_bias, n_heads_, pk.len);  // (n_heads, n_k)
        for (Index h = 0; h < n_heads_; ++h) {
          uk.row(h).noalias() =
              enc_.content_bias().row(h) * k.middleCols(h * d_head_, d_head_).transpose();
        }
      }
    } else {
      (void)k, (void)g, (void)s;
    }
  }

  // Whether the positions step by one (then δ_ij = j − i + shift for all pairs).
  static bool contiguous(const Positions& p) {
    for (Index i = 1; i < p.len; ++i) {
      if (p[i] != p[i - 1] + 1) return false;
    }
    return true;
  }
  // For contiguous positions: whether the clamp saturates at the call's range (checked, not
  // assumed: an encoding with another clamp takes the indexed path).
  bool saturating(const Positions& pq, const Positions& pk) const {
    const std::int64_t shift = pk[0] - pq[0];
    for (std::int64_t d = shift - (pq.len - 1); d <= shift + pk.len - 1; ++d) {
      if (enc_.clamp_distance(d) != std::clamp(d, call_.range.lo, call_.range.hi)) return false;
    }
    return true;
  }

  DistanceRows<T> checked(DistanceRows<T> rows, Index width, const char* what) const {
    if (rows.view().cols() != width) {
      throw Error(std::string(Enc::name) + " relative " + what + ": width expected " +
                  std::to_string(width) + ", got " + std::to_string(rows.view().cols()));
    }
    return rows;
  }

  // The rows of clamped distance c, (1, width): from the call's rows when dense, else fetched.
  DistanceRows<T> key_row(std::int64_t c) const {
    if constexpr (HasKeyTerm<Enc>) {
      return call_.dense ? one_row(call_.key_rows, c)
                         : checked(enc_.key_rows(c, c), d_head_, "key rows");
    } else {
      (void)c;
      return {};
    }
  }
  DistanceRows<T> value_row(std::int64_t c) const {
    if constexpr (HasValueTerm<Enc>) {
      return call_.dense ? one_row(call_.value_rows, c)
                         : checked(enc_.value_rows(c, c), d_head_, "value rows");
    } else {
      (void)c;
      return {};
    }
  }
  DistanceRows<T> head_row(std::int64_t c) const {
    if constexpr (HasHeadKeyTerm<Enc>) {
      return call_.dense
                 ? one_row(call_.head_rows, c)
                 : checked(enc_.head_key_rows(c, c), n_heads_ * d_head_, "per-head key rows");
    } else {
      (void)c;
      return {};
    }
  }
  DistanceRows<T> head_q_row(std::int64_t c) const {
    if constexpr (HasHeadQueryTerm<Enc>) {
      return call_.dense
                 ? one_row(call_.head_q_rows, c)
                 : checked(enc_.head_query_rows(c, c), n_heads_ * d_head_, "per-head query rows");
    } else {
      (void)c;
      return {};
    }
  }
  DistanceRows<T> one_row(const DistanceRows<T>& all, std::int64_t c) const {
    return DistanceRows<T>{all.table, all.offset + (c - call_.range.lo), c, 1};
  }

  // How one tile maps its (query, key) pairs to the columns of its distance window
  // [c_lo, c_lo + count): the gather and scatter of the three paths.
  struct TilePath {
    enum Kind { banded, indexed, sparse } kind = banded;
    std::int64_t c_lo = 0;                // the window's first clamped distance
    Index count = 1;                      // R_tile
    DistanceBands bands;                  // banded, in tile coordinates (δ = t − r + D0)
    const std::int32_t* index = nullptr;  // indexed: (rows, cols), c − c_lo
    Index rows = 0, cols = 0;

    using IndexMap = Eigen::Map<
        const Eigen::Matrix<std::int32_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;
    // s(r, t) = (s(r, t) + d(r, column of (r, t))) · scale
    template <class S, class D>
    void gather_add(S& s, const D& d, T scale = T(1)) const {
      if (kind == banded) {
        detail::gather_add(s, d, bands, scale);
      } else {
        detail::gather_add(s, d, IndexMap(index, rows, cols));
        if (scale != T(1)) s *= scale;
      }
    }
    // The column of pair (r, t) in the tile's window.
    Index column(Index r, Index t) const {
      if (kind == banded) return std::clamp<std::int64_t>(t - r, bands.lo, bands.hi) - bands.lo;
      return IndexMap(index, rows, cols)(r, t);
    }
    // s(r, t) += d(t, column of (r, t + t0) − c0) for the keys [t0, t0 + s.cols()) of the tile:
    // the gather with the roles of query and key swapped (d has one row per key of the block,
    // and the block's columns from c0)
    template <class S, class D>
    void gather_add_by_key(S&& s, const D& d, Index t0, Index c0) const {
      for (Index r = 0; r < s.rows(); ++r) {
        for (Index t = 0; t < s.cols(); ++t) s(r, t) += d(t, column(r, t0 + t) - c0);
      }
    }
    // s(r, t) += row(column of (r, t)): one row of per-distance values for every query
    template <class S, class R>
    void gather_add_row(S& s, const R& row) const {
      if (kind == banded) {
        for (Index r = 0; r < s.rows(); ++r) detail::gather_add_row(s.row(r), row, r, bands);
      } else {
        const IndexMap idx(index, rows, cols);
        for (Index r = 0; r < s.rows(); ++r) {
          for (Index t = 0; t < s.cols(); ++t) s(r, t) += row(idx(r, t));
        }
      }
    }
    // w(r, c − c_lo) = Σ_{t: c_rt = c} p(r, t)
    template <class W, class P>
    void scatter(W& w, const P& p) const {
      if (kind == banded) {
        scatter_by_distance(w, p, bands);
      } else {
        scatter_by_distance(w, p, IndexMap(index, rows, cols));
      }
    }
  };

  // One (head, query tile) task: its key tiles in order, online softmax, z rows written.
  struct Task {
    const TiledAttention& a;
    ConstMatrixRef<T> q, k, v;  // all heads
    const AttentionGeometry& g;
    AttentionScratch<T>& call;
    TileScratch<T>& s;
    Index h, i0, bq;

    // The whole call in one pass, the softmax state in the slot's scratch.
    void run(MatrixRef<T> z, Matrix<T>* weights) {
      const Index dh = a.d_head_;
      RowState st{s.acc.matrix(bq, dh), MatrixMap<T>(s.row_max.matrix(bq, 1).data(), bq, 1),
                  MatrixMap<T>(s.row_sum.matrix(bq, 1).data(), bq, 1)};
      start(st);
      attend(st);
      finish(st, z.block(i0, h * dh, bq, dh));
      if (weights != nullptr) write_weights(q.block(i0, h * dh, bq, dh), st.m, st.l, *weights);
    }

    // The task's key tiles in order into the online softmax: m_new = max(m, max_t e), the
    // accumulator and l rescaled by exp(m − m_new), p = exp(e − m_new).
    void attend(RowState& st) {
      const Index dh = a.d_head_, bk_max = a.shape_.keys, n_k = k.rows();
      MatrixRef<T>& acc = st.acc;
      MatrixMap<T>&m = st.m, &l = st.l;
      const auto qh = q.block(i0, h * dh, bq, dh);  // (bq, d_head)
      for (Index j0 = 0; j0 < n_k; j0 += bk_max) {
        const Index bk = std::min(bk_max, n_k - j0);
        if (hidden_tile(j0, bk)) {
          if (g.causal && j0 > g.causal_offset + i0 + bq - 1) break;  // the rest is above too
          continue;
        }
        auto p = s.scores.matrix(bq, bk);
        TilePath path = score(qh, j0, bk, p);
        const Index open = first_open(j0, bk);
        for (Index r = 0; r < bq; ++r) {
          auto row = p.row(r);
          // visibility is decided by the masks, not by the scores, so that a NaN score (a NaN
          // weight) reaches the output as it does in PyTorch
          if (causal_end(r, j0, bk) <= open) {  // nothing visible to this query here
            row.setZero();
            continue;
          }
          const T tile_max = row.maxCoeff();
          const T m_new = tile_max > m(r, 0) ? tile_max : m(r, 0);
          row.array() = (row.array() - m_new).exp();
          zero_hidden(row, r, j0);
          const T rescale = std::exp(m(r, 0) - m_new);  // 0 for the first visible tile
          l(r, 0) = l(r, 0) * rescale + row.sum();
          if (rescale != T(1)) acc.row(r) *= rescale;
          m(r, 0) = m_new;
        }
        matmul_nn<T>(p, v.block(j0, h * dh, bk, dh), acc, /*accumulate=*/true);
        add_value_term(p, path, acc);
      }
    }

    // α = exp(s − m) / l per tile, from the final m and l (the explicit path).
    template <class Q, class M>
    void write_weights(const Q& qh, const M& m, const M& l, Matrix<T>& w) {
      const Index bk_max = a.shape_.keys, n_k = k.rows();
      for (Index j0 = 0; j0 < n_k; j0 += bk_max) {
        const Index bk = std::min(bk_max, n_k - j0);
        auto out = w.block(a.weights_row0_ + i0, j0, bq, bk);
        if (hidden_tile(j0, bk)) {
          out.setZero();
          continue;
        }
        auto p = s.scores.matrix(bq, bk);
        score(qh, j0, bk, p);
        for (Index r = 0; r < bq; ++r) {
          if (l(r, 0) == T(0)) {
            out.row(r).setZero();
            continue;
          }
          auto row = p.row(r);
          row.array() = (row.array() - m(r, 0)).exp();
          zero_hidden(row, r, j0);
          out.row(r) = row / l(r, 0);
        }
      }
    }

    // Whether no query of the tile sees any of keys [j0, j0 + bk).
    bool hidden_tile(Index j0, Index bk) const {
      if (g.causal && j0 > g.causal_offset + i0 + bq - 1) return true;
      if (g.key_padding == nullptr) return false;
      for (Index t = 0; t < bk; ++t) {
        if (!g.key_padding[j0 + t]) return false;
      }
      return true;
    }
    // The first key of the tile that padding does not hide (the tile is not fully padded).
    Index first_open(Index j0, Index bk) const {
      if (g.key_padding == nullptr) return 0;
      Index t = 0;
      while (t < bk && g.key_padding[j0 + t]) ++t;
      return t;
    }
    // Keys of tile row r from this column on are hidden by causality.
    Index causal_end(Index r, Index j0, Index bk) const {
      if (!g.causal) return bk;
      return std::clamp<Index>(g.causal_offset + i0 + r - j0 + 1, 0, bk);
    }
    template <class Row>
    void mask(Row& row, Index r, Index j0) const {
      const Index bk = row.size(), end = causal_end(r, j0, bk);
      row.tail(bk - end).setConstant(-std::numeric_limits<T>::infinity());
      if (g.key_padding != nullptr) {
        for (Index t = 0; t < end; ++t) {
          if (g.key_padding[j0 + t]) row(t) = -std::numeric_limits<T>::infinity();
        }
      }
    }
    // exp(−inf − m) is not exactly 0 in Eigen's vectorised exp: hidden weights are set to 0.
    template <class Row>
    void zero_hidden(Row& row, Index r, Index j0) const {
      const Index bk = row.size(), end = causal_end(r, j0, bk);
      row.tail(bk - end).setZero();
      if (g.key_padding != nullptr) {
        for (Index t = 0; t < end; ++t) {
          if (g.key_padding[j0 + t]) row(t) = T(0);
        }
      }
    }

    // The tile's path: its distance window and how pairs map into it.
    TilePath path_of(Index j0, Index bk) {
      TilePath path;
      const Positions &pq = g.queries, &pk = g.keys;
      const Enc& e = a.enc_;
      if (a.call_.banded) {
        // δ = (j0 + t) − (i0 + r) + shift = t − r + D0
        const std::int64_t d0 = j0 - i0 + a.call_.shift;
        path.kind = TilePath::banded;
        path.c_lo = e.clamp_distance(d0 - (bq - 1));
        const std::int64_t c_hi = e.clamp_distance(d0 + bk - 1);
        path.count = c_hi - path.c_lo + 1;
        path.bands = {path.c_lo - d0, c_hi - d0};
        return path;
      }
      std::int64_t qmin = pq[i0], qmax = qmin, kmin = pk[j0], kmax = kmin;
      for (Index r = 1; r < bq; ++r)
        qmin = std::min(qmin, pq[i0 + r]), qmax = std::max(qmax, pq[i0 + r]);
      for (Index t = 1; t < bk; ++t)
        kmin = std::min(kmin, pk[j0 + t]), kmax = std::max(kmax, pk[j0 + t]);
      path.c_lo = e.clamp_distance(kmin - qmax);
      path.count = e.clamp_distance(kmax - qmin) - path.c_lo + 1;
      path.rows = bq;
      path.cols = bk;
      if (a.call_.dense && path.count <= kDenseRangeFactor * (bq + bk)) {
        path.kind = TilePath::indexed;
        auto index = s.index.matrix(bq, bk);
        if (a.call_.lookup) {
          // row r: the call's table from δ = j0 − (i0 + r) + shift, i.e. entry j0 − i0 − r +
          // n_q − 1, shifted to the tile's window
          const auto lut = call.distances.matrix(pq.len + pk.len - 1, 1);
          const std::int32_t off = static_cast<std::int32_t>(path.c_lo - a.call_.range.lo);
          for (Index r = 0; r < bq; ++r) {
            const Index e0 = j0 - i0 - r + pq.len - 1;
            for (Index t = 0; t < bk; ++t) index(r, t) = lut(e0 + t, 0) - off;
          }
          path.index = index.data();
          return path;
        }
        for (Index r = 0; r < bq; ++r) {
          const std::int64_t pi = pq[i0 + r];
          for (Index t = 0; t < bk; ++t) {
            index(r, t) = static_cast<std::int32_t>(e.clamp_distance(pk[j0 + t] - pi) - path.c_lo);
          }
        }
        path.index = index.data();
        return path;
      }
      path.kind = TilePath::sparse;
      s.pairs.clear();
      s.pairs.reserve(static_cast<std::size_t>(a.shape_.queries * a.shape_.keys));
      for (Index r = 0; r < bq; ++r) {
        for (Index t = 0; t < bk; ++t) {
          s.pairs.emplace_back(e.clamp_distance(pk[j0 + t] - pq[i0 + r]), r * bk + t);
        }
      }
      std::sort(s.pairs.begin(), s.pairs.end());
      return path;
    }

    // fn(c, first, last) for each run of equal distance c in the tile's sorted pairs.
    template <class F>
    void for_each_distance(F&& fn) const {
      auto it = s.pairs.begin();
      while (it != s.pairs.end()) {
        auto last = it;
        while (last != s.pairs.end() && last->first == it->first) ++last;
        fn(it->first, it, last);
        it = last;
      }
    }

    // The tile's scores e (bq, bk), hidden pairs −inf; returns its path for the value term.
    template <class Q, class P>
    TilePath score(const Q& qh, Index j0, Index bk, P& p) {
      const Index dh = a.d_head_;
      const T scale = score_scale(a.enc_, dh);           // 1/sqrt(d_head · f), f from the encoding
      matmul_nt<T>(qh, k.block(j0, h * dh, bk, dh), p);  // q · kᵀ
      TilePath path;
      bool scaled = false;
      if constexpr (kRelative) {
        path = path_of(j0, bk);
        if constexpr (HasKeyTerm<Enc>) {
          if (a.call_.keys) {
            // a banded key term without per-head terms folds the scale into its gather
            const bool fold = path.kind != TilePath::sparse && !kPerHead;
            add_key_term(qh, path, p, fold ? scale : T(1));
            scaled = fold;
          }
        }
        if constexpr (HasHeadKeyTerm<Enc>) {
          if (a.call_.head_keys) add_head_key_term(qh, path, j0, p);
        }
        if constexpr (HasHeadQueryTerm<Enc>) {
          if (a.call_.head_queries) add_head_query_term(path, j0, p);
        }
      }
      if (!scaled) p *= scale;
      if constexpr (HasScoreBias<Enc>) add_score_bias(path, p);  // after the scale (spec §3)
      for (Index r = 0; r < bq; ++r) {
        auto row = p.row(r);
        mask(row, r, j0);
      }
      return path;
    }

    // q_i · aK(c_ij): one product with the window's rows, then the path's gather.
    template <class Q, class P>
    void add_key_term(const Q& qh, const TilePath& path, P& p, T scale) {
      if (path.kind == TilePath::sparse) {
        for_each_distance([&](std::int64_t c, auto first, auto last) {
          const DistanceRows<T> rows = key_row(c);
          const auto row = rows.view().row(0);
          for (auto it = first; it != last; ++it) {
            p(it->second / p.cols(), it->second % p.cols()) +=
                qh.row(it->second / p.cols()).dot(row);
          }
        });
        return;
      }
      auto qr = s.by_distance.matrix(bq, path.count);  // (bq, R_tile)
      matmul_nt<T>(qh, window(a.call_.key_rows, path), qr);
      path.gather_add(p, qr, scale);
    }

    // q_i · r_h(c_ij), before the scale; Transformer-XL adds u_h · k_j + v_h · r_h(c_ij).
    template <class Q, class P>
    void add_head_key_term(const Q& qh, const TilePath& path, Index j0, P& p) {
      const Index dh = a.d_head_;
      if constexpr (HasXlBiases<Enc>) {
        auto uk = call.key_bias.matrix(a.n_heads_, k.rows());
        p.rowwise() += uk.row(h).segment(j0, p.cols());
      } else {
        (void)j0;
      }
      if (path.kind == TilePath::sparse) {
        for_each_distance([&](std::int64_t c, auto first, auto last) {
          const DistanceRows<T> rows = head_row(c);
          const auto r = rows.view().row(0).segment(h * dh, dh);
          T vr{};
          if constexpr (HasXlBiases<Enc>) vr = a.enc_.position_bias().row(h).dot(r);
          for (auto it = first; it != last; ++it) {
            const Index row = it->second / p.cols(), col = it->second % p.cols();
            p(row, col) += qh.row(row).dot(r) + vr;
          }
        });
        return;
      }
      auto qr = s.by_distance.matrix(bq, path.count);  // (bq, R_tile)
      matmul_nt<T>(qh, window(a.call_.head_rows, path).middleCols(h * dh, dh), qr);
      if constexpr (HasXlBiases<Enc>) {
        const Index count = a.call_.range.count();
        qr.rowwise() += call.head_bias.matrix(a.n_heads_, count)
                            .row(h)
                            .segment(path.c_lo - a.call_.range.lo, path.count);
      }
      path.gather_add(p, qr);
    }

    // k_j · s_h(c_ij), before the scale (DeBERTa's p2c): per block of kKeyBlock keys, one
    // product of the block's keys with the window's rows they use, then the gather by key.
    // Key j meets at most Bq distances of the tile's Bq + Bk − 1, so one product of all Bk keys
    // with the whole window computed (Bk · R_tile) values of which the gather read (Bk · Bq);
    // a block of keys uses only its own span of the window, at most Bq + kKeyBlock − 1 rows
    // (at len 512, d_model 512, 8 heads, float: the layer took 79 ms with whole tiles).
    template <class P>
    void add_head_query_term(const TilePath& path, Index j0, P& p) {
      const Index dh = a.d_head_, bk = p.cols();
      const auto kh = k.block(j0, h * dh, bk, dh);  // (bk, d_head)
      if (path.kind == TilePath::sparse) {
        for_each_distance([&](std::int64_t c, auto first, auto last) {
          const DistanceRows<T> rows = head_q_row(c);
          const auto r = rows.view().row(0).segment(h * dh, dh);
          for (auto it = first; it != last; ++it) {
            const Index row = it->second / bk, col = it->second % bk;
            p(row, col) += kh.row(col).dot(r);
          }
        });
        return;
      }
      const auto rows =
          window(a.call_.head_q_rows, path).middleCols(h * dh, dh);  // (R_tile, d_head)
      // monotone clamp (banded, or contiguous positions): the block's columns run from pair
      // (last query, first key) to (first query, last key); else the whole window
      const bool monotone = path.kind == TilePath::banded || a.call_.lookup;
      for (Index t0 = 0; t0 < bk; t0 += kKeyBlock) {
        const Index tb = std::min(kKeyBlock, bk - t0);
        const Index c0 = monotone ? path.column(bq - 1, t0) : 0;
        const Index c1 = monotone ? path.column(0, t0 + tb - 1) : path.count - 1;
        auto kr = s.by_distance.matrix(tb, c1 - c0 + 1);  // (tb, columns of the block)
        matmul_nt<T>(kh.middleRows(t0, tb), rows.middleRows(c0, c1 - c0 + 1), kr);
        path.gather_add_by_key(p.middleCols(t0, tb), kr, t0, c0);
      }
    }
    static constexpr Index kKeyBlock = 64;

    // b_h(c_ij), t5 / alibi.
    template <class P>
    void add_score_bias(const TilePath& path, P& p) {
      if (path.kind == TilePath::sparse) {
        for_each_distance([&](std::int64_t c, auto first, auto last) {
          T b{};
          if (a.call_.dense) {
            b = call.bias.matrix(a.n_heads_, a.call_.range.count())(h, c - a.call_.range.lo);
          } else {
            a.enc_.score_bias(h, c, c, &b);
          }
          for (auto it = first; it != last; ++it)
            p(it->second / p.cols(), it->second % p.cols()) += b;
        });
        return;
      }
      const auto all = call.bias.matrix(a.n_heads_, a.call_.range.count());
      path.gather_add_row(p, all.row(h).segment(path.c_lo - a.call_.range.lo, path.count));
    }

    // Σ_t p(r, t) aV(c_rt): the weights summed per distance, then one product with the window.
    template <class P, class Acc>
    void add_value_term(const P& p, const TilePath& path, Acc& acc) {
      if constexpr (HasValueTerm<Enc>) {
        if (!a.call_.values) return;
        if (path.kind == TilePath::sparse) {
          for_each_distance([&](std::int64_t c, auto first, auto last) {
            const DistanceRows<T> rows = value_row(c);
            const auto row = rows.view().row(0);
            for (auto it = first; it != last; ++it) {
              const T w = p(it->second / p.cols(), it->second % p.cols());
              if (w != T(0)) acc.row(it->second / p.cols()) += w * row;
            }
          });
          return;
        }
        auto w = s.by_distance.matrix(bq, path.count);  // (bq, R_tile)
        path.scatter(w, p);
        matmul_nn<T>(w, window(a.call_.value_rows, path), acc, /*accumulate=*/true);
      } else {
        (void)p, (void)path, (void)acc;
      }
    }

    // The call's rows for the tile's window [c_lo, c_lo + count).
    ConstMatrixMap<T> window(const DistanceRows<T>& rows, const TilePath& path) const {
      const ConstMatrixMap<T> all = rows.view();
      return ConstMatrixMap<T>(all.data() + (path.c_lo - a.call_.range.lo) * all.cols(), path.count,
                               all.cols());
    }
    DistanceRows<T> key_row(std::int64_t c) const { return a.key_row(c); }
    DistanceRows<T> value_row(std::int64_t c) const { return a.value_row(c); }
    DistanceRows<T> head_row(std::int64_t c) const { return a.head_row(c); }
    DistanceRows<T> head_q_row(std::int64_t c) const { return a.head_q_row(c); }
  };

  const Enc& enc_;
  Index n_heads_, d_head_;
  TileShape shape_;
  Call call_;
  Index weights_row0_ = 0;  // the row of the weights matrices that query 0 of the call writes
};

}  // namespace relpos::detail
