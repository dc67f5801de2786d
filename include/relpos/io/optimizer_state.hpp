// SPDX-License-Identifier: MIT
// Saving and resuming AdamW (optimizer.hpp) as a safetensors file, so a run can stop and go
// on with the same moments: per parameter NAME, `exp_avg.NAME` and `exp_avg_sq.NAME` (the
// moments, [size], in the optimizer's dtype) and `step.NAME` (I64 [1]); the hyper-parameters in
// the header's __metadata__ ("optimizer": "AdamW", "lr", "beta1", "beta2", "eps",
// "weight_decay", written with 17 significant digits so they read back exactly).
#pragma once

#include <cstdint>
#include <cstdio>
#include <exception>
#include <map>
#include <span>
#include <string>
#include <vector>

#include <relpos/core.hpp>
#include <relpos/io/safetensors.hpp>
#include <relpos/io/safetensors_writer.hpp>
#include <relpos/optimizer.hpp>

namespace relpos::io {

namespace detail {
inline std::string exact_decimal(double x) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  return buf;
}

inline double metadata_number(const SafetensorsFile& f, const std::string& path,
                              const std::string& key) {
  const auto& meta = f.metadata();
  const auto it = meta.find(key);
  if (it == meta.end()) {
    throw Error(path + ": __metadata__ has no \"" + key + "\" (not an AdamW state file?)");
  }
  std::size_t used = 0;
  double x = 0;
  try {
    x = std::stod(it->second, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != it->second.size()) {
    throw Error(path + ": __metadata__ \"" + key + "\" is not a number: \"" + it->second + "\"");
  }
  return x;
}
}  // namespace detail

/// Writes `opt`'s hyper-parameters and state to `path` (atomically, as every writer here).
template <Scalar T>
void save_optimizer_state(const AdamW<T>& opt, const std::string& path) {
  SafetensorsWriter w;
  const AdamWOptions& o = opt.options();
  w.set_metadata("optimizer", "AdamW");
  w.set_metadata("lr", detail::exact_decimal(o.lr));
  w.set_metadata("beta1", detail::exact_decimal(o.beta1));
  w.set_metadata("beta2", detail::exact_decimal(o.beta2));
  w.set_metadata("eps", detail::exact_decimal(o.eps));
  w.set_metadata("weight_decay", detail::exact_decimal(o.weight_decay));
  for (const auto& [name, m] : opt.state()) {
    const std::vector<std::int64_t> shape{static_cast<std::int64_t>(m.exp_avg.size())};
    w.add("exp_avg." + name, std::span<const T>(m.exp_avg.data(), m.exp_avg.size()), shape);
    w.add("exp_avg_sq." + name, std::span<const T>(m.exp_avg_sq.data(), m.exp_avg_sq.size()),
          shape);
    w.add("step." + name, std::vector<std::int64_t>{m.steps}, {1});
  }
  w.write(path);
}

/// Reads a file save_optimizer_state wrote: the hyper-parameters from its metadata and every
/// parameter's moments and step count (any float dtype is converted to T). A missing or
/// malformed entry is an Error naming the file and the entry.
template <Scalar T>
AdamW<T> load_optimizer_state(const std::string& path) {
  const SafetensorsFile f = SafetensorsFile::open(path);
  const auto& meta = f.metadata();
  if (meta.count("optimizer") == 0 || meta.at("optimizer") != "AdamW") {
    throw Error(path + ": __metadata__ \"optimizer\" is not \"AdamW\" (not an AdamW state file)");
  }
  AdamWOptions o;
  o.lr = detail::metadata_number(f, path, "lr");
  o.beta1 = detail::metadata_number(f, path, "beta1");
  o.beta2 = detail::metadata_number(f, path, "beta2");
  o.eps = detail::metadata_number(f, path, "eps");
  o.weight_decay = detail::metadata_number(f, path, "weight_decay");
  AdamW<T> opt(o);
  std::map<std::string, typename AdamW<T>::Moments> state;
  const std::string avg = "exp_avg.", sq = "exp_avg_sq.", step = "step.";
  for (const std::string& key : f.names()) {
    if (key.rfind(avg, 0) == 0) {
      const std::string name = key.substr(avg.size());
      typename AdamW<T>::Moments m;
      m.exp_avg = f.vector<T>(key);
      if (!f.contains(sq + name)) throw Error(path + ": tensor '" + sq + name + "' is missing");
      if (!f.contains(step + name)) throw Error(path + ": tensor '" + step + name + "' is missing");
      m.exp_avg_sq = f.vector<T>(sq + name, m.exp_avg.size());
      m.steps = f.values<std::int64_t>(step + name, {1})[0];
      state.emplace(name, std::move(m));
    } else if (!(key.rfind(sq, 0) == 0 || key.rfind(step, 0) == 0)) {
      throw Error(path + ": unexpected tensor '" + key +
                  "' (an AdamW state holds exp_avg.*, exp_avg_sq.* and step.*)");
    }
  }
  for (const std::string& key : f.names()) {
    const bool is_sq = key.rfind(sq, 0) == 0;
    const std::string name = key.substr(is_sq ? sq.size() : step.size());
    if ((is_sq || key.rfind(step, 0) == 0) && state.count(name) == 0) {
      throw Error(path + ": tensor '" + key + "' has no '" + avg + name + "'");
    }
  }
  opt.restore(std::move(state));
  return opt;
}

}  // namespace relpos::io
