// Tests for include/relpos/attention.hpp: torch.nn.MultiheadAttention golden numbers (type
// none), the skewing path against the naive materialised path, masking and softmax
// properties, translation invariance, causality, threads and allocation-freedom.
//
// Allocation check: EIGEN_RUNTIME_NO_MALLOC makes every Eigen heap allocation call
// eigen_assert(is_malloc_allowed()), and eigen_assert is routed to a counter here (Eigen's
// own is compiled out under NDEBUG); both must come before Eigen is included. Global
// operator new/delete are replaced by counting versions to catch std:: allocations as well.
#include <atomic>
#include <cstddef>

namespace {
std::atomic<long> g_eigen_assert_failures{0};
}  // namespace
#define EIGEN_RUNTIME_NO_MALLOC
#define eigen_assert(x) \
  ((x) ? static_cast<void>(0) : static_cast<void>(g_eigen_assert_failures.fetch_add(1)))
#include <relpos/attention.hpp>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <relpos/detail/skew.hpp>
#include <relpos/detail/softmax.hpp>
#include <relpos/threads.hpp>
#include "support/naive_attention.hpp"

#include "support/counting_new.hpp"
#include "support/golden.hpp"
#include "support/random.hpp"

using relpos::test::g_allocations;

namespace {

using relpos::BatchInputs;
using relpos::Index;
using relpos::MultiHeadAttention;
using relpos::NoPosition;
using relpos::PaddingMask;
using relpos::PositionIds;
using relpos::Tensor3;

// A relative encoding written only for these tests: rows are smooth deterministic functions
// of the clamped distance c, with an optional maximum distance K. It shows that a new
// encoding plugs into attention through the concept alone.
template <class T>
struct ToyRelative {
  using Scalar = T;
  static constexpr const char* name = "toy";
  Index d_head = 8;
  std::int64_t max_distance = -1;  // K; < 0: no clamping
  bool keys = true;
  bool values = true;

  bool uses_keys() const { return keys; }
  bool uses_values() const { return values; }
  std::int64_t clamp_distance(std::int64_t delta) const {
    return max_distance < 0 ? delta : std::clamp<std::int64_t>(delta, -max_distance, max_distance);
  }
  relpos::DistanceRows<T> rows(Index lo, Index hi, double phase) const {
    auto table = std::make_shared<relpos::Matrix<T>>(hi - lo + 1, d_head);
    for (Index c = lo; c <= hi; ++c) {
      for (Index t = 0; t < d_head; ++t) {
        (*table)(c - lo, t) =
            static_cast<T>(0.5 * std::sin(0.37 * double(c) * double(t + 1) + phase + t));
      }
    }
    return {table, 0, lo, hi - lo + 1};
  }
  relpos::DistanceRows<T> key_rows(Index lo, Index hi) const { return rows(lo, hi, 0.0); }
  relpos::DistanceRows<T> value_rows(Index lo, Index hi) const { return rows(lo, hi, 1.3); }
};
static_assert(relpos::HasKeyTerm<ToyRelative<float>> && relpos::HasValueTerm<ToyRelative<float>>);

template <class T>
struct Tol;
template <>
struct Tol<float> {
  static constexpr double golden = 1e-5;  // float against a float64 reference
  static constexpr double naive = 1e-6;   // two float paths
};
template <>
struct Tol<double> {
  static constexpr double golden = 1e-10;
  static constexpr double naive = 1e-12;
};

using relpos::test::fill_normal;

// An attention layer with random weights (biases included).
template <class T, class Enc>
MultiHeadAttention<T, Enc> random_attention(Index d_model, Index n_heads, bool causal, Enc enc,
                                            std::uint64_t seed) {
  MultiHeadAttention<T, Enc> a({d_model, n_heads, causal}, std::move(enc));
  std::mt19937_64 gen(seed);
  // the scale of trained weights (Xavier, 1/sqrt(d_model)), so outputs are O(1) and an
  // absolute tolerance means what it says
  const double w = 1.0 / std::sqrt(static_cast<double>(d_model));
  fill_normal(a.in_proj_weight, gen, w);
  fill_normal(a.in_proj_bias, gen, 0.1);
  fill_normal(a.out_proj_weight, gen, w);
  fill_normal(a.out_proj_bias, gen, 0.1);
  return a;
}

template <class T>
Tensor3<T> random_batch(Index batch, Index len, Index d, std::uint64_t seed) {
  Tensor3<T> x(batch, len, d);
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> n(0.0, 1.0);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = static_cast<T>(n(gen));
  return x;
}

PaddingMask mask_from(const relpos::io::SafetensorsFile& f, Index batch, Index len) {
  const std::vector<std::uint8_t> raw = f.values<std::uint8_t>("padding_mask");
  PaddingMask m(batch, len);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = raw[static_cast<std::size_t>(i)] != 0;
  return m;
}

template <class T>
class AttentionTyped : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(AttentionTyped, Scalars);

// ---- golden: torch.nn.MultiheadAttention (tools/golden_attention.py) ----

TYPED_TEST(AttentionTyped, MatchesTorchMultiheadAttention) {
  using T = TypeParam;
  const auto f = relpos::test::golden_file("attention/none_mha.safetensors");
  const auto config = nlohmann::json::parse(f.metadata().at("config"));
  const relpos::AttentionConfig plain{config.at("d_model"), config.at("n_heads"), false};
  const Tensor3<T> x = f.tensor3<T>("input");
  const Index batch = x.dimension(0), len = x.dimension(1);
  const PaddingMask mask = mask_from(f, batch, len);

  const auto attn = MultiHeadAttention<T>::load(f, "self_attn.", plain);
  EXPECT_TRUE(
      relpos::test::all_close(attn.forward(x), f.tensor3<double>("output"), Tol<T>::golden));
  EXPECT_TRUE(relpos::test::all_close(attn.forward(x, BatchInputs{mask, nullptr}),
                                      f.tensor3<double>("output_padded"), Tol<T>::golden));
  relpos::AttentionConfig causal = plain;
  causal.causal = true;
  const auto causal_attn = MultiHeadAttention<T>::load(f, "self_attn.", causal);
  EXPECT_TRUE(relpos::test::all_close(causal_attn.forward(x, BatchInputs{mask, nullptr}),
                                      f.tensor3<double>("output_padded_causal"), Tol<T>::golden));
}

TEST(Attention, LoadNamesAMissingOrMisShapedTensor) {
  const auto f = relpos::test::golden_file("attention/none_mha.safetensors");
  try {
    (void)MultiHeadAttention<float>::load(f, "layers.3.self_attn.", {16, 4, false});
    FAIL() << "no error for a missing tensor";
  } catch (const relpos::Error& e) {
    EXPECT_NE(std::string(e.what()).find("layers.3.self_attn.in_proj_weight"), std::string::npos)
        << e.what();
  }
  try {
    (void)MultiHeadAttention<float>::load(f, "self_attn.", {8, 2, false});
    FAIL() << "no error for a mis-shaped tensor";
  } catch (const relpos::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("self_attn.in_proj_weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[24, 8]"), std::string::npos) << msg;
  }
}

TEST(Attention, BadInputsThrowNamingWhatIsWrong) {
  EXPECT_THROW((MultiHeadAttention<float>({10, 4, false})), relpos::Error);
  const auto attn = random_attention<float>(8, 2, false, NoPosition<float>{}, 1);
  const Tensor3<float> x = random_batch<float>(2, 5, 8, 2);
  const PaddingMask bad_mask = PaddingMask::Zero(2, 4);
  try {
    (void)attn.forward(x, BatchInputs{bad_mask, nullptr});
    FAIL();
  } catch (const relpos::Error& e) {
    EXPECT_STREQ(e.what(), "padding_mask: expected [2, 5], got [2, 4]");
  }
  PositionIds ids = PositionIds::Zero(2, 5);
  ids(1, 3) = -2;
  try {
    (void)attn.forward(x, BatchInputs{nullptr, ids});
    FAIL();
  } catch (const relpos::Error& e) {
    EXPECT_STREQ(e.what(), "position_ids[1, 3]: expected >= 0, got -2");
  }
  const Tensor3<float> wide = random_batch<float>(1, 3, 9, 3);
  EXPECT_THROW((void)attn.forward(wide), relpos::Error);
}

// ---- the skewing path equals the naive materialised path ----

struct NaiveCase {
  const char* what;
  std::int64_t max_distance;
  bool keys, values, causal, padded, explicit_ids;
};

template <class T>
void expect_matches_naive(const NaiveCase& c, Index len, std::uint64_t seed) {
  SCOPED_TRACE(std::string(c.what) + ", len " + std::to_string(len) + ", seed " +
               std::to_string(seed));
  const Index d_model = 16, n_heads = 2, batch = 3;
  ToyRelative<T> enc{8, c.max_distance, c.keys, c.values};
  const auto attn = random_attention<T>(d_model, n_heads, c.causal, enc, seed);
  const Tensor3<T> x = random_batch<T>(batch, len, d_model, seed + 1);
  PaddingMask mask = PaddingMask::Zero(batch, len);
  if (c.padded) {
    for (Index i = 0; i < len; ++i) mask(1, i) = i >= len / 2 + 1;  // right padding
    for (Index i = 0; i < len; ++i) mask(2, i) = i % 3 == 1;        // scattered keys
  }
  PositionIds ids(batch, len);
  for (Index b = 0; b < batch; ++b) {
    for (Index i = 0; i < len; ++i) ids(b, i) = b == 0 ? 5 + i : (b == 1 ? i / 2 : (i * 7) % 11);
  }
  BatchInputs in;
  if (c.padded) in.padding = mask;
  if (c.explicit_ids) in.positions = ids;
  EXPECT_TRUE(relpos::test::all_close(attn.forward(x, in),
                                      relpos::test::naive_attention(attn, x, in), Tol<T>::naive));
}

TYPED_TEST(AttentionTyped, SkewingEqualsNaiveMaterialisedPath) {
  const NaiveCase cases[] = {
      {"keys, unclamped", -1, true, false, false, false, false},
      {"values, clamped K=2", 2, false, true, false, true, false},
      {"keys and values, clamped K=3, causal, padded", 3, true, true, true, true, false},
      {"keys and values, unclamped, causal", -1, true, true, true, false, false},
      {"keys and values, K=4, explicit ids, padded", 4, true, true, false, true, true},
      {"keys and values, unclamped, explicit ids, causal", -1, true, true, true, false, true},
      {"no relative term switched on", -1, false, false, true, true, false},
  };
  std::uint64_t seed = 100;
  for (const NaiveCase& c : cases) {
    for (Index len : {1, 2, 9, 33}) expect_matches_naive<TypeParam>(c, len, seed++);
  }
}

TYPED_TEST(AttentionTyped, WidelySpreadPositionIdsTakeTheSparsePathAndMatchNaive) {
  using T = TypeParam;
  // unclamped distances up to ±100000 among 6 tokens: R would be 200001 > 4·len
  ToyRelative<T> enc{8, -1, true, true};
  const auto attn = random_attention<T>(16, 2, false, enc, 7);
  const Tensor3<T> x = random_batch<T>(2, 6, 16, 8);
  PositionIds ids(2, 6);
  ids << 0, 100000, 3, 50000, 4, 99999,  //
      10, 11, 5000, 12, 5001, 70000;
  PaddingMask mask = PaddingMask::Zero(2, 6);
  mask(1, 2) = true;
  const BatchInputs in{mask, ids};
  EXPECT_TRUE(relpos::test::all_close(attn.forward(x, in),
                                      relpos::test::naive_attention(attn, x, in), Tol<T>::naive));
}

// Contiguous positions skip the (len × len) index: the banded gather and scatter must give
// exactly what the index gives, for K below, at and above len, K = 0 and no clamping.
TEST(Skew, BandsGiveWhatTheDistanceIndexGives) {
  using IndexMatrix = Eigen::Matrix<std::int32_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  std::mt19937_64 gen(11);
  std::uniform_real_distribution<double> u(-1, 1);
  for (std::int64_t k : {-1, 0, 1, 3, 8, 40}) {
    for (Index len : {1, 2, 7, 16}) {
      SCOPED_TRACE("K " + std::to_string(k) + ", len " + std::to_string(len));
      const ToyRelative<double> enc{8, k, true, true};
      std::vector<std::int64_t> ids(static_cast<std::size_t>(len));
      for (Index i = 0; i < len; ++i) ids[std::size_t(i)] = 1000 + i;  // an offset: still bands
      const relpos::Positions p{len, ids.data()};
      const auto range = relpos::detail::distance_range(enc, p);
      ASSERT_TRUE(relpos::detail::has_distance_bands(enc, p, range));
      const relpos::detail::DistanceBands bands{range.lo, range.hi};
      IndexMatrix index(len, len);
      relpos::detail::build_distance_index(enc, p, range.lo, index);

      const relpos::Matrix<double> by_distance =
          relpos::Matrix<double>::NullaryExpr(len, range.count(), [&] { return u(gen); });
      const relpos::Matrix<double> scores =
          relpos::Matrix<double>::NullaryExpr(len, len, [&] { return u(gen); });
      relpos::Matrix<double> by_index = scores, by_bands = scores;
      relpos::detail::gather_add(by_index, by_distance, index);
      relpos::detail::gather_add(by_bands, by_distance, bands);
      EXPECT_LT((by_index - by_bands).cwiseAbs().maxCoeff(), 1e-15);

      relpos::Matrix<double> w_index(len, range.count()), w_bands(len, range.count());
      relpos::detail::scatter_by_distance(w_index, scores, index);
      relpos::detail::scatter_by_distance(w_bands, scores, bands);
      EXPECT_LT((w_index - w_bands).cwiseAbs().maxCoeff(), 1e-13);
    }
  }
  // a gap in the ids keeps the index
  const ToyRelative<double> enc{8, 2, true, true};
  const std::int64_t gap[] = {0, 1, 3};
  const relpos::Positions p{3, gap};
  EXPECT_FALSE(relpos::detail::has_distance_bands(enc, p, relpos::detail::distance_range(enc, p)));
}

// ---- properties ----

TYPED_TEST(AttentionTyped, SoftmaxRowsSumToOneAndHideMaskedKeys) {
  using T = TypeParam;
  std::mt19937_64 gen(3);
  relpos::Matrix<T> s(6, 6);
  fill_normal(s, gen, 30.0);  // large scores: the max subtraction must keep exp finite
  s(2, 1) = T(80);
  const bool pad[6] = {false, true, false, false, true, false};
  for (bool causal : {false, true}) {
    relpos::Matrix<T> a = s;
    relpos::detail::masked_softmax_rows(a, causal, pad);
    for (Index i = 0; i < 6; ++i) {
      EXPECT_NEAR(static_cast<double>(a.row(i).sum()), 1.0, 1e-6) << "row " << i;
      for (Index j = 0; j < 6; ++j) {
        if (pad[j] || (causal && j > i)) {
          EXPECT_EQ(a(i, j), T(0));
        }
        EXPECT_TRUE(a(i, j) >= T(0));
      }
    }
  }
  // a row with no visible key: all weights zero (spec §2)
  const bool all[6] = {true, true, true, true, true, true};
  relpos::Matrix<T> a = s;
  relpos::detail::masked_softmax_rows(a, false, all);
  EXPECT_EQ(a.cwiseAbs().maxCoeff(), T(0));
}

TYPED_TEST(AttentionTyped, WeightsSumToOneThroughTheModule) {
  using T = TypeParam;
  // v ≡ a constant vector u (v rows of in_proj zero, bias u) and no value term: z_i = Σ_j α_ij u
  // = u exactly when the weights of row i sum to 1, so out_i = W_o u + b_o for every i.
  ToyRelative<T> enc{8, 3, true, false};
  auto attn = random_attention<T>(16, 2, true, enc, 11);
  attn.in_proj_weight.bottomRows(16).setZero();
  const relpos::Vector<T> u = attn.in_proj_bias.tail(16);
  const relpos::Vector<T> expected = attn.out_proj_weight * u + attn.out_proj_bias;
  const Tensor3<T> x = random_batch<T>(2, 9, 16, 12);
  PaddingMask mask = PaddingMask::Zero(2, 9);
  mask(1, 3) = mask(1, 4) = mask(1, 8) = true;
  const Tensor3<T> out = attn.forward(x, BatchInputs{mask, nullptr});
  for (Index b = 0; b < 2; ++b) {
    for (Index i = 0; i < 9; ++i) {
      EXPECT_TRUE(
          relpos::test::all_close(relpos::item(out, b).row(i).transpose(), expected, Tol<T>::naive))
          << "b " << b << ", i " << i;
    }
  }
}

TYPED_TEST(AttentionTyped, FullyMaskedQueryGivesOutProjBiasNotNaN) {
  using T = TypeParam;
  const auto attn = random_attention<T>(16, 4, true, ToyRelative<T>{4, 2, true, true}, 21);
  const Tensor3<T> x = random_batch<T>(2, 5, 16, 22);
  PaddingMask mask = PaddingMask::Zero(2, 5);
  mask.row(0).setConstant(true);  // item 0: every key padded
  mask(1, 0) = true;              // item 1, causal: query 0 sees only key 0, padded
  const Tensor3<T> out = attn.forward(x, BatchInputs{mask, nullptr});
  const relpos::Vector<T> bias = attn.out_proj_bias;
  for (Index i = 0; i < 5; ++i) {
    EXPECT_TRUE(relpos::test::all_close(relpos::item(out, 0).row(i).transpose(), bias, 0))
        << "query " << i;
  }
  EXPECT_TRUE(relpos::test::all_close(relpos::item(out, 1).row(0).transpose(), bias, 0));
  EXPECT_FALSE(relpos::item(out, 1).bottomRows(4).hasNaN());
  EXPECT_GT((relpos::item(out, 1).row(1).transpose() - bias).norm(), 1e-3);
}

TYPED_TEST(AttentionTyped, RelativeAttentionIgnoresAPositionShift) {
  using T = TypeParam;
  for (std::int64_t k : {-1, 3}) {
    const auto attn = random_attention<T>(16, 2, false, ToyRelative<T>{8, k, true, true}, 31);
    const Tensor3<T> x = random_batch<T>(2, 11, 16, 32);
    PositionIds shifted(2, 11);
    for (Index b = 0; b < 2; ++b) {
      for (Index i = 0; i < 11; ++i) shifted(b, i) = i + 1000 + 17 * b;
    }
    // distances p_j − p_i are unchanged, so the result is the same to the last bit
    const Tensor3<T> plain = attn.forward(x);
    const Tensor3<T> moved = attn.forward(x, BatchInputs{nullptr, shifted});
    EXPECT_TRUE(relpos::test::all_close(plain, moved, 0)) << "K " << k;
  }
}

TYPED_TEST(AttentionTyped, CausalOutputIgnoresLaterTokens) {
  using T = TypeParam;
  const auto attn = random_attention<T>(16, 2, true, ToyRelative<T>{8, -1, true, true}, 41);
  const Index len = 12, cut = 5;
  const Tensor3<T> x = random_batch<T>(1, len, 16, 42);
  Tensor3<T> changed = x;
  const Tensor3<T> noise = random_batch<T>(1, len, 16, 43);
  for (Index i = cut + 1; i < len; ++i) {
    for (Index t = 0; t < 16; ++t) changed(0, i, t) += noise(0, i, t);
  }
  const Tensor3<T> a = attn.forward(x), b = attn.forward(changed);
  EXPECT_TRUE(relpos::test::all_close(relpos::item(a, 0).topRows(cut + 1),
                                      relpos::item(b, 0).topRows(cut + 1), Tol<T>::naive));
  EXPECT_GT((relpos::item(a, 0).row(cut + 1) - relpos::item(b, 0).row(cut + 1)).norm(), 1e-3);
}

// ---- threads and allocation ----

// Restores the thread count a test changed.
struct ThreadCountGuard {
  int saved = relpos::num_threads();
  ~ThreadCountGuard() { relpos::set_num_threads(saved); }
};

TYPED_TEST(AttentionTyped, ThreadsGiveBitIdenticalResults) {
  using T = TypeParam;
  ThreadCountGuard guard;
  const auto attn = random_attention<T>(32, 4, true, ToyRelative<T>{8, 6, true, true}, 51);
  for (Index batch : {1, 3}) {
    const Tensor3<T> x = random_batch<T>(batch, 40, 32, 52);
    PaddingMask mask = PaddingMask::Zero(batch, 40);
    mask(batch - 1, 39) = true;
    const BatchInputs in{mask, nullptr};
    relpos::set_num_threads(1);
    const Tensor3<T> one = attn.forward(x, in);
    for (int n : {2, 3, 5}) {
      relpos::set_num_threads(n);
      const Tensor3<T> many = attn.forward(x, in);
      EXPECT_EQ(std::memcmp(one.data(), many.data(), sizeof(T) * std::size_t(one.size())), 0)
          << "batch " << batch << ", threads " << n;
    }
  }
}

// Products whose packing buffers pass Eigen's 128 KiB stack limit would take them from the
// heap on every call; detail/gemm.hpp keeps them per thread, so only the first call of a
// thread allocates. The results must still be Eigen's own product.
TEST(Gemm, LargeProductsAllocateOnlyOnTheFirstCallOfAThread) {
  std::mt19937_64 gen(5);
  std::normal_distribution<float> normal;
  auto random = [&](Index r, Index c) {
    return relpos::Matrix<float>(
        relpos::Matrix<float>::NullaryExpr(r, c, [&] { return normal(gen); }));
  };
  const relpos::Matrix<float> a = random(300, 256), b = random(384, 256), bt = b.transpose();
  relpos::Matrix<float> nt(300, 384), nn(300, 384);
  relpos::detail::matmul_nt<float>(a, b, nt);  // warm-up: the thread's buffers grow
  relpos::detail::matmul_nn<float>(a, bt, nn);
  const long eigen_before = g_eigen_assert_failures.load();
  Eigen::internal::set_is_malloc_allowed(false);
  relpos::detail::matmul_nt<float>(a, b, nt);
  relpos::detail::matmul_nn<float>(a, bt, nn, /*accumulate=*/true);
  Eigen::internal::set_is_malloc_allowed(true);
  EXPECT_EQ(g_eigen_assert_failures.load() - eigen_before, 0);
  const relpos::Matrix<float> expected =
      (a.cast<double>() * b.cast<double>().transpose()).cast<float>();
  EXPECT_LT((nt - expected).cwiseAbs().maxCoeff(), 1e-4f);
  EXPECT_LT((nn - 2 * expected).cwiseAbs().maxCoeff(), 2e-4f);
}

TEST(Attention, WarmForwardDoesNotAllocate) {
  {
    // the check itself: a forbidden Eigen allocation is seen
    const long eigen_before = g_eigen_assert_failures.load();
    Eigen::internal::set_is_malloc_allowed(false);
    relpos::Matrix<float> m(40, 40);
    Eigen::internal::set_is_malloc_allowed(true);
    ASSERT_GT(g_eigen_assert_failures.load() - eigen_before, 0);
  }
  ThreadCountGuard guard;
  for (int threads : {1, 2}) {
    for (Index batch : {1, 3}) {  // batch 1: heads in parallel; batch 3: items in parallel
      SCOPED_TRACE("threads " + std::to_string(threads) + ", batch " + std::to_string(batch));
      relpos::set_num_threads(threads);
      const auto plain = random_attention<float>(32, 4, false, NoPosition<float>{}, 61);
      const auto toy =
          random_attention<float>(32, 4, true, ToyRelative<float>{8, 4, true, true}, 62);
      const Tensor3<float> x = random_batch<float>(batch, 24, 32, 63);
      PaddingMask mask = PaddingMask::Zero(batch, 24);
      mask(batch - 1, 20) = true;
      PositionIds ids(batch, 24);
      for (Index i = 0; i < ids.size(); ++i) ids.data()[i] = i % 24 + 3;
      const BatchInputs in{mask, ids};
      relpos::Workspace<float> ws;
      Tensor3<float> out;
      plain.forward(x, out, in, ws);  // warm-up: the workspace grows to this shape
      const long before = g_allocations.load();
      const long eigen_before = g_eigen_assert_failures.load();
      Eigen::internal::set_is_malloc_allowed(false);  // any Eigen heap use now counts
      plain.forward(x, out, in, ws);
      plain.forward(x, out, BatchInputs{}, ws);
      Eigen::internal::set_is_malloc_allowed(true);
      EXPECT_EQ(g_allocations.load() - before, 0);
      EXPECT_EQ(g_eigen_assert_failures.load() - eigen_before, 0);

      // the toy encoding builds its rows on every call (std::make_shared): only that counts,
      // one per key_rows / value_rows call per sequence, nothing per token or head
      toy.forward(x, out, in, ws);
      const long before_toy = g_allocations.load();
      toy.forward(x, out, in, ws);
      EXPECT_EQ(g_allocations.load() - before_toy, 2 * batch);
    }
  }
}

}  // namespace
