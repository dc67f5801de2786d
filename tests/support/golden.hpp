// SPDX-License-Identifier: MIT
// Test helpers shared by every test file: opening committed golden data (safetensors
// written by tools/*.py from PyTorch in float64) and comparing results element-wise,
// reporting the worst element so a failure says where and by how much.
#pragma once

#include <cmath>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <limits>
#include <sstream>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

#include <relpos/core.hpp>
#include <relpos/io/safetensors.hpp>

#ifndef RELPOS_TEST_DATA_DIR
#error "RELPOS_TEST_DATA_DIR must be defined (tests/CMakeLists.txt does it)"
#endif

namespace relpos::test {

/// A whole text file (a config.json, a program's output), "" when it cannot be read.
inline std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

/// The committed golden file tests/data/<relative>.
inline io::SafetensorsFile golden_file(std::string_view relative) {
  // appended in place: GCC 12 misreads the inlined temporaries of string + "/" + string at -O1
  // as an out-of-bounds memcpy (-Warray-bounds, in char_traits.h)
  std::string path(RELPOS_TEST_DATA_DIR);
  path += '/';
  path += relative;
  return io::SafetensorsFile::open(path);
}

namespace detail {

// Walks (actual, expected) pairs and remembers the element that exceeds its allowed error
// |a - e| <= atol + rtol * |e| by the most. NaN passes only against NaN; inf only against
// the same inf.
struct CloseScan {
  double atol, rtol;
  std::ptrdiff_t failures = 0;
  double max_abs_err = 0;
  double worst_excess = -std::numeric_limits<double>::infinity();
  double worst_actual = 0, worst_expected = 0;
  bool worst_set = false;

  // Returns true when this element became the worst one.
  bool add(double a, double e) {
    double excess;
    if (std::isnan(a) || std::isnan(e)) {
      excess = (std::isnan(a) && std::isnan(e)) ? -1 : std::numeric_limits<double>::infinity();
    } else if (std::isinf(a) || std::isinf(e)) {
      excess = (a == e) ? -1 : std::numeric_limits<double>::infinity();
    } else {
      const double err = std::abs(a - e);
      max_abs_err = std::max(max_abs_err, err);
      excess = err - (atol + rtol * std::abs(e));
    }
    if (excess > 0) ++failures;
    if (!worst_set || excess > worst_excess) {
      worst_set = true;
      worst_excess = excess;
      worst_actual = a;
      worst_expected = e;
      return true;
    }
    return false;
  }

  ::testing::AssertionResult result(std::ptrdiff_t total, const std::string& where) const {
    if (failures == 0) return ::testing::AssertionSuccess();
    std::ostringstream out;
    out << failures << " of " << total << " elements differ (atol " << atol << ", rtol " << rtol
        << "); worst at " << where << std::setprecision(12) << ": actual " << worst_actual
        << ", expected " << worst_expected << "; max abs error " << max_abs_err;
    return ::testing::AssertionFailure() << out.str();
  }
};

}  // namespace detail

/// Element-wise |actual - expected| <= atol + rtol * |expected|, over matrices, vectors or
/// arrays of any scalar types (compared in double).
template <class A, class B>
::testing::AssertionResult all_close(const Eigen::DenseBase<A>& actual,
                                     const Eigen::DenseBase<B>& expected, double atol,
                                     double rtol = 0) {
  if (actual.rows() != expected.rows() || actual.cols() != expected.cols()) {
    return ::testing::AssertionFailure()
           << "shape mismatch: actual (" << actual.rows() << ", " << actual.cols()
           << "), expected (" << expected.rows() << ", " << expected.cols() << ")";
  }
  // An expression (a product) is evaluated once: coeff() of a product asserts in Eigen's debug
  // builds. eval() of a plain matrix is the matrix itself, not a copy.
  const auto& a = actual.derived().eval();
  const auto& e = expected.derived().eval();
  detail::CloseScan scan{atol, rtol};
  Index wr = 0, wc = 0;
  for (Index r = 0; r < actual.rows(); ++r) {
    for (Index c = 0; c < actual.cols(); ++c) {
      if (scan.add(static_cast<double>(a.coeff(r, c)), static_cast<double>(e.coeff(r, c)))) {
        wr = r;
        wc = c;
      }
    }
  }
  return scan.result(actual.size(), "(" + std::to_string(wr) + ", " + std::to_string(wc) + ")");
}

/// The same over [batch, len, d] tensors; the worst element is reported as (b, i, j).
template <class T, class U>
::testing::AssertionResult all_close(const Tensor3<T>& actual, const Tensor3<U>& expected,
                                     double atol, double rtol = 0) {
  if (actual.dimensions() != expected.dimensions()) {
    return ::testing::AssertionFailure()
           << "shape mismatch: actual [" << actual.dimension(0) << ", " << actual.dimension(1)
           << ", " << actual.dimension(2) << "], expected [" << expected.dimension(0) << ", "
           << expected.dimension(1) << ", " << expected.dimension(2) << "]";
  }
  detail::CloseScan scan{atol, rtol};
  Index wb = 0, wi = 0, wj = 0;
  for (Index b = 0; b < actual.dimension(0); ++b) {
    for (Index i = 0; i < actual.dimension(1); ++i) {
      for (Index j = 0; j < actual.dimension(2); ++j) {
        if (scan.add(static_cast<double>(actual(b, i, j)),
                     static_cast<double>(expected(b, i, j)))) {
          wb = b;
          wi = i;
          wj = j;
        }
      }
    }
  }
  return scan.result(actual.size(), "(" + std::to_string(wb) + ", " + std::to_string(wi) + ", " +
                                        std::to_string(wj) + ")");
}

}  // namespace relpos::test
