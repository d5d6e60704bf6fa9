// Runs batches on a backend: owns the batcher behind a mutex and MaxConcurrentBatches() worker
// threads that take ready batches, drop expired and cancelled jobs (DEADLINE_EXCEEDED, CANCELLED)
// without compute, call the backend, and finish every job of the batch.
//
// Thread-safety: Submit, Drain and the accessors may be called from any thread. The backend,
// clock and metrics are borrowed and must outlive the executor.
#ifndef SCANSERVE_SERVER_EXECUTOR_H_
#define SCANSERVE_SERVER_EXECUTOR_H_

#include <atomic>
#include <cstdint>
#include <set>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "scanserve/backend.h"
#include "server/batcher.h"
#include "server/clock.h"
#include "server/job.h"
#include "server/metrics.h"

namespace scanserve {

class Executor {
 public:
  Executor(Backend* backend, const BatchingConfig& config, Clock* clock, ServerMetrics* metrics);
  // Drains first if Drain was not called.
  ~Executor();

  // Queues the job. On error (RESOURCE_EXHAUSTED when the queue is full, UNAVAILABLE once draining)
  // the job is not queued and Finish is not called: the caller answers with the returned status.
  absl::Status Submit(JobPtr job);

  // Stops accepting, runs every queued job to completion, then joins the workers. Idempotent.
  void Drain();

  // Makes idle workers look at the clock again. Only needed with a clock that jumps (FakeClock
  // in tests): workers sleep in real time until the batcher's next event.
  void Wake();

  int64_t queued_requests() const;
  // Backend Run calls made so far (batches whose jobs were all dropped are not counted).
  int64_t batches_executed() const;

 private:
  void WorkerLoop();
  void RunBatch(std::vector<JobPtr> batch);
  // Runs `jobs` (one key) as one backend call and records it; the backend's status.
  absl::Status Execute(const std::vector<JobPtr>& jobs);
  void ReportDevices();
  // Signals one sleeping worker when the batcher's next event comes before every sleeper's wake-up.
  void WakeIfSooner() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Backend* const backend_;
  Clock* const clock_;
  ServerMetrics* const metrics_;
  mutable absl::Mutex mu_;
  absl::CondVar wake_;
  Batcher batcher_ ABSL_GUARDED_BY(mu_);
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  int64_t batches_executed_ ABSL_GUARDED_BY(mu_) = 0;
  // When each sleeping worker means to wake up (batcher time), so Submit wakes one only when the
  // new job's event comes sooner: a job joining a queue that is not ready costs no wake-up.
  std::multiset<absl::Time> sleepers_ ABSL_GUARDED_BY(mu_);
  absl::Mutex join_mu_ ABSL_ACQUIRED_BEFORE(mu_);  // serializes Drain's join
  std::vector<std::thread> workers_ ABSL_GUARDED_BY(join_mu_);
  std::atomic<int64_t> last_device_report_ns_{0};
};

}  // namespace scanserve

#endif  // SCANSERVE_SERVER_EXECUTOR_H_
