// SPDX-License-Identifier: MIT
// Hostile input (issue 7): files, configs and user values built to break a reader or exhaust
// memory are refused with a relpos::Error whose message names what is wrong, before any large
// allocation. Non-finite weights are accepted and propagate to the output, as in PyTorch.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <relpos/io/config.hpp>
#include <relpos/io/safetensors.hpp>
#include <relpos/io/safetensors_writer.hpp>
#include <relpos/model.hpp>
#include <relpos/model_io.hpp>

namespace {

using relpos::Index;
using relpos::io::SafetensorsFile;

// Runs f, which must throw relpos::Error, and checks that its message holds every part.
template <class F>
void expect_error(F&& f, std::initializer_list<std::string> parts) {
  try {
    f();
  } catch (const relpos::Error& e) {
    const std::string what = e.what();
    for (const std::string& part : parts)
      EXPECT_NE(what.find(part), std::string::npos) << "message: " << what << "\nmissing: " << part;
    return;
  }
  ADD_FAILURE() << "no relpos::Error thrown (expected one naming: " << *parts.begin() << ")";
}

// A safetensors file from a raw header length, header text and data bytes.
std::vector<unsigned char> file_bytes(std::uint64_t header_length, const std::string& header,
                                      std::size_t data_bytes = 0) {
  // one reserve, then appends: GCC 12 at -O3 misreads insert-after-sized-construction as an
  // out-of-bounds memmove (-Warray-bounds)
  std::vector<unsigned char> out;
  out.reserve(8 + header.size() + data_bytes);
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<unsigned char>(header_length >> (8 * i)));
  for (const char c : header) out.push_back(static_cast<unsigned char>(c));
  out.resize(out.size() + data_bytes, 0x3F);
  return out;
}
// The same with the header's true length, padded with spaces so the data starts 8-byte
// aligned (as writers do; try_map views only aligned data).
std::vector<unsigned char> file_bytes(std::string header, std::size_t data_bytes = 0) {
  header.append((8 - (8 + header.size()) % 8) % 8, ' ');
  return file_bytes(header.size(), header, data_bytes);
}

SafetensorsFile open(std::vector<unsigned char> bytes) {
  return SafetensorsFile::from_bytes(std::move(bytes), "hostile.safetensors");
}

TEST(HostileSafetensors, HeaderLengthOf2To63) {
  expect_error([] { open(file_bytes(std::uint64_t(1) << 63, "{}")); },
               {"hostile.safetensors", "header length 9223372036854775808",
                "exceeds the 2 bytes that follow it"});
  // 2^64 − 1: 8 + n would wrap around to 7 if the check added first
  expect_error([] { open(file_bytes(~std::uint64_t(0), "{}")); },
               {"header length 18446744073709551615"});
}

TEST(HostileSafetensors, ElementCountOverflowing64Bits) {
  // 2^32 · 2^32 · 2 elements: the product wraps to 0 in 64 bits
  expect_error(
      [] {
        open(file_bytes(
            R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,2],"data_offsets":[0,0]}})"));
      },
      {"tensor \"a\"", "[4294967296, 4294967296, 2]", "more elements than fit in 64 bits"});
  // the element count fits, the byte count (× 8) does not
  expect_error(
      [] {
        open(file_bytes(
            R"({"b":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,0]}})"));
      },
      {"tensor \"b\"", "byte size of F64 [4611686018427387904] overflows 64 bits"});
}

TEST(HostileSafetensors, OffsetsPastTheEnd) {
  expect_error(
      [] { open(file_bytes(R"({"a":{"dtype":"U8","shape":[5],"data_offsets":[0,5]}})", 1)); },
      {"tensor \"a\"", "data_offsets [0, 5]", "outside the data section of 1 bytes"});
  expect_error(
      [] {
        open(file_bytes(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":)"
                        R"([18446744073709551615,18446744073709551615]}})",
                        1));
      },
      {"tensor \"a\"", "outside the data section"});
}

TEST(HostileSafetensors, EmptyTensorWithHugeDimensions) {
  // [2^40, 2^40, 0] is a valid empty tensor; its leading dims' product overflows 64 bits
  const SafetensorsFile f =
      open(file_bytes(R"({"a":{"dtype":"F32","shape":[1099511627776,1099511627776,0],)"
                      R"("data_offsets":[0,0]}})"));
  const auto view = f.try_map<float>("a");
  ASSERT_TRUE(view.has_value());
  EXPECT_EQ(view->size(), 0);
  const SafetensorsFile g = open(file_bytes(
      R"({"a":{"dtype":"F32","shape":[4611686018427387904,4,0],"data_offsets":[0,0]}})"));
  expect_error([&] { g.tensor3<float>("a"); },
               {"tensor \"a\"", "[4611686018427387904, 4, 0]", "product overflows 64 bits"});
}

// ---- config.json ----

std::string config_with(const std::string& key, const std::string& value) {
  nlohmann::json j = {{"d_model", 4}, {"n_heads", 2}, {"n_layers", 1}, {"d_ff", 4}};
  std::string text = j.dump();
  text.pop_back();  // the value goes in verbatim, so numbers beyond JSON's types stay as written
  return text + ",\"" + key + "\":" + value + "}";
}

TEST(HostileConfig, NegativeOrZeroDimensions) {
  expect_error([] { relpos::io::parse_config(config_with("d_ff", "-4")); },
               {"config.json", "d_ff", "must be >= 1, got -4"});
  expect_error([] { relpos::io::parse_config(config_with("vocab_size", "0")); },
               {"vocab_size", "must be >= 1, got 0"});
  expect_error(
      [] { relpos::io::parse_config(R"({"d_model":-64,"n_heads":2,"n_layers":1,"d_ff":4})"); },
      {"d_model", "must be >= 1, got -64"});
}

TEST(HostileConfig, HugeDimensions) {
  expect_error(
      [] {
        relpos::io::parse_config(
            R"({"d_model":4611686018427387904,"n_heads":2,"n_layers":1,"d_ff":4})");
      },
      {"d_model", "4611686018427387904 exceeds the limit of 1048576"});
  // beyond int64 and beyond double: refused, never wrapped or thrown as a JSON exception
  expect_error([] { relpos::io::parse_config(config_with("vocab_size", "18446744073709551615")); },
               {"vocab_size"});
  expect_error([] { relpos::io::parse_config(config_with("vocab_size", "1e400")); },
               {"config.json", "malformed JSON", "number overflow"});
  // each size within its limit, the product beyond the parameter limit (2^31)
  expect_error(
      [] {
        relpos::io::parse_config(
            R"({"d_model":1048576,"n_heads":1,"n_layers":4096,"d_ff":1048576})");
      },
      {"parameters, more than the limit of 2^31"});
}

TEST(HostileConfig, BillionLayers) {
  expect_error(
      [] {
        relpos::io::parse_config(R"({"d_model":4,"n_heads":2,"n_layers":1000000000,"d_ff":4})");
      },
      {"n_layers", "1000000000 exceeds the limit of 4096"});
}

// ---- the model and its inputs ----

// The tiny model of these tests: d_model 4, 2 heads, 1 layer, d_ff 4, vocab 8, with an output
// head; weights from a fixed seed (values do not matter here, only their flow).
const char* const kTinyConfig =
    R"({"d_model":4,"n_heads":2,"n_layers":1,"d_ff":4,"vocab_size":8,"output_head":true,)"
    R"("position":{"type":"rotary"}})";

std::vector<unsigned char> tiny_weights(const std::string& poison_tensor = "",
                                        float poison = 0.0f) {
  const relpos::io::ModelConfig c = relpos::io::parse_config(kTinyConfig);
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  relpos::io::SafetensorsWriter w;
  for (const relpos::io::TensorSpec& spec : relpos::io::expected_tensors(c)) {
    std::size_t n = 1;
    for (const std::int64_t d : spec.shape) n *= std::size_t(d);
    std::vector<float> v(n);
    for (float& x : v) x = normal(rng);
    if (spec.name == poison_tensor) v[0] = poison;
    w.add(spec.name, v, spec.shape);
  }
  return w.bytes();
}

relpos::Model<float> tiny_model(const std::string& poison_tensor = "", float poison = 0.0f) {
  return relpos::Model<float>::from_bytes(kTinyConfig, tiny_weights(poison_tensor, poison), "tiny");
}

TEST(HostileModel, HugeConfigRefusedBeforeLoadingWeights) {
  expect_error(
      [] {
        relpos::Model<float>::from_bytes(
            R"({"d_model":4,"n_heads":2,"n_layers":1000000000,"d_ff":4})", tiny_weights(), "m");
      },
      {"m/config.json", "n_layers", "exceeds the limit"});
}

TEST(HostileModel, TokenIdOutOfRange) {
  const relpos::Model<float> model = tiny_model();
  relpos::TokenIds ids(1, 3);
  ids << 1, -1, 2;
  expect_error([&] { model.forward(ids); }, {"input_ids[0, 1]", "vocab_size 8", "got -1"});
  ids << 1, 2, std::int64_t(1) << 40;
  expect_error([&] { model.forward(ids); }, {"input_ids[0, 2]", "got 1099511627776"});
  // the same through the CLI's input file
  for (const std::int64_t bad : {std::int64_t(-1), std::int64_t(1) << 40}) {
    relpos::io::SafetensorsWriter w;
    w.add("input_ids", std::vector<std::int64_t>{3, bad}, {1, 2});
    const SafetensorsFile in = SafetensorsFile::from_bytes(w.bytes(), "in.safetensors");
    expect_error([&] { relpos::read_inputs<float>(in, model.config()); },
                 {"in.safetensors", "input_ids", "id " + std::to_string(bad) + " at [0, 1]",
                  "out of range [0, 8)"});
  }
}

TEST(HostileModel, EmptySequenceAndEmptyBatch) {
  const relpos::Model<float> model = tiny_model();
  expect_error([&] { model.forward(relpos::Tensor3<float>(0, 3, 4)); },
               {"input", "batch >= 1", "got batch 0, len 3"});
  expect_error([&] { model.forward(relpos::Tensor3<float>(2, 0, 4)); },
               {"input", "got batch 2, len 0"});
  expect_error([&] { model.forward(relpos::TokenIds(0, 5)); }, {"input_ids", "got batch 0"});
  expect_error([&] { model.forward(relpos::TokenIds(1, 0)); }, {"input_ids", "len 0"});
  relpos::io::SafetensorsWriter w;
  w.add("input_ids", std::vector<std::int64_t>{}, {0, 3});
  const SafetensorsFile in = SafetensorsFile::from_bytes(w.bytes(), "in.safetensors");
  expect_error([&] { relpos::read_inputs<float>(in, model.config()); },
               {"in.safetensors", "batch and len must be >= 1", "[0, 3]"});
}

TEST(HostileModel, SequenceTooLongForMemoryIsRefusedFromTheFile) {
  // len 2^20 + 1 ids: past relpos::kMaxInputLength; refused by the file reader with the
  // limit named, before the ids are even converted
  const relpos::Model<float> model = tiny_model();
  const Index len = relpos::kMaxInputLength + 1;
  relpos::io::SafetensorsWriter w;
  w.add("input_ids", std::vector<std::int32_t>(std::size_t(len), 1), {1, len});
  const SafetensorsFile in = SafetensorsFile::from_bytes(w.bytes(), "in.safetensors");
  expect_error([&] { relpos::read_inputs<float>(in, model.config()); },
               {"in.safetensors", "len " + std::to_string(len), "exceeds the limit of 1048576"});
}

// Model::forward checks the length itself, before any activation of that length exists.
TEST(HostileModel, SequenceTooLongForMemoryIsRefusedByForward) {
  const relpos::Model<float> model = tiny_model();
  const relpos::Tensor3<float> x = relpos::Tensor3<float>(1, Index(1) << 22, 4).setZero();
  expect_error([&] { model.forward(x); }, {"input", "len 4194304", "exceeds the limit"});
}

// NaN or ±Inf in a weight is not rejected at load (relpos does not scan weights); it flows
// into the output as it would in PyTorch, so a broken file shows as non-finite numbers, never
// as plausible ones. (Exception, as in PyTorch: −Inf into relu becomes 0.)
bool all_finite(const relpos::Tensor3<float>& t) {
  return Eigen::Map<const Eigen::ArrayXf>(t.data(), t.size()).allFinite();
}

TEST(HostileModel, NaNInAnyWeightPropagatesToTheOutput) {
  const relpos::io::ModelConfig c = relpos::io::parse_config(kTinyConfig);
  relpos::TokenIds ids(2, 3);
  ids << 0, 1, 2, 3, 0, 7;  // id 0 uses embed.weight row 0, where the poison goes
  const relpos::ModelOutput<float> clean = tiny_model().forward(ids);
  ASSERT_TRUE(all_finite(clean.output) && all_finite(*clean.logits));  // so NaN is the poison's
  for (const relpos::io::TensorSpec& spec : relpos::io::expected_tensors(c)) {
    SCOPED_TRACE(spec.name + "[0] = NaN");
    const relpos::ModelOutput<float> out =
        tiny_model(spec.name, std::numeric_limits<float>::quiet_NaN()).forward(ids);
    // head.* only reach the logits; every other tensor reaches the output (and the logits)
    EXPECT_EQ(all_finite(out.output), spec.name.rfind("head.", 0) == 0);
    EXPECT_FALSE(all_finite(*out.logits));
  }
}

TEST(HostileModel, InfInWeightsPropagatesToTheOutput) {
  relpos::TokenIds ids(1, 3);
  ids << 0, 5, 2;
  for (const float inf :
       {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()}) {
    for (const char* name : {"embed.weight", "layers.0.self_attn.out_proj.bias",
                             "layers.0.linear2.bias", "layers.0.norm2.bias"}) {
      SCOPED_TRACE(std::string(name) + "[0] = " + std::to_string(inf));
      EXPECT_FALSE(all_finite(tiny_model(name, inf).forward(ids).output));
    }
  }
}

// A model file is refused by the same rule, naming the tensor and the head.
TEST(HostileModel, KerpleValuesOutsideTheDomainAreRefusedNamingTensorAndHead) {
  namespace fs = std::filesystem;
  const fs::path src = fs::path(RELPOS_TEST_DATA_DIR) / "models" / "kerple_power_causal";
  const fs::path dir = fs::temp_directory_path() / "relpos_kerple_test";
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy_file(src / "config.json", dir / "config.json");
  const auto rewrite = [&](const std::string& tensor, Index head, float value) {
    const auto f = relpos::io::SafetensorsFile::open((src / "model.safetensors").string());
    relpos::io::SafetensorsWriter w;
    for (const std::string& name : f.names()) {
      const relpos::io::TensorInfo& info = f.info(name);
      std::vector<float> v = f.values<float>(name);
      if (name == tensor) v[static_cast<std::size_t>(head)] = value;
      w.add(name, v, info.shape);
    }
    w.write((dir / "model.safetensors").string());
  };
  const auto error = [&]() -> std::string {
    try {
      (void)relpos::Model<float>::load(dir.string());
      return "";
    } catch (const relpos::Error& e) {
      return e.what();
    }
  };
  rewrite("position.kerple_r2", 1, 2.5F);
  EXPECT_NE(error().find("position.kerple_r2[1]: must be <= 2 in the power form, got 2.5"),
            std::string::npos)
      << error();
  rewrite("position.kerple_r1", 0, -0.25F);
  EXPECT_NE(error().find("position.kerple_r1[0]: must be a finite number > 0, got -0.25"),
            std::string::npos)
      << error();
  rewrite("position.kerple_r2", 0, 2.0F);  // the boundary is inside
  EXPECT_EQ(error(), "");
  fs::remove_all(dir);
}

}  // namespace
