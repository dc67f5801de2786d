// SPDX-License-Identifier: MIT
// Compile time, not behaviour: the example programs share one compiled copy of the run-time
// model's forward (compiled_model.cpp) and of its training gradient (compiled_training.cpp), as
// a large program would. These declarations keep each program's own translation unit from
// instantiating Model<float> over every position type again: relpos-encode's compiles in 14
// instead of 52 CPU-s. CMake force-includes this header (examples/CMakeLists.txt), so the
// programs read exactly as a user writes them. README "Compile time" shows the pattern.
#pragma once

#include <relpos/model.hpp>
#include <relpos/training.hpp>

extern template class relpos::Model<float>;
extern template float relpos::loss_and_gradients<float>(const relpos::Model<float>&,
                                                        const relpos::TrainingBatch<float>&,
                                                        relpos::Gradients<float>&);
