// SPDX-License-Identifier: MIT
// Converting a rotary checkpoint between the two pairings of spec §4 `rotary`: the half layout
// (GPT-NeoX / LLaMA, x[m] with x[m + r/2]) and the interleaved one (GPT-J / RoFormer, x[2m]
// with x[2m + 1]), by permuting the q and k rows of in_proj per head over the rotary dims.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <relpos/core.hpp>
#include <relpos/detail/shape_checks.hpp>

namespace relpos {

/// Which components rotary pairs (spec §4): the `interleaved` flag of RotaryConfig as a name.
enum class RotaryLayout {
  half,        // interleaved = false: pair m is (x[m], x[m + r/2])
  interleaved  // interleaved = true: pair m is (x[2m], x[2m + 1])
};

inline RotaryLayout rotary_layout(bool interleaved) {
  return interleaved ? RotaryLayout::interleaved : RotaryLayout::half;
}

/// Why this works: q_i·k_j is unchanged when the same permutation is applied to the
/// components of q and k, and the rotation of pair m by θ_m does not depend on where the pair
/// sits. Moving the two components of pair m from their `from` slots to their `to` slots in
/// every head's q and k rows (v untouched, components >= r untouched) therefore gives a model
/// that, run with the `to` pairing, computes exactly what the original did with `from`.
///
/// The row permutation of in_proj (3·d_model rows: q, k, v): row r of the converted tensor is
/// row perm[r] of the original. Throws Error naming the size on a bad d_model / n_heads /
/// rotary_dim (absent = d_head, as in RotaryConfig).
inline std::vector<Index> rotary_layout_permutation(Index d_model, Index n_heads,
                                                    std::optional<Index> rotary_dim,
                                                    RotaryLayout from, RotaryLayout to) {
  detail::check_head_split("rotary layout", d_model, n_heads);
  const Index d_head = d_model / n_heads;
  const Index r = rotary_dim.value_or(d_head);
  if (r < 2 || r > d_head || r % 2 != 0) {
    throw Error(
        "rotary layout: rotary_dim: expected even and in [2, d_head = " + std::to_string(d_head) +
        "], got " + std::to_string(r) + (rotary_dim ? "" : " (the default, d_head)"));
  }
  std::vector<Index> perm(static_cast<std::size_t>(3 * d_model));
  for (Index row = 0; row < 3 * d_model; ++row) perm[static_cast<std::size_t>(row)] = row;
  if (from == to) return perm;
  const Index half = r / 2;
  // slot of component `which` (0 = first, 1 = second) of pair m in a layout
  const auto slot = [half](RotaryLayout layout, Index m, Index which) {
    return layout == RotaryLayout::half ? m + which * half : 2 * m + which;
  };
  for (Index block = 0; block < 2 * n_heads; ++block) {  // q heads, then k heads
    const Index base = block * d_head;
    for (Index m = 0; m < half; ++m) {
      for (Index which = 0; which < 2; ++which) {
        perm[static_cast<std::size_t>(base + slot(to, m, which))] = base + slot(from, m, which);
      }
    }
  }
  return perm;
}

/// Permutes the rows of in_proj_weight (3·d_model, d_model) and in_proj_bias (3·d_model) in
/// place, from one rotary layout to the other (see rotary_layout_permutation). Converting
/// there and back is the identity, bit for bit.
template <Scalar T>
void convert_rotary_layout(Matrix<T>& in_proj_weight, Vector<T>& in_proj_bias, Index n_heads,
                           std::optional<Index> rotary_dim, RotaryLayout from, RotaryLayout to) {
  const Index d = in_proj_weight.cols();
  if (in_proj_weight.rows() != 3 * d || in_proj_bias.size() != 3 * d) {
    throw Error(
        "rotary layout: in_proj_weight / in_proj_bias: expected [3*d_model, d_model] / "
        "[3*d_model], got [" +
        std::to_string(in_proj_weight.rows()) + ", " + std::to_string(d) + "] / [" +
        std::to_string(in_proj_bias.size()) + "]");
  }
  const std::vector<Index> perm = rotary_layout_permutation(d, n_heads, rotary_dim, from, to);
  const Matrix<T> w = in_proj_weight;
  const Vector<T> b = in_proj_bias;
  for (Index row = 0; row < 3 * d; ++row) {
    in_proj_weight.row(row) = w.row(perm[static_cast<std::size_t>(row)]);
    in_proj_bias(row) = b(perm[static_cast<std::size_t>(row)]);
  }
}

/// The same on a tensor's raw bytes, whatever its dtype: `rows` rows of `row_bytes` bytes
/// each (in_proj_weight: 3·d_model rows of d_model elements; in_proj_bias: rows of one).
inline std::vector<unsigned char> permute_rows(const unsigned char* data, std::size_t row_bytes,
                                               const std::vector<Index>& perm) {
  std::vector<unsigned char> out(perm.size() * row_bytes);
  for (std::size_t row = 0; row < perm.size(); ++row) {
    const unsigned char* src = data + static_cast<std::size_t>(perm[row]) * row_bytes;
    std::copy(src, src + row_bytes, out.data() + row * row_bytes);
  }
  return out;
}

}  // namespace relpos
