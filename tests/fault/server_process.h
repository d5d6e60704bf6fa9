// The real server binary as a child process, for tests that need its memory on its own (RSS from
// /proc) or that signal it: started with chosen flags on 127.0.0.1 and a free port, its log kept in
// a file, stopped with a signal.
//
// Ownership: a ServerProcess owns its child; the destructor kills (SIGKILL) and reaps one still
// running. Thread-safety: none; use from one thread.
#ifndef SCANSERVE_TESTS_FAULT_SERVER_PROCESS_H_
#define SCANSERVE_TESTS_FAULT_SERVER_PROCESS_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace scanserve::testing {

// Resident set size of process `pid` (VmRSS of /proc/<pid>/status) in bytes; NOT_FOUND once the
// process is gone.
absl::StatusOr<int64_t> RssBytes(pid_t pid);

// The extra flags of SCANSERVE_FAULT_SERVER_FLAGS (space separated), appended after a test's own
// so that a run can take a protection away (e.g. --stream_max_in_flight=1000000) and watch the
// test fail.
std::vector<std::string> ExtraServerFlagsFromEnv();

class ServerProcess {
 public:
  // Starts `binary` (or the binary SCANSERVE_FAULT_SERVER_BINARY names, to run these tests against
  // a modified server) with --host=127.0.0.1 --port=0 --metrics_address=127.0.0.1:0 --backend=cpu,
  // then `flags`, then ExtraServerFlagsFromEnv(); waits (up to `timeout`) until its log names the
  // port it listens on.
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(
      const std::string& binary, const std::vector<std::string>& flags,
      absl::Duration timeout = absl::Seconds(30));
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  pid_t pid() const { return pid_; }
  int port() const { return port_; }
  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }
  absl::StatusOr<int64_t> Rss() const { return RssBytes(pid_); }

  void Signal(int signal) const;
  // Waits up to `timeout` for the process to end; its exit status as from waitpid (decode with
  // WIFEXITED / WEXITSTATUS), or nullopt if it is still running.
  std::optional<int> Wait(absl::Duration timeout);
  // Everything the server has logged so far.
  std::string Log() const;

 private:
  ServerProcess(pid_t pid, std::string log_path) : pid_(pid), log_path_(std::move(log_path)) {}
  pid_t pid_;
  int port_ = 0;
  std::string log_path_;
  bool reaped_ = false;
};

// Runs `argv` to completion (up to `timeout`, then SIGKILL) and returns its stdout; the exit status
// must be 0, otherwise INTERNAL with the status and stderr.
absl::StatusOr<std::string> RunCommand(const std::vector<std::string>& argv,
                                       absl::Duration timeout);

}  // namespace scanserve::testing

#endif  // SCANSERVE_TESTS_FAULT_SERVER_PROCESS_H_
