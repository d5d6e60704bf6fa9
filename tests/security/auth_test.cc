// Bearer-token authentication: the constant-time comparison and the token file on their own, then
// a real server on loopback (plaintext; tls_test covers tokens over TLS) and the real server
// binary reloading its token file on SIGHUP.
#include "server/auth.h"

#include <signal.h>

#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "scanserve/client.h"
#include "security_support.h"
#include "server/server.h"

namespace scanserve::testing {
namespace {

std::string RandomToken(Rng& rng, int64_t length) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=";
  std::string token;
  for (int64_t i = 0; i < length; ++i)
    token.push_back(kAlphabet[rng.Int(0, sizeof(kAlphabet) - 2)]);
  return token;
}

// ---- the comparison and the token file ----

TEST(ConstantTimeEqualsTest, EqualExactlyWhenBytesAndLengthsAre) {
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "xbc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "ab"));
  EXPECT_FALSE(ConstantTimeEquals("ab", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("", "a"));
  // Zero bytes past the shorter input must not make the inputs equal.
  EXPECT_FALSE(ConstantTimeEquals(std::string("ab\0", 3), "ab"));
  EXPECT_FALSE(ConstantTimeEquals(std::string("\0", 1), ""));

  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  for (int trial = 0; trial < 500; ++trial) {
    const std::string a = RandomToken(rng, rng.Int(1, 200));
    EXPECT_TRUE(ConstantTimeEquals(a, std::string(a)));
    std::string b = a;
    const size_t at = static_cast<size_t>(rng.Int(0, static_cast<int64_t>(a.size()) - 1));
    b[at] = static_cast<char>(b[at] ^ (1 << rng.Int(0, 7)));  // one bit, anywhere
    EXPECT_FALSE(ConstantTimeEquals(a, b)) << "bit flipped at " << at;
    EXPECT_FALSE(ConstantTimeEquals(a, a.substr(0, at))) << "prefix of " << at;
    EXPECT_FALSE(ConstantTimeEquals(a, a + b)) << "extended";
  }
}

TEST(TokenFileTest, ReadsOneTokenPerLineSkippingCommentsAndBlankLines) {
  absl::StatusOr<std::vector<std::string>> tokens = ParseTokenFile(
      "# production tokens\n\n  alpha-1  \n\t#indented comment\nbeta/2==\r\n\n   \ngamma~3", "f");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(*tokens, (std::vector<std::string>{"alpha-1", "beta/2==", "gamma~3"}));
}

TEST(TokenFileTest, RejectsMalformedFilesNamingTheLine) {
  auto message = [](const std::string& text) {
    return std::string(ParseTokenFile(text, "'t.txt'").status().message());
  };
  EXPECT_EQ(message("good\nbad token\n"),
            "'t.txt' line 2: a token must be visible ASCII characters without spaces");
  EXPECT_EQ(message("ok\n" + std::string(kMaxBearerTokenBytes + 1, 'x')),
            "'t.txt' line 2: a token must be at most 1024 bytes, got 1025");
  EXPECT_EQ(message("# only a comment\n\n"),
            "'t.txt': holds no token (only blank lines and '#' comments)");
  EXPECT_EQ(message(""), "'t.txt': holds no token (only blank lines and '#' comments)");
  EXPECT_TRUE(ParseTokenFile(std::string(kMaxBearerTokenBytes, 'x'), "f").ok());
  EXPECT_EQ(ReadTokenFile("/nonexistent/tokens.txt").status().code(), absl::StatusCode::kNotFound);
}

TEST(TokenSetTest, ContainsExactlyItsTokens) {
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  std::vector<std::string> tokens;
  for (int i = 0; i < 5; ++i) tokens.push_back(RandomToken(rng, rng.Int(1, 64)));
  tokens.push_back(std::string(kMaxBearerTokenBytes, 'm'));
  const TokenSet set(tokens);
  EXPECT_EQ(set.size(), tokens.size());
  for (const std::string& token : tokens) {
    SCOPED_TRACE(token.substr(0, 64));
    EXPECT_TRUE(set.Contains(token));
    EXPECT_FALSE(set.Contains(token.substr(0, token.size() - 1)));
    EXPECT_FALSE(set.Contains(token + "x"));
    EXPECT_FALSE(set.Contains(token + std::string(1, '\0')));
    std::string changed = token;
    changed[rng.Int(0, static_cast<int64_t>(token.size()) - 1)] ^= 0x20;
    EXPECT_FALSE(set.Contains(changed));
  }
  EXPECT_FALSE(set.Contains(""));
  EXPECT_FALSE(set.Contains(std::string(kMaxBearerTokenBytes + 1, 'm')));
}

TEST(TokenAuthenticatorTest, ChecksSchemeAndTokenAndLetsProbesThrough) {
  TempDir dir;
  WriteFile(dir.File("tokens"), "s3cret\nother\n");
  absl::StatusOr<std::shared_ptr<TokenAuthenticator>> auth =
      TokenAuthenticator::FromFile(dir.File("tokens"));
  ASSERT_TRUE(auth.ok()) << auth.status();
  const std::string scan = "/scanserve.v1.ScanService/LinearScan";
  auto check = [&](const std::string& path, std::vector<std::string_view> values) {
    return (*auth)->Check(path, values);
  };
  EXPECT_TRUE(check(scan, {"Bearer s3cret"}).ok());
  EXPECT_TRUE(check(scan, {"bearer   other"}).ok());
  EXPECT_EQ(check(scan, {}).message(),
            "authorization: missing; calls need the metadata 'authorization: Bearer <token>'");
  EXPECT_EQ(check(scan, {"Bearer wrong"}).message(),
            "authorization: the bearer token is not accepted");
  EXPECT_EQ(check(scan, {"Basic s3cret"}).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(check(scan, {"s3cret"}).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(check(scan, {"Bearer"}).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(check(scan, {"Bearer s3cret", "Bearer s3cret"}).message(),
            "authorization: must be sent once, got it 2 times");
  EXPECT_EQ(check("", {}).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(check("/grpc.health.v1.Health/Check", {}).ok());
  EXPECT_TRUE(check("/grpc.health.v1.Health/Watch", {"Bearer wrong"}).ok());
  EXPECT_TRUE(check("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", {}).ok());
  // A service whose name only starts like a public one is not public.
  EXPECT_FALSE(check("/grpc.health.v1.HealthX/Check", {}).ok());
}

// ---- a real server with tokens ----

class TokenServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteFile(dir_.File("tokens"), "# test\ntoken-one\ntoken-two\n");
    ServerConfig config = LoopbackConfig();
    config.auth_token_file = dir_.File("tokens");
    config.metrics_address = "127.0.0.1:0";
    server_ = std::make_unique<ScanServer>(config);
    absl::StatusOr<int> port = server_->Start();
    ASSERT_TRUE(port.ok()) << port.status();
    port_ = *port;
  }

  std::unique_ptr<Client> ClientWithToken(const std::string& token) {
    ClientOptions options = LoopbackClient(port_);
    options.bearer_token = token;
    return Client::Create(options).value();
  }

  TempDir dir_;
  std::unique_ptr<ScanServer> server_;
  int port_ = 0;
};

TEST_F(TokenServerTest, CallsWithoutAnAcceptedTokenAreUnauthenticatedOnEveryRpc) {
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  const LinearCall call = RandomLinearScan(rng, 1, 2, 16);
  for (const std::string token : {"", "token-on", "token-one2", "TOKEN-ONE", "wrong"}) {
    SCOPED_TRACE("token '" + token + "'");
    std::unique_ptr<Client> client = ClientWithToken(token);
    EXPECT_EQ(client->LinearScan(call.request).status().code(), absl::StatusCode::kUnauthenticated);
    EXPECT_EQ(client->ServerInfo().status().code(), absl::StatusCode::kUnauthenticated);
    v1::EchoRequest echo;
    echo.set_payload("x");
    EXPECT_EQ(client->Echo(echo).status().code(), absl::StatusCode::kUnauthenticated);
    std::unique_ptr<Stream> stream = client->OpenStream(
        [](v1::StreamResponse) { ADD_FAILURE() << "an unauthenticated stream got a response"; });
    v1::StreamRequest request;
    request.set_request_id(1);
    *request.mutable_linear_scan() = call.request;
    (void)stream->Send(request);
    EXPECT_EQ(stream->Finish().code(), absl::StatusCode::kUnauthenticated);
  }
  // Refused before any handler: the service counted no request at all, while an accepted call
  // shows up in the same count.
  absl::StatusOr<std::string> metrics = ScrapeMetrics("127.0.0.1", server_->metrics_port());
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_EQ(MetricSum(*metrics, "scanserve_requests_total"), 0);
  ASSERT_TRUE(ClientWithToken("token-one")->LinearScan(call.request).ok());
  const absl::Time until = absl::Now() + absl::Seconds(10);
  do {
    metrics = ScrapeMetrics("127.0.0.1", server_->metrics_port());
    ASSERT_TRUE(metrics.ok()) << metrics.status();
  } while (MetricSum(*metrics, "scanserve_requests_total") == 0 && absl::Now() < until);
  EXPECT_EQ(MetricSum(*metrics, "scanserve_requests_total"), 1);
}

TEST_F(TokenServerTest, AcceptedTokensServeEveryRpc) {
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  for (const std::string token : {"token-one", "token-two"}) {
    SCOPED_TRACE(token);
    std::unique_ptr<Client> client = ClientWithToken(token);
    const LinearCall call = RandomLinearScan(rng, 2, 3, 50);
    absl::StatusOr<v1::LinearScanResponse> r = client->LinearScan(call.request);
    ASSERT_TRUE(r.ok()) << r.status();
    ExpectMatches(call, *r);
    EXPECT_TRUE(client->ServerInfo().ok());

    std::promise<v1::StreamResponse> answered;
    std::unique_ptr<Stream> stream =
        client->OpenStream([&](v1::StreamResponse response) { answered.set_value(response); });
    v1::StreamRequest request;
    request.set_request_id(7);
    *request.mutable_linear_scan() = call.request;
    ASSERT_TRUE(stream->Send(request).ok());
    ASSERT_TRUE(stream->Finish().ok());
    const v1::StreamResponse response = answered.get_future().get();
    ASSERT_TRUE(StreamResponseStatus(response).ok()) << StreamResponseStatus(response);
    ExpectMatches(call, response.linear_scan());
  }
}

TEST_F(TokenServerTest, HealthAndReflectionNeedNoToken) {
  std::unique_ptr<Client> client = ClientWithToken("");
  EXPECT_EQ(client->Health().value_or(HealthStatus::kUnknown), HealthStatus::kServing);
  EXPECT_EQ(client->Health(kScanServiceName).value_or(HealthStatus::kUnknown),
            HealthStatus::kServing);
  // Reflection's list_services (ServerReflectionRequest field 7, empty), encoded by hand.
  grpc::GenericStub stub(client->channel());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  const std::string encoded("\x3a\x00", 2);
  grpc::Slice slice(encoded);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                 grpc::StubOptions(), &request, &response,
                 [&](grpc::Status status) { done.set_value(status); });
  const grpc::Status status = done.get_future().get();
  ASSERT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& s : slices)
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  EXPECT_NE(bytes.find("scanserve.v1.ScanService"), std::string::npos);
}

TEST_F(TokenServerTest, ReloadSwapsTheTokensAndAFailedReloadKeepsThem) {
  std::unique_ptr<Client> one = ClientWithToken("token-one");
  std::unique_ptr<Client> three = ClientWithToken("token-three");
  ASSERT_TRUE(one->ServerInfo().ok());
  ASSERT_EQ(three->ServerInfo().status().code(), absl::StatusCode::kUnauthenticated);

  WriteFile(dir_.File("tokens"), "token-three\n");
  ASSERT_TRUE(server_->ReloadTokens().ok());
  EXPECT_EQ(server_->token_count(), 1u);
  EXPECT_EQ(one->ServerInfo().status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(three->ServerInfo().ok());

  for (const std::string broken : {"# nothing\n", "has space\n"}) {
    WriteFile(dir_.File("tokens"), broken);
    const absl::Status failed = server_->ReloadTokens();
    EXPECT_EQ(failed.code(), absl::StatusCode::kInvalidArgument) << failed;
    EXPECT_NE(failed.message().find("the previous tokens stay in force"), std::string::npos);
    EXPECT_TRUE(three->ServerInfo().ok());
  }
  ASSERT_EQ(std::remove(dir_.File("tokens").c_str()), 0);
  EXPECT_EQ(server_->ReloadTokens().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(three->ServerInfo().ok());
  EXPECT_EQ(one->ServerInfo().status().code(), absl::StatusCode::kUnauthenticated);
}

TEST(TokenlessServerTest, ReloadIsRefusedAndCallsNeedNoToken) {
  ScanServer server(LoopbackConfig());
  absl::StatusOr<int> port = server.Start();
  ASSERT_TRUE(port.ok()) << port.status();
  EXPECT_EQ(server.ReloadTokens().code(), absl::StatusCode::kFailedPrecondition);
  std::unique_ptr<Client> client = Client::Create(LoopbackClient(*port)).value();
  EXPECT_TRUE(client->ServerInfo().ok());
}

// ---- the server binary ----

TEST(ServerBinaryTest, SighupReloadsTheTokenFile) {
  TempDir dir;
  const std::string tokens = dir.File("tokens");
  WriteFile(tokens, "first-token\n");
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(
      {"--host=127.0.0.1", "--port=0", "--metrics_address=", "--backend=cpu", "--cpu_threads=1",
       "--shutdown_grace=0s", "--auth_token_file=" + tokens},
      dir.File("server.log"));
  ASSERT_TRUE(server.ok()) << server.status();
  ServerProcess& process = **server;
  auto info = [&](const std::string& token) {
    ClientOptions options = LoopbackClient(process.port());
    options.bearer_token = token;
    return Client::Create(options).value()->ServerInfo().status().code();
  };
  EXPECT_EQ(info("first-token"), absl::StatusCode::kOk);
  EXPECT_EQ(info("second-token"), absl::StatusCode::kUnauthenticated);

  WriteFile(tokens, "# rotated\nsecond-token\n");
  ASSERT_EQ(kill(process.pid(), SIGHUP), 0);
  ASSERT_TRUE(process.WaitForLog("reloaded 1 tokens", 1, absl::Seconds(10))) << process.Log();
  EXPECT_EQ(info("second-token"), absl::StatusCode::kOk);
  EXPECT_EQ(info("first-token"), absl::StatusCode::kUnauthenticated);

  WriteFile(tokens, "broken token\n");
  ASSERT_EQ(kill(process.pid(), SIGHUP), 0);
  ASSERT_TRUE(process.WaitForLog("token reload failed", 1, absl::Seconds(10))) << process.Log();
  EXPECT_NE(process.Log().find("line 1: a token must be visible ASCII characters"),
            std::string::npos)
      << process.Log();
  EXPECT_EQ(info("second-token"), absl::StatusCode::kOk);

  EXPECT_EQ(process.Stop(SIGTERM), 0) << process.Log();
}

TEST(ServerBinaryTest, MissingOrMalformedSecurityFilesFailTheStart) {
  TempDir dir;
  WriteFile(dir.File("not-pem"), "hello\n");
  WriteFile(dir.File("empty-tokens"), "# none\n");
  struct Case {
    std::vector<std::string> flags;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--auth_token_file=" + dir.File("absent")},
       "auth_token_file: cannot open '" + dir.File("absent") + "': No such file or directory"},
      {{"--auth_token_file=" + dir.File("empty-tokens")}, "holds no token"},
      {{"--tls_cert_file=" + dir.File("absent"), "--tls_key_file=" + dir.File("not-pem")},
       "tls_cert_file: cannot open '" + dir.File("absent") + "'"},
      {{"--tls_cert_file=" + dir.File("not-pem"), "--tls_key_file=" + dir.File("not-pem")},
       "tls_cert_file: '" + dir.File("not-pem") + "' holds no PEM CERTIFICATE"},
      {{"--tls_cert_file=" + dir.File("not-pem")},
       "TLS needs both the certificate and its private key"},
      {{"--tls_client_ca_file=" + dir.File("not-pem")}, "verifying client certificates needs TLS"},
      {{"--max_concurrent_streams=0"}, "max_concurrent_streams: must be >= 1, got 0"},
  };
  int n = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.message);
    std::vector<std::string> args = {"--host=127.0.0.1", "--port=0",
                                     "--metrics_address=", "--backend=cpu"};
    args.insert(args.end(), c.flags.begin(), c.flags.end());
    std::string log;
    const int status =
        ServerProcess::RunToExit(args, dir.File("run" + std::to_string(n++) + ".log"), &log);
    EXPECT_EQ(status, 1) << log;
    EXPECT_NE(log.find("failed to start"), std::string::npos) << log;
    EXPECT_NE(log.find(c.message), std::string::npos) << log;
    EXPECT_EQ(log.find("listening"), std::string::npos) << log;
  }
}

}  // namespace
}  // namespace scanserve::testing
