// SPDX-License-Identifier: MIT
// The count of global operator new calls, so a test can check that a warm forward allocates
// nothing. The counting operators themselves are defined once, in counting_new.cpp, which
// tests/CMakeLists.txt links into every test executable.
#pragma once

#include <atomic>

namespace relpos::test {
/// operator new calls since the process started (all threads).
extern std::atomic<long> g_allocations;
}  // namespace relpos::test
