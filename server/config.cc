#include "server/config.h"

#include <string>

#include "absl/status/status.h"

namespace scanserve {
namespace {

absl::Status OutOfRange(const std::string& setting, const std::string& rule, int64_t got) {
  return absl::InvalidArgumentError(setting + ": " + rule + ", got " + std::to_string(got));
}

}  // namespace

absl::Status ValidateConfig(const ServerConfig& c) {
  if (c.port < 0 || c.port > 65535) return OutOfRange("port", "must be in [0, 65535]", c.port);
  if (c.host.empty()) return absl::InvalidArgumentError("host: must not be empty");
  if (c.tls.enabled() && (c.tls.cert_file.empty() || c.tls.key_file.empty())) {
    return absl::InvalidArgumentError(
        "tls_cert_file, tls_key_file: TLS needs both the certificate and its private key");
  }
  if (!c.tls.client_ca_file.empty() && !c.tls.enabled()) {
    return absl::InvalidArgumentError(
        "tls_client_ca_file: verifying client certificates needs TLS (tls_cert_file and "
        "tls_key_file)");
  }
  if (c.max_concurrent_streams < 1) {
    return OutOfRange("max_concurrent_streams", "must be >= 1", c.max_concurrent_streams);
  }
  if (c.backend.cpu_threads < 0) {
    return OutOfRange("cpu_threads", "must be >= 0 (0 = one per hardware thread)",
                      c.backend.cpu_threads);
  }
  if (c.backend.cuda_streams_per_device < 1) {
    return OutOfRange("cuda_streams_per_device", "must be >= 1", c.backend.cuda_streams_per_device);
  }
  if (c.backend.cuda_pool_bytes_per_stream < 1) {
    return OutOfRange("cuda_pool_bytes_per_stream", "must be >= 1",
                      c.backend.cuda_pool_bytes_per_stream);
  }
  const BatchingConfig& b = c.batching;
  if (b.max_batch_requests < 1) {
    return OutOfRange("max_batch_requests", "must be >= 1", b.max_batch_requests);
  }
  if (b.max_batch_rows < 1) return OutOfRange("max_batch_rows", "must be >= 1", b.max_batch_rows);
  if (b.max_batch_elements < 1) {
    return OutOfRange("max_batch_elements", "must be >= 1", b.max_batch_elements);
  }
  if (b.max_queue_delay < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("max_queue_delay: must be >= 0, got " +
                                      absl::FormatDuration(b.max_queue_delay));
  }
  if (b.max_queued_requests < 1) {
    return OutOfRange("max_queued_requests", "must be >= 1", b.max_queued_requests);
  }
  if (b.max_queued_bytes < 1) {
    return OutOfRange("max_queued_bytes", "must be >= 1", b.max_queued_bytes);
  }
  const RequestLimits& l = c.limits;
  if (l.max_elements_per_request < 1) {
    return OutOfRange("max_elements_per_request", "must be >= 1", l.max_elements_per_request);
  }
  // Protobuf cannot parse or serialize messages of 2 GiB or more.
  if (l.max_message_bytes < 1 || l.max_message_bytes > INT32_MAX) {
    return OutOfRange("max_message_bytes", "must be in [1, 2147483647]", l.max_message_bytes);
  }
  if (l.max_state_dim < 1 || l.max_state_dim > kMaxStateDimSupported) {
    return OutOfRange("max_state_dim",
                      "must be in [1, " + std::to_string(kMaxStateDimSupported) + "]",
                      l.max_state_dim);
  }
  if (c.stream_max_in_flight < 1) {
    return OutOfRange("stream_max_in_flight", "must be >= 1", c.stream_max_in_flight);
  }
  if (c.shutdown_grace < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("shutdown_grace: must be >= 0, got " +
                                      absl::FormatDuration(c.shutdown_grace));
  }
  if (c.drain_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("drain_timeout: must be >= 0, got " +
                                      absl::FormatDuration(c.drain_timeout));
  }
  return absl::OkStatus();
}

}  // namespace scanserve
