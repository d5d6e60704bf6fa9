#include "server/executor.h"

#include <algorithm>
#include <exception>
#include <limits>
#include <span>
#include <type_traits>
#include <utility>
#include <variant>

#include "absl/strings/str_cat.h"

namespace scanserve {
namespace {

constexpr int64_t kNeverReported = std::numeric_limits<int64_t>::min();
// Device queries may cost a driver call; once a second is plenty for a gauge.
constexpr absl::Duration kDeviceReportInterval = absl::Seconds(1);

absl::Status ExpiredStatus(const Job& job) {
  // A job both cancelled and late goes to a client that is gone: cancellation says more.
  if (job.cancelled()) return absl::CancelledError("request cancelled while queued");
  return absl::DeadlineExceededError("deadline passed while queued");
}

// Gathers the problems of jobs that share one key (hence one op and equal options) into the op's
// batch type and runs it. Throws std::bad_variant_access if a job of another op slipped in.
template <typename W>
absl::Status RunAs(Backend& backend, const W& first, const std::vector<JobPtr>& jobs) {
  using Problem = decltype(first.problem);
  std::vector<Problem> problems;
  problems.reserve(jobs.size());
  for (const JobPtr& job : jobs) problems.push_back(std::get<W>(job->work()).problem);
  const Batch<decltype(first.options), Problem> batch{first.options,
                                                      std::span<const Problem>(problems)};
  return backend.Run(batch);
}

}  // namespace

Executor::Executor(Backend* backend, const BatchingConfig& config, Clock* clock,
                   ServerMetrics* metrics)
    : backend_(backend), clock_(clock), metrics_(metrics), batcher_(config) {
  last_device_report_ns_.store(kNeverReported);
  const int workers = std::max(1, backend_->MaxConcurrentBatches());
  absl::MutexLock lock(&join_mu_);
  workers_.reserve(workers);
  for (int i = 0; i < workers; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

Executor::~Executor() { Drain(); }

absl::Status Executor::Submit(JobPtr job) {
  absl::MutexLock lock(&mu_);
  if (draining_) return absl::UnavailableError("server is draining");
  absl::Status status = batcher_.Enqueue(std::move(job), clock_->Now());
  if (!status.ok()) return status;
  metrics_->SetQueueDepth(batcher_.queued_requests());
  WakeIfSooner();
  return absl::OkStatus();
}

void Executor::Drain() {
  absl::MutexLock join_lock(&join_mu_);
  {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    wake_.SignalAll();
  }
  for (std::thread& worker : workers_) worker.join();
  workers_.clear();
}

void Executor::Wake() {
  absl::MutexLock lock(&mu_);
  wake_.SignalAll();
}

int64_t Executor::queued_requests() const {
  absl::MutexLock lock(&mu_);
  return batcher_.queued_requests();
}

int64_t Executor::batches_executed() const {
  absl::MutexLock lock(&mu_);
  return batches_executed_;
}

void Executor::WakeIfSooner() {
  if (!sleepers_.empty() && batcher_.NextEvent() < *sleepers_.begin()) wake_.Signal();
}

void Executor::WorkerLoop() {
  for (;;) {
    std::vector<JobPtr> expired;
    std::vector<JobPtr> batch;
    bool done = false;
    {
      absl::MutexLock lock(&mu_);
      for (;;) {
        const absl::Time now = clock_->Now();
        expired = batcher_.TakeExpired(now);
        batch = batcher_.TakeBatch(now, /*flush=*/draining_);
        if (!expired.empty() || !batch.empty()) break;
        // While draining every queue is ready, so nothing taken means nothing queued.
        if (draining_) {
          done = true;
          break;
        }
        const absl::Time next = batcher_.NextEvent();
        auto sleeper = sleepers_.insert(next);
        if (next == absl::InfiniteFuture()) {
          wake_.Wait(&mu_);
        } else {
          wake_.WaitWithTimeout(&mu_, next - now);
        }
        sleepers_.erase(sleeper);
      }
      if (!expired.empty() || !batch.empty()) {
        metrics_->SetQueueDepth(batcher_.queued_requests());
        // This worker is busy until the batch is done: hand what else is ready to a sleeper.
        WakeIfSooner();
      }
    }
    for (const JobPtr& job : expired) job->Finish(ExpiredStatus(*job));
    if (!batch.empty()) RunBatch(std::move(batch));
    if (done) return;
  }
}

void Executor::RunBatch(std::vector<JobPtr> batch) {
  const absl::Time start = clock_->Now();
  std::vector<JobPtr> jobs;
  jobs.reserve(batch.size());
  for (JobPtr& job : batch) {
    // The client may have gone, or the deadline passed, since the batch left the queue.
    if (job->cancelled() || job->deadline() <= start) {
      job->Finish(ExpiredStatus(*job));
    } else {
      jobs.push_back(std::move(job));
    }
  }
  if (jobs.empty()) return;

  for (const JobPtr& job : jobs) metrics_->QueueWait(job->op(), start - job->enqueued_at());
  const absl::Status status = Execute(jobs);
  if (status.code() == absl::StatusCode::kResourceExhausted && jobs.size() > 1) {
    // The backend could not get memory for the whole batch. Each request alone may still fit,
    // and a request's answer must not depend on what it happened to be batched with.
    for (const JobPtr& job : jobs) job->Finish(Execute({job}));
  } else {
    for (const JobPtr& job : jobs) job->Finish(status);
  }
  ReportDevices();
}

absl::Status Executor::Execute(const std::vector<JobPtr>& jobs) {
  const OpKind op = jobs.front()->op();
  int64_t rows = 0;
  for (const JobPtr& job : jobs) rows += job->rows();
  const absl::Time start = clock_->Now();
  absl::Status status;
  try {
    status = std::visit([&](const auto& first) { return RunAs(*backend_, first, jobs); },
                        jobs.front()->work());
  } catch (const std::exception& e) {
    status = absl::InternalError(absl::StrCat("backend failed with an exception: ", e.what()));
  } catch (...) {
    status = absl::InternalError("backend failed with an exception of unknown type");
  }
  const absl::Duration execution = clock_->Now() - start;
  {
    absl::MutexLock lock(&mu_);
    ++batches_executed_;
  }
  metrics_->BatchExecuted(op, static_cast<int64_t>(jobs.size()), rows, execution);
  return status;
}

void Executor::ReportDevices() {
  const int64_t now = absl::ToUnixNanos(clock_->Now());
  int64_t last = last_device_report_ns_.load(std::memory_order_relaxed);
  if (last != kNeverReported && now - last < absl::ToInt64Nanoseconds(kDeviceReportInterval)) {
    return;
  }
  // One worker reports; the others carry on.
  if (!last_device_report_ns_.compare_exchange_strong(last, now, std::memory_order_relaxed)) {
    return;
  }
  for (const DeviceStatus& device : backend_->Devices()) {
    metrics_->SetDeviceMemoryUsed(device.index, device.memory_used_bytes);
  }
}

}  // namespace scanserve
