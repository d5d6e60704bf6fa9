// TLS and mutual TLS on the gRPC port, tokens over TLS, and scanctl's TLS and token flags, against
// a real server on loopback. Certificates are made fresh by make_test_certs.sh (openssl); without
// openssl every test skips and says why.
#include <spawn.h>
#include <sys/wait.h>

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "scanserve/client.h"
#include "security_support.h"
#include "server/server.h"

extern char** environ;

namespace scanserve::testing {
namespace {

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    certs_ = new TempDir;
    const absl::Status made = MakeTestCerts(certs_->path());
    if (absl::IsFailedPrecondition(made)) {
      skip_reason_ = new std::string("no test certificates: " + std::string(made.message()));
    } else {
      ASSERT_TRUE(made.ok()) << made;
    }
  }
  static void TearDownTestSuite() {
    delete certs_;
    delete skip_reason_;
    certs_ = nullptr;
    skip_reason_ = nullptr;
  }

  void SetUp() override {
    if (skip_reason_ != nullptr) GTEST_SKIP() << *skip_reason_;
    ASSERT_NE(certs_, nullptr);
  }

  static std::string Cert(const std::string& name) { return certs_->File(name); }

  ServerConfig TlsConfig(bool mutual) const {
    ServerConfig config = LoopbackConfig();
    config.tls.cert_file = Cert("server.pem");
    config.tls.key_file = Cert("server.key");
    if (mutual) config.tls.client_ca_file = Cert("ca.pem");
    return config;
  }

  void StartServer(const ServerConfig& config) {
    server_ = std::make_unique<ScanServer>(config);
    absl::StatusOr<int> port = server_->Start();
    ASSERT_TRUE(port.ok()) << port.status();
    port_ = *port;
  }

  // A TLS client trusting `ca`, presenting `client` (".pem" and ".key") when not empty.
  ClientOptions TlsClient(const std::string& ca, const std::string& client = "") const {
    ClientOptions options = LoopbackClient(port_);
    options.default_timeout = absl::Seconds(10);
    options.tls.enabled = true;
    options.tls.root_certs_file = Cert(ca);
    if (!client.empty()) {
      options.tls.cert_chain_file = Cert(client + ".pem");
      options.tls.private_key_file = Cert(client + ".key");
    }
    return options;
  }

  // ServerInfo through a fresh client with `options`: its status code.
  static absl::StatusCode InfoCode(const ClientOptions& options) {
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
    if (!client.ok()) {
      ADD_FAILURE() << client.status();
      return absl::StatusCode::kUnknown;
    }
    return (*client)->ServerInfo().status().code();
  }

  static TempDir* certs_;
  static std::string* skip_reason_;
  std::unique_ptr<ScanServer> server_;
  int port_ = 0;
};

TempDir* TlsTest::certs_ = nullptr;
std::string* TlsTest::skip_reason_ = nullptr;

TEST_F(TlsTest, ServesTlsClientsAndRefusesPlaintextAndUntrustedServers) {
  ASSERT_NO_FATAL_FAILURE(StartServer(TlsConfig(false)));
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  std::unique_ptr<Client> client = Client::Create(TlsClient("ca.pem")).value();
  const LinearCall call = RandomLinearScan(rng, 2, 4, 100);
  absl::StatusOr<v1::LinearScanResponse> r = client->LinearScan(call.request);
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectMatches(call, *r);
  EXPECT_EQ(client->Health().value_or(HealthStatus::kUnknown), HealthStatus::kServing);

  ClientOptions plaintext = LoopbackClient(port_);
  plaintext.default_timeout = absl::Seconds(10);
  EXPECT_EQ(InfoCode(plaintext), absl::StatusCode::kUnavailable);
  // The client authenticates the server: a certificate from a CA it does not trust fails.
  EXPECT_EQ(InfoCode(TlsClient("rogue_ca.pem")), absl::StatusCode::kUnavailable);
}

TEST_F(TlsTest, ServerNameOverrideMustMatchTheCertificate) {
  ASSERT_NO_FATAL_FAILURE(StartServer(TlsConfig(false)));
  ClientOptions named = TlsClient("ca.pem");
  named.tls.server_name = "scanserve.test";
  EXPECT_EQ(InfoCode(named), absl::StatusCode::kOk);
  named.tls.server_name = "elsewhere.test";
  EXPECT_EQ(InfoCode(named), absl::StatusCode::kUnavailable);
}

TEST_F(TlsTest, MutualTlsAcceptsOnlyClientsWithACertificateFromTheClientCa) {
  ASSERT_NO_FATAL_FAILURE(StartServer(TlsConfig(true)));
  EXPECT_EQ(InfoCode(TlsClient("ca.pem", "client")), absl::StatusCode::kOk);
  EXPECT_EQ(InfoCode(TlsClient("ca.pem")), absl::StatusCode::kUnavailable);
  EXPECT_EQ(InfoCode(TlsClient("ca.pem", "rogue_client")), absl::StatusCode::kUnavailable);
  // Without a certificate not even health answers: the handshake fails before any call.
  std::unique_ptr<Client> anonymous = Client::Create(TlsClient("ca.pem")).value();
  EXPECT_EQ(anonymous->Health().status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(TlsTest, TokensOverTls) {
  TempDir dir;
  WriteFile(dir.File("tokens"), "tls-token\n");
  ServerConfig config = TlsConfig(true);
  config.auth_token_file = dir.File("tokens");
  ASSERT_NO_FATAL_FAILURE(StartServer(config));
  ClientOptions options = TlsClient("ca.pem", "client");
  EXPECT_EQ(InfoCode(options), absl::StatusCode::kUnauthenticated);
  options.bearer_token = "tls-token-";
  EXPECT_EQ(InfoCode(options), absl::StatusCode::kUnauthenticated);
  options.bearer_token = "tls-token";
  EXPECT_EQ(InfoCode(options), absl::StatusCode::kOk);
  options.bearer_token = "";
  std::unique_ptr<Client> probe = Client::Create(options).value();
  EXPECT_EQ(probe->Health().value_or(HealthStatus::kUnknown), HealthStatus::kServing);
}

TEST_F(TlsTest, StartFailsOnUnusableTlsFiles) {
  TempDir dir;
  WriteFile(dir.File("not-pem"), "hello\n");
  struct Case {
    std::string cert, key, ca;
    absl::StatusCode code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {dir.File("absent"), Cert("server.key"), "", absl::StatusCode::kNotFound,
       "tls_cert_file: cannot open '" + dir.File("absent") + "': No such file or directory"},
      {Cert("server.pem"), dir.File("absent"), "", absl::StatusCode::kNotFound,
       "tls_key_file: cannot open '" + dir.File("absent") + "': No such file or directory"},
      {Cert("server.pem"), Cert("server.pem"), "", absl::StatusCode::kInvalidArgument,
       "tls_key_file: '" + Cert("server.pem") + "' holds no PEM PRIVATE KEY"},
      {Cert("server.key"), Cert("server.key"), "", absl::StatusCode::kInvalidArgument,
       "tls_cert_file: '" + Cert("server.key") + "' holds no PEM CERTIFICATE"},
      {Cert("server.pem"), Cert("server.key"), dir.File("not-pem"),
       absl::StatusCode::kInvalidArgument,
       "tls_client_ca_file: '" + dir.File("not-pem") + "' holds no PEM CERTIFICATE"},
      {"", Cert("server.key"), "", absl::StatusCode::kInvalidArgument,
       "tls_cert_file, tls_key_file: TLS needs both the certificate and its private key"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.message);
    ServerConfig config = LoopbackConfig();
    config.tls.cert_file = c.cert;
    config.tls.key_file = c.key;
    config.tls.client_ca_file = c.ca;
    ScanServer server(config);
    absl::StatusOr<int> port = server.Start();
    EXPECT_EQ(port.status().code(), c.code) << port.status();
    EXPECT_EQ(port.status().message(), c.message);
  }
}

TEST_F(TlsTest, ClientRejectsInconsistentTlsOptions) {
  ClientOptions both = TlsClient("ca.pem");
  both.tls.root_certs_pem = "-----BEGIN CERTIFICATE-----";
  EXPECT_EQ(Client::Create(both).status().message(),
            "ClientOptions.tls: give root_certs_pem or root_certs_file, not both");
  ClientOptions half = TlsClient("ca.pem");
  half.tls.cert_chain_file = Cert("client.pem");
  EXPECT_EQ(Client::Create(half).status().code(), absl::StatusCode::kInvalidArgument);
  ClientOptions disabled = TlsClient("ca.pem");
  disabled.tls.enabled = false;
  EXPECT_EQ(Client::Create(disabled).status().code(), absl::StatusCode::kInvalidArgument);
  ClientOptions missing = TlsClient("ca.pem");
  missing.tls.root_certs_file = "/nonexistent/ca.pem";
  EXPECT_EQ(Client::Create(missing).status().code(), absl::StatusCode::kNotFound);
}

// Runs scanctl with `args`; its exit status (-1 when it did not exit normally).
int RunScanctl(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {SCANCTL_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> raw;
  for (std::string& a : argv) raw.push_back(a.data());
  raw.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawn(&pid, raw[0], nullptr, nullptr, raw.data(), environ) != 0) return -1;
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST_F(TlsTest, ScanctlConnectsWithTlsClientCertificateAndTokenFlags) {
  TempDir dir;
  WriteFile(dir.File("tokens"), "ctl-token\n");
  WriteFile(dir.File("client-token"), "# for scanctl\nctl-token\n");
  ServerConfig config = TlsConfig(true);
  config.auth_token_file = dir.File("tokens");
  ASSERT_NO_FATAL_FAILURE(StartServer(config));
  const std::string target = "--target=127.0.0.1:" + std::to_string(port_);
  const std::vector<std::string> tls = {target, "--deadline_ms=10000", "--tls_ca=" + Cert("ca.pem"),
                                        "--tls_cert=" + Cert("client.pem"),
                                        "--tls_key=" + Cert("client.key")};
  auto with = [&](std::vector<std::string> head, std::vector<std::string> extra) {
    head.insert(head.end(), extra.begin(), extra.end());
    return head;
  };
  EXPECT_EQ(RunScanctl(with({"info"}, with(tls, {"--token_file=" + dir.File("client-token")}))), 0);
  EXPECT_EQ(
      RunScanctl(with({"run"}, with(tls, {"--token=ctl-token", "--shape=1,4,64", "--verify"}))), 0);
  EXPECT_EQ(RunScanctl(with({"health"}, tls)), 0);  // probes need no token
  EXPECT_EQ(RunScanctl(with({"info"}, tls)), 2);    // UNAUTHENTICATED
  EXPECT_EQ(RunScanctl({"info", target, "--deadline_ms=10000", "--tls_ca=" + Cert("ca.pem"),
                        "--token=ctl-token"}),
            2);  // no client certificate
  EXPECT_EQ(RunScanctl({"info", target, "--deadline_ms=10000", "--token=ctl-token"}), 2);
  EXPECT_EQ(RunScanctl(with({"info"}, with(tls, {"--token_file=" + dir.File("absent")}))), 3);
}

}  // namespace
}  // namespace scanserve::testing
