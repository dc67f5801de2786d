// SPDX-License-Identifier: MIT
// libFuzzer target: the whole load-and-run path of relpos-encode (spec §5) on a tiny model:
// config.json + model.safetensors -> relpos::Model, an input safetensors file read by
// relpos::read_inputs as the CLI reads it (`input` or `input_ids`, optional `padding_mask` and
// `position_ids`), one forward through relpos::run.
// Every bad input must end in relpos::Error; a crash, a sanitizer report, another exception
// or a huge allocation is a finding.
//
// Fuzz input layout (fuzz/make_corpus.py writes the seeds):
//   [u32 LE n][n bytes config.json][u32 LE m][m bytes model.safetensors][input.safetensors]
// A length running past the end is cut to what is left, so every byte string is an input.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include <relpos/model.hpp>
#include <relpos/model_io.hpp>
#include <relpos/threads.hpp>

namespace {

volatile float g_sink = 0;

// The next length-prefixed part of the input.
std::string_view take(const std::uint8_t*& p, const std::uint8_t* end) {
  std::uint32_t n = 0;
  const auto left = static_cast<std::size_t>(end - p);
  std::memcpy(&n, p, std::min<std::size_t>(4, left));
  p += std::min<std::size_t>(4, left);
  const std::size_t take = std::min<std::size_t>(n, static_cast<std::size_t>(end - p));
  const std::string_view part(reinterpret_cast<const char*>(p), take);
  p += take;
  return part;
}

void run(std::string_view config, std::string_view weights, std::string_view input) {
  const relpos::Model<float> model = relpos::Model<float>::from_bytes(
      config, std::vector<unsigned char>(weights.begin(), weights.end()), "fuzz");
  const auto file = relpos::io::SafetensorsFile::from_bytes(
      std::vector<unsigned char>(input.begin(), input.end()), "fuzz/input.safetensors");
  // exactly the CLI's path: read_inputs checks the file against the config, run() forwards
  const relpos::ModelOutput<float> out =
      relpos::run(model, relpos::read_inputs<float>(file, model.config()));
  if (out.output.size() > 0) g_sink = g_sink + out.output.data()[out.output.size() - 1];
  if (out.logits && out.logits->size() > 0)
    g_sink = g_sink + out.logits->data()[out.logits->size() - 1];
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  relpos::set_num_threads(1);  // one thread: deterministic, and the fuzzer's cores stay free
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::uint8_t* p = data;
  const std::uint8_t* end = data + size;
  const std::string_view config = take(p, end);
  const std::string_view weights = take(p, end);
  const std::string_view input(reinterpret_cast<const char*>(p), static_cast<std::size_t>(end - p));
  try {
    run(config, weights, input);
  } catch (const relpos::Error&) {
  }
  return 0;
}
