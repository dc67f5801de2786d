// SPDX-License-Identifier: MIT
// libFuzzer target: the config.json parser (io/config.hpp). Text is either refused with
// relpos::Error or parsed into a config that round-trips through to_json unchanged and whose
// tensor list can be built. Anything else is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include <relpos/io/config.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  relpos::io::ModelConfig config;
  try {
    config = relpos::io::parse_config(std::string_view(reinterpret_cast<const char*>(data), size),
                                      "fuzz/config.json");
  } catch (const relpos::Error&) {
    return 0;
  }
  // an accepted config is sound: the documented round trip holds and its tensors are known
  const std::string text = relpos::io::to_json(config).dump();
  relpos::io::ModelConfig again;
  try {
    again = relpos::io::parse_config(text, "round-trip");
  } catch (const relpos::Error& e) {
    std::fprintf(stderr, "accepted config refused after to_json: %s\n%s\n", e.what(), text.c_str());
    std::abort();
  }
  if (!(again == config)) {
    std::fprintf(stderr, "to_json round trip changed the config:\n%s\n", text.c_str());
    std::abort();
  }
  volatile std::size_t n = relpos::io::expected_tensors(config).size();
  (void)n;
  return 0;
}
