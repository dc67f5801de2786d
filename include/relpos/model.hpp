// SPDX-License-Identifier: MIT
// The runtime model (spec §1): config.json + model.safetensors loaded into the encoder whose
// position type is chosen at run time. The choice is a std::variant over the compile-time
// Encoder<T, Enc> types, so a forward pass dispatches once and has no virtual call inside.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <unistd.h>

#include <relpos/core.hpp>
#include <relpos/detail/safetensors_header.hpp>
#include <relpos/encoder.hpp>
#include <relpos/io/config.hpp>
#include <relpos/io/dtype.hpp>
#include <relpos/io/hf_checkpoint.hpp>
#include <relpos/io/safetensors.hpp>
#include <relpos/threads.hpp>

namespace relpos {

/// The longest sequence a model accepts. Attention streams over tiles (detail/tiled_attention.hpp)
/// and holds no (len, len) matrix, so what bounds a run is its O(len·d) activations, checked
/// against physical memory before anything is allocated; the limit only keeps a hostile
/// length from reaching that arithmetic.
inline constexpr Index kMaxInputLength = Index(1) << 20;

namespace detail {
/// Bytes one forward needs for `batch` sequences of `len` tokens, an estimate for refusing
/// what the machine cannot hold (not an exact account): the batch's input, output and logits,
/// and per item in flight its workspace (k | v and a pre-norm block's normed input: 3·d_model
/// per token; q and z of one block of at most MultiHeadAttention::kQueryRows rows; the
/// feed-forward's hidden layer of at most FeedForward::kRows rows) plus a relative table over
/// 2·len distances (d_model wide at most).
/// `weights`: Model::attention_weights' explicit (len, len) matrices, n_layers · n_heads.
template <class T>
double forward_bytes(const io::ModelConfig& c, Index batch, Index len, int threads,
                     bool weights = false) {
  const double b = double(batch), l = double(len), d = double(c.d_model);
  const double in_flight = double(std::min<Index>(batch, std::max(threads, 1)));
  const double block_rows = std::min(l, double(MultiHeadAttention<T>::kQueryRows));
  double scalars = b * l * (3 * d + double(c.vocab_size.value_or(0))) +
                   in_flight * (l * 5 * d + 2 * block_rows * d +
                                std::min(l, double(FeedForward<T>::kRows)) * double(c.d_ff));
  if (weights) scalars += double(c.n_layers) * double(c.n_heads) * l * l;
  return scalars * double(sizeof(T));
}
/// Physical memory of this machine in bytes, or 0 when the system does not say.
inline double physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<double>(pages) * static_cast<double>(page) : 0.0;
}

/// Whether the position type of `config` takes explicit position ids (the encoding's trait).
inline bool takes_position_ids(const io::ModelConfig& config) {
  return std::visit(
      [](const auto& p) {
        return relpos::takes_position_ids<io::EncodingFor<float, std::decay_t<decltype(p)>>>;
      },
      config.position);
}

/// Model's runtime variant: Encoder<T, E<T>> for each encoding E of a list.
template <class T, class List>
struct EncodersOf;
template <class T, template <class> class... Encodings>
struct EncodersOf<T, EncodingList<Encodings...>> {
  using type = std::variant<Encoder<T, Encodings<T>>...>;
};
}  // namespace detail

/// What a forward pass gives: the encoder output and, with an output head, the logits.
template <Scalar T>
struct ModelOutput {
  Tensor3<T> output;                 // [batch, len, d_model]
  std::optional<Tensor3<T>> logits;  // [batch, len, vocab_size], when config.output_head
};

/// Checks that `file` holds exactly the tensors `config` implies (spec §1): each by name,
/// shape and a floating-point dtype (F32, F64, F16, BF16; converted on load). A missing
/// tensor, a wrong shape or dtype, and a tensor the model does not use are errors naming it.
inline void check_model_tensors(const io::ModelConfig& config, const io::SafetensorsFile& file) {
  const std::vector<io::TensorSpec> expected = io::expected_tensors(config);
  std::set<std::string_view> names;
  for (const io::TensorSpec& spec : expected) {
    names.insert(spec.name);
    if (!file.contains(spec.name)) {
      file.fail(spec.name, "missing: the config (position type " +
                               std::string(config.position_type()) + ") needs it, with shape " +
                               io::shape_string(spec.shape));
    }
    const io::TensorInfo& info = file.info(spec.name);
    if (info.dtype != io::DType::F32 && info.dtype != io::DType::F64 &&
        info.dtype != io::DType::F16 && info.dtype != io::DType::BF16) {
      file.fail(spec.name, "dtype " + std::string(io::dtype_name(info.dtype)) +
                               " is not a weight type (F32, F64, F16 or BF16)");
    }
    const bool rows_any = spec.shape.size() == 2 && spec.shape[0] == io::kAnyRows &&
                          info.shape.size() == 2 && info.shape[0] >= 1 &&
                          info.shape[1] == spec.shape[1];
    if (info.shape != spec.shape && !rows_any) {
      file.fail(spec.name, "expected " + io::shape_string(spec.shape) + ", got " +
                               io::shape_string(info.shape));
    }
  }
  for (const std::string& name : file.names()) {
    if (names.count(name) == 0) {
      file.fail(name, "not used by this model (position type " +
                          std::string(config.position_type()) +
                          "): the file does not match config.json");
    }
  }
}

/// A model whose configuration is known only at run time. T is float or double.
template <Scalar T>
class Model {
 public:
  /// One Encoder<T, E<T>> per position type of PositionEncodings (io/position_config.hpp).
  using Encoders = typename detail::EncodersOf<T, PositionEncodings>::type;

  /// A model folder: `dir/config.json` and `dir/model.safetensors` (spec §1), or a Hugging
  /// Face checkpoint folder, whose config.json has `model_type` (spec §7,
  /// io/hf_checkpoint.hpp).
  static Model load(const std::filesystem::path& dir);
  /// The same from bytes in memory (an embedded model); `name` prefixes error messages.
  static Model from_bytes(std::string_view config_json, std::vector<unsigned char> safetensors,
                          const std::string& name = "<memory>");
  /// From a parsed config and an opened weights file; every tensor is checked first.
  Model(const io::ModelConfig& config, const io::SafetensorsFile& file);
  /// A model built in code: `encoder` (built with Encoder(config, make_encoding) and filled,
  /// or loaded) under the config that describes it. Checked as load checks what it builds:
  /// the config (io::validate), the encoder's position type and hyper-parameters against
  /// it, and Encoder::validate(). The encoding's own parameters (base, K, ...) are the
  /// encoder's: they are not compared with config.position.
  template <class Enc>
  Model(const io::ModelConfig& config, Encoder<T, Enc> encoder)
      : config_(config), encoder_(checked(config, std::move(encoder))) {}

  const io::ModelConfig& config() const { return config_; }

  /// f(encoder) with the Encoder<T, Enc> this model holds (its position type's), for code that
  /// works on the compile-time encoder, e.g. training (training.hpp). Returns what f returns.
  template <class F>
  decltype(auto) visit(F&& f) const {
    return std::visit(std::forward<F>(f), encoder_);
  }

  /// Overwrites the weights with `tensors`, a model file's tensors by name and shape (spec §1;
  /// TrainableModel's parameters after an optimizer step), in place: each dense weight
  /// (embeddings, projections, feed-forward, norms, head) is copied into the storage it has.
  /// An encoding's own tensors (learned, t5, kerple, xl, additive's learned source) are copied
  /// into its tables in place too, and what derives from them (xl's rows r(c)) is computed
  /// again in the memory it has, when nothing outside this model holds them; a copy of the
  /// model, or a reader of its rows (DistanceRows, RelativeView), makes the encodings be
  /// rebuilt instead (copy-on-write), as is deberta's always. So once warm it allocates nothing
  /// but for deberta. A tensor the model has that is missing, of another shape, or outside its
  /// domain (kerple's r1, r2) is an Error naming it, raised before anything changes; tensors
  /// the model does not have are not read.
  void assign_weights(std::span<const NamedTensor<T>> tensors);

  /// Activations [batch, len, d_model]; optional key padding mask and position ids
  /// [batch, len] (spec §2). Throws Error naming the input that is wrong.
  ModelOutput<T> forward(const Tensor3<T>& input, const PaddingMask* padding_mask = nullptr,
                         const PositionIds* position_ids = nullptr) const;
  /// The same with the input given up (std::move(input)): computed in its memory, no copy of
  /// the activations (what a long input needs; relpos-encode uses it).
  ModelOutput<T> forward(Tensor3<T>&& input, const PaddingMask* padding_mask = nullptr,
                         const PositionIds* position_ids = nullptr) const;

  /// The attention weights of every layer and head for one sequence of token ids
  /// [1, len]: [layer][head] → (len, len), row i = query i (rows sum to 1, or are 0 where a
  /// query sees no key). For pictures and inspection; it allocates.
  std::vector<std::vector<Matrix<T>>> attention_weights(const TokenIds& ids) const;

  /// Token ids [batch, len], each in [0, vocab_size) (needs vocab_size); token types
  /// [batch, len] for a model with type_vocab_size (spec §7; null: all 0).
  ModelOutput<T> forward(const TokenIds& ids, const PaddingMask* padding_mask = nullptr,
                         const PositionIds* position_ids = nullptr,
                         const TokenIds* token_type_ids = nullptr) const;

 private:
  void check_sizes(const char* what, Index batch, Index len, const PositionIds* ids,
                   bool weights = false) const {
    if (batch < 1 || len < 1) {
      throw Error(std::string(what) + ": expected batch >= 1 and len >= 1, got batch " +
                  std::to_string(batch) + ", len " + std::to_string(len));
    }
    if (len > kMaxInputLength) {
      throw Error(std::string(what) + ": len " + std::to_string(len) + " exceeds the limit " +
                  std::to_string(kMaxInputLength) + " (relpos::kMaxInputLength)");
    }
    // refuse before allocating what the machine does not have (hostile or mistaken lengths)
    const double need = detail::forward_bytes<T>(config_, batch, len, num_threads(), weights);
    const double have = detail::physical_memory_bytes();
    if (have > 0 && need > have) {
      throw Error(std::string(what) + ": len " + std::to_string(len) + " needs about " +
                  std::to_string(static_cast<long long>(need / (1 << 20))) + " MiB with " +
                  std::to_string(num_threads()) + " threads, more than this machine's " +
                  std::to_string(static_cast<long long>(have / (1 << 20))) + " MiB");
    }
    // e.g. additive is defined over indices (spec §4); refused here, before any work
    if (ids != nullptr && !detail::takes_position_ids(config_))
      throw Error("position_ids: not supported with position type " +
                  std::string(config_.position_type()));
  }

  void check_input(const Tensor3<T>& input, const PositionIds* position_ids) const {
    check_sizes("input", input.dimension(0), input.dimension(1), position_ids);
    if (input.dimension(2) != config_.d_model) {
      throw Error("input: expected [batch, len, " + std::to_string(config_.d_model) + "], got [" +
                  std::to_string(input.dimension(0)) + ", " + std::to_string(input.dimension(1)) +
                  ", " + std::to_string(input.dimension(2)) + "]");
    }
  }

  static BatchInputs inputs(const PaddingMask* padding_mask, const PositionIds* position_ids) {
    BatchInputs in;
    if (padding_mask != nullptr) in.padding = *padding_mask;
    if (position_ids != nullptr) in.positions = *position_ids;
    return in;
  }

  template <class Enc>
  static Encoders checked(const io::ModelConfig& c, Encoder<T, Enc> encoder) {
    io::validate(c);
    using P = typename Enc::Config;
    if (!std::holds_alternative<P>(c.position)) {
      throw Error("position.type: the config says \"" + std::string(c.position_type()) +
                  "\", the encoder's encoding is \"" + Enc::name + "\"");
    }
    const EncoderConfig want = encoder_config(c), &got = encoder.config;
    const auto differ = [](const char* key, const std::string& w, const std::string& g) {
      throw Error(std::string(key) + ": the config says " + w + ", the encoder has " + g);
    };
    const auto str = [](auto v) {
      if constexpr (std::is_same_v<decltype(v), bool>)
        return std::string(v ? "true" : "false");
      else
        return std::to_string(v);
    };
    if (got.d_model != want.d_model) differ("d_model", str(want.d_model), str(got.d_model));
    if (got.n_heads != want.n_heads) differ("n_heads", str(want.n_heads), str(got.n_heads));
    if (got.n_layers != want.n_layers) differ("n_layers", str(want.n_layers), str(got.n_layers));
    if (got.d_ff != want.d_ff) differ("d_ff", str(want.d_ff), str(got.d_ff));
    if (got.activation != want.activation) differ("activation", "another", "its own");
    if (got.norm_first != want.norm_first)
      differ("norm_first", str(want.norm_first), str(got.norm_first));
    if (got.layer_norm_eps != want.layer_norm_eps)
      differ("layer_norm_eps", str(want.layer_norm_eps), str(got.layer_norm_eps));
    if (got.final_norm != want.final_norm)
      differ("final_norm", str(want.final_norm), str(got.final_norm));
    if (got.causal != want.causal) differ("causal", str(want.causal), str(got.causal));
    if (got.vocab_size != want.vocab_size)
      differ("vocab_size", str(want.vocab_size), str(got.vocab_size));
    if (got.output_head != want.output_head)
      differ("output_head", str(want.output_head), str(got.output_head));
    if (got.norm != want.norm) differ("norm", norm_name(want.norm), norm_name(got.norm));
    if (got.bias != want.bias) differ("bias", str(want.bias), str(got.bias));
    if (got.gated != want.gated)
      differ("ffn", want.gated ? "gated" : "plain", got.gated ? "gated" : "plain");
    if (got.embed_norm != want.embed_norm)
      differ("embed_norm", str(want.embed_norm), str(got.embed_norm));
    if (got.pos_embed_offset != want.pos_embed_offset) {
      differ("pos_embed_offset", want.pos_embed_offset ? str(*want.pos_embed_offset) : "absent",
             got.pos_embed_offset ? str(*got.pos_embed_offset) : "absent");
    }
    if (got.type_vocab_size != want.type_vocab_size)
      differ("type_vocab_size", str(want.type_vocab_size), str(got.type_vocab_size));
    encoder.validate();
    return Encoders(std::move(encoder));
  }

  template <class E>
  static ModelOutput<T> finish(const E& encoder, Tensor3<T> hidden) {
    ModelOutput<T> out;
    if (encoder.config.output_head) {
      out.logits.emplace();
      encoder.logits(hidden, *out.logits);
    }
    out.output = std::move(hidden);
    return out;
  }

  static std::string norm_name(NormKind k) { return k == NormKind::rms ? "rms" : "layer"; }

  static EncoderConfig encoder_config(const io::ModelConfig& c) {
    EncoderConfig e;
    e.d_model = c.d_model;
    e.n_heads = c.n_heads;
    e.n_layers = c.n_layers;
    e.d_ff = c.d_ff;
    e.activation = c.activation;
    e.norm_first = c.norm_first;
    e.layer_norm_eps = c.layer_norm_eps;
    e.final_norm = c.final_norm;
    e.causal = c.causal;
    e.vocab_size = c.vocab_size.value_or(0);
    e.output_head = c.output_head;
    e.norm = c.norm;
    e.bias = c.bias;
    e.gated = c.gated;
    e.embed_norm = c.embed_norm;
    e.pos_embed_offset = c.pos_embed_offset;
    e.type_vocab_size = c.type_vocab_size.value_or(0);
    // pos_embed_rows (P) is not a config key: the file's or the encoder's table gives it
    return e;
  }

  static Encoders build(const io::ModelConfig& c, const io::SafetensorsFile& file);

  io::ModelConfig config_;
  Encoders encoder_;
};

// The members that instantiate every position type's encoder are defined out of the class, so
// they are not inline: `extern template class relpos::Model<float>;` then keeps a translation
// unit from compiling them again (README "Compile time").

template <Scalar T>
void Model<T>::assign_weights(std::span<const NamedTensor<T>> tensors) {
  // the tensor of `name`, searched from the one after the last found (both lists follow
  // io::expected_tensors' order, so a walk is one pass)
  std::size_t next = 0;
  const auto find = [&](const TensorName& name) -> const NamedTensor<T>& {
    for (std::size_t k = 0; k < tensors.size(); ++k) {
      const std::size_t at = (next + k) % tensors.size();
      if (name == tensors[at].name) {
        next = at + 1;
        return tensors[at];
      }
    }
    throw Error(name.str() + ": missing (the model has this tensor)");
  };
  std::visit(
      [&](auto& encoder) {
        using Enc = std::decay_t<decltype(encoder.layers.front().self_attn.encoding)>;
        // the encodings first (their own tensors' checks); nothing of the model changes until
        // every check has passed
        const detail::NamedTensors<T> source(tensors);
        const auto& p = std::get<typename Enc::Config>(config_.position);
        const ModelShape m = config_.position_context();
        // in place when the encoding can take its tensors so and nobody outside this model
        // holds them (copy-on-write: a copied model, or a reader of its rows, keeps its own),
        // else built again as a loaded model builds them
        bool in_place = false;
        std::vector<Enc> fresh;
        // an encoding has tensors when it declares them (io::position_tensors' test)
        if constexpr (
            requires { Enc::tensors(p, m); } || requires { Enc::layer_tensors(p, m, 0); }) {
          if constexpr (TakesTensorsInPlace<Enc>) {
            in_place = std::ranges::all_of(encoder.layers, [&](const auto& layer) {
              return layer.self_attn.encoding.owns_tensors(config_.n_layers);
            });
            for (Index n = 0; in_place && n < config_.n_layers; ++n)
              encoder.layers[static_cast<std::size_t>(n)].self_attn.encoding.check_assign(n,
                                                                                          source);
          }
          if (!in_place) {
            auto make = Enc::loader(p, m, source);
            for (Index n = 0; n < config_.n_layers; ++n) fresh.push_back(make(n));
          }
        }
        encoder.for_each_weight([&](const TensorName& name, T*, Index size) {
          const NamedTensor<T>& t = find(name);
          if (t.values.size() != size) {
            throw Error(name.str() + ": expected " + std::to_string(size) + " values, got " +
                        std::to_string(t.values.size()));
          }
        });
        next = 0;  // the copy walks the same order again
        encoder.for_each_weight([&](const TensorName& name, T* data, Index size) {
          std::copy_n(find(name).values.data(), size, data);
        });
        if (in_place) {
          if constexpr (TakesTensorsInPlace<Enc>) {
            for (Index n = 0; n < config_.n_layers; ++n)
              encoder.layers[static_cast<std::size_t>(n)].self_attn.encoding.assign(n, source);
          }
        }
        for (std::size_t n = 0; n < fresh.size(); ++n)
          encoder.layers[n].self_attn.encoding = std::move(fresh[n]);
      },
      encoder_);
}

template <Scalar T>
Model<T> Model<T>::load(const std::filesystem::path& dir) {
  if (!std::filesystem::is_directory(dir))
    throw Error(dir.string() + ": not a model folder (expected config.json and model.safetensors)");
  if (io::is_hf_checkpoint(dir)) {
    const io::HfCheckpoint hf = io::load_hf_checkpoint(dir);
    return Model(hf.config, hf.weights);
  }
  const io::ModelConfig config = io::load_config(dir / "config.json");
  return Model(config, io::SafetensorsFile::open((dir / "model.safetensors").string()));
}

template <Scalar T>
Model<T> Model<T>::from_bytes(std::string_view config_json, std::vector<unsigned char> safetensors,
                              const std::string& name) {
  const io::ModelConfig config = io::parse_config(config_json, name + "/config.json");
  return Model(
      config, io::SafetensorsFile::from_bytes(std::move(safetensors), name + "/model.safetensors"));
}

template <Scalar T>
Model<T>::Model(const io::ModelConfig& config, const io::SafetensorsFile& file)
    : config_(config), encoder_(build(config, file)) {}

template <Scalar T>
ModelOutput<T> Model<T>::forward(const Tensor3<T>& input, const PaddingMask* padding_mask,
                                 const PositionIds* position_ids) const {
  check_input(input, position_ids);
  const BatchInputs in = inputs(padding_mask, position_ids);
  return std::visit([&](const auto& e) { return finish(e, e.forward(input, in)); }, encoder_);
}

template <Scalar T>
ModelOutput<T> Model<T>::forward(Tensor3<T>&& input, const PaddingMask* padding_mask,
                                 const PositionIds* position_ids) const {
  check_input(input, position_ids);
  const BatchInputs in = inputs(padding_mask, position_ids);
  return std::visit([&](const auto& e) { return finish(e, e.forward(std::move(input), in)); },
                    encoder_);
}

template <Scalar T>
std::vector<std::vector<Matrix<T>>> Model<T>::attention_weights(const TokenIds& ids) const {
  if (ids.rows() != 1) {
    throw Error("attention_weights: expected input_ids [1, len], got [" +
                std::to_string(ids.rows()) + ", " + std::to_string(ids.cols()) + "]");
  }
  if (!config_.vocab_size) throw Error("input_ids: this model has no vocab_size, give `input`");
  check_sizes("input_ids", ids.rows(), ids.cols(), nullptr, /*weights=*/true);
  std::vector<std::vector<Matrix<T>>> record;
  Workspace<T> ws;
  ws.ensure_slots(1);
  ws.item(0).attention_record = &record;  // batch 1 runs in slot 0
  Tensor3<T> hidden;
  std::visit([&](const auto& e) { e.forward_ids(ids, hidden, BatchInputs{}, ws); }, encoder_);
  return record;
}

template <Scalar T>
ModelOutput<T> Model<T>::forward(const TokenIds& ids, const PaddingMask* padding_mask,
                                 const PositionIds* position_ids,
                                 const TokenIds* token_type_ids) const {
  if (!config_.vocab_size) throw Error("input_ids: this model has no vocab_size, give `input`");
  check_sizes("input_ids", ids.rows(), ids.cols(), position_ids);
  const BatchInputs in = inputs(padding_mask, position_ids);
  return std::visit(
      [&](const auto& e) { return finish(e, e.forward_ids(ids, in, token_type_ids)); }, encoder_);
}

template <Scalar T>
typename Model<T>::Encoders Model<T>::build(const io::ModelConfig& c,
                                            const io::SafetensorsFile& file) {
  io::validate(c);
  check_model_tensors(c, file);
  EncoderConfig e = encoder_config(c);
  if (c.pos_embed_offset) e.pos_embed_rows = file.info("pos_embed.weight").shape[0];
  const ModelShape shape = c.position_context();
  return std::visit(
      [&](const auto& p) -> Encoders {
        using Enc = io::EncodingFor<T, std::decay_t<decltype(p)>>;
        return Encoder<T, Enc>::load(file, e, Enc::loader(p, shape, file));
      },
      c.position);
}

}  // namespace relpos
