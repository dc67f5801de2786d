// SPDX-License-Identifier: MIT
// The benchmarked layer, shared by bench_block and bench_memory: d_model 512, 8 heads,
// d_ff 2048, post-norm, relu, float32, random weights with a fixed seed; one Kind per
// encoding, with the FLOPs its forward pass does.
#pragma once

#include <unistd.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>

#include <relpos/block.hpp>
#include <relpos/encodings/alibi.hpp>
#include <relpos/encodings/deberta.hpp>
#include <relpos/encodings/kerple.hpp>
#include <relpos/encodings/learned.hpp>
#include <relpos/encodings/none.hpp>
#include <relpos/encodings/rotary.hpp>
#include <relpos/encodings/sinusoidal.hpp>
#include <relpos/encodings/t5.hpp>
#include <relpos/encodings/xl.hpp>

namespace relpos_bench {

using relpos::Index;

constexpr Index kDModel = 512;
constexpr Index kHeads = 8;
constexpr Index kDHead = kDModel / kHeads;
constexpr Index kDFf = 2048;
constexpr Index kLearnedK = 64;

// Each Kind: the encoding type, how to build it, and the FLOPs of its relative terms on top
// of plain attention (a multiply-add counts 2).
struct None {
  using Enc = relpos::NoPosition<float>;
  static constexpr const char* name = "none";
  static Enc make() { return {}; }
  static double extra_flops(Index) { return 0; }
};

struct Sinusoidal {  // unclamped, keys only (the defaults): R = 2·len − 1 distances
  using Enc = relpos::SinusoidalRelative<float>;
  static constexpr const char* name = "sinusoidal";
  static Enc make() { return Enc(kDHead); }
  // QR = q · aKᵀ per head: 2 · len · R · d_head, over 8 heads
  static double extra_flops(Index len) { return 2.0 * len * (2.0 * len - 1) * kDModel; }
};

struct Learned {  // Shaw et al., K = 64, keys and values: R = min(2·len − 1, 2K + 1)
  using Enc = relpos::LearnedRelative<float>;
  static constexpr const char* name = "learned";
  static Enc make() {
    return Enc::random(kDHead, relpos::LearnedConfig{kLearnedK, true, true, {}}, 11, 0.02);
  }
  static double extra_flops(Index len) {
    const double r = static_cast<double>(std::min(2 * len - 1, 2 * kLearnedK + 1));
    return 2.0 * (2.0 * len * r * kDModel);  // q · aKᵀ and W · aV
  }
};

struct Rotary {  // full rotary_dim, half pairing
  using Enc = relpos::Rotary<float>;
  static constexpr const char* name = "rotary";
  static Enc make() { return Enc(kDHead); }
  // 6 FLOPs per rotated pair, q and k
  static double extra_flops(Index len) { return 2.0 * 6.0 * len * (kDModel / 2); }
};

struct T5 {  // bucketed bias, (32, 128), bidirectional: one value per distance and head
  using Enc = relpos::T5Bias<float>;
  static constexpr const char* name = "t5";
  static Enc make() {
    return Enc(kHeads, relpos::T5Config{},
               relpos::share(relpos::Matrix<float>::Constant(32, kHeads, 0.01f)));
  }
  static double extra_flops(Index len) { return static_cast<double>(len) * len * kHeads; }
};

struct Alibi {  // linear bias −m_h·|δ|, no tensors
  using Enc = relpos::AlibiBias<float>;
  static constexpr const char* name = "alibi";
  static Enc make() { return Enc(kHeads); }
  static double extra_flops(Index len) { return static_cast<double>(len) * len * kHeads; }
};

struct Kerple {  // log kernel −r1_h·ln(1 + r2_h·|δ|): a logarithm per distance and head
  using Enc = relpos::KerpleBias<float>;
  static constexpr const char* name = "kerple";
  static Enc make() {
    const auto r = relpos::share(relpos::Matrix<float>::Constant(kHeads, 1, 0.5f));
    return Enc(kHeads, {.form = relpos::KerpleForm::log}, r, r);
  }
  static double extra_flops(Index len) { return static_cast<double>(len) * len * kHeads; }
};

struct Xl {  // Transformer-XL, unclamped: per-head rows r_h(Δ) for 2·len − 1 distances
  using Enc = relpos::XlRelative<float>;
  static constexpr const char* name = "xl";
  static Enc make() {
    auto bias = std::make_shared<const relpos::Matrix<float>>(
        relpos::Matrix<float>::Constant(kHeads, kDHead, 0.01f));
    return Enc(kDModel, kHeads, relpos::XlConfig{},
               relpos::Matrix<float>::Identity(kDModel, kDModel), bias, bias);
  }
  // (q + v) · r_hᵀ per head over 2·len − 1 distances, and u · kᵀ
  static double extra_flops(Index len) { return 2.0 * len * (2.0 * len - 1) * kDModel; }
};

struct Deberta {  // spec §7's defaults: c2p + p2c, S 256, M 512, share_att_key, rel_norm
  using Enc = relpos::DebertaRelative<float>;
  static constexpr const char* name = "deberta";
  // R (2S, d_model) and the two projections random with a fixed seed (with share_att_key they
  // are in_proj's query / key rows; which values they hold does not change the work done)
  static Enc make() {
    const relpos::DebertaConfig cfg{};
    std::srand(3);
    const float s = 1.0f / std::sqrt(static_cast<float>(kDModel));
    const relpos::Matrix<float> rel = Enc::layer_normed(
        relpos::Matrix<float>::Random(2 * cfg.position_buckets, kDModel),
        relpos::Vector<float>::Ones(kDModel), relpos::Vector<float>::Zero(kDModel), 1e-7);
    const Enc::Projection key{relpos::Matrix<float>::Random(kDModel, kDModel) * s,
                              relpos::Vector<float>::Random(kDModel) * 0.01f};
    const Enc::Projection query{relpos::Matrix<float>::Random(kDModel, kDModel) * s,
                                relpos::Vector<float>::Random(kDModel) * 0.01f};
    return Enc(kDModel, kHeads, cfg, rel, key, query);
  }
  // c2p q · Pkᵀ and p2c k · Pqᵀ per head over the R = min(2·len − 1, 2S) rows: as the
  // sinusoidal term, twice
  static double extra_flops(Index len) {
    const double r = static_cast<double>(std::min<Index>(2 * len - 1, 2 * 256));
    return 2.0 * (2.0 * len * r * kDModel);
  }
};

/// Attention: q, k, v and out projections, q·kᵀ and α·v, plus the encoding's terms.
template <class Kind>
double attention_flops(Index len) {
  const double l = static_cast<double>(len), d = kDModel;
  return 2.0 * l * 4.0 * d * d + 4.0 * l * l * d + Kind::extra_flops(len);
}

/// The block: FLOPs ≈ 2·L·(4d² + 2·d·d_ff) + 4·L²·d, plus the relative terms.
template <class Kind>
double block_flops(Index len) {
  return attention_flops<Kind>(len) + 2.0 * len * 2.0 * kDModel * kDFf;
}

/// The block options of spec §7, each alone on the plain block (post-norm LayerNorm, biases,
/// relu FFN): `ffn: "gated"` (one more (len, d_model) · (d_model, d_ff) product and a ⊙),
/// `norm: "rms"` (no mean, no bias) and `bias: false`; and gelu, the plain block with torch's
/// exact gelu (erf) for its activation, as BERT-family checkpoints use.
// (Position type `deberta` is an encoding, not a block option: its Kind is Deberta above.)
enum class Option { plain, gated, rms, no_bias, gelu };

/// The extra FLOPs of an option on the block: the gate's linear3 product, 2·L·d·d_ff.
inline double option_extra_flops(Option o, Index len) {
  return o == Option::gated ? 2.0 * len * kDModel * kDFf : 0.0;
}

template <class Kind>
relpos::Block<float, typename Kind::Enc> make_block(Option option = Option::plain) {
  relpos::BlockConfig cfg;
  cfg.d_model = kDModel;
  cfg.n_heads = kHeads;
  cfg.d_ff = kDFf;
  cfg.gated = option == Option::gated;
  cfg.norm = option == Option::rms ? relpos::NormKind::rms : relpos::NormKind::layer;
  cfg.bias = option != Option::no_bias;
  if (option == Option::gelu) cfg.activation = relpos::Activation::gelu;
  relpos::Block<float, typename Kind::Enc> b(cfg, Kind::make());
  std::srand(1);  // Eigen's Random draws from std::rand
  const float s = 1.0f / std::sqrt(static_cast<float>(kDModel));
  b.self_attn.in_proj_weight = relpos::Matrix<float>::Random(3 * kDModel, kDModel) * s;
  b.self_attn.out_proj_weight = relpos::Matrix<float>::Random(kDModel, kDModel) * s;
  b.ffn.linear1_weight = relpos::Matrix<float>::Random(kDFf, kDModel) * s;
  b.ffn.linear2_weight =
      relpos::Matrix<float>::Random(kDModel, kDFf) / std::sqrt(static_cast<float>(kDFf));
  if (cfg.gated) b.ffn.linear3_weight = relpos::Matrix<float>::Random(kDFf, kDModel) * s;
  if (cfg.bias) {
    b.self_attn.in_proj_bias = relpos::Vector<float>::Random(3 * kDModel) * 0.01f;
    b.self_attn.out_proj_bias = relpos::Vector<float>::Random(kDModel) * 0.01f;
    b.ffn.linear1_bias = relpos::Vector<float>::Random(kDFf) * 0.01f;
    b.ffn.linear2_bias = relpos::Vector<float>::Random(kDModel) * 0.01f;
    if (cfg.gated) b.ffn.linear3_bias = relpos::Vector<float>::Random(kDFf) * 0.01f;
  }
  return b;
}

/// (len, d_model) activations in [−1, 1].
inline relpos::Matrix<float> random_input(Index len) {
  std::srand(2);
  return relpos::Matrix<float>::Random(len, kDModel);
}

/// OpenBLAS (libtorch's BLAS, when it is OpenBLAS) and OpenMP read their thread counts when
/// loaded, before main: when unset, set both to 1 and exec this program again.
inline void pin_blas_threads(char** argv) {
  if (std::getenv("OPENBLAS_NUM_THREADS") != nullptr && std::getenv("OMP_NUM_THREADS") != nullptr)
    return;
  setenv("OPENBLAS_NUM_THREADS", "1", 0);
  setenv("OMP_NUM_THREADS", "1", 0);
  execv("/proc/self/exe", argv);  // returns only on failure: then go on as we are
}

}  // namespace relpos_bench
