// SPDX-License-Identifier: MIT
// Reusable scratch memory of a backward pass (attention_grad.hpp, block_grad.hpp,
// encoder_grad.hpp), as workspace.hpp is the forward's: every temporary a backward call needs
// lives here and keeps its size between calls, so a second backward of the same shapes does not
// allocate (Eigen's resize() and assignment keep the storage when the size is unchanged).
//
// Attention's backward runs its heads in parallel (detail/thread_pool.hpp) when it is not
// itself inside a parallel loop (a batch of fewer items than threads, down to one). Each task
// (one head) uses the scratch of its slot for its temporaries and writes only its own columns
// of ∂L/∂(q | k | v) and of the per-head gradients; what several heads add into (a learned
// table's rows, shared by the layer's heads) goes through per-head partial sums that are added
// in head order after the loop, so the result is the same bits for any thread count.
#pragma once

#include <cstdint>
#include <vector>

#include <relpos/core.hpp>

namespace relpos {

namespace detail {

using BackwardIndexMatrix =
    Eigen::Matrix<std::int32_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// The temporaries of one task of attention backward's heads loop (one per slot: a slot is
/// owned by one thread at a time).
template <Scalar T>
struct HeadBackwardSlot {
  Matrix<T> p, dp;            // (rows, len): α and ∂L/∂α of a block of query rows
  Matrix<T> by_distance;      // (rows, R): a block's sums per clamped distance
  Matrix<T> by_key;           // (kKeyBlock, R): deberta's p2c sums, by key
  BackwardIndexMatrix index;  // (rows, len): c_ij − lo of a block (positions not banded)
  std::vector<T> bias;        // (R): t5 / alibi / kerple b_h(c) of the task's head
  Vector<T> sums, vr, uk;     // xl: S_h(c) (R), v_h·r_h(c) (R), u_h·k_j (len)
  RowVector<T> column_sums;   // xl (len): Σ_i ∂L/∂s_ij of a block
};

/// Scratch of the encodings' backward hooks, which run once per call after the heads loop
/// (xl's head_key_rows_backward, deberta's head_rows_backward).
template <Scalar T>
struct EncodingBackwardScratch {
  Matrix<T> a, b;  // xl: the sinusoids (R, d_model); deberta: ∂L/∂Rn, ∂L/∂P (2S, d)
  Eigen::RowVectorXd w, x, g, dx;  // deberta (d_model): rel_norm's weight, a row's x̂, g, ∂L/∂R
};

}  // namespace detail

/// Scratch of one attention backward call (one sequence).
template <Scalar T>
struct AttentionBackwardScratch {
  Matrix<T> dz;    // (len, d_model): ∂L/∂z, the heads' outputs
  Matrix<T> dqkv;  // (len, 3·d_model): ∂L/∂(q | k | v), each head its own columns
  std::vector<detail::HeadBackwardSlot<T>> slots;
  // Per-head partial sums, added in head order after the loop (bit-identical for any thread
  // count): learned's ∂L/∂aK, ∂L/∂aV per distance, [n_heads] of (R, d_head), and the score
  // biases' ∂L/∂b_h(c), (n_heads, R).
  std::vector<Matrix<T>> head_grad_key, head_grad_value;
  Matrix<T> dbias;
  // Per-head rows' gradients, (R, n_heads·d_head), each head its own columns (xl: ∂L/∂r(c);
  // deberta: c2p and p2c), and xl's ∂L/∂u, ∂L/∂v, (n_heads, d_head), each head its own row.
  Matrix<T> grad_rows, grad_query_rows;
  Matrix<T> du, dv;
  std::vector<std::int32_t> lut;  // deberta, contiguous positions: c − lo per δ
  detail::EncodingBackwardScratch<T> encoding;

  void ensure_slots(int n) {
    if (slots.size() < static_cast<std::size_t>(n)) slots.resize(static_cast<std::size_t>(n));
  }
};

/// Scratch of one sequence's backward through a block (or a stack of them: layers run one
/// after another, so they share it). Keep one per concurrent backward (training.hpp keeps one
/// per slot of its batch loop) and pass it to every backward to avoid allocating.
template <Scalar T>
struct BackwardWorkspace {
  Matrix<T> branch;  // (len, d_model): ∂L/∂ of a block's branch input
  AttentionBackwardScratch<T> attention;
};

}  // namespace relpos
