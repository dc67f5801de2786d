// SPDX-License-Identifier: MIT
// Hugging Face checkpoint folders (spec §7) read by Model::load: the folders of tests/data/hf
// (BERT family, RoFormer, ESM-2, MPNet, T5, mT5; Hugging Face's tensor names and config keys;
// float64 last hidden states from tools/golden_hf.py, a hand-written forward after transformers'
// modeling files, and from tools/golden_hf_t5.py, transformers' own modeling_t5.py /
// modeling_mt5.py run in float64) reproduced on the unpadded rows in double and float; the config
// each family becomes; every refused configuration or malformed folder refused with a message
// naming the field, file or tensor; relpos-encode and relpos-convert --from-hf on such folders.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <relpos/io/hf_checkpoint.hpp>
#include <relpos/io/safetensors.hpp>
#include <relpos/io/safetensors_writer.hpp>
#include <relpos/model.hpp>
#include <relpos/model_io.hpp>

#include "support/expect_error.hpp"
#include "support/golden.hpp"

namespace {

namespace fs = std::filesystem;
using relpos::Index;
using relpos::test::expect_error;
using relpos::test::read_text;
const fs::path kHfDir = fs::path(RELPOS_TEST_DATA_DIR) / "hf";

// The largest |relpos − HF| over the unpadded rows of one golden folder.
template <class T>
double hf_max_error_unpadded(const std::string& name, const std::string& tensor = "output") {
  const relpos::Model<T> model = relpos::Model<T>::load(kHfDir / name);
  const relpos::io::SafetensorsFile io =
      relpos::io::SafetensorsFile::open((kHfDir / name / "io.safetensors").string());
  const relpos::ModelInputs<T> in = relpos::read_inputs<T>(io, model.config());
  EXPECT_TRUE(in.padding_mask.has_value());
  const relpos::ModelOutput<T> out = relpos::run(model, in);
  const std::vector<double> want = io.values<double>(tensor);
  const Index B = out.output.dimension(0), L = out.output.dimension(1), d = out.output.dimension(2);
  EXPECT_EQ(std::size_t(B * L * d), want.size());
  double worst = 0;
  Index rows = 0;
  for (Index b = 0; b < B; ++b) {
    for (Index i = 0; i < L; ++i) {
      if ((*in.padding_mask)(b, i)) continue;
      ++rows;
      for (Index k = 0; k < d; ++k) {
        const double e =
            std::abs(double(out.output(b, i, k)) - want[std::size_t((b * L + i) * d + k)]);
        worst = std::max(worst, std::isnan(e) ? INFINITY : e);
      }
    }
  }
  EXPECT_GT(rows, 0);
  return worst;
}

std::string hf_sci(double x) {
  std::ostringstream s;
  s << std::scientific << std::setprecision(1) << x;
  return s.str();
}

std::vector<std::string> hf_cases() {
  const nlohmann::json index = nlohmann::json::parse(read_text(kHfDir / "index.json"));
  std::vector<std::string> out;
  for (const auto& [name, info] : index.items()) out.push_back(name);
  return out;
}

// The references of RoFormer and ESM keep HF's float32 sin table and inverse frequencies, T5's
// keep T5LayerNorm's variance and the softmax in float32, DeBERTa's its score scale (spec §7 allows
// 1e-5 for them); against the same forward with those parts in float64 (io tensors
// `output_float64_*`), relpos (which computes them in double) matches to rounding.
TEST(HfCheckpoint, FamiliesMatchHuggingFaceInDouble) {
  const std::vector<std::string> names = hf_cases();
  ASSERT_EQ(names.size(), 10u);
  for (const std::string& name : names) {
    const auto io = relpos::io::SafetensorsFile::open((kHfDir / name / "io.safetensors").string());
    std::vector<std::string> exact_outputs;
    for (const std::string& t : io.names())
      if (t.rfind("output_float64", 0) == 0) exact_outputs.push_back(t);
    const bool float32_parts = !exact_outputs.empty();
    EXPECT_EQ(float32_parts, name.rfind("roformer", 0) == 0 || name.rfind("esm", 0) == 0 ||
                                 name.rfind("deberta", 0) == 0 ||
                                 name.find("t5") != std::string::npos)
        << name;
    const double err = hf_max_error_unpadded<double>(name);
    EXPECT_LE(err, float32_parts ? 1e-5 : 1e-10) << name;
    RecordProperty(name + "_double_max_error", hf_sci(err));
    for (const std::string& t : exact_outputs) {
      const double exact = hf_max_error_unpadded<double>(name, t);
      EXPECT_LE(exact, 1e-10) << name << " " << t;
      RecordProperty(name + "_double_max_error_" + t, hf_sci(exact));
    }
  }
}

TEST(HfCheckpoint, FamiliesMatchHuggingFaceInFloat) {
  for (const std::string& name : hf_cases()) {
    const double err = hf_max_error_unpadded<float>(name);
    EXPECT_LE(err, 1e-5) << name;
    RecordProperty(name + "_float_max_error", hf_sci(err));
  }
}

// What each family becomes (spec §7's table), including HF's defaults for absent keys.
TEST(HfCheckpoint, ConfigsFollowTheSpecTable) {
  using relpos::io::load_hf_checkpoint;
  const auto bert = load_hf_checkpoint(kHfDir / "bert_absolute");
  EXPECT_EQ(bert.model_type, "bert");
  EXPECT_FALSE(bert.config.norm_first);
  EXPECT_TRUE(bert.config.embed_norm);
  EXPECT_EQ(bert.config.pos_embed_offset, 0);
  EXPECT_EQ(bert.config.type_vocab_size, 2);  // BertConfig's default
  EXPECT_EQ(bert.config.layer_norm_eps, 1e-12);
  EXPECT_EQ(bert.config.activation, relpos::Activation::gelu);
  EXPECT_EQ(bert.config.position_type(), "none");
  EXPECT_EQ(bert.weights.info("pos_embed.weight").shape, (std::vector<std::int64_t>{20, 16}));

  const auto rel = load_hf_checkpoint(kHfDir / "bert_relative_key_sharded");
  EXPECT_FALSE(rel.config.pos_embed_offset.has_value());
  EXPECT_EQ(rel.config.activation, relpos::Activation::gelu_tanh);  // gelu_new
  const auto& learned = std::get<relpos::io::LearnedPosition>(rel.config.position);
  EXPECT_EQ(learned.max_distance, 11);  // max_position_embeddings − 1
  EXPECT_TRUE(learned.keys);
  EXPECT_FALSE(learned.values);
  // rows reversed: relpos row c + K (c = j − i) is HF's row (i − j) + K
  const auto table = rel.weights.matrix<double>("layers.1.self_attn.relative_key");
  const relpos::io::SafetensorsFile shard = relpos::io::SafetensorsFile::open(
      (kHfDir / "bert_relative_key_sharded" / "model-00001-of-00002.safetensors").string());
  const std::string hf_name = "bert.encoder.layer.1.attention.self.distance_embedding.weight";
  const relpos::io::SafetensorsFile shard2 = relpos::io::SafetensorsFile::open(
      (kHfDir / "bert_relative_key_sharded" / "model-00002-of-00002.safetensors").string());
  const auto hf = (shard.contains(hf_name) ? shard : shard2).matrix<double>(hf_name);
  ASSERT_EQ(table.rows(), 23);
  EXPECT_EQ(table, hf.colwise().reverse());

  const auto roberta = load_hf_checkpoint(kHfDir / "roberta_masked_lm");
  EXPECT_EQ(roberta.config.pos_embed_offset, 2);  // RobertaConfig's pad_token_id 1, + 1
  EXPECT_EQ(roberta.config.activation, relpos::Activation::relu);
  const auto roformer = load_hf_checkpoint(kHfDir / "roformer_masked_lm");
  const auto& rotary = std::get<relpos::io::RotaryPosition>(roformer.config.position);
  EXPECT_TRUE(rotary.interleaved);
  EXPECT_EQ(rotary.base, 10000.0);
  EXPECT_FALSE(rotary.rotary_dim.has_value());  // the whole head
  EXPECT_FALSE(roformer.config.pos_embed_offset.has_value());
  EXPECT_TRUE(roformer.config.embed_norm);
  EXPECT_EQ(roformer.config.type_vocab_size, 2);
  const auto esm = load_hf_checkpoint(kHfDir / "esm2_masked_lm");
  EXPECT_TRUE(esm.config.norm_first);
  EXPECT_TRUE(esm.config.final_norm);
  EXPECT_FALSE(esm.config.embed_norm);
  EXPECT_FALSE(esm.config.type_vocab_size.has_value());
  EXPECT_EQ(esm.config.activation, relpos::Activation::gelu);
  EXPECT_FALSE(std::get<relpos::io::RotaryPosition>(esm.config.position).interleaved);
  // token_dropout: the word table times 1 − 0.15·0.8, stored F64
  const relpos::io::SafetensorsFile esm_file =
      relpos::io::SafetensorsFile::open((kHfDir / "esm2_masked_lm" / "model.safetensors").string());
  EXPECT_EQ(esm.weights.info("embed.weight").dtype, relpos::io::DType::F64);
  EXPECT_EQ(esm.weights.matrix<double>("embed.weight"),
            esm_file.matrix<double>("esm.embeddings.word_embeddings.weight") * (1.0 - 0.15 * 0.8));
  const auto mpnet = load_hf_checkpoint(kHfDir / "mpnet_base");
  EXPECT_EQ(mpnet.config.pos_embed_offset, 2);
  EXPECT_FALSE(mpnet.config.norm_first);
  const auto& t5 = std::get<relpos::io::T5Position>(mpnet.config.position);
  EXPECT_EQ(t5.num_buckets, 32);
  EXPECT_EQ(t5.max_distance, 128);
  EXPECT_EQ(t5.bidirectional, true);
  const auto xlmr = load_hf_checkpoint(kHfDir / "xlm_roberta");
  EXPECT_EQ(xlmr.config.pos_embed_offset, 4);  // pad_token_id 3, + 1
  EXPECT_EQ(xlmr.config.type_vocab_size, 1);
  const auto deberta = load_hf_checkpoint(kHfDir / "deberta_v3");
  EXPECT_FALSE(deberta.config.norm_first);
  EXPECT_TRUE(deberta.config.embed_norm);
  EXPECT_FALSE(deberta.config.type_vocab_size.has_value());  // DebertaV2Config's 0
  EXPECT_FALSE(deberta.config.pos_embed_offset.has_value());
  EXPECT_EQ(deberta.config.layer_norm_eps, 1e-7);
  const auto& dp = std::get<relpos::io::DebertaPosition>(deberta.config.position);
  EXPECT_EQ(dp, (relpos::DebertaConfig{8, 16, true, true, true, true}));
}

// t5 and mt5 (spec §7's row): pre-norm RMS blocks without biases, a final norm, t5 buckets from
// block 0's table, the FFN from feed_forward_proj (dense_act_fn / is_gated_act override it).
TEST(HfCheckpoint, T5ConfigsFollowTheSpecTable) {
  using relpos::io::load_hf_checkpoint;
  const auto t5 = load_hf_checkpoint(kHfDir / "t5_encoder");
  EXPECT_EQ(t5.model_type, "t5");
  EXPECT_TRUE(t5.config.norm_first);
  EXPECT_TRUE(t5.config.final_norm);
  EXPECT_EQ(t5.config.norm, relpos::NormKind::rms);
  EXPECT_FALSE(t5.config.bias);
  EXPECT_FALSE(t5.config.gated);  // feed_forward_proj "relu"
  EXPECT_EQ(t5.config.activation, relpos::Activation::relu);
  EXPECT_EQ(t5.config.layer_norm_eps, 1e-6);  // T5Config's default
  EXPECT_FALSE(t5.config.embed_norm);
  EXPECT_FALSE(t5.config.pos_embed_offset.has_value());
  EXPECT_EQ(t5.config.vocab_size, 50);
  const auto& p = std::get<relpos::io::T5Position>(t5.config.position);
  EXPECT_EQ(p.num_buckets, 16);
  EXPECT_EQ(p.max_distance, 20);
  EXPECT_TRUE(p.bidirectional);
  const auto mt5 = load_hf_checkpoint(kHfDir / "mt5_conditional_generation_sharded");
  EXPECT_EQ(mt5.model_type, "mt5");
  EXPECT_TRUE(mt5.config.gated);
  EXPECT_EQ(mt5.config.activation, relpos::Activation::gelu_tanh);  // gated-gelu: gelu_new
  EXPECT_EQ(mt5.config.layer_norm_eps, 1e-5);
  EXPECT_EQ(mt5.config.n_layers, 2);  // the encoder's num_layers, not num_decoder_layers
  EXPECT_EQ(std::get<relpos::io::T5Position>(mt5.config.position).num_buckets, 32);

  // the query rows of in_proj are HF's q times sqrt(d_kv), k and v as they are: F32 when
  // sqrt(d_kv) is a power of two (d_kv 16: times 4, exact), else F64 (d_kv 8)
  const auto t5_file =
      relpos::io::SafetensorsFile::open((kHfDir / "t5_encoder" / "model.safetensors").string());
  EXPECT_EQ(t5.weights.info("layers.1.self_attn.in_proj_weight").dtype, relpos::io::DType::F32);
  const auto in_proj = t5.weights.matrix<double>("layers.1.self_attn.in_proj_weight");
  ASSERT_EQ(in_proj.rows(), 96);
  const std::string a = "encoder.block.1.layer.0.SelfAttention.";
  EXPECT_EQ(in_proj.topRows(32), t5_file.matrix<double>(a + "q.weight") * 4.0);
  EXPECT_EQ(in_proj.middleRows(32, 32), t5_file.matrix<double>(a + "k.weight"));
  EXPECT_EQ(in_proj.bottomRows(32), t5_file.matrix<double>(a + "v.weight"));
  EXPECT_EQ(mt5.weights.info("layers.0.self_attn.in_proj_weight").dtype, relpos::io::DType::F64);
  // gated: wi_0 is the activated one (T5DenseGatedActDense: act(wi_0 x) * wi_1 x)
  const auto idx = nlohmann::json::parse(
      read_text(kHfDir / "mt5_conditional_generation_sharded" / "model.safetensors.index.json"));
  const auto hf_tensor = [&](const std::string& name) {
    const auto file = relpos::io::SafetensorsFile::open(
        (kHfDir / "mt5_conditional_generation_sharded" / idx["weight_map"][name].get<std::string>())
            .string());
    return file.matrix<double>(name);
  };
  const std::string ff = "encoder.block.0.layer.1.DenseReluDense.";
  EXPECT_EQ(mt5.weights.matrix<double>("layers.0.linear1.weight"), hf_tensor(ff + "wi_0.weight"));
  EXPECT_EQ(mt5.weights.matrix<double>("layers.0.linear3.weight"), hf_tensor(ff + "wi_1.weight"));
  EXPECT_EQ(mt5.weights.matrix<double>("layers.0.linear2.weight"), hf_tensor(ff + "wo.weight"));
}

// A scratch copy of a golden folder, removed at the end of the test.
class HfScratch {
 public:
  explicit HfScratch(const std::string& from) {
    dir_ = fs::temp_directory_path() /
           ("relpos_hf_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    for (const auto& e : fs::directory_iterator(kHfDir / from)) fs::copy(e.path(), dir_);
  }
  ~HfScratch() { fs::remove_all(dir_); }
  HfScratch(const HfScratch&) = delete;
  HfScratch& operator=(const HfScratch&) = delete;
  const fs::path& dir() const { return dir_; }

  void edit_config(const std::function<void(nlohmann::json&)>& f) const {
    nlohmann::json j = nlohmann::json::parse(read_text(dir_ / "config.json"));
    f(j);
    std::ofstream(dir_ / "config.json") << j.dump(2);
  }
  // Rewrites a weights file without tensor `drop`, and with `extra` (F32 [2]) when given.
  void rewrite(const std::string& file, const std::string& drop,
               const std::string& extra = "") const {
    relpos::io::SafetensorsWriter w;
    {
      const auto f = relpos::io::SafetensorsFile::open((dir_ / file).string());
      for (const std::string& n : f.names()) {
        if (n == drop) continue;
        const auto& info = f.info(n);
        w.add(n, info.dtype, info.shape, f.raw(n));
      }
    }
    if (!extra.empty()) w.add(extra, std::vector<float>{1.f, 2.f}, {2});
    w.write((dir_ / file).string());
  }

 private:
  fs::path dir_;
  static inline int counter_ = 0;
};

void expect_hf_load_error(const fs::path& dir, const std::string& needle) {
  expect_error([&] { (void)relpos::Model<float>::load(dir); }, needle);
}

TEST(HfCheckpoint, RefusedConfigurationsNameTheField) {
  const auto with = [](const char* folder, const std::function<void(nlohmann::json&)>& f,
                       const std::string& needle) {
    SCOPED_TRACE(needle);
    const HfScratch s(folder);
    s.edit_config(f);
    expect_hf_load_error(s.dir(), needle);
  };
  with(
      "bert_absolute", [](auto& j) { j["model_type"] = "gpt2"; },
      "model_type: \"gpt2\" is not supported");
  with(
      "bert_absolute", [](auto& j) { j["position_embedding_type"] = "relative_key_query"; },
      "position_embedding_type: \"relative_key_query\" is not supported");
  with(
      "bert_absolute", [](auto& j) { j["position_embedding_type"] = "rotary"; },
      "position_embedding_type: expected \"absolute\" or \"relative_key\", got \"rotary\"");
  with(
      "bert_absolute", [](auto& j) { j["embedding_size"] = 8; },
      "embedding_size: 8 differs from hidden_size 16");
  with(
      "roberta_masked_lm", [](auto& j) { j["is_decoder"] = true; }, "is_decoder: true");
  with(
      "roformer_masked_lm", [](auto& j) { j["rotary_value"] = true; }, "rotary_value: true");
  with(
      "mpnet_base", [](auto& j) { j["relative_attention_num_buckets"] = 64; },
      "relative_attention_num_buckets: expected 32");
  with(
      "esm2_masked_lm", [](auto& j) { j["position_embedding_type"] = "absolute"; },
      "position_embedding_type: \"absolute\" is not supported for esm");
  with(
      "xlm_roberta", [](auto& j) { j["hidden_act"] = "silu"; },
      "hidden_act: \"silu\" is not supported");
  with(
      "t5_encoder", [](auto& j) { j["d_kv"] = 8; },
      "d_kv: 8 · num_heads 2 differs from d_model 32: not supported");
  with(
      "t5_encoder", [](auto& j) { j["is_decoder"] = true; }, "is_decoder: true is not supported");
  with(
      "t5_encoder", [](auto& j) { j["feed_forward_proj"] = "gated-silu"; },
      "feed_forward_proj: activation \"silu\" is not supported");
  with(
      "t5_encoder", [](auto& j) { j["feed_forward_proj"] = "fast-relu"; },
      "feed_forward_proj: expected \"ACT\" or \"gated-ACT\", got \"fast-relu\"");
  with(
      "mt5_conditional_generation_sharded", [](auto& j) { j["dense_act_fn"] = "silu"; },
      "dense_act_fn: activation \"silu\" is not supported");
  with(
      "t5_encoder", [](auto& j) { j["relative_attention_num_buckets"] = 3; },
      "relative_attention_num_buckets: must be >= 4");
  with(
      "t5_encoder", [](auto& j) { j["relative_attention_max_distance"] = 4; },
      "relative_attention_max_distance: must be > relative_attention_num_buckets / 4 = 4");
  with(
      "mt5_conditional_generation_sharded", [](auto& j) { j["is_gated_act"] = "yes"; },
      "is_gated_act: expected a boolean");
  with(
      "bert_absolute", [](auto& j) { j["hidden_size"] = "16"; },
      "hidden_size: expected an integer, got a string");
  with(
      "bert_absolute", [](auto& j) { j["num_attention_heads"] = 3; },
      "d_model: must be divisible by n_heads = 3");
  with(
      "deberta_v3", [](auto& j) { j["conv_kernel_size"] = 3; }, "conv_kernel_size: 3 is not");
  with(
      "deberta_v3", [](auto& j) { j.erase("position_biased_input"); },
      "position_biased_input: true (or absent) is not supported");
  with(
      "deberta_v3", [](auto& j) { j["relative_attention"] = false; },
      "relative_attention: false (or absent) is not supported");
  with(
      "deberta_v3", [](auto& j) { j["position_buckets"] = -1; },
      "position_buckets: -1 is not supported (linear relative positions)");
  with(
      "deberta_v3", [](auto& j) { j["attention_head_size"] = 4; },
      "attention_head_size: 4 differs from hidden_size / num_attention_heads");
  with(
      "deberta_v3", [](auto& j) { j["pos_att_type"] = 3; }, "pos_att_type: expected a list");
  with(
      "deberta_v3", [](auto& j) { j.erase("share_att_key"); },  // HF's default false
      "tensor \"deberta.encoder.layer.0.attention.self.pos_key_proj.weight\": missing");
  with(
      "deberta_v3", [](auto& j) { j["norm_rel_ebd"] = "none"; },  // no rel_norm: unused
      "tensor \"deberta.encoder.LayerNorm.bias\": not used by a deberta-v2 encoder");
  with(
      "deberta_v3", [](auto& j) { j["hidden_act"] = "silu"; },
      "hidden_act: \"silu\" is not supported");
  // layer counts are refused before a rule is made per layer (10^9 took 13 GB and a minute)
  with(
      "bert_absolute", [](auto& j) { j["num_hidden_layers"] = 1000000000; },
      "num_hidden_layers: 1000000000 exceeds the limit of 4096");
  with(
      "t5_encoder", [](auto& j) { j["num_layers"] = 1000000000; },
      "num_layers: 1000000000 exceeds the limit of 4096");
  with(
      "deberta_v3", [](auto& j) { j["num_hidden_layers"] = 0; },
      "num_hidden_layers: must be >= 1, got 0");
}

TEST(HfCheckpoint, NullKeysMeanTheDefault) {
  const HfScratch s("bert_absolute");
  s.edit_config([](auto& j) {
    j["embedding_size"] = nullptr;
    j["hidden_act"] = nullptr;
  });
  EXPECT_EQ(relpos::Model<float>::load(s.dir()).config().activation, relpos::Activation::gelu);
}

// DeBERTa's keys (spec §7): HF's defaults for absent ones, pos_att_type as a list or a string,
// max_relative_positions < 1 meaning max_position_embeddings, norm_rel_ebd naming layer_norm.
TEST(HfCheckpoint, DebertaKeysFollowHuggingFace) {
  const auto position = [](const std::function<void(nlohmann::json&)>& f) {
    const HfScratch s("deberta_v3");
    s.edit_config(f);
    return std::get<relpos::io::DebertaPosition>(
        relpos::io::load_hf_checkpoint(s.dir()).config.position);
  };
  auto p = position([](auto& j) {
    j["pos_att_type"] = nlohmann::json::array({"c2p"});
    j["max_relative_positions"] = -1;
    j["max_position_embeddings"] = 24;
  });
  EXPECT_EQ(p, (relpos::DebertaConfig{8, 24, true, false, true, true}));
  p = position([](auto& j) {
    j["pos_att_type"] = " P2C ";
    j["norm_rel_ebd"] = "Layer_Norm | whatever";
  });
  EXPECT_EQ(p, (relpos::DebertaConfig{8, 16, false, true, true, true}));
}

TEST(HfCheckpoint, MalformedFoldersNameTheFileOrTensor) {
  {
    const HfScratch s("bert_absolute");
    fs::rename(s.dir() / "model.safetensors", s.dir() / "pytorch_model.bin");
    expect_hf_load_error(s.dir(), "holds pytorch_model.bin but no model.safetensors");
    expect_hf_load_error(s.dir(), "convert it to safetensors");
  }
  {
    const HfScratch s("bert_absolute");
    fs::remove(s.dir() / "model.safetensors");
    expect_hf_load_error(s.dir(), "without model.safetensors or model.safetensors.index.json");
  }
  {
    const HfScratch s("bert_relative_key_sharded");
    fs::remove(s.dir() / "model-00002-of-00002.safetensors");
    expect_hf_load_error(s.dir(),
                         "shard \"model-00002-of-00002.safetensors\" is not in the folder");
  }
  {
    // the index names a shard for a tensor the shard does not hold
    const HfScratch s("bert_relative_key_sharded");
    const auto idx = nlohmann::json::parse(read_text(s.dir() / "model.safetensors.index.json"));
    const std::string name = "bert.encoder.layer.0.output.dense.bias";
    s.rewrite(idx["weight_map"][name].get<std::string>(), name);
    expect_hf_load_error(s.dir(), "tensor \"" + name + "\": missing, but");
  }
  {
    const HfScratch s("bert_relative_key_sharded");
    std::ofstream(s.dir() / "model.safetensors.index.json")
        << R"({"weight_map": {"bert.x": "../elsewhere.safetensors"}})";
    expect_hf_load_error(s.dir(),
                         "weight_map.bert.x: \"../elsewhere.safetensors\" is not a file name");
  }
  {
    const HfScratch s("roberta_masked_lm");
    s.rewrite("model.safetensors", "roberta.encoder.layer.1.attention.self.key.weight");
    expect_hf_load_error(s.dir(),
                         "tensor \"roberta.encoder.layer.1.attention.self.key.weight\": missing");
  }
  {
    // inside the base model, a tensor nothing maps is an error (the file is not this model) ...
    const HfScratch s("xlm_roberta");
    s.rewrite("model.safetensors", "", "encoder.layer.0.attention.self.extra");
    expect_hf_load_error(s.dir(),
                         "tensor \"encoder.layer.0.attention.self.extra\": not used by a "
                         "xlm-roberta encoder");
  }
  {
    // ... outside it, in a task model's checkpoint, it is a head and skipped
    const HfScratch s("roberta_masked_lm");
    s.rewrite("model.safetensors", "", "qa_outputs.weight");
    EXPECT_NO_THROW((void)relpos::Model<float>::load(s.dir()));
  }
  {
    // q, k and v are packed together: they must agree
    const HfScratch s("xlm_roberta");
    s.rewrite("model.safetensors", "encoder.layer.0.attention.self.value.bias",
              "encoder.layer.0.attention.self.value.bias");
    expect_hf_load_error(s.dir(), "they are packed into layers.0.self_attn.in_proj_bias");
  }
  {
    // a relative model without its distance table
    const HfScratch s("bert_relative_key_sharded");
    const auto idx = nlohmann::json::parse(read_text(s.dir() / "model.safetensors.index.json"));
    const std::string name = "bert.encoder.layer.1.attention.self.distance_embedding.weight";
    auto j = idx;
    j["weight_map"].erase(name);
    std::ofstream(s.dir() / "model.safetensors.index.json") << j.dump();
    expect_hf_load_error(s.dir(), "tensor \"" + name + "\": missing");
  }
}

// T5's word table: shared.weight; encoder.embed_tokens.weight is its tied copy, read when
// shared.weight is absent, refused when it holds other values. A stored dense_act_fn overrides
// feed_forward_proj (HF sets it after deriving the default).
TEST(HfCheckpoint, T5WordTableAndOverrides) {
  const auto output = [](const fs::path& dir) {
    const auto model = relpos::Model<double>::load(dir);
    const auto io = relpos::io::SafetensorsFile::open((dir / "io.safetensors").string());
    return relpos::run(model, relpos::read_inputs<double>(io, model.config())).output;
  };
  const relpos::Tensor3<double> want = output(kHfDir / "t5_encoder");
  const auto same = [&](const relpos::Tensor3<double>& got) {
    ASSERT_EQ(got.size(), want.size());
    for (Index k = 0; k < got.size(); ++k) ASSERT_EQ(got.data()[k], want.data()[k]);
  };
  {
    const HfScratch s("t5_encoder");
    s.rewrite("model.safetensors", "shared.weight");  // only the copy left
    same(output(s.dir()));
  }
  {
    const HfScratch s("t5_encoder");
    s.rewrite("model.safetensors", "encoder.embed_tokens.weight");  // only shared.weight
    same(output(s.dir()));
  }
  {
    // a copy that differs from shared.weight
    relpos::io::SafetensorsWriter w;
    const HfScratch s("t5_encoder");
    {
      const auto f = relpos::io::SafetensorsFile::open((s.dir() / "model.safetensors").string());
      for (const std::string& n : f.names()) {
        std::vector<float> v = f.values<float>(n);
        if (n == "encoder.embed_tokens.weight") v[7] += 1;
        w.add(n, v, f.info(n).shape);
      }
    }
    w.write((s.dir() / "model.safetensors").string());
    expect_hf_load_error(s.dir(),
                         "tensor \"encoder.embed_tokens.weight\": differs from shared.weight");
  }
  {
    // T5ForSequenceClassification: the model under transformer., a head beside it
    relpos::io::SafetensorsWriter w;
    const HfScratch s("t5_encoder");
    {
      const auto f = relpos::io::SafetensorsFile::open((s.dir() / "model.safetensors").string());
      for (const std::string& n : f.names())
        w.add("transformer." + n, f.info(n).dtype, f.info(n).shape, f.raw(n));
      w.add("classification_head.out_proj.weight", std::vector<float>{1.f, 2.f}, {1, 2});
    }
    w.write((s.dir() / "model.safetensors").string());
    same(output(s.dir()));
  }
  {
    const HfScratch s("mt5_conditional_generation_sharded");
    s.edit_config([](auto& j) { j["dense_act_fn"] = "gelu"; });
    EXPECT_EQ(relpos::Model<float>::load(s.dir()).config().activation, relpos::Activation::gelu);
    s.edit_config([](auto& j) {
      j.erase("dense_act_fn");
      j.erase("is_gated_act");
      j["feed_forward_proj"] = "gated-relu";
    });
    const auto c = relpos::Model<float>::load(s.dir()).config();
    EXPECT_EQ(c.activation, relpos::Activation::relu);
    EXPECT_TRUE(c.gated);
    s.edit_config([](auto& j) { j["feed_forward_proj"] = "gelu"; });  // not gated: no wi_0
    expect_hf_load_error(s.dir(), "DenseReluDense.wi.weight\": missing");
    s.edit_config([](auto& j) { j["is_gated_act"] = true; });  // gated again, erf gelu
    const auto g = relpos::Model<float>::load(s.dir()).config();
    EXPECT_EQ(g.activation, relpos::Activation::gelu);
    EXPECT_TRUE(g.gated);
  }
}

// The folder's weights go through Model's own checks: a wrong shape names the relpos tensor.
TEST(HfCheckpoint, WrongShapesNameTheTensor) {
  const HfScratch s("bert_absolute");
  s.edit_config([](auto& j) { j["intermediate_size"] = 30; });
  expect_hf_load_error(s.dir(), "layers.0.linear1.weight\": expected [30, 16], got [32, 16]");
}

#ifdef RELPOS_ENCODE_EXE
// relpos-encode --model reads the folder through Model::load (spec §7): float output, 1e-5.
TEST(HfCheckpoint, EncodeCommandReadsTheFolder) {
  for (const char* name : {"bert_relative_key_sharded", "mt5_conditional_generation_sharded"}) {
    SCOPED_TRACE(name);
    const HfScratch s(name);
    const std::string cmd = std::string(RELPOS_ENCODE_EXE) + " --model '" + s.dir().string() +
                            "' --input '" + (s.dir() / "io.safetensors").string() + "' --output '" +
                            (s.dir() / "out.safetensors").string() + "'";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    const auto io = relpos::io::SafetensorsFile::open((s.dir() / "io.safetensors").string());
    const auto out = relpos::io::SafetensorsFile::open((s.dir() / "out.safetensors").string());
    const std::vector<double> want = io.values<double>("output"),
                              got = out.values<double>("output");
    const std::vector<std::uint8_t> pad = io.values<std::uint8_t>("padding_mask");
    ASSERT_EQ(got.size(), want.size());
    const std::size_t d = want.size() / pad.size();
    double worst = 0;
    for (std::size_t k = 0; k < got.size(); ++k)
      if (pad[k / d] == 0) worst = std::max(worst, std::abs(got[k] - want[k]));
    EXPECT_LE(worst, 1e-5);
  }
}
#endif

#ifdef RELPOS_CONVERT_EXE
// relpos-convert --from-hf writes the relpos-format folder (spec §7): a relpos config (no
// model_type) whose model gives exactly what Model::load gives on the Hugging Face folder.
TEST(HfCheckpoint, ConvertFromHfRoundTrips) {
  for (const std::string& name : hf_cases()) {
    SCOPED_TRACE(name);
    const HfScratch s(name);
    const fs::path out = s.dir() / "converted";
    const std::string cmd = std::string(RELPOS_CONVERT_EXE) + " --from-hf '" +
                            (kHfDir / name).string() + "' --output '" + out.string() +
                            "' > /dev/null";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    EXPECT_FALSE(relpos::io::is_hf_checkpoint(out));
    EXPECT_NO_THROW((void)relpos::io::load_config(out / "config.json"));
    const auto hf = relpos::Model<double>::load(kHfDir / name);
    const auto converted = relpos::Model<double>::load(out);
    EXPECT_EQ(converted.config(), hf.config());
    const auto io = relpos::io::SafetensorsFile::open((kHfDir / name / "io.safetensors").string());
    const relpos::ModelInputs<double> in = relpos::read_inputs<double>(io, hf.config());
    const relpos::Tensor3<double> a = relpos::run(hf, in).output;
    const relpos::Tensor3<double> b = relpos::run(converted, in).output;
    ASSERT_EQ(a.size(), b.size());
    for (Index k = 0; k < a.size(); ++k) ASSERT_EQ(a.data()[k], b.data()[k]) << "element " << k;
  }
}
#endif

}  // namespace
