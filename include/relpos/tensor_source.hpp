// SPDX-License-Identifier: MIT
// What a module's load() asks of a weights file: a named tensor, checked against the shape
// the module expects. A concept rather than io::SafetensorsFile keeps the compute headers
// free of file I/O (mmap, JSON); the safetensors reader models it, and so can any other
// source of named tensors (a converted checkpoint, a test's map).
#pragma once

#include <algorithm>
#include <charconv>
#include <concepts>
#include <cstdint>
#include <initializer_list>
#include <span>
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

/// One tensor of a model file: its name and shape (spec §1, PyTorch layout) and its elements
/// in row-major order, as the file stores them.
template <Scalar T>
struct NamedTensor {
  std::string name;
  std::vector<std::int64_t> shape;
  Vector<T> values;  // (product of shape)
};

/// A tensor's model-file name in two parts: "layers.{layer}." when layer >= 0, then `path`
/// (e.g. "self_attn.in_proj_weight"). A walk over a model's weights names each tensor so, and
/// compares it with a name without building a string (a warm training step allocates nothing).
struct TensorName {
  Index layer = -1;
  std::string_view path;

  std::string str() const {
    return layer < 0 ? std::string(path)
                     : "layers." + std::to_string(layer) + "." + std::string(path);
  }
  bool operator==(std::string_view name) const {
    if (layer < 0) return name == path;
    constexpr std::string_view kLayers = "layers.";
    if (!name.starts_with(kLayers)) return false;
    name.remove_prefix(kLayers.size());
    char digits[24];
    const auto end = std::to_chars(digits, digits + sizeof digits, layer).ptr;
    const std::string_view n(digits, static_cast<std::size_t>(end - digits));
    if (!name.starts_with(n)) return false;
    name.remove_prefix(n.size());
    return name.starts_with('.') && name.substr(1) == path;
  }
};

namespace detail {
/// A TensorSource over tensors in memory (TrainableModel's parameters): each by name, with the
/// shape asked for, else Error naming it.
template <Scalar T>
class NamedTensors {
 public:
  explicit NamedTensors(std::span<const NamedTensor<T>> tensors) : tensors_(tensors) {}

  const NamedTensor<T>& at(std::string_view name) const {
    for (const NamedTensor<T>& t : tensors_) {
      if (t.name == name) return t;
    }
    throw Error(std::string(name) + ": missing");
  }
  /// The tensor of `name` with exactly `shape`, found without building a string (what an
  /// encoding's in-place update reads: a warm training step allocates nothing), else Error
  /// naming it and both shapes.
  const NamedTensor<T>& at(const TensorName& name,
                           std::initializer_list<std::int64_t> shape) const {
    for (const NamedTensor<T>& t : tensors_) {
      if (name == t.name) {
        if (!std::ranges::equal(t.shape, shape) || t.values.size() != count(shape))
          mismatch(name.str(), std::vector<std::int64_t>(shape), t);
        return t;
      }
    }
    throw Error(name.str() + ": missing");
  }
  template <class U>
  Matrix<U> matrix(std::string_view name, Index rows, Index cols) const {
    const NamedTensor<T>& t = checked(name, {rows, cols});
    return Eigen::Map<const Matrix<T>>(t.values.data(), rows, cols).template cast<U>();
  }
  template <class U>
  Vector<U> vector(std::string_view name, Index n) const {
    return checked(name, {n}).values.template cast<U>();
  }

 private:
  const NamedTensor<T>& checked(std::string_view name, std::vector<std::int64_t> shape) const {
    const NamedTensor<T>& t = at(name);
    if (t.shape != shape || t.values.size() != count(shape)) mismatch(std::string(name), shape, t);
    return t;
  }
  template <class Shape>
  static std::int64_t count(const Shape& shape) {
    std::int64_t n = 1;
    for (const std::int64_t s : shape) n *= s;
    return n;
  }
  [[noreturn]] static void mismatch(const std::string& name, const std::vector<std::int64_t>& shape,
                                    const NamedTensor<T>& t) {
    const auto str = [](const std::vector<std::int64_t>& s) {
      std::string out = "[";
      for (std::size_t k = 0; k < s.size(); ++k) out += (k ? ", " : "") + std::to_string(s[k]);
      return out + "]";
    };
    throw Error(name + ": expected " + str(shape) + ", got " + str(t.shape) + " with " +
                std::to_string(t.values.size()) + " values");
  }

  std::span<const NamedTensor<T>> tensors_;
};
}  // namespace detail

}  // namespace relpos
