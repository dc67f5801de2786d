// SPDX-License-Identifier: MIT
// The C++ API as a user meets it (issue 17): everything it cannot run is refused with a
// relpos::Error naming the field, the expected and the actual shape or value, before anything
// is allocated or read out of bounds. One test per case of the issue, each checking the
// message; the suite also runs under ASan + UBSan (`./dev asan`), where a read past a weight
// would be reported.
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>

#include <relpos/relpos.hpp>

#include "support/expect_error.hpp"

namespace {

using relpos::Index;
using relpos::Matrix;
using relpos::Tensor3;
using relpos::Vector;

constexpr Index kD = 32, kHeads = 4, kDHead = kD / kHeads, kFf = 64;

// f() must throw relpos::Error whose message contains `needle`.
using relpos::test::expect_error;

relpos::BlockConfig block_config(bool causal = false) {
  return {.d_model = kD, .n_heads = kHeads, .d_ff = kFf, .causal = causal};
}

Tensor3<float> random_input(Index batch, Index len, Index d, unsigned seed = 1) {
  Tensor3<float> x(batch, len, d);
  std::srand(seed);
  x.setRandom();
  return x;
}

template <class B>
void randomize(B& block) {
  block.self_attn.in_proj_weight.setRandom();
  block.self_attn.in_proj_bias.setRandom();
  block.self_attn.out_proj_weight.setRandom();
  block.self_attn.out_proj_bias.setRandom();
  block.ffn.linear1_weight.setRandom();
  block.ffn.linear1_bias.setRandom();
  block.ffn.linear2_weight.setRandom();
  block.ffn.linear2_bias.setRandom();
  block.norm1.weight.setRandom();
  block.norm2.bias.setRandom();
}

// --- 1. weights of the wrong shape ------------------------------------------------------

TEST(ApiMisuse, InProjWeightOneColumnShortIsRefusedAtForward) {
  relpos::Block<float> block(block_config());
  block.self_attn.in_proj_weight = Matrix<float>::Ones(3 * kD, kD - 1);
  expect_error([&] { (void)block.forward(random_input(1, 5, kD)); },
               "self_attn.in_proj_weight: expected [96, 32] (3·d_model, d_model), got [96, 31]");
  // the attention layer alone names the field without the block's prefix
  relpos::MultiHeadAttention<float> attn({kD, kHeads, false});
  attn.in_proj_weight = Matrix<float>::Ones(3 * kD, kD - 1);
  expect_error([&] { (void)attn.forward(random_input(1, 5, kD)); },
               "in_proj_weight: expected [96, 32] (3·d_model, d_model), got [96, 31]");
}

TEST(ApiMisuse, Linear1BiasOneShortIsRefusedAtForward) {
  relpos::Block<float> block(block_config());
  block.ffn.linear1_bias = Vector<float>::Zero(kFf - 1);
  expect_error([&] { (void)block.forward(random_input(1, 5, kD)); },
               "ffn.linear1_bias: expected [64] (d_ff), got [63]");
  relpos::FeedForward<float> ffn(kD, kFf, relpos::Activation::relu);
  ffn.linear1_bias = Vector<float>::Zero(kFf - 1);
  expect_error([&] { ffn.validate(); }, "linear1_bias: expected [64] (d_ff), got [63]");
}

TEST(ApiMisuse, EveryOtherWeightIsCheckedByName) {
  const auto x = random_input(1, 4, kD);
  const std::vector<std::pair<std::function<void(relpos::Block<float>&)>, std::string>> cases = {
      {[](auto& b) { b.self_attn.in_proj_bias = Vector<float>::Zero(3 * kD + 1); },
       "self_attn.in_proj_bias: expected [96] (3·d_model), got [97]"},
      {[](auto& b) { b.self_attn.out_proj_weight = Matrix<float>::Zero(kD, kD + 2); },
       "self_attn.out_proj_weight: expected [32, 32] (d_model, d_model), got [32, 34]"},
      {[](auto& b) { b.self_attn.out_proj_bias = Vector<float>(); },
       "self_attn.out_proj_bias: expected [32] (d_model), got [0]"},
      {[](auto& b) { b.ffn.linear1_weight = Matrix<float>::Zero(kFf, kD - 1); },
       "ffn.linear1_weight: expected [64, 32] (d_ff, d_model), got [64, 31]"},
      {[](auto& b) { b.ffn.linear2_weight = Matrix<float>::Zero(kD, kFf + 1); },
       "ffn.linear2_weight: expected [32, 64] (d_model, d_ff), got [32, 65]"},
      {[](auto& b) { b.ffn.linear2_bias = Vector<float>::Zero(kD + 1); },
       "ffn.linear2_bias: expected [32] (d_model), got [33]"},
      {[](auto& b) { b.norm1.bias = Vector<float>::Zero(kD - 1); },
       "norm1.bias: expected [32] (the size of weight), got [31]"},
      {[](auto& b) {
         b.norm2.weight = Vector<float>::Ones(kD - 1);
         b.norm2.bias = Vector<float>::Zero(kD - 1);
       },
       "norm2.weight: expected [32] (d_model), got [31]"},
      {[](auto& b) { b.norm1.eps = 0; }, "norm1.eps: expected > 0, got 0"},
  };
  for (const auto& [spoil, message] : cases) {
    relpos::Block<float> block(block_config());
    spoil(block);
    expect_error([&] { (void)block.forward(x); }, message);
  }
}

TEST(ApiMisuse, LinearWeightOfAnotherModelWidthIsRefused) {
  relpos::Block<float> block(block_config());
  block.ffn.linear1_weight = Matrix<float>::Zero(kFf, kD + 8);
  block.ffn.linear2_weight = Matrix<float>::Zero(kD + 8, kFf);
  block.ffn.linear2_bias = Vector<float>::Zero(kD + 8);
  expect_error([&] { (void)block.forward(random_input(1, 3, kD)); },
               "ffn.linear1_weight: expected [64, 32] (d_ff, d_model), got [64, 40]");
}

TEST(ApiMisuse, InputWidthIsChecked) {
  relpos::Block<float> block(block_config());
  expect_error([&] { (void)block.forward(random_input(2, 3, kD - 1)); },
               "block: input width (last dimension) expected 32, got 31");
  relpos::LayerNorm<float> norm(kD, 1e-5);
  Matrix<float> x = Matrix<float>::Ones(3, kD + 1);
  expect_error([&] { norm.forward(x, x); },
               "LayerNorm::forward: x and out: expected (len, d = 32), got [3, 33] and [3, 33]");
}

// An empty sequence has no output row: a block returns [batch, 0, d_model] (found by
// fuzz_api: attention viewed the columns of its empty scratch through a null pointer).
TEST(ApiMisuse, AnEmptySequenceGivesAnEmptyOutput) {
  relpos::Block<float, relpos::AlibiBias<float>> block(block_config(),
                                                       relpos::AlibiBias<float>(kHeads));
  const Tensor3<float> y = block.forward(random_input(2, 0, kD));
  EXPECT_EQ(y.dimension(0), 2);
  EXPECT_EQ(y.dimension(1), 0);
  EXPECT_EQ(y.dimension(2), kD);
}

// --- 2. negative sizes, refused before any allocation ---------------------------------------

TEST(ApiMisuse, NegativeSizesAreRefusedBeforeAllocating) {
  expect_error(
      [] { relpos::Block<float> b(relpos::BlockConfig{.d_model = 32, .n_heads = 4, .d_ff = -1}); },
      "block: d_ff: expected >= 1, got -1");
  expect_error(
      [] { relpos::Block<float> b(relpos::BlockConfig{.d_model = -8, .n_heads = 4, .d_ff = 8}); },
      "block: d_model: expected >= 1, got -8");
  expect_error([] { relpos::FeedForward<float>(32, -1, relpos::Activation::relu); },
               "FeedForward: d_ff: expected >= 1, got -1");
  expect_error([] { relpos::FeedForward<float>(-3, 8, relpos::Activation::gelu); },
               "FeedForward: d_model: expected >= 1, got -3");
  expect_error([] { relpos::LayerNorm<float>(-1, 1e-5); },
               "LayerNorm: width expected >= 1, got -1");
  expect_error(
      [] { relpos::Block<float> b(relpos::BlockConfig{.d_model = 32, .n_heads = 3, .d_ff = 8}); },
      "attention: d_model (32) must be a positive multiple of n_heads (3)");
}

// --- 3. an encoding built for other sizes than its block --------------------------------

TEST(ApiMisuse, T5ForTwoHeadsInAFourHeadBlockIsRefusedAtConstruction) {
  const relpos::T5Bias<float> t5(2, relpos::T5Config{}, relpos::share(Matrix<float>::Zero(32, 2)));
  expect_error([&] { relpos::Block<float, relpos::T5Bias<float>> b(block_config(), t5); },
               "encoding (t5): built for n_heads = 2, but the attention layer has n_heads = 4");
}

TEST(ApiMisuse, AlibiForTwoHeadsInAFourHeadBlockIsRefusedAtConstruction) {
  expect_error(
      [] {
        relpos::Block<float, relpos::AlibiBias<float>> b(block_config(),
                                                         relpos::AlibiBias<float>(2));
      },
      "encoding (alibi): built for n_heads = 2, but the attention layer has n_heads = 4");
}

TEST(ApiMisuse, XlForTwoHeadsInAFourHeadBlockIsRefusedAtConstruction) {
  const auto u = relpos::share(Matrix<float>::Zero(2, kD / 2));
  const relpos::XlRelative<float> xl(kD, 2, {}, Matrix<float>::Zero(kD, kD), u, u);
  expect_error([&] { relpos::Block<float, relpos::XlRelative<float>> b(block_config(), xl); },
               "encoding (xl): built for n_heads = 2, but the attention layer has n_heads = 4");
}

TEST(ApiMisuse, HeadWidthAndModelWidthMismatchesAreRefusedAtConstruction) {
  expect_error(
      [] {
        relpos::Block<float, relpos::Rotary<float>> b(block_config(), relpos::Rotary<float>(16));
      },
      "encoding (rotary): built for d_head = 16, but the attention layer has d_head = 8");
  expect_error(
      [] {
        relpos::Block<float, relpos::LearnedRelative<float>> b(
            block_config(), relpos::LearnedRelative<float>::random(4, {.max_distance = 2}, 1));
      },
      "encoding (learned): built for d_head = 4, but the attention layer has d_head = 8");
  expect_error(
      [] {
        relpos::Block<float, relpos::AbsoluteSinusoidal<float>> b(
            block_config(), relpos::AbsoluteSinusoidal<float>(64));
      },
      "encoding (absolute): built for d_model = 64, but the attention layer has d_model = 32");
}

TEST(ApiMisuse, AnEncodingSwappedInAfterConstructionIsRefusedAtForward) {
  relpos::Block<float, relpos::AlibiBias<float>> block(block_config(),
                                                       relpos::AlibiBias<float>(kHeads));
  block.self_attn.encoding = relpos::AlibiBias<float>(2);
  expect_error([&] { (void)block.forward(random_input(1, 4, kD)); },
               "self_attn.encoding (alibi): built for n_heads = 2, but the attention layer has "
               "n_heads = 4");
}

// --- 4. an input encoding inside a lone Block -------------------------------------------

// A lone block applies its input encoding as Encoder does for its first layer: it equals a
// one-layer encoder with the same weights, and differs from the same block without it.
template <class Enc>
void expect_lone_block_encodes_input(const Enc& enc) {
  relpos::EncoderConfig ec{.d_model = kD, .n_heads = kHeads, .n_layers = 1, .d_ff = kFf};
  relpos::Encoder<float, Enc> encoder(ec, [&](Index) { return enc; });
  randomize(encoder.layers[0]);
  const relpos::Block<float, Enc>& block = encoder.layers[0];
  relpos::Block<float> plain(ec.block());
  plain.self_attn.in_proj_weight = block.self_attn.in_proj_weight;
  plain.self_attn.in_proj_bias = block.self_attn.in_proj_bias;
  plain.self_attn.out_proj_weight = block.self_attn.out_proj_weight;
  plain.self_attn.out_proj_bias = block.self_attn.out_proj_bias;
  plain.ffn = block.ffn;
  plain.norm1 = block.norm1;
  plain.norm2 = block.norm2;

  const Tensor3<float> x = random_input(2, 7, kD, 3);
  const Tensor3<float> lone = block.forward(x);
  const Tensor3<float> stack = encoder.forward(x);
  const Tensor3<float> none = plain.forward(x);
  double same = 0, apart = 0;
  for (Index i = 0; i < x.size(); ++i) {
    same = std::max(same, double(std::abs(lone.data()[i] - stack.data()[i])));
    apart = std::max(apart, double(std::abs(lone.data()[i] - none.data()[i])));
  }
  EXPECT_EQ(same, 0.0) << Enc::name << ": a lone block must equal a one-layer encoder";
  EXPECT_GT(apart, 1e-3) << Enc::name << ": the position encoding must change the output";
}

TEST(ApiMisuse, AbsoluteInALoneBlockIsAppliedAsInAnEncoder) {
  expect_lone_block_encodes_input(relpos::AbsoluteSinusoidal<float>(kD));
}

TEST(ApiMisuse, AdditiveInALoneBlockIsAppliedAsInAnEncoder) {
  relpos::AdditiveConfig ac;
  ac.window = 2;
  expect_lone_block_encodes_input(relpos::Additive<float>(kD, ac));
}

// --- 5. building in code ----------------------------------------------------------------

relpos::EncoderConfig stack_config() {
  return {.d_model = kD,
          .n_heads = kHeads,
          .n_layers = 2,
          .d_ff = kFf,
          .norm_first = true,
          .final_norm = true,
          .vocab_size = 11,
          .output_head = true};
}

TEST(ApiMisuse, EncoderBuiltInCodeIsValidatedAsLoadValidates) {
  using E = relpos::Encoder<float>;
  {
    E e(stack_config());
    e.layers[1].self_attn.in_proj_weight = Matrix<float>::Zero(3 * kD, kD - 1);
    expect_error([&] { (void)e.forward(random_input(1, 3, kD)); },
                 "layers.1.self_attn.in_proj_weight: expected [96, 32] (3·d_model, d_model), got "
                 "[96, 31]");
  }
  {
    E e(stack_config());
    e.layers.pop_back();
    expect_error([&] { e.validate(); }, "layers: expected n_layers = 2 blocks, got 1");
  }
  {
    E e(stack_config());
    e.norm.reset();
    expect_error([&] { e.validate(); }, "norm: missing, but final_norm is true");
  }
  {
    E e(stack_config());
    e.embedding = Matrix<float>::Zero(10, kD);
    expect_error([&] { (void)e.forward_ids(relpos::TokenIds::Zero(1, 2)); },
                 "embedding: expected [11, 32] (vocab_size, d_model), got [10, 32]");
  }
  {
    E e(stack_config());
    e.head_bias = Vector<float>::Zero(3);
    expect_error([&] { e.validate(); }, "head_bias: expected [11] (vocab_size), got [3]");
  }
  {
    E e(stack_config());
    e.layers[0].norm_first = false;
    expect_error([&] { e.validate(); },
                 "layers.0.norm_first: expected true (the encoder's config), got false");
  }
  {
    E e;  // empty: refused until filled
    expect_error([&] { (void)e.forward(random_input(1, 3, kD)); }, "d_model: expected >= 1, got 0");
  }
  // the same validation refuses a bad config in code and in load
  auto bad = stack_config();
  bad.d_ff = 0;
  expect_error([&] { E e(bad); }, "d_ff: expected >= 1, got 0");
}

// Built in code with random weights, saved with the writer under the names of spec §1,
// loaded back: every weight and the output are bit for bit the same.
TEST(ApiMisuse, EncoderBuiltInCodeSavesAndLoadsBackBitForBit) {
  using Enc = relpos::LearnedRelative<float>;
  const relpos::EncoderConfig cfg = stack_config();
  relpos::Encoder<float, Enc> built(cfg, [](Index n) {
    return Enc::random(kDHead, {.max_distance = 3}, 100 + static_cast<std::uint64_t>(n));
  });
  std::srand(7);
  built.embedding.setRandom();
  for (auto& layer : built.layers) randomize(layer);
  built.norm->weight.setRandom();
  built.norm->bias.setRandom();
  built.head_weight.setRandom();
  built.head_bias.setRandom();
  built.validate();

  relpos::io::SafetensorsWriter w;
  w.add("embed.weight", built.embedding);
  for (std::size_t n = 0; n < built.layers.size(); ++n) {
    const auto& b = built.layers[n];
    const std::string p = "layers." + std::to_string(n) + ".";
    w.add(p + "self_attn.in_proj_weight", b.self_attn.in_proj_weight);
    w.add(p + "self_attn.in_proj_bias", b.self_attn.in_proj_bias);
    w.add(p + "self_attn.out_proj.weight", b.self_attn.out_proj_weight);
    w.add(p + "self_attn.out_proj.bias", b.self_attn.out_proj_bias);
    w.add(p + "self_attn.relative_key", b.self_attn.encoding.key_table().rows(-3, 3).view());
    w.add(p + "self_attn.relative_value", b.self_attn.encoding.value_table().rows(-3, 3).view());
    w.add(p + "linear1.weight", b.ffn.linear1_weight);
    w.add(p + "linear1.bias", b.ffn.linear1_bias);
    w.add(p + "linear2.weight", b.ffn.linear2_weight);
    w.add(p + "linear2.bias", b.ffn.linear2_bias);
    w.add(p + "norm1.weight", b.norm1.weight);
    w.add(p + "norm1.bias", b.norm1.bias);
    w.add(p + "norm2.weight", b.norm2.weight);
    w.add(p + "norm2.bias", b.norm2.bias);
  }
  w.add("norm.weight", built.norm->weight);
  w.add("norm.bias", built.norm->bias);
  w.add("head.weight", built.head_weight);
  w.add("head.bias", built.head_bias);
  const auto file = relpos::io::SafetensorsFile::from_bytes(w.bytes(), "built.safetensors");

  const auto loaded = relpos::Encoder<float, Enc>::load(file, cfg, [&](Index n) {
    const std::string p = "layers." + std::to_string(n) + ".self_attn.";
    return Enc(kDHead, {.max_distance = 3, .tensor_prefix = p},
               file.matrix<float>(p + "relative_key", 7, kDHead),
               file.matrix<float>(p + "relative_value", 7, kDHead));
  });
  EXPECT_TRUE(loaded.embedding == built.embedding);
  for (std::size_t n = 0; n < built.layers.size(); ++n) {
    const auto &a = built.layers[n], &b = loaded.layers[n];
    EXPECT_TRUE(a.self_attn.in_proj_weight == b.self_attn.in_proj_weight);
    EXPECT_TRUE(a.self_attn.in_proj_bias == b.self_attn.in_proj_bias);
    EXPECT_TRUE(a.self_attn.out_proj_weight == b.self_attn.out_proj_weight);
    EXPECT_TRUE(a.self_attn.out_proj_bias == b.self_attn.out_proj_bias);
    EXPECT_TRUE(a.self_attn.encoding.key_table().rows(-3, 3).view() ==
                b.self_attn.encoding.key_table().rows(-3, 3).view());
    EXPECT_TRUE(a.self_attn.encoding.value_table().rows(-3, 3).view() ==
                b.self_attn.encoding.value_table().rows(-3, 3).view());
    EXPECT_TRUE(a.ffn.linear1_weight == b.ffn.linear1_weight);
    EXPECT_TRUE(a.ffn.linear1_bias == b.ffn.linear1_bias);
    EXPECT_TRUE(a.ffn.linear2_weight == b.ffn.linear2_weight);
    EXPECT_TRUE(a.ffn.linear2_bias == b.ffn.linear2_bias);
    EXPECT_TRUE(a.norm1.weight == b.norm1.weight && a.norm1.bias == b.norm1.bias);
    EXPECT_TRUE(a.norm2.weight == b.norm2.weight && a.norm2.bias == b.norm2.bias);
  }
  EXPECT_TRUE(loaded.norm->weight == built.norm->weight && loaded.norm->bias == built.norm->bias);
  EXPECT_TRUE(loaded.head_weight == built.head_weight && loaded.head_bias == built.head_bias);

  relpos::TokenIds ids(2, 6);
  ids << 1, 2, 3, 4, 5, 6, 10, 9, 8, 7, 0, 0;
  const Tensor3<float> a = built.forward_ids(ids), b = loaded.forward_ids(ids);
  ASSERT_EQ(a.size(), b.size());
  for (Index i = 0; i < a.size(); ++i) ASSERT_EQ(a.data()[i], b.data()[i]) << "element " << i;
}

// A Model built in code from its config and an encoder runs as that encoder does; a config
// that does not describe the encoder is refused, naming the key.
TEST(ApiMisuse, ModelBuiltInCodeIsCheckedAgainstItsConfig) {
  relpos::io::ModelConfig mc;
  mc.d_model = kD;
  mc.n_heads = kHeads;
  mc.n_layers = 2;
  mc.d_ff = kFf;
  mc.position = relpos::io::RotaryPosition{};
  const relpos::EncoderConfig ec{.d_model = kD, .n_heads = kHeads, .n_layers = 2, .d_ff = kFf};
  relpos::Encoder<float, relpos::Rotary<float>> enc(
      ec, [](Index) { return relpos::Rotary<float>(kDHead); });
  std::srand(5);
  for (auto& layer : enc.layers) randomize(layer);
  const relpos::Model<float> model(mc, enc);
  const Tensor3<float> x = random_input(2, 5, kD);
  const Tensor3<float> a = model.forward(x).output, b = enc.forward(x);
  for (Index i = 0; i < a.size(); ++i) ASSERT_EQ(a.data()[i], b.data()[i]);

  relpos::io::ModelConfig other = mc;
  other.position = relpos::io::AlibiPosition{};
  expect_error([&] { relpos::Model<float> m(other, enc); },
               "position.type: the config says \"alibi\", the encoder's encoding is \"rotary\"");
  other = mc;
  other.d_ff = 2 * kFf;
  expect_error([&] { relpos::Model<float> m(other, enc); },
               "d_ff: the config says 128, the encoder has 64");
  auto spoiled = enc;
  spoiled.layers[0].ffn.linear2_bias = Vector<float>::Zero(3);
  expect_error([&] { relpos::Model<float> m(mc, spoiled); },
               "layers.0.ffn.linear2_bias: expected [32] (d_model), got [3]");
}

TEST(ApiMisuse, T5BidirectionalFollowsCausalAsTheSpecSays) {
  const relpos::SharedMatrix<float> table = relpos::share(Matrix<float>::Zero(32, kHeads));
  EXPECT_TRUE(relpos::T5Bias<float>(kHeads, {}, table).bidirectional());
  EXPECT_FALSE(relpos::T5Bias<float>(kHeads, {.causal = true}, table).bidirectional());
  EXPECT_TRUE(relpos::T5Bias<float>(kHeads, {.bidirectional = true, .causal = true}, table)
                  .bidirectional());
  // a t5 whose default was settled for another causal flag than its block's is refused
  expect_error(
      [&] {
        relpos::Block<float, relpos::T5Bias<float>> b(block_config(/*causal=*/true),
                                                      relpos::T5Bias<float>(kHeads, {}, table));
      },
      "encoding (t5): built for causal = false (bidirectional not given follows it), but the "
      "attention layer has causal = true");
  // given explicitly, bidirectional is what it says in any block
  relpos::Block<float, relpos::T5Bias<float>> ok(
      block_config(true), relpos::T5Bias<float>(kHeads, {.bidirectional = true}, table));
  EXPECT_TRUE(ok.self_attn.encoding.bidirectional());
}

TEST(ApiMisuse, RequiredKeysAreNotSentinels) {
  expect_error([] { (void)relpos::LearnedRelative<float>::random(kDHead, {}, 1); },
               "learned: position.max_distance: required key is missing");
  expect_error([] { relpos::Additive<float>(kD, relpos::AdditiveConfig{}); },
               "additive: position.window: required key is missing");
  // rotary_dim is optional with the spec's default, d_head
  EXPECT_FALSE(relpos::RotaryConfig{}.rotary_dim.has_value());
  EXPECT_EQ(relpos::Rotary<float>(kDHead).rotary_dim(), kDHead);
  expect_error([] { relpos::Rotary<float>(kDHead, {.rotary_dim = 0}); },
               "rotary: position.rotary_dim: must be >= 2, got 0");
}

// --- 6. inputs carry their length ---------------------------------------------------------

TEST(ApiMisuse, DecoderSpansOfTheWrongLengthAreRefused) {
  relpos::EncoderConfig ec{
      .d_model = kD, .n_heads = kHeads, .n_layers = 1, .d_ff = kFf, .causal = true};
  const relpos::Encoder<float, relpos::Rotary<float>> enc(
      ec, [](Index) { return relpos::Rotary<float>(kDHead); });
  relpos::Decoder<float, relpos::Rotary<float>> dec(enc, 16);
  Matrix<float> x = Matrix<float>::Ones(3, kD), out(3, kD);
  const std::vector<std::int64_t> two_ids = {0, 1};
  expect_error([&] { dec.forward(x, out, two_ids); },
               "Decoder::forward: positions: expected 3 entries (one per row of x), got 2");
  const std::vector<bool> flags = {false, false, false, false};
  const bool four[4] = {false, false, false, false};
  expect_error([&] { dec.forward(x, out, {}, std::span<const bool>(four)); },
               "Decoder::forward: padding: expected 3 entries (one per row of x), got 4");
  EXPECT_EQ(dec.size(), 0);
  const std::int64_t three_ids[3] = {0, 1, 2};
  dec.forward(x, out, three_ids);
  EXPECT_EQ(dec.size(), 3);
}

TEST(ApiMisuse, KVCacheAppendChecksShapesAndSpans) {
  relpos::KVCache<float> cache(kD, 8);
  const Matrix<float> k = Matrix<float>::Ones(2, kD), v = Matrix<float>::Zero(2, kD);
  const Matrix<float> narrow = Matrix<float>::Zero(2, kD - 1);
  const std::int64_t two_ids[2] = {0, 1}, one_id[1] = {0}, negative[2] = {0, -3};
  const bool three_flags[3] = {false, false, true};
  expect_error([&] { cache.append(k, narrow, two_ids); },
               "KVCache::append: k and v: expected (n, d_model = 32), got [2, 32] and [2, 31]");
  expect_error([&] { cache.append(k, v, one_id); },
               "KVCache::append: positions and padding: expected 2 entries (one per row of k; "
               "padding may be empty), got 1 and 0");
  expect_error([&] { cache.append(k, v, two_ids, three_flags); },
               "KVCache::append: positions and padding: expected 2 entries (one per row of k; "
               "padding may be empty), got 2 and 3");
  expect_error([&] { cache.append(k, v, negative); },
               "KVCache::append: positions[1]: expected >= 0, got -3");
  EXPECT_EQ(cache.size(), 0);  // nothing was appended by a refused call
  cache.append(k, v, two_ids);
  EXPECT_EQ(cache.size(), 2);
  EXPECT_EQ(cache.position(1), 1);
}

TEST(ApiMisuse, BatchInputsAreBorrowedFromLvaluesAndChecked) {
  // a temporary mask would dangle: binding one does not compile
  static_assert(
      std::is_constructible_v<relpos::Borrowed<relpos::PaddingMask>, const relpos::PaddingMask&>);
  static_assert(
      !std::is_constructible_v<relpos::Borrowed<relpos::PaddingMask>, relpos::PaddingMask&&>);
  static_assert(
      !std::is_constructible_v<relpos::Borrowed<relpos::PositionIds>, relpos::PositionIds>);
  relpos::Block<float> block(block_config());
  const relpos::PaddingMask short_mask = relpos::PaddingMask::Zero(2, 9);
  expect_error([&] { (void)block.forward(random_input(2, 10, kD), {.padding = short_mask}); },
               "padding_mask: expected [2, 10], got [2, 9]");
  const relpos::PositionIds ids = relpos::PositionIds::Zero(1, 10);
  expect_error([&] { (void)block.forward(random_input(2, 10, kD), {.positions = ids}); },
               "position_ids: expected [2, 10], got [1, 10]");
}

// --- 7. one name for one idea -------------------------------------------------------------

template <class E>
concept HasKeyValueTables = requires(const E& e) {
  e.key_table();
  e.value_table();
  e.key_view(Index(3));
  e.value_view(Index(3));
};
template <class E>
concept ReportsCachedBytes = requires(const E& e) {
  { e.cached_bytes() } -> std::convertible_to<std::size_t>;
};

TEST(ApiMisuse, OneNameForOneIdea) {
  static_assert(HasKeyValueTables<relpos::SinusoidalRelative<float>>);
  static_assert(HasKeyValueTables<relpos::LearnedRelative<float>>);
  static_assert(ReportsCachedBytes<relpos::SinusoidalRelative<float>>);
  static_assert(ReportsCachedBytes<relpos::LearnedRelative<float>>);
  static_assert(ReportsCachedBytes<relpos::Rotary<float>>);
  static_assert(ReportsCachedBytes<relpos::AbsoluteSinusoidal<float>>);
  static_assert(ReportsCachedBytes<relpos::Additive<float>>);
  static_assert(ReportsCachedBytes<relpos::XlRelative<float>>);
  // the sinusoidal key and value views are the same rows, s(c)
  const relpos::SinusoidalRelative<float> s(kDHead);
  EXPECT_TRUE(s.key_view(4).materialize()(1, 2, 3) == s.value_view(4).materialize()(1, 2, 3));
  EXPECT_GT(s.cached_bytes(), 0u);
  // t5 and xl both take their shared tables as relpos::SharedMatrix: layers given the same
  // pointer share one table
  const auto table = relpos::share(Matrix<float>::Ones(32, kHeads));
  const relpos::T5Bias<float> t5(kHeads, {}, table);
  EXPECT_EQ(&t5.table(), table.get());
}

}  // namespace
