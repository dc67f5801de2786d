// Tests for the backward of Transformer-XL's terms (encodings/xl.hpp, detail/head_key_grad.hpp:
// r_net.weight per layer, u and v shared by all layers) and of KERPLE's bias (encodings/kerple.hpp:
// r1 and r2 per head, shared by all layers, log and power forms) inside attention_grad.hpp and
// encoder_grad.hpp, against PyTorch autograd through tools/reference.py (tools/golden_grads.py's
// XL_KERPLE_CASES and XL_KERPLE_ENCODER_CASES) and central finite differences in double.
#include <relpos/attention_grad.hpp>
#include <relpos/encoder_grad.hpp>
#include <relpos/encodings/kerple.hpp>
#include <relpos/encodings/xl.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/expect_error.hpp"
#include "support/finite_differences.hpp"
#include "support/golden.hpp"
#include "support/random.hpp"

namespace xl_kerple_grad_test {

using relpos::Index;
using relpos::Matrix;
using relpos::Tensor3;
using relpos::Vector;
using relpos::test::matches_finite_differences;

static_assert(relpos::detail::attention_backward_supported<relpos::XlRelative<float>>);
static_assert(relpos::detail::attention_backward_supported<relpos::KerpleBias<float>>);

template <class T>
class XlKerpleGradTyped : public ::testing::Test {};
using XlKerpleScalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(XlKerpleGradTyped, XlKerpleScalars);

// Double: 1e-9 absolute and relative (the bound; the sums are a few dozen products of
// numbers <= ~10, so the actual error is a few ulps). Float: 1e-4 of the tensor's largest entry
// and 1e-4 relative (inputs rounded once to float; two layers and LayerNorms compound it).
template <class T, class A, class B>
::testing::AssertionResult close(const A& actual, const B& expected) {
  if constexpr (std::is_same_v<T, double>) {
    return relpos::test::all_close(actual, expected, 1e-9, 1e-9);
  } else {
    return relpos::test::all_close(actual, expected, 1e-4 * expected.cwiseAbs().maxCoeff(), 1e-4);
  }
}

template <class T, class G>
::testing::AssertionResult close_to_file(const relpos::io::SafetensorsFile& f,
                                         const std::string& name, const G& g) {
  if constexpr (G::ColsAtCompileTime == 1) {
    return close<T>(g, f.vector<double>(name));
  } else {
    return close<T>(g, f.matrix<double>(name));
  }
}

std::unique_ptr<bool[]> padding_of(const std::vector<std::uint8_t>& bytes, Index b, Index len) {
  auto key_padding = std::make_unique<bool[]>(static_cast<std::size_t>(len));
  for (Index j = 0; j < len; ++j) {
    key_padding[static_cast<std::size_t>(j)] = bytes[static_cast<std::size_t>(b * len + j)];
  }
  return key_padding;
}

// One attention file of XL_KERPLE_CASES (d_model 8, 2 heads; 3 items padded by 0, 3 and all 7):
// forward_saving and backward item by item, then every gradient against autograd's: the
// layer's own by name, the shared ones (position.*) from the fields EncoderGrad sums.
template <class T, class Enc>
void check_attention_golden(const std::string& file, bool causal, const Enc& encoding) {
  SCOPED_TRACE(file);
  const auto f = relpos::test::golden_file("grads/" + file + ".safetensors");
  const Tensor3<T> x = f.tensor3<T>("input"), dout = f.tensor3<T>("dout");
  const Index batch = x.dimension(0), len = x.dimension(1), d = 8;
  const std::vector<std::uint8_t> pad_bytes = f.values<std::uint8_t>("padding_mask");
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
    const auto key_padding = padding_of(pad_bytes, b, len);
    const relpos::SequenceInputs in{
        .positions = ids.empty() ? relpos::Positions{.len = len, .call_length = len}
                                 : relpos::Positions{.len = len, .ids = ids.data() + b * len},
        .key_padding = key_padding.get()};
    Matrix<T> out(len, d), dx(len, d);
    relpos::forward_saving(attn, relpos::item(x, b), out, in, ws, saved);
    EXPECT_TRUE(close<T>(out, relpos::item(want_out, b))) << "item " << b;
    relpos::backward(attn, saved, in, relpos::item(dout, b), dx, grad);
    EXPECT_TRUE(close<T>(dx, relpos::item(want_dx, b))) << "item " << b;
  }
  std::size_t checked = 0;
  grad.for_each("self_attn.", [&](const std::string& name, const auto& g) {
    SCOPED_TRACE(name);
    ++checked;
    EXPECT_TRUE(close_to_file<T>(f, "grad." + name, g));
  });
  if constexpr (std::is_same_v<Enc, relpos::XlRelative<T>>) {
    EXPECT_TRUE(close_to_file<T>(f, "grad.position.r_w_bias", grad.r_w_bias)) << "r_w_bias";
    EXPECT_TRUE(close_to_file<T>(f, "grad.position.r_r_bias", grad.r_r_bias)) << "r_r_bias";
    EXPECT_EQ(grad.kerple_r1.size() + grad.kerple_r2.size(), 0);
    checked += 2;
  } else {
    EXPECT_TRUE(close_to_file<T>(f, "grad.position.kerple_r1", grad.kerple_r1)) << "kerple_r1";
    EXPECT_TRUE(close_to_file<T>(f, "grad.position.kerple_r2", grad.kerple_r2)) << "kerple_r2";
    EXPECT_EQ(grad.r_net_weight.size() + grad.r_w_bias.size() + grad.r_r_bias.size(), 0);
    checked += 2;
  }
  // every parameter gradient of the file was compared (all but grad.input)
  std::size_t want = 0;
  for (const std::string& name : f.names()) want += name.rfind("grad.", 0) == 0;
  EXPECT_EQ(checked + 1, want);
}

template <class T>
relpos::XlRelative<T> xl_from(const relpos::io::SafetensorsFile& f, const std::string& prefix,
                              std::optional<Index> max_distance, double base,
                              const relpos::SharedMatrix<T>& u, const relpos::SharedMatrix<T>& v) {
  return relpos::XlRelative<T>(
      8, 2, {.base = base, .max_distance = max_distance, .tensor_prefix = prefix},
      f.matrix<T>(prefix + "r_net.weight", 8, 8), u, v);
}

template <class T>
relpos::KerpleBias<T> kerple_from(const relpos::io::SafetensorsFile& f, relpos::KerpleForm form) {
  return relpos::KerpleBias<T>(2, {.form = form},
                               relpos::share(f.vector<T>("position.kerple_r1", 2)),
                               relpos::share(f.vector<T>("position.kerple_r2", 2)));
}

// Transformer-XL unclamped at plain positions (the banded skew), then clamped to K = 3 at
// explicit ids (unsorted, gaps: the indexed skew) under the causal mask.
TYPED_TEST(XlKerpleGradTyped, XlAttentionMatchesTorch) {
  using T = TypeParam;
  for (const bool clamped : {false, true}) {
    const std::string file = clamped ? "attention_xl_clamped_ids_causal" : "attention_xl";
    const auto f = relpos::test::golden_file("grads/" + file + ".safetensors");
    const auto u = relpos::share(f.matrix<T>("position.r_w_bias", 2, 4));
    const auto v = relpos::share(f.matrix<T>("position.r_r_bias", 2, 4));
    check_attention_golden<T>(
        file, clamped,
        xl_from<T>(f, "self_attn.", clamped ? std::optional<Index>(3) : std::nullopt, 100, u, v));
  }
}

// KERPLE log at plain positions, power at explicit ids under the causal mask (distance 0 on the
// diagonal: ∂b/∂r2 = −r1·0^r2·ln 0 is 0 there, the limit, as autograd has it).
TYPED_TEST(XlKerpleGradTyped, KerpleAttentionMatchesTorch) {
  using T = TypeParam;
  {
    const auto f = relpos::test::golden_file("grads/attention_kerple_log.safetensors");
    check_attention_golden<T>("attention_kerple_log", false,
                              kerple_from<T>(f, relpos::KerpleForm::log));
  }
  const auto f = relpos::test::golden_file("grads/attention_kerple_power_ids_causal.safetensors");
  check_attention_golden<T>("attention_kerple_power_ids_causal", true,
                            kerple_from<T>(f, relpos::KerpleForm::power));
}

// Two layers (d_model 8, 2 heads, d_ff 12; the second item padded by 2): every gradient of the
// file by name through EncoderGrad::for_each, so the shared u, v, r1, r2 are the layers' sums.
template <class T, class Enc, class Make>
void check_encoder_golden(const std::string& file, const relpos::EncoderConfig& cfg,
                          const Make& make) {
  SCOPED_TRACE(file);
  const auto f = relpos::test::golden_file("grads/" + file + ".safetensors");
  const Tensor3<T> x = f.tensor3<T>("input"), dout = f.tensor3<T>("dout");
  const Index batch = x.dimension(0), len = x.dimension(1);
  const std::vector<std::uint8_t> pad_bytes = f.values<std::uint8_t>("padding_mask");
  const auto encoder = relpos::Encoder<T, Enc>::load(f, cfg, make);
  const Tensor3<double> want_out = f.tensor3<double>("output");
  const Tensor3<double> want_dx = f.tensor3<double>("grad.input");
  relpos::SequenceWorkspace<T> ws;
  relpos::EncoderSaved<T> saved;
  relpos::EncoderGrad<T> grad;
  for (Index b = 0; b < batch; ++b) {
    const auto key_padding = padding_of(pad_bytes, b, len);
    const relpos::SequenceInputs in{.positions = {.len = len, .call_length = len},
                                    .key_padding = key_padding.get()};
    Matrix<T> h = relpos::item(x, b);
    relpos::forward_saving(encoder, h, in, ws, saved);
    EXPECT_TRUE(close<T>(h, relpos::item(want_out, b))) << "item " << b;
    Matrix<T> g = relpos::item(dout, b);
    relpos::backward(encoder, saved, in, g, grad);
    EXPECT_TRUE(close<T>(g, relpos::item(want_dx, b))) << "item " << b;
  }
  std::size_t checked = 0;
  grad.for_each([&](const std::string& name, const auto& g) {
    SCOPED_TRACE(name);
    ++checked;
    EXPECT_TRUE(close_to_file<T>(f, "grad." + name, g));
  });
  std::size_t want = 0;
  for (const std::string& name : f.names()) want += name.rfind("grad.", 0) == 0;
  EXPECT_EQ(checked + 1, want);
}

relpos::EncoderConfig xl_kerple_encoder_config(bool norm_first, bool final_norm, bool causal,
                                               relpos::Activation activation) {
  return {.d_model = 8,
          .n_heads = 2,
          .n_layers = 2,
          .d_ff = 12,
          .activation = activation,
          .norm_first = norm_first,
          .final_norm = final_norm,
          .causal = causal};
}

TYPED_TEST(XlKerpleGradTyped, XlEncoderSumsUAndVOverLayers) {
  using T = TypeParam;
  const auto f = relpos::test::golden_file("grads/encoder_xl_pre_causal.safetensors");
  const auto u = relpos::share(f.matrix<T>("position.r_w_bias", 2, 4));
  const auto v = relpos::share(f.matrix<T>("position.r_r_bias", 2, 4));
  check_encoder_golden<T, relpos::XlRelative<T>>(
      "encoder_xl_pre_causal",
      xl_kerple_encoder_config(true, false, true, relpos::Activation::relu), [&](Index n) {
        return xl_from<T>(f, "layers." + std::to_string(n) + ".self_attn.", 3, 10000, u, v);
      });
}

TYPED_TEST(XlKerpleGradTyped, KerpleEncoderSumsR1AndR2OverLayers) {
  using T = TypeParam;
  {
    const auto f = relpos::test::golden_file("grads/encoder_kerple_power_post_final.safetensors");
    const auto enc = kerple_from<T>(f, relpos::KerpleForm::power);
    check_encoder_golden<T, relpos::KerpleBias<T>>(
        "encoder_kerple_power_post_final",
        xl_kerple_encoder_config(false, true, false, relpos::Activation::relu),
        [&](Index) { return enc; });
  }
  const auto f = relpos::test::golden_file("grads/encoder_kerple_log_pre.safetensors");
  const auto enc = kerple_from<T>(f, relpos::KerpleForm::log);
  check_encoder_golden<T, relpos::KerpleBias<T>>(
      "encoder_kerple_log_pre",
      xl_kerple_encoder_config(true, false, false, relpos::Activation::gelu),
      [&](Index) { return enc; });
}

// ---- Central finite differences in double ------------------------------------------------

// One attention layer (d_model 8, 2 heads of 4) over `len` tokens at positions `ids` (null:
// plain), keys 0 and len/2 padded (with the causal mask, query 0 sees no key: α_0 = 0), the
// encoding rebuilt by make() from the parameters `params` points at, so that perturbing them
// changes the forward. Checks x, in_proj, out_proj and every one of `params` against `grads`.
struct Param {
  const char* name;
  Matrix<double>* value;
  std::function<const Matrix<double>&(const relpos::AttentionGrad<double>&)> grad;
};

template <class Enc, class Make>
void check_fd(const Make& make, const std::vector<Param>& params, bool causal, Index len,
              const std::int64_t* ids, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  const Index d = 8;
  relpos::MultiHeadAttention<double, Enc> attn({.d_model = d, .n_heads = 2, .causal = causal},
                                               make());
  relpos::test::fill_normal(attn.in_proj_weight, gen, 0.6);
  relpos::test::fill_normal(attn.in_proj_bias, gen, 0.6);
  relpos::test::fill_normal(attn.out_proj_weight, gen, 0.6);
  relpos::test::fill_normal(attn.out_proj_bias, gen, 0.6);
  Matrix<double> x(len, d), dout(len, d), out(len, d), dx(len, d);
  relpos::test::fill_normal(x, gen, 1.0);
  relpos::test::fill_normal(dout, gen, 1.0);
  const auto key_padding = std::make_unique<bool[]>(static_cast<std::size_t>(len));
  for (Index j = 0; j < len; ++j) key_padding[static_cast<std::size_t>(j)] = j == 0 || j == len / 2;
  const relpos::SequenceInputs in{.positions = {.len = len, .ids = ids},
                                  .key_padding = key_padding.get()};
  relpos::SequenceWorkspace<double> ws;
  relpos::AttentionSaved<double> saved;
  relpos::AttentionGrad<double> grad;
  relpos::forward_saving(attn, x, out, in, ws, saved);
  relpos::backward(attn, saved, in, dout, dx, grad);
  ASSERT_TRUE(dx.allFinite());
  const auto loss = [&] {
    attn.encoding = make();
    attn.forward(x, out, in, ws);
    return (out.array() * dout.array()).sum();
  };
  EXPECT_TRUE(matches_finite_differences(x, dx, loss, "x"));
  EXPECT_TRUE(
      matches_finite_differences(attn.in_proj_weight, grad.in_proj_weight, loss, "in_proj_weight"));
  EXPECT_TRUE(
      matches_finite_differences(attn.in_proj_bias, grad.in_proj_bias, loss, "in_proj_bias"));
  EXPECT_TRUE(matches_finite_differences(attn.out_proj_weight, grad.out_proj_weight, loss,
                                         "out_proj.weight"));
  for (const Param& p : params) {
    const Matrix<double>& g = p.grad(grad);
    ASSERT_EQ(g.rows(), p.value->rows()) << p.name;
    ASSERT_EQ(g.cols(), p.value->cols()) << p.name;
    EXPECT_TRUE(matches_finite_differences(*p.value, g, loss, p.name));
    EXPECT_GT(g.cwiseAbs().maxCoeff(), 1e-3) << p.name;  // the check is not vacuous
  }
}

// Transformer-XL: r_net.weight, u, v and everything else; unclamped and clamped to K = 2, plain
// positions and explicit ids, causal or not, and len 70 (two query blocks of backward).
TEST(XlKerpleGradFiniteDifferences, Xl) {
  const std::int64_t ids[5] = {3, 0, 9, 2, 4};
  std::uint64_t seed = 2010;
  for (const bool causal : {false, true}) {
    for (const std::optional<Index> k : {std::optional<Index>(), std::optional<Index>(2)}) {
      for (const std::int64_t* positions : {static_cast<const std::int64_t*>(nullptr), ids}) {
        SCOPED_TRACE(std::string(causal ? "causal" : "bidirectional") + (k ? " clamped" : "") +
                     (positions ? " ids" : ""));
        std::mt19937_64 gen(seed);
        Matrix<double> r_net(8, 8), u(2, 4), v(2, 4);
        relpos::test::fill_normal(r_net, gen, 0.5);
        relpos::test::fill_normal(u, gen, 0.5);
        relpos::test::fill_normal(v, gen, 0.5);
        const auto make = [&] {
          return relpos::XlRelative<double>(8, 2,
                                            {.base = 100, .max_distance = k, .tensor_prefix = ""},
                                            r_net, relpos::share(u), relpos::share(v));
        };
        check_fd<relpos::XlRelative<double>>(
            make,
            {{"r_net.weight", &r_net, [](const auto& g) -> const auto& { return g.r_net_weight;
      }
    }
    , {"r_w_bias", &u, [](const auto& g) -> const auto& {return g.r_w_bias;
  }
}
, {
  "r_r_bias", &v, [](const auto& g) -> const auto& {
    return g.r_r_bias;
  }
}
}  // namespace xl_kerple_grad_test
,
            causal, 5, positions, seed + 100);
++seed;
}
}
}
SCOPED_TRACE("two blocks");
std::mt19937_64 gen(seed);
Matrix<double> r_net(8, 8), u(2, 4), v(2, 4);
relpos::test::fill_normal(r_net, gen, 0.3);
relpos::test::fill_normal(u, gen, 0.3);
relpos::test::fill_normal(v, gen, 0.3);
const auto make = [&] {
  return relpos::XlRelative<double>(8, 2, {.base = 100, .max_distance = 4, .tensor_prefix = ""},
                                    r_net, relpos::share(u), relpos::share(v));
};
  check_fd<relpos::XlRelative<double>>(
      make, {{"r_w_bias", &u, [](const auto& g) -> const auto& { return g.r_w_bias;
  }
  }
  , {
    "r_r_bias", &v, [](const auto& g) -> const auto& {
      return g.r_r_bias;
    }
  }
  },
      true, 70, nullptr, seed + 100);
  }

  // KERPLE: r1 and r2 per head, both forms, plain positions and explicit ids (with a repeated id:
  // distance 0 off the diagonal), causal or not.
  TEST(XlKerpleGradFiniteDifferences, KerpleBothForms) {
    const std::int64_t ids[5] = {3, 0, 9, 3, 4};
    std::uint64_t seed = 2030;
    for (const relpos::KerpleForm form : {relpos::KerpleForm::log, relpos::KerpleForm::power}) {
      for (const bool causal : {false, true}) {
        for (const std::int64_t* positions : {static_cast<const std::int64_t*>(nullptr), ids}) {
          SCOPED_TRACE(std::string(relpos::kerple_form_name(form)) +
                       (causal ? " causal" : " bidirectional") + (positions ? " ids" : ""));
          Matrix<double> r1(2, 1), r2(2, 1);
          r1 << 0.7, 1.6;
          r2 << 0.4, 1.3;
          const auto make = [&] {
            return relpos::KerpleBias<double>(2, {.form = form}, relpos::share(r1),
                                              relpos::share(r2));
          };
          // r1, r2 are [n_heads] gradients: viewed as (n_heads, 1) matrices for the comparison
          Matrix<double> g1, g2;
          check_fd<relpos::KerpleBias<double>>(
              make,
              {{"kerple_r1", &r1,
                [&](const auto& g) -> const Matrix<double>& { return g1 = g.kerple_r1; }},
               {"kerple_r2", &r2,
                [&](const auto& g) -> const Matrix<double>& { return g2 = g.kerple_r2; }}},
              causal, 5, positions, seed++);
        }
      }
    }
  }

  // Ids spanning more than 8·len distances (no clamp) are refused by xl's backward with an Error
  // naming the span, not a table of one row per distance.
  TEST(XlKerpleGrad, XlWideIdsAreAnError) {
    const Index len = 3, d = 8;
    const std::int64_t ids[len] = {0, 1000, 5};
    relpos::MultiHeadAttention<double, relpos::XlRelative<double>> attn(
        {.d_model = d, .n_heads = 2},
        relpos::XlRelative<double>(8, 2, {}, Matrix<double>::Identity(8, 8),
                                   relpos::share(Matrix<double>::Zero(2, 4)),
                                   relpos::share(Matrix<double>::Zero(2, 4))));
    attn.in_proj_weight.setIdentity();
    Matrix<double> x = Matrix<double>::Ones(len, d), out(len, d), dx(len, d);
    const relpos::SequenceInputs in{.positions = {.len = len, .ids = ids}};
    relpos::SequenceWorkspace<double> ws;
    relpos::AttentionSaved<double> saved;
    relpos::forward_saving(attn, x, out, in, ws, saved);
    relpos::AttentionGrad<double> grad;
    relpos::test::expect_error([&] { relpos::backward(attn, saved, in, out, dx, grad); },
                               "position ids span 2001 distances for 3 tokens");
  }

  }  // namespace xl_kerple_grad_test
