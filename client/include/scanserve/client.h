// scanserve C++ client: calls a scanserve server (see proto/scanserve/v1/scanserve.proto for the
// messages and ops.md for the math of each operation).
//
//   #include "scanserve/client.h"
//
//   scanserve::ClientOptions options;
//   options.target = "localhost:50051";
//   options.default_timeout = absl::Seconds(5);
//   std::unique_ptr<scanserve::Client> client = scanserve::Client::Create(options).value();
//
//   scanserve::v1::LinearScanRequest request;   // h[t] = a[t] * h[t-1] + x[t], y = h
//   *request.mutable_a() = scanserve::MakeTensor(gates, {1, 64, 1024},
//   scanserve::DType::kFloat32).value(); *request.mutable_x() = scanserve::MakeTensor(tokens, {1,
//   64, 1024}, scanserve::DType::kFloat32).value();
//   absl::StatusOr<scanserve::v1::LinearScanResponse> response = client->LinearScan(request);
//   if (!response.ok()) { /* response.status().code() is the gRPC code, message the server's */ }
//   std::vector<float> y = scanserve::TensorToFloats(response->y()).value();
//
// Three ways to call each operation:
//   - sync:     client->LinearScan(request)                      blocks the calling thread;
//   - future:   client->LinearScanAsync(request)                 returns
//   std::future<StatusOr<...>>;
//   - callback: client->LinearScanAsync(request, [](absl::StatusOr<...> r) { ... })
//               returns at once; the callback runs later on a gRPC thread. No thread per call:
//               thousands of calls may be in flight. Callbacks must not block for long (they hold a
//               gRPC completion thread) and must not wait on another call's future.
// Many requests on one call: OpenStream() (the bidirectional Stream RPC, answers out of order).
//
// Errors: every failure is an absl::Status with the gRPC status code and message unchanged
// (INVALID_ARGUMENT names the field the server rejected; DEADLINE_EXCEEDED, UNAVAILABLE, ...).
//
// Thread-safety: a Client is immutable after Create and safe to use from any number of threads at
// once; share one per process and target (each Client owns one gRPC channel). A Stream is safe for
// concurrent Send calls. The Client must outlive its Streams and every call in flight. Its
// destructor waits until each async call's completion has fully returned (callback run, call state
// released), so it may follow the last callback at once; never destroy a Client from inside one of
// its own callbacks.
#ifndef SCANSERVE_CLIENT_H_
#define SCANSERVE_CLIENT_H_

#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "scanserve/client_tensor.h"  // MakeTensor, TensorToFloats, ...: typed tensors
#include "scanserve/v1/scanserve.grpc.pb.h"
#include "scanserve/v1/scanserve.pb.h"

namespace scanserve {

// How the client's channel connects and how its calls behave. Defaults suit a server on the same
// network; every field can be left as is.
struct ClientOptions {
  // Where the server is: "host:port" (e.g. "localhost:50051", "10.0.0.7:50051",
  // "[::1]:50051"), or any gRPC target URI, e.g. "dns:///scanserve.default.svc:50051" to resolve
  // every address behind a DNS name (use with load_balancing = "round_robin").
  std::string target = "localhost:50051";

  // Largest message the client sends / accepts, in bytes. A request or response past it fails
  // with RESOURCE_EXHAUSTED. The server has its own limit (ServerInfo().limits()); raise both for
  // long rows. -1 means unlimited.
  int max_send_message_bytes = 256 << 20;
  int max_receive_message_bytes = 256 << 20;

  // HTTP/2 keepalive: while calls are in flight, a PING after keepalive_time without traffic; the
  // connection is considered dead (calls fail UNAVAILABLE) when no answer comes within
  // keepalive_timeout. Detects half-open connections (a load balancer that dropped the flow) before
  // a long call hangs on them. Zero disables pings. Keep keepalive_time at or above the server's
  // minimum ping interval (gRPC's default is 5 minutes unless the server allows less): a server
  // answers more frequent pings with GOAWAY.
  absl::Duration keepalive_time = absl::ZeroDuration();
  absl::Duration keepalive_timeout = absl::Seconds(20);

  // gRPC load-balancing policy: "pick_first" (one connection to the first address that works) or
  // "round_robin" (a connection to every resolved address, calls spread across them). Empty keeps
  // gRPC's default (pick_first). With a policy set, the client also watches each server's gRPC
  // health and sends nothing to one that reports NOT_SERVING (one that is draining).
  std::string load_balancing;

  // Transparent retries of calls that fail with UNAVAILABLE (server restarting, connection
  // refused), configured through the gRPC service config: up to retry_max_attempts attempts in
  // total (1 disables retries; gRPC caps it at 5), the n-th retry waiting a random time up to
  // min(retry_initial_backoff * retry_backoff_multiplier^(n-1), retry_max_backoff). Only
  // UNAVAILABLE is retried: the server answers it before any work is done, so a retry never runs
  // twice.
  int retry_max_attempts = 3;
  absl::Duration retry_initial_backoff = absl::Milliseconds(100);
  absl::Duration retry_max_backoff = absl::Seconds(2);
  double retry_backoff_multiplier = 2.0;

  // Deadline of each call, from when it starts, unless CallOptions::timeout says otherwise.
  // InfiniteDuration() means no deadline. A request past its deadline fails DEADLINE_EXCEEDED, and
  // the server drops it unexecuted if it is still queued.
  absl::Duration default_timeout = absl::InfiniteDuration();

  // With wait_for_ready, a call made while the server is unreachable waits (until its deadline)
  // for a connection instead of failing UNAVAILABLE at once. Per call: CallOptions.
  bool wait_for_ready = false;

  // Transport security: TLS when tls.enabled, plaintext otherwise. Each PEM may be given inline
  // (*_pem) or as a file (*_file), not both.
  struct Tls {
    bool enabled = false;
    // CA certificates that sign the server's certificate; both empty trusts the system's roots.
    std::string root_certs_file;
    std::string root_certs_pem;
    // Client certificate chain and private key, for servers that verify clients (mutual TLS).
    // Give both or neither.
    std::string cert_chain_file;
    std::string cert_chain_pem;
    std::string private_key_file;
    std::string private_key_pem;
    // The name the server's certificate must carry, when it differs from the target's host (e.g.
    // connecting to an IP address, or through a tunnel). Empty: the target's host.
    std::string server_name;
  };
  Tls tls;

  // Any other channel credentials (ALTS, XDS, ...); set, tls must be left disabled. Null uses tls.
  std::shared_ptr<grpc::ChannelCredentials> credentials;

  // When non-empty, every call carries the metadata "authorization: Bearer <bearer_token>",
  // which a server started with --auth_token_file requires (health checks excepted). Send tokens
  // over TLS only: on a plaintext channel anyone on the path can read them.
  std::string bearer_token;

  // Extra metadata sent with every call (e.g. {"x-tenant", "a"}). Keys must be lowercase.
  std::vector<std::pair<std::string, std::string>> metadata;
};

// The first token of a token file in the server's format (one per line, blank lines and '#'
// comments skipped, whitespace trimmed): for ClientOptions::bearer_token. NOT_FOUND etc. when the
// file cannot be read, INVALID_ARGUMENT when it holds no token.
absl::StatusOr<std::string> ReadBearerTokenFile(const std::string& path);

// Per-call overrides. Default-constructed, a call uses the ClientOptions.
struct CallOptions {
  // Deadline of this call from when it starts; unset uses ClientOptions::default_timeout,
  // InfiniteDuration() means none.
  std::optional<absl::Duration> timeout;
  // Overrides ClientOptions::wait_for_ready for this call.
  std::optional<bool> wait_for_ready;
  // Added to ClientOptions::metadata for this call.
  std::vector<std::pair<std::string, std::string>> metadata;
};

// grpc.health.v1 serving status of the server (or of one named service on it).
enum class HealthStatus { kUnknown = 0, kServing = 1, kNotServing = 2, kServiceUnknown = 3 };
const char* HealthStatusName(HealthStatus status);

// The absl form of a gRPC status: same code, same message.
absl::Status FromGrpcStatus(const grpc::Status& status);
// The status a StreamResponse carries (its code and message fields).
absl::Status StreamResponseStatus(const v1::StreamResponse& response);

template <typename T>
using Callback = absl::AnyInvocable<void(absl::StatusOr<T>) &&>;

class Stream;

class Client {
 public:
  // Creates the channel; connecting is lazy (the first call connects). INVALID_ARGUMENT for an
  // empty target or inconsistent options (e.g. retry_max_attempts < 1, a PEM given both inline and
  // as a file, a certificate without its key); the file's error when a TLS file cannot be read.
  static absl::StatusOr<std::unique_ptr<Client>> Create(const ClientOptions& options);

  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // ---- sync: block until the answer or an error ----
  absl::StatusOr<v1::LinearScanResponse> LinearScan(const v1::LinearScanRequest& request,
                                                    const CallOptions& call = {}) const;
  absl::StatusOr<v1::LinearScanBackwardResponse> LinearScanBackward(
      const v1::LinearScanBackwardRequest& request, const CallOptions& call = {}) const;
  absl::StatusOr<v1::SelectiveScanResponse> SelectiveScan(const v1::SelectiveScanRequest& request,
                                                          const CallOptions& call = {}) const;
  absl::StatusOr<v1::AssociativeScanResponse> AssociativeScan(
      const v1::AssociativeScanRequest& request, const CallOptions& call = {}) const;
  absl::StatusOr<v1::ServerInfoResponse> ServerInfo(const CallOptions& call = {}) const;
  absl::StatusOr<v1::EchoResponse> Echo(const v1::EchoRequest& request,
                                        const CallOptions& call = {}) const;
  // grpc.health.v1.Health/Check; `service` empty asks about the server as a whole. A reachable
  // server always gives a status (NOT_SERVING while it drains); errors are transport errors.
  absl::StatusOr<HealthStatus> Health(const std::string& service = "",
                                      const CallOptions& call = {}) const;

  // ---- async with a callback: returns at once, `done` runs exactly once on a gRPC thread ----
  // The request is shared: the call keeps it alive and never modifies it, so one request may be
  // in flight many times at once without a copy (std::make_shared<const T>(std::move(request))).
  void LinearScanAsync(std::shared_ptr<const v1::LinearScanRequest> request,
                       Callback<v1::LinearScanResponse> done, const CallOptions& call = {}) const;
  void LinearScanBackwardAsync(std::shared_ptr<const v1::LinearScanBackwardRequest> request,
                               Callback<v1::LinearScanBackwardResponse> done,
                               const CallOptions& call = {}) const;
  void SelectiveScanAsync(std::shared_ptr<const v1::SelectiveScanRequest> request,
                          Callback<v1::SelectiveScanResponse> done,
                          const CallOptions& call = {}) const;
  void AssociativeScanAsync(std::shared_ptr<const v1::AssociativeScanRequest> request,
                            Callback<v1::AssociativeScanResponse> done,
                            const CallOptions& call = {}) const;
  void ServerInfoAsync(Callback<v1::ServerInfoResponse> done, const CallOptions& call = {}) const;
  void EchoAsync(std::shared_ptr<const v1::EchoRequest> request, Callback<v1::EchoResponse> done,
                 const CallOptions& call = {}) const;

  // ---- async with a future: the same calls, the result delivered through std::future ----
  std::future<absl::StatusOr<v1::LinearScanResponse>> LinearScanAsync(
      v1::LinearScanRequest request, const CallOptions& call = {}) const;
  std::future<absl::StatusOr<v1::LinearScanBackwardResponse>> LinearScanBackwardAsync(
      v1::LinearScanBackwardRequest request, const CallOptions& call = {}) const;
  std::future<absl::StatusOr<v1::SelectiveScanResponse>> SelectiveScanAsync(
      v1::SelectiveScanRequest request, const CallOptions& call = {}) const;
  std::future<absl::StatusOr<v1::AssociativeScanResponse>> AssociativeScanAsync(
      v1::AssociativeScanRequest request, const CallOptions& call = {}) const;
  std::future<absl::StatusOr<v1::EchoResponse>> EchoAsync(v1::EchoRequest request,
                                                          const CallOptions& call = {}) const;

  // Opens a Stream call. `on_response` runs once per StreamResponse, in arrival order, on a gRPC
  // thread (never twice at once); check StreamResponseStatus(response) for per-request errors.
  // The call's deadline (CallOptions / default_timeout) bounds the whole stream.
  std::unique_ptr<Stream> OpenStream(std::function<void(v1::StreamResponse)> on_response,
                                     const CallOptions& call = {}) const;

  // Waits until the channel is connected, up to `timeout`; false if it is not by then.
  bool WaitForConnected(absl::Duration timeout) const;

  const ClientOptions& options() const { return options_; }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

  // The service config JSON Create installs on the channel for `options` (load balancing and the
  // UNAVAILABLE retry policy). Exposed so it can be inspected and tested.
  static std::string ServiceConfigJson(const ClientOptions& options);

 private:
  Client(ClientOptions options, std::shared_ptr<grpc::Channel> channel);
  // Applies deadline, wait_for_ready and metadata to a fresh context.
  void Prepare(grpc::ClientContext& context, const CallOptions& call) const;
  template <typename Request, typename Response, typename Method>
  void StartUnary(Method method, std::shared_ptr<const Request> request, Callback<Response> done,
                  const CallOptions& call) const;

  friend class Stream;
  // Async calls whose completion has not fully returned; shared with each call's completion so
  // that the count outlives the Client while the last completion finishes.
  struct Pending;
  ClientOptions options_;
  std::shared_ptr<Pending> pending_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ScanService::Stub> stub_;
  std::unique_ptr<grpc::GenericStub> generic_stub_;  // grpc.health.v1 without its generated code
};

// One Stream RPC: many requests in flight on one call, answered in any order by request_id.
//
//   auto stream = client->OpenStream([&](scanserve::v1::StreamResponse r) { ... });
//   for (...) stream->Send(std::move(request_with_id));
//   absl::Status status = stream->Finish();   // after every response has been delivered
//
// Send queues the request and returns at once (writes go out one at a time in Send order); the
// queue is unbounded, so a producer much faster than the server should bound its own in-flight
// count. Thread-safety: Send, CloseSend, Cancel and Finish may be called from any thread; Finish
// blocks and must not be called from the response callback. Destroying an unfinished Stream
// cancels it and waits for the call to end.
class Stream {
 public:
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // FAILED_PRECONDITION after CloseSend/Finish; the call's error when it already ended.
  absl::Status Send(v1::StreamRequest request);
  // Half-closes after the queued requests are written: the server finishes once it answered them.
  void CloseSend();
  // Ends the call now; in-flight requests get no responses and Finish returns CANCELLED.
  void Cancel();
  // CloseSend, then waits for the call to end and returns its final status. Every response has
  // been delivered to the callback when it returns. Idempotent.
  absl::Status Finish();
  // Requests queued by Send and not yet written.
  size_t PendingWrites() const;

 private:
  friend class Client;
  class State;
  class Reactor;
  explicit Stream(std::shared_ptr<State> state);
  // Shared with the gRPC reactor, which frees itself when the call ends: the Stream may then
  // still read the final status and the reactor may finish while the Stream is destroyed.
  std::shared_ptr<State> state_;
};

}  // namespace scanserve

#endif  // SCANSERVE_CLIENT_H_
