#include "server/server.h"

#include <chrono>
#include <utility>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/clock.h"

namespace scanserve {
namespace {

std::string ListenAddress(const std::string& host, int port) {
  const bool ipv6 = host.find(':') != std::string::npos && host.front() != '[';
  return (ipv6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

// A PEM file's content, with an error naming the setting when it cannot be read or holds no PEM
// block of the expected kind (gRPC would only say later that the port could not be bound).
absl::StatusOr<std::string> ReadPem(const std::string& setting, const std::string& path,
                                    const std::string& block) {
  absl::StatusOr<std::string> pem = ReadFileToString(path);
  if (!pem.ok()) {
    return absl::Status(pem.status().code(), setting + ": " + std::string(pem.status().message()));
  }
  if (pem->find("-----BEGIN ") == std::string::npos ||
      pem->find(block + "-----") == std::string::npos) {
    return absl::InvalidArgumentError(setting + ": '" + path + "' holds no PEM " + block);
  }
  return pem;
}

// The credentials of the gRPC port: TLS per config.tls, tokens per `authenticator`.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeCredentials(
    const TlsConfig& tls, std::shared_ptr<TokenAuthenticator> authenticator) {
  if (!tls.enabled()) {
    if (authenticator == nullptr) return grpc::InsecureServerCredentials();
    return PlaintextCredentialsWithTokens(std::move(authenticator));
  }
  absl::StatusOr<std::string> cert = ReadPem("tls_cert_file", tls.cert_file, "CERTIFICATE");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPem("tls_key_file", tls.key_file, "PRIVATE KEY");
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions options(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  if (!tls.client_ca_file.empty()) {
    absl::StatusOr<std::string> ca =
        ReadPem("tls_client_ca_file", tls.client_ca_file, "CERTIFICATE");
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *std::move(ca);
    options.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  options.pem_key_cert_pairs.push_back({*std::move(key), *std::move(cert)});
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::SslServerCredentials(options);
  if (authenticator != nullptr) {
    credentials->SetAuthMetadataProcessor(
        std::make_shared<TokenAuthMetadataProcessor>(std::move(authenticator)));
  }
  return credentials;
}

}  // namespace

ScanServer::ScanServer(ServerConfig config) : config_(std::move(config)) {}

ScanServer::~ScanServer() { Shutdown(); }

absl::StatusOr<int> ScanServer::Start() {
  if (absl::Status valid = ValidateConfig(config_); !valid.ok()) return valid;
  // Security files first: a deployment mistake there should fail before any backend starts.
  if (!config_.auth_token_file.empty()) {
    absl::StatusOr<std::shared_ptr<TokenAuthenticator>> authenticator =
        TokenAuthenticator::FromFile(config_.auth_token_file);
    if (!authenticator.ok()) {
      return absl::Status(authenticator.status().code(),
                          "auth_token_file: " + std::string(authenticator.status().message()));
    }
    authenticator_ = *std::move(authenticator);
  }
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      MakeCredentials(config_.tls, authenticator_);
  if (!credentials.ok()) return credentials.status();
  absl::StatusOr<std::unique_ptr<Backend>> backend = MakeBackend(config_.backend);
  if (!backend.ok()) return backend.status();
  backend_ = std::move(*backend);

  if (config_.metrics_address.empty()) {
    metrics_ = MakeNullMetrics();
  } else {
    absl::StatusOr<std::unique_ptr<PrometheusMetrics>> metrics =
        PrometheusMetrics::Create(config_.metrics_address);
    if (!metrics.ok()) return metrics.status();
    metrics_port_ = (*metrics)->port();
    metrics_ = std::move(*metrics);
  }
  metrics_->SetBackend(std::string(backend_->Name()));

  executor_ =
      std::make_unique<Executor>(backend_.get(), config_.batching, Clock::Real(), metrics_.get());
  service_ = std::make_unique<ScanService>(config_, backend_.get(), executor_.get(), metrics_.get(),
                                           Clock::Real());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  const std::string address = ListenAddress(config_.host, config_.port);
  builder.AddListeningPort(address, *credentials, &port_);
  builder.RegisterService(service_.get());
  builder.SetMaxReceiveMessageSize(static_cast<int>(config_.limits.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(config_.limits.max_message_bytes));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, config_.max_concurrent_streams);
  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) {
    server_.reset();
    return absl::UnavailableError("grpc: could not listen on " + address);
  }
  SetServing(true);
  watcher_ = std::thread([this] { WatchBackend(); });
  return port_;
}

void ScanServer::SetServing(bool serving) {
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  health->SetServingStatus(serving);
  health->SetServingStatus(kScanServiceName, serving);
}

void ScanServer::WatchBackend() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    if (backend_->Broken()) {
      SetServing(false);
      return;
    }
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Seconds(1));
  }
}

void ScanServer::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (watcher_.joinable()) watcher_.join();
  if (server_) {
    SetServing(false);
    absl::SleepFor(config_.shutdown_grace);
    // Stopping gRPC waits for every open call; the executor drains at the same time so queued
    // jobs run now instead of waiting out their batching delay.
    std::thread stop_grpc([this] {
      server_->Shutdown(std::chrono::system_clock::now() +
                        absl::ToChronoNanoseconds(config_.drain_timeout));
    });
    executor_->Drain();
    stop_grpc.join();
  } else if (executor_) {
    executor_->Drain();
  }
}

absl::Status ScanServer::ReloadTokens() {
  if (authenticator_ == nullptr) {
    return absl::FailedPreconditionError("auth_token_file: not set, the server takes no tokens");
  }
  absl::Status status = authenticator_->Reload();
  if (!status.ok()) {
    return absl::Status(status.code(), "auth_token_file: " + std::string(status.message()) +
                                           "; the previous tokens stay in force");
  }
  return absl::OkStatus();
}

size_t ScanServer::token_count() const {
  return authenticator_ ? authenticator_->token_count() : 0;
}

std::string ScanServer::backend_name() const {
  return backend_ ? std::string(backend_->Name()) : std::string();
}

int64_t ScanServer::batches_executed() const {
  return executor_ ? executor_->batches_executed() : 0;
}

}  // namespace scanserve
