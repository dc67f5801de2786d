// SPDX-License-Identifier: MIT
// The one compiled copy of the training gradient the example programs link
// (compiled_models.hpp): every position type's backward, instantiated here once.
#include "compiled_models.hpp"

template float relpos::loss_and_gradients<float>(const relpos::Model<float>&,
                                                 const relpos::TrainingBatch<float>&,
                                                 relpos::Gradients<float>&);
