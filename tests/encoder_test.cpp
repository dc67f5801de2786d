// Tests for include/relpos/encoder.hpp: the whole stack against torch.nn.TransformerEncoder
// (type none, with embedding and output head) and against tools/reference.py for every
// position type, plus translation invariance, causality and thread-count independence.
#include <relpos/encoder.hpp>

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <relpos/encodings/absolute.hpp>
#include <relpos/encodings/additive.hpp>
#include <relpos/encodings/learned.hpp>
#include <relpos/encodings/rotary.hpp>
#include <relpos/encodings/sinusoidal.hpp>
#include <relpos/threads.hpp>

#include "support/golden.hpp"

namespace {

using relpos::Index;
using relpos::Tensor3;
using json = nlohmann::json;

template <class T>
constexpr double encoder_tol() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-10;
}

relpos::EncoderConfig encoder_config(const json& c) {
  relpos::EncoderConfig e;
  e.d_model = c.at("d_model");
  e.n_heads = c.at("n_heads");
  e.n_layers = c.at("n_layers");
  e.d_ff = c.at("d_ff");
  e.activation =
      c.value("activation", "relu") == "gelu" ? relpos::Activation::gelu : relpos::Activation::relu;
  e.norm_first = c.value("norm_first", false);
  e.layer_norm_eps = c.value("layer_norm_eps", 1e-5);
  e.final_norm = c.value("final_norm", false);
  e.causal = c.value("causal", false);
  e.vocab_size = c.value("vocab_size", Index(0));
  e.output_head = c.value("output_head", false);
  return e;
}

// The optional inputs of a golden file, owned.
struct Inputs {
  std::optional<relpos::PaddingMask> mask;
  std::optional<relpos::PositionIds> ids;
  relpos::BatchInputs view() const {
    relpos::BatchInputs in;
    if (mask) in.padding = *mask;
    if (ids) in.positions = *ids;
    return in;
  }
};

Inputs inputs_of(const relpos::io::SafetensorsFile& f, Index batch, Index len) {
  Inputs in;
  if (f.contains("padding_mask")) {
    const std::vector<std::uint8_t> raw = f.values<std::uint8_t>("padding_mask");
    in.mask = relpos::PaddingMask(batch, len);
    for (Index i = 0; i < in.mask->size(); ++i) in.mask->data()[i] = raw[std::size_t(i)] != 0;
  }
  if (f.contains("position_ids")) {
    const std::vector<std::int64_t> raw = f.values<std::int64_t>("position_ids");
    in.ids = relpos::PositionIds(batch, len);
    for (Index i = 0; i < in.ids->size(); ++i) in.ids->data()[i] = raw[std::size_t(i)];
  }
  return in;
}

template <class T>
class EncoderTyped : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(EncoderTyped, Scalars);

// ---- none: torch.nn.TransformerEncoder ----

TYPED_TEST(EncoderTyped, MatchesTorchTransformerEncoder) {
  using T = TypeParam;
  for (const char* name : {"none_encoder_post_relu", "none_encoder_pre_gelu_final_causal"}) {
    SCOPED_TRACE(name);
    const auto f = relpos::test::golden_file(std::string("attention/") + name + ".safetensors");
    const auto cfg = encoder_config(json::parse(f.metadata().at("config")));
    const auto model = relpos::Encoder<T>::load(f, cfg);
    const Tensor3<T> x = f.tensor3<T>("input");
    const Inputs in = inputs_of(f, x.dimension(0), x.dimension(1));
    EXPECT_TRUE(relpos::test::all_close(model.forward(x, in.view()), f.tensor3<double>("output"),
                                        encoder_tol<T>()));
  }
}

TYPED_TEST(EncoderTyped, TokenIdsThroughEmbeddingAndOutputHead) {
  using T = TypeParam;
  const auto f = relpos::test::golden_file("attention/none_encoder_vocab_head.safetensors");
  const auto cfg = encoder_config(json::parse(f.metadata().at("config")));
  const auto model = relpos::Encoder<T>::load(f, cfg);
  const auto& shape = f.info("input_ids").shape;
  relpos::TokenIds ids(shape[0], shape[1]);
  const std::vector<std::int64_t> raw = f.values<std::int64_t>("input_ids");
  for (Index i = 0; i < ids.size(); ++i) ids.data()[i] = raw[std::size_t(i)];
  const Inputs in = inputs_of(f, ids.rows(), ids.cols());
  const Tensor3<T> out = model.forward_ids(ids, in.view());
  EXPECT_TRUE(relpos::test::all_close(out, f.tensor3<double>("output"), encoder_tol<T>()));
  Tensor3<T> logits;
  model.logits(out, logits);
  EXPECT_TRUE(relpos::test::all_close(logits, f.tensor3<double>("logits"), 10 * encoder_tol<T>()))
      << "logits are ~10x larger than the hidden states";

  ids(1, 2) = cfg.vocab_size;
  try {
    (void)model.forward_ids(ids);
    FAIL();
  } catch (const relpos::Error& e) {
    EXPECT_STREQ(e.what(), "input_ids[1, 2]: expected 0 <= id < vocab_size 11, got 11");
  }
}

TEST(Encoder, MissingTensorAndBadConfigAreNamed) {
  const auto f = relpos::test::golden_file("attention/none_encoder_post_relu.safetensors");
  auto cfg = encoder_config(json::parse(f.metadata().at("config")));
  cfg.final_norm = true;  // the file has no norm.weight
  try {
    (void)relpos::Encoder<float>::load(f, cfg);
    FAIL();
  } catch (const relpos::Error& e) {
    EXPECT_NE(std::string(e.what()).find("norm.weight"), std::string::npos) << e.what();
  }
  cfg.final_norm = false;
  cfg.n_layers = 3;  // the file has two
  try {
    (void)relpos::Encoder<float>::load(f, cfg);
    FAIL();
  } catch (const relpos::Error& e) {
    EXPECT_NE(std::string(e.what()).find("layers.2."), std::string::npos) << e.what();
  }
  cfg.n_layers = 2;
  cfg.n_heads = 5;
  EXPECT_THROW((void)relpos::Encoder<float>::load(f, cfg), relpos::Error);
}

// ---- every position type: tools/reference.py ----

template <class T>
struct Makers {
  // Each returns the encoding of layer n, loading its tensors from f.
  static relpos::SinusoidalRelative<T> sinusoidal(const json& c, const relpos::io::SafetensorsFile&,
                                                  Index) {
    const json& p = c.at("position");
    relpos::SinusoidalConfig s;
    s.base = p.value("base", 10000.0);
    if (p.contains("max_distance")) s.max_distance = p.at("max_distance").get<Index>();
    s.keys = p.value("keys", true);
    s.values = p.value("values", false);
    return relpos::SinusoidalRelative<T>(Index(c.at("d_model")) / Index(c.at("n_heads")), s);
  }
  static relpos::LearnedRelative<T> learned(const json& c, const relpos::io::SafetensorsFile& f,
                                            Index n) {
    const json& p = c.at("position");
    const Index dh = Index(c.at("d_model")) / Index(c.at("n_heads"));
    relpos::LearnedConfig l;
    l.max_distance = p.at("max_distance").get<Index>();
    l.keys = p.value("keys", true);
    l.values = p.value("values", true);
    l.tensor_prefix = "layers." + std::to_string(n) + ".self_attn.";
    const Index rows = 2 * *l.max_distance + 1;
    relpos::Matrix<T> key, value;
    if (l.keys) key = f.matrix<T>(l.tensor_prefix + "relative_key", rows, dh);
    if (l.values) value = f.matrix<T>(l.tensor_prefix + "relative_value", rows, dh);
    return relpos::LearnedRelative<T>(dh, l, std::move(key), std::move(value));
  }
  static relpos::Rotary<T> rotary(const json& c, const relpos::io::SafetensorsFile&, Index) {
    const json& p = c.at("position");
    relpos::RotaryConfig r;
    r.base = p.value("base", 10000.0);
    if (p.contains("rotary_dim")) r.rotary_dim = p.at("rotary_dim").get<Index>();
    r.interleaved = p.value("interleaved", false);
    return relpos::Rotary<T>(Index(c.at("d_model")) / Index(c.at("n_heads")), r);
  }
  static relpos::AbsoluteSinusoidal<T> absolute(const json& c, const relpos::io::SafetensorsFile&,
                                                Index) {
    relpos::AbsoluteConfig a;
    a.base = c.at("position").value("base", 10000.0);
    return relpos::AbsoluteSinusoidal<T>(c.at("d_model"), a);
  }
  static relpos::Additive<T> additive(const json& c, const relpos::io::SafetensorsFile& f, Index) {
    const json& p = c.at("position");
    const Index d = c.at("d_model");
    relpos::AdditiveConfig a;
    a.window = p.at("window").get<Index>();
    a.base = p.value("base", 10000.0);
    if (p.contains("max_distance")) a.max_distance = p.at("max_distance").get<Index>();
    if (p.at("source") == "sinusoidal") return relpos::Additive<T>(d, a);
    a.source = relpos::AdditiveSource::learned;
    return relpos::Additive<T>(d, a, f.matrix<T>("position.weight", 2 * *a.max_distance + 1, d));
  }
};

template <class T, class Make>
void expect_matches_reference(const std::string& name, Make make) {
  SCOPED_TRACE(name);
  const auto f = relpos::test::golden_file("attention/" + name + ".safetensors");
  const json c = json::parse(f.metadata().at("config"));
  const auto model = relpos::Encoder<T, decltype(make(c, f, 0))>::load(
      f, encoder_config(c), [&](Index n) { return make(c, f, n); });
  const Tensor3<T> x = f.tensor3<T>("input");
  const Inputs in = inputs_of(f, x.dimension(0), x.dimension(1));
  EXPECT_TRUE(relpos::test::all_close(model.forward(x, in.view()), f.tensor3<double>("output"),
                                      encoder_tol<T>()));
}

TYPED_TEST(EncoderTyped, EveryPositionTypeMatchesTheReference) {
  using T = TypeParam;
  using M = Makers<T>;
  for (const char* name :
       {"sinusoidal_keys_len7", "sinusoidal_keys_values_clamped_len7",
        "sinusoidal_keys_values_len64", "sinusoidal_values_only_len7",
        "sinusoidal_keys_clamped_len300", "sinusoidal_keys_values_position_ids_len7"}) {
    expect_matches_reference<T>(name, M::sinusoidal);
  }
  for (const char* name : {"learned_keys_len7", "learned_values_len7", "learned_both_len1",
                           "learned_both_len64", "learned_both_clamped_len300"}) {
    expect_matches_reference<T>(name, M::learned);
  }
  for (const char* name : {"rotary_half_len7", "rotary_interleaved_partial_len64",
                           "rotary_half_partial_position_ids_len7", "rotary_half_len1"}) {
    expect_matches_reference<T>(name, M::rotary);
  }
  for (const char* name : {"absolute_len7", "absolute_len64"}) {
    expect_matches_reference<T>(name, M::absolute);
  }
  for (const char* name : {"additive_sinusoidal_len7", "additive_learned_len64"}) {
    expect_matches_reference<T>(name, M::additive);
  }
}

// ---- properties through the whole stack ----

template <class Make>
auto model_from(const std::string& name, Make make) {
  const auto f = relpos::test::golden_file("attention/" + name + ".safetensors");
  const json c = json::parse(f.metadata().at("config"));
  return relpos::Encoder<double, decltype(make(c, f, 0))>::load(
      f, encoder_config(c), [&](Index n) { return make(c, f, n); });
}

TEST(Encoder, RelativeEncodingsIgnoreAPositionShift) {
  using M = Makers<double>;
  const Tensor3<double> x =
      relpos::test::golden_file("attention/learned_keys_len7.safetensors").tensor3<double>("input");
  relpos::PositionIds shifted(2, 7);
  for (Index b = 0; b < 2; ++b) {
    for (Index i = 0; i < 7; ++i) shifted(b, i) = i + 40 + 3 * b;
  }
  const relpos::BatchInputs moved{nullptr, shifted};
  const auto check = [&](const auto& model, const char* what) {
    EXPECT_TRUE(relpos::test::all_close(model.forward(x), model.forward(x, moved), 1e-12)) << what;
  };
  check(model_from("sinusoidal_keys_values_position_ids_len7", M::sinusoidal), "sinusoidal");
  check(model_from("learned_keys_len7", M::learned), "learned");
  check(model_from("rotary_half_len7", M::rotary), "rotary");
}

TEST(Encoder, CausalOutputIgnoresLaterTokens) {
  // learned keys and values, causal, two layers: position i sees only tokens <= i
  const auto model = model_from("sinusoidal_keys_values_clamped_len7", Makers<double>::sinusoidal);
  ASSERT_TRUE(model.config.causal);
  const Index len = 7, cut = 3;
  const Tensor3<double> x =
      relpos::test::golden_file("attention/learned_keys_len7.safetensors").tensor3<double>("input");
  Tensor3<double> changed = x;
  for (Index b = 0; b < 2; ++b) {
    for (Index i = cut + 1; i < len; ++i) {
      for (Index t = 0; t < 16; ++t) changed(b, i, t) = -3 * changed(b, i, t) + 1;
    }
  }
  const Tensor3<double> a = model.forward(x), b = model.forward(changed);
  for (Index k = 0; k < 2; ++k) {
    EXPECT_TRUE(relpos::test::all_close(relpos::item(a, k).topRows(cut + 1),
                                        relpos::item(b, k).topRows(cut + 1), 1e-12));
    EXPECT_GT((relpos::item(a, k).row(cut + 1) - relpos::item(b, k).row(cut + 1)).norm(), 1e-3);
  }
}

TEST(Encoder, ThreadCountDoesNotChangeTheResult) {
  const int saved = relpos::num_threads();
  const auto model = model_from("rotary_half_len7", Makers<double>::rotary);
  Tensor3<double> x(3, 50, 16);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = std::sin(0.1 * double(i));
  for (Index batch : {1, 3}) {
    Tensor3<double> xb =
        x.slice(Eigen::array<Index, 3>{0, 0, 0}, Eigen::array<Index, 3>{batch, 50, 16});
    relpos::set_num_threads(1);
    const Tensor3<double> one = model.forward(xb);
    relpos::set_num_threads(3);
    const Tensor3<double> three = model.forward(xb);
    EXPECT_EQ(std::memcmp(one.data(), three.data(), sizeof(double) * std::size_t(one.size())), 0)
        << "batch " << batch;
  }
  relpos::set_num_threads(saved);
}

}  // namespace
