// SPDX-License-Identifier: MIT
// How many threads relpos uses: batch items and attention heads are independent, so they run
// on a persistent pool (detail/thread_pool.hpp); results are bit-identical for any count.
#pragma once

#include <memory>
#include <mutex>

#include <relpos/core.hpp>
#include <relpos/detail/thread_pool.hpp>

namespace relpos {

/// Sets the number of threads of relpos' pool (the caller counts as one); n < 1 is an error.
/// The default is std::thread::hardware_concurrency(). Call it between forward passes: a
/// forward already running keeps the pool it started with.
inline void set_num_threads(int n) {
  if (n < 1) throw Error("set_num_threads: expected >= 1, got " + std::to_string(n));
  detail::PoolHolder& h = detail::pool_holder();
  std::shared_ptr<detail::ThreadPool> old;
  {
    std::lock_guard<std::mutex> lock(h.mutex);
    if (h.pool && h.pool->size() == n) return;
    old = std::move(h.pool);
    h.pool = std::make_shared<detail::ThreadPool>(n);
  }
  // `old` joins its threads here, outside the lock, once no forward holds it any more
}

/// The number of threads relpos' pool runs (the caller included).
inline int num_threads() {
  return detail::current_pool()->size();
}

}  // namespace relpos
