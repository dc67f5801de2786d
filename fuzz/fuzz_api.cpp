// SPDX-License-Identifier: MIT
// libFuzzer target: the in-code C++ API (issue 17). The bytes choose a block's sizes (negative,
// zero, mismatched), an encoding built for maybe other head counts and widths, weights
// reshaped after construction, and an input batch with a padding mask and position ids of
// maybe the wrong shape; the block (and its attention, feed-forward and norms alone) then
// runs a forward. Every outcome must be a result or a relpos::Error: any crash, sanitizer
// report or other exception is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>
#include <utility>

#include <fuzzer/FuzzedDataProvider.h>

#include <relpos/relpos.hpp>

namespace {

using relpos::Index;
using relpos::Matrix;
using relpos::Vector;
using T = float;

Index small(FuzzedDataProvider& in, Index lo, Index hi) {
  return in.ConsumeIntegralInRange<Index>(lo, hi);
}

// A matrix of the given shape, or a slightly different one when the bytes say so.
Matrix<T> reshaped(FuzzedDataProvider& in, Index rows, Index cols) {
  if (in.ConsumeIntegralInRange<int>(0, 7) == 0) {
    rows = std::max<Index>(0, rows + small(in, -2, 2));
    cols = std::max<Index>(0, cols + small(in, -2, 2));
  }
  return Matrix<T>::Constant(rows, cols, T(0.01));
}

// A vector of the given size, or a slightly different one.
Vector<T> resized(FuzzedDataProvider& in, Index size) {
  if (in.ConsumeIntegralInRange<int>(0, 7) == 0) size = std::max<Index>(0, size + small(in, -2, 2));
  return Vector<T>::Constant(size, T(0.01));
}

// Changes one public weight of the block to a shape the bytes choose (often the right one).
template <class B>
void spoil(FuzzedDataProvider& in, B& b) {
  const Index d = std::max<Index>(b.self_attn.config.d_model, 0), f = b.ffn.d_ff();
  switch (in.ConsumeIntegralInRange<int>(0, 10)) {
    case 0:
      b.self_attn.in_proj_weight = reshaped(in, 3 * d, d);
      break;
    case 1:
      b.self_attn.in_proj_bias = resized(in, 3 * d);
      break;
    case 2:
      b.self_attn.out_proj_weight = reshaped(in, d, d);
      break;
    case 3:
      b.self_attn.out_proj_bias = resized(in, d);
      break;
    case 4:
      b.ffn.linear1_weight = reshaped(in, f, d);
      break;
    case 5:
      b.ffn.linear1_bias = resized(in, f);
      break;
    case 6:
      b.ffn.linear2_weight = reshaped(in, d, f);
      break;
    case 7:
      b.ffn.linear2_bias = resized(in, d);
      break;
    case 8:
      b.norm1.weight = resized(in, d);
      break;
    case 9:
      b.norm2.bias = resized(in, d);
      break;
    default:
      break;
  }
}

template <class Enc>
void run(FuzzedDataProvider& in, const relpos::BlockConfig& cfg, const Enc& enc) {
  relpos::Block<T, Enc> block(cfg, enc);
  block.self_attn.in_proj_weight.setConstant(T(0.02));
  block.ffn.linear1_weight.setConstant(T(0.03));
  const int spoils = in.ConsumeIntegralInRange<int>(0, 2);
  for (int s = 0; s < spoils; ++s) spoil(in, block);

  const Index batch = small(in, 0, 3), len = small(in, 0, 12);
  const Index width = cfg.d_model + (in.ConsumeBool() ? small(in, -1, 1) : 0);
  relpos::Tensor3<T> x(batch, len, std::max<Index>(width, 0));
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = T(i % 7) * T(0.25) - T(0.5);

  relpos::PaddingMask mask;
  relpos::PositionIds ids;
  relpos::BatchInputs inputs;
  if (in.ConsumeBool()) {
    mask =
        relpos::PaddingMask::Zero(std::max<Index>(0, batch + small(in, -1, 1) * in.ConsumeBool()),
                                  std::max<Index>(0, len + small(in, -1, 1) * in.ConsumeBool()));
    for (Index i = 0; i < mask.size(); ++i) mask.data()[i] = in.ConsumeBool();
    inputs.padding = mask;
  }
  if (in.ConsumeBool()) {
    ids = relpos::PositionIds::Zero(std::max<Index>(0, batch + small(in, -1, 1) * in.ConsumeBool()),
                                    std::max<Index>(0, len + small(in, -1, 1) * in.ConsumeBool()));
    const bool wide = in.ConsumeBool();
    for (Index i = 0; i < ids.size(); ++i) {
      ids.data()[i] = wide ? in.ConsumeIntegralInRange<std::int64_t>(-2, std::int64_t(1) << 40)
                           : in.ConsumeIntegralInRange<std::int64_t>(-1, 200);
    }
    inputs.positions = ids;
  }
  (void)block.forward(x, inputs);
}

void one_input(FuzzedDataProvider& in) {
  relpos::BlockConfig cfg;
  cfg.d_model = small(in, -4, 40);
  cfg.n_heads = small(in, -1, 9);
  cfg.d_ff = small(in, -2, 40);
  cfg.activation = in.ConsumeBool() ? relpos::Activation::gelu : relpos::Activation::relu;
  cfg.norm_first = in.ConsumeBool();
  cfg.causal = in.ConsumeBool();
  if (in.ConsumeIntegralInRange<int>(0, 15) == 0) cfg.layer_norm_eps = 0;
  // the encoding's own sizes: the block's, or others the bytes choose
  const bool mismatch = in.ConsumeIntegralInRange<int>(0, 3) == 0;
  const Index heads = mismatch ? small(in, -1, 9) : cfg.n_heads;
  const Index d_model = mismatch ? small(in, -2, 40) : cfg.d_model;
  const Index d_head =
      mismatch ? small(in, -1, 16) : (cfg.n_heads > 0 ? cfg.d_model / cfg.n_heads : 0);
  switch (in.ConsumeIntegralInRange<int>(0, 8)) {
    case 0:
      run(in, cfg, relpos::NoPosition<T>());
      break;
    case 1: {
      relpos::T5Config tc;
      tc.num_buckets = small(in, 1, 12);
      tc.max_distance = small(in, 1, 20);
      if (in.ConsumeBool()) tc.bidirectional = in.ConsumeBool();
      tc.causal = in.ConsumeBool() ? cfg.causal : !cfg.causal;
      run(in, cfg,
          relpos::T5Bias<T>(heads, tc,
                            relpos::share(Matrix<T>::Constant(std::max<Index>(tc.num_buckets, 0),
                                                              std::max<Index>(heads, 0), T(0.1)))));
      break;
    }
    case 2:
      run(in, cfg, relpos::AlibiBias<T>(heads));
      break;
    case 3: {
      relpos::XlConfig xc;
      if (in.ConsumeBool()) xc.max_distance = small(in, 0, 8);
      const Index dh = heads > 0 && d_model > 0 ? d_model / heads : 0;
      const auto u = relpos::share(Matrix<T>::Constant(std::max<Index>(heads, 0), dh, T(0.1)));
      run(in, cfg,
          relpos::XlRelative<T>(d_model, heads, xc,
                                Matrix<T>::Constant(std::max<Index>(d_model, 0),
                                                    std::max<Index>(d_model, 0), T(0.05)),
                                u, u));
      break;
    }
    case 4: {
      relpos::RotaryConfig rc;
      if (in.ConsumeBool()) rc.rotary_dim = small(in, -2, 16);
      rc.interleaved = in.ConsumeBool();
      run(in, cfg, relpos::Rotary<T>(d_head, rc));
      break;
    }
    case 5: {
      relpos::LearnedConfig lc;
      if (in.ConsumeBool()) lc.max_distance = small(in, -1, 6);
      lc.keys = in.ConsumeBool();
      lc.values = in.ConsumeBool();
      run(in, cfg, relpos::LearnedRelative<T>::random(d_head, lc, 1));
      break;
    }
    case 6: {
      relpos::SinusoidalConfig sc;
      if (in.ConsumeBool()) sc.max_distance = small(in, -1, 8);
      sc.values = in.ConsumeBool();
      run(in, cfg, relpos::SinusoidalRelative<T>(d_head, sc));
      break;
    }
    case 7:
      run(in, cfg, relpos::AbsoluteSinusoidal<T>(d_model));
      break;
    default: {
      relpos::AdditiveConfig ac;
      if (in.ConsumeBool()) ac.window = small(in, -1, 14);
      run(in, cfg, relpos::Additive<T>(d_model, ac));
      break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  try {
    one_input(in);
  } catch (const relpos::Error&) {
    return 0;  // refused, as the API promises
  } catch (const std::exception& e) {
    std::fprintf(stderr, "an exception other than relpos::Error: %s\n", e.what());
    std::abort();
  }
  return 0;
}
