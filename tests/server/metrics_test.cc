// Prometheus metrics: served over real HTTP and read back with a plain socket client.
#include "server/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace scanserve {
namespace {

// GET `path` over HTTP/1.0 (the server closes the connection after the answer). Returns the raw
// response, or nothing when the connection fails.
std::optional<std::string> HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return std::nullopt;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return std::nullopt;
  }
  const std::string request = absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
  size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = send(fd, request.data() + sent, request.size() - sent, 0);
    if (n <= 0) {
      close(fd);
      return std::nullopt;
    }
    sent += static_cast<size_t>(n);
  }
  std::string response;
  char buffer[4096];
  for (;;) {
    const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n < 0) {
      close(fd);
      return std::nullopt;
    }
    if (n == 0) break;
    response.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
  return response;
}

// Sample lines of a text exposition: "name{labels} value" -> value. Label sets are kept as
// written; prometheus-cpp writes labels in sorted order with `le` last.
std::map<std::string, double> ParseSamples(const std::string& text) {
  std::map<std::string, double> samples;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    if (space == std::string::npos) continue;
    samples[line.substr(0, space)] = std::strtod(line.c_str() + space + 1, nullptr);
  }
  return samples;
}

// The cumulative count of histogram `name` with `labels` (as written, e.g. op="linear_scan") in
// the bucket whose upper bound is `le` (within rounding), or -1 when there is none.
double Bucket(const std::map<std::string, double>& samples, const std::string& name,
              const std::string& labels, double le) {
  const std::string prefix = absl::StrCat(name, "_bucket{", labels, ",le=\"");
  for (const auto& [key, value] : samples) {
    if (!absl::StartsWith(key, prefix)) continue;
    const double bound = std::strtod(key.c_str() + prefix.size(), nullptr);
    if (std::abs(bound - le) <= 1e-9 * le) return value;
  }
  return -1;
}

double Get(const std::map<std::string, double>& samples, const std::string& key) {
  auto it = samples.find(key);
  return it == samples.end() ? -1 : it->second;
}

void RecordKnownCalls(ServerMetrics& metrics) {
  metrics.RequestFinished(OpKind::kLinearScan, absl::StatusCode::kOk, absl::Milliseconds(3));
  metrics.RequestFinished(OpKind::kLinearScan, absl::StatusCode::kOk, absl::Milliseconds(30));
  metrics.RequestFinished(OpKind::kSelectiveScan, absl::StatusCode::kInvalidArgument,
                          absl::Microseconds(15));
  metrics.BytesReceived(1000);
  metrics.BytesReceived(24);
  metrics.BytesSent(4096);
  metrics.QueueWait(OpKind::kAssociativeScan, absl::Microseconds(150));
  metrics.BatchExecuted(OpKind::kSelectiveScan, 5, 640, absl::Milliseconds(2));
  metrics.SetQueueDepth(9);
  metrics.SetQueueDepth(7);
  metrics.SetBackend("cpu");
  metrics.SetDeviceMemoryUsed(0, 123456789);
}

void ExpectKnownValues(const std::map<std::string, double>& s) {
  EXPECT_EQ(Get(s, "scanserve_requests_total{code=\"OK\",op=\"linear_scan\"}"), 2);
  EXPECT_EQ(Get(s, "scanserve_requests_total{code=\"INVALID_ARGUMENT\",op=\"selective_scan\"}"), 1);
  EXPECT_EQ(Get(s, "scanserve_requests_total{code=\"OK\",op=\"selective_scan\"}"), 0);
  EXPECT_EQ(Get(s, "scanserve_requests_total{code=\"UNAUTHENTICATED\",op=\"associative_scan\"}"),
            0);
  int request_series = 0;
  for (const auto& [key, value] : s) {
    if (absl::StartsWith(key, "scanserve_requests_total{")) ++request_series;
  }
  EXPECT_EQ(request_series, 4 * 17);  // every (op, code) exists from the start

  const std::string linear = "op=\"linear_scan\"";
  EXPECT_EQ(Get(s, "scanserve_request_duration_seconds_count{" + linear + "}"), 2);
  EXPECT_NEAR(Get(s, "scanserve_request_duration_seconds_sum{" + linear + "}"), 0.033, 1e-12);
  EXPECT_EQ(Bucket(s, "scanserve_request_duration_seconds", linear, 10e-6), 0);
  EXPECT_EQ(Bucket(s, "scanserve_request_duration_seconds", linear, 0.00256), 0);
  EXPECT_EQ(Bucket(s, "scanserve_request_duration_seconds", linear, 0.00512), 1);
  EXPECT_EQ(Bucket(s, "scanserve_request_duration_seconds", linear, 0.02048), 1);
  EXPECT_EQ(Bucket(s, "scanserve_request_duration_seconds", linear, 0.04096), 2);
  EXPECT_EQ(Bucket(s, "scanserve_request_duration_seconds", linear, 10.48576), 2);
  EXPECT_EQ(Get(s, "scanserve_request_duration_seconds_bucket{" + linear + ",le=\"+Inf\"}"), 2);
  const std::string selective = "op=\"selective_scan\"";
  EXPECT_EQ(Bucket(s, "scanserve_request_duration_seconds", selective, 10e-6), 0);
  EXPECT_EQ(Bucket(s, "scanserve_request_duration_seconds", selective, 20e-6), 1);

  const std::string associative = "op=\"associative_scan\"";
  EXPECT_EQ(Get(s, "scanserve_queue_wait_seconds_count{" + associative + "}"), 1);
  EXPECT_EQ(Bucket(s, "scanserve_queue_wait_seconds", associative, 80e-6), 0);
  EXPECT_EQ(Bucket(s, "scanserve_queue_wait_seconds", associative, 160e-6), 1);
  EXPECT_EQ(Get(s, "scanserve_queue_wait_seconds_count{" + linear + "}"), 0);

  EXPECT_EQ(Get(s, "scanserve_batch_requests_count{" + selective + "}"), 1);
  EXPECT_EQ(Get(s, "scanserve_batch_requests_sum{" + selective + "}"), 5);
  EXPECT_EQ(Bucket(s, "scanserve_batch_requests", selective, 4), 0);
  EXPECT_EQ(Bucket(s, "scanserve_batch_requests", selective, 8), 1);
  EXPECT_EQ(Get(s, "scanserve_batch_rows_sum{" + selective + "}"), 640);
  EXPECT_EQ(Bucket(s, "scanserve_batch_rows", selective, 256), 0);
  EXPECT_EQ(Bucket(s, "scanserve_batch_rows", selective, 1024), 1);
  EXPECT_EQ(Get(s, "scanserve_execution_seconds_count{" + selective + "}"), 1);
  EXPECT_NEAR(Get(s, "scanserve_execution_seconds_sum{" + selective + "}"), 0.002, 1e-12);

  EXPECT_EQ(Get(s, "scanserve_queue_depth"), 7);
  EXPECT_EQ(Get(s, "scanserve_received_bytes_total"), 1024);
  EXPECT_EQ(Get(s, "scanserve_sent_bytes_total"), 4096);
  EXPECT_EQ(Get(s, "scanserve_backend_info{backend=\"cpu\"}"), 1);
  EXPECT_EQ(Get(s, "scanserve_device_memory_used_bytes{device=\"0\"}"), 123456789);
}

TEST(MetricsTest, ScrapedOverHttp) {
  absl::StatusOr<std::unique_ptr<PrometheusMetrics>> metrics =
      PrometheusMetrics::Create("127.0.0.1:0");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  const int port = (*metrics)->port();
  ASSERT_GT(port, 0);
  RecordKnownCalls(**metrics);

  std::optional<std::string> response = HttpGet(port, "/metrics");
  ASSERT_TRUE(response.has_value()) << "no answer on port " << port;
  ASSERT_TRUE(absl::StartsWith(*response, "HTTP/1.1 200")) << response->substr(0, 200);
  const size_t body = response->find("\r\n\r\n");
  ASSERT_NE(body, std::string::npos);
  const std::map<std::string, double> samples = ParseSamples(response->substr(body + 4));
  SCOPED_TRACE(response->substr(0, 4000));
  ExpectKnownValues(samples);

  // Serialize() shows the same registry without HTTP.
  ExpectKnownValues(ParseSamples((*metrics)->Serialize()));

  // A new backend replaces the old one's series.
  (*metrics)->SetBackend("cuda");
  (*metrics)->SetDeviceMemoryUsed(1, 77);
  response = HttpGet(port, "/metrics");
  ASSERT_TRUE(response.has_value());
  const std::map<std::string, double> after =
      ParseSamples(response->substr(response->find("\r\n\r\n") + 4));
  EXPECT_EQ(Get(after, "scanserve_backend_info{backend=\"cuda\"}"), 1);
  EXPECT_EQ(Get(after, "scanserve_backend_info{backend=\"cpu\"}"), -1);
  EXPECT_EQ(Get(after, "scanserve_device_memory_used_bytes{device=\"0\"}"), 123456789);
  EXPECT_EQ(Get(after, "scanserve_device_memory_used_bytes{device=\"1\"}"), 77);
}

TEST(MetricsTest, MakePrometheusMetricsServesOnTheGivenPort) {
  // A free port: bind to 0, read it back, release it.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int port = ntohs(addr.sin_port);
  close(fd);

  absl::StatusOr<std::unique_ptr<ServerMetrics>> metrics =
      MakePrometheusMetrics(absl::StrCat("127.0.0.1:", port));
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  (*metrics)->RequestFinished(OpKind::kAssociativeScan, absl::StatusCode::kResourceExhausted,
                              absl::Milliseconds(1));
  std::optional<std::string> response = HttpGet(port, "/metrics");
  ASSERT_TRUE(response.has_value());
  const std::map<std::string, double> samples =
      ParseSamples(response->substr(response->find("\r\n\r\n") + 4));
  EXPECT_EQ(
      Get(samples, "scanserve_requests_total{code=\"RESOURCE_EXHAUSTED\",op=\"associative_scan\"}"),
      1);
}

TEST(MetricsTest, PortInUseIsAnErrorNotAnException) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string address = absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));

  absl::StatusOr<std::unique_ptr<ServerMetrics>> metrics = MakePrometheusMetrics(address);
  close(fd);
  ASSERT_FALSE(metrics.ok());
  EXPECT_EQ(metrics.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StartsWith(metrics.status().message(),
                               absl::StrCat("cannot serve metrics on ", address, ": ")))
      << metrics.status();
}

TEST(MetricsTest, ConcurrentUpdatesAreAllCounted) {
  absl::StatusOr<std::unique_ptr<PrometheusMetrics>> metrics = PrometheusMetrics::Create("");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_EQ((*metrics)->port(), 0);
  constexpr int kThreads = 8;
  constexpr int kCalls = 2000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&metrics, t] {
      for (int i = 0; i < kCalls; ++i) {
        (*metrics)->RequestFinished(t % 2 ? OpKind::kLinearScan : OpKind::kAssociativeScan,
                                    absl::StatusCode::kOk, absl::Microseconds(i));
        (*metrics)->BytesReceived(3);
        (*metrics)->BatchExecuted(OpKind::kLinearScanBackward, 2, 8, absl::Microseconds(50));
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  const std::map<std::string, double> s = ParseSamples((*metrics)->Serialize());
  EXPECT_EQ(Get(s, "scanserve_requests_total{code=\"OK\",op=\"linear_scan\"}"),
            kThreads / 2 * kCalls);
  EXPECT_EQ(Get(s, "scanserve_requests_total{code=\"OK\",op=\"associative_scan\"}"),
            kThreads / 2 * kCalls);
  EXPECT_EQ(Get(s, "scanserve_received_bytes_total"), 3 * kThreads * kCalls);
  EXPECT_EQ(Get(s, "scanserve_batch_requests_count{op=\"linear_scan_backward\"}"),
            kThreads * kCalls);
  EXPECT_EQ(Get(s, "scanserve_batch_rows_sum{op=\"linear_scan_backward\"}"), 8 * kThreads * kCalls);
}

TEST(MetricsTest, NullMetricsAcceptsEveryCall) {
  std::unique_ptr<ServerMetrics> metrics = MakeNullMetrics();
  ASSERT_NE(metrics, nullptr);
  RecordKnownCalls(*metrics);
}

}  // namespace
}  // namespace scanserve
