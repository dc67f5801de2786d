// SPDX-License-Identifier: MIT
// Reading and writing safetensors files (the Hugging Face format: 8-byte little-endian
// header length, JSON header, raw little-endian data), validated as spec §1 requires: the
// tensors' byte ranges tile the data section exactly, and every malformed input is a
// relpos::Error naming the file, the tensor and what is wrong.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <relpos/core.hpp>
#include <relpos/detail/mapped_file.hpp>
#include <relpos/detail/safetensors_header.hpp>
#include <relpos/io/dtype.hpp>

namespace relpos::detail::safetensors {

// F16 (IEEE binary16) and BF16 to float through Eigen's types: every value of either format is
// a float, so nothing rounds (tests/safetensors_test.cpp checks all 65536 patterns of each).
// The one thing added to Eigen: a signalling F16 NaN (0x7c01 ... 0x7dff, and negative) comes
// out of Eigen 3.4's software path still signalling (0x7c01 -> 0x7f802000), while the F16C
// path (_cvtsh_ss, which Eigen 3.4 takes only under clang with -mf16c/-march=x86-64-v3 and up)
// and PyTorch quiet it (0x7fc02000). Setting the quiet bit gives PyTorch's bits with every
// compiler and ISA; the payload is kept either way.
inline float f16_to_float(std::uint16_t bits) {
  const float f = static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(bits));
  if (!std::isnan(f)) return f;
  return std::bit_cast<float>(std::bit_cast<std::uint32_t>(f) | 0x00400000u);
}

// BF16 is the top half of a float's bit pattern: Eigen shifts it, NaNs bit for bit (as PyTorch).
inline float bf16_to_float(std::uint16_t bits) {
  return static_cast<float>(Eigen::numext::bit_cast<Eigen::bfloat16>(bits));
}

}  // namespace relpos::detail::safetensors

namespace relpos::io {

/// A tensor shape as the errors write it: "[2, 3]".
inline std::string shape_string(std::span<const std::int64_t> shape) {
  return relpos::detail::safetensors::shape_string(shape);
}

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<std::int64_t> shape;
  std::size_t begin, end;  // byte offsets in the data section, [begin, end)
  std::int64_t numel() const {
    return static_cast<std::int64_t>((end - begin) / dtype_size(dtype));
  }
};

/// A read-only safetensors file, memory-mapped, validated completely when opened.
/// Move-only; views from try_map() live as long as the file object.
class SafetensorsFile {
 public:
  /// Maps and validates the file; throws relpos::Error naming the file and the problem.
  /// As with any mapping, the file must not be truncated while it is open.
  static SafetensorsFile open(const std::string& path) {
    return SafetensorsFile(relpos::detail::MappedBytes::map_file(path), path);
  }
  /// The same from bytes in memory (tests, fuzzing, data received otherwise).
  static SafetensorsFile from_bytes(std::vector<unsigned char> bytes,
                                    std::string name = "<memory>") {
    return SafetensorsFile(relpos::detail::MappedBytes(std::move(bytes)), std::move(name));
  }

  const std::string& path() const { return path_; }

  /// Throws Error "<path>: tensor "<name>": <what>", the form of every error about this file,
  /// for the checks a loader makes beyond the reader's (model.hpp: tensors a config implies).
  [[noreturn]] void fail(std::string_view tensor, const std::string& what) const {
    relpos::detail::safetensors::fail(path_, tensor, what);
  }

  /// Tensor names, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& [name, ti] : tensors_) out.push_back(name);
    return out;
  }
  bool contains(std::string_view name) const { return tensors_.find(name) != tensors_.end(); }

  const TensorInfo& info(std::string_view name) const {
    const auto it = tensors_.find(name);
    if (it == tensors_.end()) {
      std::string have;
      std::size_t shown = 0;
      for (const auto& [n, ti] : tensors_) {
        if (shown++ == 8) {
          have += ", ...";
          break;
        }
        have += (have.empty() ? "" : ", ") + n;
      }
      relpos::detail::safetensors::fail(path_, name,
                                        "not in the file (it holds " +
                                            std::to_string(tensors_.size()) + " tensors" +
                                            (have.empty() ? "" : ": " + have) + ")");
    }
    return it->second;
  }

  /// The tensor's stored bytes (little-endian, as in the file), without copying.
  std::span<const unsigned char> raw(std::string_view name) const {
    const TensorInfo& ti = info(name);
    return {data_ + ti.begin, ti.end - ti.begin};
  }

  /// The header's "__metadata__" (empty when absent).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  /// The tensor's elements in row-major order, converted to T: float and double from
  /// F64/F32/F16/BF16; integer types from I64/I32/I16/I8/U8/BOOL (range-checked); bool from
  /// any integer dtype (non-zero = true). When `expected` is non-empty the shape must equal it.
  template <class T>
  std::vector<T> values(std::string_view name, std::span<const std::int64_t> expected = {}) const {
    static_assert(std::is_arithmetic_v<T>, "values<T>: T must be a floating-point or integer type");
    const TensorInfo& ti = info(name);
    if (!expected.empty()) check_shape(ti, expected);
    if constexpr (std::is_same_v<T, bool>) {  // std::vector<bool> has no data()
      const std::unique_ptr<bool[]> tmp(new bool[static_cast<std::size_t>(ti.numel())]);
      convert_into(ti, tmp.get());
      return std::vector<bool>(tmp.get(), tmp.get() + ti.numel());
    } else {
      std::vector<T> out(static_cast<std::size_t>(ti.numel()));
      convert_into(ti, out.data());
      return out;
    }
  }

  /// The same with the shape written in place: values<float>("x", {2, 3}) (a braced list
  /// does not convert to std::span before C++26).
  template <class T>
  std::vector<T> values(std::string_view name, std::initializer_list<std::int64_t> expected) const {
    return values<T>(name, std::span<const std::int64_t>(expected.begin(), expected.size()));
  }

  /// A 2-D tensor [rows, cols] as a row-major matrix.
  template <class T>
  Matrix<T> matrix(std::string_view name, Index rows, Index cols) const {
    const std::array<std::int64_t, 2> want = {rows, cols};
    const TensorInfo& ti = info(name);
    check_shape(ti, want);
    Matrix<T> m(rows, cols);
    convert_into(ti, m.data());
    return m;
  }
  /// A 2-D tensor of any size.
  template <class T>
  Matrix<T> matrix(std::string_view name) const {
    const TensorInfo& ti = info(name);
    check_rank(ti, 2);
    return matrix<T>(name, ti.shape[0], ti.shape[1]);
  }

  /// A 1-D tensor [n].
  template <class T>
  Vector<T> vector(std::string_view name, Index n) const {
    const std::array<std::int64_t, 1> want = {n};
    const TensorInfo& ti = info(name);
    check_shape(ti, want);
    Vector<T> v(n);
    convert_into(ti, v.data());
    return v;
  }
  /// A 1-D tensor of any size.
  template <class T>
  Vector<T> vector(std::string_view name) const {
    const TensorInfo& ti = info(name);
    check_rank(ti, 1);
    return vector<T>(name, ti.shape[0]);
  }

  /// A 3-D tensor of any size, e.g. a batch [batch, len, d].
  template <class T>
  Tensor3<T> tensor3(std::string_view name) const {
    const TensorInfo& ti = info(name);
    check_rank(ti, 3);
    // only an empty tensor's dims can overflow ([2^62, 4, 0]); Eigen would multiply them
    Index size = 0;
    if (__builtin_mul_overflow(ti.shape[0], ti.shape[1], &size)) {
      relpos::detail::safetensors::fail(
          path_, ti.name,
          "shape " + relpos::detail::safetensors::shape_string(ti.shape) +
              " is empty, but its dimensions' product overflows 64 bits");
    }
    Tensor3<T> t(ti.shape[0], ti.shape[1], ti.shape[2]);
    convert_into(ti, t.data());
    return t;
  }

  /// A view of the stored data without copying, when the dtype is exactly T's (dtype_of<T>)
  /// and the data is aligned for T; std::nullopt otherwise. Shape: [r, c] -> (r, c);
  /// [n] -> (n, 1); [] -> (1, 1); [a, ..., z] -> (a·...·y, z), rows staying contiguous.
  template <class T>
  std::optional<ConstMatrixMap<T>> try_map(std::string_view name) const {
    static_assert(!std::is_same_v<T, bool>,
                  "try_map<bool>: a byte is not a valid bool; use values");
    const TensorInfo& ti = info(name);
    if (ti.dtype != dtype_of<T>() || std::endian::native != std::endian::little) return {};
    const unsigned char* p = data_ + ti.begin;
    if (reinterpret_cast<std::uintptr_t>(p) % alignof(T) != 0) return {};
    Index rows = 1, cols = 1;
    if (ti.shape.size() == 1) {
      rows = ti.shape[0];
    } else if (ti.shape.size() >= 2) {
      cols = ti.shape.back();
      for (std::size_t i = 0; i + 1 < ti.shape.size(); ++i) {
        // only an empty tensor's dims can overflow ([2^40, 2^40, 0]): its view is empty
        if (__builtin_mul_overflow(rows, ti.shape[i], &rows)) rows = 0;
      }
    }
    return ConstMatrixMap<T>(reinterpret_cast<const T*>(p), rows, cols);
  }

 private:
  // Header lengths above this are refused, as the reference reader does (100 MB).
  static constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

  SafetensorsFile(relpos::detail::MappedBytes bytes, std::string path)
      : bytes_(std::move(bytes)), path_(std::move(path)) {
    namespace st = relpos::detail::safetensors;
    const std::uint64_t size = bytes_.size();
    if (size < 8) {
      st::fail(
          path_, "",
          "file has " + std::to_string(size) + " bytes, too short for the 8-byte header length");
    }
    const auto n = st::load_le<std::uint64_t>(bytes_.data());
    if (n > size - 8) {  // never 8 + n: n may be near 2^64
      st::fail(path_, "",
               "header length " + std::to_string(n) + " exceeds the " + std::to_string(size - 8) +
                   " bytes that follow it");
    }
    if (n > kMaxHeaderBytes) {
      st::fail(path_, "",
               "header length " + std::to_string(n) + " exceeds the limit of " +
                   std::to_string(kMaxHeaderBytes) + " bytes");
    }
    st::RawHeader raw = st::parse_header(
        std::string_view(reinterpret_cast<const char*>(bytes_.data() + 8), n), path_);
    metadata_ = std::move(raw.metadata);
    data_ = bytes_.data() + 8 + n;
    const std::uint64_t data_size = size - 8 - n;

    for (st::RawEntry& e : raw.entries) {
      const std::optional<DType> dtype = parse_dtype(e.dtype);
      if (!dtype) {
        st::fail(path_, e.name,
                 "unknown dtype \"" + e.dtype +
                     "\" (relpos reads F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)");
      }
      const std::string what = std::string(dtype_name(*dtype)) + " " + st::shape_string(e.shape);
      std::uint64_t count = 1;
      if (std::find(e.shape.begin(), e.shape.end(), 0) != e.shape.end()) {
        count = 0;
      } else {
        for (const std::int64_t d : e.shape) {
          if (__builtin_mul_overflow(count, static_cast<std::uint64_t>(d), &count)) {
            st::fail(
                path_, e.name,
                "shape " + st::shape_string(e.shape) + " has more elements than fit in 64 bits");
          }
        }
      }
      std::uint64_t nbytes = 0;
      if (__builtin_mul_overflow(count, dtype_size(*dtype), &nbytes)) {
        st::fail(path_, e.name, "the byte size of " + what + " overflows 64 bits");
      }
      const std::string range =
          "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "]";
      if (e.begin > e.end) st::fail(path_, e.name, range + " are reversed");
      if (e.end > data_size) {
        st::fail(
            path_, e.name,
            range + " lie outside the data section of " + std::to_string(data_size) + " bytes");
      }
      if (e.end - e.begin != nbytes) {
        st::fail(path_, e.name,
                 range + " hold " + std::to_string(e.end - e.begin) + " bytes, but " + what +
                     " needs " + std::to_string(nbytes));
      }
      std::string name = e.name;
      tensors_.emplace(std::move(name),
                       TensorInfo{std::move(e.name), *dtype, std::move(e.shape), e.begin, e.end});
    }

    // The byte ranges, sorted by offset, must tile the data section: no hole, no overlap,
    // no trailing bytes (spec §1, as the reference reader requires).
    std::vector<const TensorInfo*> order;
    for (const auto& [name, ti] : tensors_) order.push_back(&ti);
    std::sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) {
      return std::tie(a->begin, a->end, a->name) < std::tie(b->begin, b->end, b->name);
    });
    std::uint64_t pos = 0;
    const TensorInfo* prev = nullptr;
    for (const TensorInfo* ti : order) {
      if (ti->begin > pos) {
        st::fail(path_, ti->name,
                 "bytes [" + std::to_string(pos) + ", " + std::to_string(ti->begin) +
                     ") of the data section before it belong to no tensor (a hole)");
      }
      if (ti->begin < pos) {
        st::fail(path_, ti->name,
                 "data_offsets [" + std::to_string(ti->begin) + ", " + std::to_string(ti->end) +
                     "] overlap tensor \"" + prev->name + "\" [" + std::to_string(prev->begin) +
                     ", " + std::to_string(prev->end) + "]");
      }
      pos = ti->end;
      prev = ti;
    }
    if (pos != data_size) {
      st::fail(path_, "",
               "trailing bytes: [" + std::to_string(pos) + ", " + std::to_string(data_size) +
                   ") of the data section belong to no tensor");
    }
  }

  void check_shape(const TensorInfo& ti, std::span<const std::int64_t> expected) const {
    namespace st = relpos::detail::safetensors;
    if (!std::equal(expected.begin(), expected.end(), ti.shape.begin(), ti.shape.end())) {
      st::fail(path_, ti.name,
               "expected " + st::shape_string(expected) + ", got " + st::shape_string(ti.shape));
    }
  }
  void check_rank(const TensorInfo& ti, std::size_t rank) const {
    namespace st = relpos::detail::safetensors;
    if (ti.shape.size() != rank) {
      st::fail(
          path_, ti.name,
          "expected a " + std::to_string(rank) + "-D tensor, got " + st::shape_string(ti.shape));
    }
  }

  template <class T>
  void convert_into(const TensorInfo& ti, T* dst) const {
    namespace st = relpos::detail::safetensors;
    const unsigned char* p = data_ + ti.begin;
    const auto n = static_cast<std::size_t>(ti.numel());
    if constexpr (std::is_floating_point_v<T>) {
      switch (ti.dtype) {
        case DType::F64:
          for (std::size_t i = 0; i < n; ++i)
            dst[i] = static_cast<T>(st::load_le<double>(p + 8 * i));
          return;
        case DType::F32:
          for (std::size_t i = 0; i < n; ++i)
            dst[i] = static_cast<T>(st::load_le<float>(p + 4 * i));
          return;
        case DType::F16:
          for (std::size_t i = 0; i < n; ++i) {
            dst[i] = static_cast<T>(st::f16_to_float(st::load_le<std::uint16_t>(p + 2 * i)));
          }
          return;
        case DType::BF16:
          for (std::size_t i = 0; i < n; ++i) {
            dst[i] = static_cast<T>(st::bf16_to_float(st::load_le<std::uint16_t>(p + 2 * i)));
          }
          return;
        default:
          st::fail(
              path_, ti.name,
              "dtype " + std::string(dtype_name(ti.dtype)) +
                  " holds integers, but floating-point values (F64, F32, F16, BF16) are expected");
      }
    } else {
      switch (ti.dtype) {
        case DType::I64:
          return convert_ints<std::int64_t>(ti, p, n, dst);
        case DType::I32:
          return convert_ints<std::int32_t>(ti, p, n, dst);
        case DType::I16:
          return convert_ints<std::int16_t>(ti, p, n, dst);
        case DType::I8:
          return convert_ints<std::int8_t>(ti, p, n, dst);
        case DType::U8:
          return convert_ints<std::uint8_t>(ti, p, n, dst);
        case DType::BOOL:
          return convert_ints<std::uint8_t>(ti, p, n, dst);
        default:
          st::fail(path_, ti.name,
                   "dtype " + std::string(dtype_name(ti.dtype)) +
                       " holds floating-point values, but integers (I64, I32, I16, I8, U8, BOOL) "
                       "are expected");
      }
    }
  }

  template <class U, class T>
  void convert_ints(const TensorInfo& ti, const unsigned char* p, std::size_t n, T* dst) const {
    namespace st = relpos::detail::safetensors;
    for (std::size_t i = 0; i < n; ++i) {
      const U v = st::load_le<U>(p + sizeof(U) * i);
      if (ti.dtype == DType::BOOL && v > 1) {
        st::fail(path_, ti.name,
                 "BOOL element " + std::to_string(i) + " holds byte " + std::to_string(v) +
                     ", not 0 or 1");
      }
      if constexpr (std::is_same_v<T, bool>) {
        dst[i] = v != 0;
      } else {
        if (!std::in_range<T>(v)) {
          st::fail(path_, ti.name,
                   "element " + std::to_string(i) + " = " + std::to_string(v) +
                       " does not fit in " + (std::is_signed_v<T> ? "int" : "uint") +
                       std::to_string(8 * sizeof(T)));
        }
        dst[i] = static_cast<T>(v);
      }
    }
  }

  relpos::detail::MappedBytes bytes_;
  std::string path_;
  const unsigned char* data_ = nullptr;  // the data section, inside bytes_
  std::map<std::string, TensorInfo, std::less<>> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace relpos::io
