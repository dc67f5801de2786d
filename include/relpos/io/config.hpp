// SPDX-License-Identifier: MIT
// config.json of a relpos model (spec §1): the hyper-parameters as one struct with the table's
// defaults, a strict parser whose errors name the file and the key path, the tensors a config
// implies, hostile sizes refused before anything is allocated, and to_json for writing back.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include <relpos/core.hpp>
#include <relpos/detail/json_fields.hpp>
#include <relpos/feed_forward.hpp>
#include <relpos/io/config_limits.hpp>
#include <relpos/io/position_config.hpp>
#include <relpos/norm.hpp>

namespace relpos::io {

using relpos::Activation;  // relu; gelu: exact, erf-based, as torch's "gelu"; gelu_tanh
using relpos::NormKind;    // layer or rms (spec §7)

/// The hyper-parameters of spec §1 and §7; members carry the tables' defaults.
struct ModelConfig {
  std::int64_t d_model = 0;   // required, d_model % n_heads == 0
  std::int64_t n_heads = 0;   // required
  std::int64_t n_layers = 0;  // required
  std::int64_t d_ff = 0;      // required, the feed-forward width
  Activation activation = Activation::relu;
  bool norm_first = false;       // pre-norm (true) or post-norm (false) blocks
  double layer_norm_eps = 1e-5;  // every LayerNorm, the final one included; > 0
  bool final_norm = false;       // a LayerNorm after the last layer (norm.weight, norm.bias)
  bool causal = false;           // query i sees only keys j <= i
  std::optional<std::int64_t> vocab_size;  // present: inputs may be ids (embed.weight)
  bool output_head = false;  // logits through head.weight / head.bias; needs vocab_size
  Position position = NonePosition{};
  // spec §7's block options; the defaults are spec §1's model
  NormKind norm = NormKind::layer;  // "layer" or "rms": every norm, the final one included
  bool bias = true;                 // false: no attention or feed-forward bias tensors
  bool gated = false;               // "ffn": "gated" (linear3) rather than "plain"
  bool embed_norm = false;          // embed_norm.weight / .bias on the embeddings
  std::optional<std::int64_t> pos_embed_offset;  // present: pos_embed.weight [P, d_model]
  std::optional<std::int64_t> type_vocab_size;   // present: type_embed.weight [T, d_model]

  std::int64_t d_head() const { return d_model / n_heads; }
  std::string_view position_type() const { return io::position_type(position); }
  /// The rotary dimension r in use (rotary_dim, or d_head when absent); 0 when not rotary.
  std::int64_t rotary_dim() const {
    const auto* r = std::get_if<RotaryPosition>(&position);
    return r == nullptr ? 0 : r->rotary_dim.value_or(d_head());
  }
  /// T5's bidirectional flag with its default (not causal); false when not t5.
  bool t5_bidirectional() const {
    const auto* t = std::get_if<T5Position>(&position);
    return t != nullptr && t->is_bidirectional(causal);
  }
  PositionContext position_context() const {
    return {d_model, n_heads, n_layers, causal, bias, layer_norm_eps};
  }
  bool operator==(const ModelConfig&) const = default;
};

/// The number of parameters a config implies (every tensor of spec §1), in double so that no
/// hostile size overflows before the comparison with kMaxParameters.
inline double parameter_count(const ModelConfig& c) {
  const double d = double(c.d_model), f = double(c.d_ff);
  const double linears = 4 * d * d + (c.gated ? 3 : 2) * f * d;
  const double biases = c.bias ? 4 * d + (c.gated ? 2 : 1) * f + d : 0;
  const double norms = c.norm == NormKind::rms ? 2 * d : 4 * d;
  const double layer = linears + biases + norms;
  double total =
      layer * double(c.n_layers) + position_parameter_count(c.position, c.position_context());
  const double v = double(c.vocab_size.value_or(0));
  if (c.vocab_size) total += v * d;
  if (c.output_head) total += v * d + v;
  if (c.final_norm) total += c.norm == NormKind::rms ? d : 2 * d;
  if (c.embed_norm) total += 2 * d;
  if (c.type_vocab_size) total += double(*c.type_vocab_size) * d;
  // pos_embed.weight's P is the file's: bounded by its bytes, not counted here
  return total;
}

/// Checks a config against spec §1/§4 and the limits; throws relpos::Error naming the key.
/// parse_config calls it; call it yourself on a config built in code.
inline void validate(const ModelConfig& c, std::string_view source = "config") {
  const auto fail = [&](std::string_view key, const std::string& what) {
    throw Error(std::string(source) + ": " + std::string(key) + ": " + what);
  };
  const auto size = [&](std::string_view key, std::int64_t v, std::int64_t limit) {
    if (v < 1) fail(key, "must be >= 1, got " + std::to_string(v));
    if (v > limit) fail(key, std::to_string(v) + " exceeds the limit of " + std::to_string(limit));
  };
  size("d_model", c.d_model, kMaxDimension);
  size("n_heads", c.n_heads, kMaxDimension);
  size("n_layers", c.n_layers, kMaxLayers);
  size("d_ff", c.d_ff, kMaxDimension);
  if (c.vocab_size) size("vocab_size", *c.vocab_size, kMaxDimension);
  if (c.d_model % c.n_heads != 0)
    fail("d_model", "must be divisible by n_heads = " + std::to_string(c.n_heads) + ", got " +
                        std::to_string(c.d_model));
  if (!(c.layer_norm_eps > 0))
    fail("layer_norm_eps", "must be > 0, got " + nlohmann::json(c.layer_norm_eps).dump());
  if (c.output_head && !c.vocab_size) fail("output_head", "needs vocab_size");
  if (c.embed_norm && !c.vocab_size) fail("embed_norm", "needs vocab_size");
  if (c.pos_embed_offset) {
    if (!c.vocab_size) fail("pos_embed_offset", "needs vocab_size");
    if (*c.pos_embed_offset < 0)
      fail("pos_embed_offset", "must be >= 0, got " + std::to_string(*c.pos_embed_offset));
    if (*c.pos_embed_offset > kMaxDimension)
      fail("pos_embed_offset", std::to_string(*c.pos_embed_offset) + " exceeds the limit of " +
                                   std::to_string(kMaxDimension));
  }
  if (c.type_vocab_size) {
    if (!c.vocab_size) fail("type_vocab_size", "needs vocab_size");
    size("type_vocab_size", *c.type_vocab_size, kMaxDimension);
  }
  detail::check_position(c.position, c.position_context(), source);
  const double n = parameter_count(c);
  if (n > kMaxParameters)
    throw Error(std::string(source) + ": the sizes imply " + nlohmann::json(n).dump() +
                " parameters, more than the limit of 2^31 (relpos::io::kMaxParameters)");
}

/// The rows of pos_embed.weight in expected_tensors: P is not a config key, the file's
/// tensor gives it (any P >= 1).
inline constexpr std::int64_t kAnyRows = -1;

/// Every tensor the model file must hold, with its shape (spec §1 and §7). Call on a validated
/// config. pos_embed.weight's rows are kAnyRows: the file says P.
inline std::vector<TensorSpec> expected_tensors(const ModelConfig& c) {
  const std::int64_t d = c.d_model, f = c.d_ff;
  const PositionContext m = c.position_context();
  std::vector<TensorSpec> out;
  if (c.vocab_size) out.push_back({"embed.weight", {*c.vocab_size, d}});
  if (c.pos_embed_offset) out.push_back({"pos_embed.weight", {kAnyRows, d}});
  if (c.type_vocab_size) out.push_back({"type_embed.weight", {*c.type_vocab_size, d}});
  if (c.embed_norm) {
    out.push_back({"embed_norm.weight", {d}});
    out.push_back({"embed_norm.bias", {d}});
  }
  for (TensorSpec& s : position_tensors(c.position, m)) out.push_back(std::move(s));
  for (std::int64_t n = 0; n < c.n_layers; ++n) {
    const std::string p = "layers." + std::to_string(n) + ".";
    out.push_back({p + "self_attn.in_proj_weight", {3 * d, d}});  // rows: q, then k, then v
    if (c.bias) out.push_back({p + "self_attn.in_proj_bias", {3 * d}});
    out.push_back({p + "self_attn.out_proj.weight", {d, d}});
    if (c.bias) out.push_back({p + "self_attn.out_proj.bias", {d}});
    for (TensorSpec& s : position_layer_tensors(c.position, m, n)) out.push_back(std::move(s));
    out.push_back({p + "linear1.weight", {f, d}});
    if (c.bias) out.push_back({p + "linear1.bias", {f}});
    out.push_back({p + "linear2.weight", {d, f}});
    if (c.bias) out.push_back({p + "linear2.bias", {d}});
    if (c.gated) {
      out.push_back({p + "linear3.weight", {f, d}});
      if (c.bias) out.push_back({p + "linear3.bias", {f}});
    }
    for (const char* norm : {"norm1", "norm2"}) {
      out.push_back({p + norm + ".weight", {d}});
      if (c.norm == NormKind::layer) out.push_back({p + norm + ".bias", {d}});
    }
  }
  if (c.final_norm) {
    out.push_back({"norm.weight", {d}});
    if (c.norm == NormKind::layer) out.push_back({"norm.bias", {d}});
  }
  if (c.output_head) {
    out.push_back({"head.weight", {*c.vocab_size, d}});
    out.push_back({"head.bias", {*c.vocab_size}});
  }
  return out;
}

/// Parses and validates config.json text. `source` names the file in error messages.
inline ModelConfig parse_config(std::string_view json_text,
                                std::string_view source = "config.json") {
  using relpos::detail::Json;
  Json j;
  try {
    // a depth limit: config.json is at most three objects deep, a hostile one may be millions
    j = Json::parse(json_text.begin(), json_text.end(), [&](int depth, Json::parse_event_t, Json&) {
      if (depth > 16) throw Error(std::string(source) + ": JSON nested deeper than 16 levels");
      return true;
    });
  } catch (const Json::exception& e) {  // parse_error; out_of_range: a number beyond double (1e400)
    std::string what = e.what();
    if (const auto at = what.find("] "); at != std::string::npos) what = what.substr(at + 2);
    throw Error(std::string(source) + ": malformed JSON: " + what);
  }
  const relpos::detail::JsonFields f(j, source, "");
  static constexpr std::array<std::string_view, 18> keys{
      "d_model",     "n_heads",          "n_layers",       "d_ff",   "activation",
      "norm_first",  "layer_norm_eps",   "final_norm",     "causal", "vocab_size",
      "output_head", "position",         "norm",           "bias",   "ffn",
      "embed_norm",  "pos_embed_offset", "type_vocab_size"};
  for (const auto& item : j.items())
    if (std::find(keys.begin(), keys.end(), item.key()) == keys.end())
      f.fail(item.key(), "unknown key");
  ModelConfig c;
  c.d_model = f.required(f.integer("d_model"), "d_model");
  c.n_heads = f.required(f.integer("n_heads"), "n_heads");
  c.n_layers = f.required(f.integer("n_layers"), "n_layers");
  c.d_ff = f.required(f.integer("d_ff"), "d_ff");
  if (const auto act = f.string("activation")) {
    if (*act == "relu") {
      c.activation = Activation::relu;
    } else if (*act == "gelu") {
      c.activation = Activation::gelu;
    } else if (*act == "gelu_tanh") {
      c.activation = Activation::gelu_tanh;
    } else {
      f.fail("activation", "expected \"relu\", \"gelu\" or \"gelu_tanh\", got \"" + *act + "\"");
    }
  }
  if (const auto norm = f.string("norm")) {
    if (*norm == "layer") {
      c.norm = NormKind::layer;
    } else if (*norm == "rms") {
      c.norm = NormKind::rms;
    } else {
      f.fail("norm", "expected \"layer\" or \"rms\", got \"" + *norm + "\"");
    }
  }
  c.bias = f.boolean("bias").value_or(c.bias);
  if (const auto ffn = f.string("ffn")) {
    if (*ffn == "plain") {
      c.gated = false;
    } else if (*ffn == "gated") {
      c.gated = true;
    } else {
      f.fail("ffn", "expected \"plain\" or \"gated\", got \"" + *ffn + "\"");
    }
  }
  c.embed_norm = f.boolean("embed_norm").value_or(c.embed_norm);
  c.pos_embed_offset = f.integer("pos_embed_offset");
  c.type_vocab_size = f.integer("type_vocab_size");
  c.norm_first = f.boolean("norm_first").value_or(c.norm_first);
  c.layer_norm_eps = f.number("layer_norm_eps").value_or(c.layer_norm_eps);
  c.final_norm = f.boolean("final_norm").value_or(c.final_norm);
  c.causal = f.boolean("causal").value_or(c.causal);
  c.vocab_size = f.integer("vocab_size");
  c.output_head = f.boolean("output_head").value_or(c.output_head);
  if (f.has("position")) c.position = detail::read_position(j["position"], source);
  validate(c, source);
  return c;
}

/// Reads and parses a config.json file; errors name the path.
inline ModelConfig load_config(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path.string() + ": cannot open the file");
  in.seekg(0, std::ios::end);
  const std::streamoff bytes = in.tellg();
  // a config is a few hundred bytes; refuse to slurp a huge file by mistake
  if (bytes > (std::streamoff(1) << 20))
    throw Error(path.string() + ": " + std::to_string(bytes) +
                " bytes is too large for a config.json (limit 1 MiB)");
  in.seekg(0);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return parse_config(text, path.string());
}

/// The JSON form of a config: every key of spec §1 written, absent optionals left out, and
/// spec §7's keys only where they differ from their defaults (a §1 model's file reads as it
/// did before §7), so parse_config(to_json(c).dump()) == c.
inline nlohmann::ordered_json to_json(const ModelConfig& c) {
  nlohmann::ordered_json j;
  j["d_model"] = c.d_model;
  j["n_heads"] = c.n_heads;
  j["n_layers"] = c.n_layers;
  j["d_ff"] = c.d_ff;
  j["activation"] = c.activation == Activation::gelu        ? "gelu"
                    : c.activation == Activation::gelu_tanh ? "gelu_tanh"
                                                            : "relu";
  j["norm_first"] = c.norm_first;
  j["layer_norm_eps"] = c.layer_norm_eps;
  j["final_norm"] = c.final_norm;
  j["causal"] = c.causal;
  if (c.vocab_size) j["vocab_size"] = *c.vocab_size;
  j["output_head"] = c.output_head;
  j["position"] = position_to_json(c.position);
  if (c.norm != NormKind::layer) j["norm"] = "rms";
  if (!c.bias) j["bias"] = false;
  if (c.gated) j["ffn"] = "gated";
  if (c.embed_norm) j["embed_norm"] = true;
  if (c.pos_embed_offset) j["pos_embed_offset"] = *c.pos_embed_offset;
  if (c.type_vocab_size) j["type_vocab_size"] = *c.type_vocab_size;
  return j;
}

}  // namespace relpos::io
