// A client that opens a Stream, sends a lot and never reads: the server binary (a child process,
// so its RSS is its own) must stop reading that call once stream_max_in_flight requests are
// unanswered, so its memory stays bounded however much the client sends. Then the client reads
// again and every request is answered.
//
// Checked to fail without the protection: with SCANSERVE_FAULT_SERVER_FLAGS=
// --stream_max_in_flight=100000 the server reads all 960 requests (none left unsent by the client,
// against 860-910 with the bound) and its RSS grows by 241 MiB, past the 96 MiB limit; with the
// bound of 16 it grew by 10-42 MiB over three runs (the rest is HTTP/2 flow-control windows, which
// do not grow with what is sent).
#include <sys/wait.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "fault_support.h"
#include "gtest/gtest.h"
#include "reference/reference.h"
#include "requests.h"
#include "scanserve/client.h"
#include "server_process.h"
#include "support/test_support.h"

namespace scanserve::testing {
namespace {

constexpr int64_t kMiB = int64_t{1} << 20;

TEST(SlowReaderTest, ServerStopsReadingAStreamWhoseClientDoesNotRead) {
  constexpr int kInFlight = 16;
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(
      SCANSERVE_SERVER_BINARY, {"--stream_max_in_flight=" + std::to_string(kInFlight),
                                "--cpu_threads=1", "--max_queue_delay_us=200"});
  ASSERT_TRUE(server.ok()) << server.status();
  ClientOptions options;
  options.target = (*server)->target();
  options.default_timeout = absl::Seconds(120);
  std::unique_ptr<Client> client = Client::Create(options).value();

  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  // 512 KiB of request (a and x) and 256 KiB of response each.
  const SeqShape shape{1, 64, 1024};
  const LinearScanOptions linear;
  v1::StreamRequest request;
  *request.mutable_linear_scan() = MakeLinearScan(rng, linear, shape);
  const std::vector<double> want =
      ReferenceLinearScan(linear, LinearScanProblemOf(request.linear_scan(), shape)).y;

  // Warm up the server's pools and threads, then take the baseline.
  {
    std::atomic<int> answered{0};
    std::unique_ptr<Stream> warm = client->OpenStream([&](v1::StreamResponse) { ++answered; });
    for (int i = 0; i < 2 * kInFlight; ++i) ASSERT_TRUE(warm->Send(request).ok());
    ASSERT_TRUE(warm->Finish().ok());
    ASSERT_EQ(answered.load(), 2 * kInFlight);
  }
  absl::SleepFor(absl::Milliseconds(500));
  const int64_t rss_before = (*server)->Rss().value();

  // The callback blocks on its first response: the client reads nothing more until released.
  absl::Notification release;
  std::atomic<int> answered{0}, failed{0};
  std::unique_ptr<Stream> stream = client->OpenStream([&](v1::StreamResponse r) {
    release.WaitForNotification();
    if (r.code() != 0 || !(RelativeL2Error(ToHost(r.linear_scan().y(), DType::kFloat32), want) <=
                           Tolerance(DType::kFloat32))) {
      ++failed;
    }
    ++answered;
  });
  const int requests = static_cast<int>(EnvNumber("SCANSERVE_SLOW_READER_REQUESTS", 960));
  for (int i = 0; i < requests; ++i) {
    request.set_request_id(i);
    ASSERT_TRUE(stream->Send(request).ok());
  }
  // Let it settle: the server has taken what it will take once the client's queue stops moving.
  size_t pending = stream->PendingWrites();
  for (int i = 0; i < 40; ++i) {
    absl::SleepFor(absl::Milliseconds(250));
    const size_t now = stream->PendingWrites();
    if (now == pending && i >= 4) break;
    pending = now;
  }
  const int64_t rss_stalled = (*server)->Rss().value();
  const double sent_mib = requests * request.ByteSizeLong() / double(kMiB);
  const int64_t limit_mib = static_cast<int64_t>(EnvNumber("SCANSERVE_SLOW_READER_RSS_MB", 96));
  std::printf(
      "slow reader: sent %d requests (%.0f MiB), %zu still unsent by the client; server "
      "RSS %.1f -> %.1f MiB (limit +%lld MiB)\n",
      requests, sent_mib, pending, rss_before / double(kMiB), rss_stalled / double(kMiB),
      static_cast<long long>(limit_mib));
  // The server read at most its bound plus what the transport windows hold; the rest waits in
  // the client.
  EXPECT_GE(pending, static_cast<size_t>(requests / 2));
  EXPECT_LT(rss_stalled - rss_before, limit_mib * kMiB);

  // Reading again drains everything.
  release.Notify();
  ASSERT_TRUE(stream->Finish().ok());
  EXPECT_EQ(answered.load(), requests);
  EXPECT_EQ(failed.load(), 0);
  (*server)->Signal(SIGTERM);
  const std::optional<int> status = (*server)->Wait(absl::Seconds(30));
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << (*server)->Log();
}

}  // namespace
}  // namespace scanserve::testing
