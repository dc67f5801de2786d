// SPDX-License-Identifier: MIT
// Peak resident memory of one forward pass, each measured in a fresh process (this program
// run again as `bench_memory --child=<op>:<encoding>:<len>`), so no earlier allocation or
// cache hides it: the block per encoding at len 2048 and 8192 (issue 14: what a forward adds at
// 8192, against the (len × len) code's figures in README.md), at 65536 with RELPOS_BENCH_LONG
// set (the whole process), and the efficient attention beside the naive materialised-table
// path at len 1024. Counters, in MiB: peak (the child's getrusage
// maximum RSS) and forward (peak minus the RSS just before the forward: what it added).
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include <benchmark/benchmark.h>

#include <relpos/block_grad.hpp>
#include <relpos/threads.hpp>
#include "support/naive_attention.hpp"

#include "block_setup.hpp"

namespace {

using relpos::Index;
using Mat = relpos::Matrix<float>;

// step: one training step of the block (forward_saving, then backward from ∂L/∂out = 1),
// issue #15's memory figure, beside the forward's
enum class Op { block, attention, naive, step };
const char* op_name(Op op) {
  return op == Op::block       ? "block"
         : op == Op::attention ? "attention"
         : op == Op::naive     ? "naive"
                               : "step";
}

double resident_kib() {  // the current RSS, from /proc/self/statm (pages)
  long pages = 0, resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / 1024.0;
}

double peak_kib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss);  // KiB on Linux
}

// The child: build the layer, note the RSS, run one forward, print "before peak" in KiB.
template <class Kind>
int child(Op op, Index len) {
  relpos::set_num_threads(1);
  const auto block = relpos_bench::make_block<Kind>();
  Mat x = relpos_bench::random_input(len);  // (len, d_model)
  Mat out(len, relpos_bench::kDModel);      // (len, d_model)
  out.setZero();
  const relpos::SequenceInputs in{relpos::Positions{len, nullptr}, nullptr};
  relpos::SequenceWorkspace<float> ws;
  const double before = resident_kib();
  switch (op) {
    case Op::block:
      block.forward(x, in, ws);
      break;
    case Op::attention:
      block.self_attn.forward(x, out, in, ws);
      break;
    case Op::naive:
      out = relpos::test::naive_attention<float>(block.self_attn, x, in);
      break;
    case Op::step:
      if constexpr (std::is_same_v<Kind, relpos_bench::None>) {  // one type: compile time
        relpos::BlockSaved<float> saved;
        relpos::BlockGrad<float> grad;
        relpos::forward_saving(block, x, in, ws, saved);
        out.setOnes();
        relpos::backward(block, saved, in, out, grad);
      } else {
        std::fprintf(stderr, "bench_memory: step is measured for none only\n");
        return 2;
      }
      break;
  }
  benchmark::DoNotOptimize(x.data());
  benchmark::DoNotOptimize(out.data());
  std::printf("%.0f %.0f\n", before, peak_kib());
  return 0;
}

int run_child(const std::string& spec) {  // "<op>:<encoding>:<len>"
  const auto a = spec.find(':'), b = spec.rfind(':');
  if (a == std::string::npos || b == a) {
    std::fprintf(stderr, "bench_memory: --child=<op>:<encoding>:<len>, got %s\n", spec.c_str());
    return 2;
  }
  const std::string op_s = spec.substr(0, a), kind = spec.substr(a + 1, b - a - 1);
  const Index len = std::stol(spec.substr(b + 1));
  const Op op = op_s == "block"       ? Op::block
                : op_s == "attention" ? Op::attention
                : op_s == "step"      ? Op::step
                                      : Op::naive;
  if (kind == relpos_bench::None::name) return child<relpos_bench::None>(op, len);
  if (kind == relpos_bench::Sinusoidal::name) return child<relpos_bench::Sinusoidal>(op, len);
  if (kind == relpos_bench::Learned::name) return child<relpos_bench::Learned>(op, len);
  if (kind == relpos_bench::Rotary::name) return child<relpos_bench::Rotary>(op, len);
  if (kind == relpos_bench::T5::name) return child<relpos_bench::T5>(op, len);
  if (kind == relpos_bench::Alibi::name) return child<relpos_bench::Alibi>(op, len);
  if (kind == relpos_bench::Xl::name) return child<relpos_bench::Xl>(op, len);
  if (kind == relpos_bench::Kerple::name) return child<relpos_bench::Kerple>(op, len);
  if (kind == relpos_bench::Deberta::name) return child<relpos_bench::Deberta>(op, len);
  std::fprintf(stderr, "bench_memory: unknown encoding %s\n", kind.c_str());
  return 2;
}

// The parent: one fresh child per iteration.
template <class Kind, Op op>
void BM_PeakRss(benchmark::State& state) {
  const Index len = state.range(0);
  const std::string command = "/proc/" + std::to_string(getpid()) + "/exe --child=" + op_name(op) +
                              ":" + Kind::name + ":" + std::to_string(len);
  double before = 0, peak = 0;
  for (auto _ : state) {
    FILE* pipe = popen(command.c_str(), "r");
    if (pipe == nullptr || std::fscanf(pipe, "%lf %lf", &before, &peak) != 2) {
      if (pipe != nullptr) pclose(pipe);
      state.SkipWithError("the child process did not report its memory");
      return;
    }
    if (pclose(pipe) != 0) {
      state.SkipWithError("the child process failed");
      return;
    }
  }
  state.counters["peak_MiB"] = peak / 1024.0;
  state.counters["forward_MiB"] = (peak - before) / 1024.0;
  state.SetLabel(std::string(op_name(op)) + " " + Kind::name);
}

using relpos_bench::Learned;
using relpos_bench::None;
using relpos_bench::Rotary;
using relpos_bench::Sinusoidal;

void at(benchmark::internal::Benchmark* b, Index len) {
  b->ArgNames({"len"})->Arg(len)->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK_TEMPLATE(BM_PeakRss, None, Op::block)->Apply([](auto* b) { at(b, 2048); });
BENCHMARK_TEMPLATE(BM_PeakRss, Sinusoidal, Op::block)->Apply([](auto* b) { at(b, 2048); });
BENCHMARK_TEMPLATE(BM_PeakRss, Learned, Op::block)->Apply([](auto* b) { at(b, 2048); });
BENCHMARK_TEMPLATE(BM_PeakRss, Rotary, Op::block)->Apply([](auto* b) { at(b, 2048); });
// at 8192 a (len × len) score matrix alone would be 256 MiB: attention streams instead
BENCHMARK_TEMPLATE(BM_PeakRss, None, Op::block)->Apply([](auto* b) { at(b, 8192); });
BENCHMARK_TEMPLATE(BM_PeakRss, Sinusoidal, Op::block)->Apply([](auto* b) { at(b, 8192); });
BENCHMARK_TEMPLATE(BM_PeakRss, Learned, Op::block)->Apply([](auto* b) { at(b, 8192); });
BENCHMARK_TEMPLATE(BM_PeakRss, Rotary, Op::block)->Apply([](auto* b) { at(b, 8192); });
BENCHMARK_TEMPLATE(BM_PeakRss, relpos_bench::T5, Op::block)->Apply([](auto* b) { at(b, 8192); });
BENCHMARK_TEMPLATE(BM_PeakRss, relpos_bench::Alibi, Op::block)->Apply([](auto* b) { at(b, 8192); });
BENCHMARK_TEMPLATE(BM_PeakRss, relpos_bench::Xl, Op::block)->Apply([](auto* b) { at(b, 8192); });
BENCHMARK_TEMPLATE(BM_PeakRss, relpos_bench::Kerple, Op::block)->Apply([](auto* b) {
  at(b, 8192);
});
BENCHMARK_TEMPLATE(BM_PeakRss, relpos_bench::Deberta, Op::block)->Apply([](auto* b) {
  at(b, 8192);
});
BENCHMARK_TEMPLATE(BM_PeakRss, Learned, Op::attention)->Apply([](auto* b) { at(b, 1024); });
BENCHMARK_TEMPLATE(BM_PeakRss, Learned, Op::naive)->Apply([](auto* b) { at(b, 1024); });
// a training step beside the forward, one layer at len 4096 (issue #15)
BENCHMARK_TEMPLATE(BM_PeakRss, None, Op::step)->Apply([](auto* b) { at(b, 4096); });
BENCHMARK_TEMPLATE(BM_PeakRss, None, Op::block)->Apply([](auto* b) { at(b, 4096); });

// Issue 14's whole-process target at len 65536 (one layer, every encoding, <= 512 MiB): a
// forward there takes minutes per encoding on one thread, so these run only when
// RELPOS_BENCH_LONG is set (tools/long_input_memory.py measures the same through
// relpos-encode).
template <class Kind>
void register_long() {
  benchmark::RegisterBenchmark(("BM_PeakRss<" + std::string(Kind::name) + ", Op::block>").c_str(),
                               BM_PeakRss<Kind, Op::block>)
      ->Apply([](auto* b) { at(b, 65536); });
}

void register_long_all() {
  register_long<None>();
  register_long<Learned>();
  register_long<Sinusoidal>();
  register_long<Rotary>();
  register_long<relpos_bench::T5>();
  register_long<relpos_bench::Alibi>();
  register_long<relpos_bench::Xl>();
  register_long<relpos_bench::Kerple>();
  register_long<relpos_bench::Deberta>();
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--child=", 8) == 0) return run_child(argv[i] + 8);
  }
  if (std::getenv("RELPOS_BENCH_LONG") != nullptr) register_long_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
