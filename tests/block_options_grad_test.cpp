// Tests for the backward of spec §7's block options: RMSNorm (rms_norm_grad.hpp, norm_grad.hpp),
// bias-free linears, the gated feed-forward and gelu_tanh (feed_forward_grad.hpp), bias-free
// attention (attention_grad.hpp), and the embedding stage with embed_norm, pos_embed.weight and
// type_embed.weight (embedding_grad.hpp). Evidence: golden gradients from PyTorch autograd
// (tools/golden_grads.py, float64; its encoder cases run tools/golden_block_options.py's forward,
// written from the spec's formulas) in float and double, central finite differences in double on
// tiny sizes, and the errors of bad input.
#include <relpos/embedding_grad.hpp>
#include <relpos/encoder_grad.hpp>
#include <relpos/encodings/absolute.hpp>
#include <relpos/encodings/rotary.hpp>
#include <relpos/encodings/t5.hpp>
#include <relpos/feed_forward_grad.hpp>
#include <relpos/norm_grad.hpp>
#include <relpos/rms_norm_grad.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/finite_differences.hpp"
#include "support/golden.hpp"
#include "support/random.hpp"

namespace {

using relpos::Index;
using relpos::Matrix;
using relpos::Tensor3;
using relpos::TokenIds;
using relpos::Vector;

template <class T>
class OptionGradTyped : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(OptionGradTyped, Scalars);

// The tolerances of tests/grad_test.cpp (one module: double 1e-12, float 1e-5 of the tensor's
// scale) and tests/block_grad_test.cpp (two layers: double 1e-11, float 1e-4 of the scale and
// 1e-4 relative), for the same reasons.
template <class T, class A, class B>
::testing::AssertionResult option_close(const A& actual, const B& expected, bool stack) {
  if constexpr (std::is_same_v<T, double>) {
    const double tol = stack ? 1e-11 : 1e-12;
    return relpos::test::all_close(actual, expected, tol, tol);
  } else {
    const double tol = stack ? 1e-4 : 1e-5;
    return relpos::test::all_close(actual, expected, tol * expected.cwiseAbs().maxCoeff(), tol);
  }
}

template <class T, class U>
::testing::AssertionResult option_close(const Tensor3<T>& actual, const Tensor3<U>& expected,
                                        bool stack) {
  if constexpr (std::is_same_v<T, double>) {
    const double tol = stack ? 1e-11 : 1e-12;
    return relpos::test::all_close(actual, expected, tol, tol);
  } else {
    const double tol = stack ? 1e-4 : 1e-5;
    const Tensor3<U> a = expected.abs();
    const Eigen::Tensor<U, 0, Eigen::RowMajor> m = a.maximum();
    return relpos::test::all_close(actual, expected, tol * m(), tol);
  }
}

TokenIds option_ids(const relpos::io::SafetensorsFile& f, const char* name) {
  const auto& shape = f.info(name).shape;
  const std::vector<std::int64_t> v = f.values<std::int64_t>(name);
  TokenIds ids(shape.at(0), shape.at(1));
  for (Index k = 0; k < ids.size(); ++k) ids.data()[k] = v[static_cast<std::size_t>(k)];
  return ids;
}

// Every gradient for_each names against the file's grad.<name>; returns how many were compared.
template <class T, class G>
std::size_t compare_named(G& grad, const relpos::io::SafetensorsFile& f, bool stack) {
  std::size_t checked = 0;
  const auto check = [&](const std::string& name, const auto& g) {
    SCOPED_TRACE(name);
    ++checked;
    using M = std::decay_t<decltype(g)>;
    if constexpr (M::ColsAtCompileTime == 1) {
      EXPECT_TRUE(option_close<T>(g, f.vector<double>("grad." + name), stack));
    } else {
      EXPECT_TRUE(option_close<T>(g, f.matrix<double>("grad." + name), stack));
    }
  };
  if constexpr (requires { grad.for_each(check); }) {
    grad.for_each(check);
  } else {
    grad.for_each("", check);
  }
  return checked;
}

std::size_t option_grad_count(const relpos::io::SafetensorsFile& f) {
  std::size_t n = 0;
  for (const std::string& name : f.names()) n += name.rfind("grad.", 0) == 0;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Modules against torch.

TYPED_TEST(OptionGradTyped, RmsNormMatchesTorch) {
  using T = TypeParam;
  const auto f = relpos::test::golden_file("grads/rms_norm.safetensors");
  const Tensor3<T> x = f.tensor3<T>("input"), dout = f.tensor3<T>("dout");
  const Index d = x.dimension(2);
  // as an RMSNorm and as a block's Norm of kind rms: the same gradients
  const auto rms = relpos::RMSNorm<T>::load(f, "norm", d, 1e-6);
  const relpos::Norm<T> norm = rms;
  relpos::LayerNormGrad<T> grad_rms, grad_norm;
  Tensor3<T> out(x.dimensions()), dx(x.dimensions()), out2(x.dimensions()), dx2(x.dimensions());
  relpos::LayerNormSaved<T> saved;
  for (Index b = 0; b < x.dimension(0); ++b) {
    relpos::forward_saving(rms, relpos::item(x, b), relpos::item(out, b), saved);
    relpos::backward(rms, saved, relpos::item(dout, b), relpos::item(dx, b), grad_rms);
    relpos::forward_saving(norm, relpos::item(x, b), relpos::item(out2, b), saved);
    relpos::backward(norm, saved, relpos::item(dout, b), relpos::item(dx2, b), grad_norm);
  }
  EXPECT_TRUE(option_close<T>(out, f.tensor3<double>("output"), false));
  EXPECT_TRUE(option_close<T>(dx, f.tensor3<double>("grad.input"), false));
  EXPECT_TRUE(option_close<T>(grad_rms.weight, f.vector<double>("grad.norm.weight"), false));
  EXPECT_EQ(grad_rms.bias.size(), 0);  // no bias tensor, so no bias gradient
  EXPECT_EQ(grad_norm.weight, grad_rms.weight);
  const Tensor3<T> diff = dx2 - dx;
  const Eigen::Tensor<T, 0, Eigen::RowMajor> m = diff.abs().maximum();
  EXPECT_EQ(m(), T(0));
  std::vector<std::string> names;
  grad_norm.for_each("norm", [&](const std::string& n, auto&) { names.push_back(n); });
  EXPECT_EQ(names, std::vector<std::string>{"norm.weight"});
}

struct FfnOptionCase {
  const char* file;
  relpos::Activation act;
  bool gated;
  bool bias;
};
// tools/golden_grads.py's OPTION_MODULE_CASES
const FfnOptionCase kFfnOptionCases[] = {
    {"feed_forward_gated_gelu_tanh_nobias", relpos::Activation::gelu_tanh, true, false},
    {"feed_forward_gated_relu", relpos::Activation::relu, true, true},
    {"feed_forward_gated_gelu", relpos::Activation::gelu, true, true},
    {"feed_forward_gelu_tanh", relpos::Activation::gelu_tanh, false, true},
    {"feed_forward_relu_nobias", relpos::Activation::relu, false, false},
};

TYPED_TEST(OptionGradTyped, FeedForwardGatedBiasFreeAndGeluTanhMatchTorch) {
  using T = TypeParam;
  for (const FfnOptionCase& c : kFfnOptionCases) {
    SCOPED_TRACE(c.file);
    const auto f = relpos::test::golden_file(std::string("grads/") + c.file + ".safetensors");
    const Tensor3<T> x = f.tensor3<T>("input"), dout = f.tensor3<T>("dout");
    const Index d = x.dimension(2), d_ff = f.info("linear1.weight").shape.at(0);
    const auto ffn = relpos::FeedForward<T>::load(f, "", {d, d_ff, c.act, c.gated, c.bias});
    Tensor3<T> out(x.dimensions()), dx(x.dimensions());
    relpos::FeedForwardSaved<T> saved;
    relpos::FeedForwardGrad<T> grad;
    for (Index b = 0; b < x.dimension(0); ++b) {
      relpos::forward_saving(ffn, relpos::item(x, b), relpos::item(out, b), saved);
      relpos::backward(ffn, saved, relpos::item(dout, b), relpos::item(dx, b), grad);
    }
    EXPECT_TRUE(option_close<T>(out, f.tensor3<double>("output"), false));
    EXPECT_TRUE(option_close<T>(dx, f.tensor3<double>("grad.input"), false));
    // every tensor of the file compared, under its name; no bias gradient without biases
    EXPECT_EQ(compare_named<T>(grad, f, false) + 1, option_grad_count(f));
    EXPECT_EQ(grad.linear3_weight.size() > 0, c.gated);
    EXPECT_EQ(grad.linear1_bias.size() > 0, c.bias);
  }
}

// ---------------------------------------------------------------------------------------------
// The stack and the embedding stage against torch (tools/golden_grads.py's
// OPTION_ENCODER_CASES: 2 layers, d_model 8, 2 heads, d_ff 12, batch 2, len 6).

relpos::EncoderConfig option_config(const relpos::io::SafetensorsFile& f, relpos::NormKind norm,
                                    bool bias, bool gated, relpos::Activation act, bool norm_first,
                                    bool final_norm, double eps) {
  relpos::EncoderConfig c{.d_model = 8,
                          .n_heads = 2,
                          .n_layers = 2,
                          .d_ff = 12,
                          .activation = act,
                          .norm_first = norm_first,
                          .layer_norm_eps = eps,
                          .final_norm = final_norm,
                          .norm = norm,
                          .bias = bias,
                          .gated = gated};
  if (f.contains("embed.weight")) c.vocab_size = f.info("embed.weight").shape.at(0);
  c.embed_norm = f.contains("embed_norm.weight");
  if (f.contains("type_embed.weight")) c.type_vocab_size = f.info("type_embed.weight").shape.at(0);
  if (f.contains("pos_embed.weight")) c.pos_embed_rows = f.info("pos_embed.weight").shape.at(0);
  return c;
}

// forward_saving and backward item by item (from input_ids through the embedding stage when the
// file has them), against the golden output, input gradient and every named gradient.
template <class T, class Enc, class MakeEncoding>
void check_option_golden(const std::string& file, const relpos::EncoderConfig& cfg,
                         MakeEncoding&& make_encoding) {
  SCOPED_TRACE(file);
  const auto f = relpos::test::golden_file("grads/" + file + ".safetensors");
  const Tensor3<double> want_out = f.tensor3<double>("output");
  const Tensor3<T> dout = f.tensor3<T>("dout");
  const Index batch = dout.dimension(0), len = dout.dimension(1), d = dout.dimension(2);
  const std::vector<std::uint8_t> pad_bytes = f.values<std::uint8_t>("padding_mask");
  const auto encoder = relpos::Encoder<T, Enc>::load(f, cfg, make_encoding);
  const bool ids_input = f.contains("input_ids");
  TokenIds ids, types, positions;
  if (ids_input) ids = option_ids(f, "input_ids");
  if (f.contains("token_type_ids")) types = option_ids(f, "token_type_ids");
  if (f.contains("position_ids")) positions = option_ids(f, "position_ids");
  const TokenIds* type_ptr = types.size() > 0 ? &types : nullptr;
  relpos::SequenceWorkspace<T> ws;
  relpos::EncoderSaved<T> saved;
  relpos::EmbeddingSaved<T> embed_saved;
  relpos::EncoderGrad<T> grad;
  relpos::EmbeddingGrad<T> embed_grad;
  for (Index b = 0; b < batch; ++b) {
    const auto key_padding = std::make_unique<bool[]>(static_cast<std::size_t>(len));
    for (Index j = 0; j < len; ++j) {
      key_padding[static_cast<std::size_t>(j)] = pad_bytes[static_cast<std::size_t>(b * len + j)];
    }
    relpos::SequenceInputs in{.positions = {.len = len, .call_length = len},
                              .key_padding = key_padding.get()};
    if (positions.size() > 0) {
      in.positions.ids = positions.data() + b * len;
      in.positions.call_length = positions.maxCoeff() + 1;
    }
    Matrix<T> h(len, d);
    if (ids_input) {
      relpos::embedding_forward_saving(encoder, ids, b, in, type_ptr, h, embed_saved);
    } else {
      h = relpos::item(f.tensor3<T>("input"), b);
    }
    relpos::forward_saving(encoder, h, in, ws, saved);
    EXPECT_TRUE(option_close<T>(h, relpos::item(want_out, b), true)) << "item " << b;
    Matrix<T> g = relpos::item(dout, b);
    relpos::backward(encoder, saved, in, g, grad);
    if (ids_input) {
      relpos::embedding_backward(encoder, embed_saved, ids, b, in, type_ptr, g, embed_grad);
    } else {
      EXPECT_TRUE(option_close<T>(g, relpos::item(f.tensor3<double>("grad.input"), b), true))
          << "item " << b;
    }
  }
  // every gradient of the file compared, by name
  std::size_t checked = compare_named<T>(grad, f, true);
  if (ids_input) checked += compare_named<T>(embed_grad, f, true);
  EXPECT_EQ(checked + (ids_input ? 0 : 1), option_grad_count(f));
}

TYPED_TEST(OptionGradTyped, T5BlockRmsBiasFreeGatedGeluTanhMatchesTorch) {
  using T = TypeParam;
  const auto f = relpos::test::golden_file("grads/encoder_opt_t5_block.safetensors");
  const auto cfg = option_config(f, relpos::NormKind::rms, false, true,
                                 relpos::Activation::gelu_tanh, true, true, 1e-6);
  const relpos::T5Config c{.num_buckets = 6, .max_distance = 4};
  const auto table = relpos::share(f.matrix<T>("position.relative_attention_bias", 6, 2));
  check_option_golden<T, relpos::T5Bias<T>>("encoder_opt_t5_block", cfg,
                                            [&](Index) { return relpos::T5Bias<T>(2, c, table); });
}

TYPED_TEST(OptionGradTyped, RmsPostNormBiasFreeRotaryMatchesTorch) {
  using T = TypeParam;
  const auto f = relpos::test::golden_file("grads/encoder_opt_rms_post_rotary.safetensors");
  const auto cfg = option_config(f, relpos::NormKind::rms, false, false,
                                 relpos::Activation::gelu_tanh, false, false, 1e-5);
  check_option_golden<T, relpos::Rotary<T>>("encoder_opt_rms_post_rotary", cfg, [](Index) {
    return relpos::Rotary<T>(4, relpos::RotaryConfig{});
  });
}

TYPED_TEST(OptionGradTyped, EmbeddingStageWithTypesAndAbsoluteMatchesTorch) {
  using T = TypeParam;
  const auto f = relpos::test::golden_file("grads/encoder_opt_bert_embed_absolute.safetensors");
  auto cfg = option_config(f, relpos::NormKind::layer, true, true, relpos::Activation::gelu, false,
                           false, 1e-5);
  cfg.pos_embed_offset = 2;
  check_option_golden<T, relpos::AbsoluteSinusoidal<T>>(
      "encoder_opt_bert_embed_absolute", cfg,
      [](Index) { return relpos::AbsoluteSinusoidal<T>(8); });
}

TYPED_TEST(OptionGradTyped, EmbeddingStageAtRepeatedPositionIdsMatchesTorch) {
  using T = TypeParam;
  const auto f = relpos::test::golden_file("grads/encoder_opt_embed_t5_ids.safetensors");
  auto cfg = option_config(f, relpos::NormKind::layer, true, false, relpos::Activation::relu, true,
                           true, 1e-5);
  cfg.pos_embed_offset = 1;
  const relpos::T5Config c{.num_buckets = 6, .max_distance = 4};
  const auto table = relpos::share(f.matrix<T>("position.relative_attention_bias", 6, 2));
  check_option_golden<T, relpos::T5Bias<T>>("encoder_opt_embed_t5_ids", cfg,
                                            [&](Index) { return relpos::T5Bias<T>(2, c, table); });
}

// ---------------------------------------------------------------------------------------------
// Central finite differences in double (tests/support/finite_differences.hpp: h = 1e-6,
// tolerance 1e-7 absolute + 1e-6 relative), with L = Σ dout ⊙ (the library's own forward).

using relpos::test::matches_finite_differences;

TEST(OptionGradFiniteDifferences, RmsNorm) {
  std::mt19937_64 gen(1801);
  const Index len = 3, d = 5;
  relpos::RMSNorm<double> norm(d, 1e-6);
  relpos::test::fill_normal(norm.weight, gen, 0.7);
  Matrix<double> x(len, d), dout(len, d), out(len, d), dx(len, d);
  relpos::test::fill_normal(x, gen, 1.5);
  relpos::test::fill_normal(dout, gen, 1.0);
  const auto loss = [&] {
    norm.forward(x, out);
    return (out.array() * dout.array()).sum();
  };
  relpos::LayerNormSaved<double> saved;
  relpos::LayerNormGrad<double> grad;
  relpos::forward_saving(norm, x, out, saved);
  relpos::backward(norm, saved, dout, dx, grad);
  EXPECT_TRUE(matches_finite_differences(x, dx, loss, "x"));
  EXPECT_TRUE(matches_finite_differences(norm.weight, grad.weight, loss, "weight"));
}

// every activation, plain and gated, with and without biases
TEST(OptionGradFiniteDifferences, FeedForwardGatedAndBiasFreeEveryActivation) {
  std::uint64_t seed = 1810;
  for (const auto act :
       {relpos::Activation::relu, relpos::Activation::gelu, relpos::Activation::gelu_tanh}) {
    for (const bool gated : {false, true}) {
      for (const bool bias : {false, true}) {
        SCOPED_TRACE(std::to_string(static_cast<int>(act)) + (gated ? " gated" : " plain") +
                     (bias ? " bias" : " no bias"));
        std::mt19937_64 gen(seed++);
        const Index len = 3, d = 4, d_ff = 6;
        relpos::FeedForward<double> ffn({d, d_ff, act, gated, bias});
        std::map<std::string, Matrix<double>*> matrices{{"linear1.weight", &ffn.linear1_weight},
                                                        {"linear2.weight", &ffn.linear2_weight}};
        std::map<std::string, Vector<double>*> vectors;
        if (gated) matrices["linear3.weight"] = &ffn.linear3_weight;
        if (bias) {
          vectors = {{"linear1.bias", &ffn.linear1_bias}, {"linear2.bias", &ffn.linear2_bias}};
          if (gated) vectors["linear3.bias"] = &ffn.linear3_bias;
        }
        for (auto& [n, m] : matrices) relpos::test::fill_normal(*m, gen, 0.6);
        for (auto& [n, v] : vectors) relpos::test::fill_normal(*v, gen, 0.6);
        Matrix<double> x(len, d), dout(len, d), out(len, d), dx(len, d);
        relpos::test::fill_normal(x, gen, 1.0);
        relpos::test::fill_normal(dout, gen, 1.0);
        relpos::SequenceWorkspace<double> ws;
        const auto loss = [&] {
          ffn.forward(x, out, ws);
          return (out.array() * dout.array()).sum();
        };
        relpos::FeedForwardSaved<double> saved;
        relpos::FeedForwardGrad<double> grad;
        relpos::forward_saving(ffn, x, out, saved);
        // relu's kink: a pre-activation within h of 0 would straddle it
        ASSERT_GT(saved.pre.cwiseAbs().minCoeff(), 1e-3);
        relpos::backward(ffn, saved, dout, dx, grad);
        EXPECT_TRUE(matches_finite_differences(x, dx, loss, "x"));
        std::size_t seen = 0;
        grad.for_each("", [&](const std::string& name, auto& g) {
          ++seen;
          using G = std::decay_t<decltype(g)>;
          if constexpr (G::ColsAtCompileTime == 1) {
            ASSERT_TRUE(vectors.count(name)) << name;
            EXPECT_TRUE(matches_finite_differences(*vectors[name], g, loss, name));
          } else {
            ASSERT_TRUE(matrices.count(name)) << name;
            EXPECT_TRUE(matches_finite_differences(*matrices[name], g, loss, name));
          }
        });
        EXPECT_EQ(seen, matrices.size() + vectors.size());
      }
    }
  }
}

// Every tensor of a random 2-layer stack with the options in `cfg` (and the embedding stage's
// tables when it has a vocabulary: ids with repeats, explicit position ids with repeats, token
// types), reached through the encoder's own fields, against finite differences of the
// library's Encoder::forward / forward_ids; key 1 padded.
template <class Enc>
void check_option_finite_differences(relpos::Encoder<double, Enc>& encoder, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  const Index len = 4, d = encoder.d_model();
  std::map<std::string, Matrix<double>*> matrices;
  std::map<std::string, Vector<double>*> vectors;
  const auto norm = [&](const std::string& p, relpos::Norm<double>& n) {
    vectors[p + ".weight"] = &n.weight;
    if (n.kind == relpos::NormKind::layer) vectors[p + ".bias"] = &n.bias;
  };
  for (std::size_t n = 0; n < encoder.layers.size(); ++n) {
    auto& l = encoder.layers[n];
    const std::string p = "layers." + std::to_string(n) + ".";
    matrices[p + "self_attn.in_proj_weight"] = &l.self_attn.in_proj_weight;
    matrices[p + "self_attn.out_proj.weight"] = &l.self_attn.out_proj_weight;
    matrices[p + "linear1.weight"] = &l.ffn.linear1_weight;
    matrices[p + "linear2.weight"] = &l.ffn.linear2_weight;
    if (l.ffn.gated()) matrices[p + "linear3.weight"] = &l.ffn.linear3_weight;
    if (l.ffn.has_bias()) {
      vectors[p + "self_attn.in_proj_bias"] = &l.self_attn.in_proj_bias;
      vectors[p + "self_attn.out_proj.bias"] = &l.self_attn.out_proj_bias;
      vectors[p + "linear1.bias"] = &l.ffn.linear1_bias;
      vectors[p + "linear2.bias"] = &l.ffn.linear2_bias;
      if (l.ffn.gated()) vectors[p + "linear3.bias"] = &l.ffn.linear3_bias;
    }
    norm(p + "norm1", l.norm1);
    norm(p + "norm2", l.norm2);
  }
  if (encoder.norm) norm("norm", *encoder.norm);
  const bool ids_input = encoder.config.vocab_size > 0;
  if (ids_input) {
    matrices["embed.weight"] = &encoder.embedding;
    if (encoder.config.pos_embed_offset) matrices["pos_embed.weight"] = &encoder.pos_embed;
    if (encoder.config.type_vocab_size > 0) matrices["type_embed.weight"] = &encoder.type_embed;
    if (encoder.embed_norm) {
      vectors["embed_norm.weight"] = &encoder.embed_norm->weight;
      vectors["embed_norm.bias"] = &encoder.embed_norm->bias;
    }
  }
  for (auto& [name, m] : matrices) relpos::test::fill_normal(*m, gen, 0.5);
  for (auto& [name, v] : vectors) {
    relpos::test::fill_normal(*v, gen, 0.5);
    if (name.ends_with("norm1.weight") || name.ends_with("norm2.weight")) v->array() += 1;
  }
  Matrix<double> x(len, d), dout(len, d);
  relpos::test::fill_normal(x, gen, 1.0);
  relpos::test::fill_normal(dout, gen, 1.0);
  relpos::PaddingMask mask(1, len);
  mask << false, true, false, false;
  relpos::PositionIds pos(1, len);
  pos << 2, 0, 2, 1;  // repeats: pos_embed's row 2 + offset gets two tokens' gradients
  TokenIds ids(1, len), types(1, len);
  ids << 3, 1, 3, 0;
  types << 1, 0, 1, 1;
  relpos::BatchInputs bi;
  bi.padding = mask;
  if (ids_input) bi.positions = pos;
  const TokenIds* type_ptr = encoder.config.type_vocab_size > 0 ? &types : nullptr;
  const auto loss = [&] {
    Tensor3<double> out;
    if (ids_input) {
      out = encoder.forward_ids(ids, bi, type_ptr);
    } else {
      Tensor3<double> batch_x(1, len, d);
      relpos::item(batch_x, 0) = x;
      out = encoder.forward(batch_x, bi);
    }
    return (relpos::item(out, 0).array() * dout.array()).sum();
  };
  const relpos::SequenceInputs in = bi.item(0, len);
  relpos::SequenceWorkspace<double> ws;
  relpos::EncoderSaved<double> saved;
  relpos::EmbeddingSaved<double> embed_saved;
  Matrix<double> h = x;
  if (ids_input) relpos::embedding_forward_saving(encoder, ids, 0, in, type_ptr, h, embed_saved);
  relpos::forward_saving(encoder, h, in, ws, saved);
  // forward_saving gives the library's forward
  {
    Tensor3<double> out;
    if (ids_input) {
      out = encoder.forward_ids(ids, bi, type_ptr);
    } else {
      Tensor3<double> batch_x(1, len, d);
      relpos::item(batch_x, 0) = x;
      out = encoder.forward(batch_x, bi);
    }
    EXPECT_TRUE(relpos::test::all_close(relpos::item(out, 0), h, 1e-13, 1e-13));
  }
  Matrix<double> dx = dout;
  relpos::EncoderGrad<double> grad;
  relpos::EmbeddingGrad<double> embed_grad;
  relpos::backward(encoder, saved, in, dx, grad);
  if (ids_input) {
    relpos::embedding_backward(encoder, embed_saved, ids, 0, in, type_ptr, dx, embed_grad);
  } else {
    EXPECT_TRUE(matches_finite_differences(x, dx, loss, "input"));
  }
  std::size_t seen = 0;
  const auto check = [&](const std::string& name, auto& g) {
    ++seen;
    using G = std::decay_t<decltype(g)>;
    if constexpr (G::ColsAtCompileTime == 1) {
      ASSERT_TRUE(vectors.count(name)) << name;
      EXPECT_TRUE(matches_finite_differences(*vectors[name], g, loss, name));
    } else {
      ASSERT_TRUE(matrices.count(name)) << name;
      EXPECT_TRUE(matches_finite_differences(*matrices[name], g, loss, name));
    }
  };
  grad.for_each(check);
  if (ids_input) embed_grad.for_each(check);
  EXPECT_EQ(seen, matrices.size() + vectors.size());
}

relpos::EncoderConfig option_fd_config(relpos::NormKind norm, bool bias, bool gated,
                                       relpos::Activation act, bool norm_first) {
  return {.d_model = 8,
          .n_heads = 2,
          .n_layers = 2,
          .d_ff = 6,
          .activation = act,
          .norm_first = norm_first,
          .final_norm = true,
          .norm = norm,
          .bias = bias,
          .gated = gated};
}

// T5's block (rms, no biases, gated gelu_tanh, pre-norm, final rms norm) and its post-norm
// variant, with none and rotary; a gated LayerNorm stack with biases and relu
TEST(OptionGradFiniteDifferences, RmsBiasFreeGatedStacks) {
  std::uint64_t seed = 1830;
  for (const bool norm_first : {true, false}) {
    SCOPED_TRACE(norm_first ? "pre-norm" : "post-norm");
    const auto cfg = option_fd_config(relpos::NormKind::rms, false, true,
                                      relpos::Activation::gelu_tanh, norm_first);
    relpos::Encoder<double> none(cfg);
    check_option_finite_differences(none, seed++);
    relpos::Encoder<double, relpos::Rotary<double>> rotary(
        cfg, [](Index) { return relpos::Rotary<double>(4, relpos::RotaryConfig{}); });
    check_option_finite_differences(rotary, seed++);
  }
  relpos::Encoder<double> gated_layer(
      option_fd_config(relpos::NormKind::layer, true, true, relpos::Activation::relu, false));
  check_option_finite_differences(gated_layer, seed++);
}

// The embedding stage: embed_norm, pos_embed.weight at repeated position ids (offset 2, rows
// past the last position unused), type_embed.weight, then an rms stack without biases
TEST(OptionGradFiniteDifferences, EmbeddingStage) {
  auto cfg = option_fd_config(relpos::NormKind::rms, false, false, relpos::Activation::gelu, false);
  cfg.vocab_size = 5;
  cfg.embed_norm = true;
  cfg.pos_embed_offset = 2;
  cfg.pos_embed_rows = 6;
  cfg.type_vocab_size = 2;
  relpos::Encoder<double> encoder(cfg);
  check_option_finite_differences(encoder, 1840);
  // and with LayerNorm blocks with biases, only pos_embed (no types, no embed_norm)
  cfg.norm = relpos::NormKind::layer;
  cfg.bias = true;
  cfg.embed_norm = false;
  cfg.type_vocab_size = 0;
  relpos::Encoder<double> plain(cfg);
  check_option_finite_differences(plain, 1841);
}

// ---------------------------------------------------------------------------------------------
// Properties and errors.

TEST(OptionGrad, ForwardSavingGivesTheForwardsOutput) {
  std::mt19937_64 gen(1850);
  relpos::RMSNorm<float> rms(16, 1e-6);
  relpos::test::fill_normal(rms.weight, gen, 1.0);
  relpos::FeedForward<float> ffn({16, 24, relpos::Activation::gelu_tanh, true, false});
  relpos::test::fill_normal(ffn.linear1_weight, gen, 0.3);
  relpos::test::fill_normal(ffn.linear2_weight, gen, 0.3);
  relpos::test::fill_normal(ffn.linear3_weight, gen, 0.3);
  Matrix<float> x(7, 16), a(7, 16), b(7, 16);
  relpos::test::fill_normal(x, gen, 1.0);
  relpos::LayerNormSaved<float> rms_saved;
  rms.forward(x, a);
  relpos::forward_saving(rms, x, b, rms_saved);
  EXPECT_EQ(a, b);  // the same operations in the same order: the same bits
  relpos::SequenceWorkspace<float> ws;
  relpos::FeedForwardSaved<float> ff_saved;
  ffn.forward(x, a, ws);
  relpos::forward_saving(ffn, x, b, ff_saved);
  EXPECT_TRUE(relpos::test::all_close(a, b, 1e-6, 1e-6));
}

template <class F>
std::string option_error_of(F&& f) {
  try {
    f();
  } catch (const relpos::Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(OptionGradErrors, ABiasGradientForALayerWithoutBiases) {
  relpos::FeedForward<double> ffn({4, 6, relpos::Activation::relu, true, false});
  Matrix<double> x = Matrix<double>::Ones(3, 4), out(3, 4), dx(3, 4);
  relpos::FeedForwardSaved<double> saved;
  relpos::forward_saving(ffn, x, out, saved);
  relpos::FeedForwardGrad<double> grad;
  grad.linear2_bias = Vector<double>::Zero(4);  // from a layer that has biases
  std::string msg = option_error_of([&] { relpos::backward(ffn, saved, out, dx, grad); });
  EXPECT_NE(msg.find("linear2.bias gradient: expected empty"), std::string::npos) << msg;

  relpos::RMSNorm<double> rms(4, 1e-6);
  relpos::LayerNormSaved<double> rms_saved;
  relpos::LayerNormGrad<double> rms_grad;
  rms_grad.bias = Vector<double>::Zero(4);
  relpos::forward_saving(rms, x, out, rms_saved);
  msg = option_error_of([&] { relpos::backward(rms, rms_saved, out, dx, rms_grad); });
  EXPECT_NE(msg.find("RMSNorm bias gradient: expected empty"), std::string::npos) << msg;
}

TEST(OptionGradErrors, EmbeddingStageIdsTypesAndPositionRows) {
  relpos::EncoderConfig cfg{.d_model = 4, .n_heads = 1, .n_layers = 1, .d_ff = 4};
  cfg.vocab_size = 5;
  cfg.pos_embed_offset = 1;
  cfg.pos_embed_rows = 4;
  cfg.type_vocab_size = 2;
  const relpos::Encoder<double> encoder(cfg);
  TokenIds ids(1, 3), types(1, 3);
  ids << 0, 7, 1;
  types << 0, 1, 1;
  const relpos::SequenceInputs in{.positions = {.len = 3, .call_length = 3}};
  Matrix<double> h(3, 4);
  relpos::EmbeddingSaved<double> saved;
  std::string msg = option_error_of(
      [&] { relpos::embedding_forward_saving(encoder, ids, 0, in, &types, h, saved); });
  EXPECT_NE(msg.find("input_ids[0, 1]"), std::string::npos) << msg;
  ids(0, 1) = 2;
  types(0, 2) = 2;
  msg = option_error_of(
      [&] { relpos::embedding_forward_saving(encoder, ids, 0, in, &types, h, saved); });
  EXPECT_NE(msg.find("token_type_ids[0, 2]"), std::string::npos) << msg;
  types(0, 2) = 1;
  const std::int64_t far[3] = {0, 3, 1};  // row 3 + 1 is past the last row 3
  const relpos::SequenceInputs far_in{.positions = {.len = 3, .ids = far, .call_length = 4}};
  msg = option_error_of(
      [&] { relpos::embedding_forward_saving(encoder, ids, 0, far_in, &types, h, saved); });
  EXPECT_NE(msg.find("pos_embed.weight"), std::string::npos) << msg;
  // nothing is added before the check
  relpos::EmbeddingGrad<double> grad;
  msg = option_error_of(
      [&] { relpos::embedding_backward(encoder, saved, ids, 0, far_in, &types, h, grad); });
  EXPECT_NE(msg.find("pos_embed.weight"), std::string::npos) << msg;
  EXPECT_EQ(grad.weight.size(), 0);
}

}  // namespace
