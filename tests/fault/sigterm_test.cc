// SIGTERM under load: the server binary (a child process) gets SIGTERM while unary callers and
// streams keep it busy with batches queued. No request it accepted may be lost:
//   - every request sent on a stream open at SIGTERM is answered and each stream ends OK; the
//     streams keep sending through the grace period and past the listener's close, so requests
//     are queued and running when gRPC's shutdown starts and the drain must finish them. Answers
//     are correct results, except that a request the server reads once its drain has begun (sent
//     after SIGTERM + grace - 200 ms) may be refused UNAVAILABLE, unrun;
//   - every unary call started before SIGTERM succeeds, correctly;
//   - later calls succeed or get UNAVAILABLE (never read by the server, safe to retry elsewhere);
//   - the server exits 0.
// The client watches health (load_balancing set), as ClientOptions recommends for servers that
// restart: it stops sending once health turns NOT_SERVING at SIGTERM, before the listener closes.
// A client that does not watch health can have a call arrive just as the listener closes; gRPC
// then cancels it before any handler sees it and the client gets CANCELLED, not UNAVAILABLE
// (observed with this test and load_balancing left empty: 1-3 such calls at SIGTERM + grace).
//
// Checked to fail without the protection: with SCANSERVE_FAULT_SERVER_FLAGS=--drain_timeout=0s
// (gRPC cancels the open calls when the listener closes instead of letting them drain) the streams
// end "UNAVAILABLE: Cancelling all calls" with up to 32 requests each unanswered, and it fails.
#include <sys/wait.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "fault_support.h"
#include "gtest/gtest.h"
#include "scanserve/client.h"
#include "server_process.h"
#include "support/test_support.h"

namespace scanserve::testing {
namespace {

TEST(SigtermTest, NoAcceptedRequestIsLost) {
  const absl::Duration grace = absl::Seconds(1);
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(
      SCANSERVE_SERVER_BINARY,
      {"--cpu_threads=2", "--shutdown_grace=1s", "--drain_timeout=60s",
       // Batches wait up to 200 ms to fill, so requests are queued at every moment.
       "--max_queue_delay_us=200000"});
  ASSERT_TRUE(server.ok()) << server.status();
  ClientOptions options;
  options.target = (*server)->target();
  options.retry_max_attempts = 1;  // an UNAVAILABLE is seen, not retried away
  options.load_balancing = "round_robin";
  std::unique_ptr<Client> client = Client::Create(options).value();
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  const RequestPool pool(rng, 8, 32, 1024);

  absl::Mutex mu;
  std::vector<std::string> failures;
  auto fail = [&](std::string what) {
    absl::MutexLock lock(&mu);
    if (failures.size() < 20) failures.push_back(std::move(what));
  };
  absl::Time signal_time = absl::InfiniteFuture();
  absl::Mutex time_mu;
  auto signal_at = [&] {
    absl::MutexLock lock(&time_mu);
    return signal_time;
  };

  // Unary callers: loop until UNAVAILABLE, or 10 s after SIGTERM.
  std::atomic<int64_t> unary_ok{0}, unary_refused{0}, unary_before{0};
  auto caller = [&](uint64_t seed) {
    Rng r(seed);
    while (true) {
      const int index = static_cast<int>(r.Int(0, pool.size() - 1));
      const absl::Time started = absl::Now();
      CallOptions call;
      call.timeout = absl::Seconds(60);
      absl::StatusOr<v1::LinearScanResponse> resp = client->LinearScan(pool.request(index), call);
      const bool must_succeed = started < signal_at();
      if (must_succeed) ++unary_before;
      if (resp.ok()) {
        if (std::string bad = pool.Mismatch(index, *resp); !bad.empty()) fail("unary: " + bad);
        ++unary_ok;
      } else if (!must_succeed && resp.status().code() == absl::StatusCode::kUnavailable) {
        ++unary_refused;
        return;
      } else {
        fail("unary call started " + absl::FormatDuration(started - signal_at()) +
             " after SIGTERM: " + resp.status().ToString());
        return;
      }
      if (absl::Now() > signal_at() + absl::Seconds(10)) return;
    }
  };

  // Streams: opened before SIGTERM, sending until SIGTERM + grace + 500 ms, at most 32 unanswered.
  std::atomic<int64_t> stream_sent{0}, stream_answered{0}, stream_refused{0};
  auto streamer = [&](uint64_t seed) {
    Rng r(seed);
    absl::Mutex smu;
    struct Sent {
      int index;
      absl::Time at;
    };
    std::map<uint64_t, Sent> open;  // unanswered
    std::unique_ptr<Stream> stream = client->OpenStream([&](v1::StreamResponse resp) {
      absl::MutexLock lock(&smu);
      auto it = open.find(resp.request_id());
      if (it == open.end()) {
        fail("stream answer for an unknown id");
        return;
      }
      const Sent sent = it->second;
      open.erase(it);
      ++stream_answered;
      if (resp.code() == 0) {
        if (std::string bad = pool.Mismatch(sent.index, resp.linear_scan()); !bad.empty()) {
          fail("stream answer: " + bad);
        }
      } else if (resp.code() == static_cast<int>(absl::StatusCode::kUnavailable) &&
                 sent.at >= signal_at() + grace - absl::Milliseconds(200)) {
        ++stream_refused;  // read once the drain began: refused unrun, safe to retry
      } else {
        fail("stream request sent " + absl::FormatDuration(sent.at - signal_at()) +
             " after SIGTERM answered with code " + std::to_string(resp.code()) + ": " +
             resp.message());
      }
    });
    uint64_t id = 0;
    while (absl::Now() < signal_at() + grace + absl::Milliseconds(500)) {
      {
        absl::MutexLock lock(&smu);
        if (open.size() >= 32) {
          smu.AwaitWithTimeout(
              absl::Condition(
                  +[](std::map<uint64_t, Sent>* o) { return o->size() < 32; }, &open),
              absl::Milliseconds(50));
          continue;
        }
        const int k = static_cast<int>(r.Int(0, pool.size() - 1));
        open[id] = Sent{k, absl::Now()};
        if (!stream->Send(pool.stream_request(k, id)).ok()) {
          fail("stream send failed");
          break;
        }
        ++id;
        ++stream_sent;
      }
      absl::SleepFor(absl::Microseconds(r.Int(0, 2000)));
    }
    const absl::Status s = stream->Finish();
    if (!s.ok()) fail("stream ended with " + s.ToString());
    absl::MutexLock lock(&smu);
    if (!open.empty()) fail(std::to_string(open.size()) + " stream requests never answered");
  };

  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) threads.emplace_back(caller, rng.seed() * 17 + t);
  for (int t = 0; t < 3; ++t) threads.emplace_back(streamer, rng.seed() * 19 + t);
  absl::SleepFor(absl::Milliseconds(1500));
  {
    absl::MutexLock lock(&time_mu);
    signal_time = absl::Now();
  }
  (*server)->Signal(SIGTERM);
  const std::optional<int> status = (*server)->Wait(absl::Seconds(90));
  for (auto& t : threads) t.join();
  {
    absl::MutexLock lock(&mu);
    for (const std::string& f : failures) ADD_FAILURE() << f;
  }
  std::printf(
      "sigterm: unary %lld ok (%lld started before the cut-off), %lld refused after; "
      "streams %lld sent, %lld answered (%lld of them refused UNAVAILABLE while draining)\n",
      static_cast<long long>(unary_ok.load()), static_cast<long long>(unary_before.load()),
      static_cast<long long>(unary_refused.load()), static_cast<long long>(stream_sent.load()),
      static_cast<long long>(stream_answered.load()),
      static_cast<long long>(stream_refused.load()));
  EXPECT_GT(unary_ok.load(), 0);
  EXPECT_GT(stream_sent.load(), 0);
  EXPECT_EQ(stream_answered.load(), stream_sent.load());
  ASSERT_TRUE(status.has_value()) << "server still running 90 s after SIGTERM";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << (*server)->Log();
  EXPECT_NE((*server)->Log().find("received SIGTERM"), std::string::npos) << (*server)->Log();
}

}  // namespace
}  // namespace scanserve::testing
