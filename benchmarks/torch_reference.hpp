// SPDX-License-Identifier: MIT
// The libtorch side of the side-by-side benchmarks, behind a header that does not include
// torch: torch 1.13's headers are C++17, relpos is C++20, so the two never meet in one
// translation unit (torch_reference.cpp is compiled on its own, as C++17).
#pragma once

#include <cstdint>
#include <memory>

namespace relpos_bench {

/// What one libtorch forward computes, on an input of (len, batch 1, d_model).
enum class TorchOp {
  block,       // torch::nn::TransformerEncoderLayer (post-norm, relu, dropout 0), eval mode
  attention,   // torch::nn::MultiheadAttention(x, x, x), need_weights = false
  gemm,        // torch::linear of (len, d_model) by linear1's (d_ff, d_model) weight
  block_step,  // one training step of the block in train mode (dropout 0): forward, the loss
               // sum(out ⊙ dout), backward, torch::optim::AdamW's step, gradients zeroed
};

/// A libtorch module with random weights and its input, built once; forward() runs it (under
/// NoGradGuard, except block_step) and keeps the output alive, so nothing is optimised away.
class TorchReference {
 public:
  TorchReference(TorchOp op, std::int64_t len, std::int64_t d_model, std::int64_t n_heads,
                 std::int64_t d_ff);
  ~TorchReference();
  TorchReference(const TorchReference&) = delete;
  TorchReference& operator=(const TorchReference&) = delete;

  void forward();
  /// A value of the last output (so the caller can DoNotOptimize it).
  float probe() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// at::set_num_threads(1) and at::set_num_interop_threads(1): one thread, as relpos.
void torch_use_one_thread();

}  // namespace relpos_bench
