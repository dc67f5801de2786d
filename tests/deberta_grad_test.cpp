// SPDX-License-Identifier: MIT
// Tests for the backward of the deberta position type (encodings/deberta.hpp's
// head_rows_backward, detail/head_terms_grad.hpp, through attention_grad.hpp and
// encoder_grad.hpp): every tensor a deberta model file has (position.rel_embeddings, rel_norm's
// weight and bias, in_proj's query and key rows or pos_key_proj / pos_query_proj) and the
// input, against central finite differences in double on a 2-layer stack (rel_norm on and
// off, shared and separate projections, c2p and p2c alone, padding, causal, position ids), and
// against PyTorch autograd through tools/golden_deberta.py's forward
// (tools/golden_deberta_grads.py) in double and float.
#include <relpos/attention_grad.hpp>
#include <relpos/encoder_grad.hpp>
#include <relpos/encodings/deberta.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/finite_differences.hpp"
#include "support/golden.hpp"
#include "support/random.hpp"

namespace deberta_grad_test {

using relpos::DebertaConfig;
using relpos::DebertaRelative;
using relpos::Index;
using relpos::Matrix;
using relpos::Tensor3;
using relpos::Vector;

static_assert(relpos::detail::attention_backward_supported<DebertaRelative<double>>);
static_assert(relpos::detail::attention_backward_supported<DebertaRelative<float>>);

// A model file in memory: the tensors by name, as a TensorSource (vectors are (n, 1)).
struct MapSource {
  std::map<std::string, Matrix<double>> tensors;

  template <class T>
  Matrix<T> matrix(std::string_view name, Index rows, Index cols) const {
    const Matrix<double>& m = tensors.at(std::string(name));
    if (m.rows() != rows || m.cols() != cols) {
      throw relpos::Error(std::string(name) + ": wrong shape in the test's source");
    }
    return m.template cast<T>();
  }
  template <class T>
  Vector<T> vector(std::string_view name, Index n) const {
    const Matrix<double>& m = tensors.at(std::string(name));
    if (m.size() != n) throw relpos::Error(std::string(name) + ": wrong size in the test's source");
    return Eigen::Map<const Vector<double>>(m.data(), n).template cast<T>();
  }
};

using Stack = relpos::Encoder<double, DebertaRelative<double>>;

// The stack read from the source, its deberta encodings made by the model-file loader (R
// through rel_norm once, shared; each layer's projections), as Model::load builds them.
Stack stack_of(const MapSource& source, const relpos::EncoderConfig& cfg,
               const DebertaConfig& position) {
  const relpos::ModelShape shape{.d_model = cfg.d_model,
                                 .n_heads = cfg.n_heads,
                                 .n_layers = cfg.n_layers,
                                 .causal = cfg.causal,
                                 .bias = true,
                                 .layer_norm_eps = cfg.layer_norm_eps};
  return Stack::load(source, cfg, DebertaRelative<double>::loader(position, shape, source));
}

// Every tensor of a random stack of this config: spec §1's for the blocks, the encoding's own.
MapSource random_source(const relpos::EncoderConfig& cfg, const DebertaConfig& position,
                        std::mt19937_64& gen) {
  MapSource s;
  const Index d = cfg.d_model, f = cfg.d_ff;
  const auto add = [&](const std::string& name, Index rows, Index cols, double scale,
                       double shift = 0) {
    Matrix<double> m(rows, cols);
    relpos::test::fill_normal(m, gen, scale);
    m.array() += shift;
    s.tensors[name] = m;
  };
  for (Index n = 0; n < cfg.n_layers; ++n) {
    const std::string p = "layers." + std::to_string(n) + ".";
    add(p + "self_attn.in_proj_weight", 3 * d, d, 0.5);
    add(p + "self_attn.in_proj_bias", 3 * d, 1, 0.5);
    add(p + "self_attn.out_proj.weight", d, d, 0.5);
    add(p + "self_attn.out_proj.bias", d, 1, 0.5);
    add(p + "linear1.weight", f, d, 0.5);
    add(p + "linear1.bias", f, 1, 0.5);
    add(p + "linear2.weight", d, f, 0.5);
    add(p + "linear2.bias", d, 1, 0.5);
    for (const char* norm : {"norm1", "norm2"}) {
      add(p + norm + ".weight", d, 1, 0.3, 1.0);
      add(p + norm + ".bias", d, 1, 0.3);
    }
  }
  const relpos::ModelShape shape{.d_model = d, .n_heads = cfg.n_heads, .n_layers = cfg.n_layers};
  for (const auto& t : DebertaRelative<double>::tensors(position, shape)) {
    add(t.name, t.shape[0], t.shape.size() > 1 ? t.shape[1] : 1, 0.7,
        t.name == DebertaRelative<double>::norm_weight_tensor ? 1.0 : 0.0);
  }
  for (Index n = 0; n < cfg.n_layers; ++n) {
    for (const auto& t : DebertaRelative<double>::layer_tensors(position, shape, n)) {
      add(t.name, t.shape[0], t.shape.size() > 1 ? t.shape[1] : 1, 0.5);
    }
  }
  return s;
}

struct FdCase {
  const char* name;
  DebertaConfig position;
  bool norm_first, causal;
  std::vector<std::int64_t> ids;  // empty: plain positions
  std::vector<bool> padding;      // per key
};

// Forward and backward of one sequence through the stack, then every gradient EncoderGrad
// names against central finite differences of L = Σ dout ⊙ stack(x), the stack rebuilt from
// the perturbed file each time (so the shared R, its norm and the projections of every layer
// are differentiated through the loader, as a model file is read); and every tensor of the
// file has its gradient.
void check_stack(const FdCase& c, std::uint64_t seed) {
  SCOPED_TRACE(c.name);
  std::mt19937_64 gen(seed);
  const relpos::EncoderConfig cfg{.d_model = 8,
                                  .n_heads = 2,
                                  .n_layers = 2,
                                  .d_ff = 6,
                                  .activation = relpos::Activation::gelu,
                                  .norm_first = c.norm_first,
                                  .layer_norm_eps = 1e-5,
                                  .causal = c.causal};
  MapSource source = random_source(cfg, c.position, gen);
  const Index len = static_cast<Index>(c.padding.size()), d = cfg.d_model;
  Matrix<double> x(len, d), dout(len, d);
  relpos::test::fill_normal(x, gen, 1.0);
  relpos::test::fill_normal(dout, gen, 1.0);
  const auto key_padding = std::make_unique<bool[]>(static_cast<std::size_t>(len));
  for (Index j = 0; j < len; ++j) key_padding[j] = c.padding[static_cast<std::size_t>(j)];
  const relpos::SequenceInputs in{
      .positions = c.ids.empty() ? relpos::Positions{.len = len, .call_length = len}
                                 : relpos::Positions{.len = len, .ids = c.ids.data()},
      .key_padding = key_padding.get()};
  relpos::SequenceWorkspace<double> ws;
  relpos::EncoderSaved<double> saved;
  const auto loss = [&] {
    const Stack stack = stack_of(source, cfg, c.position);
    Matrix<double> h = x;
    relpos::forward_saving(stack, h, in, ws, saved);
    return (h.array() * dout.array()).sum();
  };
  const Stack stack = stack_of(source, cfg, c.position);
  {
    // forward_saving gives the stack's own forward
    Tensor3<double> batch_x(1, len, d);
    relpos::item(batch_x, 0) = x;
    relpos::PaddingMask mask(1, len);
    for (Index j = 0; j < len; ++j) mask(0, j) = key_padding[j];
    relpos::PositionIds ids(1, len);
    for (Index j = 0; j < len; ++j) ids(0, j) = in.positions[j];
    const relpos::BatchInputs bi{mask, ids};
    const Tensor3<double> out = stack.forward(batch_x, bi);
    Matrix<double> h = x;
    relpos::forward_saving(stack, h, in, ws, saved);
    EXPECT_TRUE(relpos::test::all_close(relpos::item(out, 0), h, 1e-13, 1e-13));
  }
  Matrix<double> h = x;
  relpos::forward_saving(stack, h, in, ws, saved);
  Matrix<double> dx = dout;
  relpos::EncoderGrad<double> grad;
  relpos::backward(stack, saved, in, dx, grad);
  EXPECT_TRUE(relpos::test::matches_finite_differences(x, dx, loss, "input"));
  std::size_t seen = 0;
  grad.for_each([&](const std::string& name, auto& g) {
    ++seen;
    ASSERT_TRUE(source.tensors.count(name)) << "a gradient for no tensor: " << name;
    Matrix<double>& param = source.tensors[name];
    const Matrix<double> analytic =
        Eigen::Map<const Matrix<double>>(g.data(), param.rows(), param.cols());
    EXPECT_TRUE(relpos::test::matches_finite_differences(param, analytic, loss, name));
  });
  EXPECT_EQ(seen, source.tensors.size()) << "every tensor of the file has its gradient";
}

// S 4, M 6: distances beyond ±2 take the log buckets, beyond ±5 the edge rows, with len 7.
constexpr DebertaConfig kSmall{.position_buckets = 4, .max_relative_positions = 6};

TEST(DebertaGradFiniteDifferences, SharedProjectionsRelNormPostNormPadding) {
  check_stack({"shared, rel_norm, post-norm, key 2 padded",
               kSmall,
               false,
               false,
               {},
               {false, false, true, false, false, false, false}},
              1900);
}

TEST(DebertaGradFiniteDifferences, SeparateProjectionsNoRelNormPreNormCausal) {
  DebertaConfig p = kSmall;
  p.share_att_key = false;
  p.rel_norm = false;
  check_stack({"separate, no rel_norm, pre-norm, causal",
               p,
               true,
               true,
               {},
               {false, false, false, false, false, false, true}},
              1901);
}

TEST(DebertaGradFiniteDifferences, SeparateProjectionsRelNormPositionIds) {
  DebertaConfig p = kSmall;
  p.share_att_key = false;
  check_stack({"separate, rel_norm, spread position ids",
               p,
               false,
               false,
               {3, 4, 9, 10, 30, 2, 1},
               {false, false, false, false, false, true, false}},
              1902);
}

TEST(DebertaGradFiniteDifferences, C2pOnlyAndP2cOnly) {
  DebertaConfig c2p = kSmall;
  c2p.p2c = false;
  check_stack({"c2p only, shared, causal ids",
               c2p,
               true,
               true,
               {5, 6, 7, 8, 9, 10, 11},
               {false, false, false, false, false, false, false}},
              1903);
  DebertaConfig p2c = kSmall;
  p2c.c2p = false;
  p2c.share_att_key = false;
  check_stack({"p2c only, separate, no rel_norm",
               p2c,
               false,
               false,
               {},
               {false, true, false, false, false, false, false}},
              1904);
  p2c.share_att_key = true;
  p2c.rel_norm = false;
  check_stack({"p2c only, shared",
               p2c,
               true,
               false,
               {0, 2, 4, 6, 8, 10, 12},
               {false, false, false, false, false, false, false}},
              1905);
}

// A longer sequence than a block of backward's query rows (64) and of its key blocks, so the
// tiles' windows are exercised, under the spec's defaults S 256, M 512 (a dense window) and
// with S 8 (saturated edge rows): against finite differences of one layer's in_proj and R.
TEST(DebertaGradFiniteDifferences, SeveralBlocksOfRowsAndKeys) {
  std::mt19937_64 gen(1906);
  const Index len = 70, d = 4, heads = 2;
  for (const DebertaConfig position :
       {DebertaConfig{}, DebertaConfig{.position_buckets = 8, .max_relative_positions = 20}}) {
    SCOPED_TRACE(position.position_buckets);
    Matrix<double> rel(2 * position.position_buckets, d), w(3 * d, d), wo(d, d), x(len, d),
        dout(len, d);
    for (Matrix<double>* m : {&rel, &w, &wo, &x, &dout}) relpos::test::fill_normal(*m, gen, 0.6);
    Vector<double> b(3 * d), bo(d);
    relpos::test::fill_normal(b, gen, 0.5);
    relpos::test::fill_normal(bo, gen, 0.5);
    DebertaConfig p = position;
    p.rel_norm = false;
    using Attn = relpos::MultiHeadAttention<double, DebertaRelative<double>>;
    const auto make = [&] {
      const DebertaRelative<double>::Projection key{w.middleRows(d, d), b.segment(d, d)};
      const DebertaRelative<double>::Projection query{w.topRows(d), b.head(d)};
      Attn a(relpos::AttentionConfig{.d_model = d, .n_heads = heads},
             DebertaRelative<double>(d, heads, p, rel, key, query));
      a.in_proj_weight = w;
      a.in_proj_bias = b;
      a.out_proj_weight = wo;
      a.out_proj_bias = bo;
      return a;
    };
    const relpos::SequenceInputs in{.positions = {.len = len, .call_length = len}};
    relpos::SequenceWorkspace<double> ws;
    relpos::AttentionSaved<double> saved;
    const auto loss = [&] {
      const Attn a = make();
      Matrix<double> out(len, d);
      relpos::forward_saving(a, x, out, in, ws, saved);
      return (out.array() * dout.array()).sum();
    };
    const Attn a = make();
    Matrix<double> out(len, d), dx(len, d);
    relpos::forward_saving(a, x, out, in, ws, saved);
    relpos::AttentionGrad<double> grad;
    relpos::backward(a, saved, in, dout, dx, grad);
    EXPECT_TRUE(relpos::test::matches_finite_differences(x, dx, loss, "input"));
    EXPECT_TRUE(relpos::test::matches_finite_differences(w, grad.in_proj_weight, loss, "in_proj"));
    EXPECT_TRUE(relpos::test::matches_finite_differences(b, grad.in_proj_bias, loss, "in_proj b"));
    EXPECT_TRUE(relpos::test::matches_finite_differences(rel, grad.rel_embeddings, loss, "R"));
  }
}

// Built from R already normed, rel_norm's gradient cannot be had: an Error, not a wrong one.
TEST(DebertaGrad, RelNormNeedsTheRawEmbeddings) {
  const Index d = 4;
  const DebertaConfig p{.position_buckets = 4, .max_relative_positions = 6};
  const DebertaRelative<double>::Projection proj{Matrix<double>::Identity(d, d), {}};
  relpos::MultiHeadAttention<double, DebertaRelative<double>> a(
      relpos::AttentionConfig{.d_model = d, .n_heads = 1},
      DebertaRelative<double>(d, 1, p, Matrix<double>::Zero(8, d), proj, proj));
  const Matrix<double> x = Matrix<double>::Ones(3, d);
  Matrix<double> out(3, d), dx(3, d);
  const relpos::SequenceInputs in{.positions = {.len = 3, .call_length = 3}};
  relpos::SequenceWorkspace<double> ws;
  relpos::AttentionSaved<double> saved;
  relpos::forward_saving(a, x, out, in, ws, saved);
  relpos::AttentionGrad<double> grad;
  try {
    relpos::backward(a, saved, in, x, dx, grad);
    ADD_FAILURE() << "no error";
  } catch (const relpos::Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "deberta backward: built from R after rel_norm, so position.rel_embeddings has no "
              "gradient; build it from DebertaRelative::normed_embeddings (the loader does)");
  }
}

// ---- golden gradients from PyTorch autograd (tools/golden_deberta_grads.py) ---------------

// Double: to 1e-9 (sums of a few hundred products of values of size ~1; autograd sums them in
// another order). Float: 1e-4 of the tensor's largest entry and 1e-4 relative (the issue's
// float bound; inputs rounded once to float, the tables projected in double then rounded). A
// gradient that is exactly zero, pos_key_proj.bias (q_i·b_k is the same for every key of row
// i, which the softmax ignores: spec §6's pitfall for in_proj's key rows) and rel_norm.bias
// with c2p alone, is pure rounding in float (~1e-6): its scale is the layer's, `layer_scale`
// (grad.input's largest entry), as for the zero key rows inside in_proj_bias.
template <class T, class A, class B>
::testing::AssertionResult golden_close(const A& actual, const B& expected, double layer_scale) {
  if constexpr (std::is_same_v<T, double>) {
    (void)layer_scale;
    return relpos::test::all_close(actual, expected, 1e-9, 1e-9);
  } else {
    const double largest = expected.cwiseAbs().maxCoeff();
    return relpos::test::all_close(actual, expected,
                                   1e-4 * (largest > 1e-12 ? largest : layer_scale), 1e-4);
  }
}

// One file: the layer built by the model-file loader, forward_saving and backward item by item
// (output and ∂L/∂input per item), then every accumulated gradient against autograd's by name,
// the shared ones (rel_embeddings, rel_norm) included; none of the file's left unchecked.
template <class T>
void check_golden(const std::string& name) {
  SCOPED_TRACE(name);
  const auto f = relpos::test::golden_file("deberta/grads_" + name + ".safetensors");
  const auto config = nlohmann::json::parse(f.metadata().at("config"));
  const auto& j = config.at("position");
  const DebertaConfig position{j.at("position_buckets").get<Index>(),
                               j.at("max_relative_positions").get<Index>(),
                               j.at("c2p").get<bool>(),
                               j.at("p2c").get<bool>(),
                               j.at("share_att_key").get<bool>(),
                               j.at("rel_norm").get<bool>()};
  const relpos::ModelShape shape{.d_model = config.at("d_model").get<Index>(),
                                 .n_heads = config.at("n_heads").get<Index>(),
                                 .n_layers = 1,
                                 .causal = config.at("causal").get<bool>(),
                                 .bias = true,
                                 .layer_norm_eps = config.at("layer_norm_eps").get<double>()};
  const auto attn = relpos::MultiHeadAttention<T, DebertaRelative<T>>::load(
      f, "layers.0.self_attn.", {shape.d_model, shape.n_heads, shape.causal},
      DebertaRelative<T>::loader(position, shape, f)(0));
  const Tensor3<T> x = f.tensor3<T>("input"), dout = f.tensor3<T>("dout");
  const Index batch = x.dimension(0), len = x.dimension(1), d = shape.d_model;
  const std::vector<std::uint8_t> pad = f.values<std::uint8_t>("padding_mask", {batch, len});
  const std::vector<std::int64_t> ids = f.contains("position_ids")
                                            ? f.values<std::int64_t>("position_ids", {batch, len})
                                            : std::vector<std::int64_t>();
  const Tensor3<double> want_out = f.tensor3<double>("output");
  const Tensor3<double> want_dx = f.tensor3<double>("grad.input");
  double layer_scale = 0;
  for (Index k = 0; k < want_dx.size(); ++k)
    layer_scale = std::max(layer_scale, std::abs(want_dx.data()[k]));
  relpos::SequenceWorkspace<T> ws;
  relpos::AttentionSaved<T> saved;
  relpos::AttentionGrad<T> grad;
  for (Index b = 0; b < batch; ++b) {
    const auto key_padding = std::make_unique<bool[]>(static_cast<std::size_t>(len));
    for (Index k = 0; k < len; ++k) {
      key_padding[static_cast<std::size_t>(k)] = pad[static_cast<std::size_t>(b * len + k)] != 0;
    }
    const relpos::SequenceInputs in{
        .positions = ids.empty() ? relpos::Positions{.len = len, .call_length = len}
                                 : relpos::Positions{.len = len, .ids = ids.data() + b * len},
        .key_padding = key_padding.get()};
    Matrix<T> out(len, d), dx(len, d);
    relpos::forward_saving(attn, relpos::item(x, b), out, in, ws, saved);
    EXPECT_TRUE(golden_close<T>(out, relpos::item(want_out, b), layer_scale))
        << "output, item " << b;
    relpos::backward(attn, saved, in, relpos::item(dout, b), dx, grad);
    EXPECT_TRUE(golden_close<T>(dx, relpos::item(want_dx, b), layer_scale)) << "input, item " << b;
  }
  std::size_t checked = 0;
  const auto compare = [&](const std::string& tensor, const auto& g) {
    SCOPED_TRACE(tensor);
    ++checked;
    using G = std::decay_t<decltype(g)>;
    if constexpr (G::ColsAtCompileTime == 1) {
      EXPECT_TRUE(golden_close<T>(g, f.vector<double>("grad." + tensor), layer_scale));
    } else {
      EXPECT_TRUE(golden_close<T>(g, f.matrix<double>("grad." + tensor), layer_scale));
    }
  };
  grad.for_each("layers.0.self_attn.", compare);
  compare("position.rel_embeddings", grad.rel_embeddings);
  if (position.rel_norm) {
    compare("position.rel_norm.weight", grad.rel_norm_weight);
    compare("position.rel_norm.bias", grad.rel_norm_bias);
  } else {
    EXPECT_EQ(grad.rel_norm_weight.size() + grad.rel_norm_bias.size(), 0);
  }
  std::size_t want = 0;
  for (const std::string& tensor : f.names()) want += tensor.rfind("grad.", 0) == 0;
  EXPECT_EQ(checked + 1, want) << "every gradient of the file compared (and grad.input)";
}

template <class T>
class DebertaGradTyped : public ::testing::Test {};
using GradScalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(DebertaGradTyped, GradScalars);

TYPED_TEST(DebertaGradTyped, MatchesTorchAutograd) {
  for (const char* name :
       {"shared_rel_norm", "separate_causal", "separate_ids", "p2c", "c2p_separate"}) {
    check_golden<TypeParam>(name);
  }
}

}  // namespace deberta_grad_test
