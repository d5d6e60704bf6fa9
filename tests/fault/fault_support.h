// Shared by the fault and load tests: a pool of linear_scan requests with their float64
// references, and the server's Prometheus metrics scraped over HTTP.
//
// Ownership: value types. Thread-safety: a RequestPool is read-only after construction and safe to
// share between threads; the scrape functions are reentrant.
#ifndef SCANSERVE_TESTS_FAULT_FAULT_SUPPORT_H_
#define SCANSERVE_TESTS_FAULT_FAULT_SUPPORT_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "scanserve/ops.h"
#include "scanserve/v1/scanserve.pb.h"
#include "support/test_support.h"

namespace scanserve::testing {

// `count` random linear_scan requests of up to (2, max_dim, max_len), every option set, each with
// its reference output.
class RequestPool {
 public:
  RequestPool(Rng& rng, int count, int64_t max_dim, int64_t max_len);
  int size() const { return static_cast<int>(requests_.size()); }
  const v1::LinearScanRequest& request(int i) const { return requests_[i]; }
  v1::StreamRequest stream_request(int i, uint64_t id) const;
  // Empty when `response` is the correct answer to request i; otherwise what is wrong.
  std::string Mismatch(int i, const v1::LinearScanResponse& response) const;

 private:
  std::vector<LinearScanOptions> options_;
  std::vector<SeqShape> shapes_;
  std::vector<v1::LinearScanRequest> requests_;
  std::vector<std::vector<double>> y_;
  std::vector<std::vector<double>> final_state_;
};

// GET /metrics from 127.0.0.1:port, parsed into "name{k=v,...}" (labels sorted) -> value; empty
// when the scrape fails.
std::map<std::string, double> ScrapeMetrics(int port);
// One series' value; -1 when absent.
double Metric(const std::map<std::string, double>& metrics, const std::string& name,
              const std::map<std::string, std::string>& labels = {});
// Sum over every series of `name`.
double MetricSum(const std::map<std::string, double>& metrics, const std::string& name);
// Scrapes until `done` holds or `timeout` passes; the last scrape.
std::map<std::string, double> ScrapeUntil(
    int port, const std::function<bool(const std::map<std::string, double>&)>& done,
    absl::Duration timeout);

// The number in the environment variable `name`, or `fallback` when unset.
double EnvNumber(const char* name, double fallback);

}  // namespace scanserve::testing

#endif  // SCANSERVE_TESTS_FAULT_FAULT_SUPPORT_H_
