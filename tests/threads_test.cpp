// Tests for include/relpos/threads.hpp and detail/thread_pool.hpp: every task runs once,
// slots are dealt statically, nested loops run inline, exceptions come back to the caller,
// concurrent callers are serialised (run under ThreadSanitizer by ./dev tsan).
#include <relpos/threads.hpp>

#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace {

using relpos::Index;

struct ThreadCountGuard {
  int saved = relpos::num_threads();
  ~ThreadCountGuard() { relpos::set_num_threads(saved); }
};

TEST(Threads, EveryTaskRunsOnceWithItsStaticSlot) {
  ThreadCountGuard guard;
  for (int n : {1, 2, 3, 4}) {
    relpos::set_num_threads(n);
    EXPECT_EQ(relpos::num_threads(), n);
    for (Index tasks : {0, 1, 2, 5, 64}) {
      std::vector<int> runs(static_cast<std::size_t>(tasks), 0), slots(runs.size(), -1);
      relpos::detail::parallel_for(tasks, [&](Index t, int slot) {
        ++runs[static_cast<std::size_t>(t)];  // each task owns its element
        slots[static_cast<std::size_t>(t)] = slot;
      });
      const Index chunks = std::min<Index>(tasks, n);
      for (Index t = 0; t < tasks; ++t) {
        EXPECT_EQ(runs[std::size_t(t)], 1) << "threads " << n << ", task " << t;
        // task t in chunk t mod chunks (all in slot 0 when it runs inline)
        const int want = (n == 1 || tasks == 1) ? 0 : static_cast<int>(t % chunks);
        EXPECT_EQ(slots[std::size_t(t)], want) << "threads " << n << ", task " << t;
      }
    }
  }
}

TEST(Threads, NestedLoopsRunInlineInSlotZero) {
  ThreadCountGuard guard;
  relpos::set_num_threads(3);
  std::vector<std::atomic<int>> inner_slot_sum(6);
  std::vector<std::atomic<int>> inner_runs(6);
  relpos::detail::parallel_for(6, [&](Index outer, int) {
    EXPECT_EQ(relpos::detail::slots_needed(), 1);
    relpos::detail::parallel_for(4, [&](Index, int slot) {
      inner_slot_sum[std::size_t(outer)] += slot;
      ++inner_runs[std::size_t(outer)];
    });
  });
  for (std::size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(inner_runs[i].load(), 4);
    EXPECT_EQ(inner_slot_sum[i].load(), 0);
  }
}

TEST(Threads, AnExceptionInATaskReachesTheCaller) {
  ThreadCountGuard guard;
  relpos::set_num_threads(3);
  EXPECT_THROW(relpos::detail::parallel_for(9,
                                            [](Index t, int) {
                                              if (t == 4) throw std::runtime_error("task 4");
                                            }),
               std::runtime_error);
  // the pool still works afterwards
  std::atomic<int> count{0};
  relpos::detail::parallel_for(9, [&](Index, int) { ++count; });
  EXPECT_EQ(count.load(), 9);
}

TEST(Threads, ConcurrentCallersShareThePool) {
  ThreadCountGuard guard;
  relpos::set_num_threads(2);
  std::atomic<long> total{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 3; ++c) {
    callers.emplace_back([&] {
      for (int rep = 0; rep < 20; ++rep) {
        relpos::detail::parallel_for(7, [&](Index t, int) { total += t; });
      }
    });
  }
  for (auto& t : callers) t.join();
  EXPECT_EQ(total.load(), 3L * 20 * 21);
}

TEST(Threads, ThreadCountBelowOneIsAnError) {
  EXPECT_THROW(relpos::set_num_threads(0), relpos::Error);
}

}  // namespace
