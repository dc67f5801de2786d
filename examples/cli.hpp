// SPDX-License-Identifier: MIT
// The one command-line parser of the example programs (relpos-encode, relpos-convert,
// relpos-demo), so they all read flags the same way: `--flag value` and `--flag=value`, `--help`
// or `-h` anywhere prints the usage and exits 0, and every mistake is one UsageError line
// (exit status 2): "unknown option --x", "--x needs a value", "--x takes no value", "--x given
// twice" (a repeated flag is an error, never last-wins), "unexpected argument \"x\"".
#pragma once

#include <functional>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace relpos_cli {

// A command-line mistake: the program prints "<program>: <message> (see <program> --help)" on
// stderr and exits with status 2.
struct UsageError {
  std::string message;
};

struct Flag {
  std::string_view name;  // with the dashes: "--model"
  bool takes_value;       // false: a switch such as --check
};

// The flags given, by name; a switch maps to "". `help` is set when --help or -h was seen (the
// rest of the line is then not looked at).
struct Args {
  bool help = false;
  std::map<std::string, std::string, std::less<>> values;

  std::optional<std::string> get(std::string_view name) const {
    const auto it = values.find(name);
    if (it == values.end()) return std::nullopt;
    return it->second;
  }
  bool has(std::string_view name) const { return values.find(name) != values.end(); }
};

// Parses argv[1..argc) against `flags`. The value of `--flag value` is the next argument as it
// is, even when it starts with "--" (as getopt does): only the end of the line is "no value".
inline Args parse(int argc, char** argv, std::initializer_list<Flag> flags) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      args.help = true;
      return args;
    }
    if (!arg.starts_with("--") || arg.size() == 2) {
      throw UsageError{"unexpected argument \"" + std::string(arg) + "\""};
    }
    const auto eq = arg.find('=');
    const std::string name(arg.substr(0, eq));
    const Flag* flag = nullptr;
    for (const Flag& f : flags) {
      if (f.name == name) flag = &f;
    }
    if (name == "--help") throw UsageError{"--help takes no value"};
    if (flag == nullptr) throw UsageError{"unknown option " + name};
    if (args.has(name)) throw UsageError{name + " given twice"};
    std::string value;
    if (!flag->takes_value) {
      if (eq != std::string_view::npos) throw UsageError{name + " takes no value"};
    } else if (eq != std::string_view::npos) {
      value = arg.substr(eq + 1);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      throw UsageError{name + " needs a value"};
    }
    args.values.emplace(name, std::move(value));
  }
  return args;
}

}  // namespace relpos_cli
