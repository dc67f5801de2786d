// SPDX-License-Identifier: MIT
// Tests for include/relpos/encodings/xl.hpp: the halves-concatenated sinusoid and r_net rows,
// attention against the float64 reference (tools/golden_t5_alibi_xl_scaling.py: unclamped, clamped
// and causal, sparse explicit ids), shift invariance, errors.
#include <relpos/encodings/xl.hpp>

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include <relpos/attention.hpp>

#include "support/counting_new.hpp"
#include "support/encoding_golden.hpp"
#include "support/golden.hpp"

using relpos::test::g_allocations;

namespace {

using relpos::Index;
using relpos::Matrix;
using relpos::XlConfig;
using relpos::XlRelative;

XlConfig xl_config(double base, std::optional<Index> max_distance = std::nullopt,
                   std::string prefix = "") {
  XlConfig c;
  c.base = base;
  c.max_distance = max_distance;
  c.tensor_prefix = std::move(prefix);
  return c;
}

TEST(XlSinusoid, HalvesAreSinThenCos) {
  std::vector<double> r(8);
  relpos::xl_sinusoid(-3.0, 8, 100.0, r.data());
  for (Index k = 0; k < 4; ++k) {
    const double omega = std::pow(100.0, -2.0 * double(k) / 8.0);
    EXPECT_DOUBLE_EQ(r[std::size_t(k)], std::sin(-3.0 * omega));
    EXPECT_DOUBLE_EQ(r[std::size_t(4 + k)], std::cos(-3.0 * omega));
  }
}

// Row c (δ = p_j − p_i = c) is r_net · R(Δ) with Δ = p_i − p_j = −c (Transformer-XL sign).
TEST(XlRelative, RowsAreRNetTimesTheSinusoidOfMinusDelta) {
  const Index d = 8, h = 2;
  Matrix<double> w(d, d);
  for (Index i = 0; i < d; ++i) {
    for (Index j = 0; j < d; ++j) w(i, j) = std::sin(double(3 * i + j));
  }
  auto u = std::make_shared<const Matrix<double>>(Matrix<double>::Zero(h, d / h));
  const XlRelative<double> enc(d, h, xl_config(50.0, 4), w, u, u);
  const auto rows = enc.head_key_rows(-4, 4);
  for (std::int64_t c = -6; c <= 6; ++c) {
    const std::int64_t clamped = enc.clamp_distance(c);
    EXPECT_EQ(clamped, std::max<std::int64_t>(-4, std::min<std::int64_t>(4, c)));
    Eigen::VectorXd r(d);
    relpos::xl_sinusoid(-double(clamped), d, 50.0, r.data());
    const Eigen::VectorXd want = w * r;
    for (Index k = 0; k < d; ++k) EXPECT_NEAR(rows.view()(clamped + 4, k), want[k], 1e-14);
  }
}

template <class T>
class XlTyped : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(XlTyped, Scalars);

template <class T>
XlRelative<T> xl_from_case(const relpos::test::EncodingCase& c) {
  const auto& p = c.config.at("position");
  XlConfig config = xl_config(p.at("base").get<double>(), std::nullopt, "self_attn.");
  if (!p.at("max_distance").is_null()) config.max_distance = p.at("max_distance").get<Index>();
  auto u = std::make_shared<const Matrix<T>>(c.file.matrix<T>("position.r_w_bias"));
  auto v = std::make_shared<const Matrix<T>>(c.file.matrix<T>("position.r_r_bias"));
  return XlRelative<T>(c.config.at("d_model").get<Index>(), c.config.at("n_heads").get<Index>(),
                       config, c.file.matrix<T>("self_attn.r_net.weight"), u, v);
}

TYPED_TEST(XlTyped, AttentionMatchesTheReference) {
  using T = TypeParam;
  for (const char* name : {"xl", "xl_clamped_causal", "xl_sparse_ids"}) {
    const auto c = relpos::test::encoding_case(name);
    EXPECT_TRUE((relpos::test::matches_encoding_golden<T>(c, xl_from_case<T>(c)))) << name;
  }
}

TYPED_TEST(XlTyped, ScoresDependOnlyOnTheDistance) {
  using T = TypeParam;
  const auto c = relpos::test::encoding_case("xl_clamped_causal");
  EXPECT_TRUE((relpos::test::shift_changes_nothing<T>(c, xl_from_case<T>(c), 300,
                                                      std::is_same_v<T, float> ? 1e-5 : 1e-12)));
}

TEST(XlRelative, BadShapesAndValuesThrowNamingThem) {
  const auto message = [](auto&& make) -> std::string {
    try {
      make();
    } catch (const relpos::Error& e) {
      return e.what();
    }
    return "no error";
  };
  auto u = std::make_shared<const Matrix<float>>(Matrix<float>::Zero(2, 4));
  auto bad = std::make_shared<const Matrix<float>>(Matrix<float>::Zero(2, 3));
  const XlConfig ok = xl_config(10000.0, std::nullopt, "layers.1.self_attn.");
  EXPECT_NE(message([&] { XlRelative<float>(8, 2, ok, Matrix<float>::Zero(8, 7), u, u); })
                .find("layers.1.self_attn.r_net.weight: expected [d_model=8, d_model=8], got "
                      "[8, 7]"),
            std::string::npos);
  EXPECT_NE(message([&] {
              XlRelative<float>(8, 2, ok, Matrix<float>::Zero(8, 8), bad, u);
            }).find("position.r_w_bias: expected [n_heads=2, d_head=4], got [2, 3]"),
            std::string::npos);
  EXPECT_NE(message([&] {
              XlRelative<float>(8, 2, ok, Matrix<float>::Zero(8, 8), u, bad);
            }).find("position.r_r_bias"),
            std::string::npos);
  EXPECT_NE(message([&] {
              XlRelative<float>(8, 2, xl_config(-1.0), Matrix<float>::Zero(8, 8), u, u);
            }).find("xl: position.base: must be > 0, got -1.0"),
            std::string::npos);
  EXPECT_NE(message([&] {
              XlRelative<float>(8, 2, xl_config(10000.0, -2), Matrix<float>::Zero(8, 8), u, u);
            }).find("xl: position.max_distance: must be >= 0, got -2"),
            std::string::npos);
  auto u3 = std::make_shared<const Matrix<float>>(Matrix<float>::Zero(3, 1));
  EXPECT_NE(message([&] {
              XlRelative<float>(3, 3, {}, Matrix<float>::Zero(3, 3), u3, u3);
            }).find("xl: position.type: xl needs an even d_model, got 3"),
            std::string::npos);
}

// A warm forward allocates nothing: the r rows come from the cached table, no len × len × d.
TEST(XlRelative, WarmForwardDoesNotAllocate) {
  const auto c = relpos::test::encoding_case("xl_clamped_causal");
  const auto attn = relpos::MultiHeadAttention<float, XlRelative<float>>::load(
      c.file, "self_attn.", relpos::test::encoding_case_attention_config(c.config),
      xl_from_case<float>(c));
  const relpos::Tensor3<float> x = c.file.tensor3<float>("input");
  relpos::Workspace<float> ws;
  relpos::Tensor3<float> out;
  attn.forward(x, out, {}, ws);  // warm-up: the workspace and the table grow to this shape
  const long before = g_allocations.load();
  attn.forward(x, out, {}, ws);
  EXPECT_EQ(g_allocations.load() - before, 0);
}

}  // namespace
