// What the server reports about itself. Components take a ServerMetrics* and never know whether
// it is Prometheus or a no-op (tests). Thread-safety: implementations are safe from any thread.
#ifndef SCANSERVE_SERVER_METRICS_H_
#define SCANSERVE_SERVER_METRICS_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "scanserve/ops.h"

namespace scanserve {

class ServerMetrics {
 public:
  virtual ~ServerMetrics() = default;
  // One per answered request, whatever its outcome; latency from arrival to answer.
  virtual void RequestFinished(OpKind op, absl::StatusCode code, absl::Duration latency) = 0;
  virtual void BytesReceived(int64_t bytes) = 0;
  virtual void BytesSent(int64_t bytes) = 0;
  // Time from enqueue to the start of the job's batch.
  virtual void QueueWait(OpKind op, absl::Duration wait) = 0;
  virtual void BatchExecuted(OpKind op, int64_t requests, int64_t rows,
                             absl::Duration execution) = 0;
  virtual void SetQueueDepth(int64_t requests) = 0;
  virtual void SetBackend(const std::string& name) = 0;
  virtual void SetDeviceMemoryUsed(int device, int64_t bytes) = 0;
};

// Discards everything.
std::unique_ptr<ServerMetrics> MakeNullMetrics();

// Prometheus metrics served over HTTP at `bind_address` (e.g. "0.0.0.0:9090") under /metrics.
// See README.md for the metric names.
absl::StatusOr<std::unique_ptr<ServerMetrics>> MakePrometheusMetrics(
    const std::string& bind_address);

// The Prometheus implementation behind MakePrometheusMetrics, for callers that also want to read
// the exposition or the bound port (tests; a bind address with port 0). Every metric and label
// set is created at construction, so the hot-path methods touch no maps and take no locks beyond
// prometheus-cpp's own per-histogram one.
//
// Metrics: scanserve_requests_total{op,code}, scanserve_request_duration_seconds{op},
// scanserve_queue_wait_seconds{op}, scanserve_execution_seconds{op} (latency histograms, 10us to
// ~10s by powers of two), scanserve_batch_requests{op} (1 to 8192 by powers of two),
// scanserve_batch_rows{op} (1 to 4^12 by powers of four), scanserve_queue_depth,
// scanserve_received_bytes_total, scanserve_sent_bytes_total, scanserve_backend_info{backend}
// (1 for the current backend), scanserve_device_memory_used_bytes{device}. `op` is OpName(),
// `code` is absl::StatusCodeToString() ("OK", "INVALID_ARGUMENT", ...).
class PrometheusMetrics final : public ServerMetrics {
 public:
  // An empty bind_address serves nothing over HTTP; Serialize() still works. UNAVAILABLE when the
  // address cannot be bound (port in use, bad address).
  static absl::StatusOr<std::unique_ptr<PrometheusMetrics>> Create(const std::string& bind_address);
  ~PrometheusMetrics() override;

  // The text exposition format, as a scrape of /metrics returns it (less the exposer's own
  // scrape statistics).
  std::string Serialize() const;
  // The port HTTP is served on (the chosen one when bind_address asked for port 0); 0 when not
  // served.
  int port() const;

  void RequestFinished(OpKind op, absl::StatusCode code, absl::Duration latency) override;
  void BytesReceived(int64_t bytes) override;
  void BytesSent(int64_t bytes) override;
  void QueueWait(OpKind op, absl::Duration wait) override;
  void BatchExecuted(OpKind op, int64_t requests, int64_t rows, absl::Duration execution) override;
  void SetQueueDepth(int64_t requests) override;
  void SetBackend(const std::string& name) override;
  void SetDeviceMemoryUsed(int device, int64_t bytes) override;

 private:
  struct Impl;  // keeps prometheus-cpp out of this header
  explicit PrometheusMetrics(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace scanserve

#endif  // SCANSERVE_SERVER_METRICS_H_
