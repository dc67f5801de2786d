// SPDX-License-Identifier: MIT
// Replaces the global operator new / delete with versions that count every allocation, so a
// test can check that a warm forward allocates nothing. Linked once into every test executable
// (tests/CMakeLists.txt); tests read the count through counting_new.hpp.
#include <atomic>
#include <cstddef>
#include <new>

#include "support/counting_new.hpp"

namespace relpos::test {
std::atomic<long> g_allocations{0};
}  // namespace relpos::test

// glibc's own entry points: GCC does not know them as malloc/free, so it does not flag the
// pairing of operator new with free() at inlined call sites (-Wmismatched-new-delete).
extern "C" void* __libc_malloc(std::size_t);
extern "C" void __libc_free(void*);
void* operator new(std::size_t n) {
  relpos::test::g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = __libc_malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  __libc_free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  __libc_free(p);
}
