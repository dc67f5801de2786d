// Tests for include/relpos/rotary_layout.hpp: converting in_proj between the half and
// interleaved rotary layouts gives the same attention outputs (full and partial rotary, float
// and double, causal and not), there and back is the identity, the permutation touches only
// q/k rows below rotary_dim, and the relpos-convert tool rewrites a model folder so that the
// converted model computes what the original did.
#include <relpos/rotary_layout.hpp>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include <gtest/gtest.h>

#include <relpos/attention.hpp>
#include <relpos/encodings/rotary.hpp>
#include <relpos/io/config.hpp>
#include <relpos/io/safetensors.hpp>
#include <relpos/io/safetensors_writer.hpp>
#include <relpos/model.hpp>

#include "support/random.hpp"

namespace {

using relpos::Index;
using relpos::MultiHeadAttention;
using relpos::Rotary;
using relpos::RotaryConfig;
using relpos::RotaryLayout;
using relpos::Tensor3;

template <class T>
struct Tol;
template <>
struct Tol<float> {
  static constexpr double same = 1e-5;  // one float computation against a reordered one
};
template <>
struct Tol<double> {
  static constexpr double same = 1e-12;
};

using relpos::test::fill_normal;

template <class T>
Tensor3<T> random_batch(Index batch, Index len, Index d, std::uint64_t seed) {
  Tensor3<T> x(batch, len, d);
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> n(0.0, 1.0);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = static_cast<T>(n(gen));
  return x;
}

template <class T>
double max_abs_diff(const Tensor3<T>& a, const Tensor3<T>& b) {
  double worst = 0;
  for (Index i = 0; i < a.size(); ++i) {
    worst = std::max(worst, std::abs(double(a.data()[i]) - double(b.data()[i])));
  }
  return worst;
}

template <class T>
class RotaryLayoutTyped : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(RotaryLayoutTyped, Scalars);

// Converting the weights and switching `interleaved` leaves the attention output unchanged.
TYPED_TEST(RotaryLayoutTyped, ConvertedWeightsGiveTheSameOutputs) {
  using T = TypeParam;
  struct Case {
    Index d_model, n_heads;
    std::optional<Index> rotary_dim;  // absent: d_head
    bool causal;
  };
  for (const Case c :
       {Case{32, 4, std::nullopt, false}, Case{32, 2, 6, true}, Case{24, 3, 8, false}}) {
    for (const bool from_interleaved : {false, true}) {
      SCOPED_TRACE("d_model " + std::to_string(c.d_model) + " heads " + std::to_string(c.n_heads) +
                   " rotary_dim " + (c.rotary_dim ? std::to_string(*c.rotary_dim) : "d_head") +
                   " from_interleaved " + std::to_string(from_interleaved));
      const Index dh = c.d_model / c.n_heads;
      MultiHeadAttention<T, Rotary<T>> a(
          {c.d_model, c.n_heads, c.causal},
          Rotary<T>(dh, RotaryConfig{1000, c.rotary_dim, from_interleaved}));
      std::mt19937_64 gen(42);
      const double w = 1.0 / std::sqrt(double(c.d_model));
      fill_normal(a.in_proj_weight, gen, w);
      fill_normal(a.in_proj_bias, gen, 0.1);
      fill_normal(a.out_proj_weight, gen, w);
      fill_normal(a.out_proj_bias, gen, 0.1);

      MultiHeadAttention<T, Rotary<T>> b(
          {c.d_model, c.n_heads, c.causal},
          Rotary<T>(dh, RotaryConfig{1000, c.rotary_dim, !from_interleaved}));
      b.in_proj_weight = a.in_proj_weight;
      b.in_proj_bias = a.in_proj_bias;
      b.out_proj_weight = a.out_proj_weight;
      b.out_proj_bias = a.out_proj_bias;
      relpos::convert_rotary_layout(b.in_proj_weight, b.in_proj_bias, c.n_heads, c.rotary_dim,
                                    relpos::rotary_layout(from_interleaved),
                                    relpos::rotary_layout(!from_interleaved));

      const Tensor3<T> x = random_batch<T>(2, 11, c.d_model, 7);
      const Tensor3<T> ya = a.forward(x), yb = b.forward(x);
      EXPECT_LE(max_abs_diff(ya, yb), Tol<T>::same);

      // the unconverted weights with the other pairing are a different model: the test
      // above can fail
      MultiHeadAttention<T, Rotary<T>> wrong = b;
      wrong.in_proj_weight = a.in_proj_weight;
      wrong.in_proj_bias = a.in_proj_bias;
      EXPECT_GT(max_abs_diff(ya, wrong.forward(x)), 1e-3);
    }
  }
}

TYPED_TEST(RotaryLayoutTyped, ThereAndBackIsTheIdentity) {
  using T = TypeParam;
  relpos::Matrix<T> w(3 * 24, 24);
  relpos::Vector<T> b(3 * 24);
  std::mt19937_64 gen(3);
  fill_normal(w, gen, 1.0);
  fill_normal(b, gen, 1.0);
  // r = 2: one pair, (x[0], x[1]) in both layouts, so nothing moves
  EXPECT_EQ(
      relpos::rotary_layout_permutation(24, 3, 2, RotaryLayout::half, RotaryLayout::interleaved),
      relpos::rotary_layout_permutation(24, 3, 2, RotaryLayout::half, RotaryLayout::half));
  for (const std::optional<Index> r :
       {std::optional<Index>(), std::optional<Index>(4), std::optional<Index>(6)}) {
    relpos::Matrix<T> w2 = w;
    relpos::Vector<T> b2 = b;
    relpos::convert_rotary_layout(w2, b2, 3, r, RotaryLayout::half, RotaryLayout::interleaved);
    EXPECT_NE(w2, w);
    relpos::convert_rotary_layout(w2, b2, 3, r, RotaryLayout::interleaved, RotaryLayout::half);
    EXPECT_EQ(w2, w);
    EXPECT_EQ(b2, b);
  }
}

// The convention, by hand: d_head 4, r 4, half → interleaved puts row m at 2m and row
// m + r/2 at 2m + 1 in every q and k head; v rows and rows >= r stay.
TEST(RotaryLayout, PermutationByHand) {
  const std::vector<Index> p = relpos::rotary_layout_permutation(
      8, 2, std::nullopt, RotaryLayout::half, RotaryLayout::interleaved);
  const std::vector<Index> expected = {0,  2,  1,  3,  4,  6,  5,  7,  8,  10, 9,  11,
                                       12, 14, 13, 15, 16, 17, 18, 19, 20, 21, 22, 23};
  EXPECT_EQ(p, expected);
  // partial: d_head 6, r 4, one head: components 4 and 5 pass through
  const std::vector<Index> partial =
      relpos::rotary_layout_permutation(6, 1, 4, RotaryLayout::interleaved, RotaryLayout::half);
  // interleaved → half: half slot m takes interleaved 2m, slot m + 2 takes 2m + 1
  const std::vector<Index> expected_partial = {0, 2,  1,  3,  4,  5,  6,  8,  7,
                                               9, 10, 11, 12, 13, 14, 15, 16, 17};
  EXPECT_EQ(partial, expected_partial);
}

TEST(RotaryLayout, BadSizesNameTheKey) {
  try {
    relpos::rotary_layout_permutation(8, 2, 3, RotaryLayout::half, RotaryLayout::interleaved);
    FAIL() << "odd rotary_dim accepted";
  } catch (const relpos::Error& e) {
    EXPECT_NE(std::string(e.what()).find("rotary_dim"), std::string::npos) << e.what();
  }
  EXPECT_THROW(relpos::rotary_layout_permutation(9, 2, std::nullopt, RotaryLayout::half,
                                                 RotaryLayout::interleaved),
               relpos::Error);
  relpos::Matrix<float> w(6, 3);
  relpos::Vector<float> b(9);
  EXPECT_THROW(relpos::convert_rotary_layout(w, b, 1, std::nullopt, RotaryLayout::half,
                                             RotaryLayout::interleaved),
               relpos::Error);
}

// ---- relpos-convert: a model folder in, a converted folder out ----

#ifdef RELPOS_CONVERT_EXE
int run(const std::string& args) {
  return std::system((std::string(RELPOS_CONVERT_EXE) + " " + args + " 2>/dev/null").c_str());
}

TEST(RelposConvert, ConvertedModelComputesTheSame) {
  namespace fs = std::filesystem;
  const fs::path src = fs::path(RELPOS_TEST_DATA_DIR) / "models" / "rotary_partial_interleaved";
  ASSERT_TRUE(fs::exists(src / "config.json"));
  const fs::path tmp =
      fs::temp_directory_path() / ("relpos_convert_test_" + std::to_string(::getpid()));
  fs::remove_all(tmp);
  ASSERT_EQ(
      run("--model " + src.string() + " --output " + (tmp / "half").string() + " --layout half"),
      0);
  ASSERT_EQ(run("--model " + (tmp / "half").string() + " --output " + (tmp / "back").string() +
                " --layout interleaved"),
            0);

  const relpos::io::ModelConfig original = relpos::io::load_config(src / "config.json");
  const relpos::io::ModelConfig half = relpos::io::load_config(tmp / "half" / "config.json");
  EXPECT_FALSE(std::get<relpos::io::RotaryPosition>(half.position).interleaved);
  EXPECT_EQ(relpos::io::load_config(tmp / "back" / "config.json"), original);

  // there and back: the same tensors, byte for byte
  const auto a = relpos::io::SafetensorsFile::open((src / "model.safetensors").string());
  const auto c = relpos::io::SafetensorsFile::open((tmp / "back" / "model.safetensors").string());
  ASSERT_EQ(a.names(), c.names());
  for (const std::string& n : a.names()) {
    const auto ra = a.raw(n), rc = c.raw(n);
    EXPECT_TRUE(std::equal(ra.begin(), ra.end(), rc.begin(), rc.end())) << n;
  }

  // the converted model, run with the other pairing, gives the original's outputs
  const auto m0 = relpos::Model<float>::load(src.string());
  const auto m1 = relpos::Model<float>::load((tmp / "half").string());
  const Tensor3<float> x = random_batch<float>(2, 9, original.d_model, 5);
  const Tensor3<float> y0 = m0.forward(x).output, y1 = m1.forward(x).output;
  EXPECT_LE(max_abs_diff(y0, y1), 1e-5);

  // a model that is not rotary is refused
  EXPECT_NE(run("--model " + (fs::path(RELPOS_TEST_DATA_DIR) / "models" / "absolute").string() +
                " --output " + (tmp / "x").string() + " --layout half"),
            0);
  fs::remove_all(tmp);
}
#endif

}  // namespace
