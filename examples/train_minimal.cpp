// SPDX-License-Identifier: MIT
// Training in C++ with the library (relpos/training.hpp, spec §6): load a model folder, make a
// batch with targets, and take AdamW steps; the loss falls. ctest builds and runs it.
#include <relpos/training.hpp>

#include <cstdio>

#ifndef RELPOS_EXAMPLE_MODEL
#define RELPOS_EXAMPLE_MODEL "examples/models/learned"
#endif

int main() {
  // a model folder (config.json + model.safetensors); float or double
  auto model = relpos::TrainableModel<float>::load(RELPOS_EXAMPLE_MODEL);

  // 8 rows of 24 byte tokens; the task: predict each token's successor (id + 1) mod 256
  relpos::TrainingData<float> data;
  relpos::TokenIds ids(8, 24), targets(8, 24);
  for (relpos::Index b = 0; b < ids.rows(); ++b) {
    for (relpos::Index i = 0; i < ids.cols(); ++i) {
      ids(b, i) = 'a' + (7 * b + 3 * i) % 26;
      targets(b, i) = (ids(b, i) + 1) % 256;
    }
  }
  targets(0, 0) = relpos::kIgnoreTarget;  // -100: a position that does not count
  data.inputs.input_ids = ids;
  data.targets = targets;

  // 30 steps of AdamW on batches of 4 rows (rows (4t + i) mod 8), clipped to norm 1
  relpos::FitOptions options;
  options.steps = 30;
  options.batch = 4;
  options.adamw.lr = 3e-3;
  options.clip_norm = 1.0;
  float first = 0, last = 0;
  relpos::fit(model, data, options, [&](relpos::Index t, float loss) {
    if (t == 0) first = loss;
    last = loss;
    if (t % 5 == 0 || t == options.steps - 1) std::printf("step %2ld  loss %.4f\n", long(t), loss);
  });
  // model.save("trained") would write the trained folder, which relpos-encode loads
  std::printf("loss %.4f -> %.4f\n", first, last);
  return last < first ? 0 : 1;
}
