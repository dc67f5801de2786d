// SPDX-License-Identifier: MIT
// The streaming attention kernel (detail/tiled_attention.hpp) against the naive materialised
// path (tests/support/naive_attention.hpp), at lengths that cross many tiles: every encoding, with
// and without clamping, plain / offset / explicit (indexed and sparse) positions, padding
// (including whole padded key tiles and queries that see nothing) and causal masks. Small tile
// shapes make short sequences cross many tiles; the module's own shape is checked at a length
// that crosses its tiles too, and a long input against float64 on sampled rows.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>

#include <relpos/detail/tiled_attention.hpp>
#include <relpos/encodings/alibi.hpp>
#include <relpos/encodings/deberta.hpp>
#include <relpos/encodings/learned.hpp>
#include <relpos/encodings/rotary.hpp>
#include <relpos/encodings/sinusoidal.hpp>
#include <relpos/encodings/t5.hpp>
#include <relpos/encodings/xl.hpp>
#include <relpos/kv_cache.hpp>
#include <relpos/threads.hpp>
#include "support/naive_attention.hpp"

#include "support/golden.hpp"
#include "support/random.hpp"

namespace {

using relpos::Index;
using relpos::Matrix;
using relpos::MultiHeadAttention;
using relpos::detail::TileShape;

template <class T>
struct TiledTol;
template <>
struct TiledTol<float> {
  // two float paths that sum hundreds of keys in different orders (online softmax, tiles):
  // a few ulps of O(1) outputs; the double runs check the same cases at 1e-12
  static constexpr double naive = 4e-6;
};
template <>
struct TiledTol<double> {
  static constexpr double naive = 1e-12;
};

using relpos::test::fill_normal;

// Random in-projection at the scale of trained weights; out_proj = identity, bias 0, so the
// naive path's output is z itself.
template <class T, class Enc>
MultiHeadAttention<T, Enc> layer(Index d_model, Index n_heads, bool causal, Enc enc,
                                 std::uint64_t seed) {
  MultiHeadAttention<T, Enc> a({d_model, n_heads, causal}, std::move(enc));
  std::mt19937_64 gen(seed);
  fill_normal(a.in_proj_weight, gen, 1.0 / std::sqrt(static_cast<double>(d_model)));
  fill_normal(a.in_proj_bias, gen, 0.1);
  a.out_proj_weight.setIdentity();
  a.out_proj_bias.setZero();
  return a;
}

// The positions and masks of one case.
enum class Ids { plain, offset, repeated, jump, spread };
struct Case {
  const char* what;
  Ids ids;
  bool causal, padded;
};

std::vector<std::int64_t> positions_of(Ids kind, Index len) {
  std::vector<std::int64_t> p(static_cast<std::size_t>(len));
  for (Index i = 0; i < len; ++i) {
    std::int64_t v = i;
    switch (kind) {
      case Ids::plain:
        v = i;
        break;
      case Ids::offset:
        v = 1000 + i;
        break;  // banded with a shift
      case Ids::repeated:
        v = (i * 7) % 23 + i / 3;
        break;  // indexed tiles
      case Ids::jump:
        v = i < len / 2 ? i : 150 + i;
        break;  // some tiles sparse
      case Ids::spread:
        v = (i % 2 == 0) ? i * 3 : 90000 + i;
        break;  // the call is sparse
    }
    p[static_cast<std::size_t>(i)] = v;
  }
  return p;
}

// Keys 16..31 padded (a whole tile of Bk = 16), and every third key; with causal, queries
// 16..31 then see keys 0..15 only, minus the scattered ones.
std::vector<char> padding_of(Index len) {
  std::vector<char> pad(static_cast<std::size_t>(len));
  for (Index j = 0; j < len; ++j)
    pad[static_cast<std::size_t>(j)] = (j >= 16 && j < 32) || j % 3 == 2;
  return pad;
}

template <class T, class Enc>
void expect_kernel_matches_naive(const std::string& what, const Enc& enc, Index d_model,
                                 Index n_heads, Index len, TileShape shape, std::uint64_t seed) {
  const Case cases[] = {
      {"plain", Ids::plain, false, false},          {"plain causal", Ids::plain, true, false},
      {"plain padded", Ids::plain, false, true},    {"causal padded", Ids::plain, true, true},
      {"offset ids", Ids::offset, false, false},    {"offset ids causal", Ids::offset, true, true},
      {"repeated ids", Ids::repeated, false, true}, {"jump ids", Ids::jump, true, false},
      {"spread ids", Ids::spread, false, true},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(what + ", " + c.what + ", len " + std::to_string(len) + ", tiles " +
                 std::to_string(shape.queries) + "x" + std::to_string(shape.keys));
    const auto attn = layer<T>(d_model, n_heads, c.causal, enc, seed++);
    Matrix<T> x(len, d_model);
    std::mt19937_64 gen(seed++);
    fill_normal(x, gen, 1.0);
    const std::vector<std::int64_t> ids = positions_of(c.ids, len);
    const std::vector<char> pad_chars = padding_of(len);
    std::unique_ptr<bool[]> pad(new bool[static_cast<std::size_t>(len)]);
    for (Index j = 0; j < len; ++j)
      pad[static_cast<std::size_t>(j)] = pad_chars[static_cast<std::size_t>(j)] != 0;
    relpos::SequenceInputs in;
    in.positions.len = len;
    in.positions.call_length = len;
    if (c.ids != Ids::plain) {
      in.positions.ids = ids.data();
      in.positions.call_length = *std::max_element(ids.begin(), ids.end()) + 1;
    }
    if (c.padded) in.key_padding = pad.get();
    const Matrix<T> want = relpos::test::naive_attention<T>(attn, x, in);

    const Index d = d_model;
    Matrix<T> qkv = x * attn.in_proj_weight.transpose();
    qkv.rowwise() += attn.in_proj_bias.transpose();
    if constexpr (relpos::TransformsQK<Enc>) {
      relpos::MatrixRef<T> q(qkv.leftCols(d));
      relpos::MatrixRef<T> k(qkv.middleCols(d, d));
      attn.encoding.transform_qk(q, k, in.positions, n_heads);
    }
    Matrix<T> z(len, d);
    relpos::AttentionScratch<T> scratch;
    const relpos::detail::AttentionGeometry g{.queries = in.positions,
                                              .keys = in.positions,
                                              .causal = c.causal,
                                              .causal_offset = 0,
                                              .key_padding = in.key_padding};
    relpos::detail::TiledAttention<T, Enc>(attn.encoding, n_heads, d / n_heads, shape)
        .run(qkv.leftCols(d), qkv.middleCols(d, d), qkv.rightCols(d), g, z, scratch);
    EXPECT_TRUE(relpos::test::all_close(z, want, TiledTol<T>::naive));
    EXPECT_TRUE(z.allFinite());
  }
}

constexpr Index kTiledDModel = 16, kTiledHeads = 2, kTiledDHead = 8;

template <class T>
std::vector<std::pair<std::string, std::function<void(Index, TileShape)>>> all_encodings() {
  using Fn = std::function<void(Index, TileShape)>;
  std::vector<std::pair<std::string, Fn>> v;
  auto add = [&](std::string name, auto enc) {
    v.emplace_back(name, [name, enc](Index len, TileShape shape) {
      expect_kernel_matches_naive<T>(name, enc, kTiledDModel, kTiledHeads, len, shape, 40);
    });
  };
  add("none", relpos::NoPosition<T>());
  add("learned K=5", relpos::LearnedRelative<T>::random(kTiledDHead, {5, true, true, ""}, 3, 0.5));
  add("learned K=200 keys",
      relpos::LearnedRelative<T>::random(kTiledDHead, {200, true, false, ""}, 4, 0.5));
  add("sinusoidal unclamped k+v",
      relpos::SinusoidalRelative<T>(kTiledDHead, {100.0, std::nullopt, true, true}));
  add("sinusoidal K=4 values",
      relpos::SinusoidalRelative<T>(kTiledDHead, {100.0, Index(4), false, true}));
  add("rotary", relpos::Rotary<T>(kTiledDHead, {100.0, std::nullopt, false}));
  {
    std::mt19937_64 gen(5);
    Matrix<T> table(8, kTiledHeads);
    fill_normal(table, gen, 1.0);
    add("t5", relpos::T5Bias<T>(kTiledHeads, {8, 20, true}, relpos::share(std::move(table))));
  }
  add("alibi", relpos::AlibiBias<T>(kTiledHeads, {4.0}));
  std::mt19937_64 gen(6);
  auto u = std::make_shared<Matrix<T>>(kTiledHeads, kTiledDHead);
  auto vb = std::make_shared<Matrix<T>>(kTiledHeads, kTiledDHead);
  fill_normal(*u, gen, 0.5);
  fill_normal(*vb, gen, 0.5);
  Matrix<T> r_net(kTiledDModel, kTiledDModel);
  fill_normal(r_net, gen, 1.0 / std::sqrt(double(kTiledDModel)));
  add("xl K=6",
      relpos::XlRelative<T>(kTiledDModel, kTiledHeads, {100.0, Index(6), ""}, r_net, u, vb));
  add("xl unclamped",
      relpos::XlRelative<T>(kTiledDModel, kTiledHeads, {100.0, std::nullopt, ""}, r_net, u, vb));
  // deberta: S = 8 (log buckets from |δ| > 4, the edge rows beyond 19): indexed tiles and
  // sparse ones; S = 200 keeps δ within ±100 linear, so plain ids take the banded path
  Matrix<T> rel(2 * 200, kTiledDModel);
  fill_normal(rel, gen, 1.0);
  using Deberta = relpos::DebertaRelative<T>;
  typename Deberta::Projection pk, pq;
  pk.weight.resize(kTiledDModel, kTiledDModel);
  pq.weight.resize(kTiledDModel, kTiledDModel);
  pk.bias.resize(kTiledDModel);
  fill_normal(pk.weight, gen, 1.0 / std::sqrt(double(kTiledDModel)));
  fill_normal(pq.weight, gen, 1.0 / std::sqrt(double(kTiledDModel)));
  fill_normal(pk.bias, gen, 0.1);
  const auto deberta = [&](Index s, Index m, bool c2p, bool p2c) {
    return Deberta(kTiledDModel, kTiledHeads, {s, m, c2p, p2c, false, false}, rel.topRows(2 * s),
                   pk, pq);
  };
  add("deberta S=8 M=20", deberta(8, 20, true, true));
  add("deberta S=8 M=20 c2p", deberta(8, 20, true, false));
  add("deberta S=8 M=20 p2c", deberta(8, 20, false, true));
  add("deberta S=200 M=512", deberta(200, 512, true, true));
  return v;
}

template <class T>
class TiledTyped : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(TiledTyped, Scalars);

TYPED_TEST(TiledTyped, EveryEncodingAcrossManyTilesEqualsTheNaivePath) {
  // 8 × 16 tiles: len 70 crosses 9 query tiles and 5 key tiles, the last ones partial
  for (const auto& [name, check] : all_encodings<TypeParam>()) {
    check(70, TileShape{8, 16});
    check(33, TileShape{5, 16});  // queries not a multiple of the tile
  }
}

// A call whose rows would exceed TileShape::row_scalars takes its keys in chunks of whole key
// tiles, the softmax state kept between them (xl's d_model-wide rows at 65536 tokens). 400
// scalars make chunks of one 16-key tile for every encoding with 16-wide rows (learned k+v,
// sinusoidal k+v, xl, deberta) past 25 distances; t5's and alibi's biases fetch no rows and
// sinusoidal K=4's 8-wide values for 9 distances fit, so those stay in one pass.
TYPED_TEST(TiledTyped, KeysInChunksEqualTheNaivePath) {
  for (const auto& [name, check] : all_encodings<TypeParam>()) {
    check(70, TileShape{8, 16, 400});
    check(33, TileShape{5, 16, 600});
  }
}

// The chunks' sums are the one pass's, bit for bit: the same key tiles in the same order.
TYPED_TEST(TiledTyped, KeysInChunksGiveTheOnePassBits) {
  using T = TypeParam;
  const Index len = 70, d = kTiledDModel;
  std::mt19937_64 gen(8);
  auto u = std::make_shared<Matrix<T>>(kTiledHeads, kTiledDHead);
  auto vb = std::make_shared<Matrix<T>>(kTiledHeads, kTiledDHead);
  fill_normal(*u, gen, 0.5);
  fill_normal(*vb, gen, 0.5);
  Matrix<T> r_net(d, d);
  fill_normal(r_net, gen, 0.25);
  const auto check = [&](const auto& enc, bool causal, const bool* pad) {
    using Enc = std::decay_t<decltype(enc)>;
    Matrix<T> qkv(len, 3 * d);
    fill_normal(qkv, gen, 1.0);
    const relpos::Positions p{len, nullptr, len};
    const relpos::detail::AttentionGeometry g{
        .queries = p, .keys = p, .causal = causal, .key_padding = pad};
    Matrix<T> one(len, d), chunked(len, d);
    relpos::AttentionScratch<T> scratch;
    relpos::detail::TiledAttention<T, Enc>(enc, kTiledHeads, kTiledDHead, {8, 16})
        .run(qkv.leftCols(d), qkv.middleCols(d, d), qkv.rightCols(d), g, one, scratch);
    relpos::detail::TiledAttention<T, Enc>(enc, kTiledHeads, kTiledDHead, {8, 16, 400})
        .run(qkv.leftCols(d), qkv.middleCols(d, d), qkv.rightCols(d), g, chunked, scratch);
    EXPECT_TRUE(one == chunked);
    EXPECT_TRUE(one.allFinite());
  };
  std::unique_ptr<bool[]> pad(new bool[len]);
  const std::vector<char> pad_chars = padding_of(len);
  for (Index j = 0; j < len; ++j) pad[static_cast<std::size_t>(j)] = pad_chars[std::size_t(j)];
  for (const bool causal : {false, true}) {
    for (const bool* padding :
         {static_cast<const bool*>(nullptr), static_cast<const bool*>(pad.get())}) {
      SCOPED_TRACE(std::string(causal ? "causal" : "bidirectional") +
                   (padding != nullptr ? ", padded" : ""));
      check(relpos::LearnedRelative<T>::random(kTiledDHead, {5, true, true, ""}, 3, 0.5), causal,
            padding);
      check(relpos::XlRelative<T>(d, kTiledHeads, {100.0, std::nullopt, ""}, r_net, u, vb), causal,
            padding);
    }
  }
}

// deberta's p2c term runs per block of 64 keys of a tile (add_head_query_term): key tiles of
// 80 and 160 keys make blocks of 64 + 16 and 64 + 64 + 32, on the banded path (S = 200 at len
// 90: every |δ| within S/2), the contiguous lookup (len 300: log buckets) and explicit ids.
TYPED_TEST(TiledTyped, DebertaKeyTilesWiderThanOneKeyBlockEqualTheNaivePath) {
  for (const auto& [name, check] : all_encodings<TypeParam>()) {
    if (name.rfind("deberta", 0) != 0) continue;
    check(90, TileShape{16, 80});
    check(300, TileShape{32, 160});
  }
}

// The module itself, with its own tile shape, at a length crossing several key tiles.
TYPED_TEST(TiledTyped, ModuleAtItsTileShapeEqualsTheNaivePath) {
  using T = TypeParam;
  const Index d_model = 128, n_heads = 2, len = 600;  // d_head 64: Bk = 256 (float), 128
  const TileShape shape = relpos::detail::tile_shape<T>(d_model / n_heads);
  ASSERT_LT(2 * shape.keys, len);
  std::mt19937_64 gen(3);
  auto learned = relpos::LearnedRelative<T>::random(64, {64, true, true, ""}, 9, 0.5);
  for (const bool causal : {false, true}) {
    SCOPED_TRACE(causal ? "causal" : "bidirectional");
    auto attn = layer<T>(d_model, n_heads, causal, learned, 77);
    fill_normal(attn.out_proj_weight, gen, 0.1);
    fill_normal(attn.out_proj_bias, gen, 0.1);
    relpos::Tensor3<T> x(1, len, d_model);
    for (Index i = 0; i < x.size(); ++i) x.data()[i] = static_cast<T>(std::sin(0.37 * double(i)));
    relpos::PaddingMask pad = relpos::PaddingMask::Zero(1, len);
    for (Index j = 300; j < len; j += 7) pad(0, j) = true;
    const relpos::BatchInputs in{pad, nullptr};
    EXPECT_TRUE(relpos::test::all_close(
        attn.forward(x, in), relpos::test::naive_attention(attn, x, in), TiledTol<T>::naive));
  }
}

// A query with no visible key gets z = 0 (spec §2), in every tile path.
TYPED_TEST(TiledTyped, QueriesThatSeeNothingGetZero) {
  using T = TypeParam;
  const auto attn =
      layer<T>(kTiledDModel, kTiledHeads, false,
               relpos::LearnedRelative<T>::random(kTiledDHead, {3, true, true, ""}, 1, 0.5), 5);
  const Index len = 40;
  Matrix<T> x(len, kTiledDModel);
  std::mt19937_64 gen(2);
  fill_normal(x, gen, 1.0);
  Matrix<T> qkv = x * attn.in_proj_weight.transpose();
  std::unique_ptr<bool[]> pad(new bool[len]);
  for (Index j = 0; j < len; ++j) pad[static_cast<std::size_t>(j)] = true;
  Matrix<T> z = Matrix<T>::Constant(len, kTiledDModel, T(7));
  relpos::AttentionScratch<T> scratch;
  const relpos::Positions p{len, nullptr, len};
  relpos::detail::TiledAttention<T, decltype(attn.encoding)>(attn.encoding, kTiledHeads,
                                                             kTiledDHead, {8, 16})
      .run(qkv.leftCols(kTiledDModel), qkv.middleCols(kTiledDModel, kTiledDModel),
           qkv.rightCols(kTiledDModel), {.queries = p, .keys = p, .key_padding = pad.get()}, z,
           scratch);
  EXPECT_TRUE((z.array() == T(0)).all());
}

// Tasks are (head, query tile): every thread count gives the same bits.
TEST(Tiled, ThreadCountsGiveBitIdenticalResults) {
  const Index d_model = 64, n_heads = 4, len = 300;
  auto attn =
      layer<float>(d_model, n_heads, true,
                   relpos::LearnedRelative<float>::random(16, {8, true, true, ""}, 2, 0.5), 3);
  relpos::Tensor3<float> x(1, len, d_model);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = std::cos(0.11f * float(i));
  relpos::set_num_threads(1);
  const relpos::Tensor3<float> one = attn.forward(x);
  for (const int threads : {2, 3, 5}) {
    relpos::set_num_threads(threads);
    const relpos::Tensor3<float> many = attn.forward(x);
    EXPECT_TRUE(std::equal(one.data(), one.data() + one.size(), many.data())) << threads;
  }
  relpos::set_num_threads(1);
}

// A long input (one layer, small width, several thousand tokens, many tiles of the module's
// shape): the float forward equals, on sampled rows, a float64 computation of those rows
// written out here (q, k, v in double, then the scores of spec §3 over every key).
TEST(Tiled, LongInputMatchesFloat64OnSampledRows) {
  const Index d_model = 32, n_heads = 2, dh = 16, len = 5000, big_k = 64;
  auto attn =
      layer<float>(d_model, n_heads, false,
                   relpos::LearnedRelative<float>::random(dh, {big_k, true, true, ""}, 8, 0.5), 12);
  std::mt19937_64 gen(13);
  fill_normal(attn.out_proj_weight, gen, 0.2);
  relpos::Tensor3<float> x(1, len, d_model);
  for (Index i = 0; i < x.size(); ++i) {
    x.data()[i] = static_cast<float>(std::sin(0.013 * double(i)) + std::cos(0.7 * double(i)));
  }
  const relpos::Tensor3<float> y = attn.forward(x);

  const Eigen::MatrixXd xd = relpos::item(x, 0).cast<double>();
  Eigen::MatrixXd qkv = xd * attn.in_proj_weight.cast<double>().transpose();
  qkv.rowwise() += attn.in_proj_bias.cast<double>().transpose();
  const Eigen::MatrixXd a_k = attn.encoding.key_table().snapshot()->cast<double>();    // row c + K
  const Eigen::MatrixXd a_v = attn.encoding.value_table().snapshot()->cast<double>();  // row c + K
  for (const Index i :
       {Index(0), Index(1), Index(63), Index(64), Index(2500), Index(4095), Index(4999)}) {
    Eigen::RowVectorXd z(d_model);
    for (Index h = 0; h < n_heads; ++h) {
      const auto q = qkv.row(i).segment(h * dh, dh);
      Eigen::VectorXd e(len);
      for (Index j = 0; j < len; ++j) {
        const Index c = std::clamp<Index>(j - i, -big_k, big_k) + big_k;
        e(j) = q.dot(qkv.row(j).segment(d_model + h * dh, dh) + a_k.row(c)) / std::sqrt(double(dh));
      }
      e = (e.array() - e.maxCoeff()).exp();
      e /= e.sum();
      Eigen::RowVectorXd zh = Eigen::RowVectorXd::Zero(dh);
      for (Index j = 0; j < len; ++j) {
        const Index c = std::clamp<Index>(j - i, -big_k, big_k) + big_k;
        zh += e(j) * (qkv.row(j).segment(2 * d_model + h * dh, dh) + a_v.row(c));
      }
      z.segment(h * dh, dh) = zh;
    }
    const Eigen::RowVectorXd want = z * attn.out_proj_weight.cast<double>().transpose() +
                                    attn.out_proj_bias.cast<double>().transpose();
    for (Index c = 0; c < d_model; ++c) {
      EXPECT_NEAR(y(0, i, c), want(c), 1e-5) << "row " << i << " col " << c;
    }
  }
}

// Cached decoding is the same kernel with the chunk as queries and the cache as keys, so
// position ids spread far apart (the sparse tile path; the old hand-written cached attention
// refused them) decode to what one causal forward with those ids gives.
TYPED_TEST(TiledTyped, DecodingWithWidelySpreadIdsEqualsTheCausalForward) {
  using T = TypeParam;
  const Index len = 12;
  relpos::Encoder<T, relpos::SinusoidalRelative<T>> e;
  e.config.d_model = kTiledDModel;
  e.config.n_heads = kTiledHeads;
  e.config.n_layers = 1;
  e.config.d_ff = 24;
  e.config.causal = true;
  relpos::Block<T, relpos::SinusoidalRelative<T>> b(
      e.config.block(),
      relpos::SinusoidalRelative<T>(kTiledDHead, {100.0, std::nullopt, true, true}));
  std::mt19937_64 gen(21);
  fill_normal(b.self_attn.in_proj_weight, gen, 0.25);
  fill_normal(b.self_attn.out_proj_weight, gen, 0.25);
  fill_normal(b.ffn.linear1_weight, gen, 0.25);
  fill_normal(b.ffn.linear2_weight, gen, 0.2);
  e.layers.push_back(std::move(b));

  relpos::Tensor3<T> x(1, len, kTiledDModel);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = static_cast<T>(std::sin(0.3 * double(i)));
  relpos::PositionIds ids(1, len);
  ids << 0, 100000, 3, 50000, 4, 99999, 7, 250000, 8, 1, 180000, 2;
  const relpos::Tensor3<T> full = e.forward(x, relpos::BatchInputs{nullptr, ids});

  for (const Index chunk : {Index(1), Index(5)}) {
    SCOPED_TRACE("chunk " + std::to_string(chunk));
    relpos::Decoder<T, relpos::SinusoidalRelative<T>> dec(e, len);
    Matrix<T> got(len, kTiledDModel);
    for (Index i = 0; i < len; i += chunk) {
      const Index n = std::min(chunk, len - i);
      dec.forward(relpos::item(x, 0).middleRows(i, n), got.middleRows(i, n),
                  std::span<const std::int64_t>(ids.data() + i, static_cast<std::size_t>(n)));
    }
    EXPECT_TRUE(relpos::test::all_close(got, relpos::item(full, 0), TiledTol<T>::naive));
  }
}

}  // namespace
