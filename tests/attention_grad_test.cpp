// Tests for include/relpos/attention_grad.hpp: the backward of multi-head self-attention with
// position type none (packed in_proj, out_proj, key padding, the causal mask, rows with no
// visible key), rotary, t5, alibi and the relative key / value terms (learned, sinusoidal),
// against PyTorch autograd through tools/reference.py's RefAttention (tools/golden_grads.py),
// central finite differences in double, and properties.
#include <relpos/attention_grad.hpp>
#include <relpos/encodings/alibi.hpp>
#include <relpos/encodings/deberta.hpp>
#include <relpos/encodings/kerple.hpp>
#include <relpos/encodings/learned.hpp>
#include <relpos/encodings/rotary.hpp>
#include <relpos/encodings/sinusoidal.hpp>
#include <relpos/encodings/t5.hpp>
#include <relpos/encodings/xl.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <variant>
#include <vector>

#include <gtest/gtest.h>

#include "support/expect_error.hpp"
#include "support/finite_differences.hpp"
#include "support/golden.hpp"
#include "support/random.hpp"

namespace {

// Which position types have an attention backward: a parameter whose gradient is not written
// yet (DeBERTa's) is refused at compile time, never left with a silent zero gradient; alibi
// has no parameter, sinusoidal's rows are fixed. KERPLE's and Transformer-XL's are tested in
// tests/xl_kerple_grad_test.cpp.
static_assert(relpos::detail::attention_backward_supported<relpos::NoPosition<double>>);
static_assert(relpos::detail::attention_backward_supported<relpos::AlibiBias<double>>);
static_assert(relpos::detail::attention_backward_supported<relpos::T5Bias<double>>);
static_assert(relpos::detail::attention_backward_supported<relpos::Rotary<double>>);
static_assert(relpos::detail::attention_backward_supported<relpos::LearnedRelative<double>>);
static_assert(relpos::detail::attention_backward_supported<relpos::SinusoidalRelative<double>>);
static_assert(relpos::detail::attention_backward_supported<relpos::KerpleBias<double>>);
static_assert(relpos::detail::attention_backward_supported<relpos::XlRelative<double>>);
static_assert(relpos::detail::attention_backward_supported<relpos::DebertaRelative<double>>);

using relpos::Index;
using relpos::Matrix;
using relpos::Tensor3;

template <class T>
class AttentionGradTyped : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(AttentionGradTyped, Scalars);

// As tests/grad_test.cpp: double to a few ulps of gradients of size <= ~10; float to 1e-5 of
// the tensor's largest entry and 1e-5 relative (inputs rounded once to float, then sums of a
// few dozen products; the softmax adds exp() and one division per row).
template <class T, class A, class B>
::testing::AssertionResult attention_close(const A& actual, const B& expected) {
  if constexpr (std::is_same_v<T, double>) {
    return relpos::test::all_close(actual, expected, 1e-12, 1e-12);
  } else {
    return relpos::test::all_close(actual, expected, 1e-5 * expected.cwiseAbs().maxCoeff(), 1e-5);
  }
}

// One golden file of tools/golden_grads.py: forward_saving and backward item by item, then the
// accumulated weight gradients against autograd's.
template <class T, class Enc>
void check_golden(const std::string& file, bool causal, Index d, const Enc& encoding) {
  const auto f = relpos::test::golden_file("grads/" + file + ".safetensors");
  const Tensor3<T> x = f.tensor3<T>("input"), dout = f.tensor3<T>("dout");
  const Index batch = x.dimension(0), len = x.dimension(1);
  ASSERT_EQ(x.dimension(2), d);
  const std::vector<std::uint8_t> pad_bytes = f.values<std::uint8_t>("padding_mask");
  // explicit position ids [batch, len] when the file has them (RELATIVE_CASES), else plain
  const std::vector<std::int64_t> ids = f.contains("position_ids")
                                            ? f.values<std::int64_t>("position_ids", {batch, len})
                                            : std::vector<std::int64_t>();
  const auto attn = relpos::MultiHeadAttention<T, Enc>::load(
      f, "self_attn.", relpos::AttentionConfig{.d_model = d, .n_heads = 2, .causal = causal},
      encoding);
  const Tensor3<double> want_out = f.tensor3<double>("output");
  const Tensor3<double> want_dx = f.tensor3<double>("grad.input");
  relpos::SequenceWorkspace<T> ws;
  relpos::AttentionSaved<T> saved;
  relpos::AttentionGrad<T> grad;
  for (Index b = 0; b < batch; ++b) {
    const auto key_padding = std::make_unique<bool[]>(static_cast<std::size_t>(len));
    for (Index j = 0; j < len; ++j) {
      key_padding[static_cast<std::size_t>(j)] = pad_bytes[static_cast<std::size_t>(b * len + j)];
    }
    const relpos::SequenceInputs in{
        .positions = ids.empty() ? relpos::Positions{.len = len, .call_length = len}
                                 : relpos::Positions{.len = len, .ids = ids.data() + b * len},
        .key_padding = key_padding.get()};
    Matrix<T> out(len, d), dx(len, d);
    relpos::forward_saving(attn, relpos::item(x, b), out, in, ws, saved);
    EXPECT_TRUE(attention_close<T>(out, relpos::item(want_out, b))) << "item " << b;
    relpos::backward(attn, saved, in, relpos::item(dout, b), dx, grad);
    EXPECT_TRUE(attention_close<T>(dx, relpos::item(want_dx, b))) << "item " << b;
  }
  grad.for_each("self_attn.", [&](const std::string& name, const auto& g) {
    SCOPED_TRACE(name);
    using G = std::decay_t<decltype(g)>;
    if constexpr (G::ColsAtCompileTime == 1) {
      EXPECT_TRUE(attention_close<T>(g, f.vector<double>("grad." + name)));
    } else {
      EXPECT_TRUE(attention_close<T>(g, f.matrix<double>("grad." + name)));
    }
  });
  if constexpr (std::is_same_v<Enc, relpos::LearnedRelative<T>>) {
    // one gradient per table in use, compared above under its spec name
    EXPECT_EQ(grad.relative_key.size() > 0, encoding.uses_keys());
    EXPECT_EQ(grad.relative_value.size() > 0, encoding.uses_values());
  } else {
    EXPECT_EQ(grad.relative_key.size() + grad.relative_value.size(), 0);
  }
  if constexpr (std::is_same_v<Enc, relpos::T5Bias<T>>) {
    EXPECT_TRUE(attention_close<T>(grad.relative_attention_bias,
                                   f.matrix<double>("grad.position.relative_attention_bias")));
  } else {
    EXPECT_EQ(grad.relative_attention_bias.size(), 0);
  }
}

TYPED_TEST(AttentionGradTyped, NoneMatchesTorchWithPaddingCausalAndEmptyRows) {
  using T = TypeParam;
  for (const bool causal : {false, true}) {
    SCOPED_TRACE(causal ? "causal" : "bidirectional");
    check_golden<T>(causal ? "attention_none_causal" : "attention_none", causal, 8,
                    relpos::NoPosition<T>());
  }
}

// tools/golden_grads.py's ROTARY_CASES: d_head 6 with rotary_dim 4 (two components pass
// through); the half pairing, then the interleaved one with base 100 and yarn (an attention
// factor on cos and sin) under the causal mask.
TYPED_TEST(AttentionGradTyped, RotaryMatchesTorchWithPartialPairingsAndYarn) {
  using T = TypeParam;
  {
    SCOPED_TRACE("rotary");
    relpos::RotaryConfig c;
    c.rotary_dim = 4;
    check_golden<T>("attention_rotary", false, 12, relpos::Rotary<T>(6, c));
  }
  {
    SCOPED_TRACE("rotary yarn interleaved causal");
    relpos::RotaryConfig c;
    c.rotary_dim = 4;
    c.interleaved = true;
    c.base = 100;
    relpos::YarnScaling yarn;
    yarn.factor = 4;
    yarn.original_max_position_embeddings = 4;
    c.scaling = yarn;
    check_golden<T>("attention_rotary_yarn_interleaved_causal", true, 12, relpos::Rotary<T>(6, c));
  }
}

// tools/golden_grads.py's BIAS_CASES: t5 with 8 buckets and max_distance 5 at length 7 (shared
// and clamped buckets), bidirectional and causal; alibi with max_bias 4.
TYPED_TEST(AttentionGradTyped, ScoreBiasesMatchTorch) {
  using T = TypeParam;
  for (const bool causal : {false, true}) {
    SCOPED_TRACE(causal ? "t5 causal" : "t5");
    const auto f = relpos::test::golden_file(std::string("grads/attention_t5") +
                                             (causal ? "_causal" : "") + ".safetensors");
    relpos::T5Config c{.num_buckets = 8, .max_distance = 5, .causal = causal};
    check_golden<T>(
        causal ? "attention_t5_causal" : "attention_t5", causal, 8,
        relpos::T5Bias<T>(2, c,
                          relpos::share(f.matrix<T>("position.relative_attention_bias", 8, 2))));
  }
  SCOPED_TRACE("alibi");
  check_golden<T>("attention_alibi", false, 8,
                  relpos::AlibiBias<T>(2, relpos::AlibiConfig{.max_bias = 4}));
}

// tools/golden_grads.py's RELATIVE_CASES (d_model 8, 2 heads of 4): learned keys and values,
// keys only, values only, at plain positions and explicit ids, with and without the causal
// mask, each table's gradient per clamped distance (check_golden compares every tensor
// for_each names, relative_key / relative_value among them); then sinusoidal keys and values.
TYPED_TEST(AttentionGradTyped, RelativeKeysAndValuesMatchTorch) {
  using T = TypeParam;
  struct LearnedCase {
    const char* file;
    bool causal;
    relpos::LearnedConfig config;
  };
  for (const LearnedCase& c :
       {LearnedCase{"attention_learned", false, {.max_distance = 2}},
        LearnedCase{
            "attention_learned_keys_ids_causal", true, {.max_distance = 2, .values = false}},
        LearnedCase{"attention_learned_values_ids", false, {.max_distance = 3, .keys = false}},
        LearnedCase{"attention_learned_ids_causal", true, {.max_distance = 2}}}) {
    SCOPED_TRACE(c.file);
    const auto f = relpos::test::golden_file(std::string("grads/") + c.file + ".safetensors");
    const Index rows = 2 * *c.config.max_distance + 1;
    relpos::LearnedConfig config = c.config;
    config.tensor_prefix = "self_attn.";
    check_golden<T>(
        c.file, c.causal, 8,
        relpos::LearnedRelative<T>(
            4, config,
            c.config.keys ? f.template matrix<T>("self_attn.relative_key", rows, 4) : Matrix<T>(),
            c.config.values ? f.template matrix<T>("self_attn.relative_value", rows, 4)
                            : Matrix<T>()));
  }
  {
    SCOPED_TRACE("sinusoidal clamped");
    check_golden<T>("attention_sinusoidal_clamped", false, 8,
                    relpos::SinusoidalRelative<T>(
                        4, {.base = 100, .max_distance = 3, .keys = true, .values = true}));
  }
  SCOPED_TRACE("sinusoidal ids causal");
  check_golden<T>(
      "attention_sinusoidal_ids_causal", true, 8,
      relpos::SinusoidalRelative<T>(
          4, {.base = 100, .max_distance = std::nullopt, .keys = true, .values = true}));
}

// L = Σ dout ⊙ attn(x) by the library's own forward, differentiated numerically; h = 1e-6
// (truncation ~1e-12, rounding ~1e-9), tolerance 1e-7 absolute + 1e-6 relative.
using relpos::test::matches_finite_differences;

// Every weight and x against finite differences of the library's own forward, with encoding
// enc, keys 0 and 3 padded (with the causal mask, query 0 sees no key: α_0 = 0), at positions
// `ids` (null: plain) with the call length `call_length` (0: from the positions).
template <class Enc>
void check_finite_differences(const Enc& enc, Index d, bool causal, const std::int64_t* ids,
                              std::int64_t call_length, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  const Index len = 5;
  relpos::MultiHeadAttention<double, Enc> attn({.d_model = d, .n_heads = 2, .causal = causal}, enc);
  relpos::test::fill_normal(attn.in_proj_weight, gen, 0.7);
  relpos::test::fill_normal(attn.in_proj_bias, gen, 0.7);
  relpos::test::fill_normal(attn.out_proj_weight, gen, 0.7);
  relpos::test::fill_normal(attn.out_proj_bias, gen, 0.7);
  Matrix<double> x(len, d), dout(len, d), out(len, d), dx(len, d);
  relpos::test::fill_normal(x, gen, 1.0);
  relpos::test::fill_normal(dout, gen, 1.0);
  const bool key_padding[len] = {true, false, false, true, false};
  const relpos::SequenceInputs in{.positions = {.len = len, .ids = ids, .call_length = call_length},
                                  .key_padding = key_padding};
  relpos::SequenceWorkspace<double> ws;
  const auto loss = [&] {
    attn.forward(x, out, in, ws);
    return (out.array() * dout.array()).sum();
  };
  relpos::AttentionSaved<double> saved;
  relpos::AttentionGrad<double> grad;
  relpos::forward_saving(attn, x, out, in, ws, saved);
  relpos::backward(attn, saved, in, dout, dx, grad);
  EXPECT_TRUE(dx.allFinite() && grad.in_proj_weight.allFinite());
  EXPECT_TRUE(matches_finite_differences(x, dx, loss, "x"));
  EXPECT_TRUE(
      matches_finite_differences(attn.in_proj_weight, grad.in_proj_weight, loss, "in_proj_weight"));
  EXPECT_TRUE(
      matches_finite_differences(attn.in_proj_bias, grad.in_proj_bias, loss, "in_proj_bias"));
  EXPECT_TRUE(matches_finite_differences(attn.out_proj_weight, grad.out_proj_weight, loss,
                                         "out_proj.weight"));
  EXPECT_TRUE(
      matches_finite_differences(attn.out_proj_bias, grad.out_proj_bias, loss, "out_proj.bias"));
}

TEST(AttentionGradFiniteDifferences, NonePaddedCausal) {
  for (const bool causal : {false, true}) {
    SCOPED_TRACE(causal ? "causal" : "bidirectional");
    check_finite_differences(relpos::NoPosition<double>(), 4, causal, nullptr, 0, 1510);
  }
}

// Rotary with every scaling of spec §4, both pairings, partial rotation (d_head 6, r 4), at
// explicit positions (not sorted, one past L0 = 4) with a call length of 12: the dynamic and
// longrope tables depend on it.
TEST(AttentionGradFiniteDifferences, RotaryEveryScalingBothPairings) {
  const std::int64_t ids[5] = {3, 0, 9, 2, 11};
  relpos::YarnScaling yarn;  // an attention factor of 1.139 on cos and sin
  yarn.factor = 4;
  yarn.original_max_position_embeddings = 4;
  relpos::LongropeScaling longrope;  // the long factors: the call (12) is longer than L0
  longrope.short_factor = {1.0, 1.5};
  longrope.long_factor = {2.0, 3.0};
  longrope.original_max_position_embeddings = 4;
  longrope.max_position_embeddings = 32;
  const std::vector<std::optional<relpos::RotaryScaling>> scalings = {
      std::nullopt,
      relpos::LinearScaling{.factor = 2},
      relpos::NtkScaling{.factor = 3},
      relpos::DynamicScaling{.factor = 2, .original_max_position_embeddings = 4},
      yarn,
      relpos::Llama3Scaling{.factor = 8, .original_max_position_embeddings = 16},
      longrope};
  std::uint64_t seed = 1512;
  for (const auto& scaling : scalings) {
    for (const bool interleaved : {false, true}) {
      relpos::RotaryConfig c;
      c.rotary_dim = 4;
      c.base = 100;
      c.interleaved = interleaved;
      c.scaling = scaling;
      SCOPED_TRACE(std::string(scaling ? std::visit([](const auto& s) { return s.type; }, *scaling)
                                       : std::string_view("unscaled")) +
                   (interleaved ? " interleaved" : " half"));
      check_finite_differences(relpos::Rotary<double>(6, c), 12, interleaved, ids, 12, seed++);
    }
  }
}

// The score biases: every weight and x (check_finite_differences), then t5's shared table,
// differentiated through a rebuilt encoding, at explicit positions whose distances reach past
// max_distance 5 (clamped, so several distances share the last buckets).
TEST(AttentionGradFiniteDifferences, T5AndAlibi) {
  const std::int64_t ids[5] = {0, 7, 2, 3, 9};
  for (const bool causal : {false, true}) {
    SCOPED_TRACE(causal ? "causal" : "bidirectional");
    const relpos::T5Config c{.num_buckets = 8, .max_distance = 5, .causal = causal};
    std::mt19937_64 gen(1515);
    Matrix<double> table(8, 2);
    relpos::test::fill_normal(table, gen, 0.5);
    check_finite_differences(relpos::T5Bias<double>(2, c, relpos::share(table)), 4, causal, ids, 0,
                             1516);
    // the table
    const Index len = 5, d = 4;
    relpos::MultiHeadAttention<double, relpos::T5Bias<double>> attn(
        {.d_model = d, .n_heads = 2, .causal = causal},
        relpos::T5Bias<double>(2, c, relpos::share(table)));
    relpos::test::fill_normal(attn.in_proj_weight, gen, 0.7);
    relpos::test::fill_normal(attn.in_proj_bias, gen, 0.7);
    relpos::test::fill_normal(attn.out_proj_weight, gen, 0.7);
    Matrix<double> x(len, d), dout(len, d), out(len, d), dx(len, d);
    relpos::test::fill_normal(x, gen, 1.0);
    relpos::test::fill_normal(dout, gen, 1.0);
    const relpos::SequenceInputs in{.positions = {.len = len, .ids = ids}};
    relpos::SequenceWorkspace<double> ws;
    relpos::AttentionSaved<double> saved;
    relpos::AttentionGrad<double> grad;
    relpos::forward_saving(attn, x, out, in, ws, saved);
    relpos::backward(attn, saved, in, dout, dx, grad);
    const auto loss = [&] {
      attn.encoding = relpos::T5Bias<double>(2, c, relpos::share(table));
      attn.forward(x, out, in, ws);
      return (out.array() * dout.array()).sum();
    };
    EXPECT_TRUE(matches_finite_differences(table, grad.relative_attention_bias, loss,
                                           "relative_attention_bias"));
    EXPECT_GT(grad.relative_attention_bias.cwiseAbs().maxCoeff(), 1e-3);
  }
  check_finite_differences(relpos::AlibiBias<double>(2), 4, false, ids, 0, 1517);
  check_finite_differences(relpos::AlibiBias<double>(2), 4, true, nullptr, 0, 1518);
}

// The relative key and value terms: every weight and x (check_finite_differences, len 5, keys 0
// and 3 padded), then, for learned, the layer's tables through a rebuilt encoding, over `len`
// tokens at positions `ids` (null: plain). len > kAttentionBackwardRows crosses query blocks.
template <class Enc, class Make>
void check_relative_tables(const Make& make, Index d, bool causal, Index len,
                           const std::int64_t* ids, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  const Index dh = d / 2;
  constexpr bool learned = std::is_same_v<Enc, relpos::LearnedRelative<double>>;
  const Index rows = learned ? 2 * make.max_distance + 1 : 0;
  Matrix<double> key(make.keys ? rows : 0, dh), value(make.values ? rows : 0, dh);
  relpos::test::fill_normal(key, gen, 0.6);
  relpos::test::fill_normal(value, gen, 0.6);
  relpos::MultiHeadAttention<double, Enc> attn({.d_model = d, .n_heads = 2, .causal = causal},
                                               make(key, value));
  relpos::test::fill_normal(attn.in_proj_weight, gen, 0.6);
  relpos::test::fill_normal(attn.in_proj_bias, gen, 0.6);
  relpos::test::fill_normal(attn.out_proj_weight, gen, 0.6);
  relpos::test::fill_normal(attn.out_proj_bias, gen, 0.6);
  Matrix<double> x(len, d), dout(len, d), out(len, d), dx(len, d);
  relpos::test::fill_normal(x, gen, 1.0);
  relpos::test::fill_normal(dout, gen, 1.0);
  std::vector<char> pad(static_cast<std::size_t>(len), 0);
  pad[0] = pad[static_cast<std::size_t>(len / 2)] = 1;
  const auto key_padding = std::make_unique<bool[]>(static_cast<std::size_t>(len));
  for (Index j = 0; j < len; ++j)
    key_padding[static_cast<std::size_t>(j)] = pad[static_cast<std::size_t>(j)];
  const relpos::SequenceInputs in{.positions = {.len = len, .ids = ids},
                                  .key_padding = key_padding.get()};
  relpos::SequenceWorkspace<double> ws;
  relpos::AttentionSaved<double> saved;
  relpos::AttentionGrad<double> grad;
  relpos::forward_saving(attn, x, out, in, ws, saved);
  relpos::backward(attn, saved, in, dout, dx, grad);
  ASSERT_TRUE(dx.allFinite());
  const auto loss = [&] {
    attn.encoding = make(key, value);
    attn.forward(x, out, in, ws);
    return (out.array() * dout.array()).sum();
  };
  EXPECT_TRUE(matches_finite_differences(x, dx, loss, "x"));
  EXPECT_TRUE(
      matches_finite_differences(attn.in_proj_weight, grad.in_proj_weight, loss, "in_proj_weight"));
  if constexpr (learned) {
    if (make.keys) {
      EXPECT_TRUE(matches_finite_differences(key, grad.relative_key, loss, "relative_key"));
      EXPECT_GT(grad.relative_key.cwiseAbs().maxCoeff(), 1e-3);
    } else {
      EXPECT_EQ(grad.relative_key.size(), 0);
    }
    if (make.values) {
      EXPECT_TRUE(matches_finite_differences(value, grad.relative_value, loss, "relative_value"));
      EXPECT_GT(grad.relative_value.cwiseAbs().maxCoeff(), 1e-3);
    } else {
      EXPECT_EQ(grad.relative_value.size(), 0);
    }
  } else {
    EXPECT_EQ(grad.relative_key.size() + grad.relative_value.size(), 0);  // fixed rows
  }
}

// Builds a LearnedRelative from the two tables (either may be off).
struct MakeLearned {
  Index max_distance = 2;
  bool keys = true, values = true;
  Index d_head = 2;
  relpos::LearnedRelative<double> operator()(const Matrix<double>& key,
                                             const Matrix<double>& value) const {
    return relpos::LearnedRelative<double>(
        d_head, {.max_distance = max_distance, .keys = keys, .values = values}, key, value);
  }
};
// Builds a SinusoidalRelative (no tables: key and value are ignored).
struct MakeSinusoidal {
  relpos::SinusoidalConfig config;
  Index d_head = 2;
  bool keys = true, values = true;
  Index max_distance = 0;
  relpos::SinusoidalRelative<double> operator()(const Matrix<double>&,
                                                const Matrix<double>&) const {
    return relpos::SinusoidalRelative<double>(d_head, config);
  }
};

// learned with K = 2 (most pairs clamp) and keys + values, keys only, values only; plain
// positions (the banded skew), explicit ids not sorted and with gaps (the indexed one), a
// K of 40 at ids 100 apart (the span exceeds 8·len: pair by pair), the causal mask, and
// len 150 (a full and a partial block of query rows, K = 3).
TEST(AttentionGradFiniteDifferences, LearnedKeysAndValues) {
  const std::int64_t ids[5] = {3, 0, 9, 2, 4};
  const std::int64_t wide[5] = {0, 100, 200, 300, 250};
  std::uint64_t seed = 1530;
  for (const bool causal : {false, true}) {
    for (const auto& [keys, values] : {std::pair{true, true}, {true, false}, {false, true}}) {
      SCOPED_TRACE(std::string(causal ? "causal" : "bidirectional") + (keys ? " keys" : "") +
                   (values ? " values" : ""));
      const MakeLearned make{.max_distance = 2, .keys = keys, .values = values, .d_head = 2};
      check_relative_tables<relpos::LearnedRelative<double>>(make, 4, causal, 5, nullptr, seed++);
      check_relative_tables<relpos::LearnedRelative<double>>(make, 4, causal, 5, ids, seed++);
    }
    SCOPED_TRACE("pair by pair");
    check_relative_tables<relpos::LearnedRelative<double>>(
        MakeLearned{.max_distance = 400, .d_head = 2}, 4, causal, 5, wide, seed++);
  }
  SCOPED_TRACE("three blocks");
  check_relative_tables<relpos::LearnedRelative<double>>(
      MakeLearned{.max_distance = 3, .d_head = 2}, 4, true, 150, nullptr, seed++);
}

// sinusoidal (fixed rows: the gradient reaches q and α only): keys + values clamped to K = 2 and
// unclamped, plain and explicit ids, ids spanning far more than 8·len (pair by pair), keys only.
TEST(AttentionGradFiniteDifferences, SinusoidalKeysAndValues) {
  const std::int64_t ids[5] = {3, 0, 9, 2, 4};
  const std::int64_t wide[5] = {0, 1000, 2, 3000, 7};
  std::uint64_t seed = 1540;
  for (const bool causal : {false, true}) {
    for (const std::optional<Index> k : {std::optional<Index>(2), std::optional<Index>()}) {
      SCOPED_TRACE(std::string(causal ? "causal" : "bidirectional") + (k ? " clamped" : ""));
      const MakeSinusoidal make{.config = {.max_distance = k, .keys = true, .values = true}};
      check_relative_tables<relpos::SinusoidalRelative<double>>(make, 4, causal, 5, nullptr,
                                                                seed++);
      check_relative_tables<relpos::SinusoidalRelative<double>>(make, 4, causal, 5, ids, seed++);
      check_relative_tables<relpos::SinusoidalRelative<double>>(make, 4, causal, 5, wide, seed++);
    }
  }
  SCOPED_TRACE("keys only, three blocks");
  check_relative_tables<relpos::SinusoidalRelative<double>>(
      MakeSinusoidal{.config = {.max_distance = 5}}, 4, false, 150, nullptr, seed++);
}

// A table gradient of the wrong shape (not the layer's (2K + 1, d_head)) is an Error naming it,
// not a write past its end.
TEST(AttentionGrad, LearnedTableGradientOfTheWrongShapeIsAnError) {
  const Index len = 4, d = 4;
  relpos::LearnedConfig c{.max_distance = 2, .tensor_prefix = "layers.1.self_attn."};
  relpos::MultiHeadAttention<double, relpos::LearnedRelative<double>> attn(
      {.d_model = d, .n_heads = 2}, relpos::LearnedRelative<double>::random(2, c, 1550));
  Matrix<double> x = Matrix<double>::Ones(len, d), out(len, d), dx(len, d);
  const relpos::SequenceInputs in{.positions = {.len = len}};
  relpos::SequenceWorkspace<double> ws;
  relpos::AttentionSaved<double> saved;
  relpos::forward_saving(attn, x, out, in, ws, saved);
  relpos::AttentionGrad<double> grad;
  grad.relative_value = Matrix<double>::Zero(4, 2);
  relpos::test::expect_error([&] { relpos::backward(attn, saved, in, out, dx, grad); },
                             "grad.layers.1.self_attn.relative_value: expected [5, 2], got [4, 2]");
}

// Spec §6's pitfall: softmax ignores a constant added to a whole row of scores, so the key rows
// of in_proj_bias get no gradient (exactly zero up to rounding). And forward_saving is the
// forward, bit for bit, over more rows than one backward block.
TEST(AttentionGrad, KeyBiasGetsNoGradientAndForwardSavingIsTheForward) {
  std::mt19937_64 gen(1511);
  const Index len = 150, d = 8;  // > kAttentionBackwardRows: a full block and a partial one
  relpos::MultiHeadAttention<double> attn({.d_model = d, .n_heads = 2, .causal = true});
  relpos::test::fill_normal(attn.in_proj_weight, gen, 0.5);
  relpos::test::fill_normal(attn.in_proj_bias, gen, 0.5);
  relpos::test::fill_normal(attn.out_proj_weight, gen, 0.5);
  relpos::test::fill_normal(attn.out_proj_bias, gen, 0.5);
  Matrix<double> x(len, d), dout(len, d), a(len, d), b(len, d), dx(len, d);
  relpos::test::fill_normal(x, gen, 1.0);
  relpos::test::fill_normal(dout, gen, 1.0);
  const relpos::SequenceInputs in{.positions = {.len = len}};
  relpos::SequenceWorkspace<double> ws;
  relpos::AttentionSaved<double> saved;
  relpos::AttentionGrad<double> grad;
  attn.forward(x, a, in, ws);
  relpos::forward_saving(attn, x, b, in, ws, saved);
  EXPECT_EQ(a, b);
  relpos::backward(attn, saved, in, dout, dx, grad);
  EXPECT_LT(grad.in_proj_bias.segment(d, d).cwiseAbs().maxCoeff(), 1e-12);
  EXPECT_GT(grad.in_proj_bias.head(d).cwiseAbs().maxCoeff(), 1e-3);  // q's rows do get one
}

}  // namespace
