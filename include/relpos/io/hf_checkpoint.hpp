// SPDX-License-Identifier: MIT
// Hugging Face checkpoint folders (spec §7): a config.json with `model_type` and the weights in
// model.safetensors or shards named by model.safetensors.index.json, read as the relpos model
// they describe. The family's config keys become a ModelConfig; its tensor names are mapped to
// spec §1's (the base model's prefix stripped, q/k/v packed into in_proj, tensors the encoder
// does not use skipped by name), and the mapped tensors are laid out as one in-memory
// safetensors file, so Model's loader and its checks run on them unchanged. Bytes are copied
// as stored (no dtype conversion here): Model converts F16/BF16/F64 on load as for its own
// files (ESM's token_dropout scale and T5's folded query scale excepted). Families so far: bert
// (absolute, relative_key), roberta, xlm-roberta, roformer, esm, mpnet, t5, mt5, deberta-v2.
#pragma once

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include <relpos/core.hpp>
#include <relpos/detail/json_fields.hpp>
#include <relpos/io/config.hpp>
#include <relpos/io/config_limits.hpp>
#include <relpos/io/dtype.hpp>
#include <relpos/io/safetensors.hpp>
#include <relpos/io/safetensors_writer.hpp>

namespace relpos::io {

/// A Hugging Face folder read as a relpos model: the config and the weights under spec §1's
/// names (an in-memory safetensors file).
struct HfCheckpoint {
  std::string model_type;
  ModelConfig config;
  SafetensorsFile weights;
};

namespace detail::hf {

using relpos::detail::Json;
using relpos::detail::JsonFields;

/// A small text file (config.json, the shard index), refused above 16 MiB: an index of a
/// large model lists thousands of tensors, a config a few dozen keys.
inline std::string read_small_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path.string() + ": cannot open the file");
  in.seekg(0, std::ios::end);
  const std::streamoff bytes = in.tellg();
  if (bytes > (std::streamoff(1) << 24))
    throw Error(path.string() + ": " + std::to_string(bytes) +
                " bytes is too large (limit 16 MiB)");
  in.seekg(0);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

/// Parses JSON with a depth limit (a hostile file may nest millions of levels).
inline Json parse_json(const std::string& text, const std::string& source) {
  try {
    return Json::parse(text.begin(), text.end(), [&](int depth, Json::parse_event_t, Json&) {
      if (depth > 16) throw Error(source + ": JSON nested deeper than 16 levels");
      return true;
    });
  } catch (const Json::exception& e) {
    std::string what = e.what();
    if (const auto at = what.find("] "); at != std::string::npos) what = what.substr(at + 2);
    throw Error(source + ": malformed JSON: " + what);
  }
}

/// HF config keys: absent or null means the config class's default.
class HfFields {
 public:
  HfFields(const Json& j, const std::string& source) : f_(j, source, ""), j_(j) {}
  [[noreturn]] void fail(std::string_view key, const std::string& what) const {
    f_.fail(key, what);
  }
  bool given(std::string_view key) const {
    const auto it = j_.find(key);
    return it != j_.end() && !it->is_null();
  }
  std::int64_t integer(std::string_view key, std::int64_t def) const {
    return given(key) ? *f_.integer(key) : def;
  }
  std::optional<std::int64_t> integer(std::string_view key) const {
    return given(key) ? f_.integer(key) : std::nullopt;
  }
  /// A layer count, held to config.json's own limit (io/config_limits.hpp) here, before the
  /// family makes its rules per layer: a hostile 10^9 would otherwise build 10^9 rules first.
  std::int64_t layer_count(std::string_view key, std::int64_t def) const {
    const std::int64_t n = integer(key, def);
    if (n < 1) fail(key, "must be >= 1, got " + std::to_string(n));
    if (n > kMaxLayers)
      fail(key, std::to_string(n) + " exceeds the limit of " + std::to_string(kMaxLayers));
    return n;
  }
  double number(std::string_view key, double def) const {
    return given(key) ? *f_.number(key) : def;
  }
  bool boolean(std::string_view key, bool def) const { return given(key) ? *f_.boolean(key) : def; }
  std::string string(std::string_view key, std::string def) const {
    return given(key) ? *f_.string(key) : def;
  }
  /// The raw value of a key, or nullptr when absent or null (a key of several JSON types).
  const Json* value(std::string_view key) const {
    const auto it = j_.find(key);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }

 private:
  JsonFields f_;
  const Json& j_;
};

/// hidden_act (spec §7): gelu → erf gelu; gelu_new, gelu_pytorch_tanh → gelu_tanh; relu.
inline Activation activation(const HfFields& f, std::string_view key, const std::string& def) {
  const std::string act = f.string(key, def);
  if (act == "gelu") return Activation::gelu;
  if (act == "gelu_new" || act == "gelu_pytorch_tanh") return Activation::gelu_tanh;
  if (act == "relu") return Activation::relu;
  f.fail(key, "\"" + act +
                  "\" is not supported (expected \"gelu\", \"gelu_new\", \"gelu_pytorch_tanh\" or "
                  "\"relu\")");
}

/// How one relpos tensor is made from HF tensors.
enum class Op {
  copy,          // one tensor as it is
  concat,        // q, k, v stacked along the first axis (in_proj, spec §1: rows q, then k, then v)
  reverse_rows,  // a [rows, cols] table upside down (relative_key: HF indexes by i − j)
  scale          // one tensor times Rule::factor, stored F64 (ESM's token_dropout: 0.88)
};

struct Rule {
  std::string target;                // relpos name (spec §1)
  std::vector<std::string> sources;  // HF names under the base model (prefix stripped)
  Op op = Op::copy;
  double factor = 1;  // Op::scale: the tensor; Op::concat: the first source only (T5's query)
  // a tied copy of sources[0] (T5's encoder.embed_tokens.weight of shared.weight): read in its
  // place when sources[0] is absent; when both are stored they must hold the same bytes
  std::string tied = {};
};

/// What a family contributes: the relpos config, the tensors to map, and the names (under the
/// base model) that are skipped.
struct Family {
  std::string prefix;  // the base model's prefix in a task model's checkpoint ("bert.")
  ModelConfig config;
  std::vector<Rule> rules;
  std::function<bool(std::string_view)> skip;
};

inline bool starts_with(std::string_view s, std::string_view p) {
  return s.substr(0, p.size()) == p;
}

/// The encoder sizes every family reads under the same BertConfig-style keys, with its
/// config class's defaults; a decoder (cross-attention) is refused.
inline void read_encoder_sizes(const HfFields& f, ModelConfig& c) {
  if (f.boolean("is_decoder", false))
    f.fail("is_decoder", "true is not supported: relpos reads encoders (no cross-attention)");
  c.d_model = f.integer("hidden_size", 768);
  c.n_heads = f.integer("num_attention_heads", 12);
  c.n_layers = f.layer_count("num_hidden_layers", 12);
  c.d_ff = f.integer("intermediate_size", 3072);
}

/// A family's names for one layer's tensors, under `encoder.layer.{n}.`, each without its
/// `.weight` / `.bias`.
struct LayerNames {
  const char* query;
  const char* key;
  const char* value;
  const char* out_proj;
  const char* norm1;  // after attention (post-norm) or before it (pre-norm)
  const char* linear1;
  const char* linear2;
  const char* norm2;
};

/// The rules of every layer's weights and biases: q, k, v packed into in_proj (spec §1), the
/// rest copied.
inline void add_layer_rules(std::vector<Rule>& r, std::int64_t n_layers, const LayerNames& in) {
  for (std::int64_t n = 0; n < n_layers; ++n) {
    const std::string h = "encoder.layer." + std::to_string(n) + ".";
    const std::string p = "layers." + std::to_string(n) + ".";
    for (const char* part : {"weight", "bias"}) {
      const std::string s = std::string(".") + part;
      r.push_back({p + "self_attn.in_proj_" + part,
                   {h + in.query + s, h + in.key + s, h + in.value + s},
                   Op::concat});
      r.push_back({p + "self_attn.out_proj" + s, {h + in.out_proj + s}});
      r.push_back({p + "norm1" + s, {h + in.norm1 + s}});
      r.push_back({p + "linear1" + s, {h + in.linear1 + s}});
      r.push_back({p + "linear2" + s, {h + in.linear2 + s}});
      r.push_back({p + "norm2" + s, {h + in.norm2 + s}});
    }
  }
}

/// bert, roberta, xlm-roberta (spec §7's first row) and roformer (its last): the same layers
/// and embeddings, other positions; defaults are BertConfig's, RobertaConfig's and
/// RoFormerConfig's in transformers 4.40.
inline Family bert_family(const std::string& model_type, const HfFields& f) {
  const bool roberta = model_type == "roberta" || model_type == "xlm-roberta";
  const bool roformer = model_type == "roformer";
  Family fam;
  fam.prefix = roberta ? "roberta." : roformer ? "roformer." : "bert.";
  ModelConfig& c = fam.config;
  read_encoder_sizes(f, c);
  if (const auto e = f.integer("embedding_size"); e && *e != c.d_model)
    f.fail("embedding_size", std::to_string(*e) + " differs from hidden_size " +
                                 std::to_string(c.d_model) + ": not supported");
  c.activation = activation(f, "hidden_act", "gelu");
  c.layer_norm_eps = f.number("layer_norm_eps", 1e-12);
  c.norm_first = false;  // BertLayer: post-norm
  c.vocab_size = f.integer("vocab_size", roformer ? 50000 : 30522);
  c.embed_norm = true;
  const std::int64_t types = f.integer("type_vocab_size", 2);
  if (types < 0) f.fail("type_vocab_size", "must be >= 0, got " + std::to_string(types));
  if (types > 0) c.type_vocab_size = types;
  const std::int64_t max_pos = f.integer("max_position_embeddings", roformer ? 1536 : 512);
  const std::string pos = roformer ? "rotary" : f.string("position_embedding_type", "absolute");
  if (roformer) {
    if (f.boolean("rotary_value", false))
      f.fail("rotary_value", "true is not supported (rotary on the values has no relpos form)");
    // RoFormerSinusoidalPositionalEmbedding: pairs (2m, 2m + 1) of each head, 10000^(−2m/d_head)
    RotaryPosition p;
    p.base = 10000;
    p.interleaved = true;
    c.position = p;
  } else if (pos == "absolute") {
    if (roberta) {
      // RoBERTa counts positions from padding_idx + 1 (create_position_ids_from_input_ids)
      const auto pad = f.integer("pad_token_id", 1);
      if (pad < 0) f.fail("pad_token_id", "must be >= 0, got " + std::to_string(pad));
      c.pos_embed_offset = pad + 1;
    } else {
      c.pos_embed_offset = 0;
    }
  } else if (pos == "relative_key") {
    if (max_pos < 2)
      f.fail("max_position_embeddings",
             "must be >= 2 with relative_key, got " + std::to_string(max_pos));
    LearnedPosition p;
    p.max_distance = max_pos - 1;  // HF's table has 2·max_position_embeddings − 1 rows
    p.keys = true;
    p.values = false;
    c.position = p;
  } else if (pos == "relative_key_query") {
    f.fail("position_embedding_type",
           "\"relative_key_query\" is not supported (its query term has no relpos form); "
           "\"absolute\" and \"relative_key\" are");
  } else {
    f.fail("position_embedding_type",
           "expected \"absolute\" or \"relative_key\", got \"" + pos + "\"");
  }
  // the tensors, under BertModel's names
  auto& r = fam.rules;
  r.push_back({"embed.weight", {"embeddings.word_embeddings.weight"}});
  if (c.pos_embed_offset)
    r.push_back({"pos_embed.weight", {"embeddings.position_embeddings.weight"}});
  if (c.type_vocab_size)
    r.push_back({"type_embed.weight", {"embeddings.token_type_embeddings.weight"}});
  r.push_back({"embed_norm.weight", {"embeddings.LayerNorm.weight"}});
  r.push_back({"embed_norm.bias", {"embeddings.LayerNorm.bias"}});
  add_layer_rules(r, c.n_layers,
                  {"attention.self.query", "attention.self.key", "attention.self.value",
                   "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense",
                   "output.dense", "output.LayerNorm"});
  if (!c.pos_embed_offset && !roformer) {
    for (std::int64_t n = 0; n < c.n_layers; ++n) {
      r.push_back(
          {"layers." + std::to_string(n) + ".self_attn.relative_key",
           {"encoder.layer." + std::to_string(n) + ".attention.self.distance_embedding.weight"},
           Op::reverse_rows});
    }
  }
  const bool relative = !c.pos_embed_offset;
  fam.skip = [relative](std::string_view name) {
    return starts_with(name, "pooler.") || name == "embeddings.position_ids" ||
           name == "embeddings.token_type_ids" ||
           name == "encoder.embed_positions.weight" ||  // RoFormer's sin table, recomputed
           (relative && name == "embeddings.position_embeddings.weight");
  };
  return fam;
}

/// esm (ESM-2, spec §7): pre-norm, final norm, gelu (erf) whatever hidden_act says, rotary with
/// half pairing over the whole head; defaults are EsmConfig's in transformers 4.40.
inline Family esm_family(const HfFields& f) {
  Family fam;
  fam.prefix = "esm.";
  ModelConfig& c = fam.config;
  read_encoder_sizes(f, c);
  if (f.boolean("is_folding_model", false))
    f.fail("is_folding_model", "true is not supported (ESMFold is not an encoder of spec §7)");
  c.activation = Activation::gelu;  // EsmIntermediate calls its own erf gelu
  c.layer_norm_eps = f.number("layer_norm_eps", 1e-12);
  c.norm_first = true;
  c.final_norm = true;  // emb_layer_norm_after
  if (!f.given("vocab_size")) f.fail("vocab_size", "required key is missing");
  c.vocab_size = f.integer("vocab_size", 0);
  c.embed_norm = f.boolean("emb_layer_norm_before", false);
  const std::string pos = f.string("position_embedding_type", "absolute");
  if (pos != "rotary")
    f.fail("position_embedding_type",
           "\"" + pos + "\" is not supported for esm (ESM-2's \"rotary\" is)");
  RotaryPosition p;  // RotaryEmbedding: rotate_half, inv_freq 10000^(−2m/d_head), whole head
  p.base = 10000;
  p.interleaved = false;
  c.position = p;
  auto& r = fam.rules;
  Rule embed{"embed.weight", {"embeddings.word_embeddings.weight"}};
  if (f.boolean("token_dropout", false)) {
    // EsmEmbeddings scales by (1 − 0.15·0.8) / (1 − observed mask ratio): 0.88 without mask tokens
    embed.op = Op::scale;
    embed.factor = 1.0 - 0.15 * 0.8;
  }
  r.push_back(embed);
  if (c.embed_norm) {
    r.push_back({"embed_norm.weight", {"embeddings.layer_norm.weight"}});
    r.push_back({"embed_norm.bias", {"embeddings.layer_norm.bias"}});
  }
  add_layer_rules(r, c.n_layers,
                  {"attention.self.query", "attention.self.key", "attention.self.value",
                   "attention.output.dense", "attention.LayerNorm", "intermediate.dense",
                   "output.dense", "LayerNorm"});
  r.push_back({"norm.weight", {"encoder.emb_layer_norm_after.weight"}});
  r.push_back({"norm.bias", {"encoder.emb_layer_norm_after.bias"}});
  fam.skip = [](std::string_view name) {
    return starts_with(name, "contact_head.") || starts_with(name, "pooler.") ||
           name == "embeddings.position_ids" || name == "embeddings.position_embeddings.weight" ||
           (starts_with(name, "encoder.layer.") &&
            name.ends_with(".attention.self.rotary_embeddings.inv_freq"));
  };
  return fam;
}

/// mpnet (spec §7): post-norm, embed_norm, positions from MPNet's fixed padding id 1 (offset 2),
/// position t5 with MPNet's fixed 32 buckets and max_distance 128, bidirectional; defaults are
/// MPNetConfig's in transformers 4.40.
inline Family mpnet_family(const HfFields& f) {
  Family fam;
  fam.prefix = "mpnet.";
  ModelConfig& c = fam.config;
  read_encoder_sizes(f, c);
  c.activation = activation(f, "hidden_act", "gelu");
  c.layer_norm_eps = f.number("layer_norm_eps", 1e-12);
  c.vocab_size = f.integer("vocab_size", 30527);
  c.embed_norm = true;
  c.pos_embed_offset = 2;  // MPNetEmbeddings: padding_idx 1 whatever pad_token_id says
  const std::int64_t buckets = f.integer("relative_attention_num_buckets", 32);
  if (buckets != 32)
    f.fail("relative_attention_num_buckets",
           "expected 32 (MPNet computes its position bias with 32 buckets whatever the config "
           "says), got " +
               std::to_string(buckets));
  T5Position p;
  p.num_buckets = 32;
  p.max_distance = 128;
  p.bidirectional = true;
  c.position = p;
  auto& r = fam.rules;
  r.push_back({"embed.weight", {"embeddings.word_embeddings.weight"}});
  r.push_back({"pos_embed.weight", {"embeddings.position_embeddings.weight"}});
  r.push_back({"embed_norm.weight", {"embeddings.LayerNorm.weight"}});
  r.push_back({"embed_norm.bias", {"embeddings.LayerNorm.bias"}});
  r.push_back({"position.relative_attention_bias", {"encoder.relative_attention_bias.weight"}});
  add_layer_rules(
      r, c.n_layers,
      {"attention.attn.q", "attention.attn.k", "attention.attn.v", "attention.attn.o",
       "attention.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm"});
  fam.skip = [](std::string_view name) {
    return starts_with(name, "pooler.") || name == "embeddings.position_ids";
  };
  return fam;
}

/// An activation name of T5's feed_forward_proj / dense_act_fn, mapped as hidden_act (spec §7);
/// `key` is the config key it came from, for the error.
inline Activation t5_activation(const HfFields& f, std::string_view key, const std::string& act) {
  if (act == "gelu") return Activation::gelu;
  if (act == "gelu_new" || act == "gelu_pytorch_tanh") return Activation::gelu_tanh;
  if (act == "relu") return Activation::relu;
  f.fail(key, "activation \"" + act +
                  "\" is not supported (expected \"relu\", \"gelu\", \"gelu_new\" or "
                  "\"gelu_pytorch_tanh\")");
}

/// t5, mt5 (spec §7): the encoder stack of T5Model / T5EncoderModel /
/// T5ForConditionalGeneration and their MT5 twins. Pre-norm with RMSNorm (T5LayerNorm), no
/// biases, a final norm, position t5 (bidirectional) from block 0's table shared by all layers;
/// defaults are T5Config's / MT5Config's in transformers 4.40.
inline Family t5_family(const std::string& model_type, const HfFields& f) {
  const bool mt5 = model_type == "mt5";
  Family fam;
  // T5ForSequenceClassification / T5ForTokenClassification keep the model under `transformer.`
  fam.prefix = "transformer.";
  ModelConfig& c = fam.config;
  if (f.boolean("is_decoder", false))
    f.fail("is_decoder", "true is not supported: relpos reads the encoder stack of a T5 model");
  c.d_model = f.integer("d_model", 512);
  c.n_heads = f.integer("num_heads", mt5 ? 6 : 8);
  c.n_layers = f.layer_count("num_layers", mt5 ? 8 : 6);
  c.d_ff = f.integer("d_ff", mt5 ? 1024 : 2048);
  c.vocab_size = f.integer("vocab_size", mt5 ? 250112 : 32128);
  const std::int64_t d_kv = f.integer("d_kv", 64);
  if (d_kv < 1) f.fail("d_kv", "must be >= 1, got " + std::to_string(d_kv));
  if (d_kv * c.n_heads != c.d_model)
    f.fail("d_kv", std::to_string(d_kv) + " · num_heads " + std::to_string(c.n_heads) +
                       " differs from d_model " + std::to_string(c.d_model) +
                       ": not supported (relpos's heads split d_model)");
  c.layer_norm_eps = f.number("layer_norm_epsilon", 1e-6);
  c.norm_first = true;  // T5LayerSelfAttention / T5LayerFF: x + sublayer(norm(x))
  c.final_norm = true;  // encoder.final_layer_norm
  c.norm = NormKind::rms;
  c.bias = false;
  // T5Config: feed_forward_proj is "ACT" or "gated-ACT"; "gated-gelu" means gelu_new (HF's
  // backward-compatibility case); dense_act_fn / is_gated_act, when stored, override both
  const std::string proj = f.string("feed_forward_proj", mt5 ? "gated-gelu" : "relu");
  const auto dash = proj.find('-');
  const bool gated_proj = dash != std::string::npos && proj.substr(0, dash) == "gated";
  if ((dash != std::string::npos && !gated_proj) ||
      (gated_proj && proj.find('-', dash + 1) != std::string::npos))
    f.fail("feed_forward_proj", "expected \"ACT\" or \"gated-ACT\", got \"" + proj + "\"");
  std::string act = gated_proj ? proj.substr(dash + 1) : proj;
  if (proj == "gated-gelu") act = "gelu_new";
  c.activation = f.given("dense_act_fn")
                     ? t5_activation(f, "dense_act_fn", f.string("dense_act_fn", ""))
                     : t5_activation(f, "feed_forward_proj", act);
  c.gated = f.boolean("is_gated_act", gated_proj);
  T5Position p;
  p.num_buckets = f.integer("relative_attention_num_buckets", 32);
  p.max_distance = f.integer("relative_attention_max_distance", 128);
  p.bidirectional = true;  // the encoder's T5Attention
  // HF takes a log of max_distance / E (E = num_buckets / 4 exact distances a side): refused
  // here under HF's key names when it would be <= 0 or the buckets too few to split
  if (p.num_buckets < 4)
    f.fail("relative_attention_num_buckets",
           "must be >= 4 (two sides of at least one exact and one log bucket), got " +
               std::to_string(p.num_buckets));
  if (p.max_distance <= p.num_buckets / 4)
    f.fail("relative_attention_max_distance",
           "must be > relative_attention_num_buckets / 4 = " + std::to_string(p.num_buckets / 4) +
               " (the exact distances), got " + std::to_string(p.max_distance));
  c.position = p;

  auto& r = fam.rules;
  Rule embed{"embed.weight", {"shared.weight"}};
  embed.tied = "encoder.embed_tokens.weight";
  r.push_back(embed);
  r.push_back({"position.relative_attention_bias",
               {"encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"}});
  // T5Attention has no 1/sqrt(d_head) (Mesh TensorFlow folded it into the initialisation of q),
  // relpos divides the scores by sqrt(d_head): the query rows of in_proj are multiplied by
  // sqrt(d_kv). For d_kv a power of 4 (64 in every released T5 and mT5) sqrt(d_kv) is a power of
  // two, so both the product and relpos's division are exact and the scores are HF's bit for
  // bit. Otherwise the folded weights are rounded once (in F64 here, then in the compute type)
  // and each score once more by the division: a few ulp of the scores, far inside spec §7's
  // 1e-5 (the mt5 test folder has d_kv 8: 1.3e-15 in double against HF's forward with its
  // norm and softmax in float64, 1.4e-6 in float, as folders with an exact fold).
  const double q_scale = std::sqrt(double(d_kv));
  for (std::int64_t n = 0; n < c.n_layers; ++n) {
    const std::string h = "encoder.block." + std::to_string(n) + ".layer.";
    const std::string a = h + "0.SelfAttention.", ff = h + "1.DenseReluDense.";
    const std::string l = "layers." + std::to_string(n) + ".";
    Rule in_proj{l + "self_attn.in_proj_weight",
                 {a + "q.weight", a + "k.weight", a + "v.weight"},
                 Op::concat};
    in_proj.factor = q_scale;
    r.push_back(in_proj);
    r.push_back({l + "self_attn.out_proj.weight", {a + "o.weight"}});
    r.push_back({l + "norm1.weight", {h + "0.layer_norm.weight"}});
    if (c.gated) {
      // T5DenseGatedActDense: wo(act(wi_0(x)) * wi_1(x)); relpos: linear2(act(linear1 x) ⊙ linear3
      // x)
      r.push_back({l + "linear1.weight", {ff + "wi_0.weight"}});
      r.push_back({l + "linear3.weight", {ff + "wi_1.weight"}});
    } else {
      r.push_back({l + "linear1.weight", {ff + "wi.weight"}});
    }
    r.push_back({l + "linear2.weight", {ff + "wo.weight"}});
    r.push_back({l + "norm2.weight", {h + "1.layer_norm.weight"}});
  }
  r.push_back({"norm.weight", {"encoder.final_layer_norm.weight"}});
  fam.skip = [](std::string_view name) {
    return starts_with(name, "decoder.") || name == "lm_head.weight";
  };
  return fam;
}

/// deberta-v2 (spec §7; DeBERTa-v3 checkpoints, and v2 ones without the conv layer): post-norm,
/// embed_norm, token types when type_vocab_size > 0, position deberta; defaults are
/// DebertaV2Config's and the modules' getattr defaults in transformers 4.40.
inline Family deberta_family(const HfFields& f) {
  Family fam;
  fam.prefix = "deberta.";
  ModelConfig& c = fam.config;
  if (f.boolean("is_decoder", false))
    f.fail("is_decoder", "true is not supported: relpos reads encoders (no cross-attention)");
  c.d_model = f.integer("hidden_size", 1536);
  c.n_heads = f.integer("num_attention_heads", 24);
  c.n_layers = f.layer_count("num_hidden_layers", 24);
  c.d_ff = f.integer("intermediate_size", 6144);
  if (const auto e = f.integer("embedding_size"); e && *e != c.d_model)
    f.fail("embedding_size", std::to_string(*e) + " differs from hidden_size " +
                                 std::to_string(c.d_model) + ": not supported");
  if (const auto a = f.integer("attention_head_size");
      a && c.n_heads > 0 && *a * c.n_heads != c.d_model)
    f.fail("attention_head_size", std::to_string(*a) + " differs from hidden_size / " +
                                      "num_attention_heads: not supported");
  if (const auto k = f.integer("conv_kernel_size", 0); k > 0)
    f.fail("conv_kernel_size", std::to_string(k) +
                                   " is not supported (the conv layer of "
                                   "DeBERTa-v2 has no relpos form; 0 or absent is)");
  if (!f.boolean("relative_attention", false))
    f.fail("relative_attention",
           "false (or absent) is not supported: relpos reads DeBERTa "
           "with relative attention");
  if (f.boolean("position_biased_input", true))
    f.fail("position_biased_input",
           "true (or absent) is not supported: relpos reads DeBERTa "
           "without absolute positions (v3's false)");
  c.activation = activation(f, "hidden_act", "gelu");
  c.layer_norm_eps = f.number("layer_norm_eps", 1e-7);
  c.norm_first = false;  // DebertaV2Layer: post-norm
  c.vocab_size = f.integer("vocab_size", 128100);
  c.embed_norm = true;
  const std::int64_t types = f.integer("type_vocab_size", 0);
  if (types < 0) f.fail("type_vocab_size", "must be >= 0, got " + std::to_string(types));
  if (types > 0) c.type_vocab_size = types;
  DebertaPosition p;
  p.position_buckets = f.integer("position_buckets", -1);
  if (p.position_buckets <= 0)
    f.fail("position_buckets", std::to_string(p.position_buckets) +
                                   " is not supported (linear relative positions); > 0 is");
  p.max_relative_positions = f.integer("max_relative_positions", -1);
  if (p.max_relative_positions < 1)
    p.max_relative_positions = f.integer("max_position_embeddings", 512);
  p.share_att_key = f.boolean("share_att_key", false);
  // "a|b" strings as DebertaV2Config and DebertaV2Encoder split them: lower case, stripped
  const auto split_bar = [](const std::string& text) {
    std::vector<std::string> out;
    std::string s = text;
    for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    for (std::size_t at = 0;;) {
      const std::size_t bar = s.find('|', at);
      const std::string part = s.substr(at, bar == std::string::npos ? bar : bar - at);
      const auto a = part.find_first_not_of(" \t\n"), b = part.find_last_not_of(" \t\n");
      out.push_back(a == std::string::npos ? std::string() : part.substr(a, b - a + 1));
      if (bar == std::string::npos) break;
      at = bar + 1;
    }
    return out;
  };
  // pos_att_type: a list, or a "p2c|c2p" string (DebertaV2Config's backwards compatibility)
  std::vector<std::string> att;
  if (const Json* v = f.value("pos_att_type")) {
    if (v->is_string()) {
      att = split_bar(v->get<std::string>());
    } else if (v->is_array()) {
      for (const Json& e : *v) {
        if (!e.is_string()) f.fail("pos_att_type", "expected a list of strings or a string");
        att.push_back(e.get<std::string>());
      }
    } else {
      f.fail("pos_att_type", "expected a list of strings or a \"p2c|c2p\" string");
    }
  }
  const auto has = [](const std::vector<std::string>& v, const char* t) {
    return std::find(v.begin(), v.end(), t) != v.end();
  };
  p.c2p = has(att, "c2p");
  p.p2c = has(att, "p2c");
  p.rel_norm = has(split_bar(f.string("norm_rel_ebd", "none")), "layer_norm");
  c.position = p;
  auto& r = fam.rules;
  r.push_back({"embed.weight", {"embeddings.word_embeddings.weight"}});
  if (c.type_vocab_size)
    r.push_back({"type_embed.weight", {"embeddings.token_type_embeddings.weight"}});
  r.push_back({"embed_norm.weight", {"embeddings.LayerNorm.weight"}});
  r.push_back({"embed_norm.bias", {"embeddings.LayerNorm.bias"}});
  r.push_back({"position.rel_embeddings", {"encoder.rel_embeddings.weight"}});
  if (p.rel_norm) {
    r.push_back({"position.rel_norm.weight", {"encoder.LayerNorm.weight"}});
    r.push_back({"position.rel_norm.bias", {"encoder.LayerNorm.bias"}});
  }
  add_layer_rules(
      r, c.n_layers,
      {"attention.self.query_proj", "attention.self.key_proj", "attention.self.value_proj",
       "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense", "output.dense",
       "output.LayerNorm"});
  if (!p.share_att_key) {
    for (std::int64_t n = 0; n < c.n_layers; ++n) {
      const std::string h = "encoder.layer." + std::to_string(n) + ".attention.self.";
      const std::string t = "layers." + std::to_string(n) + ".self_attn.";
      for (const char* part : {".weight", ".bias"}) {
        if (p.c2p) r.push_back({t + "pos_key_proj" + part, {h + "pos_key_proj" + part}});
        if (p.p2c) r.push_back({t + "pos_query_proj" + part, {h + "pos_query_proj" + part}});
      }
    }
  }
  fam.skip = [](std::string_view name) {
    return starts_with(name, "pooler.") || name == "embeddings.position_ids";
  };
  return fam;
}

inline Family family(const std::string& model_type, const HfFields& f) {
  if (model_type == "bert" || model_type == "roberta" || model_type == "xlm-roberta" ||
      model_type == "roformer")
    return bert_family(model_type, f);
  if (model_type == "esm") return esm_family(f);
  if (model_type == "mpnet") return mpnet_family(f);
  if (model_type == "t5" || model_type == "mt5") return t5_family(model_type, f);
  if (model_type == "deberta-v2") return deberta_family(f);
  f.fail("model_type",
         "\"" + model_type +
             "\" is not supported (relpos reads bert, roberta, xlm-roberta, roformer, esm, "
             "mpnet, t5, mt5 and deberta-v2 checkpoints)");
}

/// The folder's tensors: name → the file that holds it (one file, or the index's shards).
class Tensors {
 public:
  explicit Tensors(const std::filesystem::path& dir) {
    const std::filesystem::path single = dir / "model.safetensors";
    const std::filesystem::path index = dir / "model.safetensors.index.json";
    if (std::filesystem::exists(single)) {
      const SafetensorsFile& file =
          files_.emplace(single.filename().string(), SafetensorsFile::open(single.string()))
              .first->second;
      for (const std::string& name : file.names()) where_.emplace(name, &file);
      return;
    }
    if (!std::filesystem::exists(index)) {
      if (std::filesystem::exists(dir / "pytorch_model.bin") ||
          std::filesystem::exists(dir / "pytorch_model.bin.index.json")) {
        throw Error(dir.string() +
                    ": holds pytorch_model.bin but no model.safetensors: relpos reads safetensors "
                    "only; convert it to safetensors first (e.g. load it with transformers and "
                    "save_pretrained(dir, safe_serialization=True))");
      }
      throw Error(dir.string() +
                  ": a Hugging Face folder (config.json has model_type) without "
                  "model.safetensors or model.safetensors.index.json");
    }
    const std::string source = index.string();
    const Json j = parse_json(read_small_file(index), source);
    const JsonFields f(j, source, "");
    if (!f.has("weight_map")) f.fail("weight_map", "required key is missing");
    const Json& map = j["weight_map"];
    if (!map.is_object()) f.fail("weight_map", "expected an object {tensor: shard file}");
    for (const auto& item : map.items()) {
      const std::string at = "weight_map." + item.key();
      if (!item.value().is_string()) f.fail(at, "expected a shard file name (a string)");
      const std::string shard = item.value().get<std::string>();
      if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..")
        f.fail(at, "\"" + shard + "\" is not a file name in the folder");
      auto it = files_.find(shard);
      if (it == files_.end()) {
        const std::filesystem::path path = dir / shard;
        if (!std::filesystem::exists(path))
          f.fail(at, "shard \"" + shard + "\" is not in the folder " + dir.string());
        it = files_.emplace(shard, SafetensorsFile::open(path.string())).first;
      }
      if (!it->second.contains(item.key()))
        it->second.fail(item.key(), "missing, but " + source + " names this shard for it");
      where_.emplace(item.key(), &it->second);
    }
  }

  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& [name, file] : where_) out.push_back(name);
    return out;
  }
  const SafetensorsFile* find(const std::string& name) const {
    const auto it = where_.find(name);
    return it == where_.end() ? nullptr : it->second;
  }

 private:
  std::map<std::string, SafetensorsFile> files_;  // node-based: pointers stay valid
  std::map<std::string, const SafetensorsFile*> where_;
};

}  // namespace detail::hf

/// Whether `dir` is a Hugging Face checkpoint folder: its config.json is a JSON object with a
/// `model_type` key (a relpos config.json has no such key). Any problem reading the file
/// answers false, so that the relpos loader reports it.
inline bool is_hf_checkpoint(const std::filesystem::path& dir) {
  try {
    const std::filesystem::path path = dir / "config.json";
    const auto j = detail::hf::parse_json(detail::hf::read_small_file(path), path.string());
    return j.is_object() && j.contains("model_type");
  } catch (...) {
    return false;
  }
}

/// Reads a Hugging Face checkpoint folder (spec §7) as a relpos model. Errors name the file
/// and the config key or tensor: an unknown model_type, a configuration the spec refuses, a
/// missing shard or tensor, a tensor the encoder does not use.
inline HfCheckpoint load_hf_checkpoint(const std::filesystem::path& dir) {
  namespace hf = detail::hf;
  const std::filesystem::path config_path = dir / "config.json";
  const std::string source = config_path.string();
  const hf::Json j = hf::parse_json(hf::read_small_file(config_path), source);
  const hf::HfFields f(j, source);
  if (!f.given("model_type")) f.fail("model_type", "required key is missing");
  const std::string model_type = f.string("model_type", "");
  const hf::Family fam = hf::family(model_type, f);
  validate(fam.config, source + " (as a relpos model)");

  const hf::Tensors tensors(dir);
  const std::vector<std::string> all = tensors.names();
  // a task model's checkpoint carries the base model's prefix; tensors outside it are heads
  const bool prefixed = std::any_of(
      all.begin(), all.end(), [&](const std::string& n) { return hf::starts_with(n, fam.prefix); });
  const auto full = [&](const std::string& base) { return prefixed ? fam.prefix + base : base; };
  std::set<std::string> used;
  // the stored name of a base-model tensor; old LayerNorm names gamma/beta mean weight/bias
  const auto lookup =
      [&](const std::string& base) -> std::pair<std::string, const SafetensorsFile*> {
    std::string name = full(base);
    if (const SafetensorsFile* file = tensors.find(name)) return {name, file};
    for (const auto& [now, old] : {std::pair{".weight", ".gamma"}, std::pair{".bias", ".beta"}}) {
      const std::string_view b = base;
      const std::string_view suffix = now;
      if (b.size() > suffix.size() && b.substr(b.size() - suffix.size()) == suffix &&
          b.find("LayerNorm") != std::string_view::npos) {
        const std::string alt = full(base.substr(0, base.size() - suffix.size()) + old);
        if (const SafetensorsFile* file = tensors.find(alt)) return {alt, file};
      }
    }
    throw Error(dir.string() + ": tensor \"" + name + "\": missing (model_type " + model_type +
                " with this config.json needs it)");
  };

  SafetensorsWriter w;
  for (const hf::Rule& rule : fam.rules) {
    std::vector<std::string> sources = rule.sources;
    if (!rule.tied.empty()) {
      const std::string main = full(sources[0]), copy = full(rule.tied);
      const SafetensorsFile* a = tensors.find(main);
      const SafetensorsFile* b = tensors.find(copy);
      if (a == nullptr && b != nullptr) {
        sources[0] = rule.tied;
      } else if (a != nullptr && b != nullptr) {
        used.insert(copy);
        const TensorInfo &ia = a->info(main), &ib = b->info(copy);
        const auto ra = a->raw(main), rb = b->raw(copy);
        if (ia.dtype != ib.dtype || ia.shape != ib.shape ||
            !std::equal(ra.begin(), ra.end(), rb.begin(), rb.end()))
          b->fail(copy, "differs from " + main +
                            ", of which it is a tied copy: the file holds "
                            "two word tables");
      }
    }
    std::vector<std::pair<std::string, const SafetensorsFile*>> src;
    for (const std::string& s : sources) src.push_back(lookup(s));
    for (const auto& s : src) used.insert(s.first);
    const TensorInfo& first = src[0].second->info(src[0].first);
    std::vector<std::int64_t> shape = first.shape;
    std::vector<unsigned char> bytes;
    for (const auto& [name, file] : src) {
      const TensorInfo& info = file->info(name);
      if (info.dtype != first.dtype || info.shape != first.shape) {
        file->fail(name, std::string(dtype_name(info.dtype)) + " " + shape_string(info.shape) +
                             " differs from " + src[0].first + "'s " +
                             std::string(dtype_name(first.dtype)) + " " +
                             shape_string(first.shape) + ": they are packed into " + rule.target);
      }
      const auto raw = file->raw(name);
      bytes.insert(bytes.end(), raw.begin(), raw.end());
    }
    const auto need_weight_type = [&] {
      if (first.dtype != DType::F32 && first.dtype != DType::F64 && first.dtype != DType::F16 &&
          first.dtype != DType::BF16) {
        src[0].second->fail(src[0].first, "dtype " + std::string(dtype_name(first.dtype)) +
                                              " is not a weight type (F32, F64, F16 or BF16)");
      }
    };
    if (rule.op == hf::Op::concat) {
      if (shape.empty())
        src[0].second->fail(src[0].first, "expected a vector or matrix, got a scalar");
      shape[0] *= std::int64_t(src.size());
      if (rule.factor != 1) {
        // the first source scaled (T5's query rows): in F32 when that is exact (F32 source, a
        // power-of-two factor), else in F64
        need_weight_type();
        int exponent = 0;
        if (first.dtype == DType::F32 && std::frexp(rule.factor, &exponent) == 0.5) {
          std::vector<float> v;
          for (const auto& [name, file] : src) {
            const std::vector<float> part = file->values<float>(name);
            const float k = name == src[0].first ? float(rule.factor) : 1.f;
            for (const float x : part) v.push_back(x * k);
          }
          w.add(rule.target, v, shape);
        } else {
          std::vector<double> v;
          for (const auto& [name, file] : src) {
            const std::vector<double> part = file->values<double>(name);
            const double k = name == src[0].first ? rule.factor : 1.0;
            for (const double x : part) v.push_back(x * k);
          }
          w.add(rule.target, v, shape);
        }
        continue;
      }
    } else if (rule.op == hf::Op::reverse_rows) {
      if (shape.size() != 2)
        src[0].second->fail(src[0].first, "expected [rows, d_head], got " + shape_string(shape));
      const std::size_t row = bytes.size() / std::size_t(std::max<std::int64_t>(shape[0], 1));
      std::vector<unsigned char> flipped(bytes.size());
      for (std::int64_t i = 0; i < shape[0]; ++i) {
        std::copy_n(bytes.begin() + std::ptrdiff_t(std::size_t(i) * row), row,
                    flipped.begin() + std::ptrdiff_t(std::size_t(shape[0] - 1 - i) * row));
      }
      bytes = std::move(flipped);
    } else if (rule.op == hf::Op::scale) {
      need_weight_type();
      std::vector<double> v = src[0].second->values<double>(src[0].first);
      for (double& x : v) x *= rule.factor;
      w.add(rule.target, v, shape);
      continue;
    }
    w.add(rule.target, first.dtype, shape, bytes);
  }
  for (const std::string& name : all) {
    if (used.count(name) != 0) continue;
    if (prefixed && !hf::starts_with(name, fam.prefix)) continue;  // a task head
    const std::string base = prefixed ? name.substr(fam.prefix.size()) : name;
    if (fam.skip(base)) continue;
    tensors.find(name)->fail(name, "not used by a " + model_type +
                                       " encoder with this config.json: the file does not match "
                                       "it");
  }
  return HfCheckpoint{model_type, fam.config,
                      SafetensorsFile::from_bytes(w.bytes(), dir.string() + " (" + model_type +
                                                                 " checkpoint, relpos names)")};
}

}  // namespace relpos::io
