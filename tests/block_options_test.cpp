// SPDX-License-Identifier: MIT
// The block options of spec §7 (norm "rms", bias false, ffn "gated", gelu_tanh, embed_norm,
// pos_embed_offset, type_vocab_size): model folders of tests/data/block_options (float64
// outputs from tools/golden_block_options.py, written from the spec's formulas with torch
// ops) reproduced in float and double; RMSNorm, the gated feed-forward and gelu_tanh against
// the formulas in long double; and every bad input refused with a message naming it.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <relpos/feed_forward.hpp>
#include <relpos/feed_forward_grad.hpp>
#include <relpos/io/config.hpp>
#include <relpos/io/safetensors.hpp>
#include <relpos/io/safetensors_writer.hpp>
#include <relpos/model.hpp>
#include <relpos/model_io.hpp>
#include <relpos/norm.hpp>
#include <relpos/rms_norm.hpp>

#include "support/golden.hpp"
#include "support/random.hpp"

namespace {

namespace fs = std::filesystem;
using relpos::Index;
const fs::path kDir = fs::path(RELPOS_TEST_DATA_DIR) / "block_options";

using relpos::test::read_text;

template <class T>
void check_all_cases(double tol) {
  const nlohmann::json index = nlohmann::json::parse(read_text(kDir / "index.json"));
  int matched = 0;
  for (const auto& [name, info] : index.items()) {
    SCOPED_TRACE(name + ": " + info["description"].template get<std::string>());
    const relpos::Model<T> model = relpos::Model<T>::load(kDir / name);
    const relpos::io::SafetensorsFile io =
        relpos::io::SafetensorsFile::open((kDir / name / "io.safetensors").string());
    const relpos::ModelInputs<T> in = relpos::read_inputs<T>(io, model.config());
    EXPECT_EQ(in.token_type_ids.has_value(), io.contains("token_type_ids"));
    const relpos::ModelOutput<T> out = relpos::run(model, in);
    const std::vector<double> expected = io.values<double>("output");
    ASSERT_EQ(std::size_t(out.output.size()), expected.size());
    const Eigen::Map<const Eigen::Array<T, 1, Eigen::Dynamic>> got(out.output.data(),
                                                                   out.output.size());
    const Eigen::Map<const Eigen::Array<double, 1, Eigen::Dynamic>> want(expected.data(),
                                                                         Index(expected.size()));
    EXPECT_TRUE(relpos::test::all_close(got, want, tol)) << "flat index (0, k)";
    ++matched;
  }
  EXPECT_EQ(matched, 5);
}

TEST(BlockOptions, ModelsMatchPyTorchInDouble) {
  check_all_cases<double>(1e-12);
}
TEST(BlockOptions, ModelsMatchPyTorchInFloat) {
  check_all_cases<float>(1e-5);
}

// The token types matter: the same ids with other types give another output.
TEST(BlockOptions, TokenTypesChangeTheOutput) {
  const auto model = relpos::Model<double>::load(kDir / "bert_embed_t5");
  relpos::TokenIds ids(1, 4);
  ids << 1, 2, 3, 4;
  relpos::TokenIds zeros = relpos::TokenIds::Zero(1, 4), ones = relpos::TokenIds::Ones(1, 4);
  const auto none = model.forward(ids).output;
  const auto zero = model.forward(ids, nullptr, nullptr, &zeros).output;
  const auto one = model.forward(ids, nullptr, nullptr, &ones).output;
  const Eigen::Map<const Eigen::ArrayXd> a(none.data(), none.size()), b(zero.data(), zero.size()),
      c(one.data(), one.size());
  EXPECT_TRUE((a == b).all()) << "absent token types are all 0 (spec §7)";
  EXPECT_GT((a - c).abs().maxCoeff(), 1e-3);
}

// ---- the pieces against their formulas, in long double ----

template <class T>
class BlockOptionsTyped : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(BlockOptionsTyped, Scalars);

template <class T>
double tolerance() {
  return std::is_same_v<T, float> ? 2e-6 : 1e-14;
}

TYPED_TEST(BlockOptionsTyped, RmsNormIsTheFormula) {
  using T = TypeParam;
  std::mt19937_64 gen(19);
  const Index len = 5, d = 12;
  relpos::Matrix<T> x(len, d);
  relpos::test::fill_normal(x, gen, 2.0);
  relpos::RMSNorm<T> norm(d, 1e-6);
  relpos::test::fill_normal(norm.weight, gen, 1.0);
  relpos::Matrix<T> out(len, d);
  norm.forward(x, out);
  relpos::Matrix<T> want(len, d);
  for (Index i = 0; i < len; ++i) {
    long double ms = 0;
    for (Index j = 0; j < d; ++j) ms += (long double)x(i, j) * x(i, j);
    ms /= d;
    for (Index j = 0; j < d; ++j)
      want(i, j) = T((long double)x(i, j) * norm.weight(j) / std::sqrt(ms + 1e-6L));
  }
  EXPECT_TRUE(relpos::test::all_close(out, want, tolerance<T>(), tolerance<T>()));
  // the block's Norm of kind rms computes the same, in place
  relpos::Norm<T> as_norm(norm);
  EXPECT_EQ(as_norm.kind, relpos::NormKind::rms);
  EXPECT_EQ(as_norm.bias.size(), 0);
  relpos::Matrix<T> y = x;
  as_norm.forward(y, y);
  EXPECT_TRUE(relpos::test::all_close(y, out, 0));
}

// act(v) of the spec, in long double.
long double act_ref(relpos::Activation a, long double v) {
  switch (a) {
    case relpos::Activation::relu:
      return v > 0 ? v : 0;
    case relpos::Activation::gelu:
      return 0.5L * v * (1 + std::erf(v / std::sqrt(2.0L)));
    case relpos::Activation::gelu_tanh:
      break;
  }
  const long double pi = 3.141592653589793238462643383279502884L;
  return 0.5L * v * (1 + std::tanh(std::sqrt(2 / pi) * (v + 0.044715L * v * v * v)));
}

TYPED_TEST(BlockOptionsTyped, GatedFeedForwardIsTheFormula) {
  using T = TypeParam;
  std::mt19937_64 gen(7);
  const Index len = 4, d = 6;
  // d_ff within one pass of kGateCols hidden columns, and across two and a part of a third
  for (const Index f : {Index(10), 2 * relpos::FeedForward<T>::kGateCols + 44}) {
    for (const relpos::Activation act :
         {relpos::Activation::relu, relpos::Activation::gelu, relpos::Activation::gelu_tanh}) {
      for (const bool bias : {true, false}) {
        SCOPED_TRACE(std::string("d_ff ") + std::to_string(f) + ", activation " +
                     std::to_string(int(act)) + ", bias " + (bias ? "true" : "false"));
        relpos::FeedForward<T> ffn(relpos::FeedForwardConfig{d, f, act, /*gated=*/true, bias});
        ASSERT_TRUE(ffn.gated());
        ASSERT_EQ(ffn.has_bias(), bias);
        relpos::test::fill_normal(ffn.linear1_weight, gen, 0.8);
        // linear2 sums d_ff terms: its scale keeps the output (and its rounding) O(1) for any f
        relpos::test::fill_normal(ffn.linear2_weight, gen, 0.8 * std::sqrt(10.0 / double(f)));
        relpos::test::fill_normal(ffn.linear3_weight, gen, 0.8);
        if (bias) {
          relpos::test::fill_normal(ffn.linear1_bias, gen, 0.3);
          relpos::test::fill_normal(ffn.linear2_bias, gen, 0.3);
          relpos::test::fill_normal(ffn.linear3_bias, gen, 0.3);
        }
        relpos::Matrix<T> x(len, d), out(len, d);
        relpos::test::fill_normal(x, gen, 1.0);
        relpos::SequenceWorkspace<T> ws;
        ffn.forward(x, out, ws);
        relpos::Matrix<T> want(len, d);
        for (Index i = 0; i < len; ++i) {
          std::vector<long double> hid(std::size_t(f), 0);
          for (Index k = 0; k < f; ++k) {
            long double a = bias ? ffn.linear1_bias(k) : 0, g = bias ? ffn.linear3_bias(k) : 0;
            for (Index j = 0; j < d; ++j) {
              a += (long double)ffn.linear1_weight(k, j) * x(i, j);
              g += (long double)ffn.linear3_weight(k, j) * x(i, j);
            }
            hid[std::size_t(k)] = act_ref(act, a) * g;  // act(linear1 x) ⊙ linear3 x
          }
          for (Index j = 0; j < d; ++j) {
            long double o = bias ? ffn.linear2_bias(j) : 0;
            for (Index k = 0; k < f; ++k) o += (long double)ffn.linear2_weight(j, k) * hid[k];
            want(i, j) = T(o);
          }
        }
        EXPECT_TRUE(relpos::test::all_close(out, want, 4 * tolerance<T>(), 4 * tolerance<T>()));
      }
    }
  }
}

// act(v) and act'(v) as the feed-forward computes them (Eigen's packet erf / tanh / exp) over
// [-10, 10] in steps of 1/64.
template <class T>
relpos::Vector<T> activation_over(relpos::Activation act, const relpos::Vector<T>& v, bool slope) {
  relpos::Vector<T> out(v.size());
  const auto write = [&](const auto& e) { out.array() = e; };
  if (slope) {
    relpos::detail::with_activation_derivative<T>(act, v.array(), write);
  } else {
    relpos::detail::with_activation<T>(act, v.array(), write);
  }
  return out;
}

template <class T>
void expect_activations_are_the_formulas() {
  constexpr T eps = std::numeric_limits<T>::epsilon();
  relpos::Vector<T> v(20 * 64 + 1);
  for (relpos::Index i = 0; i < v.size(); ++i) v(i) = T(-10) + T(i) / T(64);
  for (const auto act :
       {relpos::Activation::relu, relpos::Activation::gelu, relpos::Activation::gelu_tanh}) {
    const relpos::Vector<T> value = activation_over<T>(act, v, false);
    const relpos::Vector<T> slope = activation_over<T>(act, v, true);
    for (relpos::Index i = 0; i < v.size(); ++i) {
      const long double x = v(i);
      const long double want = act_ref(act, x);
      EXPECT_NEAR(value(i), want, 8 * eps * std::max(1.0L, std::abs(want)))
          << "act " << int(act) << " at " << x;
      // the slope: relu's is torch's (0 at 0); the gelus' a central difference in long double
      const long double h = 1e-6L;
      const long double want_slope = act == relpos::Activation::relu
                                         ? (x > 0 ? 1.0L : 0.0L)
                                         : (act_ref(act, x + h) - act_ref(act, x - h)) / (2 * h);
      // the slope's rounding grows with the terms it sums: |x|·(1 + 3·0.044715·x²)
      const long double bound = 8 * eps * (1 + std::abs(x) * (1 + 0.134145L * x * x)) + 1e-9L;
      EXPECT_NEAR(slope(i), want_slope, bound) << "act " << int(act) << "' at " << x;
    }
  }
}

TEST(BlockOptions, ActivationsAreTheSpecFormulas) {
  expect_activations_are_the_formulas<float>();
  expect_activations_are_the_formulas<double>();
  // gelu_tanh is the approximation, not the exact gelu: they differ by ~1e-3 near |x| = 2
  relpos::Vector<double> two = relpos::Vector<double>::Constant(1, 2.0);
  EXPECT_GT(std::abs(activation_over<double>(relpos::Activation::gelu_tanh, two, false)(0) -
                     activation_over<double>(relpos::Activation::gelu, two, false)(0)),
            1e-5);
}

// A block without biases is the block with zero biases.
TEST(BlockOptions, NoBiasIsZeroBias) {
  std::mt19937_64 gen(3);
  relpos::BlockConfig with{.d_model = 8, .n_heads = 2, .d_ff = 12, .norm_first = true};
  relpos::BlockConfig without = with;
  without.bias = false;
  without.gated = with.gated = true;
  relpos::Block<double> a(with), b(without);
  EXPECT_EQ(b.self_attn.in_proj_bias.size(), 0);
  EXPECT_EQ(b.ffn.linear1_bias.size(), 0);
  relpos::test::fill_normal(b.self_attn.in_proj_weight, gen, 0.5);
  relpos::test::fill_normal(b.self_attn.out_proj_weight, gen, 0.5);
  relpos::test::fill_normal(b.ffn.linear1_weight, gen, 0.5);
  relpos::test::fill_normal(b.ffn.linear2_weight, gen, 0.5);
  relpos::test::fill_normal(b.ffn.linear3_weight, gen, 0.5);
  a.self_attn.in_proj_weight = b.self_attn.in_proj_weight;
  a.self_attn.out_proj_weight = b.self_attn.out_proj_weight;
  a.ffn.linear1_weight = b.ffn.linear1_weight;
  a.ffn.linear2_weight = b.ffn.linear2_weight;
  a.ffn.linear3_weight = b.ffn.linear3_weight;
  relpos::Tensor3<double> x(2, 5, 8);
  relpos::test::fill_normal(x, gen, 1.0);
  const relpos::Tensor3<double> ya = a.forward(x), yb = b.forward(x);
  EXPECT_TRUE(relpos::test::all_close(ya, yb, 0));
  // a bias where the config has none is refused, naming it
  b.ffn.linear2_bias = relpos::Vector<double>::Zero(8);
  try {
    (void)b.forward(x);
    ADD_FAILURE() << "no error";
  } catch (const relpos::Error& e) {
    EXPECT_STREQ(e.what(),
                 "ffn.linear2_bias: expected empty (linear1_bias is empty: no biases), got [8]");
  }
}

// ---- config.json ----

std::string config_error(const std::string& json) {
  try {
    relpos::io::parse_config(json, "c.json");
  } catch (const relpos::Error& e) {
    return e.what();
  }
  return "(no error)";
}

const std::string kSizes = R"("d_model": 8, "n_heads": 2, "n_layers": 1, "d_ff": 12)";

TEST(BlockOptions, ConfigKeysAndTheirErrors) {
  const relpos::io::ModelConfig plain = relpos::io::parse_config("{" + kSizes + "}");
  EXPECT_EQ(plain.norm, relpos::NormKind::layer);
  EXPECT_TRUE(plain.bias);
  EXPECT_FALSE(plain.gated);
  EXPECT_FALSE(plain.embed_norm);
  EXPECT_FALSE(plain.pos_embed_offset);
  EXPECT_FALSE(plain.type_vocab_size);
  // a §1 config writes back without §7's keys
  for (const char* key :
       {"norm", "bias", "ffn", "embed_norm", "pos_embed_offset", "type_vocab_size"}) {
    EXPECT_FALSE(relpos::io::to_json(plain).contains(key)) << key;
  }
  const relpos::io::ModelConfig all =
      relpos::io::parse_config("{" + kSizes +
                               R"(, "vocab_size": 9, "norm": "rms", "bias": false, "ffn": "gated",
         "activation": "gelu_tanh", "embed_norm": true, "pos_embed_offset": 2,
         "type_vocab_size": 2})");
  EXPECT_EQ(all.norm, relpos::NormKind::rms);
  EXPECT_FALSE(all.bias);
  EXPECT_TRUE(all.gated);
  EXPECT_EQ(all.activation, relpos::Activation::gelu_tanh);
  EXPECT_TRUE(all.embed_norm);
  EXPECT_EQ(all.pos_embed_offset, 2);
  EXPECT_EQ(all.type_vocab_size, 2);
  EXPECT_EQ(relpos::io::parse_config(relpos::io::to_json(all).dump()), all);
  EXPECT_EQ(relpos::io::parse_config("{" + kSizes + R"(, "norm": "layer", "ffn": "plain"})"),
            plain);

  EXPECT_EQ(config_error("{" + kSizes + R"(, "norm": "batch"})"),
            "c.json: norm: expected \"layer\" or \"rms\", got \"batch\"");
  EXPECT_EQ(config_error("{" + kSizes + R"(, "ffn": "glu"})"),
            "c.json: ffn: expected \"plain\" or \"gated\", got \"glu\"");
  EXPECT_EQ(config_error("{" + kSizes + R"(, "activation": "silu"})"),
            "c.json: activation: expected \"relu\", \"gelu\" or \"gelu_tanh\", got \"silu\"");
  EXPECT_EQ(config_error("{" + kSizes + R"(, "embed_norm": true})"),
            "c.json: embed_norm: needs vocab_size");
  EXPECT_EQ(config_error("{" + kSizes + R"(, "vocab_size": 9, "pos_embed_offset": -1})"),
            "c.json: pos_embed_offset: must be >= 0, got -1");
  EXPECT_EQ(config_error("{" + kSizes + R"(, "pos_embed_offset": 0})"),
            "c.json: pos_embed_offset: needs vocab_size");
  EXPECT_EQ(config_error("{" + kSizes + R"(, "vocab_size": 9, "type_vocab_size": 0})"),
            "c.json: type_vocab_size: must be >= 1, got 0");
  EXPECT_NE(config_error("{" + kSizes + R"(, "bias": "no"})").find("bias"), std::string::npos);
  EXPECT_NE(config_error("{" + kSizes + R"(, "vocab_size": 9, "pos_embed_offset": 1.5})")
                .find("pos_embed_offset"),
            std::string::npos);
}

// ---- model files ----

// Every tensor a config implies (pos_embed with `rows` rows), except `skip`.
relpos::io::SafetensorsWriter weights(const relpos::io::ModelConfig& c,
                                      const std::string& skip = "", std::int64_t rows = 6) {
  relpos::io::SafetensorsWriter w;
  float v = 0.01f;
  for (relpos::io::TensorSpec t : relpos::io::expected_tensors(c)) {
    if (t.name == skip) continue;
    if (t.shape[0] == relpos::io::kAnyRows) t.shape[0] = rows;
    std::int64_t n = 1;
    for (std::int64_t e : t.shape) n *= e;
    std::vector<float> values(static_cast<std::size_t>(n));
    for (float& x : values) x = (v = v > 1 ? 0.01f : v + 0.01f);
    w.add(t.name, values, t.shape);
  }
  return w;
}

std::string load_error(const std::string& config, const relpos::io::SafetensorsWriter& w) {
  try {
    relpos::Model<float>::from_bytes(config, w.bytes(), "m");
  } catch (const relpos::Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(BlockOptions, TensorsAreCheckedByNameAndShape) {
  const std::string gated = "{" + kSizes + R"(, "ffn": "gated", "norm": "rms", "bias": false})";
  const relpos::io::ModelConfig c = relpos::io::parse_config(gated);
  EXPECT_EQ(load_error(gated, weights(c)), "(no error)");
  EXPECT_EQ(load_error(gated, weights(c, "layers.0.linear3.weight")),
            "m/model.safetensors: tensor \"layers.0.linear3.weight\": missing: the config "
            "(position type none) needs it, with shape [12, 8]");
  // bias false and rms: a bias tensor in the file is not this model's
  auto extra = weights(c);
  extra.add("layers.0.norm1.bias", std::vector<float>(8, 0.f), {8});
  EXPECT_EQ(load_error(gated, extra),
            "m/model.safetensors: tensor \"layers.0.norm1.bias\": not used by this model "
            "(position type none): the file does not match config.json");
  auto in_bias = weights(c);
  in_bias.add("layers.0.self_attn.in_proj_bias", std::vector<float>(24, 0.f), {24});
  EXPECT_NE(load_error(gated, in_bias).find("\"layers.0.self_attn.in_proj_bias\": not used"),
            std::string::npos);
  // the gated ffn with biases needs linear3.bias
  const std::string gated_bias = "{" + kSizes + R"(, "ffn": "gated"})";
  EXPECT_EQ(load_error(gated_bias,
                       weights(relpos::io::parse_config(gated_bias), "layers.0.linear3.bias")),
            "m/model.safetensors: tensor \"layers.0.linear3.bias\": missing: the config "
            "(position type none) needs it, with shape [12]");
  // the embedding stage's tables: pos_embed takes any number of rows, d_model wide
  const std::string bert = "{" + kSizes +
                           R"(, "vocab_size": 9, "embed_norm": true, "pos_embed_offset": 2,
                                "type_vocab_size": 2})";
  const relpos::io::ModelConfig b = relpos::io::parse_config(bert);
  EXPECT_EQ(load_error(bert, weights(b, "", 11)), "(no error)");
  EXPECT_EQ(load_error(bert, weights(b, "embed_norm.bias")),
            "m/model.safetensors: tensor \"embed_norm.bias\": missing: the config (position type "
            "none) needs it, with shape [8]");
  auto narrow = weights(b, "pos_embed.weight");
  narrow.add("pos_embed.weight", std::vector<float>(6 * 7, 0.f), {6, 7});
  EXPECT_EQ(load_error(bert, narrow),
            "m/model.safetensors: tensor \"pos_embed.weight\": expected [-1, 8], got [6, 7]");
  auto types = weights(b, "type_embed.weight");
  types.add("type_embed.weight", std::vector<float>(3 * 8, 0.f), {3, 8});
  EXPECT_EQ(load_error(bert, types),
            "m/model.safetensors: tensor \"type_embed.weight\": expected [2, 8], got [3, 8]");
}

std::string forward_error(const relpos::Model<double>& m, const relpos::TokenIds& ids,
                          const relpos::PositionIds* pos, const relpos::TokenIds* types) {
  try {
    (void)m.forward(ids, nullptr, pos, types);
  } catch (const relpos::Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(BlockOptions, PositionRowsAndTokenTypesOutOfRange) {
  // P = 18 rows, offset 2: positions 0..15 have a row
  const auto model = relpos::Model<double>::load(kDir / "bert_embed_t5");
  relpos::TokenIds ids = relpos::TokenIds::Ones(1, 3);
  relpos::PositionIds pos(1, 3);
  pos << 0, 15, 16;
  EXPECT_EQ(forward_error(model, ids, &pos, nullptr),
            "position 16 at [0, 2]: row 16 + pos_embed_offset 2 is past the last row 17 of "
            "pos_embed.weight");
  pos << 0, 15, 14;
  EXPECT_EQ(forward_error(model, ids, &pos, nullptr), "(no error)");
  pos << 0, std::numeric_limits<std::int64_t>::max(), 1;  // p + offset would overflow
  EXPECT_EQ(forward_error(model, ids, &pos, nullptr),
            "position 9223372036854775807 at [0, 1]: row 9223372036854775807 + pos_embed_offset 2 "
            "is past the last row 17 of pos_embed.weight");
  // without ids, a sequence longer than the table runs past it
  EXPECT_EQ(forward_error(model, relpos::TokenIds::Ones(1, 17), nullptr, nullptr),
            "position 16 at [0, 16]: row 16 + pos_embed_offset 2 is past the last row 17 of "
            "pos_embed.weight");
  relpos::TokenIds types(1, 3);
  types << 0, 2, 1;
  EXPECT_EQ(forward_error(model, ids, nullptr, &types),
            "token_type_ids[0, 1]: expected 0 <= type < type_vocab_size 2, got 2");
  types << 0, -1, 1;
  EXPECT_EQ(forward_error(model, ids, nullptr, &types),
            "token_type_ids[0, 1]: expected 0 <= type < type_vocab_size 2, got -1");
  const relpos::TokenIds wrong = relpos::TokenIds::Zero(1, 2);
  EXPECT_EQ(forward_error(model, ids, nullptr, &wrong),
            "token_type_ids: expected [1, 3], got [1, 2]");
  // a model without token types refuses them
  const auto t5 = relpos::Model<double>::load(kDir / "t5_block_t5");
  EXPECT_EQ(forward_error(t5, ids, nullptr, &types),
            "token_type_ids: this model has no token types (type_vocab_size)");
}

TEST(BlockOptions, InputFileTokenTypes) {
  const auto model = relpos::Model<float>::load(kDir / "bert_embed_t5");
  const auto read_error = [&](const relpos::io::SafetensorsWriter& w) {
    try {
      (void)relpos::read_inputs<float>(relpos::io::SafetensorsFile::from_bytes(w.bytes(), "in"),
                                       model.config());
    } catch (const relpos::Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  relpos::io::SafetensorsWriter w;
  w.add("input_ids", std::vector<std::int64_t>{1, 2, 3}, {1, 3});
  w.add("token_type_ids", std::vector<std::int64_t>{0, 1, 5}, {1, 3});
  EXPECT_EQ(read_error(w),
            "in: tensor \"token_type_ids\": type 5 at [0, 2] is out of range [0, 2) "
            "(type_vocab_size)");
  relpos::io::SafetensorsWriter shape;
  shape.add("input_ids", std::vector<std::int64_t>{1, 2, 3}, {1, 3});
  shape.add("token_type_ids", std::vector<std::int32_t>{0, 1, 1}, {3, 1});
  EXPECT_EQ(read_error(shape),
            "in: tensor \"token_type_ids\": expected [batch, len] = [1, 3], got [3, 1]");
  relpos::io::SafetensorsWriter floats;
  floats.add("input", std::vector<float>(3 * 16, 0.f), {1, 3, 16});
  floats.add("token_type_ids", std::vector<std::int64_t>{0, 1, 1}, {1, 3});
  EXPECT_EQ(read_error(floats),
            "in: tensor \"token_type_ids\": needs \"input_ids\": a float \"input\" skips the "
            "embedding stage");
}

}  // namespace
