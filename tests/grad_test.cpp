// Tests for the analytic backward of the non-attention modules and the losses of spec §6:
// include/relpos/layer_norm_grad.hpp, feed_forward_grad.hpp, embedding_grad.hpp,
// output_head_grad.hpp, loss.hpp (and detail/linear_grad.hpp under them). Three kinds of
// evidence: golden gradients from PyTorch autograd (tools/golden_grads.py, float64) in float
// and double, central finite differences in double on tiny sizes, and the errors of bad input.
#include <relpos/embedding_grad.hpp>
#include <relpos/feed_forward_grad.hpp>
#include <relpos/layer_norm_grad.hpp>
#include <relpos/loss.hpp>
#include <relpos/output_head_grad.hpp>

#include <cstdint>
#include <functional>
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
class GradTyped : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(GradTyped, Scalars);

// Against torch's float64 autograd. Double: the same formulas in another order, so a few ulps
// of gradients of size <= ~10 (atol 1e-12). Float: the inputs are rounded to float (relative
// 6e-8) and every gradient is a sum of a few dozen products, each step rounding once more; the
// error is a few 1e-7 of the tensor's largest entry, so 1e-5 of that scale (atol) and 1e-5
// relative leave a margin of ~10 and still catch any wrong term (which is O(1) of the scale).
template <class T, class A, class B>
::testing::AssertionResult close(const A& actual, const B& expected) {
  if constexpr (std::is_same_v<T, double>) {
    return relpos::test::all_close(actual, expected, 1e-12, 1e-12);
  } else {
    const double scale = expected.cwiseAbs().maxCoeff();
    return relpos::test::all_close(actual, expected, 1e-5 * scale, 1e-5);
  }
}
template <class T, class U>
::testing::AssertionResult close(const Tensor3<T>& actual, const Tensor3<U>& expected) {
  if constexpr (std::is_same_v<T, double>) {
    return relpos::test::all_close(actual, expected, 1e-12, 1e-12);
  } else {
    const Tensor3<U> a = expected.abs();
    const Eigen::Tensor<U, 0, Eigen::RowMajor> m = a.maximum();
    return relpos::test::all_close(actual, expected, 1e-5 * m(), 1e-5);
  }
}
template <class T>
::testing::AssertionResult close_scalar(T actual, double expected) {
  const double tol = std::is_same_v<T, double> ? 1e-12 : 1e-5;
  if (std::abs(static_cast<double>(actual) - expected) <= tol * (1 + std::abs(expected))) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << "actual " << static_cast<double>(actual) << ", expected " << expected;
}

TokenIds read_ids(const relpos::io::SafetensorsFile& f, const char* name) {
  const auto& shape = f.info(name).shape;
  const std::vector<std::int64_t> v = f.values<std::int64_t>(name);
  TokenIds ids(shape.at(0), shape.at(1));
  for (Index k = 0; k < ids.size(); ++k) ids.data()[k] = v[static_cast<std::size_t>(k)];
  return ids;
}

TYPED_TEST(GradTyped, LayerNormMatchesTorch) {
  using T = TypeParam;
  const auto f = relpos::test::golden_file("grads/layer_norm.safetensors");
  const Tensor3<T> x = f.tensor3<T>("input"), dout = f.tensor3<T>("dout");
  const Index d = x.dimension(2);
  const auto norm = relpos::LayerNorm<T>::load(f, "norm", d, 1e-5);
  Tensor3<T> out(x.dimensions()), dx(x.dimensions());
  relpos::LayerNormSaved<T> saved;
  relpos::LayerNormGrad<T> grad;
  for (Index b = 0; b < x.dimension(0); ++b) {  // the gradients add up over the items
    relpos::forward_saving(norm, relpos::item(x, b), relpos::item(out, b), saved);
    relpos::backward(norm, saved, relpos::item(dout, b), relpos::item(dx, b), grad);
  }
  EXPECT_TRUE(close<T>(out, f.tensor3<double>("output")));
  EXPECT_TRUE(close<T>(dx, f.tensor3<double>("grad.input")));
  EXPECT_TRUE(close<T>(grad.weight, f.vector<double>("grad.norm.weight")));
  EXPECT_TRUE(close<T>(grad.bias, f.vector<double>("grad.norm.bias")));
}

TYPED_TEST(GradTyped, FeedForwardMatchesTorchReluAndExactGelu) {
  using T = TypeParam;
  for (const auto act : {relpos::Activation::relu, relpos::Activation::gelu}) {
    const std::string name = act == relpos::Activation::relu ? "relu" : "gelu";
    SCOPED_TRACE(name);
    const auto f = relpos::test::golden_file("grads/feed_forward_" + name + ".safetensors");
    const Tensor3<T> x = f.tensor3<T>("input"), dout = f.tensor3<T>("dout");
    const Index d = x.dimension(2), d_ff = f.info("linear1.bias").shape.at(0);
    const auto ffn = relpos::FeedForward<T>::load(f, "", d, d_ff, act);
    Tensor3<T> out(x.dimensions()), dx(x.dimensions());
    relpos::FeedForwardSaved<T> saved;
    relpos::FeedForwardGrad<T> grad;
    for (Index b = 0; b < x.dimension(0); ++b) {
      relpos::forward_saving(ffn, relpos::item(x, b), relpos::item(out, b), saved);
      relpos::backward(ffn, saved, relpos::item(dout, b), relpos::item(dx, b), grad);
    }
    EXPECT_TRUE(close<T>(out, f.tensor3<double>("output")));
    EXPECT_TRUE(close<T>(dx, f.tensor3<double>("grad.input")));
    grad.for_each("", [&](const std::string& tensor, const auto& g) {
      SCOPED_TRACE(tensor);
      using G = std::decay_t<decltype(g)>;
      if constexpr (G::ColsAtCompileTime == 1) {
        EXPECT_TRUE(close<T>(g, f.vector<double>("grad." + tensor)));
      } else {
        EXPECT_TRUE(close<T>(g, f.matrix<double>("grad." + tensor)));
      }
    });
  }
}

TYPED_TEST(GradTyped, CrossEntropyMatchesTorchWithIgnoredTargets) {
  using T = TypeParam;
  // logits of scale 30: exp() of them overflows float, so this also checks the max shift
  const auto f = relpos::test::golden_file("grads/cross_entropy.safetensors");
  const Tensor3<T> logits = f.tensor3<T>("logits");
  const TokenIds targets = read_ids(f, "targets");
  ASSERT_EQ(targets(1, 2), relpos::kIgnoreTarget);  // one in the middle, one at the end
  ASSERT_EQ(targets(2, 3), relpos::kIgnoreTarget);
  Tensor3<T> dlogits;
  const T loss = relpos::cross_entropy(logits, targets, dlogits);
  EXPECT_TRUE(close_scalar(loss, f.vector<double>("loss")(0)));
  EXPECT_TRUE(close<T>(dlogits, f.tensor3<double>("grad.logits")));
  for (Index v = 0; v < logits.dimension(2); ++v) EXPECT_EQ(dlogits(1, 2, v), T(0));
}

TYPED_TEST(GradTyped, MeanSquaredErrorMatchesTorch) {
  using T = TypeParam;
  const auto f = relpos::test::golden_file("grads/mse.safetensors");
  Tensor3<T> doutput;
  const T loss =
      relpos::mean_squared_error(f.tensor3<T>("output"), f.tensor3<T>("target"), doutput);
  EXPECT_TRUE(close_scalar(loss, f.vector<double>("loss")(0)));
  EXPECT_TRUE(close<T>(doutput, f.tensor3<double>("grad.output")));
}

// The encoder's path without attention, end to end as tools/golden_grads.py runs it in torch:
// ids → embed.weight → final norm → head → cross-entropy, each backward feeding the next.
TYPED_TEST(GradTyped, EmbeddingFinalNormHeadAndLossMatchTorch) {
  using T = TypeParam;
  const auto f = relpos::test::golden_file("grads/tail_ce.safetensors");
  const TokenIds ids = read_ids(f, "input_ids"), targets = read_ids(f, "targets");
  const Matrix<T> embed = f.matrix<T>("embed.weight");
  const Index batch = ids.rows(), len = ids.cols(), vocab = embed.rows(), d = embed.cols();
  const auto norm = relpos::LayerNorm<T>::load(f, "norm", d, 1e-5);
  const Matrix<T> head_w = f.matrix<T>("head.weight");
  const Vector<T> head_b = f.vector<T>("head.bias");

  Tensor3<T> hidden(batch, len, d), logits(batch, len, vocab);
  std::vector<relpos::LayerNormSaved<T>> saved(static_cast<std::size_t>(batch));
  for (Index b = 0; b < batch; ++b) {
    Matrix<T> e(len, d);
    for (Index i = 0; i < len; ++i) e.row(i) = embed.row(ids(b, i));
    relpos::forward_saving(norm, e, relpos::item(hidden, b), saved[static_cast<std::size_t>(b)]);
    auto z = relpos::item(logits, b);
    relpos::detail::linear<T>(relpos::item(hidden, b), head_w, head_b, z);
  }
  EXPECT_TRUE(close<T>(logits, f.tensor3<double>("logits")));
  Tensor3<T> dlogits;
  const T loss = relpos::cross_entropy(logits, targets, dlogits);
  EXPECT_TRUE(close_scalar(loss, f.vector<double>("loss")(0)));

  relpos::OutputHeadGrad<T> head_grad;
  relpos::LayerNormGrad<T> norm_grad;
  relpos::EmbeddingGrad<T> embed_grad;
  Tensor3<T> dembedded(batch, len, d);
  Matrix<T> dhidden(len, d);
  for (Index b = 0; b < batch; ++b) {
    relpos::output_head_backward<T>(head_w, relpos::item(hidden, b), relpos::item(dlogits, b),
                                    dhidden, head_grad);
    relpos::backward(norm, saved[static_cast<std::size_t>(b)], dhidden, relpos::item(dembedded, b),
                     norm_grad);
  }
  relpos::embedding_backward(ids, dembedded, vocab, embed_grad);
  EXPECT_TRUE(close<T>(head_grad.weight, f.matrix<double>("grad.head.weight")));
  EXPECT_TRUE(close<T>(head_grad.bias, f.vector<double>("grad.head.bias")));
  EXPECT_TRUE(close<T>(norm_grad.weight, f.vector<double>("grad.norm.weight")));
  EXPECT_TRUE(close<T>(norm_grad.bias, f.vector<double>("grad.norm.bias")));
  EXPECT_TRUE(close<T>(embed_grad.weight, f.matrix<double>("grad.embed.weight")));
  for (const Index unused : {4, 6, 8}) EXPECT_TRUE(embed_grad.weight.row(unused).isZero(0));
  // the names are the model file's
  std::vector<std::string> names;
  const auto collect = [&](const std::string& n, const auto&) { names.push_back(n); };
  embed_grad.for_each(collect);
  norm_grad.for_each("norm", collect);
  head_grad.for_each(collect);
  EXPECT_EQ(names, (std::vector<std::string>{"embed.weight", "norm.weight", "norm.bias",
                                             "head.weight", "head.bias"}));
}

// ---------------------------------------------------------------------------------------------
// Central finite differences in double: ∂L/∂θ ≈ (L(θ + h) − L(θ − h)) / 2h for every element
// of every parameter and input, with L = Σ dout ⊙ module(x) for a fixed random dout (so the
// analytic gradient is backward(dout)). h = 1e-6: truncation error O(h²) ~ 1e-12, rounding
// ~ 1e-16·|L|/h ~ 1e-9; tolerance 1e-7 absolute + 1e-6 relative.

using relpos::test::matches_finite_differences;

TEST(GradFiniteDifferences, LayerNorm) {
  std::mt19937_64 gen(1501);
  const Index len = 3, d = 5;
  relpos::LayerNorm<double> norm(d, 1e-5);
  relpos::test::fill_normal(norm.weight, gen, 0.7);
  relpos::test::fill_normal(norm.bias, gen, 0.7);
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
  EXPECT_TRUE(matches_finite_differences(norm.bias, grad.bias, loss, "bias"));
}

TEST(GradFiniteDifferences, FeedForwardReluAndGelu) {
  for (const auto act : {relpos::Activation::relu, relpos::Activation::gelu}) {
    SCOPED_TRACE(act == relpos::Activation::relu ? "relu" : "gelu");
    std::mt19937_64 gen(1502);
    const Index len = 3, d = 4, d_ff = 6;
    relpos::FeedForward<double> ffn(d, d_ff, act);
    relpos::test::fill_normal(ffn.linear1_weight, gen, 0.6);
    relpos::test::fill_normal(ffn.linear1_bias, gen, 0.6);
    relpos::test::fill_normal(ffn.linear2_weight, gen, 0.6);
    relpos::test::fill_normal(ffn.linear2_bias, gen, 0.6);
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
    // relu's kink: a pre-activation within h of 0 would make the difference quotient straddle it
    ASSERT_GT(saved.pre.cwiseAbs().minCoeff(), 1e-3);
    relpos::backward(ffn, saved, dout, dx, grad);
    EXPECT_TRUE(matches_finite_differences(x, dx, loss, "x"));
    EXPECT_TRUE(matches_finite_differences(ffn.linear1_weight, grad.linear1_weight, loss,
                                           "linear1.weight"));
    EXPECT_TRUE(
        matches_finite_differences(ffn.linear1_bias, grad.linear1_bias, loss, "linear1.bias"));
    EXPECT_TRUE(matches_finite_differences(ffn.linear2_weight, grad.linear2_weight, loss,
                                           "linear2.weight"));
    EXPECT_TRUE(
        matches_finite_differences(ffn.linear2_bias, grad.linear2_bias, loss, "linear2.bias"));
  }
}

// embedding → head → cross-entropy with an ignored target, and the MSE, by their own losses
TEST(GradFiniteDifferences, EmbeddingHeadCrossEntropyAndMse) {
  std::mt19937_64 gen(1503);
  const Index batch = 2, len = 3, d = 4, vocab = 5;
  Matrix<double> embed(vocab, d), head_w(vocab, d);
  Vector<double> head_b(vocab);
  relpos::test::fill_normal(embed, gen, 1.0);
  relpos::test::fill_normal(head_w, gen, 1.0);
  relpos::test::fill_normal(head_b, gen, 1.0);
  TokenIds ids(batch, len), targets(batch, len);
  ids << 1, 3, 1, 0, 4, 4;
  targets << 2, relpos::kIgnoreTarget, 0, 4, 1, 3;
  Tensor3<double> hidden(batch, len, d), logits(batch, len, vocab), dlogits;
  const auto forward = [&] {
    for (Index b = 0; b < batch; ++b) {
      for (Index i = 0; i < len; ++i) relpos::item(hidden, b).row(i) = embed.row(ids(b, i));
      auto z = relpos::item(logits, b);
      relpos::detail::linear<double>(relpos::item(hidden, b), head_w, head_b, z);
    }
  };
  const auto loss = [&] {
    forward();
    Tensor3<double> unused;
    return relpos::cross_entropy(logits, targets, unused);
  };
  forward();
  (void)relpos::cross_entropy(logits, targets, dlogits);
  relpos::OutputHeadGrad<double> head_grad;
  relpos::EmbeddingGrad<double> embed_grad;
  Tensor3<double> dhidden(batch, len, d);
  for (Index b = 0; b < batch; ++b) {
    relpos::output_head_backward<double>(head_w, relpos::item(hidden, b), relpos::item(dlogits, b),
                                         relpos::item(dhidden, b), head_grad);
  }
  relpos::embedding_backward(ids, dhidden, vocab, embed_grad);
  EXPECT_TRUE(matches_finite_differences(embed, embed_grad.weight, loss, "embed.weight"));
  EXPECT_TRUE(matches_finite_differences(head_w, head_grad.weight, loss, "head.weight"));
  EXPECT_TRUE(matches_finite_differences(head_b, head_grad.bias, loss, "head.bias"));

  Tensor3<double> out(batch, len, d), target(batch, len, d), dout;
  for (Index k = 0; k < out.size(); ++k) {
    out.data()[k] = std::normal_distribution<double>()(gen);
    target.data()[k] = std::normal_distribution<double>()(gen);
  }
  (void)relpos::mean_squared_error(out, target, dout);
  Eigen::Map<Matrix<double>> out_flat(out.data(), 1, out.size());
  Matrix<double> param = out_flat,
                 analytic = Eigen::Map<Matrix<double>>(dout.data(), 1, dout.size());
  const auto mse = [&] {
    out_flat = param;
    Tensor3<double> unused;
    return relpos::mean_squared_error(out, target, unused);
  };
  EXPECT_TRUE(matches_finite_differences(param, analytic, mse, "mse output"));
}

// ---------------------------------------------------------------------------------------------
// Properties and errors.

TEST(Grad, ForwardSavingGivesTheForwardsOutput) {
  std::mt19937_64 gen(1504);
  relpos::LayerNorm<float> norm(16, 1e-5);
  relpos::test::fill_normal(norm.weight, gen, 1.0);
  relpos::test::fill_normal(norm.bias, gen, 1.0);
  relpos::FeedForward<float> ffn(16, 24, relpos::Activation::gelu);
  relpos::test::fill_normal(ffn.linear1_weight, gen, 0.3);
  relpos::test::fill_normal(ffn.linear1_bias, gen, 0.3);
  relpos::test::fill_normal(ffn.linear2_weight, gen, 0.3);
  relpos::test::fill_normal(ffn.linear2_bias, gen, 0.3);
  Matrix<float> x(7, 16), a(7, 16), b(7, 16);
  relpos::test::fill_normal(x, gen, 1.0);
  relpos::LayerNormSaved<float> ln_saved;
  norm.forward(x, a);
  relpos::forward_saving(norm, x, b, ln_saved);
  EXPECT_EQ(a, b);  // the same operations in the same order: the same bits
  relpos::SequenceWorkspace<float> ws;
  relpos::FeedForwardSaved<float> ff_saved;
  ffn.forward(x, a, ws);
  relpos::forward_saving(ffn, x, b, ff_saved);
  EXPECT_TRUE(relpos::test::all_close(a, b, 1e-6, 1e-6));
}

TEST(Grad, ParameterGradientsAccumulate) {
  std::mt19937_64 gen(1505);
  relpos::LayerNorm<double> norm(4, 1e-5);
  Matrix<double> x(3, 4), dout(3, 4), out(3, 4), dx(3, 4);
  relpos::test::fill_normal(x, gen, 1.0);
  relpos::test::fill_normal(dout, gen, 1.0);
  relpos::LayerNormSaved<double> saved;
  relpos::LayerNormGrad<double> once, twice;
  relpos::forward_saving(norm, x, out, saved);
  relpos::backward(norm, saved, dout, dx, once);
  relpos::backward(norm, saved, dout, dx, twice);
  relpos::backward(norm, saved, dout, dx, twice);
  EXPECT_TRUE(relpos::test::all_close(twice.weight, 2 * once.weight, 1e-15, 1e-15));
  EXPECT_TRUE(relpos::test::all_close(twice.bias, 2 * once.bias, 1e-15, 1e-15));
  // dx may be dy itself (the documented in-place use)
  Matrix<double> in_place = dout;
  relpos::backward(norm, saved, in_place, in_place, once);
  EXPECT_EQ(in_place, dx);
}

// The README's fragment (Gradients), as it is written there
TEST(Grad, ReadmeFragment) {
  relpos::LayerNorm<float> norm(4, 1e-5);
  Matrix<float> x = Matrix<float>::Random(3, 4), y(3, 4), dy = Matrix<float>::Ones(3, 4), dx(3, 4);
  std::vector<std::string> names;
  relpos::LayerNormSaved<float> saved;
  relpos::forward_saving(norm, x, y, saved);
  relpos::LayerNormGrad<float> grad;
  relpos::backward(norm, saved, dy, dx, grad);
  grad.for_each("layers.0.norm1", [&](const std::string& name, auto&) { names.push_back(name); });
  EXPECT_EQ(names, (std::vector<std::string>{"layers.0.norm1.weight", "layers.0.norm1.bias"}));
  // dy constant along each row: the norm removes the mean, so no gradient reaches x
  EXPECT_LT(dx.cwiseAbs().maxCoeff(), 1e-6f);
  EXPECT_TRUE(grad.bias.isApproxToConstant(3.0f));  // Σ over 3 rows of dy = 1
}

template <class F>
std::string grad_error_of(F&& f) {
  try {
    f();
  } catch (const relpos::Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(GradErrors, CrossEntropyTargets) {
  Tensor3<float> logits(2, 3, 4), d;
  logits.setZero();
  TokenIds t(2, 3);
  t.setConstant(relpos::kIgnoreTarget);
  EXPECT_NE(
      grad_error_of([&] { relpos::cross_entropy(logits, t, d); }).find("no target to learn from"),
      std::string::npos);
  t(0, 0) = 1;
  t(1, 2) = 4;  // vocab_size is 4
  std::string msg = grad_error_of([&] { relpos::cross_entropy(logits, t, d); });
  EXPECT_NE(msg.find("targets[1, 2]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("got 4"), std::string::npos) << msg;
  t(1, 2) = -1;  // negative but not −100
  msg = grad_error_of([&] { relpos::cross_entropy(logits, t, d); });
  EXPECT_NE(msg.find("targets[1, 2]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("got -1"), std::string::npos) << msg;
  const TokenIds wrong(3, 2);
  msg = grad_error_of([&] { relpos::cross_entropy(logits, wrong, d); });
  EXPECT_NE(msg.find("targets: expected [2, 3]"), std::string::npos) << msg;
}

TEST(GradErrors, MseShapeAndEmbeddingIds) {
  Tensor3<double> out(2, 3, 4), target(2, 3, 5), d;
  out.setZero();
  target.setZero();
  std::string msg = grad_error_of([&] { relpos::mean_squared_error(out, target, d); });
  EXPECT_NE(msg.find("target: expected [2, 3, 4]"), std::string::npos) << msg;

  TokenIds ids(1, 3);
  ids << 0, 7, 1;
  Tensor3<double> dout(1, 3, 4);
  dout.setZero();
  relpos::EmbeddingGrad<double> g;
  msg = grad_error_of([&] { relpos::embedding_backward(ids, dout, 5, g); });
  EXPECT_NE(msg.find("input_ids[0, 1]"), std::string::npos) << msg;
  EXPECT_EQ(g.weight.size(), 0);  // nothing added before the check
}

TEST(GradErrors, MisShapedGradientsAndOutputGradients) {
  relpos::FeedForward<double> ffn(4, 6, relpos::Activation::relu);
  Matrix<double> x = Matrix<double>::Ones(3, 4), out(3, 4), dx(3, 4);
  relpos::FeedForwardSaved<double> saved;
  relpos::forward_saving(ffn, x, out, saved);
  relpos::FeedForwardGrad<double> grad;
  grad.linear2_weight = Matrix<double>::Zero(6, 4);  // transposed
  std::string msg = grad_error_of([&] { relpos::backward(ffn, saved, out, dx, grad); });
  EXPECT_NE(msg.find("linear2.weight gradient: expected [4, 6]"), std::string::npos) << msg;
  const Matrix<double> short_dy(2, 4);
  relpos::forward_saving(ffn, x, out, saved);
  msg = grad_error_of([&] { relpos::backward(ffn, saved, short_dy, dx, grad); });
  EXPECT_NE(msg.find("output gradient expected [3, 4]"), std::string::npos) << msg;

  relpos::LayerNorm<double> norm(4, 1e-5);
  relpos::LayerNormSaved<double> ln_saved;
  relpos::LayerNormGrad<double> ln_grad;
  relpos::forward_saving(norm, x, out, ln_saved);
  msg = grad_error_of([&] { relpos::backward(norm, ln_saved, short_dy, dx, ln_grad); });
  EXPECT_NE(msg.find("output gradient expected [3, 4]"), std::string::npos) << msg;
}

}  // namespace
