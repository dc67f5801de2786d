// SPDX-License-Identifier: MIT
// Tests for include/relpos/encodings/alibi.hpp: slopes for 1, 6, 8, 12, 16 heads against
// tools/reference.py, the symmetric bias, attention against the float64 reference
// (tools/golden_t5_alibi_xl_scaling.py), shift invariance, errors.
#include <relpos/encodings/alibi.hpp>

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <new>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <relpos/attention.hpp>

#include "support/counting_new.hpp"
#include "support/encoding_golden.hpp"
#include "support/golden.hpp"

using relpos::test::g_allocations;

namespace {

using relpos::AlibiBias;
using relpos::Index;

TEST(AlibiSlopes, MatchTheReferenceForPowersOfTwoAndOthers) {
  const auto f = relpos::test::golden_file("t5_alibi_xl_scaling/alibi_slopes.safetensors");
  const auto check = [&](Index n, double max_bias, const std::string& name) {
    const std::vector<double> want = f.values<double>(name);
    const std::vector<double> got = relpos::alibi_slopes(n, max_bias);
    ASSERT_EQ(got.size(), want.size()) << name;
    for (std::size_t h = 0; h < got.size(); ++h) {
      EXPECT_NEAR(got[h], want[h], 1e-15 * want[h]) << name << " head " << h;
    }
  };
  for (const Index n : {1, 6, 8, 12, 16}) check(n, 8.0, "slopes_h" + std::to_string(n) + "_b8");
  check(5, 4.0, "slopes_h5_b4");
}

TEST(AlibiSlopes, PowerOfTwoRuleIsGeometric) {
  // 8 heads, max_bias 8: 1/2, 1/4, ..., 1/256 (Press et al. 2022)
  const std::vector<double> s = relpos::alibi_slopes(8, 8.0);
  for (std::size_t h = 0; h < s.size(); ++h) EXPECT_EQ(s[h], std::ldexp(1.0, -int(h) - 1));
}

TEST(AlibiBias, IsSymmetricAndLinearInTheDistance) {
  const AlibiBias<double> enc(6);
  std::vector<double> out(401);
  for (Index h = 0; h < 6; ++h) {
    enc.score_bias(h, -200, 200, out.data());
    const double m = enc.slopes()[std::size_t(h)];
    for (std::int64_t c = 0; c <= 200; ++c) {
      EXPECT_EQ(out[std::size_t(200 + c)], out[std::size_t(200 - c)]) << "c " << c;
      EXPECT_EQ(out[std::size_t(200 + c)], -m * double(c));
    }
  }
  EXPECT_EQ(enc.clamp_distance(-123456789), -123456789);  // no saturation
}

template <class T>
class AlibiTyped : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(AlibiTyped, Scalars);

template <class T>
AlibiBias<T> alibi_from_case(const relpos::test::EncodingCase& c) {
  return AlibiBias<T>(c.config.at("n_heads").get<Index>(),
                      {.max_bias = c.config.at("position").at("max_bias").get<double>()});
}

TYPED_TEST(AlibiTyped, AttentionMatchesTheReference) {
  using T = TypeParam;
  // 6 heads (not a power of two), causal with max_bias 4, and ids spread wide enough for
  // attention's sparse path
  for (const char* name : {"alibi_h6", "alibi_causal_b4", "alibi_sparse_ids"}) {
    const auto c = relpos::test::encoding_case(name);
    EXPECT_TRUE((relpos::test::matches_encoding_golden<T>(c, alibi_from_case<T>(c)))) << name;
  }
}

TYPED_TEST(AlibiTyped, ScoresDependOnlyOnTheDistance) {
  using T = TypeParam;
  const auto c = relpos::test::encoding_case("alibi_h6");
  EXPECT_TRUE((relpos::test::shift_changes_nothing<T>(c, alibi_from_case<T>(c), 5000,
                                                      std::is_same_v<T, float> ? 1e-6 : 1e-13)));
}

TEST(AlibiBias, BadValuesThrowNamingTheKey) {
  for (const double bad : {0.0, -1.0, std::nan(""), HUGE_VAL}) {
    try {
      AlibiBias<float> enc(4, {.max_bias = bad});
      ADD_FAILURE() << "no error for max_bias " << bad;
    } catch (const relpos::Error& e) {
      EXPECT_NE(std::string(e.what()).find("alibi: position.max_bias: must be "), std::string::npos)
          << e.what();
    }
  }
}

// A warm forward allocates nothing: no (len × len) bias, per call or per head.
TEST(AlibiBias, WarmForwardDoesNotAllocate) {
  const auto c = relpos::test::encoding_case("alibi_h6");
  const auto attn = relpos::MultiHeadAttention<float, AlibiBias<float>>::load(
      c.file, "self_attn.", relpos::test::encoding_case_attention_config(c.config),
      alibi_from_case<float>(c));
  const relpos::Tensor3<float> x = c.file.tensor3<float>("input");
  relpos::Workspace<float> ws;
  relpos::Tensor3<float> out;
  attn.forward(x, out, {}, ws);  // warm-up: the workspace grows to this shape
  const long before = g_allocations.load();
  attn.forward(x, out, {}, ws);
  EXPECT_EQ(g_allocations.load() - before, 0);
}

}  // namespace
