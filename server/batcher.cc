#include "server/batcher.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace scanserve {

Batcher::Batcher(const BatchingConfig& config) : config_(config) {}

bool Batcher::Full(const Queue& queue) const {
  return queue.requests >= config_.max_batch_requests || queue.rows >= config_.max_batch_rows ||
         queue.elements >= config_.max_batch_elements;
}

absl::Status Batcher::Enqueue(JobPtr job, absl::Time now) {
  if (job == nullptr) return absl::InvalidArgumentError("job must not be null");
  if (queued_requests_ + 1 > config_.max_queued_requests) {
    return absl::ResourceExhaustedError(absl::StrCat("queue full: max_queued_requests is ",
                                                     config_.max_queued_requests, " and ",
                                                     queued_requests_, " requests are queued"));
  }
  if (queued_bytes_ + job->bytes() > config_.max_queued_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("queue full: max_queued_bytes is ", config_.max_queued_bytes, "; ",
                     queued_bytes_, " bytes are queued and this request needs ", job->bytes()));
  }
  job->set_enqueued_at(now);
  if (job->cancelled()) cancelled_job_queued_ = true;

  auto [it, inserted] = queues_.try_emplace(job->key());
  Queue& queue = it->second;
  if (inserted) queue.key = &it->first;
  queue.requests += 1;
  queue.rows += job->rows();
  queue.elements += job->elements();
  queued_requests_ += 1;
  queued_bytes_ += job->bytes();

  const absl::Time deadline = job->deadline();
  Entry& entry =
      queue.entries.emplace_back(Entry{std::move(job), &queue, next_seq_++, deadlines_.end()});
  if (deadline != absl::InfiniteFuture()) entry.deadline = deadlines_.emplace(deadline, &entry);
  return absl::OkStatus();
}

void Batcher::Remove(Entry& entry, std::vector<JobPtr>* out) {
  Queue& queue = *entry.queue;
  const Job& job = *entry.job;
  queue.requests -= 1;
  queue.rows -= job.rows();
  queue.elements -= job.elements();
  queued_requests_ -= 1;
  queued_bytes_ -= job.bytes();
  if (entry.deadline != deadlines_.end()) {
    deadlines_.erase(entry.deadline);
    entry.deadline = deadlines_.end();
  }
  out->push_back(std::move(entry.job));
}

void Batcher::Compact() {
  for (auto it = queues_.begin(); it != queues_.end();) {
    std::deque<Entry>& entries = it->second.entries;
    while (!entries.empty() && entries.front().job == nullptr) entries.pop_front();
    it = entries.empty() ? queues_.erase(it) : std::next(it);
  }
}

std::vector<JobPtr> Batcher::TakeExpired(absl::Time now) {
  std::vector<JobPtr> out;
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    Remove(*deadlines_.begin()->second, &out);
  }
  const uint64_t epoch = Job::CancellationEpoch();
  if (epoch != seen_cancellation_epoch_ || cancelled_job_queued_) {
    seen_cancellation_epoch_ = epoch;
    cancelled_job_queued_ = false;
    for (auto& [key, queue] : queues_) {
      for (Entry& entry : queue.entries) {
        if (entry.job != nullptr && entry.job->cancelled()) Remove(entry, &out);
      }
    }
  }
  if (!out.empty()) Compact();
  return out;
}

std::vector<JobPtr> Batcher::TakeBatch(absl::Time now, bool flush) {
  Queue* best = nullptr;
  for (auto& [key, queue] : queues_) {
    const Entry& front = queue.entries.front();
    const bool ready =
        flush || Full(queue) || front.job->enqueued_at() + config_.max_queue_delay <= now;
    if (!ready) continue;
    if (best != nullptr) {
      const Entry& best_front = best->entries.front();
      const absl::Time t = front.job->enqueued_at();
      const absl::Time best_t = best_front.job->enqueued_at();
      if (t > best_t || (t == best_t && front.seq > best_front.seq)) continue;
    }
    best = &queue;
  }
  std::vector<JobPtr> batch;
  if (best == nullptr) return batch;

  int64_t rows = 0;
  int64_t elements = 0;
  std::deque<Entry>& entries = best->entries;
  while (!entries.empty()) {
    Entry& entry = entries.front();
    if (entry.job == nullptr) {
      entries.pop_front();
      continue;
    }
    const Job& job = *entry.job;
    // The first job always goes, so a job above a limit runs alone instead of never.
    if (!batch.empty() && (static_cast<int64_t>(batch.size()) + 1 > config_.max_batch_requests ||
                           rows + job.rows() > config_.max_batch_rows ||
                           elements + job.elements() > config_.max_batch_elements)) {
      break;
    }
    rows += job.rows();
    elements += job.elements();
    Remove(entry, &batch);
    entries.pop_front();
  }
  while (!entries.empty() && entries.front().job == nullptr) entries.pop_front();
  if (entries.empty()) queues_.erase(queues_.find(*best->key));
  return batch;
}

absl::Time Batcher::NextEvent() const {
  absl::Time next = deadlines_.empty() ? absl::InfiniteFuture() : deadlines_.begin()->first;
  for (const auto& [key, queue] : queues_) {
    const absl::Time oldest = queue.entries.front().job->enqueued_at();
    next = std::min(next, Full(queue) ? oldest : oldest + config_.max_queue_delay);
  }
  return next;
}

}  // namespace scanserve
