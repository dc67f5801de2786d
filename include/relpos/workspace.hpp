// SPDX-License-Identifier: MIT
// Reusable scratch memory of a forward pass: per-sequence buffers (projections, attention's
// tiles) and per-slot copies of them, growing only when a larger shape
// comes, so a warm forward with the same shapes does not allocate.
//
// What "does not allocate" covers (tests/attention_test.cpp counts operator new and every
// Eigen heap allocation): relpos' own buffers, the thread pool and the relative tables of
// a cached encoding, and Eigen's GEMM packing blocks (on the stack up to Eigen's 128 KiB limit,
// beyond it in buffers kept per thread by detail/gemm.hpp: a thread allocates them once, at
// its first product of the largest shape). Not covered: an encoding whose cache must grow
// for a larger length.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include <relpos/core.hpp>
#include <relpos/detail/buffer.hpp>
#include <relpos/detail/thread_pool.hpp>

namespace relpos {

/// Scratch of one tile task of attention (detail/tiled_attention.hpp), one per slot of the
/// (head, query tile) parallel loop. Its sizes follow the tile shape (Bq, Bk), never the
/// length: the by-distance window of a tile spans at most Bq + Bk − 1 distances for contiguous
/// positions, kDenseRangeFactor · (Bq + Bk) with explicit ids.
template <Scalar T>
struct TileScratch {
  detail::Buffer<T> scores;            // (Bq, Bk): scores, then unnormalised weights
  detail::Buffer<T> by_distance;       // (Bq or Bk, R_tile): q·a(c)ᵀ or k·s(c)ᵀ, weights by c
  detail::Buffer<T> acc;               // (Bq, d_head): Σ_j weight · (v_j + aV), unnormalised
  detail::Buffer<T> row_max, row_sum;  // (Bq): the online softmax's m and l
  detail::Buffer<std::int32_t> index;  // (Bq, Bk): c_ij − c_lo of the tile (explicit ids)
  std::vector<std::pair<std::int64_t, std::int64_t>> pairs;  // (c_ij, r·Bk + t), sparse tile
};

/// Scratch of one attention call: per-head values over the call's R clamped distances or its
/// keys, O(n_heads · (len + R)), and the tile slots.
template <Scalar T>
struct AttentionScratch {
  detail::Buffer<T> bias;       // (n_heads, R): b_h(c), t5 / alibi
  detail::Buffer<T> head_bias;  // (n_heads, R): v_h · r_h(c), xl
  detail::Buffer<T> key_bias;   // (n_heads, len_k): u_h · k_j, xl
  // (len_q + len_k − 1): clamp(δ) − lo for each δ of contiguous positions whose clamp does not
  // saturate (deberta's log buckets), so that a tile's index needs no clamp_distance per pair
  detail::Buffer<std::int32_t> distances;
  // (n_heads, len_q): the online softmax's m and l of every query, kept between passes when a
  // call takes its keys in chunks (TiledAttention's row_scalars)
  detail::Buffer<T> row_max, row_sum;
  std::vector<TileScratch<T>> tiles;
};

/// Scratch of one sequence (one (len, d_model) item) through attention, feed-forward and a
/// block. Use one at a time: it is not shared between concurrent forward passes.
template <Scalar T>
struct SequenceWorkspace {
  // attention holds only k | v at full length; queries go a block of rows at a time
  // (MultiHeadAttention::kQueryRows) and the out-projection adds into the block's output rows
  detail::Buffer<T> kv;           // (len, 2 d_model): k | v, heads side by side
  detail::Buffer<T> q;            // (min(len, 1024), d_model): one block's queries
  detail::Buffer<T> z;            // (min(len, 1024), d_model): one block's heads' outputs
  detail::Buffer<T> normed;       // (min(len, 1024), d_model): a pre-norm block's normed rows
  detail::Buffer<T> hidden;       // (min(len, 512), d_ff): feed-forward hidden layer
  detail::Buffer<T> gate;         // (min(len, 512), 256): a gated feed-forward's linear3 x
  AttentionScratch<T> attention;  // attention's tiles and per-call rows
  // For inspection (pictures, debugging), off by default: when set, every attention forward
  // run with this workspace appends its weights α, [layer][head] → (len, len). It allocates.
  std::vector<std::vector<Matrix<T>>>* attention_record = nullptr;
};

/// Scratch of a batched forward pass: one SequenceWorkspace per slot of the items' parallel
/// loop (detail/thread_pool.hpp: item b always gets slot b mod min(batch, threads)). Keep one per
/// model (or per concurrent caller) and pass it to every forward to avoid allocating.
template <Scalar T>
struct Workspace {
  std::vector<SequenceWorkspace<T>> items;

  SequenceWorkspace<T>& item(int slot) {
    RELPOS_ASSERT(slot >= 0 && static_cast<std::size_t>(slot) < items.size(),
                  "Workspace::item: slot beyond ensure_slots()");
    return items[static_cast<std::size_t>(slot)];
  }
  void ensure_slots(int n) {
    if (items.size() < static_cast<std::size_t>(n)) items.resize(static_cast<std::size_t>(n));
  }

  /// fn(b, SequenceWorkspace&) for each item b < batch, items in parallel, each with the
  /// slot's scratch: the batch loop of every layer's forward.
  template <class F>
  void for_each_item(Index batch, F&& fn) {
    ensure_slots(detail::slots_needed());
    detail::parallel_for(batch, [&](Index b, int slot) { fn(b, item(slot)); });
  }
};

}  // namespace relpos
