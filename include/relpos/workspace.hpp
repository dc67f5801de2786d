// SPDX-License-Identifier: MIT
// Reusable scratch memory of a forward pass: per-sequence buffers (projections, scores, the
// relative-distance index) and per-slot copies of them, growing only when a larger shape
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

/// Scratch of one attention head of one sequence (one per slot of the heads' parallel loop).
template <Scalar T>
struct HeadScratch {
  detail::Buffer<T> scores;       // (len, len): scores, then weights α in place
  detail::Buffer<T> by_distance;  // (len, R): q · aK(c)ᵀ, then weights summed by distance
};

/// Scratch of one sequence (one (len, d_model) item) through attention, feed-forward and a
/// block. Use one at a time: it is not shared between concurrent forward passes.
template <Scalar T>
struct SequenceWorkspace {
  detail::Buffer<T> qkv;       // (len, 3 d_model): q | k | v, heads side by side
  detail::Buffer<T> z;         // (len, d_model): heads' outputs, concatenated
  detail::Buffer<T> residual;  // (len, d_model): a block's branch output
  detail::Buffer<T> normed;    // (len, d_model): a pre-norm block's normalised input
  detail::Buffer<T> hidden;    // (len, d_ff): feed-forward hidden layer
  detail::Buffer<std::int32_t> distance_index;  // (len, len): clamp(δ_ij) − lo
  // (clamped δ, i·len + j) pairs sorted by δ, for sparse explicit positions (attention.hpp)
  std::vector<std::pair<std::int64_t, std::int64_t>> sparse_pairs;
  std::vector<HeadScratch<T>> heads;  // one per slot of the heads' parallel loop
  // For inspection (pictures, debugging), off by default: when set, every attention forward
  // run with this workspace appends its weights α, [layer][head] → (len, len). It allocates.
  std::vector<std::vector<Matrix<T>>>* attention_record = nullptr;

  /// The head scratch of a parallel loop's `slot`; ensure_slots() must have made room.
  HeadScratch<T>& head(int slot) {
    RELPOS_ASSERT(slot >= 0 && static_cast<std::size_t>(slot) < heads.size(),
                  "SequenceWorkspace::head: slot beyond ensure_slots()");
    return heads[static_cast<std::size_t>(slot)];
  }
  void ensure_slots(int n) {
    if (heads.size() < static_cast<std::size_t>(n)) heads.resize(static_cast<std::size_t>(n));
  }
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
};

namespace detail {

/// fn(b, SequenceWorkspace&) for each item b of a batch, items in parallel.
template <Scalar T, class F>
void for_each_item(Index batch, Workspace<T>& ws, F&& fn) {
  ws.ensure_slots(slots_needed());
  parallel_for(batch, [&](Index b, int slot) { fn(b, ws.item(slot)); });
}

}  // namespace detail
}  // namespace relpos
