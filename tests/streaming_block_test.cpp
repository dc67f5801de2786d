// SPDX-License-Identifier: MIT
// The block forward that holds only k | v at full length (issue 14's memory targets): the
// residual adds inside the out-projection's and linear2's products, in place on x, and q made
// a block of MultiHeadAttention::kQueryRows rows at a time. Checked against the code it
// replaced, written out here: q | k | v for the whole sequence, one kernel call over every
// query, the branch (len, d_model) added to x afterwards. Every encoding, at lengths of
// several query blocks, plain, causal, padded and explicit ids, post- and pre-norm; the
// explicit weights (Model::attention_weights' path) per block; bit-identical results for one
// and two threads.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include <relpos/block.hpp>
#include <relpos/detail/tiled_attention.hpp>
#include <relpos/encoder.hpp>
#include <relpos/encodings/absolute.hpp>
#include <relpos/encodings/alibi.hpp>
#include <relpos/encodings/deberta.hpp>
#include <relpos/encodings/kerple.hpp>
#include <relpos/encodings/learned.hpp>
#include <relpos/encodings/rotary.hpp>
#include <relpos/encodings/sinusoidal.hpp>
#include <relpos/encodings/t5.hpp>
#include <relpos/encodings/xl.hpp>
#include <relpos/threads.hpp>

#include "support/golden.hpp"
#include "support/random.hpp"

// its own namespace: the layers group is one unity translation unit with other tests' names
namespace streaming_block {
namespace {

using relpos::Index;
using relpos::Matrix;
using relpos::test::fill_normal;

constexpr Index kDModel = 16, kHeads = 2, kDHead = 8, kDff = 32;
// two query blocks, the second one partial (blocks after it add no new case, only time)
constexpr Index kLen = relpos::MultiHeadAttention<float>::kQueryRows + 600;

template <class T>
constexpr double kTol = std::is_same_v<T, float> ? 1e-5 : 1e-12;

// The attention before the streaming block (attention.hpp at dbcd3d9): q | k | v of every
// token, rotary on q and k, one kernel call with every query, then the out-projection.
// weights: null, or receives the (len, len) weights per head.
template <class T, class Enc>
Matrix<T> old_attention(const relpos::MultiHeadAttention<T, Enc>& attn, const Matrix<T>& x,
                        const relpos::SequenceInputs& in,
                        std::vector<Matrix<T>>* weights = nullptr) {
  const Index d = attn.d_model(), len = x.rows();
  Matrix<T> qkv = x * attn.in_proj_weight.transpose();  // (len, 3 d_model)
  qkv.rowwise() += attn.in_proj_bias.transpose();
  if constexpr (relpos::TransformsQK<Enc>) {
    relpos::MatrixRef<T> q(qkv.leftCols(d));
    relpos::MatrixRef<T> k(qkv.middleCols(d, d));
    attn.encoding.transform_qk(q, k, in.positions, attn.n_heads());
  }
  Matrix<T> z(len, d);  // (len, d_model)
  relpos::AttentionScratch<T> scratch;
  const relpos::detail::AttentionGeometry g{.queries = in.positions,
                                            .keys = in.positions,
                                            .causal = attn.config.causal,
                                            .causal_offset = 0,
                                            .key_padding = in.key_padding};
  relpos::detail::TiledAttention<T, Enc>(attn.encoding, attn.n_heads(), attn.d_head())
      .run(qkv.leftCols(d), qkv.middleCols(d, d), qkv.rightCols(d), g, z, scratch, weights);
  Matrix<T> out = z * attn.out_proj_weight.transpose();
  out.rowwise() += attn.out_proj_bias.transpose();
  return out;
}

// The block before the streaming one: branches of (len, d_model) added to x.
template <class T, class Enc>
Matrix<T> old_block(const relpos::Block<T, Enc>& b, Matrix<T> x, const relpos::SequenceInputs& in) {
  relpos::SequenceWorkspace<T> ws;
  Matrix<T> branch(x.rows(), x.cols());
  if (b.norm_first) {
    Matrix<T> normed(x.rows(), x.cols());
    b.norm1.forward(x, normed);
    x += old_attention(b.self_attn, normed, in);
    b.norm2.forward(x, normed);
    b.ffn.forward(normed, branch, ws);
    x += branch;
  } else {
    x += old_attention(b.self_attn, x, in);
    b.norm1.forward(x, x);
    b.ffn.forward(x, branch, ws);
    x += branch;
    b.norm2.forward(x, x);
  }
  return x;
}

template <class T, class Enc>
relpos::Block<T, Enc> random_block(const Enc& enc, bool norm_first, bool causal,
                                   std::uint64_t seed) {
  relpos::BlockConfig cfg;
  cfg.d_model = kDModel;
  cfg.n_heads = kHeads;
  cfg.d_ff = kDff;
  cfg.norm_first = norm_first;
  cfg.causal = causal;
  cfg.activation = relpos::Activation::gelu;
  relpos::Block<T, Enc> b(cfg, enc);
  std::mt19937_64 gen(seed);
  const double s = 1.0 / std::sqrt(double(kDModel));
  fill_normal(b.self_attn.in_proj_weight, gen, s);
  fill_normal(b.self_attn.in_proj_bias, gen, 0.1);
  fill_normal(b.self_attn.out_proj_weight, gen, s);
  fill_normal(b.self_attn.out_proj_bias, gen, 0.1);
  fill_normal(b.ffn.linear1_weight, gen, s);
  fill_normal(b.ffn.linear1_bias, gen, 0.1);
  fill_normal(b.ffn.linear2_weight, gen, 1.0 / std::sqrt(double(kDff)));
  fill_normal(b.ffn.linear2_bias, gen, 0.1);
  for (auto* n : {&b.norm1, &b.norm2}) {
    fill_normal(n->weight, gen, 0.1);
    n->weight.array() += T(1);
    fill_normal(n->bias, gen, 0.1);
  }
  return b;
}

enum class Ids { plain, offset, repeated };
struct Case {
  const char* what;
  bool norm_first, causal, padded;
  Ids ids;
};
constexpr Case kCases[] = {
    {"post-norm", false, false, false, Ids::plain},
    {"post-norm causal padded", false, true, true, Ids::plain},
    {"pre-norm causal", true, true, false, Ids::plain},
    {"post-norm offset ids causal", false, true, false, Ids::offset},
    {"pre-norm repeated ids padded", true, false, true, Ids::repeated},
};

// The positions, padding and input of one case; they outlive the SequenceInputs made of them.
struct Inputs {
  std::vector<std::int64_t> ids;
  std::unique_ptr<bool[]> pad;
  relpos::SequenceInputs in;

  Inputs(const Case& c, Index len) : ids(static_cast<std::size_t>(len)), pad(new bool[len]) {
    for (Index i = 0; i < len; ++i) {
      ids[static_cast<std::size_t>(i)] = c.ids == Ids::offset ? 700 + i : (i * 7) % 23 + i / 3;
      // a whole tile of keys padded in the second block, and every fifth key
      pad[static_cast<std::size_t>(i)] = (i >= 1100 && i < 1400) || i % 5 == 3;
    }
    in.positions.len = len;
    in.positions.call_length = len;
    if (c.ids != Ids::plain) {
      in.positions.ids = ids.data();
      in.positions.call_length = *std::max_element(ids.begin(), ids.end()) + 1;
    }
    if (c.padded) in.key_padding = pad.get();
  }
};

template <class T, class Enc>
void expect_in_place_equals_old(const std::string& name, const Enc& enc) {
  std::uint64_t seed = 100;
  for (const Case& c : kCases) {
    if (c.ids != Ids::plain && !relpos::takes_position_ids<Enc>) continue;
    SCOPED_TRACE(name + ", " + c.what);
    const auto block = random_block<T>(enc, c.norm_first, c.causal, seed++);
    Matrix<T> x(kLen, kDModel);
    std::mt19937_64 gen(seed++);
    fill_normal(x, gen, 1.0);
    const Inputs inputs(c, kLen);
    const Matrix<T> want = old_block(block, x, inputs.in);
    relpos::SequenceWorkspace<T> ws;
    block.forward_layer(x, inputs.in, ws);  // in place
    EXPECT_TRUE(relpos::test::all_close(x, want, kTol<T>));
    EXPECT_TRUE(x.allFinite());
  }
}

template <class T>
std::vector<std::pair<std::string, std::function<void()>>> every_encoding() {
  std::vector<std::pair<std::string, std::function<void()>>> v;
  auto add = [&](std::string name, auto enc) {
    v.emplace_back(name, [name, enc] { expect_in_place_equals_old<T>(name, enc); });
  };
  add("none", relpos::NoPosition<T>());
  add("learned K=5 k+v", relpos::LearnedRelative<T>::random(kDHead, {5, true, true, ""}, 3, 0.5));
  add("sinusoidal unclamped k+v",
      relpos::SinusoidalRelative<T>(kDHead, {100.0, std::nullopt, true, true}));
  add("rotary", relpos::Rotary<T>(kDHead, {100.0, std::nullopt, false}));
  std::mt19937_64 gen(5);
  Matrix<T> table(8, kHeads);
  fill_normal(table, gen, 1.0);
  add("t5", relpos::T5Bias<T>(kHeads, {8, 20, true}, relpos::share(table)));
  add("alibi", relpos::AlibiBias<T>(kHeads, {4.0}));
  Matrix<T> r1(kHeads, 1), r2(kHeads, 1);
  r1 << T(0.7), T(1.3);
  r2 << T(0.4), T(1.1);
  add("kerple log", relpos::KerpleBias<T>(kHeads, {relpos::KerpleForm::log}, relpos::share(r1),
                                          relpos::share(r2)));
  auto u = std::make_shared<Matrix<T>>(kHeads, kDHead);
  auto vb = std::make_shared<Matrix<T>>(kHeads, kDHead);
  fill_normal(*u, gen, 0.5);
  fill_normal(*vb, gen, 0.5);
  Matrix<T> r_net(kDModel, kDModel);
  fill_normal(r_net, gen, 1.0 / std::sqrt(double(kDModel)));
  add("xl unclamped",
      relpos::XlRelative<T>(kDModel, kHeads, {100.0, std::nullopt, ""}, r_net, u, vb));
  add("xl K=6", relpos::XlRelative<T>(kDModel, kHeads, {100.0, Index(6), ""}, r_net, u, vb));
  // deberta (c2p and p2c): S = 8, log buckets, the contiguous lookup and indexed tiles
  Matrix<T> rel(2 * 8, kDModel);
  fill_normal(rel, gen, 1.0);
  using Deberta = relpos::DebertaRelative<T>;
  typename Deberta::Projection pk, pq;
  pk.weight.resize(kDModel, kDModel);
  pq.weight.resize(kDModel, kDModel);
  pk.bias.resize(kDModel);
  fill_normal(pk.weight, gen, 1.0 / std::sqrt(double(kDModel)));
  fill_normal(pq.weight, gen, 1.0 / std::sqrt(double(kDModel)));
  fill_normal(pk.bias, gen, 0.1);
  add("deberta S=8 M=20", Deberta(kDModel, kHeads, {8, 20, true, true, false, false}, rel, pk, pq));
  return v;
}

template <class T>
class StreamingBlock : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(StreamingBlock, Scalars);

TYPED_TEST(StreamingBlock, InPlaceForwardEqualsTheBranchBlockForEveryEncoding) {
  for (const auto& [name, check] : every_encoding<TypeParam>()) check();
}

// The out-of-place forms users call (attention's and the feed-forward's forward(x, out))
// give the old results too, and forward_add adds exactly them.
TYPED_TEST(StreamingBlock, OutOfPlaceAndAddFormsAgree) {
  using T = TypeParam;
  const auto block = random_block<T>(
      relpos::LearnedRelative<T>::random(kDHead, {5, true, true, ""}, 3, 0.5), false, true, 9);
  Matrix<T> x(kLen, kDModel);
  std::mt19937_64 gen(10);
  fill_normal(x, gen, 1.0);
  const Inputs inputs(kCases[1], kLen);
  relpos::SequenceWorkspace<T> ws;
  Matrix<T> out(kLen, kDModel);
  block.self_attn.forward(x, out, inputs.in, ws);
  EXPECT_TRUE(relpos::test::all_close(out, old_attention(block.self_attn, x, inputs.in), kTol<T>));
  Matrix<T> sum = x;
  block.self_attn.forward_add(x, sum, inputs.in, ws);
  EXPECT_TRUE(relpos::test::all_close(sum, x + out, kTol<T>));
  block.ffn.forward(x, out, ws);
  sum = x;
  block.ffn.forward_add(sum, sum, ws);  // in place
  EXPECT_TRUE(relpos::test::all_close(sum, x + out, kTol<T>));
}

// SequenceWorkspace::attention_record (Model::attention_weights): each query block writes
// its rows of the (len, len) weights.
TYPED_TEST(StreamingBlock, RecordedWeightsEqualTheOneCallWeights) {
  using T = TypeParam;
  const Case c = kCases[1];  // causal, padded
  const auto block = random_block<T>(relpos::AlibiBias<T>(kHeads, {4.0}), false, c.causal, 11);
  Matrix<T> x(kLen, kDModel);
  std::mt19937_64 gen(12);
  fill_normal(x, gen, 1.0);
  const Inputs inputs(c, kLen);
  std::vector<Matrix<T>> want(kHeads, Matrix<T>(kLen, kLen));
  old_attention(block.self_attn, x, inputs.in, &want);
  std::vector<std::vector<Matrix<T>>> record;
  relpos::SequenceWorkspace<T> ws;
  ws.attention_record = &record;
  Matrix<T> out(kLen, kDModel);
  block.self_attn.forward(x, out, inputs.in, ws);
  ASSERT_EQ(record.size(), 1u);
  ASSERT_EQ(record[0].size(), std::size_t(kHeads));
  for (Index h = 0; h < kHeads; ++h) {
    EXPECT_TRUE(relpos::test::all_close(record[0][std::size_t(h)], want[std::size_t(h)], kTol<T>));
  }
}

// Tasks inside a block are (head, query tile), and the blocks run one after the other: one and
// two threads give the same bits.
TEST(StreamingBlockThreads, OneAndTwoThreadsGiveBitIdenticalResults) {
  auto check = [](const std::string& name, const auto& enc) {
    SCOPED_TRACE(name);
    const auto block = random_block<float>(enc, false, true, 21);
    Matrix<float> x(kLen, kDModel);
    std::mt19937_64 gen(22);
    fill_normal(x, gen, 1.0);
    const Inputs inputs(kCases[1], kLen);
    Matrix<float> one = x, two = x;
    relpos::SequenceWorkspace<float> ws;
    relpos::set_num_threads(1);
    block.forward_layer(one, inputs.in, ws);
    relpos::set_num_threads(2);
    block.forward_layer(two, inputs.in, ws);
    relpos::set_num_threads(1);
    EXPECT_TRUE(std::equal(one.data(), one.data() + one.size(), two.data()));
  };
  check("learned", relpos::LearnedRelative<float>::random(kDHead, {5, true, true, ""}, 3, 0.5));
  check("rotary", relpos::Rotary<float>(kDHead, {100.0, std::nullopt, false}));
  check("alibi", relpos::AlibiBias<float>(kHeads, {4.0}));
}

// The encoder's in-place form (relpos-encode's, through Model::forward(Tensor3&&)): the same
// bits as the form that copies its input, over two layers, a batch of two with padding and an
// absolute input encoding (added in place too).
TEST(StreamingEncoder, InPlaceForwardEqualsTheCopyingForward) {
  relpos::EncoderConfig cfg;
  cfg.d_model = kDModel;
  cfg.n_heads = kHeads;
  cfg.n_layers = 2;
  cfg.d_ff = kDff;
  cfg.final_norm = true;
  cfg.activation = relpos::Activation::gelu;  // random_block's
  relpos::Encoder<float, relpos::AbsoluteSinusoidal<float>> encoder(
      cfg, [](Index) { return relpos::AbsoluteSinusoidal<float>(kDModel); });
  std::mt19937_64 gen(31);
  for (auto& layer : encoder.layers) {
    const auto b =
        random_block<float>(relpos::AbsoluteSinusoidal<float>(kDModel), false, false, gen());
    layer.self_attn = b.self_attn;
    layer.ffn = b.ffn;
    layer.norm1 = b.norm1;
    layer.norm2 = b.norm2;
  }
  const Index len = relpos::MultiHeadAttention<float>::kQueryRows + 40;
  relpos::Tensor3<float> x(2, len, kDModel);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = std::sin(0.7f * float(i));
  relpos::PaddingMask pad = relpos::PaddingMask::Zero(2, len);
  for (Index j = len - 30; j < len; ++j) pad(1, j) = true;
  const relpos::BatchInputs in{pad, nullptr};
  const relpos::Tensor3<float> copied = encoder.forward(x, in);
  relpos::Tensor3<float> given = x;
  const float* memory = given.data();
  const relpos::Tensor3<float> in_place = encoder.forward(std::move(given), in);
  EXPECT_EQ(in_place.data(), memory);  // the input's own memory, no copy
  ASSERT_EQ(in_place.dimensions(), copied.dimensions());
  EXPECT_TRUE(std::equal(copied.data(), copied.data() + copied.size(), in_place.data()));
}

}  // namespace
}  // namespace streaming_block
