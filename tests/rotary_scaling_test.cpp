// SPDX-License-Identifier: MIT
// Tests for include/relpos/encodings/rotary_scaling.hpp and its use by rotary.hpp: inv_freq
// and the attention factor of every scaling type against tools/reference.py at the
// parameters of real models (Llama-3.1, YaRN, Phi-3-style LongRoPE), attention with scaled
// rotary against the float64 reference, the linear and yarn-factor-1 properties, the
// per-length table cache, and errors naming the key.
#include <relpos/encodings/rotary_scaling.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <relpos/attention.hpp>
#include <relpos/encodings/rotary.hpp>
#include <relpos/io/rotary_scaling_config.hpp>

#include "support/encoding_golden.hpp"
#include "support/golden.hpp"

namespace {

using relpos::Index;
using relpos::Matrix;
using relpos::Positions;
using relpos::Rotary;
using relpos::RotaryConfig;

relpos::io::RotaryScaling scaling_from(const nlohmann::ordered_json& j) {
  return relpos::io::detail::read_scaling(j, "test");
}

TEST(RotaryScaling, FrequenciesAndAttentionFactorMatchTheReference) {
  const auto f = relpos::test::golden_file("t5_alibi_xl_scaling/rotary_scaling.safetensors");
  int cases = 0;
  for (const auto& [name, text] : f.metadata()) {
    const auto c = nlohmann::ordered_json::parse(text);
    const double base = c.at("base").get<double>();
    const Index r = c.at("rotary_dim").get<Index>();
    const auto scaling = scaling_from(c.at("scaling"));
    relpos::check_scaling(scaling, base, r, "test");
    const auto got =
        relpos::rotary_frequencies(base, r, scaling, c.at("length").get<std::int64_t>());
    const std::vector<double> want = f.values<double>(name + ".inv_freq", {r / 2});
    ASSERT_EQ(got.inv_freq.size(), want.size()) << name;
    for (std::size_t m = 0; m < want.size(); ++m) {
      EXPECT_NEAR(got.inv_freq[m], want[m], 1e-13 * want[m]) << name << " m " << m;
    }
    EXPECT_NEAR(got.attention_factor, f.values<double>(name + ".attention_factor", {1})[0], 1e-14)
        << name;
    ++cases;
  }
  EXPECT_EQ(cases, 10);
}

TEST(RotaryScaling, Llama31KeepsHighFrequenciesAndDividesLowOnes) {
  const auto s = scaling_from({{"type", "llama3"}, {"factor", 8.0}});
  const auto scaled = relpos::rotary_frequencies(500000, 128, s, 1);
  const auto plain = relpos::rotary_frequencies(500000, 128, std::nullopt, 1);
  EXPECT_EQ(scaled.inv_freq.front(), plain.inv_freq.front());      // λ < 8192/4
  EXPECT_EQ(scaled.inv_freq.back(), plain.inv_freq.back() / 8.0);  // λ > 8192
  EXPECT_EQ(scaled.attention_factor, 1.0);
}

TEST(RotaryScaling, YarnWithFactorOneIsUnscaled) {
  const auto s =
      scaling_from({{"type", "yarn"}, {"factor", 1.0}, {"original_max_position_embeddings", 4096}});
  const auto yarn = relpos::rotary_frequencies(10000, 64, s, 100);
  const auto plain = relpos::rotary_frequencies(10000, 64, std::nullopt, 100);
  // ω(1 − ramp) + (ω/1)·ramp is ω up to one rounding
  ASSERT_EQ(yarn.inv_freq.size(), plain.inv_freq.size());
  for (std::size_t m = 0; m < plain.inv_freq.size(); ++m) {
    EXPECT_NEAR(yarn.inv_freq[m], plain.inv_freq[m], 1e-15 * plain.inv_freq[m]) << "m " << m;
  }
  EXPECT_EQ(yarn.attention_factor, 1.0);

  RotaryConfig scaled_config;
  scaled_config.scaling = s;
  const Rotary<double> scaled(16, scaled_config), unscaled(16);
  Matrix<double> a = Matrix<double>::Random(9, 32), b = a;
  scaled.rotate(a, Positions{9}, 2);
  unscaled.rotate(b, Positions{9}, 2);
  EXPECT_TRUE(relpos::test::all_close(a, b, 1e-14));
}

// Linear scaling by s: positions s·p scaled rotate as p unscaled (position interpolation).
TEST(RotaryScaling, LinearFactorSAtPositionSPEqualsUnscaledAtP) {
  const double s = 4;
  RotaryConfig config;
  config.scaling = scaling_from({{"type", "linear"}, {"factor", s}});
  const Rotary<double> scaled(16, config), unscaled(16);
  std::vector<std::int64_t> p(11), sp(11);
  for (std::size_t i = 0; i < p.size(); ++i) {
    p[i] = std::int64_t(37 * i);
    sp[i] = std::int64_t(s) * p[i];
  }
  Matrix<double> a = Matrix<double>::Random(11, 32), b = a;
  scaled.rotate(a, Positions{11, sp.data()}, 2);
  unscaled.rotate(b, Positions{11, p.data()}, 2);
  EXPECT_TRUE(relpos::test::all_close(a, b, 1e-12));
}

// The attention factor multiplies cos and sin alike: every rotated pair's norm scales by it.
TEST(RotaryScaling, AttentionFactorScalesRotatedPairs) {
  RotaryConfig config;
  config.rotary_dim = 8;
  config.scaling =
      scaling_from({{"type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 64}});
  const Rotary<double> rot(12, config);
  const double factor = rot.frequencies(1).attention_factor;
  EXPECT_NEAR(factor, 0.1 * std::log(4.0) + 1, 1e-15);
  Matrix<double> x = Matrix<double>::Random(5, 12);
  const Matrix<double> before = x;
  rot.rotate(x, Positions{5});
  for (Index i = 0; i < 5; ++i) {
    for (Index m = 0; m < 4; ++m) {
      EXPECT_NEAR(std::hypot(x(i, m), x(i, m + 4)),
                  factor * std::hypot(before(i, m), before(i, m + 4)), 1e-12);
    }
    for (Index m = 8; m < 12; ++m) EXPECT_EQ(x(i, m), before(i, m));  // past r: untouched
  }
}

template <class T>
class RotaryScalingTyped : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(RotaryScalingTyped, Scalars);

TYPED_TEST(RotaryScalingTyped, AttentionMatchesTheReference) {
  using T = TypeParam;
  for (const char* name : {"rotary_linear", "rotary_dynamic_long", "rotary_yarn", "rotary_llama3",
                           "rotary_longrope_long"}) {
    const auto c = relpos::test::encoding_case(name);
    const auto& p = c.config.at("position");
    RotaryConfig config;
    config.base = p.at("base").get<double>();
    config.rotary_dim = p.at("rotary_dim").get<Index>();
    config.interleaved = p.at("interleaved").get<bool>();
    config.scaling = scaling_from(p.at("scaling"));
    const Index d_head = c.config.at("d_model").get<Index>() / c.config.at("n_heads").get<Index>();
    // the batch's largest position (40) decides the table for both items (spec §4 ℓ)
    EXPECT_TRUE((relpos::test::matches_encoding_golden<T>(c, Rotary<T>(d_head, config)))) << name;
  }
}

TEST(RotaryScaling, LengthDependentTablesAreCachedPerKeyAndBounded) {
  RotaryConfig dynamic;
  dynamic.scaling = scaling_from(
      {{"type", "dynamic"}, {"factor", 2.0}, {"original_max_position_embeddings", 16}});
  const Rotary<double> rot(8, dynamic);
  Matrix<double> x = Matrix<double>::Random(40, 8);
  // every length up to L0 shares ℓ' = L0: one table
  for (Index len = 1; len <= 16; ++len) rot.rotate(x.topRows(len), Positions{len});
  EXPECT_EQ(rot.cached_tables(), 1u);
  // beyond L0 each length is its own table, at most kMaxLengthTables kept
  for (Index len = 17; len <= 40; ++len) rot.rotate(x.topRows(len), Positions{len});
  EXPECT_EQ(rot.cached_tables(), Rotary<double>::kMaxLengthTables);
  // an evicted table is rebuilt identically
  Matrix<double> a = x.topRows(17), b = a;
  const Rotary<double> fresh(8, dynamic);
  rot.rotate(a, Positions{17});
  fresh.rotate(b, Positions{17});
  EXPECT_TRUE(relpos::test::all_close(a, b, 0));

  RotaryConfig longrope;
  longrope.scaling = scaling_from({{"type", "longrope"},
                                   {"short_factor", {1.0, 1.5, 2.0, 3.0}},
                                   {"long_factor", {1.0, 2.0, 4.0, 8.0}},
                                   {"original_max_position_embeddings", 16},
                                   {"max_position_embeddings", 64}});
  const Rotary<double> lr(8, longrope);
  for (Index len = 1; len <= 40; ++len) lr.rotate(x.topRows(len), Positions{len});
  EXPECT_EQ(lr.cached_tables(), 2u);
  EXPECT_EQ(lr.frequencies(16).inv_freq[3], std::pow(10000.0, -6.0 / 8) / 3.0);  // short
  EXPECT_EQ(lr.frequencies(17).inv_freq[3], std::pow(10000.0, -6.0 / 8) / 8.0);  // long
}

TEST(RotaryScaling, BadValuesThrowNamingTheKey) {
  const auto message = [](auto&& make) -> std::string {
    try {
      make();
    } catch (const relpos::Error& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_NE(message([] {
              scaling_from({{"type", "cubic"}, {"factor", 2.0}});
            }).find("cubic"),
            std::string::npos);
  for (const double bad : {0.0, -2.0}) {
    RotaryConfig c;
    c.scaling = relpos::io::LinearScaling{.factor = bad};
    EXPECT_NE(message([&] { Rotary<float>(8, c); }).find("position.scaling.factor: must be > 0"),
              std::string::npos);
  }
  RotaryConfig c;
  c.scaling = scaling_from({{"type", "longrope"},
                            {"short_factor", {1.0, 1.0, 1.0, 1.0}},
                            {"long_factor", {1.0, 1.0, 1.0}},
                            {"original_max_position_embeddings", 16},
                            {"max_position_embeddings", 64}});
  EXPECT_NE(message([&] {
              Rotary<float>(8, c);
            }).find("position.scaling.long_factor: expected rotary_dim/2 = 4 numbers, got 3"),
            std::string::npos);
}

}  // namespace
