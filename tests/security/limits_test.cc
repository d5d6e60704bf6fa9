// Resource limits over the wire, each against a real server on loopback: concurrent streams per
// connection, message size, bytes queued in total, and the metrics listener's address. (Elements
// per request is covered by validation_test and the malformed cases of integration_test.)
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "scanserve/client.h"
#include "security_support.h"
#include "server/server.h"

namespace scanserve::testing {
namespace {

// scanserve_queue_depth, polled until `done` holds or 10 s pass; -1 when never scraped.
double QueueDepthWhen(int metrics_port, const std::function<bool(double)>& done) {
  const absl::Time until = absl::Now() + absl::Seconds(10);
  double depth = -1;
  do {
    absl::StatusOr<std::string> text = ScrapeMetrics("127.0.0.1", metrics_port);
    if (text.ok()) depth = MetricValue(*text, "scanserve_queue_depth");
    if (done(depth)) break;
    absl::SleepFor(absl::Milliseconds(10));
  } while (absl::Now() < until);
  return depth;
}

TEST(LimitsTest, MaxConcurrentStreamsBoundsTheCallsOneConnectionHasOnTheServer) {
  constexpr int kLimit = 2;
  constexpr int kCalls = 6;
  ServerConfig config = LoopbackConfig();
  config.metrics_address = "127.0.0.1:0";
  config.max_concurrent_streams = kLimit;
  // Queued requests wait this long for company, so the calls the server holds can be counted.
  config.batching.max_queue_delay = absl::Seconds(2);
  ScanServer server(config);
  absl::StatusOr<int> port = server.Start();
  ASSERT_TRUE(port.ok()) << port.status();

  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  std::unique_ptr<Client> client = Client::Create(LoopbackClient(*port)).value();
  std::vector<LinearCall> calls;
  std::vector<std::future<absl::StatusOr<v1::LinearScanResponse>>> answers;
  for (int i = 0; i < kCalls; ++i) {
    calls.push_back(RandomLinearScan(rng, 1, 2, 32));
    answers.push_back(client->LinearScanAsync(calls.back().request));
  }
  ASSERT_EQ(QueueDepthWhen(server.metrics_port(), [](double d) { return d >= kLimit; }), kLimit);
  // Well inside the batching delay: had the connection more streams, they would be queued now.
  absl::SleepFor(absl::Milliseconds(500));
  EXPECT_EQ(QueueDepthWhen(server.metrics_port(), [](double) { return true; }), kLimit);
  // The rest waited in the client and are served as streams free up, one round at a time.
  for (int i = 0; i < kCalls; ++i) {
    absl::StatusOr<v1::LinearScanResponse> r = answers[i].get();
    ASSERT_TRUE(r.ok()) << r.status();
    ExpectMatches(calls[i], *r);
  }
  EXPECT_GE(server.batches_executed(), kCalls / kLimit);
}

TEST(LimitsTest, MessagesPastMaxMessageBytesAreRefused) {
  ServerConfig config = LoopbackConfig();
  config.limits.max_message_bytes = 64 << 10;
  ScanServer server(config);
  absl::StatusOr<int> port = server.Start();
  ASSERT_TRUE(port.ok()) << port.status();
  ClientOptions options = LoopbackClient(*port);
  options.max_send_message_bytes = -1;  // only the server's limit is under test
  options.max_receive_message_bytes = -1;
  std::unique_ptr<Client> client = Client::Create(options).value();

  v1::EchoRequest small;
  small.set_payload(std::string(32 << 10, 's'));
  absl::StatusOr<v1::EchoResponse> echoed = client->Echo(small);
  ASSERT_TRUE(echoed.ok()) << echoed.status();
  EXPECT_EQ(echoed->payload(), small.payload());

  v1::EchoRequest large;
  large.set_payload(std::string(100 << 10, 'l'));
  EXPECT_EQ(client->Echo(large).status().code(), absl::StatusCode::kResourceExhausted);

  // Refused on the way in, before decoding: a request that would be INVALID_ARGUMENT (x missing)
  // and whose answer would be small is RESOURCE_EXHAUSTED only because of its size.
  v1::LinearScanRequest oversized;
  *oversized.mutable_a() =
      MakeTensor(std::vector<float>(32 << 10, 0.5f), {1, 1, 32 << 10}, DType::kFloat32).value();
  absl::StatusOr<v1::LinearScanResponse> refused = client->LinearScan(oversized);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  *oversized.mutable_a() =
      MakeTensor(std::vector<float>(1 << 10, 0.5f), {1, 1, 1 << 10}, DType::kFloat32).value();
  EXPECT_EQ(client->LinearScan(oversized).status().code(), absl::StatusCode::kInvalidArgument);
  // The refusals cost the connection nothing: the next call is served.
  EXPECT_TRUE(client->Echo(small).ok());
}

TEST(LimitsTest, RequestsPastMaxQueuedBytesAreRefusedWhileOthersWait) {
  ServerConfig config = LoopbackConfig();
  config.batching.max_queue_delay = absl::Seconds(30);  // nothing runs until the drain
  // One request of (1, 4, 1024) float32 holds about 48 KiB queued (a, x and y): one fits, two
  // do not.
  config.batching.max_queued_bytes = 64 << 10;
  config.metrics_address = "127.0.0.1:0";
  ScanServer server(config);
  absl::StatusOr<int> port = server.Start();
  ASSERT_TRUE(port.ok()) << port.status();
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  std::unique_ptr<Client> client = Client::Create(LoopbackClient(*port)).value();

  const LinearCall first = RandomLinearScan(rng, 1, 4, 1024);
  auto queued = client->LinearScanAsync(first.request);
  ASSERT_EQ(QueueDepthWhen(server.metrics_port(), [](double d) { return d >= 1; }), 1);
  const LinearCall second = RandomLinearScan(rng, 1, 4, 1024);
  CallOptions call;
  call.timeout = absl::Seconds(5);  // queued instead of refused, it would wait out the delay
  const absl::StatusOr<v1::LinearScanResponse> refused = client->LinearScan(second.request, call);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_NE(refused.status().message().find("max_queued_bytes"), std::string::npos)
      << refused.status();

  server.Shutdown();  // drains: the queued request runs
  absl::StatusOr<v1::LinearScanResponse> r = queued.get();
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectMatches(first, *r);
}

// An IPv4 address of this host other than loopback; empty when it has none.
std::string NonLoopbackAddress() {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return "";
  std::string found;
  for (ifaddrs* i = list; i != nullptr && found.empty(); i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
    const in_addr address = reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr;
    if ((ntohl(address.s_addr) >> 24) == 127) continue;
    char text[INET_ADDRSTRLEN];
    if (inet_ntop(AF_INET, &address, text, sizeof(text)) != nullptr) found = text;
  }
  freeifaddrs(list);
  return found;
}

TEST(LimitsTest, MetricsListenOnlyOnTheConfiguredAddress) {
  const std::string external = NonLoopbackAddress();
  for (const std::string host : {"127.0.0.1", "0.0.0.0"}) {
    SCOPED_TRACE("metrics_address " + host + ":0");
    ServerConfig config = LoopbackConfig();
    config.metrics_address = host + ":0";
    ScanServer server(config);
    ASSERT_TRUE(server.Start().ok());
    ASSERT_GT(server.metrics_port(), 0);
    absl::StatusOr<std::string> local = ScrapeMetrics("127.0.0.1", server.metrics_port());
    ASSERT_TRUE(local.ok()) << local.status();
    EXPECT_NE(local->find("scanserve_queue_depth"), std::string::npos);
    if (external.empty()) {
      std::printf("no non-loopback IPv4 address on this host: only the loopback side checked\n");
      continue;
    }
    absl::StatusOr<std::string> remote = ScrapeMetrics(external, server.metrics_port());
    if (host == "127.0.0.1") {
      EXPECT_EQ(remote.status().code(), absl::StatusCode::kUnavailable)
          << "reachable on " << external;
      EXPECT_NE(remote.status().message().find("Connection refused"), std::string::npos)
          << remote.status();
    } else {
      EXPECT_TRUE(remote.ok()) << remote.status();
    }
  }
}

}  // namespace
}  // namespace scanserve::testing
