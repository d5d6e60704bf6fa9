// The executor over a recording test backend (not the product's backend): grouping, worker count,
// expiry and cancellation, draining, failures, and exactly one Finish per job under load.
#include "server/executor.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/barrier.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"

namespace scanserve {
namespace {

constexpr absl::Duration kWaitLimit = absl::Seconds(60);

// Writes outputs that depend only on each problem's own inputs (associative_scan: y = 2x + 1,
// linear_scan: y = a * x, float32) and records what each Run call received.
class RecordingBackend : public Backend {
 public:
  struct Record {
    OpKind op;
    std::string key;
    std::vector<const void*> inputs;  // each problem's x
  };

  explicit RecordingBackend(int concurrency) : concurrency_(concurrency) {}

  std::string_view Name() const override { return "recording"; }
  std::vector<DeviceStatus> Devices() const override {
    DeviceStatus device;
    device.name = "recording device";
    device.memory_total_bytes = int64_t{1} << 30;
    device.memory_used_bytes = 12345;
    return {device};
  }
  int MaxConcurrentBatches() const override { return concurrency_; }

  absl::Status Run(const LinearScanBatch& batch) override {
    return Execute(OpKind::kLinearScan, SignatureKey(batch.options), batch.problems,
                   [](const LinearScanProblem& p) {
                     const auto* a = static_cast<const float*>(p.a);
                     const auto* x = static_cast<const float*>(p.x);
                     auto* y = static_cast<float*>(p.y);
                     for (int64_t i = 0; i < p.shape.elements(); ++i) y[i] = a[i] * x[i];
                   });
  }
  absl::Status Run(const LinearScanBackwardBatch&) override { return Unsupported(); }
  absl::Status Run(const SelectiveScanBatch&) override { return Unsupported(); }
  absl::Status Run(const AssociativeScanBatch& batch) override {
    return Execute(OpKind::kAssociativeScan, SignatureKey(batch.options), batch.problems,
                   [](const AssociativeScanProblem& p) {
                     const auto* x = static_cast<const float*>(p.x);
                     auto* y = static_cast<float*>(p.y);
                     for (int64_t i = 0; i < p.shape.elements(); ++i) y[i] = 2 * x[i] + 1;
                   });
  }

  void FailWith(absl::Status status) {
    absl::MutexLock lock(&mu_);
    failure_ = std::move(status);
  }
  // Batches of more elements than this fail RESOURCE_EXHAUSTED without computing, like a device
  // pool too small for them.
  void LimitElements(int64_t elements) {
    absl::MutexLock lock(&mu_);
    max_elements_ = elements;
  }
  void ThrowWith(std::string what) {
    absl::MutexLock lock(&mu_);
    throw_what_ = std::move(what);
  }
  // While held, Run calls wait inside the backend.
  void Hold() {
    absl::MutexLock lock(&mu_);
    held_ = true;
  }
  void Release() {
    absl::MutexLock lock(&mu_);
    held_ = false;
  }
  bool AwaitInFlight(int n) {
    absl::MutexLock lock(&mu_);
    auto reached = [this, n]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return in_flight_ == n; };
    return mu_.AwaitWithTimeout(absl::Condition(&reached), kWaitLimit);
  }
  int in_flight() const {
    absl::MutexLock lock(&mu_);
    return in_flight_;
  }
  int max_in_flight() const {
    absl::MutexLock lock(&mu_);
    return max_in_flight_;
  }
  std::vector<Record> batches() const {
    absl::MutexLock lock(&mu_);
    return batches_;
  }

 private:
  static absl::Status Unsupported() {
    return absl::InvalidArgumentError(
        "the recording backend runs linear_scan and associative_scan");
  }

  template <typename Problem, typename Compute>
  absl::Status Execute(OpKind op, std::string key, std::span<const Problem> problems,
                       Compute compute) {
    Record record{op, std::move(key), {}};
    int64_t elements = 0;
    for (const Problem& p : problems) {
      record.inputs.push_back(p.x);
      elements += p.shape.elements();
    }
    absl::Status failure;
    std::string throw_what;
    {
      absl::MutexLock lock(&mu_);
      batches_.push_back(record);
      ++in_flight_;
      max_in_flight_ = std::max(max_in_flight_, in_flight_);
      auto released = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return !held_; };
      mu_.Await(absl::Condition(&released));
      failure = failure_;
      throw_what = throw_what_;
      if (failure.ok() && elements > max_elements_) {
        failure = absl::ResourceExhaustedError("batch larger than the device pool");
      }
    }
    if (failure.ok() && throw_what.empty()) {
      for (const Problem& p : problems) compute(p);
    }
    {
      absl::MutexLock lock(&mu_);
      --in_flight_;
    }
    if (!throw_what.empty()) throw std::runtime_error(throw_what);
    return failure;
  }

  const int concurrency_;
  mutable absl::Mutex mu_;
  std::vector<Record> batches_ ABSL_GUARDED_BY(mu_);
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
  int64_t max_elements_ ABSL_GUARDED_BY(mu_) = std::numeric_limits<int64_t>::max();
  std::string throw_what_ ABSL_GUARDED_BY(mu_);
  bool held_ ABSL_GUARDED_BY(mu_) = false;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int max_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
};

// Counts Finish calls over many jobs so a test can wait for them.
class Tracker {
 public:
  void Done() {
    absl::MutexLock lock(&mu_);
    ++finished_;
  }
  bool AwaitFinished(int n) {
    absl::MutexLock lock(&mu_);
    auto reached = [this, n]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return finished_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&reached), kWaitLimit);
  }
  int finished() const {
    absl::MutexLock lock(&mu_);
    return finished_;
  }

 private:
  mutable absl::Mutex mu_;
  int finished_ ABSL_GUARDED_BY(mu_) = 0;
};

class TestJob : public Job {
 public:
  struct Buffers {
    std::vector<float> a, x, y;
  };

  static std::shared_ptr<TestJob> Associative(std::mt19937& rng, Tracker* tracker,
                                              ScanOperator op = ScanOperator::kAdd, int64_t dim = 2,
                                              int64_t length = 16,
                                              absl::Time deadline = absl::InfiniteFuture()) {
    Buffers buffers = MakeBuffers(rng, dim * length, /*with_a=*/false);
    AssociativeScanWork work;
    work.options.op = op;
    work.problem.shape = SeqShape{1, dim, length};
    work.problem.x = buffers.x.data();
    work.problem.y = buffers.y.data();
    return std::make_shared<TestJob>(std::move(buffers), work, deadline, tracker);
  }

  static std::shared_ptr<TestJob> Linear(std::mt19937& rng, Tracker* tracker, int64_t dim = 2,
                                         int64_t length = 16) {
    Buffers buffers = MakeBuffers(rng, dim * length, /*with_a=*/true);
    LinearScanWork work;
    work.problem.shape = SeqShape{1, dim, length};
    work.problem.a = buffers.a.data();
    work.problem.x = buffers.x.data();
    work.problem.y = buffers.y.data();
    return std::make_shared<TestJob>(std::move(buffers), work, absl::InfiniteFuture(), tracker);
  }

  TestJob(Buffers buffers, Work work, absl::Time deadline, Tracker* tracker)
      : Job(std::move(work),
            static_cast<int64_t>(sizeof(float)) *
                (buffers.a.size() + buffers.x.size() + buffers.y.size()),
            deadline),
        buffers_(std::move(buffers)),
        tracker_(tracker) {}

  void Finish(const absl::Status& status) override {
    {
      absl::MutexLock lock(&mu_);
      statuses_.push_back(status);
    }
    if (on_finish_) on_finish_();
    tracker_->Done();
  }

  // Runs inside Finish, on the executor's thread.
  void set_on_finish(std::function<void()> hook) { on_finish_ = std::move(hook); }

  int finishes() const {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(statuses_.size());
  }
  absl::Status status() const {
    absl::MutexLock lock(&mu_);
    return statuses_.empty() ? absl::UnknownError("not finished") : statuses_.front();
  }
  const void* input() const { return buffers_.x.data(); }

  // Every output equals the recording backend's formula for this job's own inputs.
  bool OutputCorrect() const {
    const bool linear = op() == OpKind::kLinearScan;
    for (size_t i = 0; i < buffers_.y.size(); ++i) {
      const float expected = linear ? buffers_.a[i] * buffers_.x[i] : 2 * buffers_.x[i] + 1;
      if (!(buffers_.y[i] == expected)) return false;
    }
    return true;
  }

 private:
  static Buffers MakeBuffers(std::mt19937& rng, int64_t n, bool with_a) {
    std::uniform_real_distribution<float> values(0.5f, 1.5f);
    Buffers buffers;
    buffers.x.resize(n);
    for (float& v : buffers.x) v = values(rng);
    if (with_a) {
      buffers.a.resize(n);
      for (float& v : buffers.a) v = values(rng);
    }
    // Poisoned: an output the backend never wrote fails OutputCorrect.
    buffers.y.assign(n, std::numeric_limits<float>::quiet_NaN());
    return buffers;
  }

  Buffers buffers_;
  Tracker* const tracker_;
  std::function<void()> on_finish_;
  mutable absl::Mutex mu_;
  std::vector<absl::Status> statuses_ ABSL_GUARDED_BY(mu_);
};

using TestJobPtr = std::shared_ptr<TestJob>;

class RecordingMetrics : public ServerMetrics {
 public:
  void RequestFinished(OpKind, absl::StatusCode, absl::Duration) override {}
  void BytesReceived(int64_t) override {}
  void BytesSent(int64_t) override {}
  void QueueWait(OpKind op, absl::Duration wait) override {
    absl::MutexLock lock(&mu);
    queue_waits.push_back(wait);
    EXPECT_EQ(op, expected_op);
  }
  void BatchExecuted(OpKind op, int64_t requests, int64_t rows, absl::Duration execution) override {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(op, expected_op);
    batch_requests.push_back(requests);
    batch_rows.push_back(rows);
    executions.push_back(execution);
  }
  void SetQueueDepth(int64_t requests) override {
    absl::MutexLock lock(&mu);
    depths.push_back(requests);
  }
  void SetBackend(const std::string&) override {}
  void SetDeviceMemoryUsed(int device, int64_t bytes) override {
    absl::MutexLock lock(&mu);
    device_memory.emplace_back(device, bytes);
  }

  OpKind expected_op = OpKind::kAssociativeScan;
  absl::Mutex mu;
  std::vector<absl::Duration> queue_waits ABSL_GUARDED_BY(mu);
  std::vector<int64_t> batch_requests ABSL_GUARDED_BY(mu);
  std::vector<int64_t> batch_rows ABSL_GUARDED_BY(mu);
  std::vector<absl::Duration> executions ABSL_GUARDED_BY(mu);
  std::vector<int64_t> depths ABSL_GUARDED_BY(mu);
  std::vector<std::pair<int, int64_t>> device_memory ABSL_GUARDED_BY(mu);
};

BatchingConfig Config(int64_t max_requests, absl::Duration delay) {
  BatchingConfig config;
  config.max_batch_requests = max_requests;
  config.max_queue_delay = delay;
  return config;
}

class ExecutorTest : public ::testing::Test {
 protected:
  ExecutorTest() : seed_(std::random_device{}()), rng_(seed_), trace_(__FILE__, __LINE__, Seed()) {}
  std::string Seed() const { return absl::StrCat("seed ", seed_); }

  // Every job finished once, OK, with correct outputs, and ran in exactly one backend batch.
  void ExpectAllRanOnce(const std::vector<TestJobPtr>& jobs, const RecordingBackend& backend) {
    std::map<const void*, int> runs;
    for (const auto& batch : backend.batches()) {
      for (const void* input : batch.inputs) ++runs[input];
    }
    for (size_t i = 0; i < jobs.size(); ++i) {
      SCOPED_TRACE(absl::StrCat("job ", i));
      EXPECT_EQ(jobs[i]->finishes(), 1);
      EXPECT_TRUE(jobs[i]->status().ok()) << jobs[i]->status();
      EXPECT_TRUE(jobs[i]->OutputCorrect());
      EXPECT_EQ(runs[jobs[i]->input()], 1);
    }
  }

  // `threads` threads start together and each submits `per_thread` associative jobs; returns
  // every job, in submission order per thread, once all threads are done submitting.
  std::vector<TestJobPtr> SubmitConcurrently(Executor& executor, int threads, int per_thread) {
    std::vector<TestJobPtr> jobs;
    for (int i = 0; i < threads * per_thread; ++i) {
      jobs.push_back(TestJob::Associative(rng_, &tracker_));
    }
    absl::Barrier* start = new absl::Barrier(threads);
    std::vector<std::thread> submitters;
    for (int t = 0; t < threads; ++t) {
      submitters.emplace_back([&, t] {
        if (start->Block()) delete start;
        for (int i = 0; i < per_thread; ++i) {
          EXPECT_TRUE(executor.Submit(jobs[t * per_thread + i]).ok());
        }
      });
    }
    for (std::thread& thread : submitters) thread.join();
    return jobs;
  }

  const uint32_t seed_;
  std::mt19937 rng_;
  ::testing::ScopedTrace trace_;
  Tracker tracker_;
  std::unique_ptr<ServerMetrics> null_metrics_ = MakeNullMetrics();
};

// With a clock that never moves only full queues run: concurrent submitters must end up in
// batches of exactly max_batch_requests.
TEST_F(ExecutorTest, ConcurrentSubmittersAreGroupedBySize) {
  RecordingBackend backend(4);
  FakeClock clock;
  Executor executor(&backend, Config(16, absl::Hours(1)), &clock, null_metrics_.get());
  constexpr int kThreads = 8;
  constexpr int kPerThread = 16;
  const std::vector<TestJobPtr> jobs = SubmitConcurrently(executor, kThreads, kPerThread);
  ASSERT_TRUE(tracker_.AwaitFinished(kThreads * kPerThread));
  const auto batches = backend.batches();
  ASSERT_EQ(batches.size(), 8u);
  for (const auto& batch : batches) {
    EXPECT_EQ(batch.op, OpKind::kAssociativeScan);
    EXPECT_EQ(batch.inputs.size(), 16u);
  }
  ExpectAllRanOnce(jobs, backend);
  EXPECT_EQ(executor.batches_executed(), 8);

  // Not a full batch: waits for the delay, which passes only when the clock is moved.
  std::vector<TestJobPtr> rest;
  for (int i = 0; i < 5; ++i) {
    rest.push_back(TestJob::Associative(rng_, &tracker_));
    ASSERT_TRUE(executor.Submit(rest.back()).ok());
  }
  EXPECT_EQ(executor.queued_requests(), 5);
  clock.Advance(absl::Hours(1));
  executor.Wake();
  ASSERT_TRUE(tracker_.AwaitFinished(kThreads * kPerThread + 5));
  ASSERT_EQ(backend.batches().size(), 9u);
  EXPECT_EQ(backend.batches().back().inputs.size(), 5u);
  EXPECT_EQ(executor.queued_requests(), 0);
}

TEST_F(ExecutorTest, RealClockDelayGroupsRequests) {
  RecordingBackend backend(2);
  Executor executor(&backend, Config(1024, absl::Milliseconds(100)), Clock::Real(),
                    null_metrics_.get());
  constexpr int kThreads = 4;
  constexpr int kPerThread = 50;
  const std::vector<TestJobPtr> jobs = SubmitConcurrently(executor, kThreads, kPerThread);
  ASSERT_TRUE(tracker_.AwaitFinished(kThreads * kPerThread));
  ExpectAllRanOnce(jobs, backend);
  // Submitting takes far less than the delay, so requests share batches: on average at least 10.
  EXPECT_LE(backend.batches().size(), 20u);
}

TEST_F(ExecutorTest, OneRequestPerBatchNeverGroups) {
  RecordingBackend backend(3);
  Executor executor(&backend, Config(1, absl::Milliseconds(20)), Clock::Real(),
                    null_metrics_.get());
  constexpr int kThreads = 4;
  constexpr int kPerThread = 50;
  const std::vector<TestJobPtr> jobs = SubmitConcurrently(executor, kThreads, kPerThread);
  ASSERT_TRUE(tracker_.AwaitFinished(kThreads * kPerThread));
  const auto batches = backend.batches();
  ASSERT_EQ(batches.size(), static_cast<size_t>(kThreads * kPerThread));
  for (const auto& batch : batches) EXPECT_EQ(batch.inputs.size(), 1u);
  ExpectAllRanOnce(jobs, backend);
}

TEST_F(ExecutorTest, RunsAsManyBatchesAtOnceAsTheBackendAsks) {
  RecordingBackend backend(3);
  backend.Hold();
  FakeClock clock;
  Executor executor(&backend, Config(1, absl::Hours(1)), &clock, null_metrics_.get());
  std::vector<TestJobPtr> jobs;
  for (int i = 0; i < 7; ++i) {
    jobs.push_back(TestJob::Associative(rng_, &tracker_));
    ASSERT_TRUE(executor.Submit(jobs.back()).ok());
  }
  ASSERT_TRUE(backend.AwaitInFlight(3));
  absl::SleepFor(absl::Milliseconds(50));  // a fourth worker, if any, would have entered by now
  EXPECT_EQ(backend.in_flight(), 3);
  EXPECT_EQ(executor.queued_requests(), 4);
  backend.Release();
  ASSERT_TRUE(tracker_.AwaitFinished(7));
  EXPECT_EQ(backend.max_in_flight(), 3);
  ExpectAllRanOnce(jobs, backend);
}

TEST_F(ExecutorTest, ExpiredAndCancelledJobsNeverReachTheBackend) {
  RecordingBackend backend(2);
  FakeClock clock(absl::FromUnixSeconds(1000));
  Executor executor(&backend, Config(100, absl::Hours(1)), &clock, null_metrics_.get());
  TestJobPtr late = TestJob::Associative(rng_, &tracker_, ScanOperator::kAdd, 2, 16,
                                         clock.Now() + absl::Seconds(1));
  TestJobPtr pre = TestJob::Associative(rng_, &tracker_);
  TestJobPtr plain = TestJob::Associative(rng_, &tracker_);
  TestJobPtr post = TestJob::Associative(rng_, &tracker_, ScanOperator::kMax);
  pre->Cancel();
  for (const TestJobPtr& job : {late, pre, plain, post}) ASSERT_TRUE(executor.Submit(job).ok());
  post->Cancel();
  clock.Advance(absl::Seconds(2));
  executor.Wake();
  ASSERT_TRUE(tracker_.AwaitFinished(3));
  EXPECT_EQ(late->status(), absl::DeadlineExceededError("deadline passed while queued"));
  EXPECT_EQ(pre->status(), absl::CancelledError("request cancelled while queued"));
  EXPECT_EQ(post->status(), absl::CancelledError("request cancelled while queued"));
  EXPECT_EQ(plain->finishes(), 0);
  EXPECT_EQ(executor.queued_requests(), 1);
  EXPECT_TRUE(backend.batches().empty());

  executor.Drain();
  ExpectAllRanOnce({plain}, backend);
  EXPECT_EQ(backend.batches().size(), 1u);
  for (const TestJobPtr& job : {late, pre, post}) EXPECT_EQ(job->finishes(), 1);
}

TEST_F(ExecutorTest, DrainRunsEverythingQueuedThenRefuses) {
  RecordingBackend backend(2);
  FakeClock clock;
  Executor executor(&backend, Config(100, absl::Hours(1)), &clock, null_metrics_.get());
  std::vector<TestJobPtr> jobs;
  for (int i = 0; i < 21; ++i) {
    TestJobPtr job = i % 3 == 0   ? TestJob::Linear(rng_, &tracker_)
                     : i % 3 == 1 ? TestJob::Associative(rng_, &tracker_, ScanOperator::kAdd)
                                  : TestJob::Associative(rng_, &tracker_, ScanOperator::kMax);
    // Would deadlock if Finish were called with the executor's mutex held.
    job->set_on_finish([&executor] { (void)executor.queued_requests(); });
    jobs.push_back(job);
    ASSERT_TRUE(executor.Submit(job).ok());
  }
  EXPECT_EQ(executor.queued_requests(), 21);
  executor.Drain();
  ExpectAllRanOnce(jobs, backend);
  const auto batches = backend.batches();
  ASSERT_EQ(batches.size(), 3u);
  std::set<std::string> keys;
  for (const auto& batch : batches) {
    keys.insert(batch.key);
    ASSERT_EQ(batch.inputs.size(), 7u);
    // Each key's jobs in submission order.
    std::vector<const void*> expected;
    for (const TestJobPtr& job : jobs) {
      if (job->key() == batch.key) expected.push_back(job->input());
    }
    EXPECT_EQ(batch.inputs, expected);
  }
  EXPECT_EQ(keys.size(), 3u);
  EXPECT_EQ(executor.batches_executed(), 3);

  TestJobPtr refused = TestJob::Associative(rng_, &tracker_);
  EXPECT_EQ(executor.Submit(refused), absl::UnavailableError("server is draining"));
  executor.Drain();
  EXPECT_EQ(refused->finishes(), 0);
  EXPECT_EQ(executor.queued_requests(), 0);
}

TEST_F(ExecutorTest, DestructorDrains) {
  RecordingBackend backend(1);
  FakeClock clock;
  std::vector<TestJobPtr> jobs;
  {
    Executor executor(&backend, Config(100, absl::Hours(1)), &clock, null_metrics_.get());
    for (int i = 0; i < 3; ++i) {
      jobs.push_back(TestJob::Associative(rng_, &tracker_));
      ASSERT_TRUE(executor.Submit(jobs.back()).ok());
    }
  }
  ExpectAllRanOnce(jobs, backend);
}

TEST_F(ExecutorTest, FailingBackendAnswersEveryJobWithItsStatus) {
  RecordingBackend backend(2);
  const absl::Status failure = absl::InternalError("device lost");
  backend.FailWith(failure);
  FakeClock clock;
  Executor executor(&backend, Config(4, absl::Hours(1)), &clock, null_metrics_.get());
  std::vector<TestJobPtr> jobs;
  for (int i = 0; i < 8; ++i) {
    jobs.push_back(TestJob::Associative(rng_, &tracker_));
    ASSERT_TRUE(executor.Submit(jobs.back()).ok());
  }
  ASSERT_TRUE(tracker_.AwaitFinished(8));
  EXPECT_EQ(backend.batches().size(), 2u);
  for (const TestJobPtr& job : jobs) {
    EXPECT_EQ(job->finishes(), 1);
    EXPECT_EQ(job->status(), failure);
  }
}

TEST_F(ExecutorTest, BatchTooLargeForTheBackendRunsEachJobAlone) {
  RecordingBackend backend(1);
  // Each job has 2 x 16 elements: one fits, two do not; the third job alone is too large too.
  backend.LimitElements(40);
  FakeClock clock;
  Executor executor(&backend, Config(3, absl::Hours(1)), &clock, null_metrics_.get());
  std::vector<TestJobPtr> jobs;
  for (int i = 0; i < 2; ++i) {
    jobs.push_back(TestJob::Associative(rng_, &tracker_));
    ASSERT_TRUE(executor.Submit(jobs.back()).ok());
  }
  jobs.push_back(TestJob::Associative(rng_, &tracker_, ScanOperator::kAdd, /*dim=*/4));
  ASSERT_TRUE(executor.Submit(jobs.back()).ok());
  ASSERT_TRUE(tracker_.AwaitFinished(3));
  // The batch of three, then each job alone.
  EXPECT_EQ(backend.batches().size(), 4u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(jobs[i]->finishes(), 1);
    EXPECT_TRUE(jobs[i]->status().ok()) << jobs[i]->status();
    EXPECT_TRUE(jobs[i]->OutputCorrect());
  }
  EXPECT_EQ(jobs[2]->finishes(), 1);
  EXPECT_EQ(jobs[2]->status().code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(ExecutorTest, ThrowingBackendAnswersInternal) {
  RecordingBackend backend(1);
  backend.ThrowWith("boom");
  FakeClock clock;
  Executor executor(&backend, Config(3, absl::Hours(1)), &clock, null_metrics_.get());
  std::vector<TestJobPtr> jobs;
  for (int i = 0; i < 3; ++i) {
    jobs.push_back(TestJob::Associative(rng_, &tracker_));
    ASSERT_TRUE(executor.Submit(jobs.back()).ok());
  }
  ASSERT_TRUE(tracker_.AwaitFinished(3));
  for (const TestJobPtr& job : jobs) {
    EXPECT_EQ(job->finishes(), 1);
    EXPECT_EQ(job->status(), absl::InternalError("backend failed with an exception: boom"));
  }
  // The worker survived: later batches still run.
  backend.ThrowWith("");
  for (int i = 0; i < 3; ++i) {
    jobs.push_back(TestJob::Associative(rng_, &tracker_));
    ASSERT_TRUE(executor.Submit(jobs.back()).ok());
  }
  ASSERT_TRUE(tracker_.AwaitFinished(6));
  ExpectAllRanOnce({jobs.begin() + 3, jobs.end()}, backend);
}

TEST_F(ExecutorTest, FullQueueRefusesWithoutFinishing) {
  RecordingBackend backend(1);
  FakeClock clock;
  BatchingConfig config = Config(100, absl::Hours(1));
  config.max_queued_requests = 2;
  Executor executor(&backend, config, &clock, null_metrics_.get());
  std::vector<TestJobPtr> jobs;
  for (int i = 0; i < 2; ++i) {
    jobs.push_back(TestJob::Associative(rng_, &tracker_));
    ASSERT_TRUE(executor.Submit(jobs.back()).ok());
  }
  TestJobPtr refused = TestJob::Associative(rng_, &tracker_);
  EXPECT_EQ(executor.Submit(refused),
            absl::ResourceExhaustedError(
                "queue full: max_queued_requests is 2 and 2 requests are queued"));
  executor.Drain();
  ExpectAllRanOnce(jobs, backend);
  EXPECT_EQ(refused->finishes(), 0);
}

TEST_F(ExecutorTest, ReportsQueueWaitBatchesDepthAndDevices) {
  RecordingBackend backend(1);
  FakeClock clock;
  RecordingMetrics metrics;
  Executor executor(&backend, Config(3, absl::Hours(1)), &clock, &metrics);
  std::vector<TestJobPtr> jobs;
  for (int64_t dim : {2, 3}) {
    jobs.push_back(TestJob::Associative(rng_, &tracker_, ScanOperator::kAdd, dim));
    ASSERT_TRUE(executor.Submit(jobs.back()).ok());
  }
  clock.Advance(absl::Milliseconds(250));
  jobs.push_back(TestJob::Associative(rng_, &tracker_, ScanOperator::kAdd, 4));
  ASSERT_TRUE(executor.Submit(jobs.back()).ok());
  ASSERT_TRUE(tracker_.AwaitFinished(3));
  executor.Drain();
  ExpectAllRanOnce(jobs, backend);
  absl::MutexLock lock(&metrics.mu);
  std::vector<absl::Duration> waits = metrics.queue_waits;
  std::sort(waits.begin(), waits.end());
  EXPECT_EQ(waits, (std::vector<absl::Duration>{absl::ZeroDuration(), absl::Milliseconds(250),
                                                absl::Milliseconds(250)}));
  EXPECT_EQ(metrics.batch_requests, (std::vector<int64_t>{3}));
  EXPECT_EQ(metrics.batch_rows, (std::vector<int64_t>{9}));
  EXPECT_EQ(metrics.executions, (std::vector<absl::Duration>{absl::ZeroDuration()}));
  EXPECT_EQ(metrics.depths, (std::vector<int64_t>{1, 2, 3, 0}));
  EXPECT_EQ(metrics.device_memory, (std::vector<std::pair<int, int64_t>>{{0, 12345}}));
}

// Many submitters, random cancellations and deadlines: every job is finished exactly once, with
// OK (and correct outputs, computed exactly once) or with the code that explains why it did not
// run (and then it never reached the backend).
TEST_F(ExecutorTest, ThousandsOfJobsFromManyThreadsFinishExactlyOnce) {
  RecordingBackend backend(4);
  RecordingMetrics metrics;
  Executor executor(&backend, Config(32, absl::Microseconds(200)), Clock::Real(), &metrics);
  constexpr int kThreads = 8;
  constexpr int kPerThread = 1000;
  enum class Fate { kPlain, kCancelledBefore, kCancelledAfter, kDeadline };
  std::vector<std::vector<TestJobPtr>> jobs(kThreads);
  std::vector<std::vector<Fate>> fates(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t, seed = seed_ + t] {
      std::mt19937 rng(seed);
      for (int i = 0; i < kPerThread; ++i) {
        const Fate fate = static_cast<Fate>(rng() % 10 < 7 ? 0 : 1 + rng() % 3);
        const ScanOperator op = rng() % 2 ? ScanOperator::kAdd : ScanOperator::kMax;
        const absl::Time deadline = fate == Fate::kDeadline
                                        ? absl::Now() + absl::Microseconds(rng() % 2000)
                                        : absl::InfiniteFuture();
        TestJobPtr job = TestJob::Associative(rng, &tracker_, op, 1 + rng() % 4, 16, deadline);
        if (fate == Fate::kCancelledBefore) job->Cancel();
        ASSERT_TRUE(executor.Submit(job).ok());
        if (fate == Fate::kCancelledAfter) job->Cancel();
        jobs[t].push_back(std::move(job));
        fates[t].push_back(fate);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  executor.Drain();

  std::map<const void*, int> runs;
  int64_t problems = 0;
  for (const auto& batch : backend.batches()) {
    EXPECT_LE(batch.inputs.size(), 32u);
    for (const void* input : batch.inputs) ++runs[input];
    problems += static_cast<int64_t>(batch.inputs.size());
  }
  int64_t ok = 0, cancelled_before = 0;
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPerThread; ++i) {
      const TestJob& job = *jobs[t][i];
      SCOPED_TRACE(absl::StrCat("thread ", t, " job ", i));
      ASSERT_EQ(job.finishes(), 1);
      const absl::Status status = job.status();
      if (fates[t][i] == Fate::kCancelledBefore) {
        ++cancelled_before;
        EXPECT_EQ(status.code(), absl::StatusCode::kCancelled);
      }
      switch (status.code()) {
        case absl::StatusCode::kOk:
          ++ok;
          EXPECT_EQ(runs[job.input()], 1);
          EXPECT_TRUE(job.OutputCorrect());
          break;
        case absl::StatusCode::kCancelled:
          EXPECT_TRUE(job.cancelled());
          EXPECT_EQ(runs[job.input()], 0);
          break;
        case absl::StatusCode::kDeadlineExceeded:
          EXPECT_EQ(fates[t][i], Fate::kDeadline);
          EXPECT_EQ(runs[job.input()], 0);
          break;
        default:
          ADD_FAILURE() << status;
      }
    }
  }
  EXPECT_EQ(problems, ok);
  EXPECT_GT(ok, kThreads * kPerThread / 2);
  EXPECT_GT(cancelled_before, 0);
  EXPECT_EQ(tracker_.finished(), kThreads * kPerThread);
  EXPECT_EQ(executor.queued_requests(), 0);
  const int64_t batches_executed = executor.batches_executed();
  absl::MutexLock lock(&metrics.mu);
  EXPECT_EQ(static_cast<int64_t>(metrics.queue_waits.size()), ok);
  int64_t batched = 0;
  for (int64_t n : metrics.batch_requests) batched += n;
  EXPECT_EQ(batched, ok);
  EXPECT_EQ(static_cast<int64_t>(metrics.batch_requests.size()), batches_executed);
  ASSERT_FALSE(metrics.depths.empty());
  EXPECT_EQ(metrics.depths.back(), 0);
}

}  // namespace
}  // namespace scanserve
