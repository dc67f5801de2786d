// SPDX-License-Identifier: MIT
// Tests of relpos/io/safetensors.hpp: values against what PyTorch says the committed files
// hold (tools/make_safetensors_fixtures.py), the writer against the Python writer byte for
// byte, zero-copy mapping, and one test per kind of malformed file.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <relpos/io/safetensors.hpp>
#include <relpos/io/safetensors_writer.hpp>

#include "support/golden.hpp"

namespace {

using relpos::Error;
using relpos::Index;
using relpos::io::DType;
using relpos::io::SafetensorsFile;
using relpos::io::SafetensorsWriter;
using relpos::test::golden_file;

std::string data_path(const std::string& relative) {
  return std::string(RELPOS_TEST_DATA_DIR) + "/" + relative;
}

std::vector<unsigned char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Passes when f throws relpos::Error whose message contains every one of `parts`.
::testing::AssertionResult throws_error(const std::function<void()>& f,
                                        std::initializer_list<std::string> parts) {
  try {
    f();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const std::string& part : parts) {
      if (msg.find(part) == std::string::npos) {
        return ::testing::AssertionFailure()
               << "message \"" << msg << "\" lacks \"" << part << "\"";
      }
    }
    return ::testing::AssertionSuccess() << msg;
  }
  return ::testing::AssertionFailure() << "no relpos::Error thrown";
}

// A file from a header text (as is, no padding) and `data_size` zero bytes of data.
std::vector<unsigned char> file_with(const std::string& header, std::size_t data_size = 0) {
  std::vector<unsigned char> out(8 + header.size() + data_size, 0);
  const std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<unsigned char>(n >> (8 * i));
  std::copy(header.begin(), header.end(), out.begin() + 8);
  return out;
}

::testing::AssertionResult bad_file(const std::string& header, std::size_t data_size,
                                    std::initializer_list<std::string> parts) {
  const auto bytes = file_with(header, data_size);
  return throws_error([&] { (void)SafetensorsFile::from_bytes(bytes, "bad.safetensors"); }, parts);
}

std::string tensor_name(int k) {
  return std::string(1, 't').append(std::to_string(k));
}

std::uint32_t bits(float f) {
  return std::bit_cast<std::uint32_t>(f);
}

// ---- values against PyTorch ------------------------------------------------------------

TEST(SafetensorsRead, FloatDtypesMatchTorchBitForBit) {
  const SafetensorsFile f = golden_file("safetensors/dtypes.safetensors");
  const SafetensorsFile want = golden_file("safetensors/dtypes_expected.safetensors");
  for (const char* name : {"f16", "bf16", "f32", "f64"}) {
    SCOPED_TRACE(name);
    const std::vector<float> got = f.values<float>(name);
    const auto expected = want.values<std::int32_t>(std::string(name) + ".f32_bits");
    ASSERT_EQ(got.size(), expected.size());
    ASSERT_GT(got.size(), 10u);
    for (std::size_t i = 0; i < got.size(); ++i) {
      // NaN payloads included: F16 NaNs come out quiet, BF16 NaNs bit for bit, as in torch
      EXPECT_EQ(bits(got[i]), static_cast<std::uint32_t>(expected[i])) << "element " << i;
    }
  }
  for (const char* name : {"f16", "bf16", "f64"}) {
    SCOPED_TRACE(name);
    const std::vector<double> got = f.values<double>(name);
    const std::vector<double> expected = want.values<double>(std::string(name) + ".f64");
    ASSERT_EQ(got.size(), expected.size());
    for (std::size_t i = 0; i < got.size(); ++i) {
      if (std::isnan(expected[i])) {
        EXPECT_TRUE(std::isnan(got[i])) << "element " << i;
      } else {
        EXPECT_EQ(got[i], expected[i]) << "element " << i;
      }
    }
  }
}

TEST(SafetensorsRead, HalfSpecialsAreTheIeeeValues) {
  // Independent of any file: the definition of binary16 and bfloat16.
  namespace st = relpos::detail::safetensors;
  EXPECT_EQ(st::f16_to_float(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(st::f16_to_float(0x03ff), std::ldexp(1023.0f, -24));
  EXPECT_EQ(st::f16_to_float(0x0400), std::ldexp(1.0f, -14));
  EXPECT_EQ(st::f16_to_float(0x7bff), 65504.0f);
  EXPECT_TRUE(std::signbit(st::f16_to_float(0x8000)));
  EXPECT_EQ(st::f16_to_float(0xfc00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(st::f16_to_float(0x7c01)));
  EXPECT_EQ(st::bf16_to_float(0x0001), std::ldexp(1.0f, -133));
  EXPECT_EQ(st::bf16_to_float(0x3f80), 1.0f);
  EXPECT_EQ(st::bf16_to_float(0xff80), -std::numeric_limits<float>::infinity());
}

// ---- F16 and BF16 through Eigen::half and Eigen::bfloat16, every bit pattern ------------

// binary16 by its definition, in double (exact): sign, 5 exponent bits (bias 15), 10 bits of
// mantissa; subnormals are mantissa * 2^-24. NaN (exponent 31, mantissa != 0) is left out.
double f16_by_definition(std::uint16_t h) {
  const int exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
  const double sign = (h & 0x8000) != 0 ? -1.0 : 1.0;
  if (exponent == 0x1f) return sign * std::numeric_limits<double>::infinity();
  if (exponent == 0) return sign * std::ldexp(double(mantissa), -24);
  return sign * std::ldexp(1024.0 + mantissa, exponent - 25);
}

std::uint16_t bits16(Eigen::half h) {
  return Eigen::numext::bit_cast<std::uint16_t>(h);
}
std::uint16_t bits16(Eigen::bfloat16 b) {
  return std::bit_cast<std::uint16_t>(b);
}

// All 65536 F16 patterns: the reader's float is the binary16 value (NaNs: quiet, payload in
// the top mantissa bits, as PyTorch), and F16 -> float -> F16 gives the pattern back; a NaN
// stays a NaN (its payload may not survive: F16C keeps it, Eigen's software path and PyTorch
// do not).
TEST(SafetensorsHalf, EveryF16PatternIsExactAndRoundTrips) {
  namespace st = relpos::detail::safetensors;
  for (std::uint32_t i = 0; i < 65536; ++i) {
    const auto h = static_cast<std::uint16_t>(i);
    const float f = st::f16_to_float(h);
    const bool nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0;
    if (nan) {
      const std::uint32_t want =
          (std::uint32_t(h & 0x8000) << 16) | 0x7fc00000u | (std::uint32_t(h & 0x3ff) << 13);
      ASSERT_EQ(bits(f), want) << "F16 " << std::hex << i;
      ASSERT_TRUE(Eigen::numext::isnan(Eigen::half(f))) << "F16 " << std::hex << i;
    } else {
      ASSERT_EQ(double(f), f16_by_definition(h)) << "F16 " << std::hex << i;
      ASSERT_EQ(std::signbit(f), (h & 0x8000) != 0) << "F16 " << std::hex << i;
      ASSERT_EQ(bits16(Eigen::half(f)), h) << "F16 " << std::hex << i;
    }
  }
}

// All 65536 BF16 patterns: the float is the pattern shifted into the top half (NaNs bit for
// bit, as PyTorch), and BF16 -> float -> BF16 gives the pattern back; a NaN stays a NaN
// (Eigen makes every NaN 0x7fc0 or 0xffc0).
TEST(SafetensorsHalf, EveryBf16PatternIsExactAndRoundTrips) {
  namespace st = relpos::detail::safetensors;
  for (std::uint32_t i = 0; i < 65536; ++i) {
    const auto b = static_cast<std::uint16_t>(i);
    const float f = st::bf16_to_float(b);
    ASSERT_EQ(bits(f), i << 16) << "BF16 " << std::hex << i;
    if (std::isnan(f)) {
      ASSERT_TRUE(Eigen::numext::isnan(Eigen::bfloat16(f))) << "BF16 " << std::hex << i;
    } else {
      ASSERT_EQ(bits16(Eigen::bfloat16(f)), b) << "BF16 " << std::hex << i;
    }
  }
}

// float -> F16 and float -> BF16 round as PyTorch's .to(torch.float16 / torch.bfloat16) does,
// on the values where rounding is hard: ties to even, overflow to inf, subnormals
// (tools/make_half_rounding.py). NaN bits differ between PyTorch's own code paths, so a NaN
// only has to stay a NaN.
TEST(SafetensorsHalf, FloatRoundsToF16AndBf16AsPyTorch) {
  const SafetensorsFile f = golden_file("safetensors/float_to_half.safetensors");
  const auto input = f.values<std::int32_t>("input.f32_bits");
  const auto f16 = f.values<std::int32_t>("f16_bits");
  const auto bf16 = f.values<std::int32_t>("bf16_bits");
  ASSERT_EQ(f16.size(), input.size());
  ASSERT_EQ(bf16.size(), input.size());
  ASSERT_GT(input.size(), 200u);
  int nans = 0;
  for (std::size_t k = 0; k < input.size(); ++k) {
    const float x = std::bit_cast<float>(input[k]);
    SCOPED_TRACE(::testing::Message() << "element " << k << ", float bits " << std::hex
                                      << std::uint32_t(input[k]) << ", " << x);
    if (std::isnan(x)) {
      ++nans;
      EXPECT_TRUE(Eigen::numext::isnan(Eigen::half(x)));
      EXPECT_TRUE(Eigen::numext::isnan(Eigen::bfloat16(x)));
      continue;
    }
    EXPECT_EQ(bits16(Eigen::half(x)), f16[k]);
    EXPECT_EQ(bits16(Eigen::bfloat16(x)), bf16[k]);
  }
  EXPECT_GT(nans, 0);
}

// The writer stores Eigen::half and Eigen::bfloat16 as F16 and BF16, and the reader gives
// every pattern back, as float and as double.
TEST(SafetensorsHalf, WriterAndReaderKeepEveryPattern) {
  std::vector<Eigen::half> h(65536);
  std::vector<Eigen::bfloat16> b(65536);
  for (std::uint32_t i = 0; i < 65536; ++i) {
    h[i] = Eigen::numext::bit_cast<Eigen::half>(static_cast<std::uint16_t>(i));
    b[i] = std::bit_cast<Eigen::bfloat16>(static_cast<std::uint16_t>(i));
  }
  SafetensorsWriter w;
  w.add("h", h, {65536});
  w.add("b", b, {256, 256});
  const auto bytes = w.bytes();
  const SafetensorsFile f = SafetensorsFile::from_bytes(bytes, "halves.safetensors");
  EXPECT_EQ(f.info("h").dtype, DType::F16);
  EXPECT_EQ(f.info("b").dtype, DType::BF16);
  namespace st = relpos::detail::safetensors;
  const auto hf = f.values<float>("h"), bf = f.values<float>("b");
  const auto hd = f.values<double>("h");
  for (std::uint32_t i = 0; i < 65536; ++i) {
    const auto p = static_cast<std::uint16_t>(i);
    ASSERT_EQ(bits(hf[i]), bits(st::f16_to_float(p))) << std::hex << i;
    ASSERT_EQ(bits(bf[i]), i << 16) << std::hex << i;
    if (std::isnan(hf[i])) {
      ASSERT_TRUE(std::isnan(hd[i])) << std::hex << i;
    } else {
      ASSERT_EQ(hd[i], f16_by_definition(p)) << std::hex << i;
    }
  }
}

TEST(SafetensorsRead, IntegerDtypesWidenExactly) {
  const SafetensorsFile f = golden_file("safetensors/dtypes.safetensors");
  const SafetensorsFile want = golden_file("safetensors/dtypes_expected.safetensors");
  for (const char* name : {"i64", "i32", "i16", "i8", "u8", "bool"}) {
    SCOPED_TRACE(name);
    EXPECT_EQ(f.values<std::int64_t>(name), want.values<std::int64_t>(std::string(name) + ".i64"));
  }
  const std::vector<std::int64_t> flags = want.values<std::int64_t>("bool.i64");
  const std::vector<bool> as_bool = f.values<bool>("bool");
  ASSERT_EQ(as_bool.size(), flags.size());
  for (std::size_t i = 0; i < flags.size(); ++i) EXPECT_EQ(as_bool[i], flags[i] != 0);
  const std::vector<bool> u8_as_bool = f.values<bool>("u8");  // non-zero = true (padding masks)
  EXPECT_EQ(u8_as_bool, (std::vector<bool>{false, true, true, true, true}));
}

TEST(SafetensorsRead, IntegerNarrowingIsRangeChecked) {
  const SafetensorsFile f = golden_file("safetensors/dtypes.safetensors");
  EXPECT_TRUE(throws_error([&] { (void)f.values<std::int32_t>("i64"); },
                           {"dtypes.safetensors: tensor \"i64\"", "element 0", "int32"}));
  EXPECT_TRUE(throws_error([&] { (void)f.values<std::uint8_t>("i8"); },
                           {"tensor \"i8\"", "element 0 = -128", "uint8"}));
  EXPECT_TRUE(throws_error([&] { (void)f.values<std::int8_t>("u8"); },
                           {"tensor \"u8\"", "element 3 = 128", "int8"}));
  EXPECT_EQ(f.values<std::int16_t>("i8"), (std::vector<std::int16_t>{-128, -1, 0, 1, 127}));
}

TEST(SafetensorsRead, KindMismatchIsAnError) {
  const SafetensorsFile f = golden_file("safetensors/dtypes.safetensors");
  EXPECT_TRUE(throws_error([&] { (void)f.values<float>("i32"); },
                           {"tensor \"i32\"", "I32 holds integers", "floating-point"}));
  EXPECT_TRUE(throws_error([&] { (void)f.values<std::int64_t>("bf16"); },
                           {"tensor \"bf16\"", "BF16 holds floating-point values"}));
}

TEST(SafetensorsRead, ShapesNamesAndMetadata) {
  const SafetensorsFile f = golden_file("safetensors/dtypes.safetensors");
  EXPECT_EQ(f.names(), (std::vector<std::string>{"bf16", "bool", "empty", "f16", "f32", "f64",
                                                 "i16", "i32", "i64", "i8", "scalar", "u8"}));
  EXPECT_TRUE(f.contains("f32"));
  EXPECT_FALSE(f.contains("f33"));
  EXPECT_EQ(f.info("f16").dtype, DType::F16);
  EXPECT_EQ(f.info("f16").shape, (std::vector<std::int64_t>{8, 8}));
  EXPECT_EQ(f.info("f64").shape, (std::vector<std::int64_t>{2, 3, 4}));
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().size(), 2u);

  EXPECT_TRUE(f.info("scalar").shape.empty());
  EXPECT_EQ(f.values<float>("scalar"), std::vector<float>{2.5f});
  EXPECT_EQ(f.matrix<float>("empty", 0, 3).size(), 0);

  // row-major: element (b, i, j) is flat index (b * 3 + i) * 4 + j
  const relpos::Tensor3<double> t = f.tensor3<double>("f64");
  const std::vector<double> flat = f.values<double>("f64");
  ASSERT_EQ(t.dimension(0), 2);
  ASSERT_EQ(t.dimension(1), 3);
  ASSERT_EQ(t.dimension(2), 4);
  EXPECT_EQ(std::bit_cast<std::uint64_t>(t(1, 2, 3)), std::bit_cast<std::uint64_t>(flat[23]));
  EXPECT_EQ(std::bit_cast<std::uint64_t>(t(1, 0, 2)), std::bit_cast<std::uint64_t>(flat[14]));
  const relpos::Matrix<float> m = f.matrix<float>("f32", 3, 5);
  EXPECT_EQ(bits(m(2, 1)), bits(f.values<float>("f32")[11]));
}

TEST(SafetensorsRead, ShapeErrorsNameFileTensorExpectedAndActual) {
  const SafetensorsFile f = golden_file("safetensors/dtypes.safetensors");
  EXPECT_TRUE(throws_error([&] { (void)f.matrix<float>("f32", 5, 3); },
                           {"dtypes.safetensors: tensor \"f32\": expected [5, 3], got [3, 5]"}));
  EXPECT_TRUE(throws_error([&] { (void)f.vector<float>("f32", 15); },
                           {"tensor \"f32\": expected [15], got [3, 5]"}));
  EXPECT_TRUE(throws_error([&] { (void)f.vector<float>("f32"); },
                           {"tensor \"f32\": expected a 1-D tensor, got [3, 5]"}));
  EXPECT_TRUE(throws_error([&] { (void)f.tensor3<float>("f32"); }, {"expected a 3-D tensor"}));
  EXPECT_TRUE(throws_error(
      [&] {
        (void)f.values<float>("f32", {5, 3});
      },
      {"expected [5, 3], got [3, 5]"}));
  EXPECT_EQ(f.values<float>("f32", {3, 5}).size(), 15u);
  EXPECT_EQ(f.values<float>("f32", {}).size(), 15u);  // empty: any shape
  const std::vector<std::int64_t> want = {3, 4};
  EXPECT_TRUE(
      throws_error([&] { (void)f.values<float>("f32", want); }, {"expected [3, 4], got [3, 5]"}));
  EXPECT_TRUE(throws_error(
      [&] { (void)f.info("layers.0.missing"); },
      {"dtypes.safetensors: tensor \"layers.0.missing\": not in the file", "12 tensors"}));
}

TEST(SafetensorsRead, OpenErrorsNameThePath) {
  EXPECT_TRUE(throws_error([] { (void)SafetensorsFile::open(data_path("no/such.safetensors")); },
                           {"no/such.safetensors", "cannot open"}));
  EXPECT_TRUE(throws_error([] { (void)SafetensorsFile::open(data_path("safetensors")); },
                           {"safetensors: not a regular file"}));
}

// ---- zero-copy ---------------------------------------------------------------------------

TEST(SafetensorsMap, TryMapPointsIntoTheMappedFile) {
  SafetensorsFile f = golden_file("safetensors/layout.safetensors");
  const auto m = f.try_map<double>("encoder.weight");
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(static_cast<const void*>(m->data()),
            static_cast<const void*>(f.raw("encoder.weight").data()));
  EXPECT_EQ(m->rows(), 2);
  EXPECT_EQ(m->cols(), 3);
  EXPECT_TRUE(relpos::test::all_close(*m, f.matrix<double>("encoder.weight", 2, 3), 0));
  // a second view is the same memory, not a copy
  EXPECT_EQ(f.try_map<double>("encoder.weight")->data(), m->data());

  const auto bias = f.try_map<float>("encoder.bias");  // 1-D [n] maps as (n, 1)
  ASSERT_TRUE(bias.has_value());
  EXPECT_EQ(bias->rows(), 3);
  EXPECT_EQ(bias->cols(), 1);
  EXPECT_FALSE(f.try_map<float>("encoder.weight").has_value());  // F64 is not float
  EXPECT_FALSE(f.try_map<std::int64_t>("token_ids").has_value());

  // moving the file keeps the mapping where it is
  const SafetensorsFile moved = std::move(f);
  EXPECT_EQ(moved.try_map<double>("encoder.weight")->data(), m->data());
  EXPECT_EQ((*m)(1, 2), 5.0 / 8.0);
}

TEST(SafetensorsMap, MisalignedDataIsCopiedNotMapped) {
  const SafetensorsFile f = golden_file("safetensors/misaligned.safetensors");
  EXPECT_EQ(f.info("b_floats").begin, 1u);
  EXPECT_FALSE(f.try_map<float>("b_floats").has_value());
  EXPECT_EQ(f.values<float>("b_floats"), (std::vector<float>{1.5f, -2.0f}));
  EXPECT_TRUE(f.try_map<std::uint8_t>("a_byte").has_value());
}

// ---- the writer --------------------------------------------------------------------------

TEST(SafetensorsWrite, ReproducesThePythonWriterByteForByte) {
  const std::string path = data_path("safetensors/layout.safetensors");
  const std::vector<unsigned char> want = read_bytes(path);
  const SafetensorsFile f = SafetensorsFile::open(path);

  // from raw bytes
  SafetensorsWriter raw;
  for (const std::string& name : f.names()) {
    const relpos::io::TensorInfo& ti = f.info(name);
    raw.add(name, ti.dtype, ti.shape, f.raw(name));
  }
  for (const auto& [k, v] : f.metadata()) raw.set_metadata(k, v);
  EXPECT_EQ(raw.bytes(), want);

  // from typed values, added in another order
  SafetensorsWriter typed;
  typed.set_metadata("note", f.metadata().at("note"));
  typed.set_metadata("format", "pt");
  typed.add("positions", f.values<std::int64_t>("positions"), {3});
  typed.add("mask", f.values<std::uint8_t>("mask"), {4});
  typed.add("half", DType::F16, {2}, f.raw("half"));
  const Eigen::Array<bool, Eigen::Dynamic, 1> flags =
      f.vector<std::uint8_t>("flags").cast<bool>().array();
  typed.add("flags", flags);
  typed.add("token_ids", f.matrix<std::int32_t>("token_ids", 2, 2));
  typed.add("encoder.bias", f.vector<float>("encoder.bias", 3));
  typed.add("encoder.weight", f.matrix<double>("encoder.weight", 2, 3));
  EXPECT_EQ(typed.bytes(), want);
}

TEST(SafetensorsWrite, HeaderIsPaddedSoDataIsAligned) {
  for (std::size_t len = 1; len <= 24; ++len) {
    SafetensorsWriter w;
    w.add(std::string(len, 'x'), std::vector<double>{1.0, 2.0}, {2});
    w.add("b", std::vector<std::int16_t>{1, 2, 3}, {3});
    w.add("c", std::vector<float>{4.0f}, {1});
    const std::vector<unsigned char> bytes = w.bytes();
    std::uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    SCOPED_TRACE("name length " + std::to_string(len));
    EXPECT_EQ((8 + n) % 8, 0u);
    // only spaces after the JSON object, fewer than 8 of them
    const std::string text(bytes.begin() + 8, bytes.begin() + 8 + static_cast<long>(n));
    const std::size_t last = text.find_last_not_of(' ');
    EXPECT_EQ(text[last], '}');
    EXPECT_LT(text.size() - last - 1, 8u);
    const SafetensorsFile f = SafetensorsFile::from_bytes(bytes);
    for (const std::string& name : f.names()) {
      const auto& ti = f.info(name);
      EXPECT_EQ(ti.begin % relpos::io::dtype_size(ti.dtype), 0u) << name;
    }
    EXPECT_TRUE(f.try_map<double>(std::string(len, 'x')).has_value());
  }
}

TEST(SafetensorsWrite, RoundTripEveryDtype) {
  std::mt19937 rng(7);
  SafetensorsWriter w;
  std::vector<std::vector<unsigned char>> payloads;
  int k = 0;
  for (DType t : relpos::io::kAllDTypes) {
    std::vector<unsigned char> bytes(6 * relpos::io::dtype_size(t));
    for (auto& b : bytes) b = static_cast<unsigned char>(rng() & (t == DType::BOOL ? 1 : 255));
    w.add(tensor_name(k++), t, {2, 3}, bytes);
    payloads.push_back(bytes);
  }
  relpos::Matrix<float> m(2, 2);
  m << 1.0f, -0.0f, std::numeric_limits<float>::infinity(), 3.25f;
  w.add("matrix", m);
  relpos::Tensor3<double> t3(2, 1, 3);
  for (Index i = 0; i < t3.size(); ++i) t3.data()[i] = 0.5 * static_cast<double>(i) - 1;
  w.add("batch", t3);
  w.add("empty", std::vector<float>{}, {0, 4});
  w.set_metadata("key", "värde");  // UTF-8 kept as is

  const std::string path = ::testing::TempDir() + "relpos_round_trip.safetensors";
  w.write(path);
  const SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(read_bytes(path), w.bytes());
  k = 0;
  for (DType t : relpos::io::kAllDTypes) {
    const std::string name = tensor_name(k);
    SCOPED_TRACE(name);
    EXPECT_EQ(f.info(name).dtype, t);
    EXPECT_EQ(f.info(name).shape, (std::vector<std::int64_t>{2, 3}));
    const auto raw = f.raw(name);
    EXPECT_EQ(std::vector<unsigned char>(raw.begin(), raw.end()), payloads[k++]);
  }
  EXPECT_TRUE(relpos::test::all_close(f.matrix<float>("matrix", 2, 2), m, 0));
  EXPECT_TRUE(std::signbit(f.matrix<float>("matrix")(0, 1)));
  EXPECT_TRUE(relpos::test::all_close(f.tensor3<double>("batch"), t3, 0));
  EXPECT_EQ(f.info("empty").shape, (std::vector<std::int64_t>{0, 4}));
  EXPECT_EQ(f.metadata().at("key"), "värde");
  std::filesystem::remove(path);
}

TEST(SafetensorsWrite, FailedWriteLeavesNoFile) {
  SafetensorsWriter w;
  w.add("a", std::vector<float>{1.0f}, {1});
  const std::filesystem::path dir = ::testing::TempDir() + "relpos_write_test";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string missing = (dir / "no_dir" / "x.safetensors").string();
  EXPECT_TRUE(throws_error([&] { w.write(missing); }, {missing}));

  // renaming onto a directory fails after the data is written: the temporary goes away
  std::filesystem::create_directories(dir / "occupied" / "inner");
  EXPECT_TRUE(throws_error([&] { w.write((dir / "occupied").string()); }, {"rename"}));

  const std::string good = (dir / "ok.safetensors").string();
  w.write(good);
  w.write(good);  // replacing an existing file
  std::vector<std::string> left;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    left.push_back(e.path().filename().string());
  }
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"occupied", "ok.safetensors"}));
  EXPECT_EQ(SafetensorsFile::open(good).values<float>("a"), std::vector<float>{1.0f});
  std::filesystem::remove_all(dir);
}

TEST(SafetensorsWrite, BadAddsAreErrors) {
  SafetensorsWriter w;
  w.add("a", std::vector<float>{1.0f}, {1});
  EXPECT_TRUE(
      throws_error([&] { w.add("a", std::vector<float>{1.0f}, {1}); }, {"\"a\"", "added twice"}));
  EXPECT_TRUE(throws_error(
      [&] {
        w.add("b", std::vector<float>{1.0f, 2.0f}, {3});
      },
      {"\"b\"", "8 bytes given, but F32 [3] needs 3 elements of 4"}));
  EXPECT_TRUE(throws_error([&] { w.add("c", std::vector<float>{}, {-1}); }, {"invalid shape"}));
  EXPECT_TRUE(
      throws_error([&] { w.add("__metadata__", std::vector<float>{}, {0}); }, {"reserved"}));
}

// ---- malformed files: one test per kind ------------------------------------------------

const std::string kF32x4 = R"("dtype":"F32","shape":[4])";

TEST(SafetensorsMalformed, ShorterThanEightBytes) {
  for (std::size_t n = 0; n < 8; ++n) {
    const std::vector<unsigned char> bytes(n, 0);
    EXPECT_TRUE(throws_error([&] { (void)SafetensorsFile::from_bytes(bytes, "bad.safetensors"); },
                             {"bad.safetensors: file has " + std::to_string(n) + " bytes"}));
  }
}

TEST(SafetensorsMalformed, HeaderLengthBeyondTheFile) {
  for (const std::uint64_t n :
       {std::uint64_t{100}, std::uint64_t{1} << 63, ~std::uint64_t{0}, ~std::uint64_t{0} - 7}) {
    std::vector<unsigned char> bytes = file_with("{}  ", 4);
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<unsigned char>(n >> (8 * i));
    EXPECT_TRUE(throws_error(
        [&] { (void)SafetensorsFile::from_bytes(bytes, "bad.safetensors"); },
        {"bad.safetensors: header length " + std::to_string(n), "exceeds the 8 bytes"}));
  }
}

TEST(SafetensorsMalformed, HeaderNotJson) {
  EXPECT_TRUE(bad_file(R"({"a":)", 0, {"bad.safetensors: header is not valid JSON"}));
  EXPECT_TRUE(bad_file(std::string("{}\0\0", 4), 0, {"not valid JSON: NUL byte at offset 2"}));
  EXPECT_TRUE(bad_file(std::string("{}\0{\"a\":3}", 10), 0, {"NUL byte"}));
  EXPECT_TRUE(bad_file("{\"\xff\":1}", 0, {"not valid JSON"}));  // not UTF-8
  EXPECT_TRUE(bad_file("", 0, {"not valid JSON"}));
}

TEST(SafetensorsMalformed, HeaderNotAnObject) {
  EXPECT_TRUE(bad_file("[]", 0, {"bad.safetensors: header is not a JSON object"}));
  EXPECT_TRUE(bad_file("3", 0, {"header is not a JSON object"}));
}

TEST(SafetensorsMalformed, DeepNesting) {
  const std::string deep =
      "{\"__metadata__\":" + std::string(5000, '[') + std::string(5000, ']') + "}";
  EXPECT_TRUE(bad_file(deep, 0, {"nested deeper"}));
}

TEST(SafetensorsMalformed, EntryNotAnObject) {
  EXPECT_TRUE(bad_file(R"({"a":3})", 0, {"bad.safetensors: tensor \"a\": entry is not an object"}));
}

TEST(SafetensorsMalformed, EntryMissingAField) {
  EXPECT_TRUE(bad_file(R"({"a":{"shape":[4],"data_offsets":[0,16]}})", 16,
                       {"tensor \"a\": missing \"dtype\""}));
  EXPECT_TRUE(bad_file(R"({"a":{"dtype":"F32","data_offsets":[0,16]}})", 16,
                       {"tensor \"a\": missing \"shape\""}));
  EXPECT_TRUE(bad_file("{\"a\":{" + kF32x4 + "}}", 16, {"tensor \"a\": missing \"data_offsets\""}));
}

TEST(SafetensorsMalformed, EntryFieldOfWrongType) {
  EXPECT_TRUE(bad_file(R"({"a":{"dtype":7,"shape":[4],"data_offsets":[0,16]}})", 16,
                       {"tensor \"a\": \"dtype\" is not a string"}));
  EXPECT_TRUE(bad_file(R"({"a":{"dtype":"F32","shape":4,"data_offsets":[0,16]}})", 16,
                       {"\"shape\" is not an array"}));
  EXPECT_TRUE(bad_file(R"({"a":{"dtype":"F32","shape":[4.0],"data_offsets":[0,16]}})", 16,
                       {"\"shape\" holds a non-integer 4.0"}));
  EXPECT_TRUE(bad_file(R"({"a":{"dtype":"F32","shape":[true],"data_offsets":[0,16]}})", 16,
                       {"\"shape\" holds a non-integer true"}));
  for (const char* offsets : {"[0]", "[0,16,16]", "\"0,16\"", "{}"}) {
    EXPECT_TRUE(bad_file("{\"a\":{" + kF32x4 + ",\"data_offsets\":" + offsets + "}}", 16,
                         {"tensor \"a\": \"data_offsets\" is not an array of two integers"}));
  }
  EXPECT_TRUE(bad_file("{\"a\":{" + kF32x4 + ",\"data_offsets\":[0,16.0]}}", 16,
                       {"\"data_offsets\" holds a non-integer 16.0"}));
  EXPECT_TRUE(bad_file("{\"a\":{" + kF32x4 + ",\"data_offsets\":[-4,12]}}", 16,
                       {"negative data offset -4"}));
}

TEST(SafetensorsMalformed, EntryWithUnknownKey) {
  EXPECT_TRUE(bad_file("{\"a\":{" + kF32x4 + ",\"data_offsets\":[0,16],\"dtpye\":1}}", 16,
                       {"tensor \"a\": unknown key \"dtpye\""}));
}

TEST(SafetensorsMalformed, UnknownDtype) {
  for (const char* dtype : {"U16", "f32", "F8_E4M3", ""}) {
    EXPECT_TRUE(bad_file(
        std::string(R"({"a":{"dtype":")") + dtype + R"(","shape":[1],"data_offsets":[0,2]}})", 2,
        {"tensor \"a\": unknown dtype \"" + std::string(dtype) + "\""}));
  }
}

TEST(SafetensorsMalformed, NegativeDimension) {
  EXPECT_TRUE(bad_file(R"({"a":{"dtype":"F32","shape":[-1,2],"data_offsets":[0,0]}})", 0,
                       {"tensor \"a\": negative dimension -1"}));
}

TEST(SafetensorsMalformed, ElementCountOrByteSizeOverflows) {
  EXPECT_TRUE(bad_file(
      R"({"a":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0,
      {"tensor \"a\": shape [4294967296, 4294967296] has more elements than fit in 64 bits"}));
  EXPECT_TRUE(
      bad_file(R"({"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,0]}})", 0,
               {"the byte size of F64 [4611686018427387904] overflows 64 bits"}));
  EXPECT_TRUE(
      bad_file(R"({"a":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,0]}})", 0,
               {"dimension 18446744073709551615 does not fit in 64 bits"}));
  // a zero dimension makes the count 0 whatever the others are
  const auto ok =
      file_with(R"({"a":{"dtype":"F64","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}})");
  EXPECT_EQ(SafetensorsFile::from_bytes(ok).info("a").numel(), 0);
}

TEST(SafetensorsMalformed, EmptyTensorWithHugeDims) {
  // valid (0 elements), but the product of the leading dims overflows a 64-bit Index
  std::string header = R"({"a":{"dtype":"F32","shape":[1099511627776,1099511627776,0],)"
                       R"("data_offsets":[0,0]}})";
  header.append((8 - header.size() % 8) % 8, ' ');  // data 8-byte aligned, so try_map may map
  const auto f = SafetensorsFile::from_bytes(file_with(header), "bad.safetensors");
  const auto view = f.try_map<float>("a");
  ASSERT_TRUE(view.has_value());
  EXPECT_EQ(view->size(), 0);
  EXPECT_TRUE(throws_error([&] { (void)f.tensor3<float>("a"); },
                           {"tensor \"a\"", "[1099511627776, 1099511627776, 0]", "overflows"}));
  EXPECT_TRUE(f.values<float>("a").empty());
}

TEST(SafetensorsMalformed, ByteSizeNotMatchingShape) {
  EXPECT_TRUE(bad_file(R"({"a.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})", 12,
                       {"bad.safetensors: tensor \"a.weight\": data_offsets [0, 12] hold 12 "
                        "bytes, but F32 [2, 2] needs 16"}));
}

TEST(SafetensorsMalformed, ReversedRange) {
  EXPECT_TRUE(bad_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[8,4]}})", 8,
                       {"tensor \"a\": data_offsets [8, 4] are reversed"}));
}

TEST(SafetensorsMalformed, RangeOutsideTheData) {
  EXPECT_TRUE(
      bad_file("{\"a\":{" + kF32x4 + ",\"data_offsets\":[0,16]}}", 8,
               {"tensor \"a\": data_offsets [0, 16] lie outside the data section of 8 bytes"}));
  EXPECT_TRUE(bad_file(
      R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[18446744073709551615,18446744073709551615]}})",
      0, {"lie outside the data section of 0 bytes"}));
}

TEST(SafetensorsMalformed, HoleInTheData) {
  EXPECT_TRUE(bad_file(
      R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
      R"("b":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}})",
      12, {"tensor \"b\": bytes [4, 8) of the data section before it belong to no tensor"}));
  EXPECT_TRUE(bad_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})", 8,
                       {"tensor \"a\": bytes [0, 4)", "hole"}));
}

TEST(SafetensorsMalformed, OverlappingRanges) {
  EXPECT_TRUE(bad_file(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},)"
                       R"("b":{"dtype":"U8","shape":[8],"data_offsets":[4,12]}})",
                       12, {"tensor \"b\": data_offsets [4, 12] overlap tensor \"a\" [0, 8]"}));
  // a zero-size tensor inside another one overlaps it too
  EXPECT_TRUE(bad_file(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},)"
                       R"("b":{"dtype":"U8","shape":[0],"data_offsets":[4,4]}})",
                       8, {"tensor \"b\"", "overlap tensor \"a\""}));
}

TEST(SafetensorsMalformed, TrailingBytes) {
  EXPECT_TRUE(bad_file(
      R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", 8,
      {"bad.safetensors: trailing bytes: [4, 8) of the data section belong to no tensor"}));
  EXPECT_TRUE(bad_file("{}", 1, {"trailing bytes: [0, 1)"}));
}

TEST(SafetensorsMalformed, DuplicateNames) {
  EXPECT_TRUE(bad_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                       R"("a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})",
                       8, {"bad.safetensors: tensor \"a\": appears twice in the header"}));
  EXPECT_TRUE(bad_file(R"({"a":{"dtype":"U8","dtype":"I8","shape":[4],"data_offsets":[0,4]}})", 4,
                       {"tensor \"a\": duplicate key \"dtype\""}));
  EXPECT_TRUE(bad_file(R"({"__metadata__":{"k":"1","k":"2"}})", 0,
                       {"bad.safetensors: __metadata__: duplicate key \"k\""}));
}

TEST(SafetensorsMalformed, MetadataNotStringToString) {
  EXPECT_TRUE(bad_file(R"({"__metadata__":"x"})", 0,
                       {"bad.safetensors: __metadata__ is not an object of strings"}));
  EXPECT_TRUE(
      bad_file(R"({"__metadata__":{"epochs":3}})", 0, {"__metadata__ \"epochs\" is not a string"}));
  EXPECT_TRUE(
      SafetensorsFile::from_bytes(file_with(R"({"__metadata__":null})")).metadata().empty());
}

TEST(SafetensorsMalformed, BoolBytesOtherThanZeroOrOne) {
  std::vector<unsigned char> bytes =
      file_with(R"({"m":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}})", 3);
  bytes[bytes.size() - 2] = 2;
  const SafetensorsFile f = SafetensorsFile::from_bytes(bytes, "bad.safetensors");
  EXPECT_TRUE(throws_error([&] { (void)f.values<bool>("m"); },
                           {"tensor \"m\": BOOL element 1 holds byte 2, not 0 or 1"}));
}

// Every truncation and many one-byte corruptions of a valid file either load or throw
// relpos::Error: never another exception, a crash or (under ASan) an out-of-bounds read.
TEST(SafetensorsMalformed, CorruptionsThrowOnlyRelposErrors) {
  const std::vector<unsigned char> good = read_bytes(data_path("safetensors/layout.safetensors"));
  auto load_everything = [](const std::vector<unsigned char>& bytes) -> int {
    try {
      const SafetensorsFile f = SafetensorsFile::from_bytes(bytes, "mutant");
      for (const std::string& name : f.names()) {
        try {
          (void)f.values<double>(name);
        } catch (const Error&) {
          (void)f.values<std::int64_t>(name);
        }
      }
      return 0;
    } catch (const Error&) {
      return 1;
    }
  };
  int rejected = 0, total = 0;
  for (std::size_t n = 0; n < good.size(); ++n) {
    rejected += load_everything(std::vector<unsigned char>(good.begin(), good.begin() + n));
    ++total;
  }
  EXPECT_EQ(rejected, total);  // every strict prefix breaks the tiling or the header
  std::mt19937 rng(1234);
  for (int i = 0; i < 3000; ++i) {
    std::vector<unsigned char> bytes = good;
    bytes[rng() % bytes.size()] = static_cast<unsigned char>(rng());
    EXPECT_NO_THROW(load_everything(bytes));
  }
}

}  // namespace
