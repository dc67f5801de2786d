// SPDX-License-Identifier: MIT
// The umbrella header of relpos: includes every public header, holds no code.
#pragma once

#include <relpos/core.hpp>
