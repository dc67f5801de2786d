// SPDX-License-Identifier: MIT
// One Transformer encoder block (spec §2), exactly as torch.nn.TransformerEncoderLayer:
// post-norm  x = norm1(x + attn(x)); x = norm2(x + ffn(x))
// pre-norm   x = x + attn(norm1(x)); x = x + ffn(norm2(x))   (norm_first, Xiong et al. 2020)
// with spec §7's options: RMSNorm for the norms, no biases, a gated feed-forward. The forward
// runs in place on x and adds each branch inside its last product (forward_add), so what it
// holds at full length is attention's k | v only (issue 14's memory targets).
#pragma once

#include <algorithm>
#include <string>
#include <utility>

#include <relpos/attention.hpp>
#include <relpos/core.hpp>
#include <relpos/detail/shape_checks.hpp>
#include <relpos/encodings/concept.hpp>
#include <relpos/encodings/none.hpp>
#include <relpos/feed_forward.hpp>
#include <relpos/norm.hpp>
#include <relpos/tensor_source.hpp>
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
  NormKind norm = NormKind::layer;  // spec §7 `norm`: LayerNorm or RMSNorm
  bool bias = true;                 // spec §7 `bias`: false = no attention or FFN biases
  bool gated = false;               // spec §7 `ffn: "gated"`: linear3 gates the hidden layer

  AttentionConfig attention() const { return {d_model, n_heads, causal, bias}; }
  FeedForwardConfig feed_forward() const { return {d_model, d_ff, activation, gated, bias}; }
  /// Every size >= 1, d_model a multiple of n_heads, eps > 0; else Error naming the key.
  void validate() const {
    detail::check_positive("block: ", "d_model", d_model);
    detail::check_positive("block: ", "n_heads", n_heads);
    detail::check_positive("block: ", "d_ff", d_ff);
    attention().validate();
    if (!(layer_norm_eps > 0)) {
      throw Error("block: layer_norm_eps: expected > 0, got " + std::to_string(layer_norm_eps));
    }
  }
};

/// One encoder block. An encoding of the input (EncodesInput: absolute, additive) is applied
/// by forward() to x before the block, exactly as Encoder does for its first layer, so a lone
/// Block<T, AbsoluteSinusoidal<T>> computes what a one-layer Encoder does; forward_layer()
/// is the block without it (what Encoder runs for every layer, having added it once).
template <Scalar T, Encoding Enc = NoPosition<T>>
struct Block {
  MultiHeadAttention<T, Enc> self_attn;
  FeedForward<T> ffn;  // linear1, linear2 (, linear3 when gated)
  Norm<T> norm1;       // LayerNorm or RMSNorm, as BlockConfig::norm
  Norm<T> norm2;
  bool norm_first = false;

  /// Zero attention and feed-forward weights, identity norms. A bad config, or an encoding
  /// built for other sizes, throws Error before anything is allocated.
  explicit Block(const BlockConfig& cfg, Enc enc = Enc())
      : self_attn((cfg.validate(), cfg.attention()), std::move(enc)),
        ffn(cfg.feed_forward()),
        norm1(cfg.norm, cfg.d_model, cfg.layer_norm_eps),
        norm2(cfg.norm, cfg.d_model, cfg.layer_norm_eps),
        norm_first(cfg.norm_first) {}

  /// The tensors of spec §1 under `prefix` (e.g. "layers.0."): self_attn.*, linear1.*,
  /// linear2.*, (linear3.*,) norm1.*, norm2.*, as cfg's options ask (spec §7); a missing or
  /// mis-shaped one throws Error naming it.
  template <TensorSource<T> File>
  static Block load(const File& file, const std::string& prefix, const BlockConfig& cfg,
                    Enc enc = Enc()) {
    Block b(cfg, Enc(enc));
    b.self_attn = MultiHeadAttention<T, Enc>::load(file, prefix + "self_attn.", cfg.attention(),
                                                   std::move(enc));
    b.ffn = FeedForward<T>::load(file, prefix, cfg.feed_forward());
    b.norm1 = Norm<T>::load(file, prefix + "norm1", cfg.norm, cfg.d_model, cfg.layer_norm_eps);
    b.norm2 = Norm<T>::load(file, prefix + "norm2", cfg.norm, cfg.d_model, cfg.layer_norm_eps);
    return b;
  }

  Index d_model() const { return self_attn.d_model(); }

  /// Every weight against the attention's d_model (self_attn.*, ffn.*, norm1.*, norm2.*),
  /// and the encoding against the layer; else Error naming the field by its path
  /// ("self_attn.in_proj_weight: expected [96, 32] ..."). O(1): forward calls it.
  void validate() const {
    detail::with_prefix("self_attn.", [&] { self_attn.validate(); });
    detail::check_matrix("ffn.linear1_weight", ffn.linear1_weight, ffn.d_ff(), d_model(),
                         "d_ff, d_model");
    detail::with_prefix("ffn.", [&] { ffn.validate(); });
    detail::with_prefix("norm1.", [&] { norm1.validate(); });
    detail::with_prefix("norm2.", [&] { norm2.validate(); });
    detail::check_vector("norm1.weight", norm1.weight, d_model(), "d_model");
    detail::check_vector("norm2.weight", norm2.weight, d_model(), "d_model");
    if (norm1.kind != norm2.kind) throw Error("norm2.kind: differs from norm1.kind");
  }

  /// One sequence x (len, d_model), updated in place: the input encoding, if Enc has one
  /// (absolute, additive), then the block.
  void forward(MatrixRef<T> x, const SequenceInputs& in, SequenceWorkspace<T>& ws) const {
    if constexpr (EncodesInput<Enc>) {
      validate();
      self_attn.encoding.add_to_input(x, in.positions);
    }
    forward_layer(x, in, ws);
  }

  /// One sequence x (len, d_model), updated in place, without the input encoding: the block
  /// as a layer of a stack whose input was encoded once (Encoder, Decoder).
  void forward_layer(MatrixRef<T> x, const SequenceInputs& in, SequenceWorkspace<T>& ws) const {
    validate();
    const Index len = x.rows(), d = d_model();
    if (x.cols() != d) detail::check_batch_width("block", x.cols(), d);
    if (len == 0) return;  // no token: nothing to compute
    // The residual adds happen inside the out-projection's and linear2's products
    // (forward_add, in place on x), so no (len, d_model) branch buffer exists.
    if (norm_first) {
      // the norms' rows are made block by block into a small buffer, not a (len, d_model)
      // normalised copy: norm1's for attention's k | v, then for each block's q (x's rows are
      // read before attention adds into them), norm2's for each chunk of the feed-forward
      static_assert(FeedForward<T>::kRows <= MultiHeadAttention<T, Enc>::kQueryRows,
                    "the feed-forward's chunks reuse attention's normed rows");
      auto normed = ws.normed.matrix(std::min(len, MultiHeadAttention<T, Enc>::kQueryRows), d);
      self_attn.forward_add_rows(
          [&](Index r0, Index n) {
            norm1.forward(x.middleRows(r0, n), normed.topRows(n));
            return normed.topRows(n);
          },
          x, in, ws);
      for (Index r0 = 0; r0 < len; r0 += FeedForward<T>::kRows) {
        const Index n = std::min(FeedForward<T>::kRows, len - r0);
        auto rows = x.middleRows(r0, n);
        auto normed_rows = normed.topRows(n);
        norm2.forward(rows, normed_rows);
        ffn.forward_add(normed_rows, rows, ws);
      }
    } else {
      self_attn.forward_add(x, x, in, ws);
      norm1.forward(x, x);
      ffn.forward_add(x, x, ws);
      norm2.forward(x, x);
    }
  }

  /// A batch [batch, len, d_model], updated in place, items in parallel.
  void forward(Tensor3<T>& x, const BatchInputs& in, Workspace<T>& ws) const {
    const Index batch = x.dimension(0), len = x.dimension(1);
    validate();
    detail::check_batch_width("block", x.dimension(2), d_model());
    in.check(batch, len);
    ws.for_each_item(batch, [&](Index b, SequenceWorkspace<T>& sw) {
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
