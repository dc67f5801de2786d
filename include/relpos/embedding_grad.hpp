// SPDX-License-Identifier: MIT
// The backward of the token embedding (the lookup out_i = embed.weight[id_i] of
// Encoder::forward_ids, spec §1): a scatter-add of each token's output gradient into the row of
// its id, so a token id used n times gets n rows added and an unused one gets zero.
#pragma once

#include <cstdint>
#include <string>

#include <relpos/core.hpp>
#include <relpos/detail/linear_grad.hpp>
#include <relpos/detail/shape_checks.hpp>

namespace relpos {

/// ∂L/∂embed.weight (vocab_size, d_model). The lookup keeps nothing but the ids themselves.
template <Scalar T>
struct EmbeddingGrad {
  Matrix<T> weight;  // (vocab_size, d_model)

  /// f(name, gradient): "embed.weight".
  template <class F>
  void for_each(F&& f) {
    f(std::string("embed.weight"), weight);
  }
};

/// ids: [batch, len], the forward's input; dout: [batch, len, d_model] = ∂L/∂(the looked-up
/// rows). Adds into grad.weight (vocab_size, d_model; empty: starts at zero). An id outside
/// [0, vocab_size) throws Error naming its position before anything is added.
template <Scalar T>
void embedding_backward(const TokenIds& ids, const Tensor3<T>& dout, Index vocab_size,
                        EmbeddingGrad<T>& grad) {
  const Index batch = ids.rows(), len = ids.cols(), d = dout.dimension(2);
  if (dout.dimension(0) != batch || dout.dimension(1) != len) {
    throw Error("embedding backward: output gradient expected [" + std::to_string(batch) + ", " +
                std::to_string(len) + ", d_model] (the ids' shape), got [" +
                std::to_string(dout.dimension(0)) + ", " + std::to_string(dout.dimension(1)) +
                ", " + std::to_string(d) + "]");
  }
  detail::check_positive("embedding backward: ", "vocab_size", vocab_size);
  for (Index b = 0; b < batch; ++b) {
    for (Index i = 0; i < len; ++i) {
      if (ids(b, i) < 0 || ids(b, i) >= vocab_size) {
        throw Error("input_ids" + detail::shape_string(b, i) + ": expected 0 <= id < vocab_size " +
                    std::to_string(vocab_size) + ", got " + std::to_string(ids(b, i)));
      }
    }
  }
  detail::prepare_grad<T>(grad.weight, vocab_size, d, "embed", ".weight");
  for (Index b = 0; b < batch; ++b) {
    const auto g = item(dout, b);  // (len, d_model)
    // ∂L/∂E[id] += ∂L/∂out_i for every token i with that id
    for (Index i = 0; i < len; ++i) grad.weight.row(ids(b, i)) += g.row(i);
  }
}

}  // namespace relpos
