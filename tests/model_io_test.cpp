// SPDX-License-Identifier: MIT
// Inputs and outputs of a model run (spec §5): what read_inputs accepts and converts, text as
// byte ids, the length limit, and the atomic F32 output file. The messages of every refused
// input file are checked end to end in encode_cli_test.
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <unistd.h>

#include <relpos/io/config.hpp>
#include <relpos/io/safetensors.hpp>
#include <relpos/io/safetensors_writer.hpp>
#include <relpos/model_io.hpp>

namespace {

const relpos::io::ModelConfig kModelIoConfig = relpos::io::parse_config(
    R"({"d_model": 4, "n_heads": 1, "n_layers": 1, "d_ff": 4, "vocab_size": 300})");

relpos::io::SafetensorsFile file(const relpos::io::SafetensorsWriter& w) {
  return relpos::io::SafetensorsFile::from_bytes(w.bytes(), "in.safetensors");
}

std::string error_of(const relpos::io::SafetensorsWriter& w,
                     const relpos::io::ModelConfig& c = kModelIoConfig) {
  try {
    relpos::read_inputs<float>(file(w), c);
  } catch (const relpos::Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(ModelIo, ReadsIdsMaskAndPositionsInEveryAcceptedDtype) {
  relpos::io::SafetensorsWriter w;
  w.add("input_ids", std::vector<std::int32_t>{0, 299, 7, 1, 2, 3}, {2, 3});
  w.add("padding_mask", std::vector<std::uint8_t>{0, 2, 0, 0, 0, 255}, {2, 3});  // non-zero: padded
  w.add("position_ids", std::vector<std::int32_t>{5, 6, 7, 0, 0, 1}, {2, 3});
  w.add("something_else", std::vector<float>{1.f}, {1});  // ignored
  const relpos::ModelInputs<float> in = relpos::read_inputs<float>(file(w), kModelIoConfig);
  ASSERT_TRUE(in.input_ids.has_value());
  EXPECT_FALSE(in.input.has_value());
  EXPECT_EQ(in.batch(), 2);
  EXPECT_EQ(in.len(), 3);
  EXPECT_EQ((*in.input_ids)(0, 1), 299);
  EXPECT_EQ((*in.input_ids)(1, 2), 3);
  EXPECT_EQ(in.padding_mask->cast<int>().matrix(),
            (Eigen::Matrix<int, 2, 3, Eigen::RowMajor>() << 0, 1, 0, 0, 0, 1).finished());
  EXPECT_EQ((*in.position_ids)(0, 2), 7);
  EXPECT_EQ((*in.position_ids)(1, 2), 1);
}

TEST(ModelIo, ReadsActivations) {
  relpos::io::SafetensorsWriter w;
  std::vector<float> x(2 * 4);
  for (std::size_t k = 0; k < x.size(); ++k) x[k] = 0.5f * float(k);
  w.add("input", x, {1, 2, 4});
  const bool mask[] = {false, true};
  w.add("padding_mask", std::span<const bool>(mask), {1, 2});
  const relpos::ModelInputs<double> in = relpos::read_inputs<double>(file(w), kModelIoConfig);
  ASSERT_TRUE(in.input.has_value());
  EXPECT_EQ((*in.input)(0, 1, 3), 3.5);  // row-major [batch, len, d]
  EXPECT_TRUE((*in.padding_mask)(0, 1));
}

TEST(ModelIo, RefusesWhatSpecFiveRefuses) {
  relpos::io::SafetensorsWriter ids_only;
  ids_only.add("input_ids", std::vector<std::int64_t>{1, 2}, {1, 2});
  const relpos::io::ModelConfig no_vocab =
      relpos::io::parse_config(R"({"d_model": 4, "n_heads": 1, "n_layers": 1, "d_ff": 4})");
  EXPECT_EQ(error_of(ids_only, no_vocab),
            "in.safetensors: tensor \"input_ids\": the model has no vocab_size: give \"input\" "
            "instead");
  const relpos::io::ModelConfig additive = relpos::io::parse_config(
      R"({"d_model": 4, "n_heads": 1, "n_layers": 1, "d_ff": 4, "vocab_size": 300,
          "position": {"type": "additive", "source": "sinusoidal", "window": 1}})");
  relpos::io::SafetensorsWriter with_positions;
  with_positions.add("input_ids", std::vector<std::int64_t>{1, 2}, {1, 2});
  with_positions.add("position_ids", std::vector<std::int64_t>{0, 1}, {1, 2});
  EXPECT_EQ(error_of(with_positions, additive),
            "in.safetensors: tensor \"position_ids\": not supported with position type additive "
            "(defined over indices)");
  // len is bounded before anything is allocated for it
  relpos::io::SafetensorsWriter long_ids;
  long_ids.add("input_ids", std::vector<std::int64_t>(std::size_t(relpos::kMaxInputLength) + 1, 1),
               {1, relpos::kMaxInputLength + 1});
  EXPECT_EQ(error_of(long_ids),
            "in.safetensors: tensor \"input_ids\": len 1048577 exceeds the limit of 1048576 "
            "(relpos::kMaxInputLength)");
}

TEST(ModelIo, TextIsItsUtf8Bytes) {
  const relpos::TokenIds ids = relpos::text_ids("a\xc3\xa9!", kModelIoConfig);  // "aé!"
  ASSERT_EQ(ids.rows(), 1);
  ASSERT_EQ(ids.cols(), 4);
  EXPECT_EQ(ids(0, 0), 97);
  EXPECT_EQ(ids(0, 1), 0xc3);
  EXPECT_EQ(ids(0, 2), 0xa9);
  EXPECT_EQ(ids(0, 3), 33);
  const auto error = [](std::string_view text, const relpos::io::ModelConfig& c) -> std::string {
    try {
      relpos::text_ids(text, c);
    } catch (const relpos::Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  EXPECT_EQ(error("", kModelIoConfig), "--text: the text is empty (len must be >= 1)");
  EXPECT_EQ(error("abc", relpos::io::parse_config(
                             R"({"d_model": 4, "n_heads": 1, "n_layers": 1, "d_ff": 4})")),
            "--text needs a model with vocab_size >= 256 (one id per byte), this one has no "
            "vocab_size");
}

TEST(ModelIo, OutputsAreWrittenAsF32Atomically) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("relpos_model_io_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  relpos::ModelOutput<double> out;
  out.output = relpos::Tensor3<double>(1, 2, 3);
  for (relpos::Index k = 0; k < 6; ++k) out.output.data()[k] = 0.1 * double(k);
  out.logits = relpos::Tensor3<double>(1, 2, 5);
  out.logits->setConstant(-2.0);
  const std::string path = (dir / "out.safetensors").string();
  relpos::write_outputs(path, out);
  const auto f = relpos::io::SafetensorsFile::open(path);
  EXPECT_EQ(f.names(), (std::vector<std::string>{"logits", "output"}));
  EXPECT_EQ(f.info("output").dtype, relpos::io::DType::F32);
  EXPECT_EQ(f.info("output").shape, (std::vector<std::int64_t>{1, 2, 3}));
  EXPECT_EQ(f.values<float>("output")[5], 0.5f);
  EXPECT_EQ(f.info("logits").shape, (std::vector<std::int64_t>{1, 2, 5}));
  // a folder that does not exist: an error, and nothing written anywhere
  EXPECT_THROW(relpos::write_outputs((dir / "missing" / "o.safetensors").string(), out),
               relpos::Error);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir), {}), 1);
  std::filesystem::remove_all(dir);
}

}  // namespace
