// SPDX-License-Identifier: MIT
// The umbrella header of relpos: includes every public header, holds no code. The encodings
// come with their list, io/position_config.hpp.
#pragma once

#include <relpos/attention.hpp>
#include <relpos/attention_grad.hpp>
#include <relpos/backward_workspace.hpp>
#include <relpos/block.hpp>
#include <relpos/block_grad.hpp>
#include <relpos/core.hpp>
#include <relpos/distance_table.hpp>
#include <relpos/embedding_grad.hpp>
#include <relpos/encoder.hpp>
#include <relpos/encoder_grad.hpp>
#include <relpos/encodings/concept.hpp>
#include <relpos/encodings/rotary_scaling.hpp>
#include <relpos/feed_forward.hpp>
#include <relpos/feed_forward_grad.hpp>
#include <relpos/io/config.hpp>
#include <relpos/io/config_limits.hpp>
#include <relpos/io/dtype.hpp>
#include <relpos/io/optimizer_state.hpp>
#include <relpos/io/position_config.hpp>
#include <relpos/io/rotary_scaling_config.hpp>
#include <relpos/io/safetensors.hpp>
#include <relpos/io/safetensors_writer.hpp>
#include <relpos/kv_cache.hpp>
#include <relpos/layer_norm.hpp>
#include <relpos/layer_norm_grad.hpp>
#include <relpos/loss.hpp>
#include <relpos/model.hpp>
#include <relpos/model_io.hpp>
#include <relpos/norm.hpp>
#include <relpos/norm_grad.hpp>
#include <relpos/optimizer.hpp>
#include <relpos/output_head_grad.hpp>
#include <relpos/rms_norm.hpp>
#include <relpos/rms_norm_grad.hpp>
#include <relpos/rotary_layout.hpp>
#include <relpos/threads.hpp>
#include <relpos/training.hpp>
#include <relpos/version.hpp>
#include <relpos/workspace.hpp>
