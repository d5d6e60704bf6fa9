// Keeps gRPC's process-wide callback completion queue alive for the whole life of a test binary.
//
// On Linux, gRPC 1.51 runs the callback API on a shared "alternative" completion queue whose
// threads start with its first user (a server with callback methods, a channel making callback
// calls) and are shut down when its last user goes away. The tests create and destroy servers and
// channels back to back, so that queue is torn down and rebuilt many times per process, and the
// teardown is not safe against itself: under AddressSanitizer, an intermittent double free inside
// grpc_cq_internal_unref on one of the queue's threads (client_test, scanctl_test; every frame in
// libgrpc). A real server or client holds the queue for its whole life and never takes that path,
// so the test binaries do the same: an idle server with a callback generic service, started before
// the first test and never destroyed, holds one reference until exit.
//
// Linked into every test executable that uses gRPC (tests/CMakeLists.txt, GRPC option).
#include <memory>

#include "grpcpp/generic/async_generic_service.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"

namespace {

// A generic service answers calls to methods no other service has; this server has no port, so
// it never receives any. Registering it is what makes the server take a reference to the queue.
class NoCalls final : public grpc::CallbackGenericService {};

struct Holder {
  NoCalls service;
  std::unique_ptr<grpc::Server> server;
};

// Intentionally never destroyed: destroying it at exit would be the very teardown it avoids. The
// pointer is kept in the binary (`used`) so that the holder stays reachable and LeakSanitizer
// does not report it.
[[gnu::used]] Holder* g_holder = [] {
  auto* holder = new Holder;
  grpc::ServerBuilder builder;
  builder.RegisterCallbackGenericService(&holder->service);
  holder->server = builder.BuildAndStart();
  return holder;
}();

}  // namespace
