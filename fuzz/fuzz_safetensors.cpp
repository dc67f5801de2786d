// SPDX-License-Identifier: MIT
// libFuzzer target: the safetensors reader (io/safetensors.hpp) on arbitrary bytes. A file is
// either refused with relpos::Error or read completely: every tensor as float, double, int64
// and bool, and through the zero-copy views. Anything else (a crash, a sanitizer report, an
// exception of another type, a huge allocation) is a finding.
#include <cstddef>
#include <cstdint>
#include <vector>

#include <relpos/io/safetensors.hpp>

namespace {

// Keeps the compiler from discarding the values read, so every byte is really touched.
volatile double g_sink = 0;

template <class T>
void read_values(const relpos::io::SafetensorsFile& file, const std::string& name) {
  try {
    const std::vector<T> v = file.values<T>(name);
    double s = 0;
    for (const T x : v) s += static_cast<double>(x);
    g_sink = g_sink + s;
  } catch (const relpos::Error&) {  // a dtype that does not convert to T, an int out of range
  }
}

template <class T>
void read_view(const relpos::io::SafetensorsFile& file, const std::string& name) {
  // summed as double: an int64 sum of arbitrary values overflows (UB, a finding in the
  // harness, not in the reader: regressions/fuzz_safetensors/int64_view_sum_overflow)
  if (const auto m = file.try_map<T>(name)) {
    g_sink = g_sink + m->template cast<double>().sum();
  }
}

void read_shaped(const relpos::io::SafetensorsFile& file, const std::string& name) {
  const std::size_t rank = file.info(name).shape.size();
  try {
    if (rank == 1) g_sink = g_sink + static_cast<double>(file.vector<float>(name).sum());
    if (rank == 2) g_sink = g_sink + static_cast<double>(file.matrix<float>(name).sum());
    if (rank == 3) {
      const relpos::Tensor3<float> t = file.tensor3<float>(name);
      if (t.size() > 0) g_sink = g_sink + static_cast<double>(t.data()[t.size() - 1]);
    }
  } catch (const relpos::Error&) {  // an integer dtype
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto file = relpos::io::SafetensorsFile::from_bytes(
        std::vector<unsigned char>(data, data + size), "fuzz.safetensors");
    for (const std::string& name : file.names()) {
      const auto raw = file.raw(name);
      if (!raw.empty()) g_sink = g_sink + raw.back();
      read_values<float>(file, name);
      read_values<double>(file, name);
      read_values<std::int64_t>(file, name);
      read_values<bool>(file, name);
      read_view<float>(file, name);
      read_view<double>(file, name);
      read_view<std::int64_t>(file, name);
      read_view<std::uint8_t>(file, name);
      read_shaped(file, name);
    }
    for (const auto& [key, value] : file.metadata()) g_sink = g_sink + double(value.size());
  } catch (const relpos::Error&) {
  }
  return 0;
}
