// SPDX-License-Identifier: MIT
// Tests for include/relpos/encodings/kerple.hpp: the bias of both forms against the formula
// (tools/golden_kerple.py, float64), attention against the float64 reference with padding,
// causal masks and spread position ids, shift invariance, the domain errors of spec §4. A model
// file whose r1 or r2 leaves the domain is in hostile_input_test (it writes files, so it runs in
// a program without the counting operator new); whole kerple models against PyTorch are in
// model_test and encode_cli_test (tests/data/models/kerple_*, tools/export_models.py).
#include <relpos/encodings/kerple.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>

#include <relpos/attention.hpp>

#include "support/encoding_golden.hpp"
#include "support/golden.hpp"

namespace {

using relpos::Index;
using relpos::KerpleBias;
using relpos::KerpleForm;

template <class T>
relpos::SharedMatrix<T> column(const std::vector<double>& v) {
  relpos::Matrix<T> m(static_cast<Index>(v.size()), 1);
  for (std::size_t i = 0; i < v.size(); ++i) m(static_cast<Index>(i), 0) = static_cast<T>(v[i]);
  return relpos::share(m);
}

KerpleForm form_of(const std::string& name) {
  return name == "log" ? KerpleForm::log : KerpleForm::power;
}

template <class T>
class KerpleTyped : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(KerpleTyped, Scalars);

// Every distance of the golden file, asked for once as one span straddling 0 (the mirrored
// path) and once one distance at a time.
TYPED_TEST(KerpleTyped, BiasMatchesTheFormula) {
  using T = TypeParam;
  const double tol = std::is_same_v<T, float> ? 1e-6 : 1e-13;  // relative, and absolute near 0
  const auto f = relpos::test::golden_file("kerple/bias.safetensors");
  const std::vector<std::int64_t> delta = f.values<std::int64_t>("delta");
  for (const std::string form : {"log", "power"}) {
    const std::vector<double> r1 = f.values<double>(form + ".r1");
    const auto n_heads = static_cast<Index>(r1.size());
    const KerpleBias<T> enc(n_heads, {.form = form_of(form)}, column<T>(r1),
                            column<T>(f.values<double>(form + ".r2")));
    const relpos::Matrix<double> want = f.matrix<double>(form + ".bias");
    ASSERT_EQ(want.cols(), static_cast<Index>(delta.size()));
    std::vector<T> near(129);
    for (Index h = 0; h < n_heads; ++h) {
      enc.score_bias(h, -64, 64, near.data());
      for (std::size_t k = 0; k < delta.size(); ++k) {
        const double expected = want(h, static_cast<Index>(k));
        T one{};
        enc.score_bias(h, delta[k], delta[k], &one);
        EXPECT_NEAR(one, expected, tol * std::max(1.0, std::abs(expected)))
            << form << " head " << h << " delta " << delta[k];
        if (delta[k] >= -64 && delta[k] <= 64) {
          EXPECT_EQ(near[static_cast<std::size_t>(delta[k] + 64)], one)
              << form << " head " << h << " delta " << delta[k];
        }
      }
    }
  }
}

template <class T>
KerpleBias<T> kerple_from_case(const relpos::test::EncodingCase& c) {
  return KerpleBias<T>(c.config.at("n_heads").get<Index>(),
                       {.form = form_of(c.config.at("position").at("form").get<std::string>())},
                       relpos::share(c.file.vector<T>("position.kerple_r1")),
                       relpos::share(c.file.vector<T>("position.kerple_r2")));
}

TYPED_TEST(KerpleTyped, AttentionMatchesTheReference) {
  using T = TypeParam;
  // both forms; 6 heads with a causal mask; ids spread wide enough for the sparse path
  for (const char* name :
       {"log", "power", "log_causal_h6", "power_causal", "log_sparse_ids", "power_sparse_ids"}) {
    const auto c = relpos::test::encoding_case(name, "kerple");
    EXPECT_TRUE((relpos::test::matches_encoding_golden<T>(c, kerple_from_case<T>(c)))) << name;
  }
}

TYPED_TEST(KerpleTyped, ScoresDependOnlyOnTheDistance) {
  using T = TypeParam;
  for (const char* name : {"log", "power"}) {
    const auto c = relpos::test::encoding_case(name, "kerple");
    EXPECT_TRUE((relpos::test::shift_changes_nothing<T>(c, kerple_from_case<T>(c), 7000,
                                                        std::is_same_v<T, float> ? 1e-6 : 1e-13)))
        << name;
  }
}

std::string error_of(KerpleForm form, const std::vector<double>& r1, const std::vector<double>& r2,
                     Index n_heads = 3) {
  try {
    KerpleBias<double> enc(n_heads, {.form = form}, column<double>(r1), column<double>(r2));
    return "";
  } catch (const relpos::Error& e) {
    return e.what();
  }
}

TEST(KerpleBias, ValuesOutsideTheDomainNameTheTensorAndTheHead) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  const std::vector<double> ok = {0.5, 1.0, 2.0};
  EXPECT_EQ(error_of(KerpleForm::power, ok, ok), "");  // r2 = 2 is inside the power domain
  EXPECT_EQ(error_of(KerpleForm::log, ok, {0.5, 7.0, 2.5}), "");  // log: no upper bound
  EXPECT_EQ(error_of(KerpleForm::log, {0.5, 0.0, 1.0}, ok),
            "position.kerple_r1[1]: must be a finite number > 0, got 0.0");
  EXPECT_EQ(error_of(KerpleForm::log, ok, {0.5, 1.0, -1.0}),
            "position.kerple_r2[2]: must be a finite number > 0, got -1.0");
  EXPECT_EQ(error_of(KerpleForm::power, {nan, 1.0, 1.0}, ok),
            "position.kerple_r1[0]: must be a finite number > 0, got nan");
  EXPECT_EQ(error_of(KerpleForm::log, ok, {inf, 1.0, 1.0}),
            "position.kerple_r2[0]: must be a finite number > 0, got inf");
  EXPECT_EQ(error_of(KerpleForm::power, ok, {0.5, 2.25, 1.0}),
            "position.kerple_r2[1]: must be <= 2 in the power form, got 2.25");
}

TEST(KerpleBias, ShapesAndTheRequiredFormAreChecked) {
  const std::vector<double> two = {0.5, 1.0};
  const std::vector<double> three = {0.5, 1.0, 1.5};
  EXPECT_EQ(error_of(KerpleForm::log, two, three),
            "position.kerple_r1: expected [n_heads=3], got [2, 1]");
  EXPECT_EQ(error_of(KerpleForm::log, three, two),
            "position.kerple_r2: expected [n_heads=3], got [2, 1]");
  try {
    KerpleBias<float> enc(3, {}, column<float>(three), column<float>(three));
    ADD_FAILURE() << "no error without a form";
  } catch (const relpos::Error& e) {
    EXPECT_EQ(std::string(e.what()), "kerple: position.form: required key is missing");
  }
  try {
    KerpleBias<float> enc(3, {.form = KerpleForm::log}, nullptr, column<float>(three));
    ADD_FAILURE() << "no error without r1";
  } catch (const relpos::Error& e) {
    EXPECT_EQ(std::string(e.what()), "position.kerple_r1: expected [n_heads=3], got nothing");
  }
  // a row is as good as a column
  relpos::Matrix<float> row(1, 3);
  row << 0.5F, 1.0F, 1.5F;
  const KerpleBias<float> from_rows(3, {.form = KerpleForm::power}, relpos::share(row),
                                    relpos::share(row));
  EXPECT_EQ(from_rows.n_heads(), 3);
}

TEST(KerpleBias, AttentionRefusesAnEncodingBuiltForOtherHeads) {
  const std::vector<double> three = {0.5, 1.0, 1.5};
  const KerpleBias<double> enc(3, {.form = KerpleForm::log}, column<double>(three),
                               column<double>(three));
  try {
    relpos::MultiHeadAttention<double, KerpleBias<double>> attn({8, 4, false}, enc);
    ADD_FAILURE() << "no error for 3 heads in a 4-head layer";
  } catch (const relpos::Error& e) {
    EXPECT_NE(std::string(e.what()).find("n_heads"), std::string::npos) << e.what();
  }
}

}  // namespace
