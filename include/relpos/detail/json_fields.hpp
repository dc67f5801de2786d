// SPDX-License-Identifier: MIT
// Strict readers for JSON fields (config.json, spec §1): every error names the file and the
// key path, an integer is never read from a float, and unknown keys are refused.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include <relpos/core.hpp>
#include <relpos/detail/checker.hpp>

namespace relpos::detail {

using Json = nlohmann::ordered_json;

/// A JSON value's text for a message, cut short so a hostile file cannot flood stderr.
inline std::string json_excerpt(const Json& v) {
  std::string text = v.dump();
  if (text.size() > 40) text = text.substr(0, 37) + "...";
  return text;
}

inline const char* json_kind(const Json& v) {
  if (v.is_number_integer()) return "an integer";
  if (v.is_number_float()) return "a float";
  if (v.is_boolean()) return "a boolean";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  if (v.is_object()) return "an object";
  return "null";
}

/// Reads the fields of one JSON object; `path` is its key path ("position.scaling").
class JsonFields {
 public:
  JsonFields(const Json& object, std::string_view source, std::string path)
      : object_(object), source_(source), path_(std::move(path)) {
    if (!object_.is_object())
      throw Error(std::string(source_) + ": " + (path_.empty() ? "top level" : path_) +
                  ": expected a JSON object, got " + json_kind(object_) + " " +
                  json_excerpt(object_));
  }

  [[noreturn]] void fail(std::string_view key, const std::string& what) const {
    throw Error(std::string(source_) + ": " + key_path(key) + ": " + what);
  }
  std::string key_path(std::string_view key) const {
    return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
  }
  const Json& object() const { return object_; }
  bool has(std::string_view key) const { return object_.contains(key); }

  std::optional<std::int64_t> integer(std::string_view key) const {
    const Json* v = find(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_number_integer()) wrong_type(key, *v, "an integer");
    if (v->is_number_unsigned() &&
        v->get<std::uint64_t>() > std::uint64_t(std::numeric_limits<std::int64_t>::max()))
      fail(key, "integer out of range: " + json_excerpt(*v));
    return v->get<std::int64_t>();
  }

  // An integer is accepted where a float is expected (spec §1); the value must be finite.
  std::optional<double> number(std::string_view key) const {
    const Json* v = find(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_number()) wrong_type(key, *v, "a number");
    const double x = v->get<double>();
    if (!std::isfinite(x)) fail(key, "expected a finite number, got " + json_excerpt(*v));
    return x;
  }

  // For keys whose documented default is null: an explicit null reads as absent.
  std::optional<double> nullable_number(std::string_view key) const {
    const Json* v = find(key);
    if (v != nullptr && v->is_null()) return std::nullopt;
    return number(key);
  }

  std::optional<bool> boolean(std::string_view key) const {
    const Json* v = find(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_boolean()) wrong_type(key, *v, "a boolean");
    return v->get<bool>();
  }

  std::optional<std::string> string(std::string_view key) const {
    const Json* v = find(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_string()) wrong_type(key, *v, "a string");
    return v->get<std::string>();
  }

  std::optional<std::vector<double>> numbers(std::string_view key) const {
    const Json* v = find(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_array()) wrong_type(key, *v, "an array of numbers");
    std::vector<double> out;
    out.reserve(v->size());
    for (std::size_t i = 0; i < v->size(); ++i) {
      const Json& e = (*v)[i];
      const std::string at = std::string(key) + "[" + std::to_string(i) + "]";
      if (!e.is_number()) wrong_type(at, e, "a number");
      const double x = e.get<double>();
      if (!std::isfinite(x)) fail(at, "expected a finite number, got " + json_excerpt(e));
      out.push_back(x);
    }
    return out;
  }

  template <class T>
  T required(std::optional<T> value, std::string_view key) const {
    if (!value) fail(key, "required key is missing");
    return *std::move(value);
  }

 private:
  const Json* find(std::string_view key) const {
    auto it = object_.find(key);
    return it == object_.end() ? nullptr : &*it;
  }
  [[noreturn]] void wrong_type(std::string_view key, const Json& v, const char* expected) const {
    fail(key,
         std::string("expected ") + expected + ", got " + json_kind(v) + " " + json_excerpt(v));
  }

  const Json& object_;
  std::string_view source_;
  std::string path_;
};

/// The keys each type accepts besides "type": the source of "unknown key" messages.
struct KeySet {
  std::string_view type;
  std::array<std::string_view, 8> keys;
  bool has(std::string_view key) const {
    for (std::string_view k : keys)
      if (!k.empty() && k == key) return true;
    return false;
  }
};
// Reads "type", then refuses every key the type does not list, naming the types it belongs to.
template <std::size_t N>
std::string read_type(const JsonFields& f, const std::array<KeySet, N>& table,
                      std::string_view what) {
  const std::string type = f.required(f.string("type"), "type");
  const KeySet* own = nullptr;
  std::string all;
  for (const KeySet& k : table) {
    if (k.type == type) own = &k;
    all += (all.empty() ? "" : ", ") + std::string(k.type);
  }
  if (own == nullptr)
    f.fail("type",
           "unknown " + std::string(what) + " \"" + type + "\" (expected one of " + all + ")");
  for (const auto& item : f.object().items()) {
    const std::string& key = item.key();
    if (key == "type" || own->has(key)) continue;
    std::string owners;
    for (const KeySet& k : table)
      if (k.has(key)) owners += (owners.empty() ? "" : ", ") + std::string(k.type);
    f.fail(key, owners.empty() ? "unknown key for " + std::string(what) + " \"" + type + "\""
                               : "not a key of " + std::string(what) + " \"" + type +
                                     "\" (it belongs to " + owners + ")");
  }
  return type;
}

/// Writes `key` when the optional holds a value (absent optionals are left out).
template <class V>
void put_optional(Json& j, const char* key, const std::optional<V>& v) {
  if (v) j[key] = *v;
}

/// The config.json form of one encoding's Config (the `position` object), specialized beside
/// each encoding in io/positions/<name>.hpp:
///   static constexpr KeySet keys{name, {...}};  the keys besides "type", in file order;
///   static Config read(const JsonFields& f, std::string_view source);  defaults where absent;
///   static void write(Json& j, const Config& p);  every key, absent optionals left out.
template <class Config>
struct PositionJson;

}  // namespace relpos::detail
