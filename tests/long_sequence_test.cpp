// SPDX-License-Identifier: MIT
// Issue 14's "done when" at a small width: a one-layer model of every position type, loaded
// from a config and weights as relpos-encode loads them, runs a long input (many tiles of the
// module's shape; positions up to 65535 through explicit ids, so the angles, buckets and
// biases are those of a 65536-token input) in float, and sampled output rows equal a float64
// computation of just those rows: the per-row naive attention of tests/support (O(len·d) per
// row, no (len × len) anything) and the rest of the post-norm block written out from spec §2.
// The full-width run (d_model 512, len 65536, peak memory) is tools/long_input_memory.py.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include <gtest/gtest.h>

#include <relpos/io/safetensors_writer.hpp>
#include <relpos/model.hpp>
#include "support/naive_attention.hpp"
#include "support/random.hpp"

namespace long_sequence {
namespace {

using relpos::Index;

constexpr Index kDModel = 16, kHeads = 2, kDFf = 32;
// 4096 tokens: with d_head 8 the float module's key tiles are far shorter, so every query
// tile streams many key tiles; the positions are 61440..65535
constexpr Index kLen = 4096;
constexpr std::int64_t kFirstPosition = 65536 - kLen;

std::string config_json(const std::string& position) {
  return R"({"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32, "position": )" + position +
         "}";
}

// Every tensor the config needs, normal at 1/sqrt(fan-in) (vectors 0.1; norm weights near 1;
// KERPLE's r1, r2 in their domain, > 0), from a seeded generator.
relpos::io::SafetensorsWriter random_weights(const relpos::io::ModelConfig& c, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  relpos::io::SafetensorsWriter w;
  for (const relpos::io::TensorSpec& t : relpos::io::expected_tensors(c)) {
    std::int64_t n = 1;
    for (const std::int64_t e : t.shape) n *= e;
    const bool norm = t.name.find("norm") != std::string::npos && t.name.ends_with(".weight");
    const bool kerple = t.name.find("kerple") != std::string::npos;
    const double scale = t.shape.size() == 2 ? 1.0 / std::sqrt(double(t.shape.back())) : 0.1;
    std::normal_distribution<double> normal(0.0, scale);
    std::uniform_real_distribution<double> positive(0.1, 1.5);
    std::vector<float> v(static_cast<std::size_t>(n));
    for (float& x : v) {
      x = static_cast<float>(kerple ? positive(gen) : norm ? 1.0 + normal(gen) : normal(gen));
    }
    w.add(t.name, v, t.shape);
  }
  return w;
}

// LayerNorm of spec §2 on one row, in double.
Eigen::RowVectorXd layer_norm(const Eigen::RowVectorXd& x, const relpos::Vector<double>& w,
                              const relpos::Vector<double>& b, double eps) {
  const double mean = x.mean();
  const double var = (x.array() - mean).square().mean();
  return ((x.array() - mean) / std::sqrt(var + eps)).matrix().cwiseProduct(w.transpose()) +
         b.transpose();
}

// The float model's output rows `rows` against the double computation of those rows.
template <class Enc>
void expect_rows_match(const relpos::Encoder<double, Enc>& ref, const relpos::Tensor3<float>& y,
                       const relpos::Tensor3<float>& x, const std::vector<std::int64_t>& ids,
                       std::span<const Index> rows, double tol) {
  const relpos::Block<double, Enc>& block = ref.layers.front();
  Eigen::MatrixXd h = relpos::item(x, 0).cast<double>();  // (len, d_model)
  const relpos::Positions p{kLen, ids.data(), ids.back() + 1};
  if constexpr (relpos::EncodesInput<Enc>) {
    // absolute (spec §4): PE(p)[2m] = sin(p·ω_m), PE(p)[2m+1] = cos(p·ω_m), ω_m = base^(−2m/d)
    for (Index i = 0; i < kLen; ++i) {
      for (Index m = 0; m < kDModel / 2; ++m) {
        const double angle = double(ids[static_cast<std::size_t>(i)]) *
                             std::pow(10000.0, -2.0 * double(m) / kDModel);
        h(i, 2 * m) += std::sin(angle);
        h(i, 2 * m + 1) += std::cos(angle);
      }
    }
  }
  const relpos::SequenceInputs in{p, nullptr};
  const Eigen::MatrixXd attn =
      relpos::test::naive_attention_rows<double>(block.self_attn, h, in, rows);
  const double eps = ref.config.layer_norm_eps;
  double worst = 0;
  for (std::size_t r = 0; r < rows.size(); ++r) {
    const Index i = rows[r];
    // post-norm: y = norm1(x + attn(x)); out = norm2(y + linear2(relu(linear1(y))))
    const Eigen::RowVectorXd y1 = layer_norm(h.row(i) + attn.row(static_cast<Index>(r)),
                                             block.norm1.weight, block.norm1.bias, eps);
    Eigen::RowVectorXd hidden =
        y1 * block.ffn.linear1_weight.transpose() + block.ffn.linear1_bias.transpose();
    hidden = hidden.cwiseMax(0.0);
    const Eigen::RowVectorXd f =
        hidden * block.ffn.linear2_weight.transpose() + block.ffn.linear2_bias.transpose();
    const Eigen::RowVectorXd want = layer_norm(y1 + f, block.norm2.weight, block.norm2.bias, eps);
    for (Index c = 0; c < kDModel; ++c) {
      const double err = std::abs(double(y(0, i, c)) - want(c));
      worst = std::max(worst, err);
      EXPECT_NEAR(y(0, i, c), want(c), tol) << "row " << i << " col " << c;
    }
  }
  char text[32];
  std::snprintf(text, sizeof text, "%.2e", worst);
  ::testing::Test::RecordProperty(std::string("worst_abs_error ") + Enc::name, text);
}

// One position type: the float Model and the double Encoder from the same bytes.
void check_position_type(const std::string& position) {
  SCOPED_TRACE(position);
  const std::string json = config_json(position);
  const relpos::io::ModelConfig config = relpos::io::parse_config(json, "config.json");
  const relpos::io::SafetensorsWriter w = random_weights(config, 7);
  const relpos::Model<float> model = relpos::Model<float>::from_bytes(json, w.bytes(), "long");
  const relpos::io::SafetensorsFile file =
      relpos::io::SafetensorsFile::from_bytes(w.bytes(), "long/model.safetensors");

  relpos::Tensor3<float> x(1, kLen, kDModel);
  std::mt19937_64 gen(11);
  relpos::test::fill_normal(x, gen, 1.0);
  std::vector<std::int64_t> ids(static_cast<std::size_t>(kLen));
  for (Index i = 0; i < kLen; ++i) ids[static_cast<std::size_t>(i)] = kFirstPosition + i;
  relpos::PositionIds pid(1, kLen);
  for (Index i = 0; i < kLen; ++i) pid(0, i) = ids[static_cast<std::size_t>(i)];
  const relpos::Tensor3<float> y = model.forward(x, nullptr, &pid).output;
  ASSERT_TRUE(y.size() == kLen * kDModel);

  relpos::EncoderConfig e;
  e.d_model = kDModel;
  e.n_heads = kHeads;
  e.n_layers = 1;
  e.d_ff = kDFf;
  // first and last rows, tile edges of every plausible tile size, the middle
  const Index rows[] = {0, 1, 63, 64, 255, 256, 1000, kLen / 2, kLen - 257, kLen - 2, kLen - 1};
  std::visit(
      [&](const auto& pc) {
        using Enc = relpos::io::EncodingFor<double, std::decay_t<decltype(pc)>>;
        const auto ref = relpos::Encoder<double, Enc>::load(
            file, e, Enc::loader(pc, config.position_context(), file));
        // float against float64 through attention over 4096 keys and two LayerNorms of
        // O(1) outputs: a few float ulps of the accumulated terms (the tiled kernel's own
        // float64 check, tiled_attention_test, holds the attention output to the same 1e-5)
        expect_rows_match(ref, y, x, ids, rows, 1e-5);
      },
      config.position);
}

TEST(LongSequence, EveryPositionTypeMatchesFloat64OnSampledRows) {
  for (const char* position : {
           R"({"type": "none"})",
           R"({"type": "absolute"})",
           R"({"type": "learned", "max_distance": 64, "keys": true, "values": true})",
           R"({"type": "sinusoidal", "keys": true, "values": true})",
           R"({"type": "rotary"})",
           R"({"type": "t5"})",
           R"({"type": "alibi"})",
           R"({"type": "xl"})",
           R"({"type": "kerple", "form": "log"})",
           R"({"type": "deberta"})",
       }) {
    check_position_type(position);
  }
}

}  // namespace
}  // namespace long_sequence
