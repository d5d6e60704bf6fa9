// The dynamic batching policy: pure decisions over queues and a time the caller passes in. No
// threads, no locks, no clock of its own; the executor owns the thread and the mutex around it.
// Thread-safety: none; callers serialize access.
//
// Jobs with equal keys queue together (FIFO). A queue is ready when it holds max_batch_requests,
// max_batch_rows or max_batch_elements worth of jobs, or when its oldest job has waited
// max_queue_delay. A batch takes jobs from the front while the limits hold; a single job larger
// than a limit forms a batch on its own.
#ifndef SCANSERVE_SERVER_BATCHER_H_
#define SCANSERVE_SERVER_BATCHER_H_

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/job.h"

namespace scanserve {

struct BatchingConfig {
  int64_t max_batch_requests = 256;
  int64_t max_batch_rows = int64_t{1} << 16;
  int64_t max_batch_elements = int64_t{1} << 26;
  absl::Duration max_queue_delay = absl::Microseconds(100);
  int64_t max_queued_requests = 8192;
  int64_t max_queued_bytes = int64_t{4} << 30;
};

class Batcher {
 public:
  explicit Batcher(const BatchingConfig& config);

  // Queues `job` at time `now`. RESOURCE_EXHAUSTED, naming the limit, when admitting it would pass
  // max_queued_requests or max_queued_bytes; the job is then not queued.
  absl::Status Enqueue(JobPtr job, absl::Time now);

  // Removes and returns every queued job that is cancelled or whose deadline is at or before now.
  std::vector<JobPtr> TakeExpired(absl::Time now);

  // Removes and returns the next batch to run at `now` (all jobs share one key), or an empty vector
  // when no queue is ready. Among ready queues the one whose oldest job arrived first goes first.
  // With flush, every non-empty queue counts as ready (used while draining).
  std::vector<JobPtr> TakeBatch(absl::Time now, bool flush = false);

  // The earliest time at which TakeBatch or TakeExpired may return something new without another
  // Enqueue: the minimum over queues of (oldest job's enqueue time + max_queue_delay) and over jobs
  // of their deadline; absl::InfiniteFuture() when nothing is queued. A queue already ready by
  // size counts with its oldest job's enqueue time, which is not after any `now` it was queued at.
  // Cancellations are not events here: TakeExpired notices them at its next call.
  absl::Time NextEvent() const;

  int64_t queued_requests() const { return queued_requests_; }
  int64_t queued_bytes() const { return queued_bytes_; }
  const BatchingConfig& config() const { return config_; }

 private:
  struct Queue;
  struct Entry;
  using DeadlineIndex = std::multimap<absl::Time, Entry*>;
  struct Entry {
    JobPtr job;  // null once TakeExpired took it out of the middle of its queue
    Queue* queue;
    uint64_t seq;                      // arrival order, to break ties between equal times
    DeadlineIndex::iterator deadline;  // end() when the job has no deadline
  };
  // Jobs leave the middle of a queue (expiry, cancellation) by leaving an empty entry behind, so
  // removal is O(log n) and entries never move; the front entry is always a live job, and a queue
  // with no live job is erased. std::deque keeps element addresses under push_back/pop_front.
  struct Queue {
    const std::string* key = nullptr;  // the map's own key
    std::deque<Entry> entries;
    int64_t requests = 0;  // live jobs
    int64_t rows = 0;
    int64_t elements = 0;
  };
  bool Full(const Queue& queue) const;
  // Takes `entry`'s job out of the queues and indexes into `out`; leaves an empty entry behind.
  void Remove(Entry& entry, std::vector<JobPtr>* out);
  // Restores the invariants after removals: drops empty entries at queue fronts, erases empty
  // queues.
  void Compact();

  BatchingConfig config_;
  std::map<std::string, Queue> queues_;
  DeadlineIndex deadlines_;
  int64_t queued_requests_ = 0;
  int64_t queued_bytes_ = 0;
  uint64_t next_seq_ = 0;
  // Cancellation tracking: a full scan for cancelled jobs happens only when Job's epoch moved or a
  // job arrived already cancelled.
  uint64_t seen_cancellation_epoch_ = 0;
  bool cancelled_job_queued_ = false;
};

}  // namespace scanserve

#endif  // SCANSERVE_SERVER_BATCHER_H_
