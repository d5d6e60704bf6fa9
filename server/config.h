// Everything the server can be configured with, as one plain struct. main.cc fills it from
// command-line flags; tests build it directly. Components read only the part they need and never
// read flags themselves. The defaults serve out of the box: gRPC on 0.0.0.0:50051 in plaintext
// without authentication, Prometheus metrics on 0.0.0.0:9090, the best backend the machine has.
//
// Ownership: a value type. Thread-safety: none needed; it is read-only once the server starts.
#ifndef SCANSERVE_SERVER_CONFIG_H_
#define SCANSERVE_SERVER_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "scanserve/backend.h"
#include "server/batcher.h"

namespace scanserve {

// The state size N the backends are written for (ops.md: N from 1 to 256).
inline constexpr int64_t kMaxStateDimSupported = 256;

// Per-request limits enforced by validation, before anything is queued.
struct RequestLimits {
  // Sum of the element counts of every tensor a request sends and receives back. Past it the
  // request is refused with RESOURCE_EXHAUSTED.
  int64_t max_elements_per_request = int64_t{1} << 28;
  // Largest gRPC message accepted or sent. A request whose response would not fit is refused with
  // RESOURCE_EXHAUSTED before any compute.
  int64_t max_message_bytes = int64_t{512} << 20;
  // Largest selective_scan state size N accepted (1..kMaxStateDimSupported).
  int64_t max_state_dim = kMaxStateDimSupported;
};

// Transport security of the gRPC port. Files are PEM and read once, at ScanServer::Start.
struct TlsConfig {
  // Server certificate chain and its private key: both set turns TLS on, neither keeps plaintext.
  std::string cert_file;
  std::string key_file;
  // CA certificates that sign client certificates. Set, every client must present a certificate
  // that verifies against them (mutual TLS); requires cert_file and key_file.
  std::string client_ca_file;

  bool enabled() const { return !cert_file.empty() || !key_file.empty(); }
};

struct ServerConfig {
  // gRPC listen address and port; port 0 picks a free port (ScanServer::Start returns it).
  std::string host = "0.0.0.0";
  int port = 50051;
  // HTTP address of the Prometheus /metrics endpoint, "host:port". "127.0.0.1:9090" serves it to
  // this machine only; an empty string disables it.
  std::string metrics_address = "0.0.0.0:9090";

  TlsConfig tls;
  // File of accepted bearer tokens (auth.h describes the format). Set, every call except health
  // checks and reflection must carry "authorization: Bearer <token>" or fails UNAUTHENTICATED;
  // ScanServer::ReloadTokens rereads it. Empty accepts every call.
  std::string auth_token_file;
  // HTTP/2 streams (calls) one client connection may have open at once; further calls wait in the
  // client until one finishes. Bounds what one connection can hold on the server.
  int max_concurrent_streams = 1024;

  BackendConfig backend;
  BatchingConfig batching;
  RequestLimits limits;

  // Requests one Stream call may have read but not yet answered. At the bound the server stops
  // reading from that call, so a client that sends without reading cannot grow server memory.
  int64_t stream_max_in_flight = 128;

  // On shutdown: how long health reports NOT_SERVING while new calls are still accepted, so load
  // balancers (and clients that watch health, see ClientOptions) stop routing here before the
  // listener closes; a call that races the close would otherwise be refused mid-flight.
  absl::Duration shutdown_grace = absl::Seconds(1);
  // On shutdown, after the grace: how long calls in progress may take to finish before they are
  // cancelled.
  absl::Duration drain_timeout = absl::Seconds(30);
};

// INVALID_ARGUMENT naming the first setting out of its range.
absl::Status ValidateConfig(const ServerConfig& config);

}  // namespace scanserve

#endif  // SCANSERVE_SERVER_CONFIG_H_
