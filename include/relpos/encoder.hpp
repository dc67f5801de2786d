// SPDX-License-Identifier: MIT
// The encoder stack of spec §1–2: optional token embedding (no √d_model scaling) with spec
// §7's embedding stage (learned absolute positions, token types, a LayerNorm, as BERT), the
// input encoding of absolute / additive types on the first block's input, N blocks, an
// optional final norm and an optional output head giving logits, as torch.nn.TransformerEncoder.
#pragma once

#include <concepts>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <relpos/attention.hpp>
#include <relpos/block.hpp>
#include <relpos/core.hpp>
#include <relpos/detail/gemm.hpp>
#include <relpos/detail/shape_checks.hpp>
#include <relpos/encodings/concept.hpp>
#include <relpos/encodings/none.hpp>
#include <relpos/layer_norm.hpp>
#include <relpos/norm.hpp>
#include <relpos/tensor_source.hpp>
#include <relpos/workspace.hpp>

namespace relpos {

/// The hyper-parameters of spec §1 that shape the stack (the position type is the Enc
/// template argument of Encoder; io::ModelConfig maps onto this field by field).
struct EncoderConfig {
  Index d_model = 0;
  Index n_heads = 0;
  Index n_layers = 0;
  Index d_ff = 0;
  Activation activation = Activation::relu;
  bool norm_first = false;
  double layer_norm_eps = 1e-5;  // every LayerNorm, the final one included
  bool final_norm = false;       // tensors norm.weight, norm.bias
  bool causal = false;
  Index vocab_size = 0;      // 0: no vocabulary; else embed.weight [vocab_size, d_model]
  bool output_head = false;  // head.weight [vocab_size, d_model], head.bias [vocab_size]
  // spec §7's block options
  NormKind norm = NormKind::layer;  // every norm of the layers and the final norm
  bool bias = true;                 // false: no attention or feed-forward biases
  bool gated = false;               // ffn "gated": linear3
  // spec §7's embedding stage, for input_ids only (each needs vocab_size)
  bool embed_norm = false;  // LayerNorm embed_norm.weight / .bias
  // present: pos_embed.weight [P, d_model], token i adds row p_i + offset
  std::optional<Index> pos_embed_offset{};
  Index pos_embed_rows = 0;   // P, the rows of pos_embed.weight (the file's)
  Index type_vocab_size = 0;  // 0: no token types; else type_embed.weight [T, d_model]

  BlockConfig block() const {
    return {d_model,        n_heads, d_ff, activation, norm_first,
            layer_norm_eps, causal,  norm, bias,       gated};
  }
  void validate() const {
    auto positive = [](const char* key, Index v) {
      if (v < 1) throw Error(std::string(key) + ": expected >= 1, got " + std::to_string(v));
    };
    positive("d_model", d_model);
    positive("n_heads", n_heads);
    positive("n_layers", n_layers);
    positive("d_ff", d_ff);
    detail::check_head_split("encoder", d_model, n_heads);
    if (!(layer_norm_eps > 0)) {
      throw Error("layer_norm_eps: expected > 0, got " + std::to_string(layer_norm_eps));
    }
    if (vocab_size < 0) throw Error("vocab_size: expected >= 0, got " + std::to_string(vocab_size));
    if (output_head && vocab_size < 1) throw Error("output_head: needs vocab_size");
    if (embed_norm && vocab_size < 1) throw Error("embed_norm: needs vocab_size");
    if (pos_embed_offset) {
      if (vocab_size < 1) throw Error("pos_embed_offset: needs vocab_size");
      if (*pos_embed_offset < 0)
        throw Error("pos_embed_offset: expected >= 0, got " + std::to_string(*pos_embed_offset));
      if (pos_embed_rows < 1)
        throw Error("pos_embed_rows: expected >= 1, got " + std::to_string(pos_embed_rows));
    }
    if (type_vocab_size < 0)
      throw Error("type_vocab_size: expected >= 0, got " + std::to_string(type_vocab_size));
    if (type_vocab_size > 0 && vocab_size < 1) throw Error("type_vocab_size: needs vocab_size");
  }
};

template <Scalar T, Encoding Enc = NoPosition<T>>
class Encoder {
 public:
  EncoderConfig config;
  Matrix<T> embedding;   // (vocab_size, d_model), embed.weight; empty without a vocabulary
  Matrix<T> pos_embed;   // (P, d_model), pos_embed.weight, when config.pos_embed_offset
  Matrix<T> type_embed;  // (type_vocab_size, d_model), type_embed.weight; empty without types
  std::optional<LayerNorm<T>> embed_norm;  // on the embeddings, when config.embed_norm
  std::vector<Block<T, Enc>> layers;
  std::optional<Norm<T>> norm;  // the final norm (LayerNorm or RMSNorm), when config.final_norm
  Matrix<T> head_weight;        // (vocab_size, d_model), when config.output_head
  Vector<T> head_bias;          // (vocab_size)

  /// An empty stack (config all zero): fill every field, or use the constructors below;
  /// forward refuses it until validate() passes.
  Encoder() = default;

  /// A stack built in code: every layer's Block from config.block() and make_encoding(n)
  /// (layer n's encoding; the input encoding, if Enc has one, is layer 0's), zero weights,
  /// identity norms, a zero embedding and head when the config asks for them. Fill the
  /// public fields, as load() does from a file; every forward runs validate() first. A bad
  /// config or an encoding built for other sizes throws Error before anything is allocated.
  template <class MakeEncoding>
  requires std::convertible_to<std::invoke_result_t<MakeEncoding&, Index>, Enc> Encoder(
      const EncoderConfig& cfg, MakeEncoding&& make_encoding)
      : config(cfg) {
    cfg.validate();
    const Index d = cfg.d_model;
    if (cfg.vocab_size > 0) embedding = Matrix<T>::Zero(cfg.vocab_size, d);
    if (cfg.pos_embed_offset) pos_embed = Matrix<T>::Zero(cfg.pos_embed_rows, d);
    if (cfg.type_vocab_size > 0) type_embed = Matrix<T>::Zero(cfg.type_vocab_size, d);
    if (cfg.embed_norm) embed_norm.emplace(d, cfg.layer_norm_eps);
    layers.reserve(static_cast<std::size_t>(cfg.n_layers));
    for (Index n = 0; n < cfg.n_layers; ++n) {
      detail::with_prefix("layers." + std::to_string(n) + ".",
                          [&] { layers.emplace_back(cfg.block(), make_encoding(n)); });
    }
    if (cfg.final_norm) norm.emplace(cfg.norm, d, cfg.layer_norm_eps);
    if (cfg.output_head) {
      head_weight = Matrix<T>::Zero(cfg.vocab_size, d);
      head_bias = Vector<T>::Zero(cfg.vocab_size);
    }
  }
  /// The same with a default-constructed encoding in every layer (none, sinusoidal, ...).
  explicit Encoder(const EncoderConfig& cfg) requires std::default_initializable<Enc>
      : Encoder(cfg, [](Index) { return Enc(); }) {}

  /// Loads every tensor of spec §1 and §7 from `file` (names "embed.weight", "pos_embed.weight",
  /// "type_embed.weight", "embed_norm.…", "layers.{n}.…", "norm.…", "head.…"); a missing or
  /// mis-shaped tensor throws Error naming it. make_encoding(n) gives layer n's encoding (which
  /// loads its own tensors, if any); the input encoding (EncodesInput) is layer 0's. Whether `file`
  /// holds tensors this model does not use is the caller's check (model.hpp). The result passes
  /// validate(), the check an encoder built in code gets: load is one way in, not the only checked
  /// one.
  template <TensorSource<T> File, class MakeEncoding>
  requires std::convertible_to<std::invoke_result_t<MakeEncoding&, Index>, Enc>
  static Encoder load(const File& file, const EncoderConfig& cfg, MakeEncoding&& make_encoding) {
    cfg.validate();
    Encoder e;  // filled layer by layer: no zero stack first (twice the memory of a model)
    e.config = cfg;
    const Index d = cfg.d_model;
    if (cfg.vocab_size > 0)
      e.embedding = file.template matrix<T>("embed.weight", cfg.vocab_size, d);
    if (cfg.pos_embed_offset)
      e.pos_embed = file.template matrix<T>("pos_embed.weight", cfg.pos_embed_rows, d);
    if (cfg.type_vocab_size > 0)
      e.type_embed = file.template matrix<T>("type_embed.weight", cfg.type_vocab_size, d);
    if (cfg.embed_norm)
      e.embed_norm = LayerNorm<T>::load(file, "embed_norm", d, cfg.layer_norm_eps);
    e.layers.reserve(static_cast<std::size_t>(cfg.n_layers));
    for (Index n = 0; n < cfg.n_layers; ++n) {
      e.layers.push_back(Block<T, Enc>::load(file, "layers." + std::to_string(n) + ".", cfg.block(),
                                             make_encoding(n)));
    }
    if (cfg.final_norm) e.norm = Norm<T>::load(file, "norm", cfg.norm, d, cfg.layer_norm_eps);
    if (cfg.output_head) {
      e.head_weight = file.template matrix<T>("head.weight", cfg.vocab_size, d);
      e.head_bias = file.template vector<T>("head.bias", cfg.vocab_size);
    }
    e.validate();
    return e;
  }
  /// The same with a default-constructed encoding in every layer (none, sinusoidal, ...).
  template <TensorSource<T> File>
  static Encoder load(const File& file, const EncoderConfig& cfg) {
    return load(file, cfg, [](Index) { return Enc(); });
  }

  /// f(TensorName, T* data, Index size) for every weight the stack holds outside its
  /// encodings, under the model file's names and in its layout (spec §1, §7: row-major,
  /// [out, in]), in io::expected_tensors' order; an absent one (empty: no bias, not gated, no
  /// vocabulary, ...) is left out. An encoding's own tensors (position.*, relative_key, ...)
  /// are its loader's. What updates a model in place (Model::assign_weights).
  template <class F>
  void for_each_weight(F&& f) {
    const auto visit = [&](Index layer, std::string_view path, auto& m) {
      if (m.size() > 0) f(TensorName{layer, path}, m.data(), m.size());
    };
    visit(-1, "embed.weight", embedding);
    visit(-1, "pos_embed.weight", pos_embed);
    visit(-1, "type_embed.weight", type_embed);
    if (embed_norm) {
      visit(-1, "embed_norm.weight", embed_norm->weight);
      visit(-1, "embed_norm.bias", embed_norm->bias);
    }
    for (std::size_t k = 0; k < layers.size(); ++k) {
      const Index n = static_cast<Index>(k);
      MultiHeadAttention<T, Enc>& a = layers[k].self_attn;
      FeedForward<T>& f2 = layers[k].ffn;
      visit(n, "self_attn.in_proj_weight", a.in_proj_weight);
      visit(n, "self_attn.in_proj_bias", a.in_proj_bias);
      visit(n, "self_attn.out_proj.weight", a.out_proj_weight);
      visit(n, "self_attn.out_proj.bias", a.out_proj_bias);
      visit(n, "linear1.weight", f2.linear1_weight);
      visit(n, "linear1.bias", f2.linear1_bias);
      visit(n, "linear2.weight", f2.linear2_weight);
      visit(n, "linear2.bias", f2.linear2_bias);
      visit(n, "linear3.weight", f2.linear3_weight);
      visit(n, "linear3.bias", f2.linear3_bias);
      visit(n, "norm1.weight", layers[k].norm1.weight);
      visit(n, "norm1.bias", layers[k].norm1.bias);
      visit(n, "norm2.weight", layers[k].norm2.weight);
      visit(n, "norm2.bias", layers[k].norm2.bias);
    }
    if (norm) {
      visit(-1, "norm.weight", norm->weight);
      visit(-1, "norm.bias", norm->bias);
    }
    visit(-1, "head.weight", head_weight);
    visit(-1, "head.bias", head_bias);
  }

  /// The config, then every public field against it: n_layers layers, each a Block of
  /// config.block()'s sizes and flags with weights of the right shapes (Block::validate) and
  /// an encoding built for the layer, the embedding, the final norm and the head present
  /// exactly when the config says and of the right shapes. Error names the field by its path
  /// ("layers.1.self_attn.in_proj_weight: ..."). O(n_layers); forward calls it.
  void validate() const {
    config.validate();
    const Index d = config.d_model;
    const BlockConfig bc = config.block();
    if (static_cast<Index>(layers.size()) != config.n_layers) {
      throw Error("layers: expected n_layers = " + std::to_string(config.n_layers) +
                  " blocks, got " + std::to_string(layers.size()));
    }
    for (std::size_t n = 0; n < layers.size(); ++n) {
      const Block<T, Enc>& b = layers[n];
      // the prefix is built only on failure: a forward that validates does not allocate
      try {
        const AttentionConfig& ac = b.self_attn.config;
        if (ac.d_model != bc.d_model || ac.n_heads != bc.n_heads || ac.causal != bc.causal ||
            ac.bias != bc.bias) {
          throw Error("self_attn.config: expected d_model " + std::to_string(bc.d_model) +
                      ", n_heads " + std::to_string(bc.n_heads) + ", causal " +
                      (bc.causal ? "true" : "false") + ", bias " + (bc.bias ? "true" : "false") +
                      " (the encoder's config), got " + std::to_string(ac.d_model) + ", " +
                      std::to_string(ac.n_heads) + ", " + (ac.causal ? "true" : "false") + ", " +
                      (ac.bias ? "true" : "false"));
        }
        b.validate();
        detail::check_matrix("ffn.linear1_weight", b.ffn.linear1_weight, bc.d_ff, d,
                             "d_ff, d_model");
        if (b.ffn.activation != bc.activation) {
          throw Error("ffn.activation: differs from the encoder's config");
        }
        if (b.ffn.gated() != bc.gated) {
          throw Error(std::string("ffn.linear3_weight: ") +
                      (bc.gated ? "missing, but the encoder's ffn is gated"
                                : "present, but the encoder's ffn is plain"));
        }
        if (b.ffn.has_bias() != bc.bias) {
          throw Error(std::string("ffn.linear1_bias: ") +
                      (bc.bias ? "missing, but the encoder's bias is true"
                               : "present, but the encoder's bias is false"));
        }
        if (b.norm1.kind != bc.norm) throw Error("norm1.kind: differs from the encoder's norm");
        if (b.norm_first != bc.norm_first) {
          throw Error(std::string("norm_first: expected ") + (bc.norm_first ? "true" : "false") +
                      " (the encoder's config), got " + (b.norm_first ? "true" : "false"));
        }
        if (b.norm1.eps != bc.layer_norm_eps || b.norm2.eps != bc.layer_norm_eps) {
          throw Error("norm1.eps, norm2.eps: expected layer_norm_eps = " +
                      std::to_string(bc.layer_norm_eps) + " (the encoder's config)");
        }
      } catch (const Error& e) {
        throw Error("layers." + std::to_string(n) + "." + e.what());
      }
    }
    if (config.vocab_size > 0) {
      detail::check_matrix("embedding", embedding, config.vocab_size, d, "vocab_size, d_model");
    } else if (embedding.size() != 0) {
      throw Error("embedding: expected empty (vocab_size 0), got " +
                  detail::shape_string(embedding.rows(), embedding.cols()));
    }
    if (config.final_norm != norm.has_value()) {
      throw Error(std::string("norm: ") + (config.final_norm ? "missing, but final_norm is true"
                                                             : "present, but final_norm is false"));
    }
    if (config.pos_embed_offset) {
      detail::check_matrix("pos_embed", pos_embed, config.pos_embed_rows, d,
                           "pos_embed_rows, d_model");
    } else if (pos_embed.size() != 0) {
      throw Error("pos_embed: expected empty (no pos_embed_offset), got " +
                  detail::shape_string(pos_embed.rows(), pos_embed.cols()));
    }
    if (config.type_vocab_size > 0) {
      detail::check_matrix("type_embed", type_embed, config.type_vocab_size, d,
                           "type_vocab_size, d_model");
    } else if (type_embed.size() != 0) {
      throw Error("type_embed: expected empty (type_vocab_size 0), got " +
                  detail::shape_string(type_embed.rows(), type_embed.cols()));
    }
    if (config.embed_norm != embed_norm.has_value()) {
      throw Error(std::string("embed_norm: ") + (config.embed_norm
                                                     ? "missing, but config.embed_norm is true"
                                                     : "present, but config.embed_norm is false"));
    }
    if (embed_norm) {
      detail::with_prefix("embed_norm.", [&] { embed_norm->validate(); });
      detail::check_vector("embed_norm.weight", embed_norm->weight, d, "d_model");
      if (embed_norm->eps != config.layer_norm_eps) {
        throw Error("embed_norm.eps: expected layer_norm_eps = " +
                    std::to_string(config.layer_norm_eps));
      }
    }
    if (norm) {
      detail::with_prefix("norm.", [&] { norm->validate(); });
      if (norm->kind != config.norm) throw Error("norm.kind: differs from the encoder's norm");
      detail::check_vector("norm.weight", norm->weight, d, "d_model");
      if (norm->eps != config.layer_norm_eps) {
        throw Error("norm.eps: expected layer_norm_eps = " + std::to_string(config.layer_norm_eps));
      }
    }
    if (config.output_head) {
      detail::check_matrix("head_weight", head_weight, config.vocab_size, d, "vocab_size, d_model");
      detail::check_vector("head_bias", head_bias, config.vocab_size, "vocab_size");
    }
  }

  Index d_model() const { return config.d_model; }

  /// Activations [batch, len, d_model] → out [batch, len, d_model] (resized if needed).
  void forward(const Tensor3<T>& x, Tensor3<T>& out, const BatchInputs& in,
               Workspace<T>& ws) const {
    validate();
    const Index batch = x.dimension(0), len = x.dimension(1);
    detail::check_batch_width("encoder", x.dimension(2), d_model());
    in.check(batch, len);
    detail::resize_like(out, batch, len, d_model());
    ws.for_each_item(batch, [&](Index b, SequenceWorkspace<T>& sw) {
      auto h = item(out, b);  // (len, d_model)
      h = item(x, b);
      run_stack(h, in.item(b, len), sw);
    });
  }

  /// Activations [batch, len, d_model] updated in place to the stack's output: no second
  /// (batch, len, d_model) copy beside the input, for long inputs (relpos-encode). On an Error
  /// thrown before any work x is unchanged; one thrown by a layer leaves it partly updated.
  void forward_in_place(Tensor3<T>& x, const BatchInputs& in, Workspace<T>& ws) const {
    validate();
    const Index batch = x.dimension(0), len = x.dimension(1);
    detail::check_batch_width("encoder", x.dimension(2), d_model());
    in.check(batch, len);
    ws.for_each_item(batch, [&](Index b, SequenceWorkspace<T>& sw) {
      auto h = item(x, b);  // (len, d_model)
      run_stack(h, in.item(b, len), sw);
    });
  }

  /// Token ids [batch, len] → out [batch, len, d_model], through the embedding stage of spec
  /// §7: embed.weight, + pos_embed.weight row p_i + offset, + type_embed.weight row t_i
  /// (`token_types` [batch, len]; null: all 0), then embed_norm, then the position type's
  /// input encoding and the layers. An id, type or position row out of range throws Error
  /// naming it.
  void forward_ids(const TokenIds& ids, Tensor3<T>& out, const BatchInputs& in, Workspace<T>& ws,
                   const TokenIds* token_types = nullptr) const {
    validate();
    if (config.vocab_size < 1) throw Error("input_ids: this model has no vocabulary (vocab_size)");
    const Index batch = ids.rows(), len = ids.cols();
    for (Index b = 0; b < batch; ++b) {
      for (Index i = 0; i < len; ++i) {
        if (ids(b, i) < 0 || ids(b, i) >= config.vocab_size) {
          throw Error("input_ids[" + std::to_string(b) + ", " + std::to_string(i) +
                      "]: expected 0 <= id < vocab_size " + std::to_string(config.vocab_size) +
                      ", got " + std::to_string(ids(b, i)));
        }
      }
    }
    in.check(batch, len);
    check_embedding_inputs(batch, len, in, token_types);
    detail::resize_like(out, batch, len, d_model());
    ws.for_each_item(batch, [&](Index b, SequenceWorkspace<T>& sw) {
      auto h = item(out, b);  // (len, d_model)
      const SequenceInputs seq = in.item(b, len);
      for (Index i = 0; i < len; ++i) {
        h.row(i) = embedding.row(ids(b, i));
        if (config.pos_embed_offset)
          h.row(i) += pos_embed.row(seq.positions[i] + *config.pos_embed_offset);
        if (config.type_vocab_size > 0)
          h.row(i) += type_embed.row(token_types != nullptr ? (*token_types)(b, i) : 0);
      }
      if (embed_norm) embed_norm->forward(h, h);
      run_stack(h, seq, sw);
    });
  }

  /// logits [batch, len, vocab_size] = hidden · headᵀ + bias (needs output_head).
  void logits(const Tensor3<T>& hidden, Tensor3<T>& out) const {
    validate();
    if (!config.output_head) throw Error("logits: this model has no output head (output_head)");
    const Index batch = hidden.dimension(0), len = hidden.dimension(1);
    detail::check_batch_width("logits", hidden.dimension(2), d_model());
    detail::resize_like(out, batch, len, config.vocab_size);
    detail::parallel_for(batch, [&](Index b, int) {
      auto o = item(out, b);  // (len, vocab_size)
      detail::linear<T>(item(hidden, b), head_weight, head_bias, o);
    });
  }

  /// Convenience forms: allocate the output and a workspace.
  Tensor3<T> forward(const Tensor3<T>& x, const BatchInputs& in = {}) const {
    Tensor3<T> out;
    Workspace<T> ws;
    forward(x, out, in, ws);
    return out;
  }
  /// The input given up (std::move(x)): the output is computed in its memory and returned,
  /// with no copy of the input (forward_in_place).
  Tensor3<T> forward(Tensor3<T>&& x, const BatchInputs& in = {}) const {
    Workspace<T> ws;
    forward_in_place(x, in, ws);
    return std::move(x);
  }
  Tensor3<T> forward_ids(const TokenIds& ids, const BatchInputs& in = {},
                         const TokenIds* token_types = nullptr) const {
    Tensor3<T> out;
    Workspace<T> ws;
    forward_ids(ids, out, in, ws, token_types);
    return out;
  }

 private:
  // Token types and learned position rows against their tables, before any work.
  void check_embedding_inputs(Index batch, Index len, const BatchInputs& in,
                              const TokenIds* token_types) const {
    if (token_types != nullptr) {
      if (config.type_vocab_size < 1)
        throw Error("token_type_ids: this model has no token types (type_vocab_size)");
      if (token_types->rows() != batch || token_types->cols() != len) {
        throw Error("token_type_ids: expected " + detail::shape_string(batch, len) + ", got " +
                    detail::shape_string(token_types->rows(), token_types->cols()));
      }
      for (Index b = 0; b < batch; ++b) {
        for (Index i = 0; i < len; ++i) {
          const std::int64_t t = (*token_types)(b, i);
          if (t < 0 || t >= config.type_vocab_size) {
            throw Error("token_type_ids[" + std::to_string(b) + ", " + std::to_string(i) +
                        "]: expected 0 <= type < type_vocab_size " +
                        std::to_string(config.type_vocab_size) + ", got " + std::to_string(t));
          }
        }
      }
    }
    if (config.pos_embed_offset) {
      const Index offset = *config.pos_embed_offset, rows = config.pos_embed_rows;
      for (Index b = 0; b < batch; ++b) {
        for (Index i = 0; i < len; ++i) {
          const std::int64_t p = in.positions ? (*in.positions)(b, i) : i;
          if (p > rows - 1 - offset) {  // p + offset past the last row, without overflow
            throw Error("position " + std::to_string(p) + " at [" + std::to_string(b) + ", " +
                        std::to_string(i) + "]: row " + std::to_string(p) + " + pos_embed_offset " +
                        std::to_string(offset) + " is past the last row " +
                        std::to_string(rows - 1) + " of pos_embed.weight");
          }
        }
      }
    }
  }

  // h: (len, d_model), the first block's input, updated in place to the stack's output.
  void run_stack(MatrixMap<T>& h, const SequenceInputs& in, SequenceWorkspace<T>& ws) const {
    if constexpr (EncodesInput<Enc>) {
      // absolute / additive: added once, to the first block's input (spec §4)
      if (!layers.empty()) layers.front().self_attn.encoding.add_to_input(h, in.positions);
    }
    for (const Block<T, Enc>& block : layers) block.forward_layer(h, in, ws);
    if (norm) norm->forward(h, h);
  }
};

}  // namespace relpos
