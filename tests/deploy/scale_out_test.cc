// Scale-out the way the Kubernetes manifests run it: several scanserve_server processes, one client
// balancing over all of them with gRPC's round_robin (here over a static ipv4: list; on Kubernetes
// over the headless Service's dns:/// name) and retrying UNAVAILABLE through its service config.
// Checks that load spreads over the replicas (each replica's own /metrics), that a replica killed
// under load costs no request, and that a replica sent SIGTERM answers what it accepted and exits
// 0.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "scanserve/client.h"
#include "support/test_support.h"

extern char** environ;

namespace scanserve {
namespace {

using ::scanserve::testing::RelativeL2Error;
using ::scanserve::testing::Rng;

// A port no one listens on now: the kernel's choice for port 0, released at once.
int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ADD_FAILURE() << "cannot bind a loopback socket: " << std::strerror(errno);
    if (fd >= 0) close(fd);
    return 0;
  }
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// GET http://127.0.0.1:port/path; the body, or empty when nothing answers.
std::string HttpGet(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  timeval timeout{2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request =
        absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
        static_cast<ssize_t>(request.size())) {
      char buffer[65536];
      ssize_t n;
      while ((n = recv(fd, buffer, sizeof(buffer), 0)) > 0) response.append(buffer, n);
    }
  }
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  return body == std::string::npos ? "" : response.substr(body + 4);
}

// Sum of the samples of `name` whose label set contains every `labels` pair (exposition text).
double MetricValue(const std::string& text, const std::string& name,
                   const std::map<std::string, std::string>& labels) {
  double sum = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (line.empty() || line[0] == '#') continue;
    if (!absl::StartsWith(line, name)) continue;
    const absl::string_view rest = line.substr(name.size());
    if (rest.empty() || (rest[0] != '{' && rest[0] != ' ')) continue;
    bool match = true;
    for (const auto& [key, value] : labels) {
      if (!absl::StrContains(rest, absl::StrCat(key, "=\"", value, "\""))) match = false;
    }
    if (!match) continue;
    const size_t space = line.rfind(' ');
    sum += std::strtod(std::string(line.substr(space + 1)).c_str(), nullptr);
  }
  return sum;
}

// One scanserve_server child process on loopback, its output in a log file.
class Replica {
 public:
  Replica(const std::string& log_dir, std::vector<std::string> extra_flags)
      : port_(FreePort()), metrics_port_(FreePort()) {
    log_path_ = absl::StrCat(log_dir, "/server-", port_, ".log");
    std::vector<std::string> args = {
        SCANSERVE_SERVER_BINARY, "--host=127.0.0.1", absl::StrCat("--port=", port_),
        absl::StrCat("--metrics_address=127.0.0.1:", metrics_port_), "--backend=cpu"};
    args.insert(args.end(), extra_flags.begin(), extra_flags.end());
    args_ = absl::StrJoin(args, " ");
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path_.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
    const int rc = posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      ADD_FAILURE() << "cannot start " << args_ << ": " << std::strerror(rc);
      pid_ = -1;
    }
  }

  ~Replica() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

  // Listening on both ports and answering /metrics; false (with a failure) after `timeout`.
  bool WaitReady(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      int status = 0;
      if (pid_ <= 0 || waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        ADD_FAILURE() << "server exited before it was ready: " << args_ << "\n" << Log();
        return false;
      }
      if (absl::StrContains(Metrics(), "scanserve_requests_total")) {
        auto client = ClientOptions{};
        client.target = target();
        client.default_timeout = absl::Seconds(2);
        auto c = Client::Create(client);
        if (c.ok()) {
          auto health = (*c)->Health();
          if (health.ok() && *health == HealthStatus::kServing) return true;
        }
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    ADD_FAILURE() << "server not ready after " << timeout << ": " << args_ << "\n" << Log();
    return false;
  }

  std::string Metrics() const { return HttpGet(metrics_port_, "/metrics"); }
  double OkCount() const {
    return MetricValue(Metrics(), "scanserve_requests_total",
                       {{"op", "linear_scan"}, {"code", "OK"}});
  }

  void Signal(int sig) { kill(pid_, sig); }

  // Exit status after SIGTERM/SIGKILL: the exit code, or 128 + signal number.
  int Wait(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    int status = 0;
    while (absl::Now() < deadline) {
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    ADD_FAILURE() << "server " << target() << " still running after " << timeout << "\n" << Log();
    return -1;
  }

  std::string Log() const {
    std::ifstream in(log_path_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  std::string target() const { return absl::StrCat("127.0.0.1:", port_); }
  const std::string& args() const { return args_; }

 private:
  int port_;
  int metrics_port_;
  pid_t pid_ = -1;
  bool exited_ = false;
  std::string log_path_;
  std::string args_;
};

// A linear_scan request (B, D, L) = (1, kDim, kLength) fp32 on random inputs, and its float64
// reference y (h[t] = a[t] h[t-1] + x[t], y = h). Small enough to fit gRPC's retry buffer, so a
// call cut by a dying replica is replayed on another.
constexpr int64_t kDim = 8;
constexpr int64_t kLength = 257;

struct Case {
  std::shared_ptr<const v1::LinearScanRequest> request;
  std::vector<double> reference;
};

Case MakeCase(Rng& rng) {
  std::vector<float> a(kDim * kLength), x(kDim * kLength);
  for (float& v : a) v = static_cast<float>(rng.Uniform(0.5, 1.0));
  for (float& v : x) v = static_cast<float>(rng.Uniform(-1.0, 1.0));
  std::vector<double> y(a.size());
  for (int64_t d = 0; d < kDim; ++d) {
    double h = 0;
    for (int64_t t = 0; t < kLength; ++t) {
      const int64_t i = d * kLength + t;
      h = static_cast<double>(a[i]) * h + static_cast<double>(x[i]);
      y[i] = h;
    }
  }
  auto request = std::make_shared<v1::LinearScanRequest>();
  *request->mutable_a() = MakeTensor(a, {1, kDim, kLength}, DType::kFloat32).value();
  *request->mutable_x() = MakeTensor(x, {1, kDim, kLength}, DType::kFloat32).value();
  return {std::move(request), std::move(y)};
}

// Calls that failed or answered wrongly, with the reasons (first few).
struct Tally {
  // What the test was doing when a call ended (named in failure reasons).
  std::atomic<const char*> phase{"load"};
  absl::Mutex mu;
  int64_t ok = 0;
  int64_t failed = 0;
  std::vector<std::string> reasons;

  void Check(const absl::StatusOr<v1::LinearScanResponse>& response, const Case& c) {
    std::string reason;
    if (!response.ok()) {
      reason = response.status().ToString();
    } else {
      auto y = TensorToFloats(response->y());
      if (!y.ok()) {
        reason = y.status().ToString();
      } else {
        const double error = RelativeL2Error(*y, c.reference);
        if (!(error <= 1e-5)) reason = absl::StrCat("relative L2 error ", error);
      }
    }
    absl::MutexLock lock(&mu);
    if (reason.empty()) {
      ++ok;
    } else {
      ++failed;
      if (reasons.size() < 10) reasons.push_back(absl::StrCat(phase.load(), ": ", reason));
    }
  }
};

class ScaleOutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    log_dir_ = ::testing::TempDir() + "scanserve_scale_out_" + std::to_string(getpid());
    std::filesystem::create_directories(log_dir_);
  }

  std::vector<std::unique_ptr<Replica>> StartReplicas(int n, std::vector<std::string> flags) {
    std::vector<std::unique_ptr<Replica>> replicas;
    for (int i = 0; i < n; ++i) replicas.push_back(std::make_unique<Replica>(log_dir_, flags));
    for (auto& r : replicas) {
      if (!r->WaitReady(absl::Seconds(60))) return {};
    }
    return replicas;
  }

  // round_robin over every replica, retrying UNAVAILABLE (the client's service config).
  static std::unique_ptr<Client> BalancedClient(
      const std::vector<std::unique_ptr<Replica>>& replicas) {
    std::vector<std::string> addresses;
    for (const auto& r : replicas) addresses.push_back(r->target());
    ClientOptions options;
    options.target = "ipv4:" + absl::StrJoin(addresses, ",");
    options.load_balancing = "round_robin";
    options.retry_max_attempts = 5;
    options.retry_initial_backoff = absl::Milliseconds(20);
    options.retry_max_backoff = absl::Milliseconds(200);
    options.default_timeout = absl::Seconds(30);
    auto client = Client::Create(options);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? std::move(*client) : nullptr;
  }

  // round_robin connects to each address on its own; wait until every replica has a connection,
  // or the first calls would all go to whichever connected first.
  static void WaitAllConnected(const Client& client, int replicas) {
    ASSERT_TRUE(client.WaitForConnected(absl::Seconds(10)));
    // A subchannel per address: give the others the moment their handshakes take.
    absl::SleepFor(absl::Milliseconds(200 * replicas));
  }

  std::string log_dir_;
};

TEST_F(ScaleOutTest, RoundRobinSpreadsLoadOverEveryReplica) {
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  constexpr int kReplicas = 3;
  constexpr int kThreads = 6;
  constexpr int kPerThread = 60;
  auto replicas = StartReplicas(kReplicas, {});
  ASSERT_EQ(replicas.size(), kReplicas);
  auto client = BalancedClient(replicas);
  ASSERT_NE(client, nullptr);
  WaitAllConnected(*client, kReplicas);

  std::vector<Case> cases;
  for (int i = 0; i < 16; ++i) cases.push_back(MakeCase(rng));
  Tally tally;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const Case& c = cases[(t * kPerThread + i) % cases.size()];
        tally.Check(client->LinearScan(*c.request), c);
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_EQ(tally.failed, 0) << absl::StrJoin(tally.reasons, "\n");
  ASSERT_EQ(tally.ok, kThreads * kPerThread);

  // Each replica counts what it answered; together exactly what the client sent.
  constexpr double kTotal = kThreads * kPerThread;
  std::vector<double> counts;
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  double sum = 0;
  do {
    counts.clear();
    sum = 0;
    for (const auto& r : replicas) {
      counts.push_back(r->OkCount());
      sum += counts.back();
    }
  } while (sum < kTotal && absl::Now() < deadline);
  EXPECT_EQ(sum, kTotal) << "replica counts " << absl::StrJoin(counts, ", ");
  for (size_t i = 0; i < counts.size(); ++i) {
    // round_robin rotates over ready connections: each of 3 replicas gets about a third.
    EXPECT_GE(counts[i], 0.2 * kTotal)
        << "replica " << replicas[i]->target() << " served " << counts[i] << " of " << kTotal
        << " (all: " << absl::StrJoin(counts, ", ") << ")";
  }
}

TEST_F(ScaleOutTest, KilledAndDrainedReplicasUnderLoadLoseNoRequest) {
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  constexpr int kReplicas = 3;
  constexpr int kThreads = 12;
  // Requests wait a little in each batcher, so a replica always holds accepted, unanswered work
  // when it is killed or told to drain.
  auto replicas = StartReplicas(kReplicas, {"--max_queue_delay_us=20000"});
  ASSERT_EQ(replicas.size(), kReplicas);
  auto client = BalancedClient(replicas);
  ASSERT_NE(client, nullptr);
  WaitAllConnected(*client, kReplicas);

  std::vector<Case> cases;
  for (int i = 0; i < 16; ++i) cases.push_back(MakeCase(rng));
  Tally tally;
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; !stop.load(); ++i) {
        const Case& c = cases[(t + i) % cases.size()];
        tally.Check(client->LinearScan(*c.request), c);
      }
    });
  }
  auto wait_for_queued = [](Replica& r) {
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (absl::Now() < deadline) {
      if (MetricValue(r.Metrics(), "scanserve_queue_depth", {}) > 0) return true;
      absl::SleepFor(absl::Milliseconds(2));
    }
    return false;
  };
  absl::SleepFor(absl::Milliseconds(500));

  // SIGKILL: every call in flight there fails UNAVAILABLE and the client replays it elsewhere.
  Replica& killed = *replicas[0];
  EXPECT_TRUE(wait_for_queued(killed)) << "no request ever queued at " << killed.target();
  tally.phase = "after SIGKILL of one replica";
  killed.Signal(SIGKILL);
  EXPECT_EQ(killed.Wait(absl::Seconds(10)), 128 + SIGKILL);
  absl::SleepFor(absl::Milliseconds(700));
  tally.phase = "load on two replicas";

  // SIGTERM: the replica answers what it accepted, refuses new calls (replayed elsewhere), exits 0.
  Replica& drained = *replicas[1];
  const double drained_before = drained.OkCount();
  EXPECT_TRUE(wait_for_queued(drained)) << "no request ever queued at " << drained.target();
  tally.phase = "after SIGTERM of one replica";
  drained.Signal(SIGTERM);
  const int drained_exit = drained.Wait(absl::Seconds(60));
  EXPECT_EQ(drained_exit, 0) << drained.Log();
  tally.phase = "after the drained replica exited";
  absl::SleepFor(absl::Milliseconds(700));

  stop = true;
  for (auto& t : threads) t.join();
  EXPECT_EQ(tally.failed, 0) << "of " << tally.ok + tally.failed << " calls:\n"
                             << absl::StrJoin(tally.reasons, "\n");
  EXPECT_GT(tally.ok, 100);
  EXPECT_GT(drained_before, 0);
  // The survivor carried the load at the end.
  EXPECT_GT(replicas[2]->OkCount(), 0);
  std::cout << "calls answered correctly: " << tally.ok << ", failed: " << tally.failed << "\n";
}

TEST_F(ScaleOutTest, SigtermAnswersEveryAcceptedRequestThenExitsZero) {
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  // A long queue delay holds the requests in the batcher until the drain flushes them.
  auto replicas = StartReplicas(1, {"--max_queue_delay_us=20000000"});
  ASSERT_EQ(replicas.size(), 1u);
  Replica& replica = *replicas[0];
  ClientOptions options;
  options.target = replica.target();
  options.retry_max_attempts = 1;  // every answer must come from this replica
  options.default_timeout = absl::Seconds(30);
  auto client = Client::Create(options);
  ASSERT_TRUE(client.ok()) << client.status();

  constexpr int kRequests = 24;
  std::vector<Case> cases;
  std::vector<std::future<absl::StatusOr<v1::LinearScanResponse>>> futures;
  for (int i = 0; i < kRequests; ++i) {
    cases.push_back(MakeCase(rng));
    futures.push_back((*client)->LinearScanAsync(*cases.back().request));
  }
  // Signal only once every request is accepted and waiting in the queue.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  double queued = 0;
  while (absl::Now() < deadline &&
         (queued = MetricValue(replica.Metrics(), "scanserve_queue_depth", {})) < kRequests) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_EQ(queued, kRequests) << replica.Log();
  const absl::Time signalled = absl::Now();
  replica.Signal(SIGTERM);

  Tally tally;
  for (int i = 0; i < kRequests; ++i) tally.Check(futures[i].get(), cases[i]);
  EXPECT_EQ(tally.failed, 0) << absl::StrJoin(tally.reasons, "\n");
  EXPECT_EQ(tally.ok, kRequests);
  // Answered by the drain's flush, not by the 20 s queue delay running out.
  EXPECT_LT(absl::Now() - signalled, absl::Seconds(10));
  EXPECT_EQ(replica.Wait(absl::Seconds(60)), 0) << replica.Log();
}

}  // namespace
}  // namespace scanserve
