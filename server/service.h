// The gRPC handlers of scanserve.v1.ScanService, on gRPC's callback API.
//
// A scan handler validates its request, wraps it in a Job whose Problem points into the request's
// input bytes and the response's pre-sized output bytes (no copies), submits the job to the
// executor and returns; the executor's thread that finishes the job answers the call. No handler
// waits on anything. Cancellation (client gone, deadline passed) marks the job cancelled so the
// executor drops it if it has not started. Stream carries many operations on one call, answered
// by request_id as they finish, with a bounded number read but not yet answered per call.
//
// Ownership: borrows the executor, backend, metrics and clock, which must outlive the grpc::Server
// this service is registered with (and so every call). Thread-safety: gRPC calls the handlers from
// any of its threads; per-call state is guarded inside each call.
#ifndef SCANSERVE_SERVER_SERVICE_H_
#define SCANSERVE_SERVER_SERVICE_H_

#include <string>

#include "grpcpp/grpcpp.h"
#include "scanserve/backend.h"
#include "scanserve/v1/scanserve.grpc.pb.h"
#include "server/clock.h"
#include "server/config.h"
#include "server/executor.h"
#include "server/metrics.h"

namespace scanserve {

// The server's version, reported by ServerInfo.
std::string ServerVersion();

class ScanService final : public v1::ScanService::CallbackService {
 public:
  ScanService(const ServerConfig& config, Backend* backend, Executor* executor,
              ServerMetrics* metrics, Clock* clock);

  grpc::ServerUnaryReactor* LinearScan(grpc::CallbackServerContext* context,
                                       const v1::LinearScanRequest* request,
                                       v1::LinearScanResponse* response) override;
  grpc::ServerUnaryReactor* LinearScanBackward(grpc::CallbackServerContext* context,
                                               const v1::LinearScanBackwardRequest* request,
                                               v1::LinearScanBackwardResponse* response) override;
  grpc::ServerUnaryReactor* SelectiveScan(grpc::CallbackServerContext* context,
                                          const v1::SelectiveScanRequest* request,
                                          v1::SelectiveScanResponse* response) override;
  grpc::ServerUnaryReactor* AssociativeScan(grpc::CallbackServerContext* context,
                                            const v1::AssociativeScanRequest* request,
                                            v1::AssociativeScanResponse* response) override;
  grpc::ServerBidiReactor<v1::StreamRequest, v1::StreamResponse>* Stream(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* ServerInfo(grpc::CallbackServerContext* context,
                                       const v1::ServerInfoRequest* request,
                                       v1::ServerInfoResponse* response) override;
  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* context,
                                 const v1::EchoRequest* request,
                                 v1::EchoResponse* response) override;

  // What a call needs from the service; shared by the call objects in service.cc.
  struct Env {
    const ServerConfig* config;
    Backend* backend;
    Executor* executor;
    ServerMetrics* metrics;
    Clock* clock;
  };

 private:
  template <typename Request, typename Response, typename Validate>
  grpc::ServerUnaryReactor* HandleScan(OpKind op, grpc::CallbackServerContext* context,
                                       const Request* request, Response* response,
                                       Validate validate);

  const ServerConfig config_;
  Env env_;
};

}  // namespace scanserve

#endif  // SCANSERVE_SERVER_SERVICE_H_
