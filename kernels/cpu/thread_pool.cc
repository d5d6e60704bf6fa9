#include "cpu/thread_pool.h"

#include <algorithm>

namespace scanserve::cpu {

ThreadPool::ThreadPool(int threads) {
  const int workers = std::max(threads, 1) - 1;
  workers_.reserve(static_cast<size_t>(workers));
  for (int i = 0; i < workers; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_.notify_all();
  for (std::thread& worker : workers_) worker.join();
}

bool ThreadPool::Claim(Job*& job, int64_t& item) {
  if (jobs_.empty()) return false;
  job = jobs_.front();
  item = job->next++;
  if (job->next == job->count) jobs_.pop_front();
  return true;
}

void ThreadPool::RunItem(std::unique_lock<std::mutex>& lock, Job* job, int64_t item) {
  lock.unlock();
  (*job->fn)(item);
  lock.lock();
  // The owner may destroy the job as soon as it sees the last item finished, so notify while
  // still holding the lock.
  if (++job->finished == job->count) job->done.notify_all();
}

void ThreadPool::WorkerLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    work_.wait(lock, [this] { return stop_ || !jobs_.empty(); });
    if (stop_) return;
    Job* job;
    int64_t item;
    while (Claim(job, item)) RunItem(lock, job, item);
  }
}

void ThreadPool::ParallelFor(int64_t count, const std::function<void(int64_t)>& fn) {
  if (count <= 0) return;
  if (count == 1 || workers_.empty()) {
    for (int64_t i = 0; i < count; ++i) fn(i);
    return;
  }
  Job job(&fn, count);
  std::unique_lock<std::mutex> lock(mu_);
  jobs_.push_back(&job);
  if (count - 1 >= static_cast<int64_t>(workers_.size())) {
    work_.notify_all();
  } else {
    for (int64_t i = 0; i < count - 1; ++i) work_.notify_one();
  }
  // The caller works on its own job first: it then never waits while its items sit unclaimed.
  while (job.next < job.count) {
    const int64_t item = job.next++;
    if (job.next == job.count) jobs_.erase(std::find(jobs_.begin(), jobs_.end(), &job));
    RunItem(lock, &job, item);
  }
  job.done.wait(lock, [&job] { return job.finished == job.count; });
}

}  // namespace scanserve::cpu
