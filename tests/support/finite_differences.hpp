// SPDX-License-Identifier: MIT
// Central finite differences in double, the gradient tests' independent reference:
// ∂L/∂θ ≈ (L(θ + h) − L(θ − h)) / 2h for every element of a parameter, h = 1e-6 (truncation
// O(h²) ~ 1e-12, rounding ~ 1e-16·|L|/h ~ 1e-9), so 1e-7 absolute + 1e-6 relative.
#pragma once

#include <functional>
#include <string>

#include <gtest/gtest.h>

#include <relpos/core.hpp>

#include "support/golden.hpp"

namespace relpos::test {

template <class M>
::testing::AssertionResult matches_finite_differences(M& param, const M& analytic,
                                                      const std::function<double()>& loss,
                                                      const std::string& what) {
  const double h = 1e-6;
  M numeric(param.rows(), param.cols());
  for (Index k = 0; k < param.size(); ++k) {
    const double keep = param.data()[k];
    param.data()[k] = keep + h;
    const double up = loss();
    param.data()[k] = keep - h;
    const double down = loss();
    param.data()[k] = keep;
    numeric.data()[k] = (up - down) / (2 * h);
  }
  auto r = all_close(analytic, numeric, 1e-7, 1e-6);
  if (!r) r << " (" << what << ")";
  return r;
}

}  // namespace relpos::test
