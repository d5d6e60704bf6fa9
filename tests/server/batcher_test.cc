// The batching policy, driven with explicit times.
#include "server/batcher.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace scanserve {
namespace {

class QueuedJob : public Job {
 public:
  using Job::Job;
  void Finish(const absl::Status&) override { ADD_FAILURE() << "the batcher must not finish jobs"; }
};

// Jobs of one key share `op`; the shape gives rows = dim and elements = dim * length.
JobPtr MakeJob(ScanOperator op, int64_t dim, int64_t length, int64_t bytes = 100,
               absl::Time deadline = absl::InfiniteFuture()) {
  AssociativeScanWork work;
  work.options.op = op;
  work.problem.shape = SeqShape{1, dim, length};
  return std::make_shared<QueuedJob>(work, bytes, deadline);
}

JobPtr MakeJob(int64_t rows = 1) { return MakeJob(ScanOperator::kAdd, rows, 8); }

const absl::Time t0 = absl::FromUnixSeconds(1000);

BatchingConfig Config() {
  BatchingConfig config;
  config.max_batch_requests = 4;
  config.max_batch_rows = 1000;
  config.max_batch_elements = 1 << 20;
  config.max_queue_delay = absl::Seconds(1);
  config.max_queued_requests = 100;
  config.max_queued_bytes = 1 << 20;
  return config;
}

TEST(BatcherTest, JobDerivesOpKeyRowsAndElements) {
  SelectiveScanWork work;
  work.options.state_dim = 16;
  work.problem.shape = SeqShape{3, 5, 7};
  QueuedJob job(work, 1234, t0);
  EXPECT_EQ(job.op(), OpKind::kSelectiveScan);
  EXPECT_EQ(job.key(), SignatureKey(work.options));
  EXPECT_EQ(job.rows(), 15);
  EXPECT_EQ(job.elements(), 105);
  EXPECT_EQ(job.bytes(), 1234);
  EXPECT_EQ(job.deadline(), t0);
  EXPECT_EQ(WorkOp(Work(LinearScanBackwardWork{})), OpKind::kLinearScanBackward);
  EXPECT_EQ(WorkKey(Work(LinearScanWork{})), SignatureKey(LinearScanOptions{}));
}

TEST(BatcherTest, ReadyWhenRequestLimitReached) {
  Batcher batcher(Config());
  std::vector<JobPtr> jobs;
  for (int i = 0; i < 3; ++i) {
    jobs.push_back(MakeJob());
    ASSERT_TRUE(batcher.Enqueue(jobs.back(), t0 + absl::Milliseconds(i)).ok());
  }
  EXPECT_TRUE(batcher.TakeBatch(t0 + absl::Milliseconds(10)).empty());
  EXPECT_EQ(batcher.NextEvent(), t0 + absl::Seconds(1));
  jobs.push_back(MakeJob());
  ASSERT_TRUE(batcher.Enqueue(jobs.back(), t0 + absl::Milliseconds(20)).ok());
  // Ready by size: the next event is now, not after the delay.
  EXPECT_EQ(batcher.NextEvent(), t0);
  EXPECT_EQ(batcher.TakeBatch(t0 + absl::Milliseconds(20)), jobs);
  EXPECT_EQ(jobs[3]->enqueued_at(), t0 + absl::Milliseconds(20));
  EXPECT_EQ(batcher.queued_requests(), 0);
  EXPECT_EQ(batcher.queued_bytes(), 0);
  EXPECT_EQ(batcher.NextEvent(), absl::InfiniteFuture());
}

TEST(BatcherTest, ReadyWhenRowLimitReachedAndBatchStaysWithinIt) {
  BatchingConfig config = Config();
  config.max_batch_requests = 100;
  config.max_batch_rows = 100;
  Batcher batcher(config);
  std::vector<JobPtr> jobs;
  for (int i = 0; i < 3; ++i) {
    jobs.push_back(MakeJob(30));
    ASSERT_TRUE(batcher.Enqueue(jobs.back(), t0).ok());
  }
  EXPECT_TRUE(batcher.TakeBatch(t0).empty());  // 90 rows
  jobs.push_back(MakeJob(30));
  ASSERT_TRUE(batcher.Enqueue(jobs.back(), t0 + absl::Milliseconds(5)).ok());  // 120 rows
  EXPECT_EQ(batcher.TakeBatch(t0 + absl::Milliseconds(5)),
            std::vector<JobPtr>(jobs.begin(), jobs.begin() + 3));
  EXPECT_TRUE(batcher.TakeBatch(t0 + absl::Milliseconds(5)).empty());
  EXPECT_EQ(batcher.queued_requests(), 1);
  EXPECT_EQ(batcher.NextEvent(), t0 + absl::Milliseconds(5) + absl::Seconds(1));
}

TEST(BatcherTest, ReadyWhenElementLimitReached) {
  BatchingConfig config = Config();
  config.max_batch_requests = 100;
  config.max_batch_elements = 1000;
  Batcher batcher(config);
  JobPtr a = MakeJob(ScanOperator::kAdd, 2, 300);  // 600 elements
  JobPtr b = MakeJob(ScanOperator::kAdd, 1, 300);  // 900
  JobPtr c = MakeJob(ScanOperator::kAdd, 1, 100);  // 1000: ready, and fits exactly
  JobPtr d = MakeJob(ScanOperator::kAdd, 1, 1);
  ASSERT_TRUE(batcher.Enqueue(a, t0).ok());
  ASSERT_TRUE(batcher.Enqueue(b, t0).ok());
  EXPECT_TRUE(batcher.TakeBatch(t0).empty());
  ASSERT_TRUE(batcher.Enqueue(c, t0).ok());
  ASSERT_TRUE(batcher.Enqueue(d, t0).ok());
  EXPECT_EQ(batcher.TakeBatch(t0), (std::vector<JobPtr>{a, b, c}));
  EXPECT_TRUE(batcher.TakeBatch(t0).empty());
  EXPECT_EQ(batcher.TakeBatch(t0 + absl::Seconds(1)), (std::vector<JobPtr>{d}));
}

TEST(BatcherTest, DelayCountsFromTheOldestJob) {
  Batcher batcher(Config());
  JobPtr a = MakeJob();
  JobPtr b = MakeJob();
  ASSERT_TRUE(batcher.Enqueue(a, t0).ok());
  ASSERT_TRUE(batcher.Enqueue(b, t0 + absl::Milliseconds(300)).ok());
  EXPECT_EQ(batcher.NextEvent(), t0 + absl::Seconds(1));
  EXPECT_TRUE(batcher.TakeBatch(t0 + absl::Milliseconds(999)).empty());
  EXPECT_EQ(batcher.TakeBatch(t0 + absl::Seconds(1)), (std::vector<JobPtr>{a, b}));
}

TEST(BatcherTest, FifoAcrossBatches) {
  Batcher batcher(Config());  // 4 requests per batch
  std::vector<JobPtr> jobs;
  for (int i = 0; i < 10; ++i) {
    jobs.push_back(MakeJob());
    ASSERT_TRUE(batcher.Enqueue(jobs.back(), t0).ok());
  }
  EXPECT_EQ(batcher.TakeBatch(t0), std::vector<JobPtr>(jobs.begin(), jobs.begin() + 4));
  EXPECT_EQ(batcher.TakeBatch(t0), std::vector<JobPtr>(jobs.begin() + 4, jobs.begin() + 8));
  EXPECT_TRUE(batcher.TakeBatch(t0).empty());
  EXPECT_EQ(batcher.TakeBatch(t0 + absl::Seconds(1)),
            std::vector<JobPtr>(jobs.begin() + 8, jobs.end()));
}

TEST(BatcherTest, KeysQueueSeparatelyAndOldestReadyQueueGoesFirst) {
  Batcher batcher(Config());
  JobPtr add1 = MakeJob(ScanOperator::kAdd, 1, 8);
  JobPtr max1 = MakeJob(ScanOperator::kMax, 1, 8);
  JobPtr add2 = MakeJob(ScanOperator::kAdd, 1, 8);
  JobPtr max2 = MakeJob(ScanOperator::kMax, 1, 8);
  ASSERT_NE(add1->key(), max1->key());
  ASSERT_TRUE(batcher.Enqueue(max1, t0).ok());
  ASSERT_TRUE(batcher.Enqueue(add1, t0 + absl::Milliseconds(1)).ok());
  ASSERT_TRUE(batcher.Enqueue(add2, t0 + absl::Milliseconds(2)).ok());
  ASSERT_TRUE(batcher.Enqueue(max2, t0 + absl::Milliseconds(3)).ok());
  const absl::Time later = t0 + absl::Seconds(5);
  EXPECT_EQ(batcher.TakeBatch(later), (std::vector<JobPtr>{max1, max2}));
  EXPECT_EQ(batcher.TakeBatch(later), (std::vector<JobPtr>{add1, add2}));
  EXPECT_TRUE(batcher.TakeBatch(later).empty());

  // A queue ready by size goes before an older one that is not ready yet.
  JobPtr lone = MakeJob(ScanOperator::kMin, 1, 8);
  ASSERT_TRUE(batcher.Enqueue(lone, later).ok());
  std::vector<JobPtr> full;
  for (int i = 0; i < 4; ++i) {
    full.push_back(MakeJob(ScanOperator::kMul, 1, 8));
    ASSERT_TRUE(batcher.Enqueue(full.back(), later + absl::Milliseconds(1)).ok());
  }
  EXPECT_EQ(batcher.NextEvent(), later + absl::Milliseconds(1));
  EXPECT_EQ(batcher.TakeBatch(later + absl::Milliseconds(1)), full);
  EXPECT_EQ(batcher.NextEvent(), later + absl::Seconds(1));
}

TEST(BatcherTest, OversizeJobRunsAlone) {
  BatchingConfig config = Config();
  config.max_batch_requests = 100;
  config.max_batch_rows = 100;
  Batcher batcher(config);
  JobPtr small1 = MakeJob(10);
  JobPtr huge = MakeJob(500);
  JobPtr small2 = MakeJob(10);
  ASSERT_TRUE(batcher.Enqueue(small1, t0).ok());
  ASSERT_TRUE(batcher.Enqueue(huge, t0).ok());
  ASSERT_TRUE(batcher.Enqueue(small2, t0).ok());
  EXPECT_EQ(batcher.TakeBatch(t0), (std::vector<JobPtr>{small1}));
  EXPECT_EQ(batcher.TakeBatch(t0), (std::vector<JobPtr>{huge}));
  EXPECT_TRUE(batcher.TakeBatch(t0).empty());
  EXPECT_EQ(batcher.TakeBatch(t0 + absl::Seconds(1)), (std::vector<JobPtr>{small2}));

  JobPtr alone = MakeJob(500);
  ASSERT_TRUE(batcher.Enqueue(alone, t0).ok());
  EXPECT_EQ(batcher.TakeBatch(t0), (std::vector<JobPtr>{alone}));
}

TEST(BatcherTest, DeadlinesExpireAtOrBeforeNow) {
  BatchingConfig config = Config();
  config.max_queue_delay = absl::Seconds(10);
  Batcher batcher(config);
  JobPtr late = MakeJob(ScanOperator::kAdd, 1, 8, 100, t0 + absl::Seconds(5));
  JobPtr soon = MakeJob(ScanOperator::kAdd, 1, 8, 100, t0 + absl::Seconds(2));
  JobPtr never = MakeJob(ScanOperator::kAdd, 1, 8, 100);
  JobPtr other = MakeJob(ScanOperator::kMax, 1, 8, 100, t0 + absl::Seconds(2));
  ASSERT_TRUE(batcher.Enqueue(late, t0).ok());
  ASSERT_TRUE(batcher.Enqueue(soon, t0).ok());
  ASSERT_TRUE(batcher.Enqueue(never, t0).ok());
  ASSERT_TRUE(batcher.Enqueue(other, t0).ok());
  EXPECT_EQ(batcher.NextEvent(), t0 + absl::Seconds(2));
  EXPECT_TRUE(batcher.TakeExpired(t0 + absl::Seconds(2) - absl::Nanoseconds(1)).empty());
  std::vector<JobPtr> expired = batcher.TakeExpired(t0 + absl::Seconds(2));
  std::set<JobPtr> expired_set(expired.begin(), expired.end());
  EXPECT_EQ(expired.size(), 2u);
  EXPECT_EQ(expired_set, (std::set<JobPtr>{soon, other}));
  EXPECT_EQ(batcher.queued_requests(), 2);
  EXPECT_EQ(batcher.queued_bytes(), 200);
  EXPECT_EQ(batcher.NextEvent(), t0 + absl::Seconds(5));
  // The job removed from the middle leaves the order of the rest alone.
  EXPECT_EQ(batcher.TakeBatch(t0 + absl::Seconds(3), /*flush=*/true),
            (std::vector<JobPtr>{late, never}));
  EXPECT_TRUE(batcher.TakeExpired(t0 + absl::Seconds(100)).empty());
  EXPECT_EQ(batcher.NextEvent(), absl::InfiniteFuture());
}

TEST(BatcherTest, CancelledJobsAreTakenOut) {
  Batcher batcher(Config());
  JobPtr a = MakeJob();
  JobPtr b = MakeJob();
  JobPtr c = MakeJob();
  JobPtr pre = MakeJob(ScanOperator::kMax, 1, 8);
  pre->Cancel();
  ASSERT_TRUE(batcher.Enqueue(a, t0).ok());
  ASSERT_TRUE(batcher.Enqueue(b, t0).ok());
  ASSERT_TRUE(batcher.Enqueue(c, t0).ok());
  ASSERT_TRUE(batcher.Enqueue(pre, t0).ok());
  // Another job's cancellation, seen first, must not hide `pre`.
  EXPECT_EQ(batcher.TakeExpired(t0), (std::vector<JobPtr>{pre}));
  EXPECT_TRUE(batcher.TakeExpired(t0).empty());
  b->Cancel();
  b->Cancel();
  EXPECT_EQ(batcher.TakeExpired(t0), (std::vector<JobPtr>{b}));
  EXPECT_EQ(batcher.queued_requests(), 2);
  a->Cancel();
  EXPECT_EQ(batcher.TakeExpired(t0), (std::vector<JobPtr>{a}));
  EXPECT_EQ(batcher.NextEvent(), t0 + absl::Seconds(1));
  EXPECT_EQ(batcher.TakeBatch(t0 + absl::Seconds(1)), (std::vector<JobPtr>{c}));
  EXPECT_EQ(batcher.queued_requests(), 0);
}

TEST(BatcherTest, RequestLimitBackpressure) {
  BatchingConfig config = Config();
  config.max_queued_requests = 2;
  Batcher batcher(config);
  ASSERT_TRUE(batcher.Enqueue(MakeJob(), t0).ok());
  ASSERT_TRUE(batcher.Enqueue(MakeJob(ScanOperator::kMax, 1, 8), t0).ok());
  JobPtr third = MakeJob();
  const absl::Status status = batcher.Enqueue(third, t0 + absl::Seconds(1));
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(status.message(), "queue full: max_queued_requests is 2 and 2 requests are queued");
  EXPECT_EQ(batcher.queued_requests(), 2);
  EXPECT_EQ(batcher.queued_bytes(), 200);
  EXPECT_EQ(batcher.TakeBatch(t0 + absl::Seconds(1)).size(), 1u);
  EXPECT_TRUE(batcher.Enqueue(third, t0 + absl::Seconds(1)).ok());
}

TEST(BatcherTest, ByteLimitBackpressure) {
  BatchingConfig config = Config();
  config.max_queued_bytes = 1000;
  Batcher batcher(config);
  ASSERT_TRUE(batcher.Enqueue(MakeJob(ScanOperator::kAdd, 1, 8, 600), t0).ok());
  const absl::Status status = batcher.Enqueue(MakeJob(ScanOperator::kAdd, 1, 8, 500), t0);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(status.message(),
            "queue full: max_queued_bytes is 1000; 600 bytes are queued and this request needs "
            "500");
  EXPECT_EQ(batcher.queued_requests(), 1);
  EXPECT_EQ(batcher.queued_bytes(), 600);
  // Reaching the limit exactly is allowed.
  EXPECT_TRUE(batcher.Enqueue(MakeJob(ScanOperator::kAdd, 1, 8, 400), t0).ok());
  EXPECT_EQ(batcher.queued_bytes(), 1000);
}

TEST(BatcherTest, FlushTakesEveryQueueOldestFirstWithinLimits) {
  Batcher batcher(Config());  // 4 requests per batch
  std::vector<JobPtr> adds, maxes;
  for (int i = 0; i < 6; ++i) {
    adds.push_back(MakeJob(ScanOperator::kAdd, 1, 8));
    ASSERT_TRUE(batcher.Enqueue(adds.back(), t0 + absl::Milliseconds(10 + i)).ok());
  }
  maxes.push_back(MakeJob(ScanOperator::kMax, 1, 8));
  ASSERT_TRUE(batcher.Enqueue(maxes.back(), t0).ok());
  // Without flush only the full add queue is ready.
  EXPECT_EQ(batcher.TakeBatch(t0 + absl::Milliseconds(20)),
            std::vector<JobPtr>(adds.begin(), adds.begin() + 4));
  EXPECT_TRUE(batcher.TakeBatch(t0 + absl::Milliseconds(20)).empty());
  EXPECT_EQ(batcher.TakeBatch(t0 + absl::Milliseconds(20), true), maxes);
  EXPECT_EQ(batcher.TakeBatch(t0 + absl::Milliseconds(20), true),
            std::vector<JobPtr>(adds.begin() + 4, adds.end()));
  EXPECT_TRUE(batcher.TakeBatch(t0 + absl::Milliseconds(20), true).empty());
  EXPECT_EQ(batcher.NextEvent(), absl::InfiniteFuture());
}

// Thousands of jobs over several keys with random deadlines, cancellations, shapes and times:
// every job comes out exactly once, batches keep per-key FIFO order and the limits, and
// NextEvent never promises less than what the calls return.
TEST(BatcherTest, RandomizedWorkloadKeepsEveryInvariant) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(absl::StrCat("seed ", seed));
  std::mt19937 rng(seed);
  BatchingConfig config;
  config.max_batch_requests = 16;
  config.max_batch_rows = 64;
  config.max_batch_elements = 2048;
  config.max_queue_delay = absl::Milliseconds(3);
  config.max_queued_requests = 1 << 20;
  config.max_queued_bytes = int64_t{1} << 40;
  Batcher batcher(config);
  const ScanOperator ops[] = {ScanOperator::kAdd, ScanOperator::kMax, ScanOperator::kMin};

  std::map<const Job*, int> order;  // arrival index
  std::map<const Job*, int> seen;
  std::vector<JobPtr> live;
  absl::Time now = t0;
  int arrivals = 0;
  int64_t expired_jobs = 0;
  auto check_expired = [&](const std::vector<JobPtr>& expired) {
    for (const JobPtr& job : expired) {
      ++seen[job.get()];
      ++expired_jobs;
      EXPECT_TRUE(job->cancelled() || job->deadline() <= now);
    }
  };
  std::map<std::string, int> last_taken;  // per key, arrival index of the last job batched
  // Called right after TakeExpired(now), so no batched job may be cancelled or late.
  auto check_batch = [&](const std::vector<JobPtr>& batch) {
    if (batch.empty()) return;
    int64_t rows = 0, elements = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      const Job& job = *batch[i];
      ++seen[&job];
      EXPECT_EQ(job.key(), batch[0]->key());
      auto [it, first] = last_taken.try_emplace(job.key(), -1);
      EXPECT_LT(it->second, order[&job]) << "FIFO order broken";
      it->second = order[&job];
      EXPECT_FALSE(job.cancelled());
      EXPECT_GT(job.deadline(), now);
      rows += job.rows();
      elements += job.elements();
    }
    EXPECT_LE(static_cast<int64_t>(batch.size()), config.max_batch_requests);
    if (batch.size() > 1) {
      EXPECT_LE(rows, config.max_batch_rows);
      EXPECT_LE(elements, config.max_batch_elements);
    }
  };
  for (int step = 0; step < 6000; ++step) {
    const int action = std::uniform_int_distribution<int>(0, 9)(rng);
    if (action < 6) {
      const int64_t dim = std::uniform_int_distribution<int64_t>(1, 24)(rng);
      const int64_t length = std::uniform_int_distribution<int64_t>(1, 64)(rng);
      const absl::Time deadline =
          std::bernoulli_distribution(0.3)(rng)
              ? now + absl::Microseconds(std::uniform_int_distribution<int>(0, 8000)(rng))
              : absl::InfiniteFuture();
      JobPtr job = MakeJob(ops[rng() % 3], dim, length, 64, deadline);
      order[job.get()] = arrivals++;
      ASSERT_TRUE(batcher.Enqueue(job, now).ok());
      live.push_back(std::move(job));
    } else if (action == 6 && !live.empty()) {
      live[rng() % live.size()]->Cancel();
    } else if (action == 7) {
      now += absl::Microseconds(std::uniform_int_distribution<int>(0, 2000)(rng));
    } else {
      const absl::Time next = batcher.NextEvent();
      std::vector<JobPtr> expired = batcher.TakeExpired(now);
      check_expired(expired);
      std::vector<JobPtr> batch = batcher.TakeBatch(now);
      if (next > now) {
        EXPECT_TRUE(batch.empty()) << "a batch came before NextEvent";
      } else {
        // The executor sleeps until NextEvent: a past event that yields nothing would spin it.
        EXPECT_FALSE(expired.empty() && batch.empty());
      }
      check_batch(batch);
    }
  }
  now += absl::Seconds(1);
  check_expired(batcher.TakeExpired(now));
  for (;;) {
    std::vector<JobPtr> batch = batcher.TakeBatch(now, true);
    if (batch.empty()) break;
    check_batch(batch);
  }
  EXPECT_EQ(batcher.queued_requests(), 0);
  EXPECT_EQ(batcher.queued_bytes(), 0);
  EXPECT_EQ(batcher.NextEvent(), absl::InfiniteFuture());
  EXPECT_EQ(static_cast<int>(seen.size()), arrivals);
  for (const auto& [job, count] : seen) EXPECT_EQ(count, 1);
  EXPECT_GT(expired_jobs, 0);
}

}  // namespace
}  // namespace scanserve
