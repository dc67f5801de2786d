// SPDX-License-Identifier: MIT
// One encoder layer (d_model 512, 8 heads, d_ff 2048, batch 1, float32, one thread) for each
// encoding, read against baselines measured in the same run: an Eigen GEMM of the block's
// dominant shape (the machine's reachable peak), the naive materialised-table attention, and,
// when CMake found Torch, libtorch's TransformerEncoderLayer / MultiheadAttention.
// Every relpos series also counts the heap allocations of a warm forward (allocs counter).
#include <unistd.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include <benchmark/benchmark.h>

#include <relpos/attention.hpp>
#include <relpos/block.hpp>
#include <relpos/detail/gemm.hpp>
#include <relpos/encodings/learned.hpp>
#include <relpos/encodings/none.hpp>
#include <relpos/encodings/rotary.hpp>
#include <relpos/encodings/sinusoidal.hpp>
#include <relpos/threads.hpp>
#include "support/naive_attention.hpp"

#include "alloc_counter.hpp"
#include "block_setup.hpp"
#if RELPOS_BENCH_TORCH
#include "torch_reference.hpp"
#endif

namespace {

using relpos::Index;
using relpos_bench::kDFf;
using relpos_bench::kDModel;
using relpos_bench::kHeads;
using Mat = relpos::Matrix<float>;

// GFLOP/s (rate over CPU time) and the allocations per iteration of the timed loop.
void report(benchmark::State& state, double flops, relpos_bench::AllocCounts before) {
  const relpos_bench::AllocCounts after = relpos_bench::alloc_counts();
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["allocs"] = benchmark::Counter(static_cast<double>(after.calls - before.calls),
                                                benchmark::Counter::kAvgIterations);
  state.counters["alloc_MiB"] =
      benchmark::Counter(static_cast<double>(after.bytes - before.bytes) / (1 << 20),
                         benchmark::Counter::kAvgIterations);
  state.SetItemsProcessed(state.iterations() * state.range(0));  // tokens/s
}

// ---- the block: attention + feed-forward + two LayerNorms, post-norm, in place ----
template <class Kind, bool Causal = false>
void BM_Block(benchmark::State& state) {
  const Index len = state.range(0);
  auto block = relpos_bench::make_block<Kind>();
  block.self_attn.config.causal = Causal;  // causal: the tiles above the diagonal are skipped
  const Mat x0 = relpos_bench::random_input(len);  // (len, d_model)
  Mat x = x0;                                      // updated in place by each forward
  const relpos::SequenceInputs in{relpos::Positions{len, nullptr}, nullptr};
  relpos::SequenceWorkspace<float> ws;
  block.forward(x, in, ws);  // warm: workspace and encoding caches sized for len
  const auto before = relpos_bench::alloc_counts();
  for (auto _ : state) {
    // every forward sees the same input (the copy is ~0.1% of a forward): feeding a block its
    // own output over and over drifts the activations, and with them exp()'s subnormal cases
    x = x0;
    block.forward(x, in, ws);
    benchmark::DoNotOptimize(x.data());
    benchmark::ClobberMemory();
  }
  report(state, relpos_bench::block_flops<Kind>(len), before);
}

// ---- spec §7's block options, each alone beside the plain block (encoding none) ----
template <relpos_bench::Option option>
void BM_BlockOption(benchmark::State& state) {
  const Index len = state.range(0);
  const auto block = relpos_bench::make_block<relpos_bench::None>(option);
  const Mat x0 = relpos_bench::random_input(len);  // (len, d_model)
  Mat x = x0;
  const relpos::SequenceInputs in{relpos::Positions{len, nullptr}, nullptr};
  relpos::SequenceWorkspace<float> ws;
  block.forward(x, in, ws);
  const auto before = relpos_bench::alloc_counts();
  for (auto _ : state) {
    x = x0;
    block.forward(x, in, ws);
    benchmark::DoNotOptimize(x.data());
    benchmark::ClobberMemory();
  }
  report(state,
         relpos_bench::block_flops<relpos_bench::None>(len) +
             relpos_bench::option_extra_flops(option, len),
         before);
}

// ---- the feed-forward alone, plain, gated (one more product of linear1's size) or with gelu ----
template <relpos_bench::Option option>
void BM_FeedForward(benchmark::State& state) {
  const Index len = state.range(0);
  const auto block = relpos_bench::make_block<relpos_bench::None>(option);
  const Mat x = relpos_bench::random_input(len);  // (len, d_model)
  Mat out(len, kDModel);
  relpos::SequenceWorkspace<float> ws;
  block.ffn.forward(x, out, ws);
  const auto before = relpos_bench::alloc_counts();
  for (auto _ : state) {
    block.ffn.forward(x, out, ws);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  report(state, 2.0 * 2.0 * len * kDModel * kDFf + relpos_bench::option_extra_flops(option, len),
         before);
}

// ---- attention alone (the efficient skewing path) ----
template <class Kind>
void BM_Attention(benchmark::State& state) {
  const Index len = state.range(0);
  const auto block = relpos_bench::make_block<Kind>();
  const Mat x = relpos_bench::random_input(len);
  Mat out(len, kDModel);
  const relpos::SequenceInputs in{relpos::Positions{len, nullptr}, nullptr};
  relpos::SequenceWorkspace<float> ws;
  block.self_attn.forward(x, out, in, ws);
  const auto before = relpos_bench::alloc_counts();
  for (auto _ : state) {
    block.self_attn.forward(x, out, in, ws);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  report(state, relpos_bench::attention_flops<Kind>(len), before);
}

// ---- the naive baseline: (len × len × d_head) tables materialised, plain loops ----
template <class Kind>
void BM_AttentionNaive(benchmark::State& state) {
  const Index len = state.range(0);
  const auto block = relpos_bench::make_block<Kind>();
  const Mat x = relpos_bench::random_input(len);
  const relpos::SequenceInputs in{relpos::Positions{len, nullptr}, nullptr};
  const auto before = relpos_bench::alloc_counts();
  for (auto _ : state) {
    Mat out = relpos::test::naive_attention<float>(block.self_attn, x, in);
    benchmark::DoNotOptimize(out.data());
  }
  report(state, relpos_bench::attention_flops<Kind>(len), before);
}

// ---- the peak reference: the GEMM of the block's dominant shape ----
// linear1: (len, d_model) · (d_ff, d_model)ᵀ, through the same detail::matmul_nt the block
// uses, so it is the rate the block's GEMMs can reach on this machine in this build (Eigen's,
// relpos's packed kernel or a CBLAS: the context's relpos_gemm says which). The name is kept
// from when it was always Eigen's, so that earlier figures stay comparable.
void BM_EigenGemm(benchmark::State& state) {
  const Index len = state.range(0);
  const Mat a = Mat::Random(len, kDModel);   // (len, d_model)
  const Mat w = Mat::Random(kDFf, kDModel);  // (d_ff, d_model)
  Mat c(len, kDFf);                          // (len, d_ff)
  relpos::detail::matmul_nt<float>(a, w, c);
  const auto before = relpos_bench::alloc_counts();
  for (auto _ : state) {
    relpos::detail::matmul_nt<float>(a, w, c);
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  report(state, 2.0 * static_cast<double>(len * kDModel * kDFf), before);
}

#if RELPOS_BENCH_TORCH
// ---- libtorch on the same shapes, same process, one thread ----
template <relpos_bench::TorchOp op>
void BM_Torch(benchmark::State& state) {
  const Index len = state.range(0);
  relpos_bench::TorchReference ref(op, len, kDModel, kHeads, kDFf);
  ref.forward();
  for (auto _ : state) {
    ref.forward();
    benchmark::DoNotOptimize(ref.probe());
  }
  const double flops = op == relpos_bench::TorchOp::block
                           ? relpos_bench::block_flops<relpos_bench::None>(len)
                       : op == relpos_bench::TorchOp::attention
                           ? relpos_bench::attention_flops<relpos_bench::None>(len)
                           : 2.0 * static_cast<double>(len * kDModel * kDFf);
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetItemsProcessed(state.iterations() * len);
}
#endif

void lengths(benchmark::internal::Benchmark* b) {
  b->ArgNames({"len"})->Arg(128)->Arg(512)->Arg(1024)->Arg(2048)->Unit(benchmark::kMillisecond);
}
void naive_lengths(benchmark::internal::Benchmark* b) {
  // the naive tables are 2 · len² · d_head floats: 512 MiB at 1024, where it stops
  b->ArgNames({"len"})->Arg(128)->Arg(512)->Arg(1024)->Unit(benchmark::kMillisecond);
}

// Long inputs, where attention's (len × len) scores used to leave the caches: the streaming
// kernel's targets (issue 14) are read at 8192, causal against non-causal too.
void long_lengths(benchmark::internal::Benchmark* b) {
  b->ArgNames({"len"})->Arg(8192)->Unit(benchmark::kMillisecond);
}

using relpos_bench::Learned;
using relpos_bench::None;
using relpos_bench::Rotary;
using relpos_bench::Sinusoidal;

BENCHMARK(BM_EigenGemm)->Apply(lengths);
BENCHMARK_TEMPLATE(BM_Block, None)->Apply(lengths);
BENCHMARK_TEMPLATE(BM_Block, Sinusoidal)->Apply(lengths);
BENCHMARK_TEMPLATE(BM_Block, Learned)->Apply(lengths);
BENCHMARK_TEMPLATE(BM_Block, Rotary)->Apply(lengths);
BENCHMARK_TEMPLATE(BM_Block, relpos_bench::T5)->Apply(lengths);
BENCHMARK_TEMPLATE(BM_Block, relpos_bench::Alibi)->Apply(lengths);
BENCHMARK_TEMPLATE(BM_Block, relpos_bench::Kerple)->Apply(lengths);
BENCHMARK_TEMPLATE(BM_Block, relpos_bench::Xl)->Apply(lengths);
BENCHMARK_TEMPLATE(BM_Block, None)->Apply(long_lengths);
BENCHMARK_TEMPLATE(BM_Block, Learned)->Apply(long_lengths);
BENCHMARK_TEMPLATE(BM_Block, Sinusoidal)->Apply(long_lengths);
BENCHMARK_TEMPLATE(BM_Block, relpos_bench::T5)->Apply(long_lengths);
BENCHMARK_TEMPLATE(BM_Block, relpos_bench::Alibi)->Apply(long_lengths);
BENCHMARK_TEMPLATE(BM_Block, relpos_bench::Xl)->Apply(long_lengths);
BENCHMARK_TEMPLATE(BM_Block, None, true)->Apply(long_lengths);
BENCHMARK_TEMPLATE(BM_Block, Learned, true)->Apply(long_lengths);
// spec §7's options at len 128 (the smoke run) and 512 (the figures); the plain block is
// BM_Block<None>, and the ratios are read against it (report.py)
void option_lengths(benchmark::internal::Benchmark* b) {
  b->ArgNames({"len"})->Arg(128)->Arg(512)->Unit(benchmark::kMillisecond);
}
using relpos_bench::Option;
BENCHMARK_TEMPLATE(BM_BlockOption, Option::gated)->Apply(option_lengths);
BENCHMARK_TEMPLATE(BM_BlockOption, Option::rms)->Apply(option_lengths);
BENCHMARK_TEMPLATE(BM_BlockOption, Option::no_bias)->Apply(option_lengths);
BENCHMARK_TEMPLATE(BM_FeedForward, Option::plain)->Apply(option_lengths);
BENCHMARK_TEMPLATE(BM_FeedForward, Option::gated)->Apply(option_lengths);
BENCHMARK_TEMPLATE(BM_FeedForward, Option::gelu)->Apply(option_lengths);
// Position type deberta (c2p + p2c, spec §7's defaults) at 128 (the smoke run), 512 and 2048;
// its target is <= 1.3x BM_Block<None> at len 512 (report.py)
void deberta_lengths(benchmark::internal::Benchmark* b) {
  b->ArgNames({"len"})->Arg(128)->Arg(512)->Arg(2048)->Unit(benchmark::kMillisecond);
}
BENCHMARK_TEMPLATE(BM_Block, relpos_bench::Deberta)->Apply(deberta_lengths);
BENCHMARK_TEMPLATE(BM_Attention, None)->Apply(lengths);
BENCHMARK_TEMPLATE(BM_Attention, Learned)->Apply(lengths);
BENCHMARK_TEMPLATE(BM_AttentionNaive, Learned)->Apply(naive_lengths);
#if RELPOS_BENCH_TORCH
BENCHMARK_TEMPLATE(BM_Torch, relpos_bench::TorchOp::gemm)->Apply(lengths);
BENCHMARK_TEMPLATE(BM_Torch, relpos_bench::TorchOp::block)->Apply(lengths);
BENCHMARK_TEMPLATE(BM_Torch, relpos_bench::TorchOp::attention)->Apply(lengths);
#endif

// The BLAS library this process mapped (libtorch's, or relpos's with RELPOS_BLAS).
std::string mapped_blas() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    const auto slash = line.rfind('/');
    if (slash == std::string::npos) continue;
    const std::string file = line.substr(slash + 1);
    if (file.find("libblas") == 0 || file.find("libopenblas") == 0) {
      return line.substr(line.find('/'));
    }
  }
  return "none";
}

}  // namespace

int main(int argc, char** argv) {
  // OpenBLAS reads its thread count when it is loaded, before main: set it and start again
  relpos_bench::pin_blas_threads(argv);
  relpos::set_num_threads(1);
#if RELPOS_BENCH_TORCH
  relpos_bench::torch_use_one_thread();
#endif
  benchmark::AddCustomContext("relpos_threads", std::to_string(relpos::num_threads()));
  benchmark::AddCustomContext("blas_library", mapped_blas());
#if defined(RELPOS_USE_CBLAS)
  benchmark::AddCustomContext("relpos_gemm", "cblas");  // built with RELPOS_BLAS
#elif RELPOS_DETAIL_PACKED_GEMM
  benchmark::AddCustomContext("relpos_gemm", "packed");  // detail/packed_gemm.hpp (AVX2, AVX-512)
#else
  benchmark::AddCustomContext("relpos_gemm", "eigen");
#endif
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
