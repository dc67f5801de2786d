// SPDX-License-Identifier: MIT
// libtorch modules of the side-by-side benchmarks (torch_reference.hpp), C++17.
#include "torch_reference.hpp"

#include <torch/torch.h>

namespace relpos_bench {

struct TorchReference::Impl {
  TorchOp op;
  torch::nn::TransformerEncoderLayer block{nullptr};
  torch::nn::MultiheadAttention attention{nullptr};
  torch::Tensor weight;  // (d_ff, d_model), for gemm
  torch::Tensor x;       // (len, 1, d_model) for modules; (len, d_model) for gemm
  torch::Tensor dout;    // (len, 1, d_model): block_step's ∂L/∂out
  std::unique_ptr<torch::optim::AdamW> optimizer;  // block_step
  torch::Tensor out;
};

TorchReference::TorchReference(TorchOp op, std::int64_t len, std::int64_t d_model,
                               std::int64_t n_heads, std::int64_t d_ff)
    : impl_(std::make_unique<Impl>()) {
  torch::manual_seed(0);
  impl_->op = op;
  switch (op) {
    case TorchOp::block:
      impl_->block = torch::nn::TransformerEncoderLayer(
          torch::nn::TransformerEncoderLayerOptions(d_model, n_heads)
              .dim_feedforward(d_ff)
              .dropout(0.0));
      impl_->block->eval();
      impl_->x = torch::randn({len, 1, d_model});
      break;
    case TorchOp::block_step:
      impl_->block = torch::nn::TransformerEncoderLayer(
          torch::nn::TransformerEncoderLayerOptions(d_model, n_heads)
              .dim_feedforward(d_ff)
              .dropout(0.0));
      impl_->block->train();
      impl_->x = torch::randn({len, 1, d_model});
      impl_->dout = torch::randn({len, 1, d_model});
      impl_->optimizer = std::make_unique<torch::optim::AdamW>(impl_->block->parameters(),
                                                               torch::optim::AdamWOptions(1e-5));
      break;
    case TorchOp::attention:
      impl_->attention =
          torch::nn::MultiheadAttention(torch::nn::MultiheadAttentionOptions(d_model, n_heads));
      impl_->attention->eval();
      impl_->x = torch::randn({len, 1, d_model});
      break;
    case TorchOp::gemm:
      impl_->weight = torch::randn({d_ff, d_model});
      impl_->x = torch::randn({len, d_model});
      break;
  }
}

TorchReference::~TorchReference() = default;

void TorchReference::forward() {
  Impl& m = *impl_;
  if (m.op == TorchOp::block_step) {
    m.optimizer->zero_grad();
    m.out = m.block->forward(m.x);
    (m.out * m.dout).sum().backward();
    m.optimizer->step();
    return;
  }
  torch::NoGradGuard no_grad;
  switch (m.op) {
    case TorchOp::block_step:
      break;
    case TorchOp::block:
      m.out = m.block->forward(m.x);
      break;
    case TorchOp::attention:
      m.out = std::get<0>(m.attention->forward(m.x, m.x, m.x, {}, /*need_weights=*/false));
      break;
    case TorchOp::gemm:
      m.out = torch::linear(m.x, m.weight);
      break;
  }
}

float TorchReference::probe() const {
  return impl_->out.defined() ? impl_->out.flatten()[0].item<float>() : 0.0f;
}

void torch_use_one_thread() {
  at::set_num_threads(1);
  at::set_num_interop_threads(1);
}

}  // namespace relpos_bench
