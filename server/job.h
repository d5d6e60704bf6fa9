// A validated request on its way through the batcher and executor.
//
// Ownership: a Job is created by a handler, shared (JobPtr) between the handler's reactor, the
// batcher's queue and the executor, and owns the memory its Problem points into (the request's
// input bytes and the pre-sized response buffers). Thread-safety: everything but Cancel() and
// cancelled() is set before the job is enqueued and read-only afterwards; Finish() is called
// exactly once, by the executor, from one of its threads.
#ifndef SCANSERVE_SERVER_JOB_H_
#define SCANSERVE_SERVER_JOB_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <variant>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "scanserve/ops.h"

namespace scanserve {

template <typename Options, typename Problem>
struct OpWork {
  Options options;
  Problem problem;
};

using LinearScanWork = OpWork<LinearScanOptions, LinearScanProblem>;
using LinearScanBackwardWork = OpWork<LinearScanBackwardOptions, LinearScanBackwardProblem>;
using SelectiveScanWork = OpWork<SelectiveScanOptions, SelectiveScanProblem>;
using AssociativeScanWork = OpWork<AssociativeScanOptions, AssociativeScanProblem>;
using Work =
    std::variant<LinearScanWork, LinearScanBackwardWork, SelectiveScanWork, AssociativeScanWork>;

OpKind WorkOp(const Work& work);
std::string WorkKey(const Work& work);  // SignatureKey of the work's options

class Job {
 public:
  // `bytes` is what the job holds in memory while queued (inputs plus outputs); it counts against
  // the queued-bytes limit. A deadline of absl::InfiniteFuture() means none.
  Job(Work work, int64_t bytes, absl::Time deadline);
  virtual ~Job() = default;
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;

  OpKind op() const { return op_; }
  const std::string& key() const { return key_; }
  const Work& work() const { return work_; }
  int64_t rows() const { return rows_; }
  int64_t elements() const { return elements_; }
  int64_t bytes() const { return bytes_; }
  absl::Time deadline() const { return deadline_; }

  // Set by the batcher when the job is queued.
  absl::Time enqueued_at() const { return enqueued_at_; }
  void set_enqueued_at(absl::Time t) { enqueued_at_ = t; }

  // The client went away: the job must be dropped without compute if it has not started.
  // Safe from any thread, any number of times, before or after the job is queued or finished.
  void Cancel();
  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }

  // A process-wide count of Cancel() calls that changed a job's state. A queue holder that read
  // the same value twice knows no job became cancelled in between, so it need not look at every
  // queued job to find cancelled ones. Acquire order: jobs counted are seen as cancelled().
  static uint64_t CancellationEpoch();

  // OK once every output is written; otherwise the status to send to the client.
  virtual void Finish(const absl::Status& status) = 0;

 private:
  Work work_;
  OpKind op_;
  std::string key_;
  int64_t rows_;
  int64_t elements_;
  int64_t bytes_;
  absl::Time deadline_;
  absl::Time enqueued_at_;
  std::atomic<bool> cancelled_{false};
};

using JobPtr = std::shared_ptr<Job>;

}  // namespace scanserve

#endif  // SCANSERVE_SERVER_JOB_H_
