#include "server_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"

namespace scanserve::testing {
namespace {

std::string TempPath(const std::string& stem) {
  const char* dir = std::getenv("TMPDIR");
  std::string pattern = std::string(dir != nullptr ? dir : "/tmp") + "/" + stem + "-XXXXXX";
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  const int fd = mkstemp(buffer.data());
  if (fd >= 0) close(fd);
  return std::string(buffer.data());
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// fork + exec with stdout and stderr sent to the given files (-1: inherited).
pid_t Spawn(const std::vector<std::string>& argv, int out_fd, int err_fd) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    if (out_fd >= 0) dup2(out_fd, STDOUT_FILENO);
    if (err_fd >= 0) dup2(err_fd, STDERR_FILENO);
    execv(args[0], args.data());
    _exit(127);
  }
  return pid;
}

}  // namespace

absl::StatusOr<int64_t> RssBytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      return int64_t{std::strtoll(line.c_str() + 6, nullptr, 10)} * 1024;  // "VmRSS:  1234 kB"
    }
  }
  return absl::NotFoundError("no VmRSS for pid " + std::to_string(pid));
}

std::vector<std::string> ExtraServerFlagsFromEnv() {
  std::vector<std::string> out;
  const char* env = std::getenv("SCANSERVE_FAULT_SERVER_FLAGS");
  if (env == nullptr) return out;
  std::istringstream words(env);
  std::string w;
  while (words >> w) out.push_back(w);
  return out;
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(
    const std::string& binary, const std::vector<std::string>& flags, absl::Duration timeout) {
  const char* override_binary = std::getenv("SCANSERVE_FAULT_SERVER_BINARY");
  std::vector<std::string> argv = {override_binary != nullptr ? override_binary : binary,
                                   "--host=127.0.0.1", "--port=0", "--metrics_address=127.0.0.1:0",
                                   "--backend=cpu"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  for (std::string& f : ExtraServerFlagsFromEnv()) argv.push_back(std::move(f));
  const std::string log_path = TempPath("scanserve-server-log");
  const int log_fd = open(log_path.c_str(), O_WRONLY | O_TRUNC);
  if (log_fd < 0) return absl::InternalError("cannot open " + log_path);
  const pid_t pid = Spawn(argv, -1, log_fd);
  close(log_fd);
  if (pid < 0) return absl::InternalError(std::string("fork: ") + std::strerror(errno));
  std::unique_ptr<ServerProcess> process(new ServerProcess(pid, log_path));
  const std::regex listening("listening for gRPC on [^ \n]*:([0-9]+)");
  const absl::Time until = absl::Now() + timeout;
  while (absl::Now() < until) {
    std::smatch m;
    const std::string log = process->Log();
    if (std::regex_search(log, m, listening)) {
      process->port_ = std::stoi(m[1]);
      return process;
    }
    if (process->Wait(absl::ZeroDuration()).has_value()) {
      return absl::InternalError("server exited at start:\n" + log);
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::DeadlineExceededError("server did not log its port:\n" + process->Log());
}

ServerProcess::~ServerProcess() {
  if (!reaped_) {
    kill(pid_, SIGKILL);
    int status;
    waitpid(pid_, &status, 0);
  }
  unlink(log_path_.c_str());
}

void ServerProcess::Signal(int signal) const { kill(pid_, signal); }

std::optional<int> ServerProcess::Wait(absl::Duration timeout) {
  const absl::Time until = absl::Now() + timeout;
  while (true) {
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      return status;
    }
    if (absl::Now() >= until) return std::nullopt;
    absl::SleepFor(absl::Milliseconds(10));
  }
}

std::string ServerProcess::Log() const { return ReadFile(log_path_); }

absl::StatusOr<std::string> RunCommand(const std::vector<std::string>& argv,
                                       absl::Duration timeout) {
  const std::string out_path = TempPath("scanserve-cmd-out");
  const std::string err_path = TempPath("scanserve-cmd-err");
  const int out_fd = open(out_path.c_str(), O_WRONLY | O_TRUNC);
  const int err_fd = open(err_path.c_str(), O_WRONLY | O_TRUNC);
  const pid_t pid = Spawn(argv, out_fd, err_fd);
  close(out_fd);
  close(err_fd);
  int status = 0;
  bool done = false;
  const absl::Time until = absl::Now() + timeout;
  while (!done) {
    if (waitpid(pid, &status, WNOHANG) == pid) {
      done = true;
    } else if (absl::Now() >= until) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      break;
    } else {
      absl::SleepFor(absl::Milliseconds(20));
    }
  }
  const std::string out = ReadFile(out_path);
  const std::string err = ReadFile(err_path);
  unlink(out_path.c_str());
  unlink(err_path.c_str());
  if (!done) return absl::DeadlineExceededError(argv[0] + " ran past its timeout:\n" + err);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(argv[0] + " failed (status " + std::to_string(status) + "):\n" +
                               err);
  }
  return out;
}

}  // namespace scanserve::testing
