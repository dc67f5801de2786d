// SPDX-License-Identifier: MIT
// The `position` object of config.json (spec §4, both waves): one struct per position type and
// per rotary scaling type, in std::variants, with their strict reading, their checks against
// the model's sizes, the tensors they add and their JSON form. Keys of one type are refused in
// another, so a config never silently means something else.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include <relpos/core.hpp>
#include <relpos/detail/json_fields.hpp>
#include <relpos/io/config_limits.hpp>
#include <relpos/io/rotary_scaling_config.hpp>

namespace relpos::io {

// ---- Position types (spec §4) ------------------------------------------------------------

/// No positional information.
struct NonePosition {
  static constexpr std::string_view type = "none";
  bool operator==(const NonePosition&) const = default;
};
/// Vaswani et al.: PE(p) added to the first block's input, interleaved sin/cos over d_model.
struct AbsolutePosition {
  static constexpr std::string_view type = "absolute";
  double base = 10000.0;  // > 0; d_model must be even
  bool operator==(const AbsolutePosition&) const = default;
};
/// Fixed relative sinusoid s(c) over d_head as aK and/or aV.
struct SinusoidalPosition {
  static constexpr std::string_view type = "sinusoidal";
  double base = 10000.0;                     // > 0; d_head must be even
  std::optional<std::int64_t> max_distance;  // K >= 0; absent: no clamping
  bool keys = true;                          // aK = s
  bool values = false;                       // aV = s
  bool operator==(const SinusoidalPosition&) const = default;
};
/// Shaw et al. 2018: learned rows relative_key / relative_value[c + K] per layer.
struct LearnedPosition {
  static constexpr std::string_view type = "learned";
  std::int64_t max_distance = 0;  // K >= 0, required
  bool keys = true;               // tensor layers.{n}.self_attn.relative_key
  bool values = true;             // tensor layers.{n}.self_attn.relative_value
  bool operator==(const LearnedPosition&) const = default;
};
/// Su et al. 2021: q and k rotated by p·inv_freq_m.
struct RotaryPosition {
  static constexpr std::string_view type = "rotary";
  double base = 10000.0;                   // > 0
  std::optional<std::int64_t> rotary_dim;  // r: even, 2 <= r <= d_head; absent: d_head
  bool interleaved = false;  // false: x[m] with x[m + r/2] (NeoX); true: x[2m] with x[2m+1] (GPT-J)
  std::optional<RotaryScaling> scaling;
  bool operator==(const RotaryPosition&) const = default;
};
enum class AdditiveSource { sinusoidal, learned };
/// x̃_i = x_i + Σ_{|j−i| <= window} r(clamp(j − i, −K, K)) on the first block's input.
struct AdditivePosition {
  static constexpr std::string_view type = "additive";
  AdditiveSource source = AdditiveSource::sinusoidal;  // required
  std::int64_t window = 0;                             // >= 0, required
  std::optional<std::int64_t> max_distance;            // K >= 0; required with the learned source
  double base = 10000.0;                               // > 0 (sinusoidal source; d_model even)
  bool operator==(const AdditivePosition&) const = default;
};
/// Raffel et al. 2020: a learned bias per head and log-spaced distance bucket.
struct T5Position {
  static constexpr std::string_view type = "t5";
  std::int64_t num_buckets = 32;      // B >= 2 (>= 4 when bidirectional)
  std::int64_t max_distance = 128;    // M > E = B'/2
  std::optional<bool> bidirectional;  // absent: !causal
  bool is_bidirectional(bool causal) const { return bidirectional.value_or(!causal); }
  bool operator==(const T5Position&) const = default;
};
/// Press et al. 2022: b_h(δ) = −m_h·|δ|, geometric slopes from max_bias.
struct AlibiPosition {
  static constexpr std::string_view type = "alibi";
  double max_bias = 8.0;  // > 0
  bool operator==(const AlibiPosition&) const = default;
};
/// Dai et al. 2019: R(Δ) over d_model (halves sin | cos), Δ = p_i − p_j, u and v biases.
struct XlPosition {
  static constexpr std::string_view type = "xl";
  double base = 10000.0;                     // > 0; d_model must be even
  std::optional<std::int64_t> max_distance;  // K >= 0; absent: no clamping
  bool operator==(const XlPosition&) const = default;
};
using Position =
    std::variant<NonePosition, AbsolutePosition, SinusoidalPosition, LearnedPosition,
                 RotaryPosition, AdditivePosition, T5Position, AlibiPosition, XlPosition>;

/// A tensor a model file must hold: its name and shape (PyTorch layout, [out, in]).
struct TensorSpec {
  std::string name;
  std::vector<std::int64_t> shape;
  bool operator==(const TensorSpec&) const = default;
};

/// What the position checks need from the rest of the config.
struct PositionContext {
  std::int64_t d_model = 0;
  std::int64_t n_heads = 0;
  std::int64_t n_layers = 0;
  bool causal = false;
  std::int64_t d_head() const { return d_model / n_heads; }
};

namespace detail {

using relpos::detail::Json;
using relpos::detail::JsonFields;

inline constexpr std::array<KeySet, 9> kPositionKeys{{
    {"none", {}},
    {"absolute", {"base"}},
    {"sinusoidal", {"base", "max_distance", "keys", "values"}},
    {"learned", {"max_distance", "keys", "values"}},
    {"rotary", {"base", "rotary_dim", "interleaved", "scaling"}},
    {"additive", {"source", "window", "max_distance", "base"}},
    {"t5", {"num_buckets", "max_distance", "bidirectional"}},
    {"alibi", {"max_bias"}},
    {"xl", {"base", "max_distance"}},
}};
inline Position read_position(const Json& j, std::string_view source) {
  const JsonFields f(j, source, "position");
  const std::string type = relpos::detail::read_type(f, kPositionKeys, "position type");
  if (type == "none") return NonePosition{};
  if (type == "absolute") return AbsolutePosition{.base = f.number("base").value_or(10000.0)};
  if (type == "sinusoidal") {
    SinusoidalPosition p;
    p.base = f.number("base").value_or(p.base);
    p.max_distance = f.integer("max_distance");
    p.keys = f.boolean("keys").value_or(p.keys);
    p.values = f.boolean("values").value_or(p.values);
    return p;
  }
  if (type == "learned") {
    LearnedPosition p;
    p.max_distance = f.required(f.integer("max_distance"), "max_distance");
    p.keys = f.boolean("keys").value_or(p.keys);
    p.values = f.boolean("values").value_or(p.values);
    return p;
  }
  if (type == "rotary") {
    RotaryPosition p;
    p.base = f.number("base").value_or(p.base);
    p.rotary_dim = f.integer("rotary_dim");
    p.interleaved = f.boolean("interleaved").value_or(p.interleaved);
    if (f.has("scaling")) p.scaling = read_scaling(f.object()["scaling"], source);
    return p;
  }
  if (type == "additive") {
    AdditivePosition p;
    const std::string src = f.required(f.string("source"), "source");
    if (src == "sinusoidal") {
      p.source = AdditiveSource::sinusoidal;
    } else if (src == "learned") {
      p.source = AdditiveSource::learned;
    } else {
      f.fail("source", "expected \"sinusoidal\" or \"learned\", got \"" + src + "\"");
    }
    p.window = f.required(f.integer("window"), "window");
    p.max_distance = f.integer("max_distance");
    p.base = f.number("base").value_or(p.base);
    return p;
  }
  if (type == "t5") {
    T5Position p;
    p.num_buckets = f.integer("num_buckets").value_or(p.num_buckets);
    p.max_distance = f.integer("max_distance").value_or(p.max_distance);
    p.bidirectional = f.boolean("bidirectional");
    return p;
  }
  if (type == "alibi") return AlibiPosition{.max_bias = f.number("max_bias").value_or(8.0)};
  XlPosition p;
  p.base = f.number("base").value_or(p.base);
  p.max_distance = f.integer("max_distance");
  return p;
}

// ---- checks ----------------------------------------------------------------------------------

inline void check_position(const Position& position, const PositionContext& m,
                           std::string_view source) {
  const Checker c(source, "position");
  const std::int64_t d_head = m.d_head();
  const auto distance = [&](std::string_view key, const std::optional<std::int64_t>& k) {
    if (k) c.range(key, *k, 0, kMaxDistance);
  };
  const auto even_model = [&](std::string_view why) {
    if (m.d_model % 2 != 0)
      c.fail("type", std::string(why) + " needs an even d_model, got " + std::to_string(m.d_model));
  };
  std::visit(
      [&](const auto& p) {
        using P = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<P, AbsolutePosition>) {
          c.positive("base", p.base);
          even_model("absolute");
        } else if constexpr (std::is_same_v<P, SinusoidalPosition>) {
          c.positive("base", p.base);
          distance("max_distance", p.max_distance);
          if (d_head % 2 != 0)
            c.fail("type", "sinusoidal needs an even d_head, got " + std::to_string(d_head));
        } else if constexpr (std::is_same_v<P, LearnedPosition>) {
          distance("max_distance", p.max_distance);
        } else if constexpr (std::is_same_v<P, RotaryPosition>) {
          c.positive("base", p.base);
          const std::int64_t r = p.rotary_dim.value_or(d_head);
          const std::string what =
              p.rotary_dim ? ""
                           : " (rotary_dim defaults to d_head = " + std::to_string(d_head) + ")";
          if (r < 2) c.fail("rotary_dim", "must be >= 2, got " + std::to_string(r) + what);
          if (r % 2 != 0) c.fail("rotary_dim", "must be even, got " + std::to_string(r) + what);
          if (r > d_head)
            c.fail("rotary_dim",
                   "must be <= d_head = " + std::to_string(d_head) + ", got " + std::to_string(r));
          if (p.scaling) check_scaling(*p.scaling, p.base, r, source);
        } else if constexpr (std::is_same_v<P, AdditivePosition>) {
          c.range("window", p.window, 0, kMaxDistance);
          distance("max_distance", p.max_distance);
          if (p.source == AdditiveSource::learned && !p.max_distance)
            c.fail("max_distance", "required with the learned source");
          if (p.source == AdditiveSource::sinusoidal) {
            c.positive("base", p.base);
            even_model("the sinusoidal additive source");
          }
        } else if constexpr (std::is_same_v<P, T5Position>) {
          const bool bidirectional = p.is_bidirectional(m.causal);
          c.range("num_buckets", p.num_buckets, bidirectional ? 4 : 2, kMaxDimension);
          const std::int64_t e = (bidirectional ? p.num_buckets / 2 : p.num_buckets) / 2;
          // the log bucket divides by ln(M/E): M must exceed the exact range E
          if (p.max_distance <= e)
            c.fail("max_distance", "must be > num_buckets' exact range E = " + std::to_string(e) +
                                       ", got " + std::to_string(p.max_distance));
          c.range("max_distance", p.max_distance, e + 1, kMaxDistance);
        } else if constexpr (std::is_same_v<P, AlibiPosition>) {
          c.positive("max_bias", p.max_bias);
        } else if constexpr (std::is_same_v<P, XlPosition>) {
          c.positive("base", p.base);
          distance("max_distance", p.max_distance);
          even_model("xl");
        }
      },
      position);
}

}  // namespace detail

/// The tensors the position encoding adds to a model, in file order (spec §1).
inline std::vector<TensorSpec> position_tensors(const Position& position,
                                                const PositionContext& m) {
  std::vector<TensorSpec> out;
  const std::int64_t d = m.d_model, h = m.n_heads, dh = m.d_head();
  if (const auto* a = std::get_if<AdditivePosition>(&position);
      a != nullptr && a->source == AdditiveSource::learned)
    out.push_back({"position.weight", {2 * a->max_distance.value_or(0) + 1, d}});
  if (const auto* t = std::get_if<T5Position>(&position))
    out.push_back({"position.relative_attention_bias", {t->num_buckets, h}});
  if (std::holds_alternative<XlPosition>(position)) {
    out.push_back({"position.r_w_bias", {h, dh}});
    out.push_back({"position.r_r_bias", {h, dh}});
  }
  return out;
}

/// The tensors of layer n that belong to the position encoding.
inline std::vector<TensorSpec> position_layer_tensors(const Position& position,
                                                      const PositionContext& m, std::int64_t n) {
  std::vector<TensorSpec> out;
  const std::string prefix = "layers." + std::to_string(n) + ".self_attn.";
  if (const auto* l = std::get_if<LearnedPosition>(&position)) {
    const std::int64_t rows = 2 * l->max_distance + 1;
    if (l->keys) out.push_back({prefix + "relative_key", {rows, m.d_head()}});
    if (l->values) out.push_back({prefix + "relative_value", {rows, m.d_head()}});
  }
  if (std::holds_alternative<XlPosition>(position))
    out.push_back({prefix + "r_net.weight", {m.d_model, m.d_model}});
  return out;
}

/// The number of parameters the position encoding adds, in double so that no hostile size
/// overflows before it is compared with kMaxParameters.
inline double position_parameter_count(const Position& position, const PositionContext& m) {
  double total = 0;
  const auto add = [&](const std::vector<TensorSpec>& specs, double times) {
    for (const TensorSpec& s : specs) {
      double n = 1;
      for (std::int64_t e : s.shape) n *= double(e);
      total += n * times;
    }
  };
  add(position_tensors(position, m), 1);
  add(position_layer_tensors(position, m, 0), double(m.n_layers));
  return total;
}

/// The JSON form of a position; every key written, absent optionals left out.
inline nlohmann::ordered_json position_to_json(const Position& position) {
  using Json = nlohmann::ordered_json;
  const auto opt = [](Json& j, const char* key, const auto& v) {
    if (v) j[key] = *v;
  };
  Json j;
  std::visit(
      [&](const auto& p) {
        using P = std::decay_t<decltype(p)>;
        j["type"] = std::string(P::type);
        if constexpr (std::is_same_v<P, AbsolutePosition>) {
          j["base"] = p.base;
        } else if constexpr (std::is_same_v<P, SinusoidalPosition>) {
          j["base"] = p.base;
          opt(j, "max_distance", p.max_distance);
          j["keys"] = p.keys;
          j["values"] = p.values;
        } else if constexpr (std::is_same_v<P, LearnedPosition>) {
          j["max_distance"] = p.max_distance;
          j["keys"] = p.keys;
          j["values"] = p.values;
        } else if constexpr (std::is_same_v<P, RotaryPosition>) {
          j["base"] = p.base;
          opt(j, "rotary_dim", p.rotary_dim);
          j["interleaved"] = p.interleaved;
          if (p.scaling) j["scaling"] = scaling_to_json(*p.scaling);
        } else if constexpr (std::is_same_v<P, AdditivePosition>) {
          j["source"] = p.source == AdditiveSource::learned ? "learned" : "sinusoidal";
          j["window"] = p.window;
          opt(j, "max_distance", p.max_distance);
          j["base"] = p.base;
        } else if constexpr (std::is_same_v<P, T5Position>) {
          j["num_buckets"] = p.num_buckets;
          j["max_distance"] = p.max_distance;
          opt(j, "bidirectional", p.bidirectional);
        } else if constexpr (std::is_same_v<P, AlibiPosition>) {
          j["max_bias"] = p.max_bias;
        } else if constexpr (std::is_same_v<P, XlPosition>) {
          j["base"] = p.base;
          opt(j, "max_distance", p.max_distance);
        }
      },
      position);
  return j;
}

}  // namespace relpos::io
