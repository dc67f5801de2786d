// SPDX-License-Identifier: MIT
// A small persistent thread pool for relpos' parallel loops (batch items, attention heads):
// std::thread + mutex + condition_variable only, so it is clean under ThreadSanitizer (an
// OpenMP runtime is not: its barriers give TSan false positives).
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <relpos/core.hpp>

namespace relpos::detail {

/// run(n, fn) calls fn(task, slot) for every task in [0, n), spread over the pool's threads
/// (the calling thread takes part). Tasks are dealt statically: with c = min(n, size())
/// chunks, chunk s runs tasks s, s + c, s + 2c, ... in order and passes `slot` = s. A slot is
/// thus owned by one thread at a time and the same tasks always get the same slot whatever
/// thread runs them, so per-slot scratch warmed by one call is warm for the next call with
/// the same shapes, and results never depend on scheduling. A run() issued from inside a task
/// (a nested loop) executes inline, every task with slot 0 (its tasks run one after another,
/// and the enclosing task owns its scratch), so nesting never deadlocks.
/// Tasks must write disjoint data; then every result is bit-identical to a single-thread run.
/// run() neither allocates nor copies fn (type-erased through a function pointer). An
/// exception thrown by a task is caught and rethrown by run() once every thread is done
/// (the first one wins; chunks not yet started are skipped).
class ThreadPool {
 public:
  explicit ThreadPool(int threads) : size_(std::max(1, threads)) {
    workers_.reserve(static_cast<std::size_t>(size_ - 1));
    for (int w = 1; w < size_; ++w) workers_.emplace_back([this, w] { worker_loop(w); });
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }

  int size() const { return size_; }

  /// Whether the calling thread is running a task of some pool (loops started here run inline).
  static bool in_task() { return tls().worker >= 0; }

  template <class F>
  void run(Index n, F&& fn) {
    if (n <= 0) return;
    using Fn = std::remove_reference_t<F>;
    Tls& me = tls();
    if (me.worker >= 0 || size_ == 1 || n == 1) {
      // nested inside a task, or nothing to share: run here, all in slot 0
      const WorkerScope scope(me, me.worker >= 0 ? me.worker : 0);
      for (Index t = 0; t < n; ++t) fn(t, 0);
      return;
    }
    const Index chunks = std::min<Index>(n, size_);
    auto call = [](void* ctx, Index chunk, Index stride, Index count) {
      for (Index t = chunk; t < count; t += stride)
        (*static_cast<Fn*>(ctx))(t, static_cast<int>(chunk));
    };
    // one job at a time per pool: concurrent callers from outside queue up here
    std::lock_guard<std::mutex> submit(submit_mutex_);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = Job{call, static_cast<void*>(&fn), n, chunks};
      next_.store(0, std::memory_order_relaxed);
      busy_ = size_ - 1;
      error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();
    {
      const WorkerScope scope(me, 0);
      drain();
    }
    std::exception_ptr error;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, [this] { return busy_ == 0; });
      error = std::exchange(error_, nullptr);
    }
    if (error) std::rethrow_exception(error);
  }

 private:
  struct Job {
    void (*call)(void* ctx, Index chunk, Index stride, Index count) = nullptr;
    void* ctx = nullptr;
    Index n = 0;       // tasks
    Index chunks = 0;  // = stride between a chunk's tasks
  };
  struct Tls {
    int worker = -1;
  };
  static Tls& tls() {
    thread_local Tls t;
    return t;
  }
  // Marks the thread as running tasks as `worker` (so nested loops run inline), restored on
  // exit, exceptions included.
  struct WorkerScope {
    Tls& t;
    int saved;
    WorkerScope(Tls& tls_, int worker) : t(tls_), saved(tls_.worker) { t.worker = worker; }
    ~WorkerScope() { t.worker = saved; }
    WorkerScope(const WorkerScope&) = delete;
    WorkerScope& operator=(const WorkerScope&) = delete;
  };

  // Claims chunks until none is left.
  void drain() {
    for (;;) {
      const Index c = next_.fetch_add(1, std::memory_order_relaxed);
      if (c >= job_.chunks) return;
      try {
        job_.call(job_.ctx, c, job_.chunks, job_.n);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::current_exception();
        next_.store(job_.chunks, std::memory_order_relaxed);  // skip the chunks not yet claimed
      }
    }
  }

  void worker_loop(int w) {
    tls().worker = w;
    std::uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
        if (stopping_) return;
        seen = generation_;
      }
      drain();
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (--busy_ == 0) done_.notify_one();
      }
    }
  }

  const int size_;
  std::vector<std::thread> workers_;
  std::mutex submit_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  Job job_;  // written under mutex_ before the generation bump
  std::atomic<Index> next_{0};
  std::exception_ptr error_;  // the first exception of the current job, under mutex_
  int busy_ = 0;              // workers that have not finished the current job
  std::uint64_t generation_ = 0;
  bool stopping_ = false;
};

/// The process-wide pool and its size (set by relpos::set_num_threads in threads.hpp).
struct PoolHolder {
  std::mutex mutex;
  std::shared_ptr<ThreadPool> pool;
};
inline PoolHolder& pool_holder() {
  static PoolHolder holder;
  return holder;
}

inline int default_num_threads() {
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

/// The current pool, created on first use with one thread per hardware thread. The
/// shared_ptr keeps it alive while a loop runs even if set_num_threads replaces it.
inline std::shared_ptr<ThreadPool> current_pool() {
  PoolHolder& h = pool_holder();
  std::lock_guard<std::mutex> lock(h.mutex);
  if (!h.pool) h.pool = std::make_shared<ThreadPool>(default_num_threads());
  return h.pool;
}

/// fn(task, slot) for task in [0, n) on the process-wide pool; see ThreadPool::run.
template <class F>
void parallel_for(Index n, F&& fn) {
  if (ThreadPool::in_task() || n <= 1) {
    // nested or trivial: inline, slot 0, without touching the shared pool (and its lock)
    for (Index t = 0; t < n; ++t) fn(t, 0);
    return;
  }
  std::shared_ptr<ThreadPool> pool = current_pool();
  pool->run(n, std::forward<F>(fn));
}

/// How many slots a parallel_for started here may hand out: the pool's size at top level,
/// 1 inside a task (where loops run inline).
inline int slots_needed() {
  return ThreadPool::in_task() ? 1 : current_pool()->size();
}

}  // namespace relpos::detail
