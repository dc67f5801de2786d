// SPDX-License-Identifier: MIT
// Random weights for tests that build layers in code: normal draws from a seeded generator,
// computed in double and cast, so float and double runs see the same numbers up to rounding.
#pragma once

#include <random>

#include <relpos/core.hpp>

namespace relpos::test {

/// Every element of m from N(0, scale²), in storage order.
template <class M>
void fill_normal(M& m, std::mt19937_64& gen, double scale) {
  std::normal_distribution<double> n(0.0, scale);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<typename M::Scalar>(n(gen));
}

}  // namespace relpos::test
