// The client's transport logic against an in-process gRPC server whose answers are scripted by
// the test: status mapping, deadlines, metadata, retries, health, futures, callbacks and the
// Stream session. The real server is exercised end to end by scanctl_e2e_test.
#include "scanserve/client.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "gtest/gtest.h"

namespace scanserve {
namespace {

using ::testing::HasSubstr;

std::string Metadata(grpc::CallbackServerContext* context, const std::string& key) {
  auto range = context->client_metadata().equal_range(key);
  std::string out;
  for (auto it = range.first; it != range.second; ++it) {
    out.append(it->second.data(), it->second.size());
  }
  return out;
}

// Scripted answers keyed by the Echo payload; LinearScan copies x to y; Stream answers every
// request after the client half-closes, in reverse order, failing odd request ids.
class ScriptedService final : public v1::ScanService::CallbackService {
 public:
  std::atomic<int> echo_attempts{0};

  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* context,
                                 const v1::EchoRequest* request,
                                 v1::EchoResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    const std::string& payload = request->payload();
    if (payload == "unavailable-twice") {
      if (echo_attempts.fetch_add(1) < 2) {
        reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "not yet"));
        return reactor;
      }
    } else if (payload == "slow") {
      for (int i = 0; i < 500 && !context->IsCancelled(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    } else if (payload == "metadata") {
      response->set_payload(Metadata(context, "authorization") + "|" +
                            Metadata(context, "x-tenant") + "|" + Metadata(context, "x-call"));
      reactor->Finish(grpc::Status::OK);
      return reactor;
    } else if (payload == "fail") {
      reactor->Finish(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "scripted failure"));
      return reactor;
    }
    response->set_payload(payload);
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* LinearScan(grpc::CallbackServerContext* context,
                                       const v1::LinearScanRequest* request,
                                       v1::LinearScanResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    if (!request->has_a()) {
      reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "a: required"));
      return reactor;
    }
    *response->mutable_y() = request->x();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* ServerInfo(grpc::CallbackServerContext* context,
                                       const v1::ServerInfoRequest*,
                                       v1::ServerInfoResponse* response) override {
    response->set_version("scripted");
    response->set_backend("none");
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerBidiReactor<v1::StreamRequest, v1::StreamResponse>* Stream(
      grpc::CallbackServerContext*) override {
    class Reactor : public grpc::ServerBidiReactor<v1::StreamRequest, v1::StreamResponse> {
     public:
      Reactor() { StartRead(&request_); }
      void OnReadDone(bool ok) override {
        if (ok) {
          ids_.push_back(request_.request_id());
          StartRead(&request_);
          return;
        }
        WriteNext();
      }
      void OnWriteDone(bool ok) override {
        if (!ok) {
          Finish(grpc::Status(grpc::StatusCode::UNKNOWN, "write failed"));
          return;
        }
        WriteNext();
      }
      void OnDone() override { delete this; }

     private:
      void WriteNext() {
        if (ids_.empty()) {
          Finish(grpc::Status::OK);
          return;
        }
        const uint64_t id = ids_.back();
        ids_.pop_back();
        response_.Clear();
        response_.set_request_id(id);
        if (id % 2 == 1) {
          response_.set_code(static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
          response_.set_message("odd id " + std::to_string(id));
        } else {
          response_.mutable_associative_scan()->mutable_y()->add_shape(static_cast<int64_t>(id));
        }
        StartWrite(&response_);
      }
      v1::StreamRequest request_;
      v1::StreamResponse response_;
      std::vector<uint64_t> ids_;
    };
    return new Reactor;
  }
};

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
  }
  void TearDown() override { server_->Shutdown(); }

  ClientOptions Options() const {
    ClientOptions options;
    options.target = "127.0.0.1:" + std::to_string(port_);
    options.default_timeout = absl::Seconds(20);
    return options;
  }
  std::unique_ptr<Client> NewClient(const ClientOptions& options) {
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
    EXPECT_TRUE(client.ok()) << client.status();
    return std::move(client).value();
  }

  ScriptedService service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

v1::EchoRequest EchoOf(const std::string& payload) {
  v1::EchoRequest request;
  request.set_payload(payload);
  return request;
}

TEST_F(ClientTest, SyncCallsReturnResponsesAndKeepStatusCodeAndMessage) {
  std::unique_ptr<Client> client = NewClient(Options());
  EXPECT_EQ(client->Echo(EchoOf("hello")).value().payload(), "hello");
  EXPECT_EQ(client->ServerInfo().value().version(), "scripted");

  absl::StatusOr<v1::EchoResponse> failed = client->Echo(EchoOf("fail"));
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(failed.status().message(), "scripted failure");

  v1::LinearScanRequest request;
  *request.mutable_x() =
      MakeTensor(std::vector<float>{1, 2, 3}, {1, 1, 3}, DType::kFloat32).value();
  absl::StatusOr<v1::LinearScanResponse> missing = client->LinearScan(request);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(missing.status().message(), "a: required");
  *request.mutable_a() = request.x();
  EXPECT_THAT(TensorToFloats(client->LinearScan(request).value().y()).value(),
              ::testing::ElementsAre(1, 2, 3));
}

TEST_F(ClientTest, FuturesAndCallbacksCompleteEveryCall) {
  std::unique_ptr<Client> client = NewClient(Options());
  std::future<absl::StatusOr<v1::EchoResponse>> future = client->EchoAsync(EchoOf("f"));
  std::future<absl::StatusOr<v1::EchoResponse>> failing = client->EchoAsync(EchoOf("fail"));
  EXPECT_EQ(future.get().value().payload(), "f");
  EXPECT_EQ(failing.get().status().code(), absl::StatusCode::kFailedPrecondition);

  // Many calls in flight from one thread: callbacks, no thread per call.
  constexpr int kCalls = 500;
  absl::Mutex mu;
  int completed = 0;
  std::vector<std::string> payloads;
  for (int i = 0; i < kCalls; ++i) {
    auto request = std::make_shared<const v1::EchoRequest>(EchoOf(std::to_string(i)));
    client->EchoAsync(request, [&](absl::StatusOr<v1::EchoResponse> r) {
      absl::MutexLock lock(&mu);
      ++completed;
      payloads.push_back(r.ok() ? r->payload() : std::string(r.status().message()));
    });
  }
  absl::MutexLock lock(&mu);
  mu.AwaitWithTimeout(absl::Condition(
                          +[](int* n) { return *n == kCalls; }, &completed),
                      absl::Seconds(60));
  ASSERT_EQ(completed, kCalls);
  std::sort(payloads.begin(), payloads.end());
  std::vector<std::string> expected;
  for (int i = 0; i < kCalls; ++i) expected.push_back(std::to_string(i));
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(payloads, expected);

  std::promise<absl::StatusOr<v1::ServerInfoResponse>> info;
  client->ServerInfoAsync(
      [&info](absl::StatusOr<v1::ServerInfoResponse> r) { info.set_value(std::move(r)); });
  EXPECT_EQ(info.get_future().get().value().backend(), "none");
}

// A caller may destroy the Client as soon as its last callback ran: by the time the destructor
// returns, the client has released everything its calls held (here, the shared requests).
TEST_F(ClientTest, DestroyedRightAfterTheLastCallbackItHoldsNothingOfItsCalls) {
  constexpr int kRounds = 20;
  constexpr int kCalls = 64;
  for (int round = 0; round < kRounds; ++round) {
    std::unique_ptr<Client> client = NewClient(Options());
    std::atomic<int> released{0};
    absl::Mutex mu;
    int completed = 0;
    for (int i = 0; i < kCalls; ++i) {
      std::shared_ptr<const v1::EchoRequest> request(new v1::EchoRequest(EchoOf(std::to_string(i))),
                                                     [&released](const v1::EchoRequest* r) {
                                                       delete r;
                                                       released.fetch_add(1);
                                                     });
      client->EchoAsync(std::move(request), [&](absl::StatusOr<v1::EchoResponse> r) {
        EXPECT_TRUE(r.ok()) << r.status();
        absl::MutexLock lock(&mu);
        ++completed;
      });
    }
    {
      absl::MutexLock lock(&mu);
      ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(
                                          +[](int* n) { return *n == kCalls; }, &completed),
                                      absl::Seconds(60)));
    }
    client.reset();
    ASSERT_EQ(released.load(), kCalls) << "round " << round;
  }
}

TEST_F(ClientTest, DeadlinesComeFromTheCallOrTheDefault) {
  ClientOptions options = Options();
  options.default_timeout = absl::Milliseconds(100);
  std::unique_ptr<Client> client = NewClient(options);
  EXPECT_EQ(client->Echo(EchoOf("slow")).status().code(), absl::StatusCode::kDeadlineExceeded);
  CallOptions call;
  call.timeout = absl::Milliseconds(50);
  EXPECT_EQ(client->EchoAsync(EchoOf("slow"), call).get().status().code(),
            absl::StatusCode::kDeadlineExceeded);
  call.timeout = absl::Seconds(30);
  EXPECT_EQ(client->Echo(EchoOf("fast"), call).value().payload(), "fast");
}

TEST_F(ClientTest, BearerTokenAndMetadataReachTheServer) {
  ClientOptions options = Options();
  options.bearer_token = "s3cret";
  options.metadata = {{"x-tenant", "blue"}};
  std::unique_ptr<Client> client = NewClient(options);
  CallOptions call;
  call.metadata = {{"x-call", "7"}};
  EXPECT_EQ(client->Echo(EchoOf("metadata"), call).value().payload(), "Bearer s3cret|blue|7");
  EXPECT_EQ(client->Echo(EchoOf("metadata")).value().payload(), "Bearer s3cret|blue|");
}

TEST_F(ClientTest, UnavailableIsRetriedByTheServiceConfig) {
  ClientOptions options = Options();
  options.retry_max_attempts = 3;
  options.retry_initial_backoff = absl::Milliseconds(1);
  options.retry_max_backoff = absl::Milliseconds(5);
  EXPECT_EQ(NewClient(options)->Echo(EchoOf("unavailable-twice")).value().payload(),
            "unavailable-twice");
  EXPECT_EQ(service_.echo_attempts.load(), 3);

  service_.echo_attempts = 0;
  options.retry_max_attempts = 1;
  absl::StatusOr<v1::EchoResponse> once = NewClient(options)->Echo(EchoOf("unavailable-twice"));
  EXPECT_EQ(once.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(service_.echo_attempts.load(), 1);
}

TEST_F(ClientTest, RoundRobinOverDnsTargetsConnects) {
  ClientOptions options = Options();
  options.target = "dns:///localhost:" + std::to_string(port_);
  options.load_balancing = "round_robin";
  std::unique_ptr<Client> client = NewClient(options);
  // localhost may resolve to ::1 as well, where nothing listens: round_robin skips it.
  for (int i = 0; i < 4; ++i) {
    CallOptions call;
    call.wait_for_ready = true;
    EXPECT_EQ(client->Echo(EchoOf("rr"), call).value().payload(), "rr");
  }
}

TEST_F(ClientTest, HealthReportsServingNotServingAndUnknownServices) {
  std::unique_ptr<Client> client = NewClient(Options());
  EXPECT_EQ(client->Health().value(), HealthStatus::kServing);
  EXPECT_EQ(client->Health("no.such.Service").value(), HealthStatus::kServiceUnknown);
  server_->GetHealthCheckService()->SetServingStatus(false);
  EXPECT_EQ(client->Health().value(), HealthStatus::kNotServing);
  EXPECT_STREQ(HealthStatusName(HealthStatus::kNotServing), "NOT_SERVING");
}

TEST_F(ClientTest, MessageSizeLimitsApply) {
  ClientOptions options = Options();
  options.max_receive_message_bytes = 1000;
  std::unique_ptr<Client> client = NewClient(options);
  EXPECT_EQ(client->Echo(EchoOf(std::string(10000, 'x'))).status().code(),
            absl::StatusCode::kResourceExhausted);
  options = Options();
  options.max_send_message_bytes = 1000;
  EXPECT_EQ(NewClient(options)->Echo(EchoOf(std::string(10000, 'x'))).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST_F(ClientTest, UnreachableServerIsUnavailable) {
  ClientOptions options = Options();
  server_->Shutdown();
  options.retry_max_attempts = 1;
  options.default_timeout = absl::Seconds(10);
  EXPECT_EQ(NewClient(options)->Echo(EchoOf("x")).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(NewClient(options)->WaitForConnected(absl::Milliseconds(100)));
}

TEST_F(ClientTest, StreamDeliversOutOfOrderResponsesWithTheirIds) {
  std::unique_ptr<Client> client = NewClient(Options());
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> ids(1000);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = (rng() >> 12) * 1000 + i;  // unique

  absl::Mutex mu;
  std::vector<v1::StreamResponse> responses;
  std::unique_ptr<Stream> stream = client->OpenStream([&](v1::StreamResponse r) {
    absl::MutexLock lock(&mu);
    responses.push_back(std::move(r));
  });
  // Sends from two threads at once.
  auto send = [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      v1::StreamRequest request;
      request.set_request_id(ids[i]);
      request.mutable_associative_scan()->set_operator_(v1::ADD);
      ASSERT_TRUE(stream->Send(std::move(request)).ok());
    }
  };
  std::thread other(send, 0, 500);
  send(500, 1000);
  other.join();
  ASSERT_TRUE(stream->Finish().ok());
  EXPECT_EQ(stream->PendingWrites(), 0u);

  absl::MutexLock lock(&mu);
  ASSERT_EQ(responses.size(), ids.size());
  std::vector<uint64_t> got;
  for (const v1::StreamResponse& r : responses) {
    got.push_back(r.request_id());
    absl::Status status = StreamResponseStatus(r);
    if (r.request_id() % 2 == 1) {
      EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(std::string(status.message()), HasSubstr(std::to_string(r.request_id())));
    } else {
      EXPECT_TRUE(status.ok()) << status;
      EXPECT_EQ(static_cast<uint64_t>(r.associative_scan().y().shape(0)), r.request_id());
    }
  }
  std::vector<uint64_t> sorted_got = got, sorted_ids = ids;
  std::sort(sorted_got.begin(), sorted_got.end());
  std::sort(sorted_ids.begin(), sorted_ids.end());
  EXPECT_EQ(sorted_got, sorted_ids);
  EXPECT_NE(got, ids);  // the server answers in reverse arrival order

  EXPECT_EQ(stream->Send(v1::StreamRequest()).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(stream->Finish().ok());  // idempotent
}

TEST_F(ClientTest, StreamCancelAndDestructionEndTheCall) {
  std::unique_ptr<Client> client = NewClient(Options());
  std::atomic<int> received{0};
  std::unique_ptr<Stream> stream =
      client->OpenStream([&](v1::StreamResponse) { received.fetch_add(1); });
  v1::StreamRequest request;
  request.set_request_id(2);
  ASSERT_TRUE(stream->Send(request).ok());
  stream->Cancel();
  EXPECT_EQ(stream->Finish().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(received.load(), 0);  // the server answers only after the half-close

  // Destroying an open stream cancels it and returns once the call ended.
  std::unique_ptr<Stream> abandoned = client->OpenStream([](v1::StreamResponse) {});
  ASSERT_TRUE(abandoned->Send(request).ok());
  abandoned.reset();

  // A stream whose deadline passes ends with DEADLINE_EXCEEDED.
  CallOptions call;
  call.timeout = absl::Milliseconds(50);
  std::unique_ptr<Stream> expiring = client->OpenStream([](v1::StreamResponse) {}, call);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(expiring->Finish().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(ClientOptionsTest, CreateRejectsInconsistentOptions) {
  ClientOptions options;
  options.target = "";
  EXPECT_THAT(std::string(Client::Create(options).status().message()), HasSubstr("target"));
  options.target = "localhost:1";
  options.retry_max_attempts = 0;
  EXPECT_EQ(Client::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.retry_max_attempts = 3;
  options.retry_max_backoff = absl::Milliseconds(1);
  EXPECT_EQ(Client::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.retry_max_backoff = absl::Seconds(1);
  options.load_balancing = "round robin\"";
  EXPECT_THAT(std::string(Client::Create(options).status().message()), HasSubstr("load_balancing"));
  options.load_balancing = "round_robin";
  options.keepalive_time = absl::Seconds(-1);
  EXPECT_EQ(Client::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.keepalive_time = absl::Seconds(30);
  EXPECT_TRUE(Client::Create(options).ok());
}

TEST(ClientOptionsTest, ServiceConfigCarriesPolicyAndRetries) {
  ClientOptions options;
  options.load_balancing = "round_robin";
  options.retry_max_attempts = 4;
  options.retry_initial_backoff = absl::Milliseconds(100);
  options.retry_max_backoff = absl::Seconds(2);
  const std::string json = Client::ServiceConfigJson(options);
  EXPECT_THAT(json, HasSubstr(R"("loadBalancingConfig":[{"round_robin":{}}])"));
  EXPECT_THAT(json, HasSubstr(R"("maxAttempts":4)"));
  EXPECT_THAT(json, HasSubstr(R"("initialBackoff":"0.100000000s")"));
  EXPECT_THAT(json, HasSubstr(R"("maxBackoff":"2.000000000s")"));
  EXPECT_THAT(json, HasSubstr(R"("retryableStatusCodes":["UNAVAILABLE"])"));
  EXPECT_THAT(json, HasSubstr(R"("healthCheckConfig":{"serviceName":""})"));
  options.load_balancing.clear();
  options.retry_max_attempts = 1;
  EXPECT_EQ(Client::ServiceConfigJson(options), "{}");
}

}  // namespace
}  // namespace scanserve
