// SPDX-License-Identifier: MIT
// Token-by-token decoding with a key/value cache (relpos/kv_cache.hpp): tokens/s of one new
// token over caches of 128, 1024 and 4096 tokens (one thread), per encoding, and the heap
// allocations per token (expected 0 once warm). The cache is rewound after each token so its
// length stays fixed while the benchmark loops.
#include <cmath>
#include <cstdint>
#include <random>
#include <string>

#include <benchmark/benchmark.h>

#include <relpos/encodings/learned.hpp>
#include <relpos/encodings/none.hpp>
#include <relpos/encodings/rotary.hpp>
#include <relpos/encodings/sinusoidal.hpp>
#include <relpos/kv_cache.hpp>
#include <relpos/threads.hpp>

#include "alloc_counter.hpp"

namespace {

using relpos::Index;
using T = float;

constexpr Index kDModel = 512, kHeads = 8, kDHead = kDModel / kHeads, kLayers = 2, kDff = 2048;

template <class Enc, class Make>
relpos::Encoder<T, Enc> make_encoder(Make make) {
  relpos::Encoder<T, Enc> e;
  e.config.d_model = kDModel;
  e.config.n_heads = kHeads;
  e.config.n_layers = kLayers;
  e.config.d_ff = kDff;
  e.config.causal = true;
  std::mt19937_64 gen(1);
  std::normal_distribution<double> normal(0.0, 1.0 / std::sqrt(double(kDModel)));
  const auto fill = [&](auto& m) {
    for (Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<T>(normal(gen));
  };
  for (Index n = 0; n < kLayers; ++n) {
    relpos::Block<T, Enc> b(e.config.block(), make(n));
    fill(b.self_attn.in_proj_weight);
    fill(b.self_attn.out_proj_weight);
    fill(b.ffn.linear1_weight);
    fill(b.ffn.linear2_weight);
    e.layers.push_back(std::move(b));
  }
  return e;
}

template <class Enc, class Make>
void decode_token(benchmark::State& state, Make make) {
  relpos::set_num_threads(1);
  const Index cache_len = state.range(0);
  const auto enc = make_encoder<Enc>(make);
  relpos::Decoder<T, Enc> dec(enc, cache_len + 1);
  dec.reserve(cache_len + 1);
  std::mt19937_64 gen(2);
  std::normal_distribution<double> normal(0.0, 1.0);
  relpos::Matrix<T> prompt(cache_len, kDModel), out(cache_len, kDModel);
  for (Index i = 0; i < prompt.size(); ++i) prompt.data()[i] = static_cast<T>(normal(gen));
  // prefill in chunks (not timed)
  for (Index i = 0; i < cache_len; i += 256) {
    const Index n = std::min<Index>(256, cache_len - i);
    dec.forward(prompt.middleRows(i, n), out.middleRows(i, n));
  }
  relpos::Matrix<T> x = prompt.topRows(1), y(1, kDModel);
  // warm: the first token at this length may grow the workspace
  dec.forward(x, y);
  dec.rewind(cache_len);
  const auto before = relpos_bench::alloc_counts();
  for (auto _ : state) {
    dec.forward(x, y);
    benchmark::DoNotOptimize(y.data());
    dec.rewind(cache_len);
  }
  const auto after = relpos_bench::alloc_counts();
  state.SetItemsProcessed(state.iterations());  // items/s = tokens/s
  state.counters["allocs_per_token"] =
      double(after.calls - before.calls) /
      double(std::max<benchmark::IterationCount>(1, state.iterations()));
}

void BM_DecodeRotary(benchmark::State& state) {
  decode_token<relpos::Rotary<T>>(state, [](Index) { return relpos::Rotary<T>(kDHead); });
}
void BM_DecodeNone(benchmark::State& state) {
  decode_token<relpos::NoPosition<T>>(state, [](Index) { return relpos::NoPosition<T>(); });
}
void BM_DecodeLearned(benchmark::State& state) {
  decode_token<relpos::LearnedRelative<T>>(state, [](Index n) {
    return relpos::LearnedRelative<T>::random(kDHead, {64, true, true, ""}, 3 + n, 0.1);
  });
}
void BM_DecodeSinusoidal(benchmark::State& state) {
  decode_token<relpos::SinusoidalRelative<T>>(
      state, [](Index) { return relpos::SinusoidalRelative<T>(kDHead); });
}

BENCHMARK(BM_DecodeNone)->Arg(128)->Arg(1024)->Arg(4096)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DecodeRotary)->Arg(128)->Arg(1024)->Arg(4096)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DecodeLearned)->Arg(128)->Arg(1024)->Arg(4096)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DecodeSinusoidal)->Arg(128)->Arg(1024)->Arg(4096)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
