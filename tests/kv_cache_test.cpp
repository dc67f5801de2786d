// Tests for include/relpos/kv_cache.hpp: decoding token by token and in chunks of 3 equals one
// causal forward over the whole sequence (every encoding attention supports here, float and
// double, a batch of sequences of different lengths), left padding with position ids equals
// the unpadded row alone, golden PyTorch outputs (tools/reference.py, causal, left padded,
// position ids not 0..len−1) decoded token by token, re-rotating cached rotary keys (δ1 then
// δ2 == δ1 + δ2 == keys computed at the new positions, over many shifts), packed sequences,
// the cache's growth, limit and refusals, and that a warm forward and a warm decode step allocate
// nothing (the counting operator new of tests/support/counting_new.*).
#include <relpos/kv_cache.hpp>

#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <relpos/encodings/absolute.hpp>
#include <relpos/encodings/additive.hpp>
#include <relpos/encodings/alibi.hpp>
#include <relpos/encodings/learned.hpp>
#include <relpos/encodings/none.hpp>
#include <relpos/encodings/rotary.hpp>
#include <relpos/encodings/sinusoidal.hpp>
#include <relpos/encodings/t5.hpp>
#include <relpos/encodings/xl.hpp>
#include <relpos/io/config.hpp>
#include <relpos/io/safetensors.hpp>
#include <relpos/threads.hpp>

#include "support/counting_new.hpp"
#include "support/random.hpp"

namespace {

using relpos::Decoder;
using relpos::Encoder;
using relpos::Index;
using relpos::Matrix;
using relpos::Tensor3;

template <class T>
struct Tol;
template <>
struct Tol<float> {
  static constexpr double same = 1e-5;    // two float paths (cached vs full forward)
  static constexpr double golden = 1e-5;  // float against the float64 reference
};
template <>
struct Tol<double> {
  static constexpr double same = 1e-10;
  static constexpr double golden = 1e-10;
};

using relpos::test::fill_normal;

constexpr Index kCacheDModel = 16, kCacheHeads = 2, kCacheDHead = kCacheDModel / kCacheHeads;

// A causal stack of 2 layers with random weights; make(n) gives layer n's encoding.
template <class T, class Enc, class Make>
Encoder<T, Enc> random_encoder(bool norm_first, Make make, std::uint64_t seed) {
  Encoder<T, Enc> e;
  e.config.d_model = kCacheDModel;
  e.config.n_heads = kCacheHeads;
  e.config.n_layers = 2;
  e.config.d_ff = 24;
  e.config.norm_first = norm_first;
  e.config.final_norm = norm_first;
  e.config.causal = true;
  std::mt19937_64 gen(seed);
  const double w = 1.0 / std::sqrt(double(kCacheDModel));
  for (Index n = 0; n < 2; ++n) {
    relpos::Block<T, Enc> b(e.config.block(), make(n));
    fill_normal(b.self_attn.in_proj_weight, gen, w);
    fill_normal(b.self_attn.in_proj_bias, gen, 0.1);
    fill_normal(b.self_attn.out_proj_weight, gen, w);
    fill_normal(b.self_attn.out_proj_bias, gen, 0.1);
    fill_normal(b.ffn.linear1_weight, gen, w);
    fill_normal(b.ffn.linear1_bias, gen, 0.1);
    fill_normal(b.ffn.linear2_weight, gen, 1.0 / std::sqrt(24.0));
    fill_normal(b.ffn.linear2_bias, gen, 0.1);
    b.norm1.weight.array() += T(0.2);
    fill_normal(b.norm2.bias, gen, 0.1);
    e.layers.push_back(std::move(b));
  }
  if (norm_first) e.norm = relpos::LayerNorm<T>(kCacheDModel, 1e-5);
  return e;
}

template <class T>
Tensor3<T> random_batch(Index batch, Index len, std::uint64_t seed) {
  Tensor3<T> x(batch, len, kCacheDModel);
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> n(0.0, 1.0);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = static_cast<T>(n(gen));
  return x;
}

// Decodes rows [0, len) of x (len, d_model) in chunks of `chunk` tokens.
template <class T, class Enc, class X>
Matrix<T> decode(Decoder<T, Enc>& dec, const X& x, Index len, Index chunk,
                 const std::int64_t* ids = nullptr, const bool* padding = nullptr) {
  Matrix<T> out(len, kCacheDModel);
  for (Index i = 0; i < len; i += chunk) {
    const Index n = std::min(chunk, len - i);
    // the chunk's ids and flags as spans of its n tokens (empty: none)
    const std::span<const std::int64_t> chunk_ids =
        ids ? std::span<const std::int64_t>(ids + i, static_cast<std::size_t>(n))
            : std::span<const std::int64_t>();
    const std::span<const bool> chunk_padding =
        padding ? std::span<const bool>(padding + i, static_cast<std::size_t>(n))
                : std::span<const bool>();
    dec.forward(x.middleRows(i, n), out.middleRows(i, n), chunk_ids, chunk_padding);
  }
  return out;
}

template <class A, class B>
double max_abs_diff(const A& a, const B& b) {
  return (a.template cast<double>() - b.template cast<double>()).cwiseAbs().maxCoeff();
}

// Every row of a batch of different lengths (right padded for the full forward), decoded
// token by token and in chunks of 3, against one causal forward.
template <class T, class Enc, class Make>
void check_matches_full_forward(const std::string& what, Make make) {
  for (const bool norm_first : {false, true}) {
    SCOPED_TRACE(what + (norm_first ? " pre-norm" : " post-norm"));
    const auto enc = random_encoder<T, Enc>(norm_first, make, 11);
    const std::vector<Index> lens = {9, 4, 7};
    const Index len = 9;
    const Tensor3<T> x = random_batch<T>(3, len, 5);
    relpos::PaddingMask pad(3, len);
    for (Index b = 0; b < 3; ++b) {
      for (Index i = 0; i < len; ++i) pad(b, i) = i >= lens[static_cast<std::size_t>(b)];
    }
    const Tensor3<T> full = enc.forward(x, relpos::BatchInputs{pad, nullptr});
    for (Index b = 0; b < 3; ++b) {
      const Index n = lens[static_cast<std::size_t>(b)];
      const auto want = relpos::item(full, b).topRows(n);
      for (const Index chunk : {Index(1), Index(3)}) {
        Decoder<T, Enc> dec(enc, 64);
        const Matrix<T> got = decode(dec, relpos::item(x, b), n, chunk);
        EXPECT_LE(max_abs_diff(got, want), Tol<T>::same) << "row " << b << " chunk " << chunk;
        EXPECT_EQ(dec.size(), n);
        EXPECT_EQ(dec.next_position(), n);
      }
    }
  }
}

template <class T>
class KVCacheTyped : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(KVCacheTyped, Scalars);

TYPED_TEST(KVCacheTyped, DecodingEqualsOneCausalForwardForEveryEncoding) {
  using T = TypeParam;
  check_matches_full_forward<T, relpos::NoPosition<T>>(
      "none", [](Index) { return relpos::NoPosition<T>(); });
  check_matches_full_forward<T, relpos::AbsoluteSinusoidal<T>>(
      "absolute", [](Index) { return relpos::AbsoluteSinusoidal<T>(kCacheDModel); });
  check_matches_full_forward<T, relpos::SinusoidalRelative<T>>("sinusoidal keys+values", [](Index) {
    return relpos::SinusoidalRelative<T>(kCacheDHead, {100.0, std::nullopt, true, true});
  });
  check_matches_full_forward<T, relpos::SinusoidalRelative<T>>("sinusoidal clamped", [](Index) {
    return relpos::SinusoidalRelative<T>(kCacheDHead, {10000.0, Index(3), true, true});
  });
  check_matches_full_forward<T, relpos::LearnedRelative<T>>("learned K=2", [](Index n) {
    return relpos::LearnedRelative<T>::random(kCacheDHead, {2, true, true, ""}, 7 + n, 0.5);
  });
  check_matches_full_forward<T, relpos::Rotary<T>>("rotary half", [](Index) {
    return relpos::Rotary<T>(kCacheDHead, {100.0, std::nullopt, false});
  });
  check_matches_full_forward<T, relpos::Rotary<T>>("rotary linear scaling", [](Index) {
    return relpos::Rotary<T>(
        kCacheDHead,
        {100.0, std::nullopt, false, relpos::io::RotaryScaling{relpos::io::LinearScaling{2.0}}});
  });
  check_matches_full_forward<T, relpos::T5Bias<T>>("t5 causal", [](Index) {
    std::mt19937_64 gen(4);
    Matrix<T> table(8, kCacheHeads);
    fill_normal(table, gen, 1.0);
    return relpos::T5Bias<T>(kCacheHeads, {8, 6, false}, relpos::share(table));
  });
  check_matches_full_forward<T, relpos::AlibiBias<T>>(
      "alibi", [](Index) { return relpos::AlibiBias<T>(kCacheHeads, {4.0}); });
  std::mt19937_64 gen(6);
  auto u = std::make_shared<Matrix<T>>(kCacheHeads, kCacheDHead);
  auto v = std::make_shared<Matrix<T>>(kCacheHeads, kCacheDHead);
  fill_normal(*u, gen, 0.5);
  fill_normal(*v, gen, 0.5);
  check_matches_full_forward<T, relpos::XlRelative<T>>("xl clamped", [&](Index) {
    std::mt19937_64 g(9);
    Matrix<T> r_net(kCacheDModel, kCacheDModel);
    fill_normal(r_net, g, 1.0 / std::sqrt(double(kCacheDModel)));
    return relpos::XlRelative<T>(kCacheDModel, kCacheHeads, {100.0, Index(5), ""}, r_net, u, v);
  });
  check_matches_full_forward<T, relpos::Rotary<T>>("rotary partial interleaved", [](Index) {
    return relpos::Rotary<T>(kCacheDHead, {100.0, 4, true});
  });
}

// Left padding with position ids: a row padded on the left, its real tokens at positions
// 0, 1, ..., gives (decoded or in one forward) what the unpadded row gives alone.
TYPED_TEST(KVCacheTyped, LeftPaddingWithPositionIdsEqualsTheRowAlone) {
  using T = TypeParam;
  const auto make = [](Index) {
    return relpos::Rotary<T>(kCacheDHead, {100.0, std::nullopt, false});
  };
  const auto enc = random_encoder<T, relpos::Rotary<T>>(true, make, 3);
  const Index n = 6, pad = 3;
  const Tensor3<T> alone_x = random_batch<T>(1, n, 9);
  const Tensor3<T> alone = enc.forward(alone_x);

  Tensor3<T> x(1, n + pad, kCacheDModel);
  x.setConstant(T(7));  // garbage in the padded slots: it must not leak
  relpos::item(x, 0).bottomRows(n) = relpos::item(alone_x, 0);
  relpos::PositionIds ids(1, n + pad);
  relpos::PaddingMask mask(1, n + pad);
  for (Index i = 0; i < n + pad; ++i) {
    ids(0, i) = std::max<Index>(0, i - pad);
    mask(0, i) = i < pad;
  }
  const Tensor3<T> full = enc.forward(x, relpos::BatchInputs{mask, ids});
  EXPECT_LE(max_abs_diff(relpos::item(full, 0).bottomRows(n), relpos::item(alone, 0)),
            Tol<T>::same);
  for (const Index chunk : {Index(1), Index(3)}) {
    Decoder<T, relpos::Rotary<T>> dec(enc, 32);
    const Matrix<T> got = decode(dec, relpos::item(x, 0), n + pad, chunk, ids.data(), mask.data());
    EXPECT_LE(max_abs_diff(got.bottomRows(n), relpos::item(alone, 0)), Tol<T>::same);
  }
}

// Golden: tools/reference.py (PyTorch, float64) on a causal rotary model, left padded, with
// explicit position ids; decoded token by token.
TYPED_TEST(KVCacheTyped, GoldenLeftPaddedPositionIdsTokenByToken) {
  using T = TypeParam;
  const std::string dir = std::string(RELPOS_TEST_DATA_DIR) + "/models/rotary_causal_left_padded";
  const relpos::io::ModelConfig mc = relpos::io::load_config(dir + "/config.json");
  ASSERT_TRUE(mc.causal);
  const auto weights = relpos::io::SafetensorsFile::open(dir + "/model.safetensors");
  const auto io = relpos::io::SafetensorsFile::open(dir + "/io.safetensors");
  relpos::EncoderConfig cfg;
  cfg.d_model = mc.d_model;
  cfg.n_heads = mc.n_heads;
  cfg.n_layers = mc.n_layers;
  cfg.d_ff = mc.d_ff;
  cfg.causal = true;
  const Index dh = mc.d_head();
  const auto enc = Encoder<T, relpos::Rotary<T>>::load(
      weights, cfg, [dh](Index) { return relpos::Rotary<T>(dh); });
  const Tensor3<T> x = io.tensor3<T>("input");
  const Tensor3<T> want = io.tensor3<T>("output");
  const std::vector<std::int64_t> ids = io.values<std::int64_t>("position_ids");
  const std::vector<std::uint8_t> mask = io.values<std::uint8_t>("padding_mask");
  const Index batch = x.dimension(0), len = x.dimension(1);
  bool not_plain = false;
  for (Index b = 0; b < batch; ++b) {
    std::vector<std::int64_t> row(ids.begin() + b * len, ids.begin() + (b + 1) * len);
    ASSERT_LE(len, 64);
    bool padding[64];
    for (Index i = 0; i < len; ++i) {
      padding[i] = mask[static_cast<std::size_t>(b * len + i)] != 0;
      not_plain |= row[static_cast<std::size_t>(i)] != i;
    }
    Decoder<T, relpos::Rotary<T>> dec(enc, len);
    const Matrix<T> got = decode(dec, relpos::item(x, b), len, 1, row.data(), padding);
    EXPECT_LE(max_abs_diff(got, relpos::item(want, b)), Tol<T>::golden) << "row " << b;
  }
  EXPECT_TRUE(not_plain) << "the golden file should exercise ids other than 0..len-1";
}

// ---- re-rotating cached rotary keys ----

TYPED_TEST(KVCacheTyped, ShiftingRotaryKeysComposesAndEqualsKeysAtTheNewPositions) {
  using T = TypeParam;
  for (const bool interleaved : {false, true}) {
    const relpos::Rotary<T> rot(kCacheDHead, {10000.0, 6, interleaved});
    const Index len = 20;
    Matrix<T> raw(len, kCacheDModel);
    std::mt19937_64 gen(1);
    fill_normal(raw, gen, 1.0);
    std::vector<std::int64_t> pos(len);
    for (Index i = 0; i < len; ++i) pos[static_cast<std::size_t>(i)] = 5000 + 3 * i;
    Matrix<T> keys = raw;
    rot.rotate(keys, relpos::Positions{len, pos.data()}, kCacheHeads);

    // δ1 then δ2 == δ1 + δ2
    Matrix<T> a = keys, b = keys;
    relpos::shift_rotary_keys(rot, a, 37, kCacheHeads);
    relpos::shift_rotary_keys(rot, a, -1200, kCacheHeads);
    relpos::shift_rotary_keys(rot, b, 37 - 1200, kCacheHeads);
    EXPECT_LE(max_abs_diff(a, b), Tol<T>::same);

    // many shifts, each checked against keys rotated from scratch at the new positions
    std::uniform_int_distribution<int> step(-300, 300);
    std::int64_t total = 0;
    double worst = 0;
    for (int s = 0; s < 200; ++s) {
      std::int64_t d = step(gen);
      if (5000 + total + d < 0) d = -d;
      relpos::shift_rotary_keys(rot, keys, d, kCacheHeads);
      total += d;
      std::vector<std::int64_t> now(pos);
      for (auto& p : now) p += total;
      Matrix<T> fresh = raw;
      rot.rotate(fresh, relpos::Positions{len, now.data()}, kCacheHeads);
      worst = std::max(worst, max_abs_diff(keys, fresh));
    }
    EXPECT_LE(worst, Tol<T>::same) << "interleaved " << interleaved << " after 200 shifts";
    // components past rotary_dim are untouched
    EXPECT_EQ(keys.col(7), raw.col(7));
  }
}

// Scaled tables: linear keeps one table, so shifting with its scaled ω equals rotating from
// scratch; dynamic changes with the call length and is refused, by the shift and the decoder.
TYPED_TEST(KVCacheTyped, ShiftUsesTheScaledTableAndRefusesLengthDependentOnes) {
  using T = TypeParam;
  namespace io = relpos::io;
  const relpos::Rotary<T> rot(
      kCacheDHead, {10000.0, std::nullopt, false, io::RotaryScaling{io::LinearScaling{4.0}}});
  Matrix<T> raw(5, kCacheDModel);
  std::mt19937_64 gen(2);
  fill_normal(raw, gen, 1.0);
  std::vector<std::int64_t> pos = {3, 9, 10, 40, 41}, moved(pos);
  for (auto& p : moved) p += 123;
  Matrix<T> keys = raw, fresh = raw;
  rot.rotate(keys, relpos::Positions{5, pos.data()}, kCacheHeads);
  relpos::shift_rotary_keys(rot, keys, 123, kCacheHeads);
  rot.rotate(fresh, relpos::Positions{5, moved.data()}, kCacheHeads);
  EXPECT_LE(max_abs_diff(keys, fresh), Tol<T>::same);

  const relpos::Rotary<T> dynamic(
      kCacheDHead, {10000.0, std::nullopt, false, io::RotaryScaling{io::DynamicScaling{2.0, 16}}});
  try {
    relpos::shift_rotary_keys(dynamic, keys, 1, kCacheHeads);
    FAIL() << "dynamic scaling shifted";
  } catch (const relpos::Error& e) {
    EXPECT_NE(std::string(e.what()).find("dynamic"), std::string::npos) << e.what();
  }
  const auto enc = random_encoder<T, relpos::Rotary<T>>(
      false, [&](Index) { return dynamic; }, 1);
  EXPECT_THROW((Decoder<T, relpos::Rotary<T>>(enc, 8)), relpos::Error);
}

// A decoder whose cache was shifted by δ continues exactly as one whose tokens were at the
// shifted positions from the start.
TYPED_TEST(KVCacheTyped, DecoderShiftPositionsContinuesAsIfShiftedFromTheStart) {
  using T = TypeParam;
  const auto make = [](Index) {
    return relpos::Rotary<T>(kCacheDHead, {100.0, std::nullopt, false});
  };
  const auto enc = random_encoder<T, relpos::Rotary<T>>(false, make, 21);
  const Index len = 10, first = 6, delta = 40;
  const Tensor3<T> x = random_batch<T>(1, len, 2);
  const auto xs = relpos::item(x, 0);

  Decoder<T, relpos::Rotary<T>> shifted(enc, 32);
  (void)decode(shifted, relpos::ConstMatrixMap<T>(xs.data(), first, kCacheDModel), first, 1);
  shifted.shift_positions(delta);
  EXPECT_EQ(shifted.next_position(), first + delta);
  const Matrix<T> rest =
      decode(shifted,
             relpos::ConstMatrixMap<T>(xs.data() + first * kCacheDModel, len - first, kCacheDModel),
             len - first, 1);

  std::vector<std::int64_t> ids(len);
  for (Index i = 0; i < len; ++i) ids[static_cast<std::size_t>(i)] = i + delta;
  Decoder<T, relpos::Rotary<T>> direct(enc, 32);
  const Matrix<T> all = decode(direct, xs, len, 1, ids.data());
  EXPECT_LE(max_abs_diff(rest, all.bottomRows(len - first)), Tol<T>::same);
  EXPECT_THROW(shifted.shift_positions(-1000), relpos::Error);
}

// Packed sequences: restarted ids are accepted; the first sequence's outputs are those of the
// sequence alone (causality by index), and for rotary a sequence at ids p + c computes what
// it computes at p (only differences matter). There is no block mask through the cache: the
// second packed sequence still sees the first (documented in kv_cache.hpp).
TYPED_TEST(KVCacheTyped, PackedSequencesWithRestartedIds) {
  using T = TypeParam;
  const auto make = [](Index) {
    return relpos::Rotary<T>(kCacheDHead, {100.0, std::nullopt, false});
  };
  const auto enc = random_encoder<T, relpos::Rotary<T>>(true, make, 8);
  const Index la = 4, lb = 5;
  const Tensor3<T> x = random_batch<T>(1, la + lb, 4);
  std::vector<std::int64_t> ids = {0, 1, 2, 3, 0, 1, 2, 3, 4};
  Decoder<T, relpos::Rotary<T>> packed(enc, 16);
  const Matrix<T> got = decode(packed, relpos::item(x, 0), la + lb, 1, ids.data());
  Decoder<T, relpos::Rotary<T>> alone(enc, 16);
  const Matrix<T> a = decode(alone, relpos::item(x, 0), la, 1);
  EXPECT_LE(max_abs_diff(got.topRows(la), a), Tol<T>::same);

  std::vector<std::int64_t> far = {100, 101, 102, 103};
  Decoder<T, relpos::Rotary<T>> offset(enc, 16);
  const Matrix<T> a100 = decode(offset, relpos::item(x, 0), la, 1, far.data());
  EXPECT_LE(max_abs_diff(a100, a), Tol<T>::same);
}

// ---- the cache itself ----

TEST(KVCache, GrowsGeometricallyAndRefusesPastItsLimit) {
  relpos::KVCache<float> c(4, 10);
  Matrix<float> k = Matrix<float>::Ones(1, 4), v = Matrix<float>::Zero(1, 4);
  std::int64_t p = 0;
  std::vector<Index> capacities;
  for (int i = 0; i < 10; ++i, ++p) {
    c.append(k * float(i), v, std::span<const std::int64_t>(&p, 1));
    if (capacities.empty() || capacities.back() != c.capacity()) capacities.push_back(c.capacity());
  }
  EXPECT_EQ(capacities, (std::vector<Index>{1, 2, 4, 8, 10}));
  EXPECT_EQ(c.size(), 10);
  EXPECT_EQ(c.keys()(9, 0), 9.0f);
  EXPECT_EQ(c.position(9), 9);
  try {
    c.append(k, v, std::span<const std::int64_t>(&p, 1));
    FAIL() << "appended past the limit";
  } catch (const relpos::Error& e) {
    EXPECT_NE(std::string(e.what()).find("limit of 10"), std::string::npos) << e.what();
  }
  EXPECT_THROW(relpos::KVCache<float>(4, 0), relpos::Error);
}

TEST(KVCache, DecoderRefusesOverflowBadIdsAndAdditive) {
  const auto make = [](Index) { return relpos::Rotary<float>(kCacheDHead); };
  const auto enc = random_encoder<float, relpos::Rotary<float>>(false, make, 1);
  Decoder<float, relpos::Rotary<float>> dec(enc, 4);
  Matrix<float> x = Matrix<float>::Ones(5, kCacheDModel), out(5, kCacheDModel);
  EXPECT_THROW(dec.forward(x, out), relpos::Error);
  const std::int64_t bad[1] = {-2};
  Matrix<float> one = Matrix<float>::Ones(1, kCacheDModel), o1(1, kCacheDModel);
  EXPECT_THROW(dec.forward(one, o1, bad), relpos::Error);
  EXPECT_EQ(dec.size(), 0);

  using Add = relpos::Additive<float>;
  const auto add_enc = random_encoder<float, Add>(
      false,
      [](Index) {
        relpos::AdditiveConfig c;
        c.window = 1;
        return Add(kCacheDModel, c);
      },
      1);
  try {
    Decoder<float, Add> refused(add_enc, 8);
    FAIL() << "additive accepted";
  } catch (const relpos::Error& e) {
    EXPECT_NE(std::string(e.what()).find("additive"), std::string::npos) << e.what();
  }
}

// Issue 14: a warm forward and a warm decode step allocate nothing, for every kind of term the
// kernel streams (none, learned k+v, unclamped sinusoid k+v, rotary, t5, alibi, xl). Warm: the
// workspace has run this shape once, and the decoder has decoded these positions once and was
// cleared (its caches and the encodings' distance tables keep their storage). One and two
// threads (the pool's tasks must not allocate either).
template <class Enc, class Make>
void expect_warm_calls_do_not_allocate(const std::string& what, Make make) {
  SCOPED_TRACE(what);
  using relpos::test::g_allocations;
  const auto enc = random_encoder<float, Enc>(false, make, 3);
  const Index len = 300;  // several key tiles of the module's shape
  const Tensor3<float> x = random_batch<float>(2, len, 8);
  relpos::PaddingMask pad = relpos::PaddingMask::Zero(2, len);
  pad(1, len - 1) = true;
  const relpos::BatchInputs in{pad, nullptr};
  const int threads_before = relpos::num_threads();
  for (const int threads : {1, 2}) {
    SCOPED_TRACE("threads " + std::to_string(threads));
    relpos::set_num_threads(threads);
    relpos::Workspace<float> ws;
    Tensor3<float> out;
    long before = g_allocations.load();
    enc.forward(x, out, in, ws);  // warm-up: the workspace grows to this shape
    ASSERT_GT(g_allocations.load() - before, 0) << "the count sees a cold forward's allocations";
    before = g_allocations.load();
    enc.forward(x, out, in, ws);
    EXPECT_EQ(g_allocations.load() - before, 0) << "forward";

    Decoder<float, Enc> dec(enc, len);
    const auto seq = relpos::item(x, 0);
    Matrix<float> got(len, kCacheDModel);
    const auto steps = [&] {  // a chunk of 40, then token by token
      dec.forward(seq.topRows(40), got.topRows(40));
      for (Index i = 40; i < 60; ++i) dec.forward(seq.middleRows(i, 1), got.middleRows(i, 1));
    };
    steps();
    dec.clear();
    before = g_allocations.load();
    steps();
    EXPECT_EQ(g_allocations.load() - before, 0) << "decode";
  }
  relpos::set_num_threads(threads_before);
}

TEST(KVCache, WarmForwardAndDecodeStepDoNotAllocate) {
  expect_warm_calls_do_not_allocate<relpos::NoPosition<float>>(
      "none", [](Index) { return relpos::NoPosition<float>(); });
  expect_warm_calls_do_not_allocate<relpos::LearnedRelative<float>>("learned K=64 k+v", [](Index
                                                                                               n) {
    return relpos::LearnedRelative<float>::random(kCacheDHead, {64, true, true, ""}, 7 + n, 0.5);
  });
  expect_warm_calls_do_not_allocate<relpos::SinusoidalRelative<float>>(
      "sinusoidal unclamped k+v", [](Index) {
        return relpos::SinusoidalRelative<float>(kCacheDHead, {100.0, std::nullopt, true, true});
      });
  expect_warm_calls_do_not_allocate<relpos::Rotary<float>>("rotary", [](Index) {
    return relpos::Rotary<float>(kCacheDHead, {100.0, std::nullopt, false});
  });
  expect_warm_calls_do_not_allocate<relpos::T5Bias<float>>("t5", [](Index) {
    std::mt19937_64 gen(4);
    Matrix<float> table(32, kCacheHeads);
    fill_normal(table, gen, 1.0);
    return relpos::T5Bias<float>(kCacheHeads, {32, 128, false}, relpos::share(table));
  });
  expect_warm_calls_do_not_allocate<relpos::AlibiBias<float>>(
      "alibi", [](Index) { return relpos::AlibiBias<float>(kCacheHeads, {8.0}); });
  std::mt19937_64 gen(6);
  auto u = std::make_shared<Matrix<float>>(kCacheHeads, kCacheDHead);
  auto v = std::make_shared<Matrix<float>>(kCacheHeads, kCacheDHead);
  fill_normal(*u, gen, 0.5);
  fill_normal(*v, gen, 0.5);
  expect_warm_calls_do_not_allocate<relpos::XlRelative<float>>("xl unclamped", [&](Index) {
    std::mt19937_64 g(9);
    Matrix<float> r_net(kCacheDModel, kCacheDModel);
    fill_normal(r_net, g, 1.0 / std::sqrt(double(kCacheDModel)));
    return relpos::XlRelative<float>(kCacheDModel, kCacheHeads, {100.0, std::nullopt, ""}, r_net, u,
                                     v);
  });
}

}  // namespace
