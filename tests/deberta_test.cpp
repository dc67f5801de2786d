// SPDX-License-Identifier: MIT
// Tests for include/relpos/encodings/deberta.hpp: the bucket against the spec's check values
// and its formula (tools/golden_deberta.py), attention against the spec's forward written in
// torch float64 (c2p and p2c together and alone, separate projections, no rel_norm, lengths
// beyond M, padding, a causal mask, spread ids, the default S and M; the script checks that
// forward against Hugging Face's DisentangledSelfAttention), shift invariance, config errors.
// The kernel against the naive path across many tiles is in tiled_attention_test.
#include <relpos/encodings/deberta.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <relpos/attention.hpp>
#include <relpos/io/config.hpp>
#include <relpos/io/safetensors.hpp>

#include "support/encoding_golden.hpp"
#include "support/golden.hpp"

namespace {

using relpos::DebertaConfig;
using relpos::DebertaRelative;
using relpos::Index;

// The spec's check values (S 256, M 512), δ → c.
TEST(DebertaBucket, SpecCheckValues) {
  const std::vector<std::pair<std::int64_t, std::int64_t>> check = {
      {0, 256}, {1, 255}, {-1, 257}, {128, 128},  {129, 127},  {300, 49},
      {511, 1}, {512, 0}, {4000, 0}, {-300, 463}, {-511, 511},
  };
  for (const auto& [delta, c] : check) EXPECT_EQ(relpos::deberta_row(delta, 256, 512), c) << delta;
}

// Every δ of the golden file at three (S, M), and relpos' clamped distance b: monotone in δ
// (attention's tiles need it) and row S − b.
TEST(DebertaBucket, RowsMatchTheFormulaAndTheClampIsMonotone) {
  const auto f = relpos::test::golden_file("deberta/bucket.safetensors");
  const std::vector<std::int64_t> delta = f.values<std::int64_t>("delta");
  for (const auto& [s, m] : std::vector<std::pair<Index, Index>>{{256, 512}, {8, 20}, {2, 3}}) {
    const std::vector<std::int64_t> want =
        f.values<std::int64_t>("row_" + std::to_string(s) + "_" + std::to_string(m));
    ASSERT_EQ(want.size(), delta.size());
    relpos::Matrix<float> rel = relpos::Matrix<float>::Zero(2 * s, 4);
    const DebertaRelative<float> enc(4, 1, {s, m, true, false, true, false}, rel,
                                     {relpos::Matrix<float>::Identity(4, 4), {}}, {});
    std::int64_t previous = -(std::int64_t(1) << 62);
    for (std::size_t k = 0; k < delta.size(); ++k) {
      EXPECT_EQ(relpos::deberta_row(delta[k], s, m), want[k]) << "S " << s << " delta " << delta[k];
      const std::int64_t b = enc.clamp_distance(delta[k]);
      EXPECT_EQ(s - b, want[k]) << "S " << s << " delta " << delta[k];
      EXPECT_LE(previous, b) << "S " << s << " delta " << delta[k];
      previous = b;
    }
  }
}

struct Case {
  relpos::io::SafetensorsFile file;
  nlohmann::json config;
  DebertaConfig position;
};

Case load_case(const std::string& name) {
  auto f = relpos::test::golden_file("deberta/attention_" + name + ".safetensors");
  auto config = nlohmann::json::parse(f.metadata().at("config"));
  const auto& p = config.at("position");
  DebertaConfig d{p.at("position_buckets").get<Index>(),
                  p.at("max_relative_positions").get<Index>(),
                  p.at("c2p").get<bool>(),
                  p.at("p2c").get<bool>(),
                  p.at("share_att_key").get<bool>(),
                  p.at("rel_norm").get<bool>()};
  return {std::move(f), std::move(config), d};
}

// The layer of a case, its encoding made by the model-file loader (layer 0).
template <class T>
auto layer_of(const Case& c) {
  const relpos::ModelShape shape{.d_model = c.config.at("d_model").get<Index>(),
                                 .n_heads = c.config.at("n_heads").get<Index>(),
                                 .n_layers = 1,
                                 .causal = c.config.at("causal").get<bool>(),
                                 .bias = true,
                                 .layer_norm_eps = c.config.at("layer_norm_eps").get<double>()};
  auto enc = DebertaRelative<T>::loader(c.position, shape, c.file)(0);
  return relpos::MultiHeadAttention<T, DebertaRelative<T>>::load(
      c.file, "layers.0.self_attn.", {shape.d_model, shape.n_heads, shape.causal}, std::move(enc));
}

template <class T>
relpos::Tensor3<T> forward(const Case& c, relpos::PositionIds* shifted = nullptr) {
  const auto attn = layer_of<T>(c);
  const auto& f = c.file;
  const relpos::Tensor3<T> x = f.tensor3<T>("input");
  const Index batch = x.dimension(0), len = x.dimension(1);
  const std::vector<std::uint8_t> raw = f.values<std::uint8_t>("padding_mask", {batch, len});
  relpos::PaddingMask mask(batch, len);
  for (Index i = 0; i < mask.size(); ++i) mask.data()[i] = raw[static_cast<std::size_t>(i)] != 0;
  relpos::PositionIds ids;
  relpos::BatchInputs in{mask, nullptr};
  if (shifted != nullptr) {
    in.positions = *shifted;
  } else if (f.contains("position_ids")) {
    const std::vector<std::int64_t> v = f.values<std::int64_t>("position_ids", {batch, len});
    ids.resize(batch, len);
    for (Index i = 0; i < ids.size(); ++i) ids.data()[i] = v[static_cast<std::size_t>(i)];
    in.positions = ids;
  }
  return attn.forward(x, in);
}

const char* const kCases[] = {
    "c2p_p2c",     "c2p",       "p2c",        "separate_proj", "separate_proj_c2p",
    "no_rel_norm", "causal_h2", "sparse_ids", "defaults_ids",  "defaults_plain",
    "s16_m40"};

template <class T>
class DebertaTyped : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(DebertaTyped, Scalars);

TYPED_TEST(DebertaTyped, AttentionMatchesTheReference) {
  using T = TypeParam;
  double worst = 0;
  for (const char* name : kCases) {
    const Case c = load_case(name);
    const relpos::Tensor3<T> got = forward<T>(c);
    const relpos::Tensor3<double> want = c.file.tensor3<double>("output");
    EXPECT_TRUE(relpos::test::all_close(got, want, relpos::test::EncodingTol<T>::golden)) << name;
    for (Index i = 0; i < want.size(); ++i) {
      worst = std::max(worst, std::abs(static_cast<double>(got.data()[i]) - want.data()[i]));
    }
  }
  std::cout << "deberta attention, " << (std::is_same_v<T, float> ? "float" : "double")
            << ": max |error| " << worst << " over " << std::size(kCases) << " cases\n";
}

// Scores depend on p_j − p_i only: every position shifted by 7000 changes nothing.
TYPED_TEST(DebertaTyped, ScoresDependOnlyOnTheDistance) {
  using T = TypeParam;
  for (const char* name : {"c2p_p2c", "s16_m40"}) {
    const Case c = load_case(name);
    const relpos::Tensor3<T> x = c.file.tensor3<T>("input");
    relpos::PositionIds shifted(x.dimension(0), x.dimension(1));
    for (Index b = 0; b < shifted.rows(); ++b) {
      for (Index i = 0; i < shifted.cols(); ++i) shifted(b, i) = 7000 + i;
    }
    EXPECT_TRUE(relpos::test::all_close(forward<T>(c, &shifted), forward<T>(c),
                                        std::is_same_v<T, float> ? 1e-6 : 1e-13))
        << name;
  }
}

std::string config_error(const std::string& position) {
  const std::string text =
      R"({"d_model": 16, "n_heads": 4, "n_layers": 1, "d_ff": 8, "position": )" + position + "}";
  try {
    relpos::io::parse_config(text);
    return "";
  } catch (const relpos::Error& e) {
    return e.what();
  }
}

TEST(DebertaConfig, ValuesOutsideTheSpecNameTheKey) {
  EXPECT_EQ(config_error(R"({"type": "deberta"})"), "");
  EXPECT_EQ(
      config_error(R"({"type": "deberta", "position_buckets": 2, "max_relative_positions": 3})"),
      "");
  EXPECT_EQ(config_error(R"({"type": "deberta", "position_buckets": 7})"),
            "config.json: position.position_buckets: must be even, got 7");
  EXPECT_EQ(config_error(R"({"type": "deberta", "position_buckets": 0})"),
            "config.json: position.position_buckets: must be >= 2, got 0");
  EXPECT_EQ(config_error(
                R"({"type": "deberta", "position_buckets": 256, "max_relative_positions": 129})"),
            "config.json: position.max_relative_positions: must be in [position_buckets/2 + 2 = "
            "130, 1073741824], got 129");
  EXPECT_EQ(config_error(R"({"type": "deberta", "c2p": 1})"),
            "config.json: position.c2p: expected a boolean, got an integer 1");
  EXPECT_EQ(config_error(R"({"type": "deberta", "buckets": 8})"),
            "config.json: position.buckets: unknown key for position type \"deberta\"");
  // the same rule from code
  try {
    const DebertaRelative<float> enc(16, 4, {6, 4, true, true, true, true},
                                     relpos::Matrix<float>::Zero(12, 16), {}, {});
    ADD_FAILURE() << "no error for M = 4 <= S/2 + 1";
  } catch (const relpos::Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "deberta: position.max_relative_positions: must be in [position_buckets/2 + 2 = 5, "
              "1073741824], got 4");
  }
}

TEST(DebertaConfig, TensorsFollowTheFlags) {
  const auto names = [](const std::string& position) {
    const auto c = relpos::io::parse_config(
        R"({"d_model": 16, "n_heads": 4, "n_layers": 2, "d_ff": 8, "position": )" + position + "}");
    std::vector<std::string> out;
    for (const auto& t : relpos::io::position_tensors(c.position, c.position_context())) {
      out.push_back(t.name + std::to_string(t.shape[0]));
    }
    for (const auto& t : relpos::io::position_layer_tensors(c.position, c.position_context(), 1)) {
      out.push_back(t.name + std::to_string(t.shape[0]));
    }
    return out;
  };
  EXPECT_EQ(names(R"({"type": "deberta"})"),
            (std::vector<std::string>{"position.rel_embeddings512", "position.rel_norm.weight16",
                                      "position.rel_norm.bias16"}));
  EXPECT_EQ(names(R"({"type": "deberta", "position_buckets": 4, "max_relative_positions": 8,
                      "rel_norm": false, "share_att_key": false, "c2p": false})"),
            (std::vector<std::string>{"position.rel_embeddings8",
                                      "layers.1.self_attn.pos_query_proj.weight16",
                                      "layers.1.self_attn.pos_query_proj.bias16"}));
}

TEST(DebertaRelative, ShapesAreChecked) {
  const auto error = [](Index rel_rows, Index weight_rows) {
    try {
      const DebertaRelative<double> enc(16, 4, {8, 20, true, false, false, false},
                                        relpos::Matrix<double>::Zero(rel_rows, 16),
                                        {relpos::Matrix<double>::Zero(weight_rows, 16), {}}, {});
      return std::string();
    } catch (const relpos::Error& e) {
      return std::string(e.what());
    }
  };
  EXPECT_EQ(error(16, 16), "");
  EXPECT_EQ(error(15, 16),
            "position.rel_embeddings: expected [2*position_buckets=16, d_model=16], got [15, 16]");
  EXPECT_EQ(error(16, 12), "deberta: key projection weight: expected [16, 16], got [12, 16]");
}

}  // namespace
