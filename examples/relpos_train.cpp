// SPDX-License-Identifier: MIT
// relpos-train (spec §6): `grad` runs one forward and backward of a model folder on a training
// file and writes the loss and the gradient of every tensor; `fit` trains the model with AdamW
// and writes the trained folder. The library does the work (relpos/training.hpp); this file
// reads the command line and the files, and leaves nothing behind when it fails.
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <unistd.h>

#include <relpos/io/safetensors.hpp>
#include <relpos/io/safetensors_writer.hpp>
#include <relpos/threads.hpp>
#include <relpos/training.hpp>

#include "cli.hpp"

namespace {

constexpr std::string_view kUsage =
    R"(usage: relpos-train grad --model DIR --input FILE --output FILE [--threads N]
       relpos-train fit --model DIR --input FILE --output DIR --steps N --batch B --lr X
                        [--weight-decay W] [--clip-norm C] [--threads N]

Training of a model folder (config.json + model.safetensors, spec §1), as spec §6 defines it.
The input FILE is a safetensors file with the inputs of relpos-encode (`input` F32
[batch, len, d_model] or `input_ids` I64/I32 [batch, len], optional `padding_mask`,
`position_ids`, `token_type_ids`) and exactly one of:
  targets  I64/I32 [batch, len]: cross-entropy of the logits (needs output_head), averaged
           over the positions whose target is not -100
  target   F32 [batch, len, d_model]: mean squared error of the output, over every element

grad  one forward and backward; writes FILE with `loss` (F32 [1]), `grad.NAME` (F32, NAME's
      shape) for every tensor of the model file, and `grad.input` when the input is `input`.
fit   N steps of AdamW (torch.optim.AdamW: betas 0.9, 0.999, eps 1e-8, decoupled weight decay
      W, default 0.01), constant learning rate X; step t uses rows (t*B + i) mod rows, i < B.
      --clip-norm C scales the gradients by min(1, C / (norm + 1e-6)) first. Writes the trained
      folder DIR (config.json as read, model.safetensors F32) and prints each step's loss.
--threads N  threads over batch items (default: all cores); results do not depend on it.
Each option is given at most once, as --flag VALUE or --flag=VALUE.
)";

struct Options {
  bool help = false;
  std::string command;  // "grad" or "fit"
  std::string model, input, output;
  std::optional<int> threads;
  long long steps = 0, batch = 0;
  double lr = 0, weight_decay = 0.01;
  std::optional<double> clip_norm;
};

long long parse_int(std::string_view flag, const std::string& s) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || errno != 0)
    throw relpos_cli::UsageError{std::string(flag) + ": expected an integer, got \"" + s + "\""};
  return v;
}

double parse_double(std::string_view flag, const std::string& s) {
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || errno != 0 || !std::isfinite(v))
    throw relpos_cli::UsageError{std::string(flag) + ": expected a finite number, got \"" + s +
                                 "\""};
  return v;
}

Options parse_options(int argc, char** argv) {
  Options o;
  if (argc < 2) throw relpos_cli::UsageError{"expected a command: grad or fit"};
  const std::string_view command = argv[1];
  if (command == "--help" || command == "-h") {
    o.help = true;
    return o;
  }
  if (command != "grad" && command != "fit")
    throw relpos_cli::UsageError{"unknown command \"" + std::string(command) +
                                 "\": expected grad or fit"};
  o.command = command;
  const bool fit = command == "fit";
  // the command's own options, from argv[2] on (parse starts at its argv[1])
  const relpos_cli::Args args =
      fit ? relpos_cli::parse(argc - 1, argv + 1,
                              {{"--model", true},
                               {"--input", true},
                               {"--output", true},
                               {"--steps", true},
                               {"--batch", true},
                               {"--lr", true},
                               {"--weight-decay", true},
                               {"--clip-norm", true},
                               {"--threads", true}})
          : relpos_cli::parse(
                argc - 1, argv + 1,
                {{"--model", true}, {"--input", true}, {"--output", true}, {"--threads", true}});
  if (args.help) {
    o.help = true;
    return o;
  }
  const auto required = [&](std::string_view flag) {
    const auto v = args.get(flag);
    if (!v || v->empty())
      throw relpos_cli::UsageError{std::string(flag) + " is required for " + o.command};
    return *v;
  };
  o.model = required("--model");
  o.input = required("--input");
  o.output = required("--output");
  if (const auto t = args.get("--threads")) {
    const long long n = parse_int("--threads", *t);
    if (n < 1 || n > 1024) throw relpos_cli::UsageError{"--threads: expected 1 to 1024, got " + *t};
    o.threads = static_cast<int>(n);
  }
  if (fit) {
    o.steps = parse_int("--steps", required("--steps"));
    if (o.steps < 1)
      throw relpos_cli::UsageError{"--steps: expected >= 1, got " + std::to_string(o.steps)};
    o.batch = parse_int("--batch", required("--batch"));
    if (o.batch < 1)
      throw relpos_cli::UsageError{"--batch: expected >= 1, got " + std::to_string(o.batch)};
    o.lr = parse_double("--lr", required("--lr"));
    if (!(o.lr > 0)) throw relpos_cli::UsageError{"--lr: expected > 0, got " + *args.get("--lr")};
    if (const auto w = args.get("--weight-decay")) {
      o.weight_decay = parse_double("--weight-decay", *w);
      if (o.weight_decay < 0)
        throw relpos_cli::UsageError{"--weight-decay: expected >= 0, got " + *w};
    }
    if (const auto c = args.get("--clip-norm")) {
      o.clip_norm = parse_double("--clip-norm", *c);
      if (!(*o.clip_norm > 0)) throw relpos_cli::UsageError{"--clip-norm: expected > 0, got " + *c};
    }
  }
  return o;
}

// grad: one forward and backward in float, written as F32.
int run_grad(const Options& o) {
  const relpos::Model<float> model = relpos::Model<float>::load(o.model);
  const relpos::TrainingData<float> data =
      relpos::read_training_data<float>(relpos::io::SafetensorsFile::open(o.input), model.config());
  relpos::Gradients<float> grads;
  const float loss = relpos::loss_and_gradients(model, data.batch(), grads);
  relpos::io::SafetensorsWriter w;
  w.add("loss", std::vector<float>{loss}, {1});
  for (const relpos::NamedTensor<float>& g : grads.tensors) {
    w.add("grad." + g.name,
          std::span<const float>(g.values.data(), static_cast<std::size_t>(g.values.size())),
          g.shape);
  }
  if (grads.input) w.add("grad.input", *grads.input);
  w.write(o.output);  // atomic: a temporary file renamed into place
  std::cout << "relpos-train grad: loss " << loss << ", " << grads.tensors.size()
            << " gradients -> " << o.output << "\n";
  return 0;
}

// fit: AdamW steps in float (relpos::fit), each step's loss on stdout; on a terminal, stderr
// shows the progress (step, loss, tokens/s) on one updating line.
int run_fit(const Options& o) {
  namespace fs = std::filesystem;
  relpos::TrainableModel<float> model = relpos::TrainableModel<float>::load(o.model);
  const relpos::TrainingData<float> data =
      relpos::read_training_data<float>(relpos::io::SafetensorsFile::open(o.input), model.config());
  if (o.batch > data.rows()) {
    throw relpos::Error("--batch " + std::to_string(o.batch) + " is larger than the " +
                        std::to_string(data.rows()) + " rows of " + o.input);
  }
  std::error_code ec;
  if (fs::exists(o.output, ec) && !fs::is_directory(o.output, ec))
    throw relpos::Error(o.output + ": exists and is not a folder");
  relpos::FitOptions options;
  options.steps = o.steps;
  options.batch = o.batch;
  options.adamw.lr = o.lr;
  options.adamw.weight_decay = o.weight_decay;
  options.clip_norm = o.clip_norm;
  const bool terminal = ::isatty(2) == 1;
  const double tokens_per_step = double(o.batch) * double(data.inputs.len());
  const auto start = std::chrono::steady_clock::now();
  relpos::fit(model, data, options, [&](relpos::Index t, float loss) {
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double rate = seconds > 0 ? tokens_per_step * double(t + 1) / seconds : 0.0;
    std::cout << "step " << (t + 1) << "/" << o.steps << " loss " << loss << "\n";
    if (terminal) {
      std::cerr << "\r\033[Kstep " << (t + 1) << "/" << o.steps << "  loss " << loss << "  "
                << static_cast<long long>(rate) << " tokens/s" << std::flush;
    }
  });
  if (terminal) std::cerr << "\n";
  // the folder is created only now, once training has succeeded; removed again if writing fails
  const bool existed = fs::exists(o.output, ec);
  try {
    model.save(o.output);
  } catch (...) {
    if (!existed) fs::remove_all(o.output, ec);
    throw;
  }
  std::cout << "relpos-train fit: " << o.steps << " steps -> " << o.output << "\n";
  return 0;
}

int run(const Options& o) {
  if (o.threads) relpos::set_num_threads(*o.threads);
  if (o.command == "grad") return run_grad(o);
  return run_fit(o);
}

}  // namespace

int main(int argc, char** argv) {
  return relpos_cli::run_main<Options>("relpos-train", kUsage, argc, argv, parse_options, run);
}
