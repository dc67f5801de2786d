// SPDX-License-Identifier: MIT
// relpos-encode, the example encoder of spec §5: loads a model folder (or the embedded default
// model), runs it on a safetensors input file or on text, and writes the outputs or prints a
// summary. Every bad input ends with exit status 1 and one line on stderr naming the problem.
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <exception>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <relpos/io/safetensors.hpp>
#include <relpos/model.hpp>
#include <relpos/model_io.hpp>
#include <relpos/threads.hpp>

#include "cli.hpp"
#include "relpos_encode_embedded.hpp"

namespace {

constexpr const char* kUsage =
    R"(usage: relpos-encode [--model DIR] [--input FILE | --text TEXT] [--output FILE] [--threads N]

Runs a relpos Transformer encoder (config.json + model.safetensors, see docs/model-format.md).

  --model DIR     a model folder; without it, the embedded default model (a byte-level
                  rotary model trained to predict the byte 3 positions to the left)
  --input FILE    a safetensors file with `input` (F32 [batch, len, d_model]) or `input_ids`
                  (I64/I32 [batch, len]), and optionally `padding_mask` (U8/BOOL [batch, len],
                  non-zero = padded key), `position_ids` (I64/I32 [batch, len], >= 0) and,
                  for a model with type_vocab_size, `token_type_ids` (I64/I32 [batch, len])
  --text TEXT     the UTF-8 bytes of TEXT as token ids (needs vocab_size >= 256)
  --output FILE   write `output` (F32 [batch, len, d_model]) and, with an output head,
                  `logits` (F32 [batch, len, vocab_size]); without it, print a summary
  --threads N     worker threads (default: all cores)
  --help          this text
Each option is given at most once, as --flag VALUE or --flag=VALUE.
)";

struct Options {
  std::optional<std::string> model, input, text, output;
  std::optional<int> threads;
  bool help = false;
};

using relpos_cli::UsageError;

Options parse_args(int argc, char** argv) {
  const relpos_cli::Args args = relpos_cli::parse(argc, argv,
                                                  {{"--model", true},
                                                   {"--input", true},
                                                   {"--text", true},
                                                   {"--output", true},
                                                   {"--threads", true}});
  Options o;
  o.help = args.help;
  if (o.help) return o;
  o.model = args.get("--model");
  o.input = args.get("--input");
  o.text = args.get("--text");
  o.output = args.get("--output");
  if (const auto v = args.get("--threads")) {
    int n = 0;
    const auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
    if (ec != std::errc() || end != v->data() + v->size() || n < 1 || n > 1024)
      throw UsageError{"--threads: expected an integer from 1 to 1024, got \"" + *v + "\""};
    o.threads = n;
  }
  if (o.input && o.text) throw UsageError{"give --input or --text, not both"};
  if (!o.input && !o.text) throw UsageError{"nothing to encode: give --input FILE or --text TEXT"};
  if (o.output && o.output->empty()) throw UsageError{"--output: empty file name"};
  return o;
}

relpos::Model<float> load_model(const Options& o) {
  if (o.model) return relpos::Model<float>::load(*o.model);
  if (!relpos_encode::kHasDefaultModel) {
    throw relpos::Error(
        "this build has no embedded default model (examples/models/rotary was missing when it "
        "was built): give --model DIR");
  }
  return relpos::Model<float>::from_bytes(
      std::string_view(reinterpret_cast<const char*>(relpos_encode::kDefaultConfig),
                       relpos_encode::kDefaultConfigSize),
      std::vector<unsigned char>(
          relpos_encode::kDefaultWeights,
          relpos_encode::kDefaultWeights + relpos_encode::kDefaultWeightsSize),
      "<embedded default model>");
}

std::string shape(const relpos::Tensor3<float>& t) {
  return "[" + std::to_string(t.dimension(0)) + ", " + std::to_string(t.dimension(1)) + ", " +
         std::to_string(t.dimension(2)) + "]";
}

// A byte as a character a terminal shows safely: printable ASCII as is, anything else '?'.
char shown(std::int64_t byte) {
  return byte >= 32 && byte < 127 ? char(byte) : '?';
}

// in: the inputs as read, `input` already given up to the run; batch, len: its shape.
void print_summary(const Options& o, const relpos::Model<float>& model,
                   const relpos::ModelInputs<float>& in, relpos::Index batch, relpos::Index len,
                   const relpos::ModelOutput<float>& out, double ms) {
  const relpos::io::ModelConfig& c = model.config();
  std::cout << "model:  " << (o.model ? *o.model : std::string("embedded default")) << " ("
            << c.position_type() << ", d_model " << c.d_model << ", " << c.n_heads << " heads, "
            << c.n_layers << " layers" << (c.output_head ? ", output head" : "") << ")\n";
  std::cout << "input:  " << (in.input ? "input" : "input_ids") << " [" << batch << ", " << len
            << (in.input ? ", " + std::to_string(c.d_model) : std::string()) << "]"
            << (in.padding_mask ? " + padding_mask" : "")
            << (in.position_ids ? " + position_ids" : "")
            << (in.token_type_ids ? " + token_type_ids" : "") << "\n";
  std::cout << "output: " << shape(out.output);
  if (out.logits) std::cout << ", logits " << shape(*out.logits);
  std::cout << "\ntime:   " << ms << " ms (" << relpos::num_threads() << " threads)\n";
  if (o.text && out.logits) {
    // the argmax byte of each position, under the text it was computed from
    std::string predicted;
    const auto& logits = *out.logits;
    for (relpos::Index i = 0; i < logits.dimension(1); ++i) {
      relpos::Index best = 0;
      for (relpos::Index v = 1; v < logits.dimension(2); ++v)
        if (logits(0, i, v) > logits(0, i, best)) best = v;
      predicted += shown(best);
    }
    std::string text;
    for (unsigned char ch : *o.text) text += shown(ch);
    std::cout << "text:      " << text << "\npredicted: " << predicted << "\n";
  }
}

int run(const Options& o) {
  if (o.threads) relpos::set_num_threads(*o.threads);
  const relpos::Model<float> model = load_model(o);
  relpos::ModelInputs<float> in;
  if (o.input) {
    in = relpos::read_inputs<float>(relpos::io::SafetensorsFile::open(*o.input), model.config());
  } else {
    in.input_ids = relpos::text_ids(*o.text, model.config());
  }
  const relpos::Index batch = in.batch(), len = in.len();
  const auto start = std::chrono::steady_clock::now();
  // the input tensor is given up: the model runs in its memory, no second copy of a long input
  const relpos::ModelOutput<float> out = relpos::run(model, std::move(in));
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  if (o.output) {
    relpos::write_outputs(*o.output, out);
    std::cout << "wrote " << *o.output << ": output " << shape(out.output)
              << (out.logits ? ", logits " + shape(*out.logits) : std::string()) << "\n";
  } else {
    print_summary(o, model, in, batch, len, out, ms);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return relpos_cli::run_main<Options>("relpos-encode", kUsage, argc, argv, parse_args, run);
}
