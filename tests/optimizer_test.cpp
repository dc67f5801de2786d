// SPDX-License-Identifier: MIT
// AdamW and gradient clipping (optimizer.hpp, spec §6) against torch.optim.AdamW and
// torch.nn.utils.clip_grad_norm_ (tools/golden_adamw.py), and the state file
// (io/optimizer_state.hpp): a run saved and resumed is bit-identical to one that never stopped.
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <relpos/io/optimizer_state.hpp>
#include <relpos/io/safetensors_writer.hpp>
#include <relpos/optimizer.hpp>

#include "support/expect_error.hpp"
#include "support/golden.hpp"

namespace relpos_optimizer_test {

using relpos::AdamW;
using relpos::AdamWOptions;
using relpos::Index;
using relpos::ParameterRef;
using relpos::Vector;

const std::vector<std::string> kOptimizerParams = {"layers.0.linear1.weight", "norm.bias",
                                                   "position.kerple_r1"};
constexpr int kOptimizerSteps = 4;

// tools/golden_adamw.py's hyper-parameters
AdamWOptions golden_options() {
  AdamWOptions o;
  o.lr = 0.05;
  o.beta1 = 0.8;
  o.beta2 = 0.95;
  o.eps = 1e-6;
  o.weight_decay = 0.1;
  return o;
}

// Parameters and gradients kept flat per name, as a model hands them to the optimizer.
template <class T>
struct FlatParams {
  std::map<std::string, Vector<T>> value, grad;

  std::vector<ParameterRef<T>> refs() {
    std::vector<ParameterRef<T>> r;
    for (auto& [name, v] : value) {
      r.push_back({name, v.data(), grad.at(name).data(), v.size()});
    }
    return r;
  }
};

template <class T>
Vector<T> flat(const relpos::io::SafetensorsFile& f, const std::string& key) {
  return Eigen::Map<const Vector<T>>(f.values<T>(key).data(), f.info(key).numel());
}

template <class T>
FlatParams<T> initial(const relpos::io::SafetensorsFile& f) {
  FlatParams<T> p;
  for (const std::string& n : kOptimizerParams) {
    p.value[n] = flat<T>(f, "init." + n);
    p.grad[n] = Vector<T>::Zero(p.value[n].size());
  }
  return p;
}

template <class T>
void load_grads(const relpos::io::SafetensorsFile& f, int t, FlatParams<T>& p) {
  for (const std::string& n : kOptimizerParams) {
    p.grad[n] = flat<T>(f, "grad." + std::to_string(t) + "." + n);
  }
}

// torch float32 and ours round the same operations in the same order; the remaining
// differences are torch's vectorized division and sqrt: measured 1-2 ulps after four steps
template <class T>
constexpr double kOptimizerTol = std::is_same_v<T, double> ? 1e-14 : 4e-7;

template <class T>
void run_against_torch(const std::string& file, bool clip) {
  const auto f = relpos::test::golden_file("optimizer/" + file);
  FlatParams<T> p = initial<T>(f);
  AdamW<T> opt(golden_options());
  for (int t = 0; t < kOptimizerSteps; ++t) {
    load_grads(f, t, p);
    if (clip) {
      const double norm = relpos::clip_grad_norm(p.refs(), 0.5);
      EXPECT_NEAR(norm, f.values<double>("norm." + std::to_string(t))[0],
                  1e-12 + kOptimizerTol<T> * norm)
          << "step " << t;
    }
    opt.step(p.refs());
    for (const std::string& n : kOptimizerParams) {
      EXPECT_TRUE(relpos::test::all_close(p.value[n],
                                          flat<double>(f, "value." + std::to_string(t) + "." + n),
                                          kOptimizerTol<T>, kOptimizerTol<T>))
          << n << " after step " << t;
    }
  }
  for (const std::string& n : kOptimizerParams) {
    EXPECT_EQ(opt.state().at(n).steps, kOptimizerSteps) << n;
  }
}

TEST(AdamW, MatchesTorchInDouble) {
  run_against_torch<double>("adamw_float64.safetensors", false);
}
TEST(AdamW, MatchesTorchInFloat) {
  run_against_torch<float>("adamw_float32.safetensors", false);
}
TEST(AdamW, ClippedMatchesTorchInDouble) {
  run_against_torch<double>("clip_float64.safetensors", true);
}
TEST(AdamW, ClippedMatchesTorchInFloat) {
  run_against_torch<float>("clip_float32.safetensors", true);
}

// Clipping scales every gradient by the same factor C / (‖g‖ + 1e-6) when ‖g‖ > C, and
// leaves them alone otherwise.
TEST(ClipGradNorm, ScalesAllGradientsTogetherOnlyAboveTheLimit) {
  Vector<double> v1(2), v2(1), g1(2), g2(1);
  v1.setZero();
  v2.setZero();
  g1 << 3, 0;
  g2 << 4;  // ‖g‖ = 5
  std::vector<ParameterRef<double>> refs = {{"a", v1.data(), g1.data(), 2},
                                            {"b", v2.data(), g2.data(), 1}};
  EXPECT_DOUBLE_EQ(relpos::clip_grad_norm(refs, 10.0), 5.0);
  EXPECT_EQ(g1(0), 3.0);
  EXPECT_EQ(g2(0), 4.0);
  EXPECT_DOUBLE_EQ(relpos::clip_grad_norm(refs, 1.0), 5.0);
  EXPECT_NEAR(g1(0), 3.0 / (5.0 + 1e-6), 1e-15);
  EXPECT_NEAR(g2(0), 4.0 / (5.0 + 1e-6), 1e-15);
  relpos::test::expect_error([&] { relpos::clip_grad_norm(refs, 0.0); }, "max_norm");
}

// Saving after two steps and resuming in a new optimizer gives bit for bit the parameters of
// a run that did not stop.
TEST(AdamW, SavedAndResumedStateContinuesExactly) {
  const auto f = relpos::test::golden_file("optimizer/adamw_float32.safetensors");
  FlatParams<float> straight = initial<float>(f), resumed = initial<float>(f);
  AdamW<float> a(golden_options()), b(golden_options());
  const std::string path =
      (std::filesystem::temp_directory_path() / "relpos_optimizer_state_test.safetensors").string();
  for (int t = 0; t < kOptimizerSteps; ++t) {
    load_grads(f, t, straight);
    a.step(straight.refs());
    load_grads(f, t, resumed);
    b.step(resumed.refs());
    if (t == 1) {
      relpos::io::save_optimizer_state(b, path);
      b = relpos::io::load_optimizer_state<float>(path);
      EXPECT_EQ(b.options().lr, 0.05);
      EXPECT_EQ(b.options().beta2, 0.95);
    }
  }
  std::filesystem::remove(path);
  for (const std::string& n : kOptimizerParams) {
    EXPECT_TRUE((straight.value[n].array() == resumed.value[n].array()).all()) << n;
  }
}

TEST(AdamW, RefusesBadOptionsAndParameters) {
  using relpos::test::expect_error;
  auto with = [](auto set) {
    AdamWOptions o;
    set(o);
    return o;
  };
  expect_error([&] { AdamW<float>(with([](AdamWOptions& o) { o.lr = 0; })); }, "lr");
  expect_error([&] { AdamW<float>(with([](AdamWOptions& o) { o.lr = 1.0 / 0.0; })); }, "lr");
  expect_error([&] { AdamW<float>(with([](AdamWOptions& o) { o.beta1 = 1; })); }, "beta1");
  expect_error([&] { AdamW<float>(with([](AdamWOptions& o) { o.beta2 = -0.1; })); }, "beta2");
  expect_error([&] { AdamW<float>(with([](AdamWOptions& o) { o.eps = -1; })); }, "eps");
  expect_error([&] { AdamW<float>(with([](AdamWOptions& o) { o.weight_decay = -1; })); },
               "weight_decay");

  AdamW<float> scheduled;
  expect_error([&] { scheduled.set_lr(-1e-3); }, "lr must be finite and > 0");
  scheduled.set_lr(0.25);
  EXPECT_EQ(scheduled.options().lr, 0.25);

  Vector<float> v = Vector<float>::Ones(3), g = Vector<float>::Ones(3);
  AdamW<float> opt;
  expect_error(
      [&] {
        opt.step({{"w", v.data(), g.data(), 3}, {"w", v.data(), g.data(), 3}});
      },
      "'w' given twice");
  expect_error([&] { opt.step({{"w", v.data(), nullptr, 3}}); }, "'w' has a null");
  EXPECT_TRUE((v.array() == 1.0f).all()) << "a refused step changed a parameter";
  opt.step({{"w", v.data(), g.data(), 3}});
  // the same name with another size: the state does not fit
  expect_error(
      [&] {
        opt.step({{"w", v.data(), g.data(), 2}});
      },
      "'w' has 2 elements but its optimizer state has 3");
}

TEST(AdamW, StateFileErrorsNameTheEntry) {
  using relpos::test::expect_error;
  const auto dir = std::filesystem::temp_directory_path();
  const std::string path = (dir / "relpos_optimizer_bad_state.safetensors").string();
  {
    relpos::io::SafetensorsWriter w;
    w.set_metadata("optimizer", "AdamW");
    w.set_metadata("lr", "0.001");
    w.add("exp_avg.w", std::vector<float>{1, 2}, {2});
    w.write(path);
  }
  expect_error([&] { relpos::io::load_optimizer_state<float>(path); }, "\"beta1\"");
  {
    relpos::io::SafetensorsWriter w;
    for (const char* k : {"lr", "beta1", "beta2", "eps", "weight_decay"}) w.set_metadata(k, "0.5");
    w.set_metadata("optimizer", "AdamW");
    w.add("exp_avg.w", std::vector<float>{1, 2}, {2});
    w.add("step.w", std::vector<std::int64_t>{1}, {1});
    w.write(path);
  }
  expect_error([&] { relpos::io::load_optimizer_state<float>(path); }, "'exp_avg_sq.w'");
  {
    relpos::io::SafetensorsWriter w;
    w.add("weights", std::vector<float>{1, 2}, {2});
    w.write(path);
  }
  expect_error([&] { relpos::io::load_optimizer_state<float>(path); }, "not an AdamW state");
  std::filesystem::remove(path);
}

}  // namespace relpos_optimizer_test
