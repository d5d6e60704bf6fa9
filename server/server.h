// The whole server: backend, metrics, executor and the gRPC server with the scan service, the
// standard health service (also under "scanserve.v1.ScanService") and server reflection.
//
// Security: config.tls turns TLS (and with a client CA, mutual TLS) on for the gRPC port;
// config.auth_token_file requires a bearer token on every call but health and reflection (auth.h).
// Certificate, key and token files are read at Start; a missing or malformed one fails Start.
//
// Lifecycle: construct with a config, Start() once, Shutdown() once (the destructor shuts down if
// needed). Shutdown is graceful: health turns NOT_SERVING, new calls are still accepted for
// config.shutdown_grace, then the server stops accepting, runs every queued and running job to
// completion (calls still open after config.drain_timeout are cancelled) and returns.
//
// Ownership: owns every component. Thread-safety: Start and Shutdown may be called from any
// thread, but not concurrently with each other; the accessors are safe once Start returned.
#ifndef SCANSERVE_SERVER_SERVER_H_
#define SCANSERVE_SERVER_SERVER_H_

#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "scanserve/backend.h"
#include "server/auth.h"
#include "server/config.h"
#include "server/executor.h"
#include "server/metrics.h"
#include "server/service.h"

namespace scanserve {

// The service name the health service reports besides the server-wide "".
inline constexpr char kScanServiceName[] = "scanserve.v1.ScanService";

class ScanServer {
 public:
  explicit ScanServer(ServerConfig config);
  ~ScanServer();
  ScanServer(const ScanServer&) = delete;
  ScanServer& operator=(const ScanServer&) = delete;

  // Creates the backend, starts metrics, the executor and the gRPC server. Returns the bound gRPC
  // port (the chosen one when config.port is 0). INVALID_ARGUMENT for a bad config, the backend's
  // error when it cannot be created, UNAVAILABLE when an address cannot be bound.
  absl::StatusOr<int> Start();

  // Graceful stop; see the file comment. Idempotent.
  void Shutdown();

  // Rereads config.auth_token_file (after Start). On error the tokens in force stay and the error
  // says why; FAILED_PRECONDITION when the server takes no tokens. Safe from any thread.
  absl::Status ReloadTokens();
  // Tokens accepted now; 0 when the server takes no tokens.
  size_t token_count() const;

  int port() const { return port_; }
  // The port /metrics is served on (the chosen one when metrics_address asks for port 0); 0 when
  // metrics are disabled.
  int metrics_port() const { return metrics_port_; }
  const ServerConfig& config() const { return config_; }
  // "cpu" or "cuda": the backend chosen at Start.
  std::string backend_name() const;
  int64_t batches_executed() const;

 private:
  // Turns health NOT_SERVING for good once the backend reports a sticky failure.
  void WatchBackend();
  void SetServing(bool serving);

  const ServerConfig config_;
  int port_ = 0;
  int metrics_port_ = 0;
  std::shared_ptr<TokenAuthenticator> authenticator_;  // null without auth_token_file
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<Executor> executor_;
  std::unique_ptr<ScanService> service_;
  std::unique_ptr<grpc::Server> server_;

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread watcher_;
};

}  // namespace scanserve

#endif  // SCANSERVE_SERVER_SERVER_H_
