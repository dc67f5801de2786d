// SPDX-License-Identifier: MIT
// A counting malloc for the benchmarks: the executable's own malloc family, which counts every
// call and forwards to glibc's (__libc_malloc & co.), so operator new, Eigen's aligned
// allocations and std containers are all seen. Define-once: include it in exactly one
// translation unit of an executable (each bench_*.cpp is one).
#pragma once

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>

namespace relpos_bench {

struct AllocCounts {
  std::int64_t calls = 0;
  std::int64_t bytes = 0;
};

inline std::atomic<std::int64_t> g_alloc_calls{0};
inline std::atomic<std::int64_t> g_alloc_bytes{0};

inline void count_alloc(std::size_t bytes) {
  g_alloc_calls.fetch_add(1, std::memory_order_relaxed);
  g_alloc_bytes.fetch_add(static_cast<std::int64_t>(bytes), std::memory_order_relaxed);
}

/// The counts since the process started (all threads).
inline AllocCounts alloc_counts() {
  return {g_alloc_calls.load(std::memory_order_relaxed),
          g_alloc_bytes.load(std::memory_order_relaxed)};
}

}  // namespace relpos_bench

extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);

void* malloc(std::size_t n) noexcept {
  relpos_bench::count_alloc(n);
  return __libc_malloc(n);
}
void* calloc(std::size_t count, std::size_t size) noexcept {
  relpos_bench::count_alloc(count * size);
  return __libc_calloc(count, size);
}
void* realloc(void* p, std::size_t n) noexcept {
  relpos_bench::count_alloc(n);
  return __libc_realloc(p, n);
}
void* memalign(std::size_t alignment, std::size_t n) noexcept {
  relpos_bench::count_alloc(n);
  return __libc_memalign(alignment, n);
}
void* aligned_alloc(std::size_t alignment, std::size_t n) noexcept {
  relpos_bench::count_alloc(n);
  return __libc_memalign(alignment, n);
}
int posix_memalign(void** out, std::size_t alignment, std::size_t n) noexcept {
  relpos_bench::count_alloc(n);
  void* p = __libc_memalign(alignment, n);
  if (p == nullptr) return ENOMEM;
  *out = p;
  return 0;
}
}
