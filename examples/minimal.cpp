// SPDX-License-Identifier: MIT
// The code to copy to start: a rotary Transformer block with random weights, run on a batch.
#include <relpos/relpos.hpp>

#include <cstdio>

int main() {
  using Block = relpos::Block<float, relpos::Rotary<float>>;
  const relpos::BlockConfig config{.d_model = 64, .n_heads = 4, .d_ff = 256, .norm_first = true};

  // RoPE on all 16 dims of each head, GPT-NeoX / LLaMA pairing (x[m] with x[m + 8])
  Block block(config, relpos::Rotary<float>(config.d_model / config.n_heads));
  block.self_attn.in_proj_weight.setRandom();  // your weights go here, PyTorch layout [out, in]
  block.self_attn.out_proj_weight.setRandom();
  block.ffn.linear1_weight.setRandom();
  block.ffn.linear2_weight.setRandom();

  relpos::Tensor3<float> x(2, 10, config.d_model);  // [batch, len, d_model], batch_first
  x.setRandom();
  relpos::PaddingMask padding = relpos::PaddingMask::Zero(2, 10);  // true = padded key
  padding.row(1).tail(3) = true;                                   // item 1 has 7 real tokens

  const relpos::Tensor3<float> y = block.forward(x, {.padding = padding});
  std::printf("output [%ld, %ld, %ld], y[1, 0, :4] = %.4f %.4f %.4f %.4f\n", y.dimension(0),
              y.dimension(1), y.dimension(2), y(1, 0, 0), y(1, 0, 1), y(1, 0, 2), y(1, 0, 3));
  return 0;
}
