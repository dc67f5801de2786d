// SPDX-License-Identifier: MIT
// The JSON header of a safetensors file, checked for structure: an object of tensor entries
// {"dtype": string, "shape": [ints >= 0], "data_offsets": [begin, end]} and an optional
// "__metadata__" of str -> str, with no duplicate key (JSON parsers keep the last one
// silently; the reference format forbids them). Meaning (dtypes, sizes, tiling) is checked
// by io/safetensors.hpp.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include <relpos/core.hpp>

namespace relpos::detail::safetensors {

// One tensor entry as written in the header.
struct RawEntry {
  std::string name;
  std::string dtype;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0, end = 0;  // data_offsets, relative to the data section
};

struct RawHeader {
  std::vector<RawEntry> entries;  // in the header's order
  std::map<std::string, std::string> metadata;
};

// Deep nesting is never valid here; bounding it bounds the parser's work on hostile input.
inline constexpr int kMaxDepth = 16;

// Reads a little-endian U from possibly unaligned bytes.
template <class U>
U load_le(const unsigned char* p) {
  U v;
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(&v, p, sizeof(U));
  } else {
    std::array<unsigned char, sizeof(U)> b;
    for (std::size_t i = 0; i < sizeof(U); ++i) b[i] = p[sizeof(U) - 1 - i];
    std::memcpy(&v, b.data(), sizeof(U));
  }
  return v;
}

template <class U>
void store_le(U v, unsigned char* p) {
  std::memcpy(p, &v, sizeof(U));
  if constexpr (std::endian::native != std::endian::little) std::reverse(p, p + sizeof(U));
}

// "[2, 3]"
inline std::string shape_string(std::span<const std::int64_t> shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// "<file>: tensor "<name>": <what>", or "<file>: <what>" without a tensor.
[[noreturn]] inline void fail(const std::string& file, std::string_view tensor,
                              const std::string& what) {
  if (tensor.empty()) throw Error(file + ": " + what);
  throw Error(file + ": tensor \"" + std::string(tensor) + "\": " + what);
}

inline RawHeader parse_header(std::string_view text, const std::string& file) {
  using nlohmann::json;
  // Keys seen in each open object, innermost last: a repeated key is an error.
  std::vector<std::set<std::string>> open_objects;
  std::string top_key;  // the current top-level key, to name the tensor in messages
  const json::parser_callback_t check = [&](int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth >= kMaxDepth)
          fail(file, "", "header nested deeper than " + std::to_string(kMaxDepth) + " levels");
        if (event == json::parse_event_t::object_start) open_objects.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case json::parse_event_t::key: {
        const auto& key = parsed.get_ref<const std::string&>();
        if (depth == 1) top_key = key;
        if (!open_objects.empty() && !open_objects.back().insert(key).second) {
          if (depth == 1) fail(file, key, "appears twice in the header");
          if (top_key == "__metadata__")
            fail(file, "", "__metadata__: duplicate key \"" + key + "\"");
          fail(file, top_key, "duplicate key \"" + key + "\"");
        }
        break;
      }
      default:
        break;
    }
    return true;
  };
  // nlohmann's parser stops at a NUL byte as at the end of input, which would let bytes
  // after it pass unread; valid JSON text never holds one (padding is spaces).
  if (const auto nul = text.find('\0'); nul != std::string_view::npos) {
    fail(file, "", "header is not valid JSON: NUL byte at offset " + std::to_string(nul));
  }
  json header;
  try {
    header = json::parse(text.begin(), text.end(), check);
  } catch (const json::exception& e) {
    fail(file, "", std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) fail(file, "", "header is not a JSON object");

  RawHeader out;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      if (value.is_null()) continue;
      if (!value.is_object()) fail(file, "", "__metadata__ is not an object of strings");
      for (const auto& [key, v] : value.items()) {
        if (!v.is_string()) fail(file, "", "__metadata__ \"" + key + "\" is not a string");
        out.metadata.emplace(key, v.get<std::string>());
      }
      continue;
    }
    if (!value.is_object()) fail(file, name, "entry is not an object");
    RawEntry entry;
    entry.name = name;
    for (const auto& [key, v] : value.items()) {
      if (key != "dtype" && key != "shape" && key != "data_offsets") {
        fail(file, name, "unknown key \"" + key + "\"");
      }
    }
    for (const char* key : {"dtype", "shape", "data_offsets"}) {
      if (!value.contains(key)) fail(file, name, std::string("missing \"") + key + "\"");
    }
    const json& dtype = value["dtype"];
    if (!dtype.is_string()) fail(file, name, "\"dtype\" is not a string");
    entry.dtype = dtype.get<std::string>();

    const json& shape = value["shape"];
    if (!shape.is_array()) fail(file, name, "\"shape\" is not an array");
    for (const json& d : shape) {
      if (!d.is_number_integer()) fail(file, name, "\"shape\" holds a non-integer " + d.dump());
      if (!d.is_number_unsigned()) fail(file, name, "negative dimension " + d.dump());
      const auto dim = d.get<std::uint64_t>();
      if (dim > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        fail(file, name, "dimension " + d.dump() + " does not fit in 64 bits");
      }
      entry.shape.push_back(static_cast<std::int64_t>(dim));
    }

    const json& offsets = value["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2) {
      fail(file, name, "\"data_offsets\" is not an array of two integers");
    }
    for (const json& o : offsets) {
      if (!o.is_number_integer()) {
        fail(file, name, "\"data_offsets\" holds a non-integer " + o.dump());
      }
      if (!o.is_number_unsigned()) fail(file, name, "negative data offset " + o.dump());
    }
    entry.begin = offsets[0].get<std::uint64_t>();
    entry.end = offsets[1].get<std::uint64_t>();
    out.entries.push_back(std::move(entry));
  }
  return out;
}

}  // namespace relpos::detail::safetensors
