// SPDX-License-Identifier: MIT
// Encoding benchmarks: building each cached table (sinusoidal distances, learned view, rotary
// cos/sin) for a maximum length M, rotary applied in place to (len, 8 heads · 64), and the
// additive formula at several windows; each series sits beside a memcpy of the same bytes, so
// a figure reads as a multiple of the memory-bandwidth floor measured in the same run.
#include <cstdint>
#include <cstring>
#include <vector>

#include <benchmark/benchmark.h>

#include <relpos/encodings/additive.hpp>
#include <relpos/encodings/learned.hpp>
#include <relpos/encodings/rotary.hpp>
#include <relpos/encodings/sinusoidal.hpp>

namespace {

using relpos::Index;
using Mat = relpos::Matrix<float>;

constexpr Index kDHead = 64;
constexpr Index kHeads = 8;
constexpr Index kDModel = kHeads * kDHead;
constexpr Index kLearnedK = 64;

// A memcpy of `bytes` from one buffer to another: the floor every series here is read against.
void copy_bytes(benchmark::State& state, std::size_t bytes) {
  std::vector<char> src(bytes, 1), dst(bytes, 0);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), bytes);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * bytes));
}

// ---- building a table for maximum length M ----
// Each Table type builds from scratch per iteration and says how many bytes the result holds.

struct SinusoidalTable {  // the (2M − 1, d_head) distance rows s(c), c in [−(M−1), M−1]
  static constexpr const char* name = "sinusoidal";
  static std::size_t bytes(Index m) { return (2 * m - 1) * kDHead * sizeof(float); }
  static void build(Index m) {
    const relpos::SinusoidalRelative<float> enc(kDHead);
    const auto rows = enc.key_rows(-(m - 1), m - 1);
    benchmark::DoNotOptimize(rows.table->data());
  }
};

struct LearnedView {  // the (2M − 1, d_head) padded view of a K = 64 learned table
  static constexpr const char* name = "learned_k64";
  static std::size_t bytes(Index m) { return (2 * m - 1) * kDHead * sizeof(float); }
  static const relpos::LearnedRelative<float>& encoding() {
    static const auto enc = relpos::LearnedRelative<float>::random(
        kDHead, relpos::LearnedConfig{kLearnedK, true, true, {}}, 7);
    return enc;
  }
  static void build(Index m) {
    const auto view = encoding().key_view(m);
    benchmark::DoNotOptimize(view.query_slice(0).data());
  }
};

struct RotaryTable {  // the (M, d_head) cos | sin rows of positions 0..M−1
  static constexpr const char* name = "rotary";
  static std::size_t bytes(Index m) { return m * kDHead * sizeof(float); }
  static void build(Index m) {
    const relpos::Rotary<float> enc(kDHead);
    // one token at position M − 1 makes the cache cover 0..M−1
    Mat x = Mat::Ones(1, kDHead);
    const std::int64_t last = m - 1;
    enc.rotate(x, relpos::Positions{1, &last});
    benchmark::DoNotOptimize(x.data());
  }
};

template <class Table>
void BM_TableBuild(benchmark::State& state) {
  const Index m = state.range(0);
  for (auto _ : state) Table::build(m);
  state.SetItemsProcessed(state.iterations() * m);  // positions covered per second
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * Table::bytes(m)));
  state.SetLabel(Table::name);
}

// The baseline of the table series: a memcpy of the (2M − 1, d_head) float rows.
void BM_TableMemcpy(benchmark::State& state) {
  copy_bytes(state, SinusoidalTable::bytes(state.range(0)));
}

void table_sizes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"max_len"});
  for (Index m = 512; m <= 8192; m *= 2) b->Arg(m);
  b->Unit(benchmark::kMicrosecond);
}

BENCHMARK(BM_TableMemcpy)->Apply(table_sizes);
BENCHMARK_TEMPLATE(BM_TableBuild, SinusoidalTable)->Apply(table_sizes);
BENCHMARK_TEMPLATE(BM_TableBuild, LearnedView)->Apply(table_sizes);
BENCHMARK_TEMPLATE(BM_TableBuild, RotaryTable)->Apply(table_sizes);

// ---- rotary applied in place to (len, 8 heads · 64), warm cache ----

void BM_RotaryApply(benchmark::State& state) {
  const Index len = state.range(0);
  const relpos::Rotary<float> enc(kDHead);
  Mat x = Mat::Random(len, kDModel);  // (len, n_heads · d_head), the layout of q in attention
  const relpos::Positions positions{len, nullptr};
  enc.rotate(x, positions, kHeads);  // grows the cos/sin cache outside the timed loop
  for (auto _ : state) {
    enc.rotate(x, positions, kHeads);
    benchmark::DoNotOptimize(x.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * len);  // tokens/s
  state.SetBytesProcessed(state.iterations() * x.size() * static_cast<Index>(sizeof(float)));
}

// The other pairing and partial rotary (r = 32 of d_head 64, the rest passed through), each
// with its own loop in rotary.hpp; same bytes as BM_RotaryApply.
void BM_RotaryApplyConfig(benchmark::State& state, relpos::RotaryConfig config) {
  const Index len = state.range(0);
  const relpos::Rotary<float> enc(kDHead, config);
  Mat x = Mat::Random(len, kDModel);  // (len, n_heads · d_head)
  const relpos::Positions positions{len, nullptr};
  enc.rotate(x, positions, kHeads);
  for (auto _ : state) {
    enc.rotate(x, positions, kHeads);
    benchmark::DoNotOptimize(x.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * len);
  state.SetBytesProcessed(state.iterations() * x.size() * static_cast<Index>(sizeof(float)));
}

// Its baseline: a memcpy of the same (len, 512) float bytes.
void BM_RotaryMemcpy(benchmark::State& state) {
  copy_bytes(state, static_cast<std::size_t>(state.range(0) * kDModel) * sizeof(float));
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

void rotary_sizes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"len"})->Arg(512)->Arg(2048)->Arg(8192)->Unit(benchmark::kMicrosecond);
}

BENCHMARK(BM_RotaryMemcpy)->Apply(rotary_sizes);
BENCHMARK(BM_RotaryApply)->Apply(rotary_sizes);
BENCHMARK_CAPTURE(BM_RotaryApplyConfig, interleaved, relpos::RotaryConfig{.interleaved = true})
    ->Apply(rotary_sizes);
BENCHMARK_CAPTURE(BM_RotaryApplyConfig, partial_r32, relpos::RotaryConfig{.rotary_dim = 32})
    ->Apply(rotary_sizes);

// ---- the additive formula on (len, d_model), several windows ----
// A running sum makes the cost O(len·d) whatever the window, with no scratch beyond one row;
// up to w = len − 1 it still reads 2w + 1 distinct table rows (the floor for an unclamped
// sinusoidal source: 8 MiB at w = 2047, d = 512), beyond that it is flat.

void BM_Additive(benchmark::State& state) {
  const Index window = state.range(0), len = state.range(1);
  relpos::AdditiveConfig config;
  config.window = window;
  const relpos::Additive<float> enc(kDModel, config);
  Mat x = Mat::Zero(len, kDModel);  // (len, d_model)
  const relpos::Positions positions{len, nullptr};
  enc.add_to_input(x, positions);  // grows the distance table outside the timed loop
  for (auto _ : state) {
    enc.add_to_input(x, positions);
    benchmark::DoNotOptimize(x.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * len);  // tokens/s
  state.SetBytesProcessed(state.iterations() * x.size() * static_cast<Index>(sizeof(float)));
}

void BM_AdditiveMemcpy(benchmark::State& state) {
  copy_bytes(state, static_cast<std::size_t>(state.range(1) * kDModel) * sizeof(float));
  state.SetItemsProcessed(state.iterations() * state.range(1));
}

BENCHMARK(BM_AdditiveMemcpy)
    ->ArgNames({"window", "len"})
    ->Args({0, 2048})
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Additive)
    ->ArgNames({"window", "len"})
    ->ArgsProduct({{0, 16, 256, 2047, 100000}, {2048}})
    ->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
