// SPDX-License-Identifier: MIT
// The check most error tests make: f throws relpos::Error whose message contains `needle`
// (a key, a tensor name, a shape), so a test states what the message must name.
#pragma once

#include <functional>
#include <string>

#include <gtest/gtest.h>

#include <relpos/core.hpp>

namespace relpos::test {

inline void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no relpos::Error; expected one containing \"" << needle << "\"";
  } catch (const relpos::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message: " << e.what() << "\nexpected to contain: " << needle;
  }
}

}  // namespace relpos::test
