// What the security tests share: temporary directories, test certificates made by openssl at run
// time, a loopback server config, a small LinearScan with its float64 answer, /metrics scraping
// and the real server binary as a child process.
//
// Ownership: TempDir owns its directory, ServerProcess its child process (killed if still running
// when destroyed). Thread-safety: none; each test uses its own objects from one thread.
#ifndef SCANSERVE_TESTS_SECURITY_SECURITY_SUPPORT_H_
#define SCANSERVE_TESTS_SECURITY_SECURITY_SUPPORT_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "scanserve/client.h"
#include "server/config.h"
#include "support/test_support.h"

namespace scanserve::testing {

// A fresh directory under $TMPDIR (or /tmp), removed with its content at destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Writes `text` to `path` atomically (a temporary file renamed over it), so a server rereading
// the file never sees half of it.
void WriteFile(const std::string& path, const std::string& text);

// Runs make_test_certs.sh into `dir` (see the script for the files). FAILED_PRECONDITION with the
// reason when openssl is not installed (callers skip), INTERNAL when the script fails otherwise.
absl::Status MakeTestCerts(const std::string& dir);

// CPU backend on 127.0.0.1, a free port, metrics off, 1 ms batching delay, no shutdown grace.
ServerConfig LoopbackConfig();
// A client of 127.0.0.1:port with a 30 s default deadline and no retries (a refused connection
// must show, not be retried away).
ClientOptions LoopbackClient(int port);

// A LinearScan (a and x only, float32, BDL) on random inputs and its float64 answer.
struct LinearCall {
  v1::LinearScanRequest request;
  std::vector<double> expected_y;
};
LinearCall RandomLinearScan(Rng& rng, int64_t batch, int64_t dim, int64_t length);
// Every y element within 1e-5 (relative to max(1, |expected|)) of the float64 answer.
void ExpectMatches(const LinearCall& call, const v1::LinearScanResponse& response);

// GET http://127.0.0.1:port/metrics; the body, or the connection error.
absl::StatusOr<std::string> ScrapeMetrics(const std::string& host, int port);
// The value of an unlabelled series (e.g. "scanserve_queue_depth"); -1 when absent.
double MetricValue(const std::string& text, const std::string& series);
// The sum over every series of metric `name`, whatever its labels.
double MetricSum(const std::string& text, const std::string& name);

// The real scanserve_server binary, its stderr and stdout in a log file.
class ServerProcess {
 public:
  // Starts the binary with `args` and waits (up to 60 s) for its "listening" line; the error
  // holds the log when it exits or never listens.
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(const std::vector<std::string>& args,
                                                              const std::string& log_path);
  // Runs the binary with `args` to its end (up to 60 s); its exit status (-1: killed or timed
  // out) and the log in *log.
  static int RunToExit(const std::vector<std::string>& args, const std::string& log_path,
                       std::string* log);
  ~ServerProcess();

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string Log() const;
  // Polls the log until it holds `text` `count` times or `timeout` passes.
  bool WaitForLog(const std::string& text, int count, absl::Duration timeout) const;
  // Sends `signal` and waits (up to 60 s) for the exit; its exit status, -1 when killed.
  int Stop(int signal);

 private:
  ServerProcess(pid_t pid, std::string log_path) : pid_(pid), log_path_(std::move(log_path)) {}
  pid_t pid_;
  std::string log_path_;
  int port_ = 0;
};

}  // namespace scanserve::testing

#endif  // SCANSERVE_TESTS_SECURITY_SECURITY_SUPPORT_H_
