// SPDX-License-Identifier: MIT
// What a module's load() asks of a weights file: a named tensor, checked against the shape
// the module expects. A concept rather than io::SafetensorsFile keeps the compute headers
// free of file I/O (mmap, JSON); the safetensors reader models it, and so can any other
// source of named tensors (a converted checkpoint, a test's map).
#pragma once

#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <relpos/core.hpp>

namespace relpos {

/// `source.matrix<T>(name, rows, cols)` and `source.vector<T>(name, n)` give the tensor
/// `name` with exactly that shape, or throw Error naming the tensor and both shapes.
template <class Source, class T>
concept TensorSource = requires(const Source& source, std::string_view name, Index n) {
  { source.template matrix<T>(name, n, n) } -> std::convertible_to<Matrix<T>>;
  { source.template vector<T>(name, n) } -> std::convertible_to<Vector<T>>;
};

/// A tensor a model file must hold: its name and shape (PyTorch layout, [out, in]).
struct TensorSpec {
  std::string name;
  std::vector<std::int64_t> shape;
  bool operator==(const TensorSpec&) const = default;
};

}  // namespace relpos
