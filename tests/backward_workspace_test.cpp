// SPDX-License-Identifier: MIT
// Tests for the backward's reusable scratch (backward_workspace.hpp, issue #15): a warm block
// training step (forward_saving + backward, the same shapes again) allocates nothing (the
// counting operator new of tests/support/counting_new.*), for every family of attention terms
// and one and two threads; the backward run in parallel over heads (a batch of one item) gives
// the same bits for any thread count; and the workspace overload gives the same bits as the
// overload without one.
#include <relpos/backward_workspace.hpp>
#include <relpos/block_grad.hpp>
#include <relpos/encodings/deberta.hpp>
#include <relpos/encodings/learned.hpp>
#include <relpos/encodings/none.hpp>
#include <relpos/encodings/rotary.hpp>
#include <relpos/encodings/t5.hpp>
#include <relpos/encodings/xl.hpp>
#include <relpos/threads.hpp>
#include <relpos/training.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/counting_new.hpp"
#include "support/golden.hpp"

namespace backward_workspace_test {

using relpos::Index;
using Mat = relpos::Matrix<float>;
using Vec = relpos::Vector<float>;

constexpr Index kD = 32, kHeads = 4, kDHead = kD / kHeads, kDFf = 64;
// a block of attention backward's query rows (kAttentionBackwardRows = 128) and a partial one
constexpr Index kLen = 150;

struct None {
  using Enc = relpos::NoPosition<float>;
  static Enc make() { return {}; }
};
struct Learned {  // Shaw et al., K = 64, keys and values
  using Enc = relpos::LearnedRelative<float>;
  static Enc make() {
    return Enc::random(kDHead, relpos::LearnedConfig{64, true, true, {}}, 11, 0.1);
  }
};
struct Rotary {
  using Enc = relpos::Rotary<float>;
  static Enc make() { return Enc(kDHead); }
};
struct T5 {
  using Enc = relpos::T5Bias<float>;
  static Enc make() {
    std::srand(4);
    return Enc(kHeads, relpos::T5Config{}, relpos::share(Mat(Mat::Random(32, kHeads) * 0.1f)));
  }
};
struct Xl {
  using Enc = relpos::XlRelative<float>;
  static Enc make() {
    std::srand(5);
    auto u = std::make_shared<const Mat>(Mat::Random(kHeads, kDHead) * 0.1f);
    auto v = std::make_shared<const Mat>(Mat::Random(kHeads, kDHead) * 0.1f);
    return Enc(kD, kHeads, relpos::XlConfig{}, Mat(Mat::Random(kD, kD) * 0.2f), u, v);
  }
};
struct Deberta {  // c2p + p2c, S 8, M 16 (so both clamps saturate at len 150), own projections
  using Enc = relpos::DebertaRelative<float>;
  static Enc make() {
    relpos::DebertaConfig cfg{.position_buckets = 8, .max_relative_positions = 16};
    cfg.share_att_key = false;
    std::srand(6);
    // through rel_norm, as the loader builds it, so rel_embeddings and the norm get gradients
    const auto rel = Enc::normed_embeddings(Mat::Random(2 * cfg.position_buckets, kD),
                                            Vec::Ones(kD), Vec::Zero(kD), 1e-7);
    const float s = 1.0f / std::sqrt(static_cast<float>(kD));
    const Enc::Projection key{Mat::Random(kD, kD) * s, Vec::Random(kD) * 0.01f};
    const Enc::Projection query{Mat::Random(kD, kD) * s, Vec::Random(kD) * 0.01f};
    return Enc(kD, kHeads, cfg, rel, key, query);
  }
};

template <class Kind>
relpos::Block<float, typename Kind::Enc> make_block(bool norm_first) {
  relpos::BlockConfig cfg;
  cfg.d_model = kD;
  cfg.n_heads = kHeads;
  cfg.d_ff = kDFf;
  cfg.norm_first = norm_first;
  relpos::Block<float, typename Kind::Enc> b(cfg, Kind::make());
  std::srand(1);
  const float s = 1.0f / std::sqrt(static_cast<float>(kD));
  b.self_attn.in_proj_weight = Mat::Random(3 * kD, kD) * s;
  b.self_attn.in_proj_bias = Vec::Random(3 * kD) * 0.1f;
  b.self_attn.out_proj_weight = Mat::Random(kD, kD) * s;
  b.self_attn.out_proj_bias = Vec::Random(kD) * 0.1f;
  b.ffn.linear1_weight = Mat::Random(kDFf, kD) * s;
  b.ffn.linear1_bias = Vec::Random(kDFf) * 0.1f;
  b.ffn.linear2_weight = Mat::Random(kD, kDFf) / std::sqrt(static_cast<float>(kDFf));
  b.ffn.linear2_bias = Vec::Random(kD) * 0.1f;
  return b;
}

// One block's training state: what a caller keeps between steps.
template <class Kind>
struct Step {
  relpos::Block<float, typename Kind::Enc> block;
  Mat x0, d0, x, d;
  relpos::SequenceInputs in{relpos::Positions{kLen, nullptr}, nullptr};
  relpos::SequenceWorkspace<float> ws;
  relpos::BackwardWorkspace<float> bws;
  relpos::BlockSaved<float> saved;
  relpos::BlockGrad<float> grad;

  explicit Step(bool norm_first) : block(make_block<Kind>(norm_first)) {
    std::srand(2);
    x0 = Mat::Random(kLen, kD);
    d0 = Mat::Random(kLen, kD);
  }
  void run() {
    x = x0;
    relpos::forward_saving(block, x, in, ws, saved);
    d = d0;
    relpos::backward(block, saved, in, d, grad, bws);
  }
};

// Every gradient of the block, flattened in for_each order, then ∂L/∂x.
std::vector<float> flatten(relpos::BlockGrad<float>& g, const Mat& dx) {
  std::vector<float> out;
  const auto add = [&](const std::string&, const auto& m) {
    out.insert(out.end(), m.data(), m.data() + m.size());
  };
  g.for_each("", add);
  // the shared tensors for_each leaves to EncoderGrad
  auto& a = g.self_attn;
  for (const Mat* m : {&a.relative_attention_bias, &a.r_w_bias, &a.r_r_bias, &a.rel_embeddings})
    out.insert(out.end(), m->data(), m->data() + m->size());
  out.insert(out.end(), dx.data(), dx.data() + dx.size());
  return out;
}

template <class Kind>
void check_warm_step_allocates_nothing() {
  using relpos::test::g_allocations;
  for (const int threads : {1, 2}) {
    for (const bool norm_first : {false, true}) {
      SCOPED_TRACE(std::to_string(threads) + " threads, norm_first " + std::to_string(norm_first));
      relpos::set_num_threads(threads);
      Step<Kind> s(norm_first);
      long before = g_allocations.load();
      s.run();  // cold: the workspaces, saved state and gradients sized
      ASSERT_GT(g_allocations.load() - before, 0) << "the count sees a cold step's allocations";
      before = g_allocations.load();
      s.run();
      EXPECT_EQ(g_allocations.load() - before, 0) << "a warm forward_saving + backward";
    }
  }
  relpos::set_num_threads(1);
}

// The gradients with the heads split over 1 and 2 threads (one item, so the heads are the
// parallel work), and without a workspace: the same bits.
template <class Kind>
void check_bit_identical_for_any_thread_count() {
  for (const bool norm_first : {false, true}) {
    SCOPED_TRACE("norm_first " + std::to_string(norm_first));
    std::vector<std::vector<float>> runs;
    for (const int threads : {1, 2}) {
      relpos::set_num_threads(threads);
      Step<Kind> s(norm_first);
      s.run();
      runs.push_back(flatten(s.grad, s.d));
    }
    // the overload without a workspace (its own, per call)
    Step<Kind> s(norm_first);
    s.x = s.x0;
    relpos::forward_saving(s.block, s.x, s.in, s.ws, s.saved);
    s.d = s.d0;
    relpos::backward(s.block, s.saved, s.in, s.d, s.grad);
    runs.push_back(flatten(s.grad, s.d));
    relpos::set_num_threads(1);
    ASSERT_GT(runs[0].size(), static_cast<std::size_t>(kLen * kD));
    for (std::size_t r = 1; r < runs.size(); ++r) {
      ASSERT_EQ(runs[r].size(), runs[0].size());
      std::size_t differ = 0;
      for (std::size_t k = 0; k < runs[0].size(); ++k) {
        // bitwise: memcmp-like through the values (no NaN expected; a NaN would fail ==)
        differ += !(runs[r][k] == runs[0][k]);
      }
      EXPECT_EQ(differ, 0u) << "run " << r << " (2 threads, then no workspace) vs 1 thread";
    }
  }
}

template <class Kind>
class BackwardWorkspaceTyped : public ::testing::Test {};
using Kinds = ::testing::Types<None, Learned, Rotary, T5, Xl, Deberta>;
TYPED_TEST_SUITE(BackwardWorkspaceTyped, Kinds);

TYPED_TEST(BackwardWorkspaceTyped, WarmBlockStepAllocatesNothingWithOneAndTwoThreads) {
  check_warm_step_allocates_nothing<TypeParam>();
}

TYPED_TEST(BackwardWorkspaceTyped, HeadParallelGradientsAreBitIdenticalForAnyThreadCount) {
  check_bit_identical_for_any_thread_count<TypeParam>();
}

// The model-level entry (training.hpp) with a kept TrainingWorkspace and Gradients: a warm
// loss_and_gradients allocates nothing, for a batch of 4 items and of 1 (whose heads run in
// parallel), one and two threads; and with one item, 1 and 2 threads give the same bits.
TEST(TrainingWorkspaceThreads, WarmLossAndGradientsAllocatesNothingAndIsBitIdentical) {
  using relpos::test::g_allocations;
  namespace fs = std::filesystem;
  const fs::path data_dir = fs::path(RELPOS_TEST_DATA_DIR) / "train";
  for (const std::string name : {"learned_head_ce", "rotary_mse", "t5_mse"}) {
    SCOPED_TRACE(name);
    const auto in =
        relpos::io::SafetensorsFile::open((data_dir / name / "input.safetensors").string());
    const auto expected =
        relpos::io::SafetensorsFile::open((data_dir / name / "expected.safetensors").string());
    const auto model = relpos::Model<float>::load(fs::path(RELPOS_TEST_DATA_DIR) / "models" /
                                                  expected.metadata().at("model"));
    const auto all = relpos::read_training_data<float>(in, model.config());
    const std::vector<Index> first{0};
    const auto one_item = relpos::select_rows(all, first);
    std::vector<std::vector<float>> bits;  // one item, per thread count
    for (const int threads : {1, 2}) {
      for (const auto* data : {&all, &one_item}) {
        SCOPED_TRACE(std::to_string(threads) + " threads, batch " + std::to_string(data->rows()));
        relpos::set_num_threads(threads);
        relpos::TrainingWorkspace<float> ws;
        relpos::Gradients<float> grads;
        long before = g_allocations.load();
        const float cold = relpos::loss_and_gradients(model, data->batch(), grads, ws);
        ASSERT_GT(g_allocations.load() - before, 0);
        before = g_allocations.load();
        const float warm = relpos::loss_and_gradients(model, data->batch(), grads, ws);
        EXPECT_EQ(g_allocations.load() - before, 0) << "a warm loss_and_gradients";
        EXPECT_EQ(cold, warm);
        // the overload without a workspace: the same bits
        relpos::Gradients<float> fresh;
        EXPECT_EQ(relpos::loss_and_gradients(model, data->batch(), fresh), warm);
        ASSERT_EQ(fresh.tensors.size(), grads.tensors.size());
        for (std::size_t n = 0; n < grads.tensors.size(); ++n) {
          EXPECT_TRUE(fresh.tensors[n].values == grads.tensors[n].values) << grads.tensors[n].name;
        }
        if (data == &one_item) {
          bits.emplace_back();
          for (const auto& t : grads.tensors)
            bits.back().insert(bits.back().end(), t.values.data(),
                               t.values.data() + t.values.size());
        }
      }
    }
    relpos::set_num_threads(1);
    ASSERT_EQ(bits.size(), 2u);
    EXPECT_TRUE(bits[0] == bits[1]) << "one item: 1 and 2 threads (heads in parallel) differ";
  }
}

// fit's warm steps (select_rows, loss_and_gradients, clip_grad_norm, AdamW, the parameters
// copied into the model by model()) allocate nothing, on one and two threads: for position
// types without tensors of their own, and for those whose tables model() updates in place
// (learned, t5, xl's r_net, u, v and rows r(c), kerple, additive's learned source). Counted
// between on_step calls: step t's count covers its successor's whole step.
TEST(TrainingWorkspaceThreads, WarmFitStepAllocatesNothing) {
  using relpos::test::g_allocations;
  namespace fs = std::filesystem;
  const fs::path data_dir = fs::path(RELPOS_TEST_DATA_DIR) / "train";
  for (const std::string name : {"none_head_ce", "rotary_mse", "alibi_mse", "learned_head_ce",
                                 "t5_mse", "xl_mse", "kerple_power_mse", "additive_learned_mse"}) {
    const auto in =
        relpos::io::SafetensorsFile::open((data_dir / name / "input.safetensors").string());
    const auto expected =
        relpos::io::SafetensorsFile::open((data_dir / name / "expected.safetensors").string());
    const fs::path model_dir =
        fs::path(RELPOS_TEST_DATA_DIR) / "models" / expected.metadata().at("model");
    for (const int threads : {1, 2}) {
      SCOPED_TRACE(name + ", " + std::to_string(threads) + " threads");
      relpos::set_num_threads(threads);
      auto model = relpos::TrainableModel<float>::load(model_dir);
      const auto data = relpos::read_training_data<float>(in, model.config());
      relpos::FitOptions options{.steps = 5, .batch = std::min<Index>(2, data.rows())};
      options.clip_norm = 1.0;
      const long start = g_allocations.load();
      std::vector<long> counts;
      counts.reserve(5);
      relpos::fit(model, data, options,
                  [&](Index, float) { counts.push_back(g_allocations.load()); });
      ASSERT_EQ(counts.size(), 5u);
      EXPECT_GT(counts[0] - start, 0) << "the count sees the cold first step";
      EXPECT_EQ(counts[4] - counts[2], 0) << "warm steps 3 and 4";
    }
  }
  relpos::set_num_threads(1);
}

}  // namespace backward_workspace_test
