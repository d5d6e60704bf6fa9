#include "scanserve/client.h"

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace scanserve {
namespace {

constexpr char kHealthCheckMethod[] = "/grpc.health.v1.Health/Check";

// Proto JSON form of a duration ("0.100000000s"), the form gRPC's service config parser reads.
std::string JsonDuration(absl::Duration d) {
  const int64_t nanos = absl::ToInt64Nanoseconds(d);
  char buffer[48];
  std::snprintf(buffer, sizeof(buffer), "%lld.%09llds", static_cast<long long>(nanos / 1000000000),
                static_cast<long long>(nanos % 1000000000));
  return buffer;
}

// grpc.health.v1.HealthCheckRequest { string service = 1; } encoded by hand: the Debian packages
// ship no generated health stubs, and generating our own copy of grpc.health.v1 would clash with
// any other copy linked into the same binary.
std::string EncodeHealthCheckRequest(const std::string& service) {
  std::string out;
  if (service.empty()) return out;
  out.push_back(0x0a);  // field 1, length-delimited
  for (uint64_t n = service.size();; n >>= 7) {
    if (n < 0x80) {
      out.push_back(static_cast<char>(n));
      break;
    }
    out.push_back(static_cast<char>((n & 0x7f) | 0x80));
  }
  return out + service;
}

bool ReadVarint(const std::string& in, size_t& pos, uint64_t& value) {
  value = 0;
  for (int shift = 0; shift < 64 && pos < in.size(); shift += 7) {
    const uint8_t byte = static_cast<uint8_t>(in[pos++]);
    value |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) return true;
  }
  return false;
}

// grpc.health.v1.HealthCheckResponse { ServingStatus status = 1; }; unknown fields are skipped.
absl::StatusOr<HealthStatus> DecodeHealthCheckResponse(const std::string& in) {
  uint64_t status = 0;
  size_t pos = 0;
  while (pos < in.size()) {
    uint64_t tag = 0, value = 0;
    if (!ReadVarint(in, pos, tag)) break;
    switch (tag & 7) {
      case 0:
        if (!ReadVarint(in, pos, value)) return absl::InternalError("health: malformed response");
        if ((tag >> 3) == 1) status = value;
        continue;
      case 1:
        pos += 8;
        continue;
      case 2:
        if (!ReadVarint(in, pos, value) || value > in.size() - pos) {
          return absl::InternalError("health: malformed response");
        }
        pos += value;
        continue;
      case 5:
        pos += 4;
        continue;
      default:
        return absl::InternalError("health: malformed response");
    }
  }
  if (pos > in.size()) return absl::InternalError("health: malformed response");
  return status <= 3 ? static_cast<HealthStatus>(status) : HealthStatus::kUnknown;
}

std::string ByteBufferToString(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  for (const grpc::Slice& slice : slices) {
    out.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return out;
}

// A Callback delivering into a promise, and that promise's future.
template <typename Response>
std::pair<std::future<absl::StatusOr<Response>>, Callback<Response>> FutureCallback() {
  std::promise<absl::StatusOr<Response>> promise;
  std::future<absl::StatusOr<Response>> future = promise.get_future();
  return {std::move(future), [promise = std::move(promise)](absl::StatusOr<Response> r) mutable {
            promise.set_value(std::move(r));
          }};
}

absl::StatusOr<std::string> ReadFile(const std::string& path, const std::string& option) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    const int error = errno;
    return absl::Status(absl::ErrnoToStatusCode(error),
                        absl::StrCat(option, ": cannot open '", path, "': ", std::strerror(error)));
  }
  std::string out;
  char buffer[8192];
  size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file)) > 0) out.append(buffer, n);
  const bool failed = std::ferror(file) != 0;
  const int error = errno;
  std::fclose(file);
  if (failed) {
    return absl::Status(absl::ErrnoToStatusCode(error),
                        absl::StrCat(option, ": cannot read '", path, "': ", std::strerror(error)));
  }
  return out;
}

// One PEM of ClientOptions::Tls, from its inline or its file field.
absl::StatusOr<std::string> TlsPem(const std::string& pem, const std::string& file,
                                   const std::string& name) {
  if (!pem.empty() && !file.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ClientOptions.tls: give ", name, "_pem or ", name, "_file, not both"));
  }
  if (file.empty()) return pem;
  return ReadFile(file, absl::StrCat("ClientOptions.tls.", name, "_file"));
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> TlsCredentials(
    const ClientOptions::Tls& tls) {
  grpc::SslCredentialsOptions ssl;
  absl::StatusOr<std::string> roots = TlsPem(tls.root_certs_pem, tls.root_certs_file, "root_certs");
  if (!roots.ok()) return roots.status();
  absl::StatusOr<std::string> chain = TlsPem(tls.cert_chain_pem, tls.cert_chain_file, "cert_chain");
  if (!chain.ok()) return chain.status();
  absl::StatusOr<std::string> key =
      TlsPem(tls.private_key_pem, tls.private_key_file, "private_key");
  if (!key.ok()) return key.status();
  if (chain->empty() != key->empty()) {
    return absl::InvalidArgumentError(
        "ClientOptions.tls: a client certificate needs its private key and a key its certificate");
  }
  ssl.pem_root_certs = *std::move(roots);
  ssl.pem_cert_chain = *std::move(chain);
  ssl.pem_private_key = *std::move(key);
  return grpc::SslCredentials(ssl);
}

}  // namespace

absl::StatusOr<std::string> ReadBearerTokenFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path, "token file");
  if (!text.ok()) return text.status();
  size_t pos = 0;
  while (pos < text->size()) {
    size_t end = text->find('\n', pos);
    if (end == std::string::npos) end = text->size();
    std::string line = text->substr(pos, end - pos);
    pos = end + 1;
    absl::StripAsciiWhitespace(&line);
    if (!line.empty() && line.front() != '#') return line;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("token file '", path, "': holds no token (only blank lines and '#' comments)"));
}

const char* HealthStatusName(HealthStatus status) {
  switch (status) {
    case HealthStatus::kUnknown:
      return "UNKNOWN";
    case HealthStatus::kServing:
      return "SERVING";
    case HealthStatus::kNotServing:
      return "NOT_SERVING";
    case HealthStatus::kServiceUnknown:
      return "SERVICE_UNKNOWN";
  }
  return "UNKNOWN";
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

absl::Status StreamResponseStatus(const v1::StreamResponse& response) {
  if (response.code() == 0) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(response.code()), response.message());
}

std::string Client::ServiceConfigJson(const ClientOptions& options) {
  std::vector<std::string> parts;
  if (!options.load_balancing.empty()) {
    parts.push_back(
        absl::StrCat(R"("loadBalancingConfig":[{")", options.load_balancing, R"(":{}}])"));
    // Balancing over replicas also watches each one's health, so a replica that drains
    // (the whole server NOT_SERVING during its shutdown grace) stops receiving calls before it
    // closes.
    parts.push_back(R"("healthCheckConfig":{"serviceName":""})");
  }
  if (options.retry_max_attempts > 1) {
    parts.push_back(absl::StrCat(
        R"("methodConfig":[{"name":[{"service":"scanserve.v1.ScanService"},)",
        R"({"service":"grpc.health.v1.Health"}],"retryPolicy":{"maxAttempts":)",
        options.retry_max_attempts, R"(,"initialBackoff":")",
        JsonDuration(options.retry_initial_backoff), R"(","maxBackoff":")",
        JsonDuration(options.retry_max_backoff), R"(","backoffMultiplier":)",
        options.retry_backoff_multiplier, R"(,"retryableStatusCodes":["UNAVAILABLE"]}}])"));
  }
  std::string json = "{";
  for (size_t i = 0; i < parts.size(); ++i) absl::StrAppend(&json, i ? "," : "", parts[i]);
  return json + "}";
}

absl::StatusOr<std::unique_ptr<Client>> Client::Create(const ClientOptions& options) {
  if (options.target.empty()) {
    return absl::InvalidArgumentError("ClientOptions.target: must not be empty");
  }
  if (options.retry_max_attempts < 1) {
    return absl::InvalidArgumentError("ClientOptions.retry_max_attempts: must be at least 1");
  }
  if (options.retry_max_attempts > 1 &&
      (options.retry_initial_backoff <= absl::ZeroDuration() ||
       options.retry_max_backoff < options.retry_initial_backoff ||
       !(options.retry_backoff_multiplier > 0))) {
    return absl::InvalidArgumentError(
        "ClientOptions.retry_*: initial backoff must be positive, max backoff at least the "
        "initial one, and the multiplier positive");
  }
  for (char c : options.load_balancing) {
    if (!((c >= 'a' && c <= 'z') || c == '_')) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ClientOptions.load_balancing: must be a gRPC policy name such as round_robin, got \"",
          options.load_balancing, "\""));
    }
  }
  if (options.max_send_message_bytes < -1 || options.max_receive_message_bytes < -1) {
    return absl::InvalidArgumentError(
        "ClientOptions.max_*_message_bytes: must be -1 (unlimited) or a byte count");
  }
  if (options.keepalive_time < absl::ZeroDuration() ||
      options.keepalive_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("ClientOptions.keepalive_*: must not be negative");
  }

  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(options.max_send_message_bytes);
  args.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  if (options.keepalive_time > absl::ZeroDuration()) {
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS,
                static_cast<int>(absl::ToInt64Milliseconds(options.keepalive_time)));
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                static_cast<int>(absl::ToInt64Milliseconds(options.keepalive_timeout)));
  }
  args.SetInt(GRPC_ARG_ENABLE_RETRIES, options.retry_max_attempts > 1 ? 1 : 0);
  args.SetServiceConfigJSON(ServiceConfigJson(options));
  std::shared_ptr<grpc::ChannelCredentials> credentials = options.credentials;
  const ClientOptions::Tls& tls = options.tls;
  if (!tls.enabled &&
      !(tls.root_certs_file + tls.root_certs_pem + tls.cert_chain_file + tls.cert_chain_pem +
        tls.private_key_file + tls.private_key_pem + tls.server_name)
           .empty()) {
    return absl::InvalidArgumentError(
        "ClientOptions.tls: certificates or a server name are set but tls.enabled is false");
  }
  if (options.tls.enabled) {
    if (credentials != nullptr) {
      return absl::InvalidArgumentError("ClientOptions: set credentials or enable tls, not both");
    }
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> tls = TlsCredentials(options.tls);
    if (!tls.ok()) return tls.status();
    credentials = *std::move(tls);
    if (!options.tls.server_name.empty()) {
      args.SetSslTargetNameOverride(options.tls.server_name);
    }
  }
  if (credentials == nullptr) credentials = grpc::InsecureChannelCredentials();
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(options.target, credentials, args);
  if (channel == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("ClientOptions.target: cannot create a channel to \"", options.target, "\""));
  }
  return std::unique_ptr<Client>(new Client(options, std::move(channel)));
}

struct Client::Pending {
  absl::Mutex mu;
  int64_t calls ABSL_GUARDED_BY(mu) = 0;
};

Client::Client(ClientOptions options, std::shared_ptr<grpc::Channel> channel)
    : options_(std::move(options)),
      pending_(std::make_shared<Pending>()),
      channel_(std::move(channel)),
      stub_(v1::ScanService::NewStub(channel_)),
      generic_stub_(std::make_unique<grpc::GenericStub>(channel_)) {}

// A completion's user callback may be the last thing its caller waits for; the completion then
// still releases the call's context and request on a gRPC thread. Tearing the channel down (and,
// in a command-line tool, the process) under it crashed `scanctl bench` at exit once in CI, so the
// Client waits for that tail.
Client::~Client() {
  absl::MutexLock lock(&pending_->mu);
  pending_->mu.Await(absl::Condition(
      +[](int64_t* calls) { return *calls == 0; }, &pending_->calls));
}

void Client::Prepare(grpc::ClientContext& context, const CallOptions& call) const {
  const absl::Duration timeout = call.timeout.value_or(options_.default_timeout);
  if (timeout != absl::InfiniteDuration()) {
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::nanoseconds(absl::ToInt64Nanoseconds(timeout)));
  }
  context.set_wait_for_ready(call.wait_for_ready.value_or(options_.wait_for_ready));
  if (!options_.bearer_token.empty()) {
    context.AddMetadata("authorization", "Bearer " + options_.bearer_token);
  }
  for (const auto& [key, value] : options_.metadata) context.AddMetadata(key, value);
  for (const auto& [key, value] : call.metadata) context.AddMetadata(key, value);
}

bool Client::WaitForConnected(absl::Duration timeout) const {
  return channel_->WaitForConnected(std::chrono::system_clock::now() +
                                    std::chrono::nanoseconds(absl::ToInt64Nanoseconds(timeout)));
}

// ---- sync ----

#define SCANSERVE_SYNC_CALL(Method, Request, Response)                                             \
  absl::StatusOr<v1::Response> Client::Method(const v1::Request& request, const CallOptions& call) \
      const {                                                                                      \
    grpc::ClientContext context;                                                                   \
    Prepare(context, call);                                                                        \
    v1::Response response;                                                                         \
    grpc::Status status = stub_->Method(&context, request, &response);                             \
    if (!status.ok()) return FromGrpcStatus(status);                                               \
    return response;                                                                               \
  }

SCANSERVE_SYNC_CALL(LinearScan, LinearScanRequest, LinearScanResponse)
SCANSERVE_SYNC_CALL(LinearScanBackward, LinearScanBackwardRequest, LinearScanBackwardResponse)
SCANSERVE_SYNC_CALL(SelectiveScan, SelectiveScanRequest, SelectiveScanResponse)
SCANSERVE_SYNC_CALL(AssociativeScan, AssociativeScanRequest, AssociativeScanResponse)
SCANSERVE_SYNC_CALL(Echo, EchoRequest, EchoResponse)
#undef SCANSERVE_SYNC_CALL

absl::StatusOr<v1::ServerInfoResponse> Client::ServerInfo(const CallOptions& call) const {
  grpc::ClientContext context;
  Prepare(context, call);
  v1::ServerInfoResponse response;
  grpc::Status status = stub_->ServerInfo(&context, v1::ServerInfoRequest(), &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<HealthStatus> Client::Health(const std::string& service,
                                            const CallOptions& call) const {
  grpc::ClientContext context;
  Prepare(context, call);
  const std::string encoded = EncodeHealthCheckRequest(service);
  grpc::Slice slice(encoded);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  generic_stub_->UnaryCall(&context, kHealthCheckMethod, grpc::StubOptions(), &request, &response,
                           [&done](grpc::Status status) { done.set_value(std::move(status)); });
  const grpc::Status status = done.get_future().get();
  // Check answers NOT_FOUND for a service it does not know; that is an answer, not a failure.
  if (status.error_code() == grpc::StatusCode::NOT_FOUND && !service.empty()) {
    return HealthStatus::kServiceUnknown;
  }
  if (!status.ok()) return FromGrpcStatus(status);
  return DecodeHealthCheckResponse(ByteBufferToString(response));
}

// ---- async ----

template <typename Request, typename Response, typename Method>
void Client::StartUnary(Method method, std::shared_ptr<const Request> request,
                        Callback<Response> done, const CallOptions& call) const {
  // Everything the call points to lives here until its completion callback runs.
  struct Call {
    grpc::ClientContext context;
    std::shared_ptr<const Request> request;
    Response response;
    Callback<Response> done;
  };
  auto* state = new Call;
  state->request = std::move(request);
  state->done = std::move(done);
  Prepare(state->context, call);
  {
    absl::MutexLock lock(&pending_->mu);
    ++pending_->calls;
  }
  method(&state->context, state->request.get(), &state->response,
         [state, pending = pending_](grpc::Status status) {
           {
             std::unique_ptr<Call> owned(state);
             if (status.ok()) {
               std::move(owned->done)(std::move(owned->response));
             } else {
               std::move(owned->done)(FromGrpcStatus(status));
             }
           }
           absl::MutexLock lock(&pending->mu);
           --pending->calls;
         });
}

#define SCANSERVE_ASYNC_CALL(Method, Request, Response)                                            \
  void Client::Method##Async(std::shared_ptr<const v1::Request> request,                           \
                             Callback<v1::Response> done, const CallOptions& call) const {         \
    StartUnary<v1::Request, v1::Response>(                                                         \
        [this](grpc::ClientContext* context, const v1::Request* req, v1::Response* resp,           \
               std::function<void(grpc::Status)> on_done) {                                        \
          stub_->async()->Method(context, req, resp, std::move(on_done));                          \
        },                                                                                         \
        std::move(request), std::move(done), call);                                                \
  }                                                                                                \
  std::future<absl::StatusOr<v1::Response>> Client::Method##Async(v1::Request request,             \
                                                                  const CallOptions& call) const { \
    auto [future, done] = FutureCallback<v1::Response>();                                          \
    Method##Async(std::make_shared<const v1::Request>(std::move(request)), std::move(done), call); \
    return std::move(future);                                                                      \
  }

SCANSERVE_ASYNC_CALL(LinearScan, LinearScanRequest, LinearScanResponse)
SCANSERVE_ASYNC_CALL(LinearScanBackward, LinearScanBackwardRequest, LinearScanBackwardResponse)
SCANSERVE_ASYNC_CALL(SelectiveScan, SelectiveScanRequest, SelectiveScanResponse)
SCANSERVE_ASYNC_CALL(AssociativeScan, AssociativeScanRequest, AssociativeScanResponse)
SCANSERVE_ASYNC_CALL(Echo, EchoRequest, EchoResponse)
#undef SCANSERVE_ASYNC_CALL

void Client::ServerInfoAsync(Callback<v1::ServerInfoResponse> done, const CallOptions& call) const {
  StartUnary<v1::ServerInfoRequest, v1::ServerInfoResponse>(
      [this](grpc::ClientContext* context, const v1::ServerInfoRequest* req,
             v1::ServerInfoResponse* resp, std::function<void(grpc::Status)> on_done) {
        stub_->async()->ServerInfo(context, req, resp, std::move(on_done));
      },
      std::make_shared<const v1::ServerInfoRequest>(), std::move(done), call);
}

// ---- Stream ----

// State shared by the Stream handle and its reactor. Every reactor operation (StartWrite,
// StartWritesDone, RemoveHold) is started while the reactor's hold is in place, so the reactor
// cannot have finished; the hold is released exactly once, after the last write was started.
class Stream::State {
 public:
  explicit State(std::function<void(v1::StreamResponse)> on_response)
      : on_response(std::move(on_response)) {}

  grpc::ClientContext context;
  std::function<void(v1::StreamResponse)> on_response;
  Reactor* reactor = nullptr;  // valid until `done`

  absl::Mutex mu;
  std::deque<v1::StreamRequest> queue ABSL_GUARDED_BY(mu);
  v1::StreamRequest writing_request ABSL_GUARDED_BY(mu);
  bool writing ABSL_GUARDED_BY(mu) = false;      // a StartWrite is outstanding
  bool send_closed ABSL_GUARDED_BY(mu) = false;  // CloseSend, Cancel or Finish was called
  bool write_failed ABSL_GUARDED_BY(mu) = false;
  bool hold_released ABSL_GUARDED_BY(mu) = false;
  bool done ABSL_GUARDED_BY(mu) = false;
  absl::Status final_status ABSL_GUARDED_BY(mu);
};

class Stream::Reactor final
    : public grpc::ClientBidiReactor<v1::StreamRequest, v1::StreamResponse> {
 public:
  explicit Reactor(std::shared_ptr<State> state) : state_(std::move(state)) {}

  void Start(v1::ScanService::Stub* stub) {
    stub->async()->Stream(&state_->context, this);
    AddHold();
    StartRead(&response_);
    StartCall();
  }

  // What to do after a state change, decided under the lock and done outside it (a reactor
  // operation may run its reaction inline).
  struct Actions {
    const v1::StreamRequest* write = nullptr;
    bool writes_done = false;
    bool remove_hold = false;
    bool any() const { return write != nullptr || writes_done || remove_hold; }
  };

  // With no write outstanding: starts the next queued one, or closes once sends are closed.
  static Actions NextLocked(State& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    Actions actions;
    if (s.writing || s.hold_released) return actions;
    if (!s.write_failed && !s.queue.empty()) {
      s.writing_request = std::move(s.queue.front());
      s.queue.pop_front();
      s.writing = true;
      actions.write = &s.writing_request;
    } else if (s.send_closed || s.write_failed) {
      s.hold_released = true;
      actions.writes_done = !s.write_failed;
      actions.remove_hold = true;
    }
    return actions;
  }

  void Apply(const Actions& actions) {
    if (actions.write != nullptr) StartWrite(actions.write);
    if (actions.writes_done) StartWritesDone();
    if (actions.remove_hold) RemoveHold();
  }

  void OnWriteDone(bool ok) override {
    Actions actions;
    {
      absl::MutexLock lock(&state_->mu);
      state_->writing = false;
      if (!ok) {
        // The call is ending: nothing more can be written. The hold stays until the owner closes.
        state_->write_failed = true;
        state_->queue.clear();
        if (!state_->send_closed) return;
      }
      actions = NextLocked(*state_);
    }
    Apply(actions);
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;
    state_->on_response(std::move(response_));
    response_.Clear();
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& status) override {
    std::shared_ptr<State> state = std::move(state_);
    {
      absl::MutexLock lock(&state->mu);
      state->done = true;
      state->final_status = FromGrpcStatus(status);
      state->reactor = nullptr;
    }
    delete this;
  }

 private:
  std::shared_ptr<State> state_;
  v1::StreamResponse response_;
};

std::unique_ptr<Stream> Client::OpenStream(std::function<void(v1::StreamResponse)> on_response,
                                           const CallOptions& call) const {
  auto state = std::make_shared<Stream::State>(std::move(on_response));
  Prepare(state->context, call);
  auto* reactor = new Stream::Reactor(state);
  {
    absl::MutexLock lock(&state->mu);
    state->reactor = reactor;
  }
  reactor->Start(stub_.get());
  return std::unique_ptr<Stream>(new Stream(std::move(state)));
}

Stream::Stream(std::shared_ptr<State> state) : state_(std::move(state)) {}

Stream::~Stream() {
  bool done;
  {
    absl::MutexLock lock(&state_->mu);
    done = state_->done;
  }
  if (!done) {
    Cancel();
    Finish().IgnoreError();  // CANCELLED: the owner gave up on the call
  }
}

absl::Status Stream::Send(v1::StreamRequest request) {
  Reactor::Actions actions;
  Reactor* reactor;
  {
    absl::MutexLock lock(&state_->mu);
    if (state_->done) {
      return state_->final_status.ok()
                 ? absl::FailedPreconditionError("stream: Send after the call ended")
                 : state_->final_status;
    }
    if (state_->send_closed) {
      return absl::FailedPreconditionError("stream: Send after CloseSend, Cancel or Finish");
    }
    if (state_->write_failed) {
      return absl::UnavailableError("stream: the call is ending, a write failed");
    }
    state_->queue.push_back(std::move(request));
    actions = Reactor::NextLocked(*state_);
    reactor = state_->reactor;
  }
  // Only with an action is the reactor certainly alive here: the hold is still in place.
  if (actions.any()) reactor->Apply(actions);
  return absl::OkStatus();
}

void Stream::CloseSend() {
  Reactor::Actions actions;
  Reactor* reactor;
  {
    absl::MutexLock lock(&state_->mu);
    if (state_->send_closed) return;
    state_->send_closed = true;
    actions = Reactor::NextLocked(*state_);
    reactor = state_->reactor;
  }
  if (actions.any()) reactor->Apply(actions);
}

void Stream::Cancel() {
  {
    absl::MutexLock lock(&state_->mu);
    state_->queue.clear();
  }
  state_->context.TryCancel();
  CloseSend();
}

absl::Status Stream::Finish() {
  CloseSend();
  absl::MutexLock lock(&state_->mu);
  state_->mu.Await(absl::Condition(&state_->done));
  return state_->final_status;
}

size_t Stream::PendingWrites() const {
  absl::MutexLock lock(&state_->mu);
  return state_->queue.size();
}

}  // namespace scanserve
