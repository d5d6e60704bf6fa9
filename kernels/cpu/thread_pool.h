// A fixed pool of worker threads that runs parallel loops for any number of concurrent callers.
//
// Ownership: the pool owns its threads; the destructor joins them and must not run while a
// ParallelFor is in flight. Thread-safety: ParallelFor may be called concurrently from any number
// of threads; each call's items are claimed by the pool's workers and by the calling thread itself,
// oldest call first, so concurrent calls share the workers instead of multiplying threads.
#ifndef SCANSERVE_KERNELS_CPU_THREAD_POOL_H_
#define SCANSERVE_KERNELS_CPU_THREAD_POOL_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace scanserve::cpu {

class ThreadPool {
 public:
  // `threads` >= 1 is the number of threads computing one call when nothing else runs: the caller
  // plus threads - 1 workers.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(i) once for every i in [0, count) and returns when all calls have returned. Items
  // run in any order on any thread; fn must not call ParallelFor.
  void ParallelFor(int64_t count, const std::function<void(int64_t)>& fn);

 private:
  struct Job {
    Job(const std::function<void(int64_t)>* f, int64_t n) : fn(f), count(n) {}
    const std::function<void(int64_t)>* fn;
    int64_t count;
    int64_t next = 0;      // next unclaimed item; guarded by mu_
    int64_t finished = 0;  // items whose call returned; guarded by mu_
    std::condition_variable done;
  };

  // Claims one item of the oldest job with unclaimed items; false when there is none. Requires mu_.
  bool Claim(Job*& job, int64_t& item);
  // Runs a claimed item with mu_ released, then records it as finished. Requires mu_ held on entry
  // (through `lock`) and holds it again on return.
  void RunItem(std::unique_lock<std::mutex>& lock, Job* job, int64_t item);
  void WorkerLoop();

  std::mutex mu_;
  std::condition_variable work_;
  std::deque<Job*> jobs_;  // jobs with unclaimed items, oldest first; guarded by mu_
  bool stop_ = false;      // guarded by mu_
  std::vector<std::thread> workers_;
};

}  // namespace scanserve::cpu

#endif  // SCANSERVE_KERNELS_CPU_THREAD_POOL_H_
