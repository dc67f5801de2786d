// SPDX-License-Identifier: MIT
// The backward of the embedding stage of Encoder::forward_ids (spec §1 and §7):
// x_i = embed[id_i] (+ pos_embed[p_i + offset]) (+ type_embed[t_i]), then embed_norm. Each
// lookup's backward is a scatter-add of the token's gradient into the row it read, so a row read
// n times gets n gradients added (pos_embed's row p + offset the sum over the tokens at position
// p) and a row never read gets zero; embed_norm is a LayerNorm (layer_norm_grad.hpp).
#pragma once

#include <cstdint>
#include <string>

#include <relpos/core.hpp>
#include <relpos/detail/linear_grad.hpp>
#include <relpos/detail/shape_checks.hpp>
#include <relpos/encoder.hpp>
#include <relpos/layer_norm_grad.hpp>

namespace relpos {

/// ∂L/∂ of the embedding stage's tables, named as in the model file. The lookups keep nothing
/// but the ids themselves; embed_norm keeps its LayerNormSaved (EmbeddingSaved).
template <Scalar T>
struct EmbeddingGrad {
  Matrix<T> weight;             // (vocab_size, d_model): embed.weight
  Matrix<T> pos_embed;          // (P, d_model): pos_embed.weight, with pos_embed_offset
  Matrix<T> type_embed;         // (type_vocab_size, d_model): type_embed.weight
  LayerNormGrad<T> embed_norm;  // embed_norm.weight, embed_norm.bias, with embed_norm

  /// f(name, gradient): "embed.weight", and "pos_embed.weight", "type_embed.weight",
  /// "embed_norm.weight", "embed_norm.bias" when the model has them (backward filled them).
  template <class F>
  void for_each(F&& f) {
    f(std::string("embed.weight"), weight);
    if (pos_embed.size() > 0) f(std::string("pos_embed.weight"), pos_embed);
    if (type_embed.size() > 0) f(std::string("type_embed.weight"), type_embed);
    if (embed_norm.weight.size() > 0) embed_norm.for_each("embed_norm", f);
  }
};

/// What the embedding stage keeps for its backward, per sequence: embed_norm's x̂ and 1/σ,
/// len·(d_model + 1) scalars (nothing without embed_norm).
template <Scalar T>
struct EmbeddingSaved {
  LayerNormSaved<T> embed_norm;
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

namespace detail {

// Item b of ids (and of token_types, when given) against the encoder's tables, and the rows of
// pos_embed its positions read, as Encoder::forward_ids checks them: an Error naming the first
// one out of range, before anything is computed or added.
template <Scalar T, Encoding Enc>
void check_embedding_item(const Encoder<T, Enc>& encoder, const TokenIds& ids, Index b,
                          const SequenceInputs& in, const TokenIds* token_types, Index rows,
                          Index cols, const char* what) {
  const EncoderConfig& c = encoder.config;
  if (c.vocab_size < 1) throw Error("input_ids: this model has no vocabulary (vocab_size)");
  const Index len = ids.cols();
  if (b < 0 || b >= ids.rows()) {
    throw Error(std::string(what) + ": item " + std::to_string(b) + ": expected 0 <= b < batch " +
                std::to_string(ids.rows()));
  }
  if (rows != len || cols != c.d_model || in.positions.len != len) {
    throw Error(std::string(what) + ": expected (len = " + std::to_string(len) +
                ", d_model = " + std::to_string(c.d_model) + ") and len positions, got " +
                shape_string(rows, cols) + " and " + std::to_string(in.positions.len));
  }
  if (token_types != nullptr) {
    if (c.type_vocab_size < 1)
      throw Error("token_type_ids: this model has no token types (type_vocab_size)");
    if (token_types->rows() != ids.rows() || token_types->cols() != len) {
      throw Error("token_type_ids: expected " + shape_string(ids.rows(), len) + ", got " +
                  shape_string(token_types->rows(), token_types->cols()));
    }
  }
  for (Index i = 0; i < len; ++i) {
    if (ids(b, i) < 0 || ids(b, i) >= c.vocab_size) {
      throw Error("input_ids" + shape_string(b, i) + ": expected 0 <= id < vocab_size " +
                  std::to_string(c.vocab_size) + ", got " + std::to_string(ids(b, i)));
    }
    if (token_types != nullptr) {
      const std::int64_t t = (*token_types)(b, i);
      if (t < 0 || t >= c.type_vocab_size) {
        throw Error("token_type_ids" + shape_string(b, i) + ": expected 0 <= type < " +
                    "type_vocab_size " + std::to_string(c.type_vocab_size) + ", got " +
                    std::to_string(t));
      }
    }
    if (c.pos_embed_offset) {
      const std::int64_t p = in.positions[i], offset = *c.pos_embed_offset;
      if (p < 0 || p > c.pos_embed_rows - 1 - offset) {
        throw Error("position " + std::to_string(p) + " at " + shape_string(b, i) + ": row " +
                    std::to_string(p) + " + pos_embed_offset " + std::to_string(offset) +
                    " is outside the rows [0, " + std::to_string(c.pos_embed_rows - 1) +
                    "] of pos_embed.weight");
      }
    }
  }
}

}  // namespace detail

/// h (len, d_model) = the embedding stage of item b of ids ([batch, len]) as
/// Encoder::forward_ids computes it (the same operations, so the same bits): embed.weight rows,
/// + pos_embed.weight row p_i + offset (p_i from in.positions), + type_embed.weight row t_i
/// (token_types [batch, len]; null: all 0), then embed_norm, keeping embed_norm's state in
/// `saved`. The position type's input encoding and the layers follow (forward_saving of the
/// encoder). An id, type or position row out of range throws Error naming it.
template <Scalar T, Encoding Enc>
void embedding_forward_saving(const Encoder<T, Enc>& encoder, const TokenIds& ids, Index b,
                              const SequenceInputs& in, const TokenIds* token_types,
                              detail::OutRef<T> h, EmbeddingSaved<T>& saved) {
  encoder.validate();
  detail::check_embedding_item(encoder, ids, b, in, token_types, h.rows(), h.cols(),
                               "embedding forward_saving");
  const EncoderConfig& c = encoder.config;
  for (Index i = 0; i < h.rows(); ++i) {
    h.row(i) = encoder.embedding.row(ids(b, i));
    if (c.pos_embed_offset)
      h.row(i) += encoder.pos_embed.row(in.positions[i] + *c.pos_embed_offset);
    if (c.type_vocab_size > 0)
      h.row(i) += encoder.type_embed.row(token_types != nullptr ? (*token_types)(b, i) : 0);
  }
  if (encoder.embed_norm) forward_saving(*encoder.embed_norm, h, h, saved.embed_norm);
}

/// d (len, d_model): ∂L/∂(the stage's output) on entry (the encoder backward's ∂L/∂input),
/// ∂L/∂(the summed rows before embed_norm) on exit. Adds into grad (empty tables start at
/// zero): embed.weight's row id_i, pos_embed.weight's row p_i + offset and type_embed.weight's
/// row t_i each get token i's gradient, embed_norm its weight and bias gradients. The arguments
/// must be the forward's.
template <Scalar T, Encoding Enc>
void embedding_backward(const Encoder<T, Enc>& encoder, const EmbeddingSaved<T>& saved,
                        const TokenIds& ids, Index b, const SequenceInputs& in,
                        const TokenIds* token_types, detail::OutRef<T> d, EmbeddingGrad<T>& grad) {
  detail::check_embedding_item(encoder, ids, b, in, token_types, d.rows(), d.cols(),
                               "embedding backward");
  const EncoderConfig& c = encoder.config;
  const Index dm = c.d_model;
  detail::prepare_grad<T>(grad.weight, c.vocab_size, dm, "embed", ".weight");
  if (c.pos_embed_offset)
    detail::prepare_grad<T>(grad.pos_embed, c.pos_embed_rows, dm, "pos_embed", ".weight");
  if (c.type_vocab_size > 0)
    detail::prepare_grad<T>(grad.type_embed, c.type_vocab_size, dm, "type_embed", ".weight");
  // x̃ = embed_norm(x): ∂L/∂x from ∂L/∂x̃, in place
  if (encoder.embed_norm) backward(*encoder.embed_norm, saved.embed_norm, d, d, grad.embed_norm);
  // x_i = E[id_i] + P[p_i + offset] + Y[t_i]: each table's row gets ∂L/∂x_i
  for (Index i = 0; i < d.rows(); ++i) {
    grad.weight.row(ids(b, i)) += d.row(i);
    if (c.pos_embed_offset) grad.pos_embed.row(in.positions[i] + *c.pos_embed_offset) += d.row(i);
    if (c.type_vocab_size > 0)
      grad.type_embed.row(token_types != nullptr ? (*token_types)(b, i) : 0) += d.row(i);
  }
}

}  // namespace relpos
