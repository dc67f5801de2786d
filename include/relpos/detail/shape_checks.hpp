// SPDX-License-Identifier: MIT
// Checks of the sizes and weight shapes a caller gives the modules in code (the public
// fields the README tells users to fill): each failure throws relpos::Error naming the field,
// the expected and the actual shape. They run at construction and at every forward, in O(1):
// a weight of the wrong shape would otherwise be read out of bounds by the products.
#pragma once

#include <string>
#include <string_view>

#include <relpos/core.hpp>

namespace relpos::detail {

/// "[rows, cols]", also an element's "[b, i]". Appended piece by piece: "[" + std::to_string(…)
/// trips GCC 12's -Wrestrict at -O3.
inline std::string shape_string(Index rows, Index cols) {
  std::string s = "[";
  s += std::to_string(rows);
  s += ", ";
  s += std::to_string(cols);
  s += "]";
  return s;
}

/// "attention: d_model (32) must be a positive multiple of n_heads (3)": the one rule by which
/// a width splits into heads (d_head = d_model / n_heads), for every module built in code.
/// (config.json states the same rule in its own key-path form, io/config.hpp.)
inline void check_head_split(std::string_view owner, Index d_model, Index n_heads) {
  if (d_model < 1 || n_heads < 1 || d_model % n_heads != 0) {
    throw Error(std::string(owner) + ": d_model (" + std::to_string(d_model) +
                ") must be a positive multiple of n_heads (" + std::to_string(n_heads) + ")");
  }
}

/// "d_ff: expected >= 1, got -1", prefixed by `owner` (e.g. "FeedForward: ").
inline void check_positive(std::string_view owner, std::string_view key, Index value) {
  if (value < 1) {
    throw Error(std::string(owner) + std::string(key) + ": expected >= 1, got " +
                std::to_string(value));
  }
}

/// "in_proj_weight: expected [96, 32] (3·d_model, d_model), got [96, 31]".
template <class M>
void check_matrix(std::string_view field, const M& m, Index rows, Index cols,
                  std::string_view meaning) {
  if (m.rows() != rows || m.cols() != cols) {
    throw Error(std::string(field) + ": expected " + shape_string(rows, cols) + " (" +
                std::string(meaning) + "), got " + shape_string(m.rows(), m.cols()));
  }
}

/// "linear1_bias: expected [64] (d_ff), got [63]".
template <class V>
void check_vector(std::string_view field, const V& v, Index size, std::string_view meaning) {
  if (v.size() != size) {
    throw Error(std::string(field) + ": expected [" + std::to_string(size) + "] (" +
                std::string(meaning) + "), got [" + std::to_string(v.size()) + "]");
  }
}

/// "block: input width (last dimension) expected 512, got 256": the d_model of a batch.
inline void check_batch_width(const char* what, Index got, Index want) {
  if (got != want) {
    throw Error(std::string(what) + ": input width (last dimension) expected " +
                std::to_string(want) + ", got " + std::to_string(got));
  }
}

/// Gives `out` the shape (b, l, d), reallocating only when it differs: a caller's output
/// tensor reused across calls costs no allocation.
template <class T>
void resize_like(Tensor3<T>& out, Index b, Index l, Index d) {
  if (out.dimension(0) != b || out.dimension(1) != l || out.dimension(2) != d) out.resize(b, l, d);
}

/// Runs check(); an Error it throws is thrown again with `prefix` in front of its message,
/// so a field deep in a stack is named by its path ("layers.1.self_attn.in_proj_weight").
/// Costs nothing when nothing is wrong.
template <class F>
void with_prefix(std::string_view prefix, F&& check) {
  try {
    check();
  } catch (const Error& e) {
    throw Error(std::string(prefix) + e.what());
  }
}

}  // namespace relpos::detail
