// SPDX-License-Identifier: MIT
// The backward of one encoder block (block.hpp, spec §2), post-norm and pre-norm, from the
// backward of its four modules (attention_grad, feed_forward_grad, norm_grad). The chain
// rule through a residual x + f(x) is dx = dy + f'(x)ᵀ·dy: each branch's input gradient is added
// to the gradient that skips it.
#pragma once

#include <string>

#include <relpos/attention_grad.hpp>
#include <relpos/backward_workspace.hpp>
#include <relpos/block.hpp>
#include <relpos/core.hpp>
#include <relpos/feed_forward_grad.hpp>
#include <relpos/norm_grad.hpp>
#include <relpos/workspace.hpp>

namespace relpos {

/// What a block's forward keeps for its backward: the four modules' saved states,
/// len·(5 + 1 + 2 + 2)·d_model + 2·len·d_ff + 2·len scalars, no (len × len).
template <Scalar T>
struct BlockSaved {
  AttentionSaved<T> attn;  // its input: x (post-norm) or norm1(x) (pre-norm)
  FeedForwardSaved<T> ffn;
  LayerNormSaved<T> norm1;
  LayerNormSaved<T> norm2;
};

/// ∂L/∂ of a block's tensors, named as in the model file under a prefix such as "layers.0.".
/// backward() adds into them (empty ones start at zero).
template <Scalar T>
struct BlockGrad {
  AttentionGrad<T> self_attn;
  FeedForwardGrad<T> ffn;
  LayerNormGrad<T> norm1;
  LayerNormGrad<T> norm2;

  /// f(name, gradient) for each tensor: prefix + "self_attn.in_proj_weight", ...,
  /// "linear1.weight", ..., "norm1.weight", ...
  template <class F>
  void for_each(const std::string& prefix, F&& f) {
    self_attn.for_each(prefix + "self_attn.", f);
    ffn.for_each(prefix, f);
    norm1.for_each(prefix + "norm1", f);
    norm2.for_each(prefix + "norm2", f);
  }
};

/// x (len, d_model) → block(x) in place, as Block::forward_layer computes it (without the input
/// encoding: Encoder's forward_saving adds that once), keeping what backward needs in `saved`.
template <Scalar T, Encoding Enc>
void forward_saving(const Block<T, Enc>& block, detail::OutRef<T> x, const SequenceInputs& in,
                    SequenceWorkspace<T>& ws, BlockSaved<T>& saved) {
  block.validate();
  const Index len = x.rows(), d = block.d_model();
  if (x.cols() != d) detail::check_batch_width("block forward_saving", x.cols(), d);
  // The forward's k | v buffer (workspace.hpp), free here: attention's forward_saving keeps its
  // own q | k | v in `saved`. Its halves hold the branch and the normed input, so a warm call
  // allocates nothing.
  auto kv = ws.kv.matrix(len, 2 * d);
  auto branch = kv.leftCols(d);  // (len, d_model): the attention's or the ffn's output
  if (block.norm_first) {
    // x = x + attn(norm1(x)); x = x + ffn(norm2(x))
    auto normed = kv.rightCols(d);  // (len, d_model)
    forward_saving(block.norm1, x, normed, saved.norm1);
    forward_saving(block.self_attn, normed, branch, in, ws, saved.attn);
    x += branch;
    forward_saving(block.norm2, x, normed, saved.norm2);
    forward_saving(block.ffn, normed, branch, saved.ffn);
    x += branch;
  } else {
    // x = norm1(x + attn(x)); x = norm2(x + ffn(x))
    forward_saving(block.self_attn, x, branch, in, ws, saved.attn);
    x += branch;
    forward_saving(block.norm1, x, x, saved.norm1);
    forward_saving(block.ffn, x, branch, saved.ffn);
    x += branch;
    forward_saving(block.norm2, x, x, saved.norm2);
  }
}

/// d (len, d_model): ∂L/∂(block output) on entry, ∂L/∂(block input) on exit. Adds every weight
/// gradient into grad. `in` must be the forward's; spends saved.ffn (as FeedForward's backward).
/// Every temporary comes from `ws`, so a second call of the same shapes does not allocate.
template <Scalar T, Encoding Enc>
void backward(const Block<T, Enc>& block, BlockSaved<T>& saved, const SequenceInputs& in,
              detail::OutRef<T> d, BlockGrad<T>& grad, BackwardWorkspace<T>& ws) {
  const Index len = d.rows(), dm = block.d_model();
  detail::check_output_grad("block backward", d.rows(), d.cols(), len, dm);
  Matrix<T>& branch = ws.branch;  // (len, d_model): ∂L/∂ of a branch's input
  branch.resize(len, dm);
  if (block.norm_first) {
    // y = u + ffn(norm2(u)): ∂L/∂u = dy + norm2'ᵀ·ffn'ᵀ·dy
    backward(block.ffn, saved.ffn, d, branch, grad.ffn);
    backward(block.norm2, saved.norm2, branch, branch, grad.norm2);
    d += branch;
    // u = x + attn(norm1(x)): ∂L/∂x = ∂L/∂u + norm1'ᵀ·attn'ᵀ·∂L/∂u
    backward(block.self_attn, saved.attn, in, d, branch, grad.self_attn, ws.attention);
    backward(block.norm1, saved.norm1, branch, branch, grad.norm1);
    d += branch;
  } else {
    // y = norm2(w), w = y1 + ffn(y1): ∂L/∂y1 = ∂L/∂w + ffn'ᵀ·∂L/∂w
    backward(block.norm2, saved.norm2, d, d, grad.norm2);
    backward(block.ffn, saved.ffn, d, branch, grad.ffn);
    d += branch;
    // y1 = norm1(u), u = x + attn(x): ∂L/∂x = ∂L/∂u + attn'ᵀ·∂L/∂u
    backward(block.norm1, saved.norm1, d, d, grad.norm1);
    backward(block.self_attn, saved.attn, in, d, branch, grad.self_attn, ws.attention);
    d += branch;
  }
}

/// As above, with a workspace of its own (allocated per call).
template <Scalar T, Encoding Enc>
void backward(const Block<T, Enc>& block, BlockSaved<T>& saved, const SequenceInputs& in,
              detail::OutRef<T> d, BlockGrad<T>& grad) {
  BackwardWorkspace<T> ws;
  backward(block, saved, in, d, grad, ws);
}

}  // namespace relpos
