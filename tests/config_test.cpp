// SPDX-License-Identifier: MIT
// config.json (spec §1, §4): defaults, every validation rule with its exact message, hostile
// sizes, the tensors a config implies, the round trip through to_json for every type, and
// that a config.json and a module built in code meet the same rule with the same text.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <relpos/io/config.hpp>

namespace {

using namespace relpos::io;

const std::string kSizes = R"("d_model": 64, "n_heads": 4, "n_layers": 2, "d_ff": 256)";

std::string with(const std::string& extra) {
  return "{" + kSizes + ", " + extra + "}";
}
std::string with_position(const std::string& position) {
  return with(R"("position": )" + position);
}

std::string error_of(const std::string& json) {
  try {
    parse_config(json);
  } catch (const relpos::Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Config, DefaultsFollowTheTable) {
  const ModelConfig c = parse_config("{" + kSizes + "}");
  EXPECT_EQ(c.d_model, 64);
  EXPECT_EQ(c.n_heads, 4);
  EXPECT_EQ(c.n_layers, 2);
  EXPECT_EQ(c.d_ff, 256);
  EXPECT_EQ(c.d_head(), 16);
  EXPECT_EQ(c.activation, Activation::relu);
  EXPECT_FALSE(c.norm_first);
  EXPECT_EQ(c.layer_norm_eps, 1e-5);
  EXPECT_FALSE(c.final_norm);
  EXPECT_FALSE(c.causal);
  EXPECT_FALSE(c.vocab_size.has_value());
  EXPECT_FALSE(c.output_head);
  EXPECT_TRUE(std::holds_alternative<NonePosition>(c.position));
  EXPECT_EQ(c.position_type(), "none");
  EXPECT_EQ(c.rotary_dim(), 0);
}

TEST(Config, SpecExampleParses) {
  const ModelConfig c = parse_config(R"({
    "d_model": 64, "n_heads": 4, "n_layers": 2, "d_ff": 256, "activation": "relu",
    "norm_first": false, "layer_norm_eps": 1e-5, "final_norm": false, "causal": false,
    "vocab_size": 256,
    "position": { "type": "rotary", "base": 10000.0, "rotary_dim": 16, "interleaved": false }
  })");
  ASSERT_EQ(c.position_type(), "rotary");
  const auto& r = std::get<RotaryPosition>(c.position);
  EXPECT_EQ(r.base, 10000.0);
  EXPECT_EQ(r.rotary_dim, 16);
  EXPECT_FALSE(r.interleaved);
  EXPECT_FALSE(r.scaling.has_value());
  EXPECT_EQ(c.vocab_size, 256);
}

TEST(Config, PositionDefaults) {
  const auto pos = [](const std::string& p) { return parse_config(with_position(p)).position; };
  EXPECT_EQ(std::get<AbsolutePosition>(pos(R"({"type": "absolute"})")).base, 10000.0);
  const auto s = std::get<SinusoidalPosition>(pos(R"({"type": "sinusoidal"})"));
  EXPECT_EQ(s.base, 10000.0);
  EXPECT_FALSE(s.max_distance.has_value());  // absent: no clamping
  EXPECT_TRUE(s.keys);
  EXPECT_FALSE(s.values);
  const auto l = std::get<LearnedPosition>(pos(R"({"type": "learned", "max_distance": 3})"));
  EXPECT_EQ(l.max_distance, 3);
  EXPECT_TRUE(l.keys);
  EXPECT_TRUE(l.values);
  const ModelConfig rc = parse_config(with_position(R"({"type": "rotary"})"));
  const auto r = std::get<RotaryPosition>(rc.position);
  EXPECT_EQ(r.base, 10000.0);
  EXPECT_FALSE(r.rotary_dim.has_value());
  EXPECT_EQ(rc.rotary_dim(), 16);  // defaults to d_head
  EXPECT_FALSE(r.interleaved);
  const auto a = std::get<AdditivePosition>(
      pos(R"({"type": "additive", "source": "sinusoidal", "window": 2})"));
  EXPECT_EQ(a.source, AdditiveSource::sinusoidal);
  EXPECT_EQ(a.window, 2);
  EXPECT_FALSE(a.max_distance.has_value());
  EXPECT_EQ(a.base, 10000.0);
  const auto t = std::get<T5Position>(pos(R"({"type": "t5"})"));
  EXPECT_EQ(t.num_buckets, 32);
  EXPECT_EQ(t.max_distance, 128);
  EXPECT_FALSE(t.bidirectional.has_value());
  EXPECT_EQ(std::get<AlibiPosition>(pos(R"({"type": "alibi"})")).max_bias, 8.0);
  const auto x = std::get<XlPosition>(pos(R"({"type": "xl"})"));
  EXPECT_EQ(x.base, 10000.0);
  EXPECT_FALSE(x.max_distance.has_value());
}

TEST(Config, T5BidirectionalDefaultsToNotCausal) {
  EXPECT_TRUE(parse_config(with_position(R"({"type": "t5"})")).t5_bidirectional());
  EXPECT_FALSE(
      parse_config(with(R"("causal": true, "position": {"type": "t5"})")).t5_bidirectional());
  EXPECT_TRUE(
      parse_config(with(R"("causal": true, "position": {"type": "t5", "bidirectional": true})"))
          .t5_bidirectional());
  // causal, so B' = B and 2 buckets are enough (E = 1 < M)
  EXPECT_NO_THROW(parse_config(
      with(R"("causal": true, "position": {"type": "t5", "num_buckets": 2, "max_distance": 2})")));
}

TEST(Config, ScalingDefaults) {
  const auto scaling = [](const std::string& s) {
    return *std::get<RotaryPosition>(
                parse_config(with_position(R"({"type": "rotary", "scaling": )" + s + "}")).position)
                .scaling;
  };
  const auto y = std::get<YarnScaling>(
      scaling(R"({"type": "yarn", "factor": 4, "original_max_position_embeddings": 32})"));
  EXPECT_EQ(y.factor, 4.0);  // an integer where a float is expected is fine
  EXPECT_EQ(y.original_max_position_embeddings, 32);
  EXPECT_EQ(y.beta_fast, 32.0);
  EXPECT_EQ(y.beta_slow, 1.0);
  EXPECT_FALSE(y.mscale || y.mscale_all_dim || y.attention_factor);
  EXPECT_TRUE(y.truncate);
  const auto y_null = std::get<YarnScaling>(scaling(
      R"({"type": "yarn", "factor": 4, "original_max_position_embeddings": 32, "mscale": null,
          "mscale_all_dim": null, "attention_factor": null})"));
  EXPECT_EQ(y_null, y);  // null is the documented default of these three
  const auto l = std::get<Llama3Scaling>(scaling(R"({"type": "llama3", "factor": 8})"));
  EXPECT_EQ(l.low_freq_factor, 1.0);
  EXPECT_EQ(l.high_freq_factor, 4.0);
  EXPECT_EQ(l.original_max_position_embeddings, 8192);
  const auto lr = std::get<LongropeScaling>(scaling(
      R"({"type": "longrope", "short_factor": [1,1,1,1,1,1,1,1], "long_factor": [1,2,3,4,5,6,7,8],
          "original_max_position_embeddings": 32, "max_position_embeddings": 128})"));
  EXPECT_EQ(lr.long_factor[7], 8.0);
  EXPECT_FALSE(lr.attention_factor.has_value());
}

struct BadCase {
  std::string json;
  std::string message;
};

void expect_errors(const std::vector<BadCase>& cases) {
  for (const BadCase& c : cases) EXPECT_EQ(error_of(c.json), c.message) << c.json;
}

TEST(Config, TopLevelErrorsNameTheKey) {
  expect_errors({
      {"{",
       "config.json: malformed JSON: parse error at line 1, column 2: syntax error while "
       "parsing object key - unexpected end of input; expected string literal"},
      {"[1]", "config.json: top level: expected a JSON object, got an array [1]"},
      {R"({"n_heads": 4, "n_layers": 2, "d_ff": 256})",
       "config.json: d_model: required key is missing"},
      {with(R"("foo": 1)"), "config.json: foo: unknown key"},
      {with(R"("d_model": 64.0)"), "config.json: d_model: expected an integer, got a float 64.0"},
      {with(R"("n_layers": "2")"),
       "config.json: n_layers: expected an integer, got a string \"2\""},
      {with(R"("n_layers": 18446744073709551615)"),
       "config.json: n_layers: integer out of range: 18446744073709551615"},
      {with(R"("causal": 1)"), "config.json: causal: expected a boolean, got an integer 1"},
      {with(R"("layer_norm_eps": "1e-5")"),
       "config.json: layer_norm_eps: expected a number, got a string \"1e-5\""},
      {with(R"("activation": "tanh")"),
       "config.json: activation: expected \"relu\", \"gelu\" or \"gelu_tanh\", got \"tanh\""},
      {with(R"("vocab_size": null)"),
       "config.json: vocab_size: expected an integer, got null null"},
      {with(R"("position": "rotary")"),
       "config.json: position: expected a JSON object, got a string \"rotary\""},
      {with(R"("d_model": 0)"), "config.json: d_model: must be >= 1, got 0"},
      {with(R"("n_heads": -1)"), "config.json: n_heads: must be >= 1, got -1"},
      {with(R"("n_layers": 0)"), "config.json: n_layers: must be >= 1, got 0"},
      {with(R"("d_ff": 0)"), "config.json: d_ff: must be >= 1, got 0"},
      {with(R"("vocab_size": 0)"), "config.json: vocab_size: must be >= 1, got 0"},
      {with(R"("n_heads": 5)"), "config.json: d_model: must be divisible by n_heads = 5, got 64"},
      {with(R"("layer_norm_eps": 0)"), "config.json: layer_norm_eps: must be > 0, got 0.0"},
      {with(R"("layer_norm_eps": -1e-5)"), "config.json: layer_norm_eps: must be > 0, got -1e-05"},
      {with(R"("output_head": true)"), "config.json: output_head: needs vocab_size"},
  });
}

TEST(Config, HostileSizesAreRefusedWithTheLimit) {
  expect_errors({
      {with(R"("n_layers": 1000000000)"),
       "config.json: n_layers: 1000000000 exceeds the limit of 4096"},
      {with(R"("d_model": 1000000000, "n_heads": 1)"),
       "config.json: d_model: 1000000000 exceeds the limit of 1048576"},
      {with(R"("vocab_size": 99999999999)"),
       "config.json: vocab_size: 99999999999 exceeds the limit of 1048576"},
      // each size within its limit, the product not: 64 layers of d_model = d_ff = 2^16,
      // 64 * (6 * 2^32 + 10 * 2^16) parameters
      {with(R"("d_model": 65536, "n_heads": 1, "d_ff": 65536, "n_layers": 64)"),
       "config.json: the sizes imply 1649309384704.0 parameters, more than the limit of 2^31 "
       "(relpos::io::kMaxParameters)"},
      // 2 layers * 2 tables of (2^31 + 1, 16), plus 2 * 49984 for the layers themselves
      {with_position(R"({"type": "learned", "max_distance": 1073741824})"),
       "config.json: the sizes imply 137439053504.0 parameters, more than the limit of 2^31 "
       "(relpos::io::kMaxParameters)"},
      {with_position(R"({"type": "learned", "max_distance": 1073741825})"),
       "config.json: position.max_distance: 1073741825 exceeds the limit of 1073741824"},
      {"{" + kSizes + std::string(20, ' ') + ", \"x\": " + std::string(100, '[') +
           std::string(100, ']') + "}",
       "config.json: JSON nested deeper than 16 levels"},
  });
  // 2^31 parameters is the documented limit
  EXPECT_EQ(kMaxParameters, 2147483648.0);
}

TEST(Config, PositionKeysBelongToTheirType) {
  expect_errors({
      {with_position(R"({"base": 10})"), "config.json: position.type: required key is missing"},
      {with_position(R"({"type": "cope"})"),
       "config.json: position.type: unknown position type \"cope\" (expected one of none, "
       "absolute, sinusoidal, learned, rotary, additive, t5, alibi, xl, kerple, deberta)"},
      {with_position(R"({"type": "rotary", "window": 3})"),
       "config.json: position.window: not a key of position type \"rotary\" (it belongs to "
       "additive)"},
      {with_position(R"({"type": "none", "base": 10000})"),
       "config.json: position.base: not a key of position type \"none\" (it belongs to absolute, "
       "sinusoidal, rotary, additive, xl)"},
      {with_position(R"({"type": "learned", "max_distance": 4, "base": 10000})"),
       "config.json: position.base: not a key of position type \"learned\" (it belongs to "
       "absolute, sinusoidal, rotary, additive, xl)"},
      {with_position(R"({"type": "sinusoidal", "colour": 1})"),
       "config.json: position.colour: unknown key for position type \"sinusoidal\""},
      {with_position(R"({"type": "alibi", "num_buckets": 8})"),
       "config.json: position.num_buckets: not a key of position type \"alibi\" (it belongs to "
       "t5)"},
      {with_position(R"({"type": "rotary", "rotary_dim": 16.0})"),
       "config.json: position.rotary_dim: expected an integer, got a float 16.0"},
      {with_position(R"({"type": "rotary", "interleaved": "yes"})"),
       "config.json: position.interleaved: expected a boolean, got a string \"yes\""},
  });
}

TEST(Config, PositionValuesAreChecked) {
  expect_errors({
      {with_position(R"({"type": "rotary", "base": 0})"),
       "config.json: position.base: must be > 0, got 0.0"},
      {with_position(R"({"type": "absolute", "base": -2})"),
       "config.json: position.base: must be > 0, got -2.0"},
      {with_position(R"({"type": "rotary", "rotary_dim": 7})"),
       "config.json: position.rotary_dim: must be even, got 7"},
      {with_position(R"({"type": "rotary", "rotary_dim": 18})"),
       "config.json: position.rotary_dim: must be <= d_head = 16, got 18"},
      {with_position(R"({"type": "rotary", "rotary_dim": 0})"),
       "config.json: position.rotary_dim: must be >= 2, got 0"},
      {R"({"d_model": 15, "n_heads": 3, "n_layers": 1, "d_ff": 8, "position": {"type": "rotary"}})",
       "config.json: position.rotary_dim: must be even, got 5 (rotary_dim defaults to d_head = 5)"},
      {with_position(R"({"type": "learned"})"),
       "config.json: position.max_distance: required key is missing"},
      {with_position(R"({"type": "learned", "max_distance": -1})"),
       "config.json: position.max_distance: must be >= 0, got -1"},
      {with_position(R"({"type": "sinusoidal", "max_distance": -3})"),
       "config.json: position.max_distance: must be >= 0, got -3"},
      {with_position(R"({"type": "xl", "max_distance": -1})"),
       "config.json: position.max_distance: must be >= 0, got -1"},
      {R"({"d_model": 12, "n_heads": 4, "n_layers": 1, "d_ff": 8, "position": {"type": "sinusoidal"}})",
       "config.json: position.type: sinusoidal needs an even d_head, got 3"},
      {R"({"d_model": 7, "n_heads": 1, "n_layers": 1, "d_ff": 8, "position": {"type": "absolute"}})",
       "config.json: position.type: absolute needs an even d_model, got 7"},
      {R"({"d_model": 7, "n_heads": 1, "n_layers": 1, "d_ff": 8, "position": {"type": "xl"}})",
       "config.json: position.type: xl needs an even d_model, got 7"},
      {R"({"d_model": 7, "n_heads": 1, "n_layers": 1, "d_ff": 8,
           "position": {"type": "additive", "source": "sinusoidal", "window": 1}})",
       "config.json: position.type: the sinusoidal additive source needs an even d_model, got 7"},
      {with_position(R"({"type": "additive", "source": "learned", "window": 1})"),
       "config.json: position.max_distance: required with the learned source"},
      {with_position(R"({"type": "additive", "source": "sinusoidal"})"),
       "config.json: position.window: required key is missing"},
      {with_position(R"({"type": "additive", "window": 1})"),
       "config.json: position.source: required key is missing"},
      {with_position(R"({"type": "additive", "source": "rope", "window": 1})"),
       "config.json: position.source: expected \"sinusoidal\" or \"learned\", got \"rope\""},
      {with_position(R"({"type": "additive", "source": "sinusoidal", "window": -1})"),
       "config.json: position.window: must be >= 0, got -1"},
      {with_position(R"({"type": "t5", "num_buckets": 3})"),
       "config.json: position.num_buckets: must be >= 4, got 3"},
      {with(R"("causal": true, "position": {"type": "t5", "num_buckets": 1})"),
       "config.json: position.num_buckets: must be >= 2, got 1"},
      // bidirectional B = 32: B' = 16, E = 8
      {with_position(R"({"type": "t5", "max_distance": 8})"),
       "config.json: position.max_distance: must be > num_buckets' exact range E = 8, got 8"},
      {with(R"("causal": true, "position": {"type": "t5", "max_distance": 16})"),
       "config.json: position.max_distance: must be > num_buckets' exact range E = 16, got 16"},
      {with_position(R"({"type": "alibi", "max_bias": 0})"),
       "config.json: position.max_bias: must be > 0, got 0.0"},
      {with_position(R"({"type": "kerple"})"),
       "config.json: position.form: required key is missing"},
      {with_position(R"({"type": "kerple", "form": "exp"})"),
       "config.json: position.form: expected \"log\" or \"power\", got \"exp\""},
      {with_position(R"({"type": "kerple", "form": 2})"),
       "config.json: position.form: expected a string, got an integer 2"},
      {with_position(R"({"type": "kerple", "form": "log", "max_bias": 8})"),
       "config.json: position.max_bias: not a key of position type \"kerple\" (it belongs to "
       "alibi)"},
  });
}

TEST(Config, ScalingIsChecked) {
  const auto rotary = [](const std::string& scaling, const std::string& extra = "") {
    return with_position(R"({"type": "rotary", )" + extra + R"("scaling": )" + scaling + "}");
  };
  expect_errors({
      {rotary(R"({"factor": 2})"), "config.json: position.scaling.type: required key is missing"},
      {rotary(R"({"type": "su", "factor": 2})"),
       "config.json: position.scaling.type: unknown scaling type \"su\" (expected one of linear, "
       "ntk, dynamic, yarn, llama3, longrope)"},
      {rotary(R"({"type": "linear"})"),
       "config.json: position.scaling.factor: required key is missing"},
      {rotary(R"({"type": "linear", "factor": 0})"),
       "config.json: position.scaling.factor: must be > 0, got 0.0"},
      {rotary(R"({"type": "ntk", "factor": -1})"),
       "config.json: position.scaling.factor: must be > 0, got -1.0"},
      {rotary(R"({"type": "linear", "factor": 2, "beta_fast": 3})"),
       "config.json: position.scaling.beta_fast: not a key of scaling type \"linear\" (it belongs "
       "to yarn)"},
      {rotary(R"({"type": "ntk", "factor": 2})", R"("rotary_dim": 2, )"),
       "config.json: position.scaling.type: ntk scaling needs a rotary dim > 2, got 2"},
      {rotary(R"({"type": "dynamic", "factor": 2})"),
       "config.json: position.scaling.original_max_position_embeddings: required key is missing"},
      {rotary(R"({"type": "dynamic", "factor": 2, "original_max_position_embeddings": 0})"),
       "config.json: position.scaling.original_max_position_embeddings: must be >= 1, got 0"},
      {rotary(
           R"({"type": "yarn", "factor": 4, "original_max_position_embeddings": 32, "beta_slow": 0})"),
       "config.json: position.scaling.beta_slow: must be > 0, got 0.0"},
      {rotary(R"({"type": "yarn", "factor": 4, "original_max_position_embeddings": 32,
                  "attention_factor": 0})"),
       "config.json: position.scaling.attention_factor: must be > 0, got 0.0"},
      {rotary(R"({"type": "yarn", "factor": 4, "original_max_position_embeddings": 32})",
              R"("base": 1, )"),
       "config.json: position.scaling.type: yarn scaling needs position.base > 1, got 1.0"},
      {rotary(R"({"type": "yarn", "factor": 4, "original_max_position_embeddings": 32,
                  "truncate": 1})"),
       "config.json: position.scaling.truncate: expected a boolean, got an integer 1"},
      {rotary(R"({"type": "llama3", "factor": 8, "low_freq_factor": 4})"),
       "config.json: position.scaling.high_freq_factor: must be > low_freq_factor (4.0), got 4.0"},
      {rotary(R"({"type": "longrope", "short_factor": [1, 1], "long_factor": [1, 1],
                  "original_max_position_embeddings": 32, "max_position_embeddings": 64})"),
       "config.json: position.scaling.short_factor: expected rotary_dim/2 = 8 numbers, got 2"},
      {rotary(R"({"type": "longrope", "short_factor": [1, 1], "long_factor": [1, 1, 1],
                  "original_max_position_embeddings": 32, "max_position_embeddings": 64})",
              R"("rotary_dim": 4, )"),
       "config.json: position.scaling.long_factor: expected rotary_dim/2 = 2 numbers, got 3"},
      {rotary(R"({"type": "longrope", "short_factor": [1, 0], "long_factor": [1, 1],
                  "original_max_position_embeddings": 32, "max_position_embeddings": 64})",
              R"("rotary_dim": 4, )"),
       "config.json: position.scaling.short_factor[1]: must be > 0, got 0.0"},
      {rotary(R"({"type": "longrope", "short_factor": [1, "a"], "long_factor": [1, 1],
                  "original_max_position_embeddings": 32, "max_position_embeddings": 64})",
              R"("rotary_dim": 4, )"),
       "config.json: position.scaling.short_factor[1]: expected a number, got a string \"a\""},
      {rotary(R"({"type": "longrope", "short_factor": [1, 1], "long_factor": [1, 1],
                  "original_max_position_embeddings": 1, "max_position_embeddings": 64})",
              R"("rotary_dim": 4, )"),
       "config.json: position.scaling.original_max_position_embeddings: must be >= 2, got 1"},
  });
}

// parse(to_json(c)) == c and to_json(parse(text)) == text, for a config of every type with
// every key set away from its default.
TEST(Config, EveryTypeRoundTrips) {
  const std::string top =
      R"("d_model": 32, "n_heads": 2, "n_layers": 3, "d_ff": 48, "activation": "gelu",
         "norm_first": true, "layer_norm_eps": 1e-6, "final_norm": true, "causal": true,
         "vocab_size": 300, "output_head": true, )";
  const std::vector<std::string> positions = {
      R"({"type": "none"})",
      R"({"type": "absolute", "base": 500.0})",
      R"({"type": "sinusoidal", "base": 100.0, "max_distance": 7, "keys": false, "values": true})",
      R"({"type": "learned", "max_distance": 5, "keys": true, "values": false})",
      R"({"type": "rotary", "base": 500000.0, "rotary_dim": 8, "interleaved": true})",
      R"({"type": "rotary", "base": 10000.0, "interleaved": false,
          "scaling": {"type": "linear", "factor": 2.5}})",
      R"({"type": "rotary", "base": 10000.0, "interleaved": false,
          "scaling": {"type": "ntk", "factor": 3.0}})",
      R"({"type": "rotary", "base": 10000.0, "interleaved": false,
          "scaling": {"type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 16}})",
      R"({"type": "rotary", "base": 10000.0, "rotary_dim": 12, "interleaved": false,
          "scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32,
                      "beta_fast": 16.0, "beta_slow": 2.0, "mscale": 0.707,
                      "mscale_all_dim": 1.0, "attention_factor": 1.25, "truncate": false}})",
      R"({"type": "rotary", "base": 10000.0, "interleaved": true,
          "scaling": {"type": "llama3", "factor": 8.0, "low_freq_factor": 2.0,
                      "high_freq_factor": 5.0, "original_max_position_embeddings": 64}})",
      R"({"type": "rotary", "base": 10000.0, "rotary_dim": 4, "interleaved": false,
          "scaling": {"type": "longrope", "short_factor": [1.0, 1.5], "long_factor": [2.0, 4.0],
                      "original_max_position_embeddings": 16, "max_position_embeddings": 64,
                      "attention_factor": 1.1}})",
      R"({"type": "additive", "source": "learned", "window": 3, "max_distance": 4, "base": 10000.0})",
      R"({"type": "additive", "source": "sinusoidal", "window": 0, "base": 100.0})",
      R"({"type": "t5", "num_buckets": 16, "max_distance": 64, "bidirectional": true})",
      R"({"type": "alibi", "max_bias": 4.0})",
      R"({"type": "xl", "base": 1000.0, "max_distance": 9})",
      R"({"type": "kerple", "form": "log"})",
      R"({"type": "kerple", "form": "power"})",
      R"({"type": "deberta", "position_buckets": 8, "max_relative_positions": 20, "c2p": true,
          "p2c": false, "share_att_key": false, "rel_norm": true})",
  };
  for (const std::string& p : positions) {
    const std::string text = "{" + top + R"("position": )" + p + "}";
    const ModelConfig c = parse_config(text);
    const auto j = to_json(c);
    EXPECT_EQ(parse_config(j.dump()), c) << p;
    EXPECT_EQ(j, nlohmann::ordered_json::parse(text))
        << "written: " << j.dump() << "\nread: " << text;
  }
}

// The parameter count the limit uses is the sum over the tensors the model file must hold.
TEST(Config, ParameterCountMatchesExpectedTensors) {
  const std::vector<std::string> positions = {
      R"({"type": "none"})",
      R"({"type": "learned", "max_distance": 5})",
      R"({"type": "learned", "max_distance": 5, "values": false})",
      R"({"type": "additive", "source": "learned", "window": 3, "max_distance": 4})",
      R"({"type": "t5"})",
      R"({"type": "xl"})",
      R"({"type": "kerple", "form": "power"})",
      R"({"type": "deberta"})",
      R"({"type": "deberta", "share_att_key": false, "rel_norm": false})",
      R"({"type": "deberta", "share_att_key": false, "c2p": false})",
  };
  for (const std::string& p : positions) {
    const ModelConfig c = parse_config(
        with(R"("vocab_size": 50, "output_head": true, "final_norm": true, "position": )" + p));
    double total = 0;
    for (const TensorSpec& t : expected_tensors(c)) {
      double n = 1;
      for (std::int64_t e : t.shape) n *= double(e);
      total += n;
    }
    EXPECT_EQ(parameter_count(c), total) << p;
  }
}

TEST(Config, ExpectedTensorsFollowTheSpecNames) {
  const ModelConfig c = parse_config(with(
      R"("vocab_size": 50, "output_head": true, "position": {"type": "learned", "max_distance": 5})"));
  const std::vector<TensorSpec> t = expected_tensors(c);
  const auto find = [&](const std::string& name) -> std::vector<std::int64_t> {
    for (const TensorSpec& s : t)
      if (s.name == name) return s.shape;
    return {};
  };
  // 1 embed + 2 layers x (4 attention + 2 relative + 4 ffn + 4 norm) + 2 head
  EXPECT_EQ(t.size(), 1u + 2 * 14 + 2);
  EXPECT_EQ(find("embed.weight"), (std::vector<std::int64_t>{50, 64}));
  EXPECT_EQ(find("layers.1.self_attn.in_proj_weight"), (std::vector<std::int64_t>{192, 64}));
  EXPECT_EQ(find("layers.1.self_attn.relative_key"), (std::vector<std::int64_t>{11, 16}));
  EXPECT_EQ(find("layers.0.self_attn.relative_value"), (std::vector<std::int64_t>{11, 16}));
  EXPECT_EQ(find("layers.0.linear1.weight"), (std::vector<std::int64_t>{256, 64}));
  EXPECT_EQ(find("layers.0.linear2.weight"), (std::vector<std::int64_t>{64, 256}));
  EXPECT_EQ(find("head.bias"), (std::vector<std::int64_t>{50}));
  EXPECT_TRUE(find("norm.weight").empty());  // no final_norm

  const ModelConfig x = parse_config(with(R"("position": {"type": "xl"})"));
  const std::vector<TensorSpec> tx = expected_tensors(x);
  EXPECT_EQ(tx.front(), (TensorSpec{"position.r_w_bias", {4, 16}}));
  EXPECT_EQ(tx[1], (TensorSpec{"position.r_r_bias", {4, 16}}));
  const ModelConfig t5 =
      parse_config(with(R"("position": {"type": "t5", "num_buckets": 8, "max_distance": 20})"));
  EXPECT_EQ(expected_tensors(t5).front(), (TensorSpec{"position.relative_attention_bias", {8, 4}}));
  const ModelConfig k = parse_config(with(R"("position": {"type": "kerple", "form": "log"})"));
  const std::vector<TensorSpec> tk = expected_tensors(k);
  EXPECT_EQ(tk[0], (TensorSpec{"position.kerple_r1", {4}}));
  EXPECT_EQ(tk[1], (TensorSpec{"position.kerple_r2", {4}}));
}

TEST(Config, LoadConfigNamesThePath) {
  const auto dir = std::filesystem::temp_directory_path() / "relpos_config_test";
  std::filesystem::create_directories(dir);
  const auto path = dir / "config.json";
  { std::ofstream(path) << with(R"("d_model": 64.5)"); }
  try {
    load_config(path);
    ADD_FAILURE() << "no error";
  } catch (const relpos::Error& e) {
    EXPECT_EQ(std::string(e.what()),
              path.string() + ": d_model: expected an integer, got a float 64.5");
  }
  try {
    load_config(dir / "missing.json");
    ADD_FAILURE() << "no error";
  } catch (const relpos::Error& e) {
    EXPECT_EQ(std::string(e.what()), (dir / "missing.json").string() + ": cannot open the file");
  }
  { std::ofstream(path) << "{" << kSizes << "}"; }
  EXPECT_EQ(load_config(path).d_model, 64);
  std::filesystem::remove_all(dir);
}

// One rule per encoding (its static check()): a bad value read from config.json and the same
// value given to the constructor fail with the same text after the source, which is the file's
// path for one and the encoding's name for the other (detail/checker.hpp).
struct BothPaths {
  std::string config;           // a whole config.json
  std::function<void()> build;  // the same position built in code
  std::string source;           // the encoding's name, the code path's source
  std::string message;          // the text after "<source>: "
};

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const relpos::Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Config, FileAndCodeMeetTheSameRule) {
  using relpos::Matrix;
  using relpos::share;
  const auto zeros = [](relpos::Index r, relpos::Index c) { return Matrix<float>::Zero(r, c); };
  // kSizes: d_model 64, n_heads 4, so d_head 16
  const std::vector<BothPaths> cases = {
      {with_position(R"({"type": "t5", "num_buckets": 3})"),
       [&] { relpos::T5Bias<float>(4, {.num_buckets = 3}, share(zeros(3, 4))); }, "t5",
       "position.num_buckets: must be >= 4, got 3"},
      {with(R"("causal": true, "position": {"type": "t5", "num_buckets": 1})"),
       [&] { relpos::T5Bias<float>(4, {.num_buckets = 1, .causal = true}, share(zeros(1, 4))); },
       "t5", "position.num_buckets: must be >= 2, got 1"},
      {with_position(R"({"type": "t5", "max_distance": 8})"),
       [&] { relpos::T5Bias<float>(4, {.max_distance = 8}, share(zeros(32, 4))); }, "t5",
       "position.max_distance: must be > num_buckets' exact range E = 8, got 8"},
      {with_position(R"({"type": "alibi", "max_bias": 0})"),
       [] { relpos::AlibiBias<float>(4, {.max_bias = 0}); }, "alibi",
       "position.max_bias: must be > 0, got 0.0"},
      {with_position(R"({"type": "alibi", "max_bias": -1.5})"),
       [] { relpos::AlibiBias<float>(4, {.max_bias = -1.5}); }, "alibi",
       "position.max_bias: must be > 0, got -1.5"},
      {with_position(R"({"type": "kerple"})"),
       [&] { relpos::KerpleBias<float>(4, {}, share(zeros(4, 1)), share(zeros(4, 1))); }, "kerple",
       "position.form: required key is missing"},
      {with_position(R"({"type": "learned"})"),
       [] { (void)relpos::LearnedRelative<float>::random(16, {}, 1); }, "learned",
       "position.max_distance: required key is missing"},
      {with_position(R"({"type": "learned", "max_distance": -1})"),
       [] { (void)relpos::LearnedRelative<float>::random(16, {.max_distance = -1}, 1); }, "learned",
       "position.max_distance: must be >= 0, got -1"},
      {with_position(R"({"type": "sinusoidal", "base": 0})"),
       [] {
         relpos::SinusoidalConfig c;
         c.base = 0;
         relpos::SinusoidalRelative<float>(16, c);
       },
       "sinusoidal", "position.base: must be > 0, got 0.0"},
      {with_position(R"({"type": "sinusoidal", "max_distance": -3})"),
       [] { relpos::SinusoidalRelative<float>(16, {.max_distance = -3}); }, "sinusoidal",
       "position.max_distance: must be >= 0, got -3"},
      {R"({"d_model": 12, "n_heads": 4, "n_layers": 1, "d_ff": 8, "position": {"type": "sinusoidal"}})",
       [] { relpos::SinusoidalRelative<float>(3); }, "sinusoidal",
       "position.type: sinusoidal needs an even d_head, got 3"},
      {with_position(R"({"type": "rotary", "rotary_dim": 7})"),
       [] { relpos::Rotary<float>(16, {.rotary_dim = 7}); }, "rotary",
       "position.rotary_dim: must be even, got 7"},
      {with_position(R"({"type": "rotary", "rotary_dim": 18})"),
       [] { relpos::Rotary<float>(16, {.rotary_dim = 18}); }, "rotary",
       "position.rotary_dim: must be <= d_head = 16, got 18"},
      {R"({"d_model": 15, "n_heads": 3, "n_layers": 1, "d_ff": 8, "position": {"type": "rotary"}})",
       [] { relpos::Rotary<float>(5); }, "rotary",
       "position.rotary_dim: must be even, got 5 (rotary_dim defaults to d_head = 5)"},
      {with_position(R"({"type": "rotary", "scaling": {"type": "linear", "factor": 0}})"),
       [] { relpos::Rotary<float>(16, {.scaling = LinearScaling{.factor = 0}}); }, "rotary",
       "position.scaling.factor: must be > 0, got 0.0"},
      {with_position(
           R"({"type": "rotary", "rotary_dim": 2, "scaling": {"type": "ntk", "factor": 2}})"),
       [] { relpos::Rotary<float>(16, {.rotary_dim = 2, .scaling = NtkScaling{.factor = 2}}); },
       "rotary", "position.scaling.type: ntk scaling needs a rotary dim > 2, got 2"},
      {with_position(R"({"type": "absolute", "base": -2})"),
       [] { relpos::AbsoluteSinusoidal<float>(64, {.base = -2}); }, "absolute",
       "position.base: must be > 0, got -2.0"},
      {R"({"d_model": 7, "n_heads": 1, "n_layers": 1, "d_ff": 8, "position": {"type": "absolute"}})",
       [] { relpos::AbsoluteSinusoidal<float>(7); }, "absolute",
       "position.type: absolute needs an even d_model, got 7"},
      {with_position(R"({"type": "additive", "source": "sinusoidal", "window": -1})"),
       [] {
         relpos::AdditiveConfig c;
         c.window = -1;
         relpos::Additive<float>(64, c);
       },
       "additive", "position.window: must be >= 0, got -1"},
      {with_position(R"({"type": "additive", "source": "sinusoidal"})"),
       [] { relpos::Additive<float>(64, {}); }, "additive",
       "position.window: required key is missing"},
      {with_position(R"({"type": "additive", "source": "learned", "window": 1})"),
       [&] {
         relpos::AdditiveConfig c;
         c.source = relpos::AdditiveSource::learned;
         c.window = 1;
         relpos::Additive<float>(64, c, zeros(3, 64));
       },
       "additive", "position.max_distance: required with the learned source"},
      {with_position(R"({"type": "xl", "max_distance": -1})"),
       [&] {
         relpos::XlConfig c;
         c.max_distance = -1;
         relpos::XlRelative<float>(64, 4, c, zeros(64, 64), share(zeros(4, 16)),
                                   share(zeros(4, 16)));
       },
       "xl", "position.max_distance: must be >= 0, got -1"},
      {R"({"d_model": 7, "n_heads": 1, "n_layers": 1, "d_ff": 8, "position": {"type": "xl"}})",
       [&] {
         relpos::XlRelative<float>(7, 1, {}, zeros(7, 7), share(zeros(1, 7)), share(zeros(1, 7)));
       },
       "xl", "position.type: xl needs an even d_model, got 7"},
  };
  const auto dir = std::filesystem::temp_directory_path() / "relpos_config_both_paths_test";
  std::filesystem::create_directories(dir);
  const auto path = dir / "config.json";
  for (const BothPaths& c : cases) {
    { std::ofstream(path) << c.config; }
    EXPECT_EQ(message_of([&] { load_config(path); }), path.string() + ": " + c.message) << c.config;
    EXPECT_EQ(message_of(c.build), c.source + ": " + c.message) << c.config;
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
