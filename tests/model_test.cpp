// SPDX-License-Identifier: MIT
// The runtime model (spec §1): every exported model folder of tests/data/models (PyTorch
// float64 outputs from tools/export_models.py) reproduced in float and double, and every
// malformed weights file refused with a message naming the tensor.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <relpos/io/safetensors.hpp>
#include <relpos/io/safetensors_writer.hpp>
#include <relpos/model.hpp>
#include <relpos/model_io.hpp>

#include "support/golden.hpp"

namespace {

namespace fs = std::filesystem;
const fs::path kModelTestModels = fs::path(RELPOS_TEST_DATA_DIR) / "models";

using relpos::test::read_text;

// The largest |actual - expected| over a tensor, and where.
template <class T>
std::pair<double, relpos::Index> worst(const relpos::Tensor3<T>& actual,
                                       const std::vector<double>& expected) {
  double w = 0;
  relpos::Index at = -1;
  for (relpos::Index k = 0; k < actual.size(); ++k) {
    const double e = std::abs(double(actual.data()[k]) - expected[std::size_t(k)]);
    if (!(e <= w)) {
      w = e;
      at = k;
    }
  }
  return {w, at};
}

template <class T>
void check_all_models(double tol) {
  const nlohmann::json index = nlohmann::json::parse(read_text(kModelTestModels / "index.json"));
  int matched = 0;
  for (const auto& [name, info] : index.items()) {
    SCOPED_TRACE(name + ": " + info["description"].template get<std::string>());
    // both waves (the second: t5, alibi, xl, rotary scaling) load and run
    std::optional<relpos::Model<T>> model;
    model.emplace(relpos::Model<T>::load(kModelTestModels / name));
    const relpos::io::SafetensorsFile io =
        relpos::io::SafetensorsFile::open((kModelTestModels / name / "io.safetensors").string());
    const relpos::ModelInputs<T> in = relpos::read_inputs<T>(io, model->config());
    const relpos::ModelOutput<T> out = relpos::run(*model, in);
    const std::vector<double> expected = io.values<double>("output");
    ASSERT_EQ(std::size_t(out.output.size()), expected.size());
    const auto [w, at] = worst(out.output, expected);
    EXPECT_LE(w, tol) << "output, worst flat index " << at;
    ASSERT_EQ(out.logits.has_value(), io.contains("logits"));
    if (out.logits) {
      const std::vector<double> logits = io.values<double>("logits");
      ASSERT_EQ(std::size_t(out.logits->size()), logits.size());
      const auto [wl, atl] = worst(*out.logits, logits);
      EXPECT_LE(wl, tol) << "logits, worst flat index " << atl;
    }
    ++matched;
  }
  std::cout << matched << " models matched PyTorch within " << tol << "\n";
  EXPECT_EQ(matched, int(index.size()));  // every export of both waves
}

TEST(Model, MatchesPyTorchInDouble) {
  check_all_models<double>(1e-10);
}
TEST(Model, MatchesPyTorchInFloat) {
  check_all_models<float>(1e-5);
}

// A small valid model (none, 1 layer, vocab 5, output head) as a writer, to break on purpose.
const std::string kConfig =
    R"({"d_model": 4, "n_heads": 2, "n_layers": 1, "d_ff": 6, "vocab_size": 5,
        "output_head": true})";

relpos::io::SafetensorsWriter valid_weights(const std::string& skip = "") {
  relpos::io::SafetensorsWriter w;
  const relpos::io::ModelConfig c = relpos::io::parse_config(kConfig);
  float v = 0.01f;
  for (const relpos::io::TensorSpec& t : relpos::io::expected_tensors(c)) {
    if (t.name == skip) continue;
    std::int64_t n = 1;
    for (std::int64_t e : t.shape) n *= e;
    std::vector<float> values(static_cast<std::size_t>(n));
    for (float& x : values) x = (v += 0.01f);
    w.add(t.name, values, t.shape);
  }
  return w;
}

std::string load_error(const relpos::io::SafetensorsWriter& w) {
  try {
    relpos::Model<float>::from_bytes(kConfig, w.bytes(), "m");
  } catch (const relpos::Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Model, WeightsFileMustMatchTheConfig) {
  EXPECT_EQ(load_error(valid_weights()), "(no error)");
  EXPECT_EQ(load_error(valid_weights("layers.0.norm2.bias")),
            "m/model.safetensors: tensor \"layers.0.norm2.bias\": missing: the config (position "
            "type none) needs it, with shape [4]");
  auto extra = valid_weights();
  extra.add("layers.0.self_attn.relative_key", std::vector<float>(18, 0.f), {9, 2});
  EXPECT_EQ(load_error(extra),
            "m/model.safetensors: tensor \"layers.0.self_attn.relative_key\": not used by this "
            "model (position type none): the file does not match config.json");
  auto transposed = valid_weights("layers.0.linear1.weight");
  transposed.add("layers.0.linear1.weight", std::vector<float>(24, 0.f), {4, 6});
  EXPECT_EQ(load_error(transposed),
            "m/model.safetensors: tensor \"layers.0.linear1.weight\": expected [6, 4], got [4, 6]");
  auto ints = valid_weights("head.bias");
  ints.add("head.bias", std::vector<std::int64_t>(5, 1), {5});
  EXPECT_EQ(load_error(ints),
            "m/model.safetensors: tensor \"head.bias\": dtype I64 is not a weight type (F32, F64, "
            "F16 or BF16)");
}

// F64, F16 and BF16 weights are converted on load: a model stored in F16 gives the outputs of
// the same model with the F16-rounded weights stored in F32.
TEST(Model, HalfPrecisionWeightsAreConverted) {
  const relpos::io::ModelConfig c = relpos::io::parse_config(kConfig);
  relpos::io::SafetensorsWriter half, f64;
  float v = 0.0f;
  for (const relpos::io::TensorSpec& t : relpos::io::expected_tensors(c)) {
    std::int64_t n = 1;
    for (std::int64_t e : t.shape) n *= e;
    std::vector<double> values(static_cast<std::size_t>(n));
    for (double& x : values) x = double(v += 0.125f);  // exact in F16 up to 2048
    f64.add(t.name, values, t.shape);
    std::vector<unsigned char> bytes;
    for (double x : values) {
      // F16 of a multiple of 1/8 below 2048: sign 0, exponent and 10-bit mantissa
      const int e = int(std::floor(std::log2(x)));
      const auto mant = std::uint16_t(std::lround((x / std::ldexp(1.0, e) - 1.0) * 1024));
      const auto bits = std::uint16_t(((e + 15) << 10) | mant);
      bytes.push_back(std::uint8_t(bits & 0xff));
      bytes.push_back(std::uint8_t(bits >> 8));
    }
    half.add(t.name, relpos::io::DType::F16, t.shape, bytes);
  }
  const auto a = relpos::Model<double>::from_bytes(kConfig, half.bytes());
  const auto b = relpos::Model<double>::from_bytes(kConfig, f64.bytes());
  relpos::TokenIds ids(1, 3);
  ids << 0, 4, 2;
  const auto oa = a.forward(ids), ob = b.forward(ids);
  for (relpos::Index k = 0; k < oa.logits->size(); ++k)
    EXPECT_EQ(oa.logits->data()[k], ob.logits->data()[k]);
}

TEST(Model, InputsAreChecked) {
  const auto m = relpos::Model<float>::from_bytes(kConfig, valid_weights().bytes());
  const auto error = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const relpos::Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  relpos::TokenIds ids(1, 3);
  ids << 0, 5, 2;
  EXPECT_EQ(error([&] { m.forward(ids); }),
            "input_ids[0, 1]: expected 0 <= id < vocab_size 5, got 5");
  EXPECT_EQ(error([&] { m.forward(relpos::TokenIds(0, 3)); }),
            "input_ids: expected batch >= 1 and len >= 1, got batch 0, len 3");
  EXPECT_EQ(error([&] { m.forward(relpos::Tensor3<float>(1, 2, 3)); }),
            "input: expected [batch, len, 4], got [1, 2, 3]");
  ids << 0, 1, 2;
  const relpos::PaddingMask mask = relpos::PaddingMask::Zero(1, 2);
  EXPECT_EQ(error([&] { m.forward(ids, &mask); }), "padding_mask: expected [1, 3], got [1, 2]");
}

TEST(Model, MissingFolderIsNamed) {
  try {
    relpos::Model<float>::load("/nonexistent/model");
    ADD_FAILURE();
  } catch (const relpos::Error& e) {
    EXPECT_EQ(
        std::string(e.what()),
        "/nonexistent/model: not a model folder (expected config.json and model.safetensors)");
  }
}

}  // namespace

namespace {

// Issue 7: one loaded model shared by many threads. Each thread runs forwards of mixed
// lengths, longer ones forcing the shared caches (the unclamped sinusoidal distance table,
// rotary's cos/sin) to grow while other threads read them; every result must equal the one a
// single thread computed on its own copy of the model. Named "Thread" so ./dev tsan runs it.
void concurrent_forwards_match_single_thread(const std::string& name) {
  SCOPED_TRACE(name);
  const relpos::Model<float> reference_model = relpos::Model<float>::load(kModelTestModels / name);
  const relpos::Index d = reference_model.config().d_model;
  const std::vector<relpos::Index> lengths = {3, 40, 7, 130, 17, 260, 64, 1, 90};
  std::vector<relpos::Tensor3<float>> inputs, expected;
  for (std::size_t k = 0; k < lengths.size(); ++k) {
    relpos::Tensor3<float> x(2, lengths[k], d);
    for (relpos::Index i = 0; i < x.size(); ++i)
      x.data()[i] = std::sin(0.37f * static_cast<float>(i) + static_cast<float>(k));
    expected.push_back(reference_model.forward(x).output);
    inputs.push_back(std::move(x));
  }

  const relpos::Model<float> shared =
      relpos::Model<float>::load(kModelTestModels / name);  // cold caches
  constexpr int kThreads = 6, kRounds = 3;
  std::vector<double> worst_error(kThreads, 0.0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int r = 0; r < kRounds; ++r) {
        for (std::size_t j = 0; j < inputs.size(); ++j) {
          const std::size_t k = (j + static_cast<std::size_t>(t) * 2) % inputs.size();
          const relpos::Tensor3<float> out = shared.forward(inputs[k]).output;
          for (relpos::Index i = 0; i < out.size(); ++i) {
            const double e = std::abs(double(out.data()[i]) - double(expected[k].data()[i]));
            worst_error[std::size_t(t)] = std::max(worst_error[std::size_t(t)], e);
          }
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(worst_error[std::size_t(t)], 0.0) << "thread " << t;
}

TEST(ModelThread, SharedSinusoidalModelGivesSingleThreadResultsWhileItsCacheGrows) {
  concurrent_forwards_match_single_thread("sinusoidal_keys_values");
}

TEST(ModelThread, SharedRotaryModelGivesSingleThreadResultsWhileItsCacheGrows) {
  concurrent_forwards_match_single_thread("rotary_half");
}

}  // namespace

namespace {

// Model::attention_weights (the demo's heatmaps) against tools/reference.py's weights for
// the default rotary model, every layer and head (tools/golden_attention_weights.py).
TEST(Model, AttentionWeightsMatchPyTorch) {
  const relpos::Model<float> model =
      relpos::Model<float>::load(fs::path(RELPOS_SOURCE_DIR) / "examples/models/rotary");
  const relpos::io::SafetensorsFile golden = relpos::io::SafetensorsFile::open(
      (fs::path(RELPOS_TEST_DATA_DIR) / "demo/rotary_attention.safetensors").string());
  const std::vector<std::int64_t> id_values = golden.values<std::int64_t>("input_ids");
  const auto len = static_cast<relpos::Index>(id_values.size());
  relpos::TokenIds ids(1, len);
  for (relpos::Index i = 0; i < len; ++i) ids(0, i) = id_values[std::size_t(i)];
  const std::vector<double> expected = golden.values<double>("weights");  // [layer, head, L, L]

  const auto weights = model.attention_weights(ids);
  ASSERT_EQ(weights.size(), std::size_t(model.config().n_layers));
  double worst_error = 0;
  std::size_t k = 0;
  for (const auto& layer : weights) {
    ASSERT_EQ(layer.size(), std::size_t(model.config().n_heads));
    for (const relpos::Matrix<float>& alpha : layer) {
      ASSERT_EQ(alpha.rows(), len);
      ASSERT_EQ(alpha.cols(), len);
      for (relpos::Index i = 0; i < len; ++i) {
        EXPECT_NEAR(alpha.row(i).sum(), 1.0f, 1e-5f);
        for (relpos::Index j = 0; j < len; ++j, ++k)
          worst_error = std::max(worst_error, std::abs(double(alpha(i, j)) - expected[k]));
      }
    }
  }
  EXPECT_EQ(k, expected.size());
  EXPECT_LE(worst_error, 1e-5);
  EXPECT_THROW(model.attention_weights(relpos::TokenIds::Zero(2, 3)), relpos::Error);
}

}  // namespace
