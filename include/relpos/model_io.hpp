// SPDX-License-Identifier: MIT
// The input and output files of a model run (spec §5): `input` or `input_ids` with optional
// `padding_mask`, `position_ids` and (spec §7) `token_type_ids` read from a safetensors file and
// checked against the model's config (every error names the file, the tensor and the element),
// UTF-8 text as byte ids, and `output` / `logits` written atomically as F32.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <relpos/core.hpp>
#include <relpos/detail/safetensors_header.hpp>
#include <relpos/detail/shape_checks.hpp>
#include <relpos/encoder.hpp>
#include <relpos/io/config.hpp>
#include <relpos/io/dtype.hpp>
#include <relpos/io/safetensors.hpp>
#include <relpos/io/safetensors_writer.hpp>
#include <relpos/model.hpp>

namespace relpos {

/// One run's inputs: exactly one of `input` and `input_ids`, the others optional.
template <Scalar T>
struct ModelInputs {
  std::optional<Tensor3<T>> input;          // [batch, len, d_model]
  std::optional<TokenIds> input_ids;        // [batch, len], each in [0, vocab_size)
  std::optional<PaddingMask> padding_mask;  // [batch, len], true = padded key
  std::optional<PositionIds> position_ids;  // [batch, len], each >= 0
  std::optional<TokenIds> token_type_ids;   // [batch, len], each in [0, type_vocab_size)

  Index batch() const { return input ? input->dimension(0) : input_ids->rows(); }
  Index len() const { return input ? input->dimension(1) : input_ids->cols(); }
};

namespace detail {

inline void check_dtype(const io::SafetensorsFile& f, const io::TensorInfo& t,
                        std::initializer_list<io::DType> allowed) {
  std::string names;
  for (io::DType d : allowed) {
    if (t.dtype == d) return;
    names += (names.empty() ? "" : " or ") + std::string(io::dtype_name(d));
  }
  safetensors::fail(f.path(), t.name,
                    "expected dtype " + names + ", got " + std::string(io::dtype_name(t.dtype)));
}

inline void check_batch_len(const io::SafetensorsFile& f, const io::TensorInfo& t, Index batch,
                            Index len) {
  if (t.shape.size() != 2 || t.shape[0] != batch || t.shape[1] != len) {
    const std::vector<std::int64_t> want{batch, len};
    safetensors::fail(f.path(), t.name,
                      "expected [batch, len] = " + safetensors::shape_string(want) + ", got " +
                          safetensors::shape_string(t.shape));
  }
}

}  // namespace detail

/// Reads and checks the inputs of spec §5 from `file` for a model with `config`, and
/// `token_type_ids` (spec §7) when the model has type_vocab_size. Tensors other than these
/// are ignored.
template <Scalar T>
ModelInputs<T> read_inputs(const io::SafetensorsFile& file, const io::ModelConfig& config) {
  namespace st = detail::safetensors;
  const bool has_input = file.contains("input"), has_ids = file.contains("input_ids");
  if (has_input == has_ids) {
    st::fail(file.path(), "",
             has_input ? "holds both \"input\" and \"input_ids\"; give one"
                       : "holds neither \"input\" (F32 [batch, len, d_model]) nor \"input_ids\" "
                         "(I64 or I32 [batch, len])");
  }
  ModelInputs<T> in;
  const io::TensorInfo& main = file.info(has_input ? "input" : "input_ids");
  Index batch = 0, len = 0;
  if (has_input) {
    detail::check_dtype(file, main, {io::DType::F32});
    const std::string want = "[batch, len, " + std::to_string(config.d_model) + "]";
    if (main.shape.size() != 3 || main.shape[2] != config.d_model)
      st::fail(file.path(), main.name,
               "expected " + want + ", got " + st::shape_string(main.shape));
    batch = main.shape[0];
    len = main.shape[1];
  } else {
    detail::check_dtype(file, main, {io::DType::I64, io::DType::I32});
    if (!config.vocab_size)
      st::fail(file.path(), main.name, "the model has no vocab_size: give \"input\" instead");
    if (main.shape.size() != 2)
      st::fail(file.path(), main.name,
               "expected [batch, len], got " + st::shape_string(main.shape));
    batch = main.shape[0];
    len = main.shape[1];
  }
  if (batch < 1 || len < 1) {
    st::fail(file.path(), main.name,
             "batch and len must be >= 1, got " + st::shape_string(main.shape));
  }
  if (len > kMaxInputLength) {
    st::fail(file.path(), main.name,
             "len " + std::to_string(len) + " exceeds the limit of " +
                 std::to_string(kMaxInputLength) + " (relpos::kMaxInputLength)");
  }
  if (has_input) {
    in.input = file.tensor3<T>("input");
  } else {
    const std::vector<std::int64_t> v = file.values<std::int64_t>("input_ids");
    in.input_ids = TokenIds(batch, len);
    const std::int64_t vocab = *config.vocab_size;
    for (Index b = 0; b < batch; ++b) {
      for (Index i = 0; i < len; ++i) {
        const std::int64_t id = v[static_cast<std::size_t>(b * len + i)];
        if (id < 0 || id >= vocab) {
          st::fail(file.path(), "input_ids",
                   "id " + std::to_string(id) + " at " + detail::shape_string(b, i) +
                       " is out of range [0, " + std::to_string(vocab) + ")");
        }
        (*in.input_ids)(b, i) = id;
      }
    }
  }
  if (file.contains("padding_mask")) {
    const io::TensorInfo& t = file.info("padding_mask");
    detail::check_dtype(file, t, {io::DType::U8, io::DType::BOOL});
    detail::check_batch_len(file, t, batch, len);
    const std::vector<std::uint8_t> v = file.values<std::uint8_t>("padding_mask");
    in.padding_mask = PaddingMask(batch, len);
    for (Index k = 0; k < batch * len; ++k) in.padding_mask->data()[k] = v[std::size_t(k)] != 0;
  }
  if (file.contains("position_ids")) {
    const io::TensorInfo& t = file.info("position_ids");
    detail::check_dtype(file, t, {io::DType::I64, io::DType::I32});
    detail::check_batch_len(file, t, batch, len);
    if (!detail::takes_position_ids(config)) {
      st::fail(file.path(), t.name,
               "not supported with position type " + std::string(config.position_type()) +
                   " (defined over indices)");
    }
    const std::vector<std::int64_t> v = file.values<std::int64_t>("position_ids");
    in.position_ids = PositionIds(batch, len);
    for (Index b = 0; b < batch; ++b) {
      for (Index i = 0; i < len; ++i) {
        const std::int64_t p = v[static_cast<std::size_t>(b * len + i)];
        if (p < 0) {
          st::fail(file.path(), t.name,
                   "position " + std::to_string(p) + " at " + detail::shape_string(b, i) +
                       " is negative");
        }
        (*in.position_ids)(b, i) = p;
      }
    }
  }
  if (config.type_vocab_size && file.contains("token_type_ids")) {
    const io::TensorInfo& t = file.info("token_type_ids");
    detail::check_dtype(file, t, {io::DType::I64, io::DType::I32});
    detail::check_batch_len(file, t, batch, len);
    if (has_input) {
      st::fail(file.path(), t.name,
               "needs \"input_ids\": a float \"input\" skips the embedding stage");
    }
    const std::vector<std::int64_t> v = file.values<std::int64_t>("token_type_ids");
    in.token_type_ids = TokenIds(batch, len);
    const std::int64_t types = *config.type_vocab_size;
    for (Index b = 0; b < batch; ++b) {
      for (Index i = 0; i < len; ++i) {
        const std::int64_t type = v[static_cast<std::size_t>(b * len + i)];
        if (type < 0 || type >= types) {
          st::fail(file.path(), t.name,
                   "type " + std::to_string(type) + " at " + detail::shape_string(b, i) +
                       " is out of range [0, " + std::to_string(types) + ") (type_vocab_size)");
        }
        (*in.token_type_ids)(b, i) = type;
      }
    }
  }
  return in;
}

/// The UTF-8 bytes of `text` as token ids [1, len] (spec §5 --text; needs vocab_size >= 256).
inline TokenIds text_ids(std::string_view text, const io::ModelConfig& config) {
  if (config.vocab_size.value_or(0) < 256) {
    throw Error("--text needs a model with vocab_size >= 256 (one id per byte), this one has " +
                (config.vocab_size ? "vocab_size " + std::to_string(*config.vocab_size)
                                   : std::string("no vocab_size")));
  }
  if (text.empty()) throw Error("--text: the text is empty (len must be >= 1)");
  if (Index(text.size()) > kMaxInputLength) {
    throw Error("--text: " + std::to_string(text.size()) + " bytes exceed the limit of " +
                std::to_string(kMaxInputLength) + " (relpos::kMaxInputLength)");
  }
  TokenIds ids(1, Index(text.size()));
  for (std::size_t i = 0; i < text.size(); ++i)
    ids(0, Index(i)) = static_cast<unsigned char>(text[i]);
  return ids;
}

/// Runs the model on inputs read by read_inputs.
template <Scalar T>
ModelOutput<T> run(const Model<T>& model, const ModelInputs<T>& in) {
  const PaddingMask* mask = in.padding_mask ? &*in.padding_mask : nullptr;
  const PositionIds* ids = in.position_ids ? &*in.position_ids : nullptr;
  const TokenIds* types = in.token_type_ids ? &*in.token_type_ids : nullptr;
  return in.input ? model.forward(*in.input, mask, ids)
                  : model.forward(*in.input_ids, mask, ids, types);
}

/// The same with the inputs given up (std::move(in)): an `input` tensor is run in its own
/// memory (Model::forward(Tensor3&&)), with no copy of the activations beside it, and is
/// left empty.
template <Scalar T>
ModelOutput<T> run(const Model<T>& model, ModelInputs<T>&& in) {
  if (!in.input) return run(model, std::as_const(in));
  const PaddingMask* mask = in.padding_mask ? &*in.padding_mask : nullptr;
  const PositionIds* ids = in.position_ids ? &*in.position_ids : nullptr;
  return model.forward(std::move(*in.input), mask, ids);
}

/// Writes `output` and, when present, `logits` as F32 safetensors, atomically (a temporary
/// file renamed into place: a failure never leaves a partial file at `path`).
template <Scalar T>
void write_outputs(const std::string& path, const ModelOutput<T>& out) {
  io::SafetensorsWriter w;
  w.add("output", Tensor3<float>(out.output.template cast<float>()));
  if (out.logits) w.add("logits", Tensor3<float>(out.logits->template cast<float>()));
  w.write(path);
}

}  // namespace relpos
