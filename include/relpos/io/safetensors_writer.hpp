// SPDX-License-Identifier: MIT
// Writing safetensors files as the reference writer lays them out (spec §1): tensors
// contiguous, tiling the data section, the data 8-byte aligned; written atomically.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <map>
#include <span>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <relpos/core.hpp>
#include <relpos/detail/safetensors_header.hpp>
#include <relpos/io/dtype.hpp>

namespace relpos::io {

/// Builds a safetensors file in memory: tensors are laid out as the reference writer does
/// (largest element size first, then by name), contiguous, and the header is padded with
/// spaces so the data section starts at a multiple of 8; every tensor is then aligned.
class SafetensorsWriter {
 public:
  void set_metadata(std::string key, std::string value) {
    metadata_[std::move(key)] = std::move(value);
  }

  /// Adds raw little-endian bytes (copied); their size must match dtype and shape.
  void add(std::string name, DType dtype, std::vector<std::int64_t> shape,
           std::span<const unsigned char> bytes) {
    namespace st = relpos::detail::safetensors;
    if (name == "__metadata__") st::fail("safetensors writer", name, "reserved name");
    if (entries_.count(name) != 0) st::fail("safetensors writer", name, "added twice");
    std::uint64_t count = 1;
    for (const std::int64_t d : shape) {
      if (d < 0 || __builtin_mul_overflow(count, static_cast<std::uint64_t>(d), &count)) {
        st::fail("safetensors writer", name, "invalid shape " + st::shape_string(shape));
      }
    }
    std::uint64_t nbytes = 0;
    if (__builtin_mul_overflow(count, dtype_size(dtype), &nbytes) || nbytes != bytes.size()) {
      st::fail("safetensors writer", name,
               std::to_string(bytes.size()) + " bytes given, but " +
                   std::string(dtype_name(dtype)) + " " + st::shape_string(shape) + " needs " +
                   std::to_string(count) + " elements of " + std::to_string(dtype_size(dtype)));
    }
    entries_.emplace(
        std::move(name),
        Entry{dtype, std::move(shape), std::vector<unsigned char>(bytes.begin(), bytes.end())});
  }

  /// Adds row-major elements of a C++ type with a dtype (float, double, Eigen::half,
  /// Eigen::bfloat16, int64/32/16/8, uint8, bool), stored as dtype_of<T>(). To store F16 or
  /// BF16, convert with Eigen (`m.cast<Eigen::half>()`): it rounds float to nearest even, as
  /// PyTorch's `.to(torch.float16)` does (tests/safetensors_test.cpp).
  template <class T>
  void add(std::string name, std::span<const T> values, std::vector<std::int64_t> shape) {
    std::vector<unsigned char> bytes(values.size() * sizeof(T));
    for (std::size_t i = 0; i < values.size(); ++i) put(values[i], bytes.data() + i * sizeof(T));
    add(std::move(name), dtype_of<T>(), std::move(shape), bytes);
  }
  template <class T>
  void add(std::string name, const std::vector<T>& values, std::vector<std::int64_t> shape) {
    add(std::move(name), std::span<const T>(values.data(), values.size()), std::move(shape));
  }

  /// An Eigen matrix or array as [rows, cols]; a compile-time vector as [n]. An explicit
  /// shape may be given instead, over the elements in row-major order.
  template <class Derived>
  void add(std::string name, const Eigen::DenseBase<Derived>& m,
           std::vector<std::int64_t> shape = {}) {
    using T = typename Derived::Scalar;
    if (shape.empty()) {
      if (Derived::IsVectorAtCompileTime) {
        shape = {static_cast<std::int64_t>(m.size())};
      } else {
        shape = {static_cast<std::int64_t>(m.rows()), static_cast<std::int64_t>(m.cols())};
      }
    }
    std::vector<unsigned char> bytes(static_cast<std::size_t>(m.size()) * sizeof(T));
    unsigned char* p = bytes.data();
    for (Index r = 0; r < m.rows(); ++r) {
      for (Index c = 0; c < m.cols(); ++c, p += sizeof(T)) put<T>(m.derived().coeff(r, c), p);
    }
    add(std::move(name), dtype_of<T>(), std::move(shape), bytes);
  }

  /// A [d0, d1, d2] tensor (row-major, as stored).
  template <class T>
  void add(std::string name, const Tensor3<T>& t) {
    add(std::move(name), std::span<const T>(t.data(), static_cast<std::size_t>(t.size())),
        {t.dimension(0), t.dimension(1), t.dimension(2)});
  }

  std::vector<unsigned char> bytes() const {
    namespace st = relpos::detail::safetensors;
    std::vector<const std::pair<const std::string, Entry>*> order;
    for (const auto& e : entries_) order.push_back(&e);
    // largest element first, then by name: each tensor starts aligned for its type
    std::stable_sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
      return dtype_size(a->second.dtype) > dtype_size(b->second.dtype);
    });
    nlohmann::json header = nlohmann::json::object();
    if (!metadata_.empty()) header["__metadata__"] = metadata_;
    std::uint64_t offset = 0;
    for (const auto* e : order) {
      const std::uint64_t end = offset + e->second.bytes.size();
      header[e->first] = {{"dtype", dtype_name(e->second.dtype)},
                          {"shape", e->second.shape},
                          {"data_offsets", {offset, end}}};
      offset = end;
    }
    std::string text;
    try {
      text = header.dump();
    } catch (const nlohmann::json::exception& e) {
      st::fail("safetensors writer", "", std::string("cannot encode the header: ") + e.what());
    }
    text.append((8 - text.size() % 8) % 8, ' ');  // 8 + N is then a multiple of 8
    std::vector<unsigned char> out(8 + text.size());
    st::store_le<std::uint64_t>(text.size(), out.data());
    std::memcpy(out.data() + 8, text.data(), text.size());
    out.reserve(out.size() + offset);
    for (const auto* e : order)
      out.insert(out.end(), e->second.bytes.begin(), e->second.bytes.end());
    return out;
  }

  /// Writes atomically: a temporary file beside `path`, then rename, so a failure never
  /// leaves a partial file at `path`.
  void write(const std::string& path) const {
    const std::vector<unsigned char> data = bytes();
    std::string tmp = path + ".tmp-XXXXXX";
    const int fd = ::mkstemp(tmp.data());
    if (fd < 0)
      throw Error(path +
                  ": cannot create a temporary file: " + std::generic_category().message(errno));
    auto fail = [&](const char* step) {
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw Error(path + ": cannot " + step + ": " + std::generic_category().message(err));
    };
    std::size_t done = 0;
    while (done < data.size()) {
      const ssize_t w = ::write(fd, data.data() + done, data.size() - done);
      if (w < 0) {
        if (errno == EINTR) continue;
        fail("write");
      }
      done += static_cast<std::size_t>(w);
    }
    if (::fchmod(fd, 0644) != 0) fail("set permissions");
    if (::fsync(fd) != 0) fail("sync");
    if (::close(fd) != 0) {
      const int err = errno;
      ::unlink(tmp.c_str());
      throw Error(path + ": cannot close: " + std::generic_category().message(err));
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
      const int err = errno;
      ::unlink(tmp.c_str());
      throw Error(path + ": cannot rename into place: " + std::generic_category().message(err));
    }
  }

 private:
  template <class T>
  static void put(T v, unsigned char* p) {
    if constexpr (std::is_same_v<T, bool>) {
      static_assert(sizeof(bool) == 1, "BOOL is one byte");
      *p = v ? 1 : 0;
    } else {
      relpos::detail::safetensors::store_le<T>(v, p);
    }
  }

  struct Entry {
    DType dtype;
    std::vector<std::int64_t> shape;
    std::vector<unsigned char> bytes;  // little-endian
  };
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace relpos::io
