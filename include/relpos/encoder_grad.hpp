// SPDX-License-Identifier: MIT
// The backward of the encoder stack (encoder.hpp, spec §1–2) for one sequence: the input
// encoding (absolute, additive), the blocks in sequence, the final norm, and the tables the
// layers share (t5's relative_attention_bias, xl's u and v, kerple's r1 and r2, deberta's
// rel_embeddings and rel_norm), whose gradients are summed here where they are owned. The
// embedding and the output head, outside the stack, have their own (embedding_grad.hpp,
// output_head_grad.hpp).
#pragma once

#include <string>
#include <vector>

#include <relpos/backward_workspace.hpp>
#include <relpos/block_grad.hpp>
#include <relpos/core.hpp>
#include <relpos/encoder.hpp>
#include <relpos/norm_grad.hpp>
#include <relpos/workspace.hpp>

namespace relpos {

/// What the stack's forward keeps for its backward, per sequence: each block's BlockSaved and
/// the final norm's.
template <Scalar T>
struct EncoderSaved {
  std::vector<BlockSaved<T>> layers;
  LayerNormSaved<T> norm;  // used when the encoder has a final norm
};

/// ∂L/∂ of the stack's tensors under the model file's names. backward() adds into them.
template <Scalar T>
struct EncoderGrad {
  std::vector<BlockGrad<T>> layers;   // "layers.{n}."
  LayerNormGrad<T> norm;              // "norm.weight", "norm.bias" (with a final norm)
  Matrix<T> position_weight;          // "position.weight" (additive, learned source)
  Matrix<T> relative_attention_bias;  // "position.relative_attention_bias" (t5): the layers' sum
  Matrix<T> rel_embeddings;           // "position.rel_embeddings" (deberta): the layers' sum
  Vector<T> rel_norm_weight;          // "position.rel_norm.weight" (deberta, rel_norm)
  Vector<T> rel_norm_bias;            // "position.rel_norm.bias"
  Matrix<T> r_w_bias, r_r_bias;       // "position.r_w_bias", "position.r_r_bias" (xl: u, v)
  Vector<T> kerple_r1, kerple_r2;     // "position.kerple_r1", "position.kerple_r2" (kerple)

  /// f(name, gradient) for each tensor backward has filled: every layer's, the final norm's
  /// when there is one, position.weight when the model has it.
  template <class F>
  void for_each(F&& f) {
    for (std::size_t n = 0; n < layers.size(); ++n) {
      layers[n].for_each("layers." + std::to_string(n) + ".", f);
    }
    if (norm.weight.size() > 0) norm.for_each("norm", f);
    if (position_weight.size() > 0) f(std::string("position.weight"), position_weight);
    if (relative_attention_bias.size() > 0) {
      f(std::string("position.relative_attention_bias"), relative_attention_bias);
    }
    if (rel_embeddings.size() > 0) f(std::string("position.rel_embeddings"), rel_embeddings);
    if (rel_norm_weight.size() > 0) f(std::string("position.rel_norm.weight"), rel_norm_weight);
    if (rel_norm_bias.size() > 0) f(std::string("position.rel_norm.bias"), rel_norm_bias);
    if (r_w_bias.size() > 0) f(std::string("position.r_w_bias"), r_w_bias);
    if (r_r_bias.size() > 0) f(std::string("position.r_r_bias"), r_r_bias);
    if (kerple_r1.size() > 0) f(std::string("position.kerple_r1"), kerple_r1);
    if (kerple_r2.size() > 0) f(std::string("position.kerple_r2"), kerple_r2);
  }
};

namespace detail {
/// A shared tensor's gradient: total += layer's, then the layer's is zeroed (it is not one of
/// the layer's own tensors).
template <class M>
void add_shared_grad(M& layer, M& total) {
  if (layer.size() == 0) return;
  if (total.size() == 0) total = M::Zero(layer.rows(), layer.cols());
  total += layer;
  layer.setZero();
}

template <class E, class T>
concept InputBackward = requires(const E& e, ConstMatrixRef<T> g, Matrix<T>& grad) {
  e.add_to_input_backward(g, grad);
};
}  // namespace detail

/// h (len, d_model): the stack's input (after the embedding) on entry, its output on exit, as
/// Encoder::forward computes it, keeping what backward needs in `saved`.
template <Scalar T, Encoding Enc>
void forward_saving(const Encoder<T, Enc>& encoder, detail::OutRef<T> h, const SequenceInputs& in,
                    SequenceWorkspace<T>& ws, EncoderSaved<T>& saved) {
  encoder.validate();
  detail::check_batch_width("encoder forward_saving", h.cols(), encoder.d_model());
  if constexpr (EncodesInput<Enc>) {
    // absolute / additive: added once, to the first block's input (spec §4)
    if (!encoder.layers.empty())
      encoder.layers.front().self_attn.encoding.add_to_input(h, in.positions);
  }
  saved.layers.resize(encoder.layers.size());
  for (std::size_t n = 0; n < encoder.layers.size(); ++n) {
    forward_saving(encoder.layers[n], h, in, ws, saved.layers[n]);
  }
  if (encoder.norm) forward_saving(*encoder.norm, h, h, saved.norm);
}

/// d (len, d_model): ∂L/∂(stack output) on entry, ∂L/∂(stack input) on exit (the gradient of
/// the embedding's rows, or of the `input` of spec §6). Adds every gradient into grad. `in`
/// must be the forward's; spends `saved` (a saved state serves one backward). Every temporary
/// comes from `ws` (the layers share it), so a second call of the same shapes does not allocate.
template <Scalar T, Encoding Enc>
void backward(const Encoder<T, Enc>& encoder, EncoderSaved<T>& saved, const SequenceInputs& in,
              detail::OutRef<T> d, EncoderGrad<T>& grad, BackwardWorkspace<T>& ws) {
  if (saved.layers.size() != encoder.layers.size()) {
    throw Error("encoder backward: saved: expected " + std::to_string(encoder.layers.size()) +
                " layers, got " + std::to_string(saved.layers.size()));
  }
  detail::check_batch_width("encoder backward", d.cols(), encoder.d_model());
  grad.layers.resize(encoder.layers.size());
  if (encoder.norm) backward(*encoder.norm, saved.norm, d, d, grad.norm);
  for (std::size_t n = encoder.layers.size(); n-- > 0;) {
    backward(encoder.layers[n], saved.layers[n], in, d, grad.layers[n], ws);
    // t5: one table shared by every layer, so its gradient is the layers' sum, kept here
    Matrix<T>& layer_bias = grad.layers[n].self_attn.relative_attention_bias;
    if (layer_bias.size() > 0) {
      if (grad.relative_attention_bias.size() == 0) {
        grad.relative_attention_bias = Matrix<T>::Zero(layer_bias.rows(), layer_bias.cols());
      }
      grad.relative_attention_bias += layer_bias;
      layer_bias.setZero();
    }
    // deberta: R and its norm are shared by every layer, so are their gradients' sums
    detail::add_shared_grad(grad.layers[n].self_attn.rel_embeddings, grad.rel_embeddings);
    detail::add_shared_grad(grad.layers[n].self_attn.rel_norm_weight, grad.rel_norm_weight);
    detail::add_shared_grad(grad.layers[n].self_attn.rel_norm_bias, grad.rel_norm_bias);
    // xl's u, v and kerple's r1, r2: shared by every layer too
    detail::add_shared_grad(grad.layers[n].self_attn.r_w_bias, grad.r_w_bias);
    detail::add_shared_grad(grad.layers[n].self_attn.r_r_bias, grad.r_r_bias);
    detail::add_shared_grad(grad.layers[n].self_attn.kerple_r1, grad.kerple_r1);
    detail::add_shared_grad(grad.layers[n].self_attn.kerple_r2, grad.kerple_r2);
  }
  if constexpr (detail::InputBackward<Enc, T>) {
    // x̃ = x + encoding: ∂L/∂x = ∂L/∂x̃, and the learned additive table gets its gradient
    if (!encoder.layers.empty()) {
      encoder.layers.front().self_attn.encoding.add_to_input_backward(d, grad.position_weight);
    }
  }
}

/// As above, with a workspace of its own (allocated per call).
template <Scalar T, Encoding Enc>
void backward(const Encoder<T, Enc>& encoder, EncoderSaved<T>& saved, const SequenceInputs& in,
              detail::OutRef<T> d, EncoderGrad<T>& grad) {
  BackwardWorkspace<T> ws;
  backward(encoder, saved, in, d, grad, ws);
}

}  // namespace relpos
