// SPDX-License-Identifier: MIT
// The `position` object of config.json (spec §4, both waves) and the one list of position
// types. Everything here is generated from that list: the config variant, the key table
// ("unknown key" messages), the reading, the checks, the tensors and the JSON form. Each
// type's own part lives with it: its struct, defaults, checks, tensors and loading in
// encodings/<name>.hpp, its keys' JSON in io/positions/<name>.hpp.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include <relpos/core.hpp>
#include <relpos/detail/checker.hpp>
#include <relpos/detail/json_fields.hpp>
#include <relpos/encodings/concept.hpp>
#include <relpos/io/config_limits.hpp>
#include <relpos/io/positions/absolute.hpp>
#include <relpos/io/positions/additive.hpp>
#include <relpos/io/positions/alibi.hpp>
#include <relpos/io/positions/deberta.hpp>
#include <relpos/io/positions/kerple.hpp>
#include <relpos/io/positions/learned.hpp>
#include <relpos/io/positions/none.hpp>
#include <relpos/io/positions/rotary.hpp>
#include <relpos/io/positions/sinusoidal.hpp>
#include <relpos/io/positions/t5.hpp>
#include <relpos/io/positions/xl.hpp>
#include <relpos/io/rotary_scaling_config.hpp>

namespace relpos {

namespace detail {
// The first E<T> of the list whose Config is `Config`, as a type_identity.
template <class T, class Config, template <class> class E, template <class> class... Rest>
constexpr auto find_encoding() {
  if constexpr (std::is_same_v<typename E<T>::Config, Config>) {
    return std::type_identity<E<T>>{};
  } else {
    static_assert(sizeof...(Rest) > 0, "a Config that no encoding of the list has");
    return find_encoding<T, Config, Rest...>();
  }
}
}  // namespace detail

/// A list of encoding templates (E<T> for a scalar T) and what is generated from it.
template <template <class> class... Encodings>
struct EncodingList {
  static constexpr std::size_t size = sizeof...(Encodings);
  /// config.json's `position`: one Config per encoding, in list order.
  using Configs = std::variant<typename Encodings<float>::Config...>;
  /// The encoding (for scalar T) whose Config is `Config`.
  template <class T, class Config>
  using For = typename decltype(detail::find_encoding<T, Config, Encodings...>())::type;
};

/// Every position type of spec §4. Adding one: its header encodings/<name>.hpp (the
/// encoding with its Config and the static members of encodings/concept.hpp), its keys in
/// io/positions/<name>.hpp, and one include above plus one entry here. Model, config.json,
/// the decoder and attention follow from the list and the encoding's hooks and traits.
using PositionEncodings =
    EncodingList<NoPosition, AbsoluteSinusoidal, SinusoidalRelative, LearnedRelative, Rotary,
                 Additive, T5Bias, AlibiBias, XlRelative, KerpleBias, DebertaRelative>;

namespace io {

/// config.json's `position`: the Config of one of PositionEncodings (NonePosition = NoneConfig,
/// T5Position = T5Config, ...: the encodings' own structs).
using Position = PositionEncodings::Configs;
/// The encoding (for scalar T) that a position config P configures.
template <class T, class P>
using EncodingFor = PositionEncodings::For<T, P>;

using relpos::TensorSpec;
/// What the position checks need from the rest of the config.
using PositionContext = relpos::ModelShape;

/// The position type's name ("t5"), as config.json writes it.
inline std::string_view position_type(const Position& position) {
  return std::visit(
      [](const auto& p) -> std::string_view {
        return relpos::detail::PositionJson<std::decay_t<decltype(p)>>::keys.type;
      },
      position);
}

namespace detail {

using relpos::detail::Checker;
using relpos::detail::Json;
using relpos::detail::JsonFields;
using relpos::detail::KeySet;
using relpos::detail::PositionJson;

template <class Configs>
struct PositionTable;
template <class... Configs>
struct PositionTable<std::variant<Configs...>> {
  static constexpr std::array<KeySet, sizeof...(Configs)> keys{PositionJson<Configs>::keys...};
  static Position read(const JsonFields& f, std::string_view type, std::string_view source) {
    std::optional<Position> out;
    ((type == PositionJson<Configs>::keys.type
          ? (void)out.emplace(PositionJson<Configs>::read(f, source))
          : void()),
     ...);
    RELPOS_ASSERT(out.has_value(), "read_position: read_type let an unknown type through");
    return *std::move(out);
  }
};

/// The keys of every position type besides "type": the source of "unknown key" messages.
inline constexpr auto kPositionKeys = PositionTable<Position>::keys;

inline Position read_position(const Json& j, std::string_view source) {
  const JsonFields f(j, source, "position");
  const std::string type = relpos::detail::read_type(f, kPositionKeys, "position type");
  return PositionTable<Position>::read(f, type, source);
}

// ---- checks ----------------------------------------------------------------------------------

/// The position's own rules against the model's sizes (the encoding's static check()).
inline void check_position(const Position& position, const PositionContext& m,
                           std::string_view source) {
  const Checker c(source, "position");
  std::visit(
      [&](const auto& p) {
        using E = EncodingFor<float, std::decay_t<decltype(p)>>;
        if constexpr (requires { E::check(p, m, c); }) E::check(p, m, c);
      },
      position);
}

}  // namespace detail

/// The tensors the position encoding adds to a model, in file order (spec §1).
inline std::vector<TensorSpec> position_tensors(const Position& position,
                                                const PositionContext& m) {
  return std::visit(
      [&](const auto& p) -> std::vector<TensorSpec> {
        using E = EncodingFor<float, std::decay_t<decltype(p)>>;
        if constexpr (requires { E::tensors(p, m); })
          return E::tensors(p, m);
        else
          return {};
      },
      position);
}

/// The tensors of layer n that belong to the position encoding.
inline std::vector<TensorSpec> position_layer_tensors(const Position& position,
                                                      const PositionContext& m, std::int64_t n) {
  return std::visit(
      [&](const auto& p) -> std::vector<TensorSpec> {
        using E = EncodingFor<float, std::decay_t<decltype(p)>>;
        if constexpr (requires { E::layer_tensors(p, m, n); })
          return E::layer_tensors(p, m, n);
        else
          return {};
      },
      position);
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
  nlohmann::ordered_json j;
  j["type"] = std::string(position_type(position));
  std::visit([&](const auto& p) { detail::PositionJson<std::decay_t<decltype(p)>>::write(j, p); },
             position);
  return j;
}

}  // namespace io
}  // namespace relpos
