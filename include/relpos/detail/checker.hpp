// SPDX-License-Identifier: MIT
// Range checks whose errors name where a value came from, shared by the config reader and the
// modules built in code, so a value is checked by one rule whichever way it arrives.
//
// The message convention, one for both paths: `<source>: <path>.<key>: <what>`, where
//   <source> says how the value arrived: the config file's path ("config.json") when it was
//            read, or the encoding's name ("t5", the config.json `type`) when a module was
//            built in code;
//   <path>.<key> is always the key as config.json spells it ("position.num_buckets",
//            "position.scaling.factor"), so one rule gives one text whatever the source:
//   "config.json: position.num_buckets: must be >= 4, got 3"
//   "t5: position.num_buckets: must be >= 4, got 3"
// Sizes a module takes as arguments rather than keys (n_heads, d_head) are checked by the
// module itself (detail/shape_checks.hpp) before its config's rule runs.
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>

#include <relpos/core.hpp>

namespace relpos::detail {

/// A double as JSON prints it (shortest text that reads back the same, "1.0" not "1"), so a
/// message quotes a config's number as the file wrote it; "nan" and "inf" for the values
/// only an API caller can pass.
inline std::string number_text(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[32];
  const auto end = std::to_chars(buf, buf + sizeof buf, v).ptr;
  std::string s(buf, end);
  if (s.find_first_of(".en") == std::string::npos) s += ".0";
  return s;
}

class Checker {
 public:
  Checker(std::string_view source, std::string path) : source_(source), path_(std::move(path)) {}
  [[noreturn]] void fail(std::string_view key, const std::string& what) const {
    throw Error(std::string(source_) + ": " + path_ + "." + std::string(key) + ": " + what);
  }
  /// v > 0 and finite (JSON has no inf, so only code can pass one: base = inf would give
  /// zero frequencies, not an error).
  void positive(std::string_view key, double v) const {
    if (!(v > 0)) fail(key, "must be > 0, got " + num(v));
    if (!std::isfinite(v)) fail(key, "must be finite, got " + num(v));
  }
  void at_least(std::string_view key, std::int64_t v, std::int64_t lo) const {
    if (v < lo) fail(key, "must be >= " + std::to_string(lo) + ", got " + std::to_string(v));
  }
  void range(std::string_view key, std::int64_t v, std::int64_t lo, std::int64_t hi) const {
    at_least(key, v, lo);
    if (v > hi) fail(key, std::to_string(v) + " exceeds the limit of " + std::to_string(hi));
  }
  /// `who` needs an even `dim` ("xl needs an even d_model, got 9"), reported on "type".
  void even(std::string_view who, std::string_view dim, std::int64_t v) const {
    if (v % 2 != 0)
      fail("type",
           std::string(who) + " needs an even " + std::string(dim) + ", got " + std::to_string(v));
  }
  static std::string num(double v) { return number_text(v); }
  std::string_view source() const { return source_; }

 private:
  std::string_view source_;
  std::string path_;
};

}  // namespace relpos::detail
