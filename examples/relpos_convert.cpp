// SPDX-License-Identifier: MIT
// relpos-convert: rewrites a rotary model folder for the other rotary pairing
// (half, as GPT-NeoX and LLaMA, or interleaved, as GPT-J and RoFormer) by
// permuting the q and k rows of every layer's in_proj
// (relpos/rotary_layout.hpp), so the converted model computes what the original
// did. Tensors keep their dtype (the rows are moved as bytes); everything else
// is copied. With --from-hf it writes a Hugging Face checkpoint folder (spec
// §7) in the relpos format of spec §1 and §7: the mapping of
// io/hf_checkpoint.hpp, which Model::load applies on the fly.
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <variant>
#include <vector>

#include <relpos/io/config.hpp>
#include <relpos/io/hf_checkpoint.hpp>
#include <relpos/io/safetensors.hpp>
#include <relpos/io/safetensors_writer.hpp>
#include <relpos/model.hpp>
#include <relpos/rotary_layout.hpp>

#include "cli.hpp"

namespace {

constexpr const char* kUsage =
    R"(usage: relpos-convert --model DIR --output DIR --layout half|interleaved
       relpos-convert --from-hf DIR --output DIR

Rewrites a rotary model folder (config.json + model.safetensors) for the given rotary pairing:
  half         pairs x[m] with x[m + r/2] (GPT-NeoX, LLaMA, Hugging Face rotate_half)
  interleaved  pairs x[2m] with x[2m + 1] (GPT-J, RoFormer)
The q and k rows of every layers.N.self_attn.in_proj_weight / in_proj_bias are permuted per
head over the rotary dims and config.json's `interleaved` is set; the output computes the same
as the input. With --from-hf, DIR is a Hugging Face checkpoint folder (config.json with
model_type, model.safetensors or a sharded model.safetensors.index.json; spec §7) and the
output is the same model in the relpos format, which gives the same numbers. The output folder
is created; existing files in it are overwritten.
Each option is given at most once, as --flag VALUE or --flag=VALUE.
)";

int fail(const std::string& message, int status = 1) {
  std::cerr << "relpos-convert: " << message << "\n";
  return status;
}

// Writes config.json and model.safetensors, the config last: a folder with a
// config is whole.
int write_folder(const std::filesystem::path& output, const relpos::io::ModelConfig& config,
                 const relpos::io::SafetensorsWriter& writer) {
  std::filesystem::create_directories(output);
  writer.write((output / "model.safetensors").string());
  const std::filesystem::path config_out = output / "config.json";
  std::ofstream out(config_out, std::ios::binary | std::ios::trunc);
  out << relpos::io::to_json(config).dump(2) << "\n";
  if (!out) return fail(config_out.string() + ": cannot write");
  return 0;
}

// --from-hf: the mapped tensors as they are stored (no dtype conversion) under
// spec §1's names.
int convert_hf(const std::string& dir, const std::string& output) {
  const relpos::io::HfCheckpoint hf = relpos::io::load_hf_checkpoint(dir);
  relpos::check_model_tensors(hf.config, hf.weights);
  relpos::io::SafetensorsWriter writer;
  for (const std::string& name : hf.weights.names()) {
    const relpos::io::TensorInfo& info = hf.weights.info(name);
    writer.add(name, info.dtype, info.shape, hf.weights.raw(name));
  }
  if (const int status = write_folder(output, hf.config, writer); status != 0) return status;
  std::cout << "relpos-convert: " << dir << " (Hugging Face " << hf.model_type << ") -> " << output
            << " (position " << hf.config.position_type() << ")\n";
  return 0;
}

int run(int argc, char** argv) {
  const relpos_cli::Args args = relpos_cli::parse(
      argc, argv, {{"--model", true}, {"--output", true}, {"--layout", true}, {"--from-hf", true}});
  if (args.help) {
    std::cout << kUsage;
    return 0;
  }
  const std::string model = args.get("--model").value_or("");
  const std::string output = args.get("--output").value_or("");
  const std::string layout = args.get("--layout").value_or("");
  if (const auto hf = args.get("--from-hf")) {
    if (!model.empty() || !layout.empty())
      return fail("--from-hf takes no --model or --layout (see relpos-convert --help)", 2);
    if (hf->empty() || output.empty())
      return fail(
          "--from-hf and --output are required together (see "
          "relpos-convert --help)",
          2);
    return convert_hf(*hf, output);
  }
  if (model.empty() || output.empty() || layout.empty()) {
    return fail(
        "--model, --output and --layout are required (see "
        "relpos-convert --help)",
        2);
  }
  if (layout != "half" && layout != "interleaved") {
    return fail("--layout: expected half or interleaved, got '" + layout + "'", 2);
  }

  namespace fs = std::filesystem;
  relpos::io::ModelConfig config = relpos::io::load_config(fs::path(model) / "config.json");
  auto* rotary = std::get_if<relpos::io::RotaryPosition>(&config.position);
  if (rotary == nullptr) {
    return fail(model + "/config.json: position type " + std::string(config.position_type()) +
                " is not rotary: nothing to convert");
  }
  const std::string weights_path = (fs::path(model) / "model.safetensors").string();
  const auto file = relpos::io::SafetensorsFile::open(weights_path);
  relpos::check_model_tensors(config, file);  // the folder is a valid model before we touch it

  const relpos::RotaryLayout from = relpos::rotary_layout(rotary->interleaved);
  const relpos::RotaryLayout to =
      layout == "interleaved" ? relpos::RotaryLayout::interleaved : relpos::RotaryLayout::half;
  const std::vector<relpos::Index> perm = relpos::rotary_layout_permutation(
      config.d_model, config.n_heads, config.rotary_dim(), from, to);

  relpos::io::SafetensorsWriter writer;
  for (const auto& [key, value] : file.metadata()) writer.set_metadata(key, value);
  for (const std::string& name : file.names()) {
    const relpos::io::TensorInfo& info = file.info(name);
    const auto raw = file.raw(name);
    const bool weight = name.ends_with(".self_attn.in_proj_weight");
    const bool bias = name.ends_with(".self_attn.in_proj_bias");
    if (weight || bias) {
      // rows of d_model elements (weight) or of one (bias), whatever the dtype
      const std::size_t row_bytes = raw.size() / perm.size();
      writer.add(name, info.dtype, info.shape, relpos::permute_rows(raw.data(), row_bytes, perm));
    } else {
      writer.add(name, info.dtype, info.shape, raw);
    }
  }
  rotary->interleaved = to == relpos::RotaryLayout::interleaved;

  if (const int status = write_folder(output, config, writer); status != 0) return status;
  std::cout << "relpos-convert: " << model << " -> " << output << " ("
            << (from == to ? "already in that layout, copied" : "q/k rows permuted")
            << ", interleaved = " << (rotary->interleaved ? "true" : "false") << ")\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const relpos_cli::UsageError& e) {
    return fail(e.message + " (see relpos-convert --help)", 2);
  } catch (const std::exception& e) {
    return fail(e.what());
  }
}
