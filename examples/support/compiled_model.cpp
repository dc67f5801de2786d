// SPDX-License-Identifier: MIT
// The one compiled copy of Model<float> the example programs link (compiled_models.hpp).
#include "compiled_models.hpp"

template class relpos::Model<float>;
