#include "security_support.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

extern char** environ;

namespace scanserve::testing {
namespace {

// Spawns `argv` with stdout and stderr appended to `log_path`; the child's pid or -1.
pid_t Spawn(const std::vector<std::string>& argv, const std::string& log_path) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  // The child gets default signal handling and an empty mask whatever this process set up.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t empty;
  sigemptyset(&empty);
  sigset_t defaults;
  sigfillset(&defaults);
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  const int error = posix_spawn(&pid, args[0], &actions, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  return error == 0 ? pid : -1;
}

// Waits for `pid` up to `timeout`; its exit status, -1 when it was killed by a signal or had to
// be killed at the timeout.
int WaitExit(pid_t pid, absl::Duration timeout) {
  const absl::Time until = absl::Now() + timeout;
  int status = 0;
  while (true) {
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (r < 0) return -1;
    if (absl::Now() > until) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = std::string(base && *base ? base : "/tmp") + "/scanserve-sec-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp " << pattern;
  }
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

void WriteFile(const std::string& path, const std::string& text) {
  const std::string temporary = path + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out << text;
    ASSERT_TRUE(out.good()) << "writing " << temporary;
  }
  ASSERT_EQ(std::rename(temporary.c_str(), path.c_str()), 0) << "renaming to " << path;
}

absl::Status MakeTestCerts(const std::string& dir) {
  const std::string log = dir + "/make_test_certs.log";
  const pid_t pid = Spawn({"/bin/bash", SCANSERVE_MAKE_CERTS_SCRIPT, dir}, log);
  if (pid < 0) return absl::InternalError("cannot run " SCANSERVE_MAKE_CERTS_SCRIPT);
  const int status = WaitExit(pid, absl::Seconds(60));
  if (status == 3) return absl::FailedPreconditionError(ReadAll(log));
  if (status != 0) {
    return absl::InternalError("make_test_certs.sh exited " + std::to_string(status) + ": " +
                               ReadAll(log));
  }
  return absl::OkStatus();
}

ServerConfig LoopbackConfig() {
  ServerConfig c;
  c.host = "127.0.0.1";
  c.port = 0;
  c.metrics_address = "";
  c.backend.kind = "cpu";
  c.backend.cpu_threads = 2;
  c.batching.max_queue_delay = absl::Milliseconds(1);
  c.shutdown_grace = absl::ZeroDuration();
  c.drain_timeout = absl::Seconds(20);
  return c;
}

ClientOptions LoopbackClient(int port) {
  ClientOptions options;
  options.target = "127.0.0.1:" + std::to_string(port);
  options.default_timeout = absl::Seconds(30);
  options.retry_max_attempts = 1;
  return options;
}

LinearCall RandomLinearScan(Rng& rng, int64_t batch, int64_t dim, int64_t length) {
  const int64_t count = batch * dim * length;
  std::vector<float> a(count), x(count);
  for (int64_t i = 0; i < count; ++i) {
    a[i] = static_cast<float>(rng.Uniform(-1.0, 1.0));
    x[i] = static_cast<float>(rng.Uniform(-1.0, 1.0));
  }
  LinearCall call;
  const std::vector<int64_t> shape = {batch, dim, length};
  *call.request.mutable_a() = MakeTensor(a, shape, DType::kFloat32).value();
  *call.request.mutable_x() = MakeTensor(x, shape, DType::kFloat32).value();
  call.expected_y.resize(count);
  for (int64_t row = 0; row < batch * dim; ++row) {
    double h = 0;
    for (int64_t t = 0; t < length; ++t) {
      const int64_t i = row * length + t;  // BDL: length is contiguous
      h = static_cast<double>(a[i]) * h + static_cast<double>(x[i]);
      call.expected_y[i] = h;
    }
  }
  return call;
}

void ExpectMatches(const LinearCall& call, const v1::LinearScanResponse& response) {
  absl::StatusOr<std::vector<float>> y = TensorToFloats(response.y());
  ASSERT_TRUE(y.ok()) << y.status();
  ASSERT_EQ(y->size(), call.expected_y.size());
  for (size_t i = 0; i < y->size(); ++i) {
    const double want = call.expected_y[i];
    ASSERT_LE(std::abs((*y)[i] - want), 1e-5 * std::max(1.0, std::abs(want))) << "y[" << i << "]";
  }
}

absl::StatusOr<std::string> ScrapeMetrics(const std::string& host, int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError("socket");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, host.c_str(), &address.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    const int error = errno;
    close(fd);
    return absl::UnavailableError("connect " + host + ":" + std::to_string(port) + ": " +
                                  std::strerror(error));
  }
  const std::string request = "GET /metrics HTTP/1.0\r\nHost: " + host + "\r\n\r\n";
  if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return absl::UnavailableError("write");
  }
  std::string response;
  char buffer[8192];
  ssize_t n = 0;
  while ((n = read(fd, buffer, sizeof(buffer))) > 0) response.append(buffer, n);
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.", 0) != 0 || body == std::string::npos) {
    return absl::UnavailableError("not an HTTP response: " + response.substr(0, 200));
  }
  return response.substr(body + 4);
}

double MetricValue(const std::string& text, const std::string& series) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(series + " ", 0) != 0) continue;
    double value = -1;
    if (absl::SimpleAtod(line.substr(series.size() + 1), &value)) return value;
  }
  return -1;
}

double MetricSum(const std::string& text, const std::string& name) {
  std::istringstream lines(text);
  std::string line;
  double sum = 0;
  while (std::getline(lines, line)) {
    if (line.rfind(name + "{", 0) != 0 && line.rfind(name + " ", 0) != 0) continue;
    double value = 0;
    if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &value)) sum += value;
  }
  return sum;
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(
    const std::vector<std::string>& args, const std::string& log_path) {
  std::vector<std::string> argv = {SCANSERVE_SERVER_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  const pid_t pid = Spawn(argv, log_path);
  if (pid < 0) return absl::InternalError("cannot spawn " SCANSERVE_SERVER_BINARY);
  std::unique_ptr<ServerProcess> process(new ServerProcess(pid, log_path));
  constexpr char kListening[] = "listening for gRPC on ";
  const absl::Time until = absl::Now() + absl::Seconds(60);
  while (absl::Now() < until) {
    const std::string log = process->Log();
    const size_t at = log.find(kListening);
    const size_t end = log.find('\n', at);
    if (at != std::string::npos && end != std::string::npos) {
      const size_t begin = at + sizeof(kListening) - 1;
      const std::string address = log.substr(begin, end - begin);
      const size_t colon = address.rfind(':');
      if (!absl::SimpleAtoi(address.substr(colon + 1), &process->port_)) {
        return absl::InternalError("cannot parse the port of '" + address + "'");
      }
      return process;
    }
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      process->pid_ = -1;
      return absl::InternalError("the server exited before listening: " + log);
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::DeadlineExceededError("the server did not listen within 60 s: " + process->Log());
}

int ServerProcess::RunToExit(const std::vector<std::string>& args, const std::string& log_path,
                             std::string* log) {
  std::vector<std::string> argv = {SCANSERVE_SERVER_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  const pid_t pid = Spawn(argv, log_path);
  if (pid < 0) return -1;
  const int status = WaitExit(pid, absl::Seconds(60));
  *log = ReadAll(log_path);
  return status;
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

std::string ServerProcess::Log() const { return ReadAll(log_path_); }

bool ServerProcess::WaitForLog(const std::string& text, int count, absl::Duration timeout) const {
  const absl::Time until = absl::Now() + timeout;
  while (true) {
    const std::string log = Log();
    int found = 0;
    for (size_t at = log.find(text); at != std::string::npos; at = log.find(text, at + 1)) ++found;
    if (found >= count) return true;
    if (absl::Now() > until) return false;
    absl::SleepFor(absl::Milliseconds(20));
  }
}

int ServerProcess::Stop(int signal) {
  if (pid_ <= 0) return -1;
  kill(pid_, signal);
  const int status = WaitExit(pid_, absl::Seconds(60));
  pid_ = -1;
  return status;
}

}  // namespace scanserve::testing
