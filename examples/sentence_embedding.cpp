// SPDX-License-Identifier: MIT
// relpos-embed: sentence embeddings the way sentence-transformers makes them from an encoder
// such as all-mpnet-base-v2 (Reimers & Gurevych 2019): run a Hugging Face checkpoint folder
// (or a relpos folder) through Model::load, then mean-pool the last hidden state over each
// sequence's unpadded tokens, and with --normalize divide by the L2 norm (sentence-transformers'
// Normalize module). One embedding is printed per sequence. Bad input: one line on stderr,
// exit status 1 (2 for a command-line mistake).
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <relpos/io/safetensors.hpp>
#include <relpos/model.hpp>
#include <relpos/model_io.hpp>

#include "cli.hpp"

namespace {

constexpr const char* kUsage =
    R"(usage: relpos-embed --model DIR (--ids IDS | --input FILE) [--normalize]

Prints one sentence embedding per sequence: the mean of the model's last hidden state over the
sequence's unpadded tokens (MPNet / sentence-transformers mean pooling), d_model numbers on one
line per sequence, in the order given.

  --model DIR     a Hugging Face checkpoint folder (config.json with model_type, and
                  model.safetensors or model.safetensors.index.json; README "Hugging Face
                  checkpoints") or a relpos model folder, with a vocab_size
  --ids IDS       token ids, already tokenized (this example has no tokenizer): the ids of one
                  sequence separated by spaces, sequences separated by commas, e.g.
                  --ids "0 7 9 2, 0 5 2". Shorter sequences are padded to the longest with id 0
                  and a padding mask, so the padded positions change nothing.
  --input FILE    a safetensors file with `input_ids` (I64/I32 [batch, len]) and optionally
                  `padding_mask` (U8/BOOL [batch, len], non-zero = padded), as relpos-encode
                  reads (docs/model-format.md, spec §5)
  --normalize     divide each embedding by its L2 norm (sentence-transformers' Normalize
                  module, which all-mpnet-base-v2 ends with); without it, the plain mean
  --help          this text
Each option is given at most once, as --flag VALUE or --flag=VALUE.
)";

using relpos_cli::UsageError;

struct Options {
  std::string model;
  std::optional<std::string> ids, input;
  bool normalize = false;
  bool help = false;
};

Options parse_args(int argc, char** argv) {
  const relpos_cli::Args args = relpos_cli::parse(
      argc, argv, {{"--model", true}, {"--ids", true}, {"--input", true}, {"--normalize", false}});
  Options o;
  o.help = args.help;
  if (o.help) return o;
  const auto model = args.get("--model");
  if (!model || model->empty()) throw UsageError{"give --model DIR"};
  o.model = *model;
  o.ids = args.get("--ids");
  o.input = args.get("--input");
  o.normalize = args.has("--normalize");
  if (o.ids && o.input) throw UsageError{"give --ids or --input, not both"};
  if (!o.ids && !o.input) throw UsageError{"nothing to embed: give --ids IDS or --input FILE"};
  return o;
}

// "0 7 9 2, 0 5 2" -> the sequences' ids, each id checked against the vocabulary.
std::vector<std::vector<std::int64_t>> parse_ids(std::string_view text, std::int64_t vocab) {
  std::vector<std::vector<std::int64_t>> seqs(1);
  std::size_t pos = 0;
  while (pos < text.size()) {
    const char c = text[pos];
    if (c == ' ' || c == '\t') {
      ++pos;
    } else if (c == ',') {
      if (seqs.back().empty())
        throw relpos::Error("--ids: sequence " + std::to_string(seqs.size() - 1) + " is empty");
      seqs.emplace_back();
      ++pos;
    } else {
      const std::size_t end = std::min(text.find_first_of(" \t,", pos), text.size());
      const std::string_view word = text.substr(pos, end - pos);
      std::int64_t id = 0;
      const auto [last, ec] = std::from_chars(word.data(), word.data() + word.size(), id);
      if (ec != std::errc() || last != word.data() + word.size())
        throw relpos::Error("--ids: \"" + std::string(word) + "\" is not an integer");
      if (id < 0 || id >= vocab) {
        throw relpos::Error("--ids: id " + std::to_string(id) + " in sequence " +
                            std::to_string(seqs.size() - 1) + " is out of range [0, " +
                            std::to_string(vocab) + ") (the model's vocab_size)");
      }
      seqs.back().push_back(id);
      pos = end;
    }
  }
  if (seqs.back().empty())
    throw relpos::Error("--ids: sequence " + std::to_string(seqs.size() - 1) + " is empty");
  return seqs;
}

// The sequences as one padded batch: ids [batch, len] (padding id 0), mask true = padded.
relpos::ModelInputs<float> batch_of(const std::vector<std::vector<std::int64_t>>& seqs) {
  std::size_t len = 0;
  for (const auto& s : seqs) len = std::max(len, s.size());
  const auto batch = static_cast<relpos::Index>(seqs.size());
  relpos::ModelInputs<float> in;
  in.input_ids = relpos::TokenIds::Zero(batch, relpos::Index(len));
  in.padding_mask = relpos::PaddingMask::Constant(batch, relpos::Index(len), true);
  for (relpos::Index b = 0; b < batch; ++b) {
    const auto& s = seqs[std::size_t(b)];
    for (std::size_t i = 0; i < s.size(); ++i) {
      (*in.input_ids)(b, relpos::Index(i)) = s[i];
      (*in.padding_mask)(b, relpos::Index(i)) = false;
    }
  }
  return in;
}

// Mean pooling: the sum of hidden[b, i, :] over the unpadded i, divided by their count, in
// double. hidden: [batch, len, d_model]; the result: (batch, d_model).
Eigen::MatrixXd mean_pool(const relpos::Tensor3<float>& hidden, const relpos::PaddingMask* mask,
                          bool normalize) {
  const relpos::Index batch = hidden.dimension(0), len = hidden.dimension(1);
  Eigen::MatrixXd pooled = Eigen::MatrixXd::Zero(batch, hidden.dimension(2));
  for (relpos::Index b = 0; b < batch; ++b) {
    const auto rows = relpos::item(hidden, b);  // (len, d_model)
    relpos::Index count = 0;
    for (relpos::Index i = 0; i < len; ++i) {
      if (mask != nullptr && (*mask)(b, i)) continue;
      pooled.row(b) += rows.row(i).cast<double>();
      ++count;
    }
    if (count == 0)
      throw relpos::Error("padding_mask: sequence " + std::to_string(b) + " is all padding");
    pooled.row(b) /= double(count);
    // sentence-transformers' Normalize: x / max(||x||, 1e-12) (torch's F.normalize)
    if (normalize) pooled.row(b) /= std::max(pooled.row(b).norm(), 1e-12);
  }
  return pooled;
}

int run(const Options& o) {
  const relpos::Model<float> model = relpos::Model<float>::load(o.model);
  const relpos::io::ModelConfig& config = model.config();
  if (!config.vocab_size) throw relpos::Error(o.model + ": the model has no vocab_size (no ids)");
  const relpos::ModelInputs<float> in =
      o.ids ? batch_of(parse_ids(*o.ids, *config.vocab_size))
            : relpos::read_inputs<float>(relpos::io::SafetensorsFile::open(*o.input), config);
  if (in.input) throw relpos::Error(*o.input + ": holds `input`; give `input_ids` to embed");
  const relpos::ModelOutput<float> out = relpos::run(model, in);
  const Eigen::MatrixXd pooled =
      mean_pool(out.output, in.padding_mask ? &*in.padding_mask : nullptr, o.normalize);
  // 9 significant digits: more than a float holds, so the text loses nothing of the output
  for (Eigen::Index b = 0; b < pooled.rows(); ++b) {
    for (Eigen::Index c = 0; c < pooled.cols(); ++c)
      std::printf(c == 0 ? "%.9g" : " %.9g", pooled(b, c));
    std::printf("\n");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return relpos_cli::run_main<Options>("relpos-embed", kUsage, argc, argv, parse_args, run);
}
