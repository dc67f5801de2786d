// SPDX-License-Identifier: MIT
// Training one encoder layer (issue #15's targets): d_model 512, 8 heads, d_ff 2048, batch 1,
// float32, one thread, the loss sum(out ⊙ dout) so backward starts from a fixed ∂L/∂out.
// Series, per encoding and length, all in one run so their ratios hold:
//   BM_Forward       the inference forward (Block::forward), the reference for backward
//   BM_Backward      backward alone (the forward_saving before it is not timed)
//   BM_BackwardThreads  the same on T threads (one item: the heads run in parallel)
//   BM_Step          forward_saving + backward + AdamW over the layer's weights
//   BM_TorchStep     libtorch's TransformerEncoderLayer, the same step with torch::optim::AdamW
//                    (when CMake found Torch)
// Every series counts the heap allocations per iteration of its warm loop (allocs counter).
#include <cstdint>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include <relpos/backward_workspace.hpp>
#include <relpos/block.hpp>
#include <relpos/block_grad.hpp>
#include <relpos/optimizer.hpp>
#include <relpos/threads.hpp>

#include "alloc_counter.hpp"
#include "block_setup.hpp"
#if RELPOS_BENCH_TORCH
#include "torch_reference.hpp"
#endif

namespace {

using relpos::Index;
using relpos_bench::kDModel;
using Mat = relpos::Matrix<float>;

void report(benchmark::State& state, relpos_bench::AllocCounts before) {
  const relpos_bench::AllocCounts after = relpos_bench::alloc_counts();
  state.counters["allocs"] = benchmark::Counter(static_cast<double>(after.calls - before.calls),
                                                benchmark::Counter::kAvgIterations);
  state.counters["alloc_MiB"] =
      benchmark::Counter(static_cast<double>(after.bytes - before.bytes) / (1 << 20),
                         benchmark::Counter::kAvgIterations);
  state.SetItemsProcessed(state.iterations() * state.range(0));  // tokens/s
}

// A fixed ∂L/∂out in [−1, 1], (len, d_model).
Mat output_gradient(Index len) {
  std::srand(5);
  return Mat::Random(len, kDModel);
}

// One layer with its forward state, gradient and input: what every series below starts from.
template <class Kind>
struct Layer {
  relpos::Block<float, typename Kind::Enc> block = relpos_bench::make_block<Kind>();
  Index len;
  Mat x0, x, d0, d;
  relpos::SequenceInputs in;
  relpos::SequenceWorkspace<float> ws;
  relpos::BackwardWorkspace<float> bws;
  relpos::BlockSaved<float> saved;
  relpos::BlockGrad<float> grad;

  explicit Layer(Index n)
      : len(n),
        x0(relpos_bench::random_input(n)),
        d0(output_gradient(n)),
        in{relpos::Positions{n, nullptr}, nullptr} {
    relpos::set_num_threads(1);
    step_without_update();  // warm: workspaces, caches and gradient buffers sized
  }

  void forward_saving() {
    x = x0;
    relpos::forward_saving(block, x, in, ws, saved);
  }
  void backward() {
    d = d0;
    relpos::backward(block, saved, in, d, grad, bws);
  }
  void step_without_update() {
    forward_saving();
    backward();
  }

  // The layer's dense weights as the optimizer sees them, paired with their gradients by the
  // model file's names (the learned tables' few rows are left out: their update is noise here).
  std::vector<relpos::ParameterRef<float>> parameters() {
    std::vector<relpos::ParameterRef<float>> p;
    auto add = [&](const char* name, auto& value, auto& g) {
      p.push_back({name, value.data(), g.data(), static_cast<Index>(value.size())});
    };
    auto& a = block.self_attn;
    add("self_attn.in_proj_weight", a.in_proj_weight, grad.self_attn.in_proj_weight);
    add("self_attn.in_proj_bias", a.in_proj_bias, grad.self_attn.in_proj_bias);
    add("self_attn.out_proj.weight", a.out_proj_weight, grad.self_attn.out_proj_weight);
    add("self_attn.out_proj.bias", a.out_proj_bias, grad.self_attn.out_proj_bias);
    add("linear1.weight", block.ffn.linear1_weight, grad.ffn.linear1_weight);
    add("linear1.bias", block.ffn.linear1_bias, grad.ffn.linear1_bias);
    add("linear2.weight", block.ffn.linear2_weight, grad.ffn.linear2_weight);
    add("linear2.bias", block.ffn.linear2_bias, grad.ffn.linear2_bias);
    add("norm1.weight", block.norm1.weight, grad.norm1.weight);
    add("norm1.bias", block.norm1.bias, grad.norm1.bias);
    add("norm2.weight", block.norm2.weight, grad.norm2.weight);
    add("norm2.bias", block.norm2.bias, grad.norm2.bias);
    return p;
  }
};

template <class Kind>
void BM_Forward(benchmark::State& state) {
  Layer<Kind> l(state.range(0));
  const auto before = relpos_bench::alloc_counts();
  for (auto _ : state) {
    l.x = l.x0;
    l.block.forward(l.x, l.in, l.ws);
    benchmark::DoNotOptimize(l.x.data());
    benchmark::ClobberMemory();
  }
  report(state, before);
}

template <class Kind>
void backward_series(benchmark::State& state, int threads) {
  Layer<Kind> l(state.range(0));
  if (threads != 1) {
    relpos::set_num_threads(threads);
    l.step_without_update();  // warm for this many threads
  }
  const auto before = relpos_bench::alloc_counts();
  std::int64_t untimed_allocs = 0;
  for (auto _ : state) {
    state.PauseTiming();
    const auto a = relpos_bench::alloc_counts();
    l.forward_saving();
    untimed_allocs += relpos_bench::alloc_counts().calls - a.calls;
    state.ResumeTiming();
    l.backward();
    benchmark::DoNotOptimize(l.d.data());
    benchmark::ClobberMemory();
  }
  report(state, before);
  // the allocations of backward alone
  state.counters["allocs"] = benchmark::Counter(state.counters["allocs"].value -
                                                static_cast<double>(untimed_allocs) /
                                                    static_cast<double>(state.iterations()));
}

template <class Kind>
void BM_Backward(benchmark::State& state) {
  backward_series<Kind>(state, 1);
}

template <class Kind>
void BM_BackwardThreads(benchmark::State& state) {
  backward_series<Kind>(state, static_cast<int>(state.range(1)));
  relpos::set_num_threads(1);
}

template <class Kind>
void BM_Step(benchmark::State& state) {
  Layer<Kind> l(state.range(0));
  relpos::AdamW<float> opt({.lr = 1e-5});
  const auto params = l.parameters();
  opt.step(params);  // warm: the moments allocated
  const auto before = relpos_bench::alloc_counts();
  for (auto _ : state) {
    l.step_without_update();
    opt.step(params);
    benchmark::DoNotOptimize(l.block.self_attn.in_proj_weight.data());
    benchmark::ClobberMemory();
  }
  report(state, before);
}

#if RELPOS_BENCH_TORCH
void BM_TorchStep(benchmark::State& state) {
  relpos_bench::TorchReference torch(relpos_bench::TorchOp::block_step, state.range(0), kDModel,
                                     relpos_bench::kHeads, relpos_bench::kDFf);
  torch.forward();  // warm
  const auto before = relpos_bench::alloc_counts();
  for (auto _ : state) {
    torch.forward();
    benchmark::DoNotOptimize(torch.probe());
  }
  report(state, before);
}
BENCHMARK(BM_TorchStep)->ArgName("len")->Arg(512)->Unit(benchmark::kMillisecond);
#endif

using relpos_bench::Learned;
using relpos_bench::None;

void lengths(benchmark::internal::Benchmark* b) {
  b->ArgName("len")->Arg(512)->Arg(2048)->Unit(benchmark::kMillisecond);
}

BENCHMARK_TEMPLATE(BM_Forward, None)->Apply(lengths);
BENCHMARK_TEMPLATE(BM_Backward, None)->Apply(lengths);
BENCHMARK_TEMPLATE(BM_Forward, Learned)->Apply(lengths);
BENCHMARK_TEMPLATE(BM_Backward, Learned)->Apply(lengths);
BENCHMARK_TEMPLATE(BM_BackwardThreads, None)
    ->ArgNames({"len", "threads"})
    ->Args({512, 2})
    ->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_BackwardThreads, Learned)
    ->ArgNames({"len", "threads"})
    ->Args({512, 2})
    ->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_Step, None)->ArgName("len")->Arg(512)->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  relpos_bench::pin_blas_threads(argv);
#if RELPOS_BENCH_TORCH
  relpos_bench::torch_use_one_thread();  // once per process: torch refuses a second call
#endif
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
