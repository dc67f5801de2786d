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

// Under AddressSanitizer the counting operators allocate through malloc/free, which ASan
// intercepts: its runtime then owns every block, whichever operator frees it (with glibc's
// __libc_malloc, a block that a library allocated through ASan and freed through this
// operator delete reached glibc's free and aborted the process).
// Otherwise glibc's own entry points: GCC does not know them as malloc/free, so it does not
// flag the pairing of operator new with free() at inlined call sites (-Wmismatched-new-delete).
#if defined(__SANITIZE_ADDRESS__)
#define RELPOS_TEST_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RELPOS_TEST_UNDER_ASAN 1
#endif
#endif

#ifdef RELPOS_TEST_UNDER_ASAN
#include <cstdlib>
namespace {
void* raw_allocate(std::size_t n) {
  return std::malloc(n);
}
void raw_free(void* p) {
  std::free(p);
}
}  // namespace
#else
extern "C" void* __libc_malloc(std::size_t);
extern "C" void __libc_free(void*);
namespace {
void* raw_allocate(std::size_t n) {
  return __libc_malloc(n);
}
void raw_free(void* p) {
  __libc_free(p);
}
}  // namespace
#endif

// Every form that allocates through the replaceable operator new is replaced, nothrow and
// array forms included: a library call such as std::stable_sort's temporary buffer uses the
// nothrow form, and a form left to the runtime would hand its block to our delete.
void* operator new(std::size_t n) {
  relpos::test::g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = raw_allocate(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  relpos::test::g_allocations.fetch_add(1, std::memory_order_relaxed);
  return raw_allocate(n == 0 ? 1 : n);
}
void* operator new[](std::size_t n) {
  return operator new(n);
}
void* operator new[](std::size_t n, const std::nothrow_t& tag) noexcept {
  return operator new(n, tag);
}
void operator delete(void* p) noexcept {
  raw_free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  raw_free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
  raw_free(p);
}
void operator delete[](void* p) noexcept {
  raw_free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  raw_free(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  raw_free(p);
}
