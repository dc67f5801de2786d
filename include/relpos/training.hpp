// SPDX-License-Identifier: MIT
// Training at the level of a whole model (spec §6): the loss of a batch (token cross-entropy
// with ignore −100 through the output head, or the mean squared error of the output) and its
// gradient for every tensor of the model file, under the file's names and shapes, for the
// runtime Model<T> whatever its position type. The modules' backwards (encoder_grad.hpp,
// embedding_grad.hpp, output_head_grad.hpp, loss.hpp) run per batch item in parallel; each item
// gets gradients of its own, summed in item order, so the result is the same bits for any
// thread count. TrainableModel keeps the parameters as named tensors an optimizer can update in
// place, copies them into its Model, and writes the trained model folder; fit() is the AdamW
// loop of `relpos-train fit`.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include <relpos/attention_grad.hpp>
#include <relpos/backward_workspace.hpp>
#include <relpos/core.hpp>
#include <relpos/detail/gemm.hpp>
#include <relpos/embedding_grad.hpp>
#include <relpos/encoder.hpp>
#include <relpos/encoder_grad.hpp>
#include <relpos/io/config.hpp>
#include <relpos/io/hf_checkpoint.hpp>
#include <relpos/io/safetensors.hpp>
#include <relpos/io/safetensors_writer.hpp>
#include <relpos/loss.hpp>
#include <relpos/model.hpp>
#include <relpos/model_io.hpp>
#include <relpos/optimizer.hpp>
#include <relpos/output_head_grad.hpp>
#include <relpos/workspace.hpp>

namespace relpos {

/// ∂L/∂ of every tensor of a model file (spec §6: `grad.NAME`, NAME's shape), in the order of
/// io::expected_tensors, and ∂L/∂input when the batch gave a float `input` (`grad.input`).
/// A tensor the loss does not reach (the head under an MSE loss, the embedding under a float
/// input) has a zero gradient, as PyTorch's (None) means.
template <Scalar T>
struct Gradients {
  std::vector<NamedTensor<T>> tensors;
  std::optional<Tensor3<T>> input;  // [batch, len, d_model]

  /// The gradient named `name`; Error when the model has no such tensor.
  const NamedTensor<T>& at(std::string_view name) const {
    for (const NamedTensor<T>& t : tensors) {
      if (t.name == name) return t;
    }
    throw Error("gradients: no tensor \"" + std::string(name) + "\" in this model");
  }
  /// ‖g‖₂ over every tensor (not the input), in double.
  double norm() const {
    double s = 0;
    for (const NamedTensor<T>& t : tensors) {
      for (Index k = 0; k < t.values.size(); ++k) {
        const double v = static_cast<double>(t.values[k]);
        s += v * v;
      }
    }
    return std::sqrt(s);
  }
};

/// One batch for training: exactly one of `input` ([batch, len, d_model]) and `input_ids`
/// ([batch, len]), exactly one of `targets` ([batch, len], classes or −100, needs the output
/// head: cross-entropy) and `target` ([batch, len, d_model]: MSE of the output), and the
/// optional padding mask, position ids and token types of the forward (spec §2, §5, §7). The
/// pointers are borrowed: the caller keeps the arrays alive during the call.
template <Scalar T>
struct TrainingBatch {
  const Tensor3<T>* input = nullptr;
  const TokenIds* input_ids = nullptr;
  const PaddingMask* padding_mask = nullptr;
  const PositionIds* position_ids = nullptr;
  const TokenIds* token_type_ids = nullptr;
  const TokenIds* targets = nullptr;
  const Tensor3<T>* target = nullptr;

  Index batch() const { return input ? input->dimension(0) : input_ids ? input_ids->rows() : 0; }
  Index len() const { return input ? input->dimension(1) : input_ids ? input_ids->cols() : 0; }
};

namespace detail {

// Every tensor of `config`'s file, zero, with pos_embed.weight's P rows (not a config key).
template <Scalar T>
std::vector<NamedTensor<T>> zero_tensors(const io::ModelConfig& config, Index pos_embed_rows) {
  std::vector<NamedTensor<T>> out;
  for (io::TensorSpec& spec : io::expected_tensors(config)) {
    if (!spec.shape.empty() && spec.shape[0] == io::kAnyRows) spec.shape[0] = pos_embed_rows;
    std::int64_t n = 1;
    for (const std::int64_t s : spec.shape) n *= s;
    out.push_back({std::move(spec.name), std::move(spec.shape), Vector<T>::Zero(n)});
  }
  return out;
}

// One item's gradients, before they are summed over the batch.
template <Scalar T>
struct ItemGradients {
  EncoderGrad<T> encoder;
  EmbeddingGrad<T> embedding;
  OutputHeadGrad<T> head;
};

// Checks a training batch against the encoder before any work (Error naming the tensor).
template <Scalar T, Encoding Enc>
void check_training_batch(const Encoder<T, Enc>& e, const io::ModelConfig& config,
                          const TrainingBatch<T>& tb, const BatchInputs& in) {
  if ((tb.input != nullptr) == (tb.input_ids != nullptr)) {
    throw Error(tb.input != nullptr ? "training batch: both \"input\" and \"input_ids\"; give one"
                                    : "training batch: neither \"input\" nor \"input_ids\"");
  }
  if ((tb.targets != nullptr) == (tb.target != nullptr)) {
    throw Error(tb.targets != nullptr
                    ? "training batch: both \"targets\" and \"target\"; give one (spec §6)"
                    : "training batch: neither \"targets\" (I64 [batch, len], cross-entropy) "
                      "nor \"target\" (F32 [batch, len, d_model], mean squared error)");
  }
  const Index batch = tb.batch(), len = tb.len(), d = e.d_model();
  const char* what = tb.input != nullptr ? "input" : "input_ids";
  if (batch < 1 || len < 1) {
    throw Error(std::string(what) + ": expected batch >= 1 and len >= 1, got batch " +
                std::to_string(batch) + ", len " + std::to_string(len));
  }
  if (len > kMaxInputLength) {
    throw Error(std::string(what) + ": len " + std::to_string(len) + " exceeds the limit " +
                std::to_string(kMaxInputLength) + " (relpos::kMaxInputLength)");
  }
  if (tb.input != nullptr && tb.input->dimension(2) != d) {
    throw Error("input: expected [batch, len, " + std::to_string(d) + "], got " +
                shape_string(batch, len) + " by " + std::to_string(tb.input->dimension(2)));
  }
  in.check(batch, len);
  if (tb.position_ids != nullptr && !takes_position_ids(config)) {
    throw Error("position_ids: not supported with position type " +
                std::string(config.position_type()));
  }
  if (tb.input != nullptr && tb.token_type_ids != nullptr) {
    throw Error("token_type_ids: needs \"input_ids\": a float \"input\" skips the embedding stage");
  }
  if (tb.input_ids != nullptr) {
    for (Index b = 0; b < batch; ++b) {
      check_embedding_item(e, *tb.input_ids, b, in.item(b, len), tb.token_type_ids, len, d,
                           "input_ids");
    }
  }
  if (tb.targets != nullptr) {
    if (!e.config.output_head) {
      throw Error(
          "targets: the cross-entropy needs a model with an output head (output_head); "
          "give \"target\" for the mean squared error of the output");
    }
    Index counted = 0;
    check_targets(*tb.targets, batch, len, e.config.vocab_size, counted);
  } else if (tb.target->dimension(0) != batch || tb.target->dimension(1) != len ||
             tb.target->dimension(2) != d) {
    throw Error("target: expected [" + std::to_string(batch) + ", " + std::to_string(len) + ", " +
                std::to_string(d) + "] (the output's shape), got [" +
                std::to_string(tb.target->dimension(0)) + ", " +
                std::to_string(tb.target->dimension(1)) + ", " +
                std::to_string(tb.target->dimension(2)) + "]");
  }
}

}  // namespace detail

/// What loss_and_gradients keeps between calls so that a second call of the same model and
/// batch shape allocates nothing: the forward's and backward's scratch (one per slot of the
/// batch loop), the activations and the state saved for backward, each item's gradients, and
/// where each of them goes in Gradients. Serves one model (another model, or another batch
/// size or kind of batch, resets it: one cold call).
template <Scalar T>
struct TrainingWorkspace {
  Workspace<T> forward;
  std::vector<BackwardWorkspace<T>> backward;  // per slot of the items' loop
  std::vector<Matrix<T>> dh;                   // per slot: (len, d_model) ∂L/∂ of the stack
  Tensor3<T> hidden, logits, dout;             // [batch, len, d_model | vocab_size]
  std::vector<EncoderSaved<T>> saved;          // [batch]
  std::vector<EmbeddingSaved<T>> embedding_saved;
  std::vector<detail::ItemGradients<T>> item_grads;  // [batch]
  // Each item's gradients as (data, size, index in Gradients::tensors), in one fixed order,
  // gathered by name once (the names are built as strings, so not in every call)
  struct Slice {
    T* data;
    Index size;
    std::size_t tensor;
  };
  std::vector<std::vector<Slice>> slices;  // [batch]
  std::vector<Index> tensor_sizes;         // Gradients::tensors' sizes, in order
  const void* layout_of = nullptr;         // the encoder the layout was gathered for
  bool layout_ids = false, layout_ce = false;
};

namespace detail {

template <Scalar T, Encoding Enc>
T encoder_loss_and_gradients(const Encoder<T, Enc>& e, const io::ModelConfig& config,
                             const TrainingBatch<T>& tb, Gradients<T>& grads,
                             TrainingWorkspace<T>& ws) {
  if constexpr (!attention_backward_supported<Enc>) {
    (void)e, (void)tb, (void)grads, (void)ws;
    throw Error("training: position type " + std::string(config.position_type()) +
                " has no backward yet (its attention terms are not differentiated)");
  } else {
    BatchInputs in;
    if (tb.padding_mask != nullptr) in.padding = *tb.padding_mask;
    if (tb.position_ids != nullptr) in.positions = *tb.position_ids;
    check_training_batch(e, config, tb, in);
    e.validate();
    const Index batch = tb.batch(), len = tb.len(), d = e.d_model();
    const bool ids = tb.input_ids != nullptr, ce = tb.targets != nullptr;
    const auto nb = static_cast<std::size_t>(batch);

    // the item gradients and their layout serve one model and one kind of batch
    if (ws.layout_of != &e || ws.layout_ids != ids || ws.layout_ce != ce ||
        ws.item_grads.size() != nb) {
      ws.item_grads.clear();
      ws.item_grads.resize(nb);
      ws.slices.clear();
      ws.layout_of = &e;
      ws.layout_ids = ids;
      ws.layout_ce = ce;
    }

    // forward, keeping what backward needs: items in parallel, each on its own state
    Tensor3<T>& hidden = ws.hidden;
    Tensor3<T>& logits = ws.logits;
    Tensor3<T>& dout = ws.dout;
    resize_like(hidden, batch, len, d);
    if (ce) resize_like(logits, batch, len, e.config.vocab_size);
    ws.saved.resize(nb);
    ws.embedding_saved.resize(ids ? nb : 0);
    ws.forward.for_each_item(batch, [&](Index b, SequenceWorkspace<T>& sw) {
      const auto k = static_cast<std::size_t>(b);
      const SequenceInputs seq = in.item(b, len);
      auto h = item(hidden, b);  // (len, d_model)
      if (ids) {
        embedding_forward_saving(e, *tb.input_ids, b, seq, tb.token_type_ids, h,
                                 ws.embedding_saved[k]);
      } else {
        h = item(*tb.input, b);
      }
      forward_saving(e, h, seq, sw, ws.saved[k]);
      if (ce) {
        auto z = item(logits, b);  // (len, vocab_size)
        linear<T>(h, e.head_weight, e.head_bias, z);
      }
    });

    // the loss over the whole batch, in one sequential pass (its sum does not depend on threads)
    const T loss = ce ? cross_entropy(logits, *tb.targets, dout)
                      : mean_squared_error(hidden, *tb.target, dout);

    // backward, items in parallel, each into gradients of its own (zeroed: they accumulate)
    for (auto& slices : ws.slices) {
      for (const auto& s : slices) std::fill(s.data, s.data + s.size, T(0));
    }
    if (ids) {
      grads.input.reset();
    } else if (!grads.input || grads.input->dimension(0) != batch ||
               grads.input->dimension(1) != len || grads.input->dimension(2) != d) {
      grads.input.emplace(batch, len, d);
    }
    const int slots = slots_needed();
    if (ws.backward.size() < static_cast<std::size_t>(slots)) {
      ws.backward.resize(static_cast<std::size_t>(slots));
      ws.dh.resize(static_cast<std::size_t>(slots));
    }
    auto item_backward = [&](Index b, int slot) {
      const auto k = static_cast<std::size_t>(b);
      const SequenceInputs seq = in.item(b, len);
      Matrix<T>& dh = ws.dh[static_cast<std::size_t>(slot)];
      dh.resize(len, d);  // ∂L/∂(the stack's output), then ∂L/∂(its input)
      if (ce) {
        // logits = hidden·headᵀ + bias
        output_head_backward<T>(e.head_weight, item(hidden, b), item(dout, b), dh,
                                ws.item_grads[k].head);
      } else {
        dh = item(dout, b);
      }
      backward(e, ws.saved[k], seq, dh, ws.item_grads[k].encoder,
               ws.backward[static_cast<std::size_t>(slot)]);
      if (ids) {
        embedding_backward(e, ws.embedding_saved[k], *tb.input_ids, b, seq, tb.token_type_ids, dh,
                           ws.item_grads[k].embedding);
      } else {
        item(*grads.input, b) = dh;
      }
    };
    if (batch < slots) {
      // fewer items than threads: one item at a time, each with its heads in parallel
      // (attention_grad.hpp); the same bits either way
      for (Index b = 0; b < batch; ++b) item_backward(b, 0);
    } else {
      parallel_for(batch, item_backward);
    }

    // Σ over items in item order: the same bits for any thread count
    bool same_tensors = !ws.slices.empty() && grads.tensors.size() == ws.tensor_sizes.size();
    for (std::size_t n = 0; same_tensors && n < grads.tensors.size(); ++n)
      same_tensors = grads.tensors[n].values.size() == ws.tensor_sizes[n];
    if (!same_tensors) grads.tensors = zero_tensors<T>(config, e.config.pos_embed_rows);
    if (ws.slices.empty()) {
      // the first call: every tensor's place by name, and each item's gradients in it
      ws.tensor_sizes.clear();
      for (const NamedTensor<T>& t : grads.tensors) ws.tensor_sizes.push_back(t.values.size());
      std::unordered_map<std::string, std::size_t> index;
      for (std::size_t n = 0; n < grads.tensors.size(); ++n)
        index.emplace(grads.tensors[n].name, n);
      ws.slices.resize(nb);
      for (std::size_t k = 0; k < nb; ++k) {
        auto& slices = ws.slices[k];
        const auto add = [&](const std::string& name, auto& g) {
          if (g.size() == 0) return;  // not reached by this batch (e.g. the embedding of `input`)
          const auto it = index.find(name);
          RELPOS_ASSERT(it != index.end(), "training: a gradient with no tensor of the model");
          RELPOS_ASSERT(grads.tensors[it->second].values.size() == g.size(),
                        "training: a gradient of another size");
          slices.push_back({g.data(), static_cast<Index>(g.size()), it->second});
        };
        ItemGradients<T>& g = ws.item_grads[k];
        g.encoder.for_each(add);
        if (ids) g.embedding.for_each(add);
        if (ce) g.head.for_each(add);
      }
    } else if (same_tensors) {
      // the same model's gradients (zero_tensors' names and shapes): zeroed in place
      for (NamedTensor<T>& t : grads.tensors) t.values.setZero();
    }
    for (const auto& slices : ws.slices) {
      for (const auto& s : slices) {
        // row-major Matrix and Vector alike: elements in the file's order
        grads.tensors[s.tensor].values += Eigen::Map<const Vector<T>>(s.data, s.size);
      }
    }
    return loss;
  }
}

}  // namespace detail

/// The loss of spec §6 for `batch` (cross-entropy of the logits against `targets`, or MSE of
/// the output against `target`) and its gradient for every tensor of the model into `grads`
/// (replaced), ∂L/∂input too when the batch gives `input`. Every position type has a backward;
/// a malformed batch throws Error naming what is wrong, before any work.
template <Scalar T>
T loss_and_gradients(const Model<T>& model, const TrainingBatch<T>& batch, Gradients<T>& grads,
                     TrainingWorkspace<T>& ws) {
  return model.visit([&](const auto& encoder) {
    return detail::encoder_loss_and_gradients(encoder, model.config(), batch, grads, ws);
  });
}
/// As above, with a workspace of its own (allocated per call).
template <Scalar T>
T loss_and_gradients(const Model<T>& model, const TrainingBatch<T>& batch, Gradients<T>& grads) {
  TrainingWorkspace<T> ws;
  return loss_and_gradients(model, batch, grads, ws);
}

/// A training file's contents (spec §6): the inputs of spec §5 and exactly one of `targets`
/// and `target`. batch() lends them as a TrainingBatch.
template <Scalar T>
struct TrainingData {
  ModelInputs<T> inputs;
  std::optional<TokenIds> targets;   // [rows, len]: classes in [0, vocab_size) or −100
  std::optional<Tensor3<T>> target;  // [rows, len, d_model]

  Index rows() const { return inputs.batch(); }
  TrainingBatch<T> batch() const {
    TrainingBatch<T> b;
    if (inputs.input) b.input = &*inputs.input;
    if (inputs.input_ids) b.input_ids = &*inputs.input_ids;
    if (inputs.padding_mask) b.padding_mask = &*inputs.padding_mask;
    if (inputs.position_ids) b.position_ids = &*inputs.position_ids;
    if (inputs.token_type_ids) b.token_type_ids = &*inputs.token_type_ids;
    if (targets) b.targets = &*targets;
    if (target) b.target = &*target;
    return b;
  }
};

namespace detail {
template <class A>
A select_array_rows(const A& a, std::span<const Index> rows) {
  A out(static_cast<Index>(rows.size()), a.cols());
  for (std::size_t r = 0; r < rows.size(); ++r) out.row(static_cast<Index>(r)) = a.row(rows[r]);
  return out;
}
template <Scalar T>
Tensor3<T> select_tensor_rows(const Tensor3<T>& a, std::span<const Index> rows) {
  Tensor3<T> out(static_cast<Index>(rows.size()), a.dimension(1), a.dimension(2));
  for (std::size_t r = 0; r < rows.size(); ++r) item(out, static_cast<Index>(r)) = item(a, rows[r]);
  return out;
}
}  // namespace detail

namespace detail {
// into = a's rows `rows`, in into's storage when it has the shape already (else reallocated);
// empty when a is
template <class A>
void select_rows_into(const std::optional<A>& a, std::span<const Index> rows,
                      std::optional<A>& into) {
  if (!a) {
    into.reset();
    return;
  }
  const auto n = static_cast<Index>(rows.size());
  if (!into || into->rows() != n || into->cols() != a->cols()) into.emplace(n, a->cols());
  for (Index r = 0; r < n; ++r) into->row(r) = a->row(rows[static_cast<std::size_t>(r)]);
}
template <Scalar T>
void select_rows_into(const std::optional<Tensor3<T>>& a, std::span<const Index> rows,
                      std::optional<Tensor3<T>>& into) {
  if (!a) {
    into.reset();
    return;
  }
  const auto n = static_cast<Index>(rows.size());
  if (!into || into->dimension(0) != n || into->dimension(1) != a->dimension(1) ||
      into->dimension(2) != a->dimension(2))
    into.emplace(n, a->dimension(1), a->dimension(2));
  for (Index r = 0; r < n; ++r) item(*into, r) = item(*a, rows[static_cast<std::size_t>(r)]);
}
}  // namespace detail

/// out = the rows `rows` of `data` (each in [0, data.rows()), repeats allowed), in that order,
/// reusing out's storage when its shapes match (a step of `fit` allocates nothing for it).
template <Scalar T>
void select_rows(const TrainingData<T>& data, std::span<const Index> rows, TrainingData<T>& out) {
  for (const Index r : rows) {
    if (r < 0 || r >= data.rows())
      throw Error("select_rows: row " + std::to_string(r) + " is outside [0, " +
                  std::to_string(data.rows()) + ")");
  }
  const ModelInputs<T>& in = data.inputs;
  detail::select_rows_into(in.input, rows, out.inputs.input);
  detail::select_rows_into(in.input_ids, rows, out.inputs.input_ids);
  detail::select_rows_into(in.padding_mask, rows, out.inputs.padding_mask);
  detail::select_rows_into(in.position_ids, rows, out.inputs.position_ids);
  detail::select_rows_into(in.token_type_ids, rows, out.inputs.token_type_ids);
  detail::select_rows_into(data.targets, rows, out.targets);
  detail::select_rows_into(data.target, rows, out.target);
}

/// The rows `rows` of `data` (each in [0, data.rows()), repeats allowed), in that order: the
/// batch of one step of `relpos-train fit`.
template <Scalar T>
TrainingData<T> select_rows(const TrainingData<T>& data, std::span<const Index> rows) {
  TrainingData<T> out;
  select_rows(data, rows, out);
  return out;
}

/// Reads a training file (spec §6): the inputs as read_inputs does (spec §5), and exactly one
/// of `targets` (I64 or I32 [batch, len], needs the output head; each in [0, vocab_size) or
/// −100, at least one counted) and `target` (F32 [batch, len, d_model]). Every error names the
/// file, the tensor and, for a value, its position.
template <Scalar T>
TrainingData<T> read_training_data(const io::SafetensorsFile& file, const io::ModelConfig& config) {
  namespace st = detail::safetensors;
  TrainingData<T> data;
  data.inputs = read_inputs<T>(file, config);
  const Index batch = data.inputs.batch(), len = data.inputs.len();
  const bool has_targets = file.contains("targets"), has_target = file.contains("target");
  if (has_targets == has_target) {
    st::fail(file.path(), "",
             has_targets ? "holds both \"targets\" and \"target\"; give one (spec §6)"
                         : "holds neither \"targets\" (I64 or I32 [batch, len], cross-entropy of "
                           "the logits) nor \"target\" (F32 [batch, len, d_model], mean squared "
                           "error of the output)");
  }
  if (has_targets) {
    const io::TensorInfo& t = file.info("targets");
    detail::check_dtype(file, t, {io::DType::I64, io::DType::I32});
    detail::check_batch_len(file, t, batch, len);
    if (!config.output_head)
      st::fail(file.path(), t.name,
               "needs a model with an output head (output_head); give \"target\" for the "
               "mean squared error of the output");
    const std::vector<std::int64_t> v = file.values<std::int64_t>("targets");
    data.targets = TokenIds(batch, len);
    const std::int64_t vocab = *config.vocab_size;
    Index counted = 0;
    for (Index b = 0; b < batch; ++b) {
      for (Index i = 0; i < len; ++i) {
        const std::int64_t c = v[static_cast<std::size_t>(b * len + i)];
        if (c != kIgnoreTarget && (c < 0 || c >= vocab)) {
          st::fail(file.path(), t.name,
                   "target " + std::to_string(c) + " at " + detail::shape_string(b, i) +
                       " is out of range [0, " + std::to_string(vocab) +
                       ") (vocab_size; -100 = ignored)");
        }
        counted += c != kIgnoreTarget;
        (*data.targets)(b, i) = c;
      }
    }
    if (counted == 0)
      st::fail(file.path(), t.name, "no target to learn from (every position is -100)");
  } else {
    const io::TensorInfo& t = file.info("target");
    detail::check_dtype(file, t, {io::DType::F32});
    if (t.shape != std::vector<std::int64_t>{batch, len, config.d_model}) {
      st::fail(file.path(), t.name,
               "expected [batch, len, d_model] = " +
                   st::shape_string(std::vector<std::int64_t>{batch, len, config.d_model}) +
                   " (the output's shape), got " + st::shape_string(t.shape));
    }
    data.target = file.tensor3<T>("target");
  }
  return data;
}

/// A model being trained: its parameters as named tensors (the model file's, in
/// io::expected_tensors order), which an optimizer updates in place, and the Model<T> built from
/// them, updated in place when they have changed. Writes the trained folder of spec §1.
template <Scalar T>
class TrainableModel {
 public:
  /// A model folder (spec §1), or a Hugging Face checkpoint folder (spec §7), as Model::load.
  static TrainableModel load(const std::filesystem::path& dir) {
    if (!std::filesystem::is_directory(dir))
      throw Error(dir.string() +
                  ": not a model folder (expected config.json and model.safetensors)");
    if (io::is_hf_checkpoint(dir)) {
      io::HfCheckpoint hf = io::load_hf_checkpoint(dir);
      return TrainableModel(hf.config, hf.weights, io::to_json(hf.config).dump(2) + "\n");
    }
    const std::filesystem::path config_path = dir / "config.json";
    const io::ModelConfig config = io::load_config(config_path);
    std::ifstream f(config_path, std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    return TrainableModel(config, io::SafetensorsFile::open((dir / "model.safetensors").string()),
                          std::move(text));
  }

  /// From a parsed config and its weights file (every tensor checked, as Model's constructor);
  /// `config_json` is what save() writes as config.json (empty: io::to_json(config)).
  TrainableModel(const io::ModelConfig& config, const io::SafetensorsFile& file,
                 std::string config_json = {})
      : config_(config), config_json_(std::move(config_json)), model_(config, file) {
    if (config_json_.empty()) config_json_ = io::to_json(config).dump(2) + "\n";
    const Index rows =
        file.contains("pos_embed.weight") ? file.info("pos_embed.weight").shape[0] : Index(0);
    parameters_ = detail::zero_tensors<T>(config, rows);
    for (NamedTensor<T>& p : parameters_) {
      const std::vector<T> v = file.values<T>(p.name);
      p.values = Eigen::Map<const Vector<T>>(v.data(), static_cast<Index>(v.size()));
    }
  }

  const io::ModelConfig& config() const { return config_; }
  const std::vector<NamedTensor<T>>& parameters() const { return parameters_; }

  /// The model of the current parameters: when they changed since the last call, they are
  /// copied into it in place (Model::assign_weights: no allocation once warm, but for deberta,
  /// whose encodings are rebuilt; a copy taken of this model keeps its own tables), and a
  /// parameter whose size f changed is an Error.
  const Model<T>& model() {
    if (stale_) {
      model_.assign_weights(parameters_);
      stale_ = false;
    }
    return model_;
  }

  /// f(NamedTensor<T>&) for every parameter, which f may change in place (an optimizer step);
  /// the model takes them at the next model().
  template <class F>
  void for_each_parameter(F&& f) {
    stale_ = true;
    for (NamedTensor<T>& p : parameters_) f(p);
  }

  /// f(name, value, grad, size) for every parameter and its gradient in `grads` (from
  /// loss_and_gradients of this model): pointers to `size` elements each, the value's mutable.
  template <class F>
  void for_each_parameter(Gradients<T>& grads, F&& f) {
    if (grads.tensors.size() != parameters_.size())
      throw Error("gradients: expected " + std::to_string(parameters_.size()) +
                  " tensors (this model's), got " + std::to_string(grads.tensors.size()));
    stale_ = true;
    for (std::size_t n = 0; n < parameters_.size(); ++n) {
      NamedTensor<T>& p = parameters_[n];
      NamedTensor<T>& g = grads.tensors[n];
      if (g.name != p.name || g.values.size() != p.values.size())
        throw Error("gradients: tensor " + std::to_string(n) + " is \"" + g.name +
                    "\", expected \"" + p.name + "\" of this model");
      f(p.name, p.values.data(), g.values.data(), p.values.size());
    }
  }

  /// The loss and gradients of `batch` for the current parameters (loss_and_gradients).
  T loss_and_gradients(const TrainingBatch<T>& batch, Gradients<T>& grads) {
    return relpos::loss_and_gradients(model(), batch, grads);
  }
  T loss_and_gradients(const TrainingBatch<T>& batch, Gradients<T>& grads,
                       TrainingWorkspace<T>& ws) {
    return relpos::loss_and_gradients(model(), batch, grads, ws);
  }

  /// Keeps the parameters a config requires to be in a domain there after an update: KERPLE's
  /// r1, r2 >= 0.01, and r2 <= 2 in the power form (spec §6), so the model stays loadable.
  void clamp_to_domain() {
    const auto* kerple = std::get_if<io::KerplePosition>(&config_.position);
    if (kerple == nullptr) return;
    const bool power = kerple->form && *kerple->form == KerpleForm::power;
    for (NamedTensor<T>& p : parameters_) {
      if (p.name == "position.kerple_r1" || p.name == "position.kerple_r2") {
        stale_ = true;
        p.values = p.values.cwiseMax(T(0.01));
        if (power && p.name == "position.kerple_r2") p.values = p.values.cwiseMin(T(2));
      }
    }
  }

  /// The parameters as a safetensors file of dtype U (F32 for a model folder).
  template <class U>
  std::vector<unsigned char> bytes() const {
    io::SafetensorsWriter w;
    for (const NamedTensor<T>& p : parameters_) {
      const Vector<U> v = p.values.template cast<U>();
      w.add(p.name, std::span<const U>(v.data(), static_cast<std::size_t>(v.size())), p.shape);
    }
    return w.bytes();
  }

  /// Writes the model folder of spec §1: `dir/config.json` (as read) and
  /// `dir/model.safetensors` (F32), which Model::load reads. The folder is created when
  /// missing; the weights are written atomically, the config last.
  void save(const std::filesystem::path& dir) const {
    const std::vector<unsigned char> data = bytes<float>();
    std::filesystem::create_directories(dir);
    write_file(dir / "model.safetensors", data.data(), data.size());
    write_file(dir / "config.json", config_json_.data(), config_json_.size());
  }

 private:
  // Written to a temporary file beside `path`, then renamed over it.
  static void write_file(const std::filesystem::path& path, const void* data, std::size_t n) {
    const std::filesystem::path tmp = path.string() + ".tmp";
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      out.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
      out.close();
      if (!out) {
        std::error_code ec;
        std::filesystem::remove(tmp, ec);
        throw Error(path.string() + ": cannot write");
      }
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) {
      std::filesystem::remove(tmp, ec);
      throw Error(path.string() + ": cannot write: " + ec.message());
    }
  }

  io::ModelConfig config_;
  std::string config_json_;
  Model<T> model_;
  std::vector<NamedTensor<T>> parameters_;
  bool stale_ = false;
};

/// `relpos-train fit`'s loop (spec §6), the options of its command line.
struct FitOptions {
  Index steps = 1;                    // >= 1
  Index batch = 1;                    // rows per step, in [1, rows of the data]
  AdamWOptions adamw{};               // lr, betas 0.9 / 0.999, eps 1e-8, weight_decay 0.01
  std::optional<double> clip_norm{};  // > 0: clip_grad_norm before each update
};

/// Trains `model` on `data` for options.steps steps of AdamW: step t takes the rows
/// (t·B + i) mod rows for i in [0, B), in that order (no shuffling), computes the loss and the
/// gradients, clips their global norm when asked, updates every parameter, and clamps KERPLE's
/// parameters into their domain (clamp_to_domain). on_step(t, loss) is called after each step
/// with the loss before its update. Options and data are checked before the first step.
template <Scalar T, class OnStep>
void fit(TrainableModel<T>& model, const TrainingData<T>& data, const FitOptions& options,
         OnStep&& on_step) {
  const Index rows = data.rows();
  if (options.steps < 1) throw Error("steps: expected >= 1, got " + std::to_string(options.steps));
  if (options.batch < 1) throw Error("batch: expected >= 1, got " + std::to_string(options.batch));
  if (options.batch > rows) {
    throw Error("batch: " + std::to_string(options.batch) + " is larger than the " +
                std::to_string(rows) + " rows of the training data");
  }
  if (options.clip_norm && !(std::isfinite(*options.clip_norm) && *options.clip_norm > 0)) {
    throw Error("clip_norm: expected a finite number > 0, got " +
                std::to_string(*options.clip_norm));
  }
  AdamW<T> optimizer(options.adamw);
  // kept between steps, so that a warm step reuses their storage
  Gradients<T> grads;
  TrainingWorkspace<T> ws;
  TrainingData<T> step_data;
  std::vector<Index> picked(static_cast<std::size_t>(options.batch));
  std::vector<ParameterRef<T>> params;
  for (Index t = 0; t < options.steps; ++t) {
    for (Index i = 0; i < options.batch; ++i) {
      // (t·B + i) mod rows, without overflow: every product is below rows²
      const Index tb = (t % rows) * (options.batch % rows) % rows;
      picked[static_cast<std::size_t>(i)] = (tb + i) % rows;
    }
    select_rows(data, picked, step_data);
    const T loss = model.loss_and_gradients(step_data.batch(), grads, ws);
    // the names are copied once; later steps only refresh the pointers
    std::size_t n = 0;
    const bool named = !params.empty();
    model.for_each_parameter(grads, [&](const std::string& name, T* value, T* grad, Index size) {
      if (named) {
        RELPOS_ASSERT(n < params.size() && params[n].name == name, "fit: parameters reordered");
        ParameterRef<T>& p = params[n++];
        p.value = value;
        p.grad = grad;
        p.size = size;
      } else {
        params.push_back({name, value, grad, size});
      }
    });
    if (options.clip_norm) clip_grad_norm(params, *options.clip_norm);
    optimizer.step(params);
    model.clamp_to_domain();
    on_step(t, loss);
  }
}

}  // namespace relpos
