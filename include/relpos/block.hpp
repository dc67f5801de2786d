// SPDX-License-Identifier: MIT
// One Transformer encoder block (spec §2), exactly as torch.nn.TransformerEncoderLayer:
// post-norm  x = norm1(x + attn(x)); x = norm2(x + ffn(x))
// pre-norm   x = x + attn(norm1(x)); x = x + ffn(norm2(x))   (norm_first, Xiong et al. 2020)
#pragma once

#include <string>
#include <utility>

#include <relpos/attention.hpp>
#include <relpos/core.hpp>
#include <relpos/encodings/concept.hpp>
#include <relpos/encodings/none.hpp>
#include <relpos/feed_forward.hpp>
#include <relpos/io/safetensors.hpp>
#include <relpos/layer_norm.hpp>
#include <relpos/workspace.hpp>

namespace relpos {

/// Hyper-parameters of a block (spec §1's names).
struct BlockConfig {
  Index d_model = 0;
  Index n_heads = 0;
  Index d_ff = 0;
  Activation activation = Activation::relu;
  bool norm_first = false;       // pre-norm (true) or post-norm (false)
  double layer_norm_eps = 1e-5;  // both norms
  bool causal = false;

  AttentionConfig attention() const { return {d_model, n_heads, causal}; }
};

template <Scalar T, Encoding Enc = NoPosition<T>>
struct Block {
  MultiHeadAttention<T, Enc> self_attn;
  FeedForward<T> ffn;  // linear1, linear2
  LayerNorm<T> norm1;
  LayerNorm<T> norm2;
  bool norm_first = false;

  /// Zero attention and feed-forward weights, identity norms.
  explicit Block(const BlockConfig& cfg, Enc enc = Enc())
      : self_attn(cfg.attention(), std::move(enc)),
        ffn(cfg.d_model, cfg.d_ff, cfg.activation),
        norm1(cfg.d_model, cfg.layer_norm_eps),
        norm2(cfg.d_model, cfg.layer_norm_eps),
        norm_first(cfg.norm_first) {}

  /// The tensors of spec §1 under `prefix` (e.g. "layers.0."): self_attn.*, linear1.*,
  /// linear2.*, norm1.*, norm2.*; a missing or mis-shaped one throws Error naming it.
  static Block load(const io::SafetensorsFile& file, const std::string& prefix,
                    const BlockConfig& cfg, Enc enc = Enc()) {
    Block b(cfg, Enc(enc));
    b.self_attn = MultiHeadAttention<T, Enc>::load(file, prefix + "self_attn.", cfg.attention(),
                                                   std::move(enc));
    b.ffn = FeedForward<T>::load(file, prefix, cfg.d_model, cfg.d_ff, cfg.activation);
    b.norm1 = LayerNorm<T>::load(file, prefix + "norm1", cfg.d_model, cfg.layer_norm_eps);
    b.norm2 = LayerNorm<T>::load(file, prefix + "norm2", cfg.d_model, cfg.layer_norm_eps);
    return b;
  }

  Index d_model() const { return self_attn.d_model(); }

  /// One sequence x (len, d_model), updated in place.
  void forward(MatrixRef<T> x, const SequenceInputs& in, SequenceWorkspace<T>& ws) const {
    const Index len = x.rows(), d = d_model();
    auto branch = ws.residual.matrix(len, d);  // (len, d_model): attn or ffn output
    if (norm_first) {
      auto normed = ws.normed.matrix(len, d);  // (len, d_model)
      norm1.forward(x, normed);
      self_attn.forward(normed, branch, in, ws);
      x += branch;
      norm2.forward(x, normed);
      ffn.forward(normed, branch, ws);
      x += branch;
    } else {
      self_attn.forward(x, branch, in, ws);
      x += branch;
      norm1.forward(x, x);
      ffn.forward(x, branch, ws);
      x += branch;
      norm2.forward(x, x);
    }
  }

  /// A batch [batch, len, d_model], updated in place, items in parallel.
  void forward(Tensor3<T>& x, const BatchInputs& in, Workspace<T>& ws) const {
    const Index batch = x.dimension(0), len = x.dimension(1);
    detail::check_batch_width("block", x.dimension(2), d_model());
    in.check(batch, len);
    detail::for_each_item(batch, ws, [&](Index b, SequenceWorkspace<T>& sw) {
      forward(item(x, b), in.item(b, len), sw);
    });
  }

  /// Convenience: returns the output, allocating it and a workspace.
  Tensor3<T> forward(const Tensor3<T>& x, const BatchInputs& in = {}) const {
    Tensor3<T> out = x;
    Workspace<T> ws;
    forward(out, in, ws);
    return out;
  }
};

}  // namespace relpos
