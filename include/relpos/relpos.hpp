// SPDX-License-Identifier: MIT
// The umbrella header of relpos: includes every public header, holds no code.
#pragma once

#include <relpos/attention.hpp>
#include <relpos/block.hpp>
#include <relpos/core.hpp>
#include <relpos/distance_table.hpp>
#include <relpos/encoder.hpp>
#include <relpos/encodings/absolute.hpp>
#include <relpos/encodings/additive.hpp>
#include <relpos/encodings/alibi.hpp>
#include <relpos/encodings/concept.hpp>
#include <relpos/encodings/learned.hpp>
#include <relpos/encodings/none.hpp>
#include <relpos/encodings/rotary.hpp>
#include <relpos/encodings/rotary_scaling.hpp>
#include <relpos/encodings/sinusoidal.hpp>
#include <relpos/encodings/t5.hpp>
#include <relpos/encodings/xl.hpp>
#include <relpos/feed_forward.hpp>
#include <relpos/io/config.hpp>
#include <relpos/io/config_limits.hpp>
#include <relpos/io/dtype.hpp>
#include <relpos/io/position_config.hpp>
#include <relpos/io/rotary_scaling_config.hpp>
#include <relpos/io/safetensors.hpp>
#include <relpos/io/safetensors_writer.hpp>
#include <relpos/kv_cache.hpp>
#include <relpos/layer_norm.hpp>
#include <relpos/model.hpp>
#include <relpos/model_io.hpp>
#include <relpos/rotary_layout.hpp>
#include <relpos/threads.hpp>
#include <relpos/version.hpp>
#include <relpos/workspace.hpp>
