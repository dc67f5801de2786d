// SPDX-License-Identifier: MIT
// The length-generalization demo: every example model (trained by
// tools/train_default_models.py on lengths up to 32 to emit the byte 3 positions to the
// left) is run at lengths 16 … 512 on the training script's fixed evaluation strings, and the
// accuracy table shows which positional encodings carry to longer inputs. It also draws the
// pictures: accuracy against length, the sinusoidal relative table (distance × dimension), and
// the rotary model's attention weights on a sample text, one heatmap per head.
//
//   relpos-demo [--models DIR] [--out DIR] [--text TEXT] [--check]
//   relpos-demo --train [--types LIST] [--steps N] [--min-accuracy X] [--models DIR] [--out DIR]
// --check: exit non-zero unless, at the training lengths (<= 32), the accuracy measured here
// equals the one the training script measured in PyTorch (accuracy.json) to one position.
// --train: the models are first trained from scratch in C++ (support/shift_task_training.hpp),
// with the configs of the models folder and the steps and batch accuracy.json records.
#include <relpos/relpos.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli.hpp"
#include "support/shift_task_training.hpp"
#include "support/svg.hpp"

namespace {

namespace fs = std::filesystem;

struct Task {
  int shift = 3;   // predict the byte `shift` positions to the left
  char pad = '_';  // the target where there is no such byte
  std::vector<long> lengths;
  std::map<long, std::vector<std::string>> strings;  // length → evaluation strings
  nlohmann::json trained;                            // accuracy.json "models": PyTorch's figures
  nlohmann::json steps, batch;                       // accuracy.json: each model's recipe
  double lr = 3e-3;
};

Task read_task(const fs::path& models) {
  std::ifstream meta_file(models / "accuracy.json");
  if (!meta_file) throw relpos::Error((models / "accuracy.json").string() + ": cannot open");
  const nlohmann::json meta = nlohmann::json::parse(meta_file);
  Task task;
  task.shift = meta.at("task").at("shift").get<int>();
  task.pad = meta.at("task").at("pad").get<std::string>().at(0);
  task.lengths = meta.at("task").at("eval_lengths").get<std::vector<long>>();
  task.trained = meta.at("models");
  task.steps = meta.at("steps");
  task.batch = meta.at("batch");
  task.lr = meta.at("task").at("lr").get<double>();
  std::ifstream lines(models / meta.at("task").at("eval_strings").get<std::string>());
  for (std::string line; std::getline(lines, line);) {
    task.strings[static_cast<long>(line.size())].push_back(line);
  }
  return task;
}

// Fraction of positions (over all strings of one length) whose argmax logit is the target.
double accuracy(const relpos::Model<float>& model, const Task& task,
                const std::vector<std::string>& strings) {
  const auto batch = static_cast<relpos::Index>(strings.size());
  const auto len = static_cast<relpos::Index>(strings.front().size());
  relpos::TokenIds ids(batch, len);
  for (relpos::Index b = 0; b < batch; ++b) {
    for (relpos::Index i = 0; i < len; ++i) {
      ids(b, i) = static_cast<unsigned char>(strings[static_cast<std::size_t>(b)][i]);
    }
  }
  const relpos::ModelOutput<float> out = model.forward(ids);
  const relpos::Tensor3<float>& logits = *out.logits;
  long correct = 0;
  for (relpos::Index b = 0; b < batch; ++b) {
    const auto row = relpos::item(logits, b);  // (len, vocab)
    for (relpos::Index i = 0; i < len; ++i) {
      relpos::Index best = 0;
      row.row(i).maxCoeff(&best);
      const char target =
          i >= task.shift ? strings[static_cast<std::size_t>(b)][i - task.shift] : task.pad;
      correct += best == static_cast<unsigned char>(target);
    }
  }
  return static_cast<double>(correct) / static_cast<double>(batch * len);
}

// --steps N, --seed N: an integer >= 1
long parse_steps(const std::string& flag, const std::string& v) {
  std::size_t used = 0;
  long n = 0;
  try {
    n = std::stol(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != v.size() || n < 1) {
    throw relpos_cli::UsageError{flag + ": expected an integer >= 1, got \"" + v + "\""};
  }
  return n;
}

// --min-accuracy X: a number in [0, 1]
double parse_fraction(const std::string& v) {
  std::size_t used = 0;
  double x = -1;
  try {
    x = std::stod(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != v.size() || !(x >= 0 && x <= 1)) {
    throw relpos_cli::UsageError{"--min-accuracy: expected a number in [0, 1], got \"" + v + "\""};
  }
  return x;
}

std::vector<std::string> split_list(const std::string& list) {
  std::vector<std::string> out;
  std::string item;
  for (const char c : list + ",") {
    if (c != ',') {
      item += c;
    } else if (!item.empty()) {
      out.push_back(item);
      item.clear();
    }
  }
  return out;
}

// --train: each model of the folder retrained from scratch in C++, then its accuracy table.
// Returns the number of models below min_accuracy at the training lengths.
int train_and_report(const Task& task, const fs::path& models, const fs::path& out,
                     const std::vector<std::string>& types, std::optional<long> steps,
                     std::optional<double> min_accuracy, std::uint64_t seed) {
  for (const std::string& t : types) {
    if (!task.trained.contains(t)) {
      throw relpos::Error("--types: no model \"" + t + "\" in " +
                          (models / "accuracy.json").string());
    }
  }
  std::printf("Trained in C++ from scratch (recipe of tools/train_default_models.py)\n\n");
  std::printf("%-11s", "encoding");
  for (const long len : task.lengths) std::printf("%8ld", len);
  std::printf("%8s\n", "steps");
  const bool terminal = ::isatty(STDERR_FILENO) != 0;
  int below = 0;
  std::vector<relpos::svg::Series> series;
  for (const auto& [name, trained] : task.trained.items()) {
    if (!types.empty() && std::find(types.begin(), types.end(), name) == types.end()) continue;
    const fs::path config_path = models / name / "config.json";
    if (!fs::exists(config_path)) continue;
    std::ifstream config_file(config_path);
    const std::string config_json((std::istreambuf_iterator<char>(config_file)),
                                  std::istreambuf_iterator<char>());
    const relpos::io::ModelConfig config =
        relpos::io::parse_config(config_json, config_path.string());
    relpos_demo::Recipe recipe;
    recipe.steps = steps.value_or(task.steps.at(name).get<long>());
    recipe.batch = task.batch.at(name).get<long>();
    recipe.lr = task.lr;
    recipe.seed = seed;
    relpos_demo::ShiftTask shift_task;
    shift_task.shift = task.shift;
    shift_task.pad = task.pad;
    const auto start = std::chrono::steady_clock::now();
    const std::string model_name = name;  // a structured binding: clang 14 cannot capture it
    auto log = [&](long t, double loss) {
      const double s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (terminal) {
        std::fprintf(stderr, "\r  %s step %ld/%ld loss %.4f (%.0f s)\033[K", model_name.c_str(),
                     t + 1, recipe.steps, loss, s);
      } else if ((t + 1) % 500 == 0 || t + 1 == recipe.steps) {
        std::fprintf(stderr, "  %s step %ld/%ld loss %.4f (%.0f s)\n", model_name.c_str(), t + 1,
                     recipe.steps, loss, s);
      }
    };
    auto model = relpos_demo::train_shift_model(config, config_json, recipe, shift_task, log,
                                                terminal ? 25 : 1);
    if (terminal) std::fprintf(stderr, "\r\033[K");
    model.save(out / "trained" / name);
    std::printf("%-11s", name.c_str());
    relpos::svg::Series s{name, {}};
    for (const long len : task.lengths) {
      const double acc = accuracy(model.model(), task, task.strings.at(len));
      s.points.emplace_back(static_cast<double>(len), acc);
      std::printf("%8.3f", acc);
      if (min_accuracy && len <= 32 && acc < *min_accuracy) {
        ++below;
        std::fprintf(stderr, "\n%s at length %ld: %.4f, below --min-accuracy %.4f\n", name.c_str(),
                     len, acc, *min_accuracy);
      }
    }
    std::printf("%8ld\n", recipe.steps);
    std::fflush(stdout);
    series.push_back(std::move(s));
  }
  const fs::path chart = out / "trained_accuracy_by_length.svg";
  relpos::svg::write_file(chart, relpos::svg::line_chart_log2x(
                                     "Trained in C++: accuracy against length (trained on <= 32)",
                                     "sequence length", "accuracy", series));
  std::printf("\nPicture:\n  %s\nTrained models: %s\n", fs::absolute(chart).c_str(),
              fs::absolute(out / "trained").c_str());
  return below;
}

constexpr const char* kUsage =
    R"(usage: relpos-demo [--models DIR] [--out DIR] [--text TEXT] [--check]
       relpos-demo --train [--types LIST] [--steps N] [--min-accuracy X] [--models DIR] [--out DIR]

Runs every example model at lengths 16 ... 512 and prints the accuracy table; draws the
pictures (SVG) into the output folder.
  --models DIR  the example models (default: examples/models of the source tree)
  --out DIR     where the pictures go (default: ./relpos-demo)
  --text TEXT   the sample text of the attention heatmaps
  --check       exit non-zero unless the accuracy at the training lengths (<= 32) is the one
                PyTorch measured (accuracy.json) to one position
  --train       train the models from scratch in C++ first (the configs of --models, the
                recipe of tools/train_default_models.py), then print their table; the trained
                folders go to OUT/trained/<type>
  --types LIST  with --train: the position types to train, comma-separated (default: all)
  --steps N     with --train: steps per model (default: accuracy.json's)
  --seed N      with --train: the seed of the initial weights and the data (default 1234,
                the training script's)
  --min-accuracy X  with --train: exit non-zero unless every trained model reaches X at the
                training lengths (<= 32)
  --help        this text
Each option is given at most once, as --flag VALUE or --flag=VALUE.
)";

}  // namespace

int main(int argc, char** argv) try {
  relpos_cli::Args args;
  try {
    args = relpos_cli::parse(argc, argv,
                             {{"--models", true},
                              {"--out", true},
                              {"--text", true},
                              {"--check", false},
                              {"--train", false},
                              {"--types", true},
                              {"--steps", true},
                              {"--min-accuracy", true},
                              {"--seed", true}});
  } catch (const relpos_cli::UsageError& e) {
    std::cerr << "relpos-demo: " << e.message << " (see relpos-demo --help)\n";
    return 2;
  }
  if (args.help) {
    std::cout << kUsage;
    return 0;
  }
  const fs::path models = args.get("--models").value_or(RELPOS_EXAMPLE_MODELS_DIR);
  const fs::path out = args.get("--out").value_or("relpos-demo");
  const std::string text = args.get("--text").value_or("relative positions carry to longer inputs");
  const bool check = args.has("--check");
  const Task task = read_task(models);
  fs::create_directories(out);
  if (args.has("--train")) {
    std::optional<long> steps;
    std::optional<double> min_accuracy;
    std::uint64_t seed = 1234;
    try {
      if (auto v = args.get("--steps")) steps = parse_steps("--steps", *v);
      if (auto v = args.get("--min-accuracy")) min_accuracy = parse_fraction(*v);
      if (auto v = args.get("--seed")) seed = static_cast<std::uint64_t>(parse_steps("--seed", *v));
    } catch (const relpos_cli::UsageError& e) {
      std::cerr << "relpos-demo: " << e.message << " (see relpos-demo --help)\n";
      return 2;
    }
    const int below = train_and_report(
        task, models, out, split_list(args.get("--types").value_or("")), steps, min_accuracy, seed);
    return below == 0 ? 0 : 1;
  }

  std::printf("Length generalization: accuracy of predicting the byte %d to the left\n",
              task.shift);
  std::printf("(models trained on lengths <= 32; %zu strings per length)\n\n",
              task.strings.begin()->second.size());
  std::printf("%-11s", "encoding");
  for (const long len : task.lengths) std::printf("%8ld", len);
  std::printf("\n");

  std::vector<relpos::svg::Series> series;
  int mismatches = 0;
  for (const auto& [name, trained] : task.trained.items()) {
    if (!fs::exists(models / name / "config.json")) continue;
    std::printf("%-11s", name.c_str());
    std::fflush(stdout);
    try {
      const auto model = relpos::Model<float>::load(models / name);
      relpos::svg::Series s{name, {}};
      for (const long len : task.lengths) {
        const double acc = accuracy(model, task, task.strings.at(len));
        s.points.emplace_back(static_cast<double>(len), acc);
        std::printf("%8.3f", acc);
        const auto positions =
            static_cast<double>(task.strings.at(len).size()) * static_cast<double>(len);
        const double reference = trained.at(std::to_string(len)).get<double>();
        if (len <= 32 && std::abs(acc - reference) * positions > 1.0 + 1e-9) {
          ++mismatches;
          std::fprintf(stderr, "\n%s at length %ld: measured %.6f, PyTorch measured %.6f\n",
                       name.c_str(), len, acc, reference);
        }
        std::fflush(stdout);
      }
      series.push_back(std::move(s));
      std::printf("\n");
    } catch (const relpos::Error& e) {
      std::printf("  (skipped: %s)\n", e.what());
      ++mismatches;
    }
  }

  const fs::path chart = out / "accuracy_by_length.svg";
  relpos::svg::write_file(
      chart, relpos::svg::line_chart_log2x("Accuracy against sequence length (trained on <= 32)",
                                           "sequence length", "accuracy", series));

  // The cached relative table of the sinusoidal encoding, s(δ) for δ in [−63, 63], drawn
  // with distance across and dimension (d_head 32, sin/cos interleaved) down.
  const relpos::SinusoidalRelative<float> sinusoid(32);
  const relpos::Matrix<float> by_dimension = sinusoid.key_rows(-63, 63).view().transpose();
  std::vector<std::string> dims(32), distances(127);
  for (int m = 0; m < 32; m += 8) dims[static_cast<std::size_t>(m)] = std::to_string(m);
  for (int d = -60; d <= 60; d += 20)
    distances[static_cast<std::size_t>(d + 63)] = std::to_string(d);
  const fs::path table = out / "sinusoidal_table.svg";
  relpos::svg::write_file(
      table, relpos::svg::heatmap("Sinusoidal relative table: distance δ = j − i (across) × "
                                  "dimension (down), d_head 32",
                                  by_dimension, dims, distances, 6));

  // The rotary model's attention on the sample text, last layer, one heatmap per head:
  // row = query, column = key; the task wants each query to look 3 keys back.
  const auto rotary = relpos::Model<float>::load(models / "rotary");
  relpos::TokenIds ids(1, static_cast<relpos::Index>(text.size()));
  std::vector<std::string> chars;
  for (std::size_t i = 0; i < text.size(); ++i) {
    ids(0, static_cast<relpos::Index>(i)) = static_cast<unsigned char>(text[i]);
    chars.emplace_back(1, text[i]);
  }
  const auto weights = rotary.attention_weights(ids);
  std::vector<fs::path> pictures = {chart, table};
  for (std::size_t h = 0; h < weights.back().size(); ++h) {
    const fs::path path = out / ("rotary_attention_head" + std::to_string(h) + ".svg");
    relpos::svg::write_file(
        path, relpos::svg::heatmap("Rotary model, last layer, head " + std::to_string(h) +
                                       ": weights of query (row) on key (column)",
                                   weights.back()[h], chars, chars, 14));
    pictures.push_back(path);
  }

  std::printf("\nPictures:\n");
  for (const fs::path& p : pictures) std::printf("  %s\n", fs::absolute(p).c_str());
  if (check && mismatches > 0) {
    std::fprintf(stderr, "relpos-demo --check: %d accuracies differ from accuracy.json\n",
                 mismatches);
    return 1;
  }
  return 0;
} catch (const std::exception& e) {
  std::cerr << "relpos-demo: " << e.what() << "\n";
  return 1;
}
