// SPDX-License-Identifier: MIT
// The demo's models trained from scratch in C++ (issue #15, point 6): the recipe of
// tools/train_default_models.py, step for step. The task: at each position i of a random
// string of printable ASCII (32..126), predict the byte at i − 3, and '_' for the first three.
// Each step draws one length in [4, 32] and a batch of strings of it; the loss is the
// cross-entropy of every position (spec §6), the gradients are clipped to norm 1, and AdamW
// (weight decay 0.01) follows PyTorch's OneCycleLR schedule (Smith & Topin 2019) peaking at
// lr. The random numbers differ from PyTorch's, so the trained weights do too; what must not
// differ is which encodings carry to longer inputs.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include <relpos/optimizer.hpp>
#include <relpos/training.hpp>

#include "support/initial_weights.hpp"

namespace relpos_demo {

struct ShiftTask {
  int shift = 3;
  char pad = '_';
  int first_byte = 32, last_byte = 126;
  int min_len = 4, max_len = 32;  // training lengths
};

struct Recipe {
  long steps = 2500;
  long batch = 32;
  double lr = 3e-3;  // OneCycleLR's max_lr
  std::uint64_t seed = 1234;
};

/// torch.optim.lr_scheduler.OneCycleLR (cos annealing, two phases, pct_start 0.1, div_factor
/// 25, final_div_factor 1e4): the lr of step t of `total`, rising from max_lr/25 to max_lr over
/// the first 10 % of the steps, then falling to max_lr/25/1e4 along a half cosine.
inline double one_cycle_lr(long t, long total, double max_lr) {
  const double initial = max_lr / 25.0, final_lr = initial / 1e4;
  const double warm_end = 0.1 * static_cast<double>(total) - 1.0;  // torch's phase boundary
  const double last = static_cast<double>(total) - 1.0;
  const auto anneal = [](double from, double to, double pct) {
    return to + (from - to) / 2.0 * (std::cos(std::numbers::pi * pct) + 1.0);
  };
  const double step = static_cast<double>(t);
  if (step <= warm_end) return anneal(initial, max_lr, warm_end > 0 ? step / warm_end : 1.0);
  return anneal(max_lr, final_lr, (step - warm_end) / (last - warm_end));
}

/// The targets of `ids` ([batch, len] bytes): the byte `shift` to the left, or the pad.
inline relpos::TokenIds shifted_targets(const relpos::TokenIds& ids, const ShiftTask& task) {
  relpos::TokenIds t(ids.rows(), ids.cols());
  for (relpos::Index b = 0; b < ids.rows(); ++b) {
    for (relpos::Index i = 0; i < ids.cols(); ++i) {
      t(b, i) = i >= task.shift ? ids(b, i - task.shift) : static_cast<unsigned char>(task.pad);
    }
  }
  return t;
}

/// A model of `config` trained from scratch by the recipe; log(step, loss) is called every
/// `log_every` steps and at the last one.
inline relpos::TrainableModel<float> train_shift_model(const relpos::io::ModelConfig& config,
                                                       const std::string& config_json,
                                                       const Recipe& recipe, const ShiftTask& task,
                                                       const std::function<void(long, double)>& log,
                                                       long log_every = 250) {
  relpos::TrainableModel<float> model(config, initial_weights(config, recipe.seed), config_json);
  relpos::AdamW<float> opt({.lr = one_cycle_lr(0, recipe.steps, recipe.lr), .weight_decay = 0.01});
  std::mt19937_64 rng(recipe.seed + 1);
  std::uniform_int_distribution<int> length(task.min_len, task.max_len);
  std::uniform_int_distribution<int> byte(task.first_byte, task.last_byte);
  relpos::Gradients<float> grads;
  relpos::TrainingWorkspace<float> ws;  // the steps' scratch, kept (lengths vary: it resizes)
  std::vector<relpos::ParameterRef<float>> params;
  for (long t = 0; t < recipe.steps; ++t) {
    const relpos::Index len = length(rng);
    relpos::TokenIds ids(recipe.batch, len);
    for (relpos::Index b = 0; b < ids.rows(); ++b) {
      for (relpos::Index i = 0; i < len; ++i) ids(b, i) = byte(rng);
    }
    const relpos::TokenIds targets = shifted_targets(ids, task);
    relpos::TrainingBatch<float> batch;
    batch.input_ids = &ids;
    batch.targets = &targets;
    const float loss = model.loss_and_gradients(batch, grads, ws);
    params.clear();
    model.for_each_parameter(
        grads, [&](const std::string& name, float* value, float* grad, relpos::Index size) {
          params.push_back({name, value, grad, size});
        });
    relpos::clip_grad_norm(params, 1.0);
    opt.set_lr(one_cycle_lr(t, recipe.steps, recipe.lr));
    opt.step(params);
    if (t % log_every == 0 || t == recipe.steps - 1) log(t, loss);
  }
  return model;
}

}  // namespace relpos_demo
