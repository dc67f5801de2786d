// SPDX-License-Identifier: MIT
// relpos-embed (examples/sentence_embedding.cpp) end to end on the tiny MPNet checkpoint of
// tests/data/hf/mpnet_base: its printed embeddings against mean pooling computed here from the
// folder's io.safetensors, whose `output` is the float64 last hidden state of a forward written
// after transformers' modeling_mpnet.py (tools/golden_hf.py); and every bad input ends with one
// line on stderr and a non-zero status.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <relpos/io/safetensors.hpp>

#include "support/golden.hpp"

#ifndef RELPOS_EMBED_EXE
// examples/CMakeLists.txt defines it; without RELPOS_BUILD_EXAMPLES there is no binary to run
TEST(SentenceEmbedding, NeedsTheExamples) {
  GTEST_SKIP() << "relpos-embed is not built";
}
#else
namespace {

namespace fs = std::filesystem;
const fs::path kMpnet = fs::path(RELPOS_TEST_DATA_DIR) / "hf" / "mpnet_base";

struct EmbedRun {
  int status = -1;
  std::string out, err;
};

// Runs relpos-embed with `args` (each quoted for sh), capturing stdout and stderr.
EmbedRun run_embed(const std::vector<std::string>& args) {
  const fs::path err =
      fs::temp_directory_path() / ("relpos_embed_test_" + std::to_string(::getpid()) + ".stderr");
  std::string cmd = std::string("'") + RELPOS_EMBED_EXE + "'";
  for (const std::string& a : args) cmd += " '" + a + "'";
  cmd += " 2> '" + err.string() + "'";
  EmbedRun r;
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (pipe == nullptr) return r;
  char buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) r.out.append(buf, n);
  const int status = ::pclose(pipe);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  r.err = relpos::test::read_text(err);
  fs::remove(err);
  return r;
}

// The printed embeddings: one line of numbers per sequence.
std::vector<std::vector<double> > embed_parse_rows(const std::string& text) {
  std::vector<std::vector<double> > rows;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    std::vector<double> row;
    double v = 0;
    while (words >> v) row.push_back(v);
    rows.push_back(row);
  }
  return rows;
}

// The reference: mean of io.safetensors' float64 `output` [batch, len, d] over the rows that
// `padding_mask` leaves unpadded, optionally divided by its L2 norm.
std::vector<std::vector<double> > embed_reference_pooling(bool normalize) {
  const auto io = relpos::io::SafetensorsFile::open((kMpnet / "io.safetensors").string());
  const std::vector<std::int64_t> shape = io.info("output").shape;
  const std::vector<double> hidden = io.values<double>("output");
  const std::vector<std::uint8_t> pad = io.values<std::uint8_t>("padding_mask");
  const auto batch = std::size_t(shape[0]), len = std::size_t(shape[1]), d = std::size_t(shape[2]);
  std::vector<std::vector<double> > pooled(batch, std::vector<double>(d, 0.0));
  for (std::size_t b = 0; b < batch; ++b) {
    double count = 0;
    for (std::size_t i = 0; i < len; ++i) {
      if (pad[b * len + i] != 0) continue;
      for (std::size_t c = 0; c < d; ++c) pooled[b][c] += hidden[(b * len + i) * d + c];
      count += 1;
    }
    double norm = 0;
    for (double& v : pooled[b]) {
      v /= count;
      norm += v * v;
    }
    if (normalize)
      for (double& v : pooled[b]) v /= std::sqrt(norm);
  }
  return pooled;
}

// The largest |got - want| over all elements; a shape mismatch fails the test.
double embed_worst_error(const std::vector<std::vector<double> >& got,
                         const std::vector<std::vector<double> >& want) {
  EXPECT_EQ(got.size(), want.size());
  double worst = 0;
  for (std::size_t b = 0; b < std::min(got.size(), want.size()); ++b) {
    EXPECT_EQ(got[b].size(), want[b].size()) << "sequence " << b;
    for (std::size_t c = 0; c < std::min(got[b].size(), want[b].size()); ++c)
      worst = std::max(worst, std::abs(got[b][c] - want[b][c]));
  }
  return worst;
}

// Float forward against HF's float64 one: 1e-5, as hf_checkpoint_test's relpos-encode check.
constexpr double kEmbedFloatTol = 1e-5;

TEST(SentenceEmbedding, MeanPoolingMatchesHuggingFaceHiddenState) {
  const EmbedRun r =
      run_embed({"--model", kMpnet.string(), "--input", (kMpnet / "io.safetensors").string()});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_LE(embed_worst_error(embed_parse_rows(r.out), embed_reference_pooling(false)),
            kEmbedFloatTol);
}

TEST(SentenceEmbedding, NormalizeGivesUnitVectorsOfTheMean) {
  const EmbedRun r = run_embed(
      {"--model", kMpnet.string(), "--input", (kMpnet / "io.safetensors").string(), "--normalize"});
  ASSERT_EQ(r.status, 0) << r.err;
  const auto rows = embed_parse_rows(r.out);
  EXPECT_LE(embed_worst_error(rows, embed_reference_pooling(true)), kEmbedFloatTol);
  for (const auto& row : rows) {
    double norm = 0;
    for (double v : row) norm += v * v;
    EXPECT_NEAR(std::sqrt(norm), 1.0, 1e-6);
  }
}

// The same sequences typed as --ids, without their padding: the example pads with id 0 (the
// file pads with MPNet's id 1) and masks it, so the unpadded tokens see the same model.
TEST(SentenceEmbedding, IdsOnTheCommandLineGiveTheSameEmbeddings) {
  const auto io = relpos::io::SafetensorsFile::open((kMpnet / "io.safetensors").string());
  const std::vector<std::int64_t> shape = io.info("input_ids").shape;
  const std::vector<std::int64_t> ids = io.values<std::int64_t>("input_ids");
  const std::vector<std::uint8_t> pad = io.values<std::uint8_t>("padding_mask");
  const auto batch = std::size_t(shape[0]), len = std::size_t(shape[1]);
  ASSERT_GT(std::count(pad.begin(), pad.end(), 1), 0) << "the file should hold padding";
  std::string text;
  for (std::size_t b = 0; b < batch; ++b) {
    if (b > 0) text += ", ";
    for (std::size_t i = 0; i < len; ++i)
      if (pad[b * len + i] == 0) text += std::to_string(ids[b * len + i]) + " ";
  }
  const EmbedRun r = run_embed({"--model", kMpnet.string(), "--ids", text});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_LE(embed_worst_error(embed_parse_rows(r.out), embed_reference_pooling(false)),
            kEmbedFloatTol);
}

TEST(SentenceEmbedding, BadInputGivesOneLineAndNonZeroStatus) {
  const std::string model = kMpnet.string();
  const std::string io = (kMpnet / "io.safetensors").string();
  struct Case {
    std::vector<std::string> args;
    int status;
    std::string says;
  };
  const std::vector<Case> cases = {
      {{"--model", "/nonexistent/relpos_embed_model", "--ids", "1 2"}, 1, "not a model folder"},
      {{"--model", model, "--ids", "1 x2"}, 1, "\"x2\" is not an integer"},
      {{"--model", model, "--ids", "1 45"}, 1, "id 45 in sequence 0 is out of range [0, 45)"},
      {{"--model", model, "--ids", "1 -3"}, 1, "id -3 in sequence 0 is out of range"},
      {{"--model", model, "--ids", "1 2,, 3"}, 1, "sequence 1 is empty"},
      {{"--model", model, "--ids", " "}, 1, "sequence 0 is empty"},
      {{"--model", model, "--input", (kMpnet / "model.safetensors").string()},
       1,
       "holds neither \"input\""},
      {{"--model", model}, 2, "nothing to embed"},
      {{"--ids", "1"}, 2, "give --model DIR"},
      {{"--model", model, "--ids", "1", "--input", io}, 2, "not both"},
      {{"--model", model, "--ids", "1", "--pool", "max"}, 2, "unknown option --pool"},
  };
  for (const Case& c : cases) {
    std::string shown;
    for (const std::string& a : c.args) shown += a + " ";
    SCOPED_TRACE(shown);
    const EmbedRun r = run_embed(c.args);
    EXPECT_EQ(r.status, c.status) << r.err;
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(r.err.rfind("relpos-embed: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(c.says), std::string::npos) << r.err;
  }
}

}  // namespace
#endif
