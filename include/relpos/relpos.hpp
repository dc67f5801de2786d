// SPDX-License-Identifier: MIT
// The umbrella header of relpos: includes every public header, holds no code.
#pragma once

#include <relpos/core.hpp>
#include <relpos/encodings/concept.hpp>
#include <relpos/encodings/none.hpp>
#include <relpos/io/dtype.hpp>
#include <relpos/io/safetensors.hpp>
#include <relpos/io/safetensors_writer.hpp>
