// SPDX-License-Identifier: MIT
// Tests for include/relpos/encodings/t5.hpp: the bucket function against the spec's check
// values and tools/reference.py for every distance in [-1000, 1000], attention against the
// float64 reference (tools/golden_t5_alibi_xl_scaling.py), shift invariance, the shared table,
// errors.
#include <relpos/encodings/t5.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include <relpos/attention.hpp>

#include "support/encoding_golden.hpp"
#include "support/golden.hpp"

namespace {

using relpos::Index;
using relpos::Matrix;
using relpos::t5_bucket;
using relpos::T5Bias;
using relpos::T5Config;

TEST(T5Bucket, SpecCheckValuesBidirectional) {
  const std::vector<std::pair<std::int64_t, std::int64_t>> expected = {
      {-200, 15}, {-64, 14}, {-16, 10}, {-8, 8},  {-7, 7},  {-1, 1},
      {0, 0},     {1, 17},   {8, 24},   {16, 26}, {64, 30}, {128, 31}};
  for (const auto& [delta, bucket] : expected) {
    EXPECT_EQ(t5_bucket(delta, 32, 128, true), bucket) << "delta " << delta;
  }
}

TEST(T5Bucket, SpecCheckValuesCausal) {
  const std::vector<std::pair<std::int64_t, std::int64_t>> expected = {
      {-200, 31}, {-64, 26}, {-32, 21}, {-16, 16}, {-9, 9}, {-1, 1}, {0, 0}, {5, 0}};
  for (const auto& [delta, bucket] : expected) {
    EXPECT_EQ(t5_bucket(delta, 32, 128, false), bucket) << "delta " << delta;
  }
}

TEST(T5Bucket, EveryDistanceInPlusMinus1000MatchesTheReference) {
  const auto f = relpos::test::golden_file("t5_alibi_xl_scaling/t5_buckets.safetensors");
  const std::vector<std::int64_t> delta = f.values<std::int64_t>("delta");
  ASSERT_EQ(delta.size(), 2001u);
  for (const auto& [nb, md] : std::vector<std::pair<int, int>>{{32, 128}, {64, 200}, {8, 12}}) {
    for (const bool bi : {true, false}) {
      const std::string name =
          "bucket_" + std::to_string(nb) + "_" + std::to_string(md) + "_" + (bi ? "bi" : "causal");
      const std::vector<std::int64_t> want = f.values<std::int64_t>(name);
      ASSERT_EQ(want.size(), delta.size()) << name;
      int mismatches = 0;
      for (std::size_t i = 0; i < delta.size(); ++i) {
        if (t5_bucket(delta[i], nb, md, bi) != want[i] && ++mismatches < 5) {
          ADD_FAILURE() << name << ": delta " << delta[i] << " gives "
                        << t5_bucket(delta[i], nb, md, bi) << ", reference " << want[i];
        }
      }
      EXPECT_EQ(mismatches, 0) << name;
    }
  }
}

TEST(T5Bucket, FarDistancesStayInTheLastBucketWithoutOverflow) {
  for (const std::int64_t d : {std::int64_t{1} << 40, std::int64_t{1} << 62}) {
    EXPECT_EQ(t5_bucket(d, 32, 128, true), 31);
    EXPECT_EQ(t5_bucket(-d, 32, 128, true), 15);
    EXPECT_EQ(t5_bucket(-d, 32, 128, false), 31);
    EXPECT_EQ(t5_bucket(d, 32, 128, false), 0);
  }
}

TEST(T5Bias, ClampingToMaxDistanceNeverChangesTheBucket) {
  for (const bool bi : {true, false}) {
    const T5Config config{.num_buckets = 16, .max_distance = 40, .bidirectional = bi};
    const T5Bias<double> enc(2, config, relpos::share(Matrix<double>::Zero(16, 2)));
    for (std::int64_t d = -5000; d <= 5000; ++d) {
      ASSERT_EQ(enc.bucket(enc.clamp_distance(d)), enc.bucket(d)) << "delta " << d;
    }
  }
}

TEST(T5Bias, ScoreBiasReadsTheTableAtTheBucketForEachHead) {
  Matrix<double> table(8, 3);
  for (Index b = 0; b < 8; ++b) {
    for (Index h = 0; h < 3; ++h) table(b, h) = 10.0 * double(b) + double(h);
  }
  const T5Bias<double> enc(3, {.num_buckets = 8, .max_distance = 12, .bidirectional = true},
                           relpos::share(table));
  std::vector<double> out(25);
  for (Index h = 0; h < 3; ++h) {
    enc.score_bias(h, -12, 12, out.data());
    for (std::int64_t c = -12; c <= 12; ++c) {
      EXPECT_EQ(out[std::size_t(c + 12)], table(enc.bucket(c), h)) << "c " << c << " head " << h;
    }
  }
}

TEST(T5Bias, CopiesShareOneTableAsAllLayersDo) {
  const T5Bias<float> a(2, {.num_buckets = 8, .max_distance = 12},
                        relpos::share(Matrix<float>::Ones(8, 2)));
  const T5Bias<float> b = a;
  EXPECT_EQ(&a.table(), &b.table());
}

template <class T>
class T5Typed : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(T5Typed, Scalars);

template <class T>
T5Bias<T> t5_from_case(const relpos::test::EncodingCase& c) {
  const auto& p = c.config.at("position");
  const T5Config config{.num_buckets = p.at("num_buckets").get<Index>(),
                        .max_distance = p.at("max_distance").get<Index>(),
                        .bidirectional = p.at("bidirectional").get<bool>()};
  return T5Bias<T>(c.config.at("n_heads").get<Index>(), config,
                   relpos::share(c.file.matrix<T>("position.relative_attention_bias")));
}

TYPED_TEST(T5Typed, AttentionMatchesTheReference) {
  using T = TypeParam;
  for (const char* name : {"t5_bi", "t5_causal", "t5_32_128_ids"}) {
    const auto c = relpos::test::encoding_case(name);
    EXPECT_TRUE((relpos::test::matches_encoding_golden<T>(c, t5_from_case<T>(c)))) << name;
  }
}

// b_h depends only on δ: shifting every position by the same amount changes nothing.
TYPED_TEST(T5Typed, ScoresDependOnlyOnTheDistance) {
  using T = TypeParam;
  const auto c = relpos::test::encoding_case("t5_bi");
  EXPECT_TRUE((relpos::test::shift_changes_nothing<T>(c, t5_from_case<T>(c), 977,
                                                      std::is_same_v<T, float> ? 1e-6 : 1e-13)));
}

TEST(T5Bias, BadValuesThrowNamingTheKeyOrTensor) {
  const auto message = [](auto&& make) -> std::string {
    try {
      make();
    } catch (const relpos::Error& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_NE(message([] {
              T5Bias<float>(2, {.num_buckets = 3, .max_distance = 8, .bidirectional = true},
                            relpos::share(Matrix<float>::Zero(3, 2)));
            }).find("t5: position.num_buckets: must be >= 4, got 3"),
            std::string::npos);
  EXPECT_NE(message([] {
              T5Bias<float>(2, {.num_buckets = 1, .max_distance = 8, .bidirectional = false},
                            relpos::share(Matrix<float>::Zero(1, 2)));
            }).find("t5: position.num_buckets: must be >= 2, got 1"),
            std::string::npos);
  EXPECT_NE(message([] {
              T5Bias<float>(2, {.num_buckets = 32, .max_distance = 8, .bidirectional = true},
                            relpos::share(Matrix<float>::Zero(32, 2)));
            }).find("t5: position.max_distance: must be > num_buckets' exact range E = 8, got 8"),
            std::string::npos);
  EXPECT_NE(message([] {
              T5Bias<float>(2, {.num_buckets = 8, .max_distance = 12},
                            relpos::share(Matrix<float>::Zero(8, 3)));
            })
                .find("position.relative_attention_bias: expected [num_buckets=8, n_heads=2], got "
                      "[8, 3]"),
            std::string::npos);
}

}  // namespace
