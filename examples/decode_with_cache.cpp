// SPDX-License-Identifier: MIT
// Decoding with a key/value cache (the README's example, built and run by ctest): a rotary
// model run causally, token by token through relpos::Decoder, gives the rows of one causal
// forward over the whole sequence.
#include <cstdio>
#include <string>

#include <relpos/encodings/rotary.hpp>
#include <relpos/io/config.hpp>
#include <relpos/io/safetensors.hpp>
#include <relpos/kv_cache.hpp>

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : RELPOS_EXAMPLE_MODEL;  // a rotary model folder
  const relpos::io::ModelConfig mc = relpos::io::load_config(dir + "/config.json");
  relpos::EncoderConfig cfg{.d_model = mc.d_model,
                            .n_heads = mc.n_heads,
                            .n_layers = mc.n_layers,
                            .d_ff = mc.d_ff,
                            .norm_first = mc.norm_first,
                            .final_norm = mc.final_norm,
                            .causal = true,
                            .vocab_size = mc.vocab_size.value_or(0),
                            .output_head = mc.output_head};
  const auto file = relpos::io::SafetensorsFile::open(dir + "/model.safetensors");
  using Rope = relpos::Rotary<float>;
  const auto encoder = relpos::Encoder<float, Rope>::load(
      file, cfg, [&](relpos::Index) { return Rope(mc.d_head()); });

  // the bytes of a text as token ids, embedded
  const std::string text = "positions are data";
  const relpos::Index len = static_cast<relpos::Index>(text.size());
  relpos::Matrix<float> x(len, cfg.d_model);
  for (relpos::Index i = 0; i < len; ++i) {
    x.row(i) = encoder.embedding.row(static_cast<unsigned char>(text[static_cast<std::size_t>(i)]));
  }

  // one token at a time: each layer keeps its keys (after rotary) and values
  relpos::Decoder<float, Rope> decoder(encoder, /*max_tokens=*/1024);
  relpos::Matrix<float> y(len, cfg.d_model);
  for (relpos::Index i = 0; i < len; ++i) decoder.forward(x.row(i), y.row(i));

  // the same rows as one causal forward over the whole sequence
  relpos::Tensor3<float> batch(1, len, cfg.d_model);
  relpos::item(batch, 0) = x;
  const relpos::Tensor3<float> full = encoder.forward(batch);
  const double diff = (y - relpos::item(full, 0)).cwiseAbs().maxCoeff();
  std::printf("decoded %ld tokens, cache of %ld, max |cached - full| = %.2e\n",
              static_cast<long>(len), static_cast<long>(decoder.size()), diff);
  return diff < 1e-4 ? 0 : 1;
}
