// SPDX-License-Identifier: MIT
// The one command-line parser of the example programs (relpos-encode, relpos-convert,
// relpos-demo, relpos-embed), so they all read flags the same way: `--flag value` and
// `--flag=value`, `--help` or `-h` anywhere prints the usage and exits 0, and every mistake is one
// UsageError line (exit status 2): "unknown option --x", "--x needs a value", "--x takes no value",
// "--x given twice" (a repeated flag is an error, never last-wins), "unexpected argument \"x\"".
#pragma once

#include <algorithm>
#include <exception>
#include <functional>
#include <initializer_list>
#include <iostream>
#include <map>
#include <new>
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

// The main() of a program that parses its options with `parse_options(argc, argv)` (throwing
// UsageError) and then returns `run(options)`: --help prints `usage`, and every failure is one
// line "<program>: <message>" on stderr (newlines in a message flattened), with status 2 for a
// command-line mistake and 1 for anything else.
template <class Options, class Parse, class Run>
int run_main(std::string_view program, std::string_view usage, int argc, char** argv,
             Parse parse_options, Run run) {
  const auto report = [&](std::string message) {
    std::replace(message.begin(), message.end(), '\n', ' ');
    std::cerr << program << ": " << message << "\n";
  };
  Options options;
  try {
    options = parse_options(argc, argv);
  } catch (const UsageError& e) {
    report(e.message + " (see " + std::string(program) + " --help)");
    return 2;
  }
  if (options.help) {
    std::cout << usage;
    return 0;
  }
  try {
    return run(options);
  } catch (const std::bad_alloc&) {
    report("out of memory");
  } catch (const std::exception& e) {
    report(e.what());
  }
  return 1;
}

}  // namespace relpos_cli
