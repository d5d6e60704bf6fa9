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

}  // namespace

ScanServer::ScanServer(ServerConfig config) : config_(std::move(config)) {}

ScanServer::~ScanServer() { Shutdown(); }

absl::StatusOr<int> ScanServer::Start() {
  if (absl::Status valid = ValidateConfig(config_); !valid.ok()) return valid;
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
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &port_);
  builder.RegisterService(service_.get());
  builder.SetMaxReceiveMessageSize(static_cast<int>(config_.limits.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(config_.limits.max_message_bytes));
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

std::string ScanServer::backend_name() const {
  return backend_ ? std::string(backend_->Name()) : std::string();
}

int64_t ScanServer::batches_executed() const {
  return executor_ ? executor_->batches_executed() : 0;
}

}  // namespace scanserve
