// scanctl bench: a closed-loop load generator on the async client. `concurrency` callers each keep
// exactly one request in flight and send the next as soon as the previous answers, so the offered
// load adapts to the server (the model of a client pool, not of an open arrival process). All
// callers are chains of callbacks on gRPC's threads: 256 concurrent calls need no 256 threads.
//
// Thread-safety: RunBench blocks its caller until the run ends; the statistics helpers are pure.
#ifndef SCANSERVE_CLIENT_SCANCTL_BENCH_H_
#define SCANSERVE_CLIENT_SCANCTL_BENCH_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "scanserve/client.h"

namespace scanserve::scanctl {

// One kind of call the bench sends: an operation (any StreamRequest op, sent on its unary RPC) or
// an Echo of a payload.
struct BenchRequest {
  std::shared_ptr<const v1::StreamRequest> scan;  // set for operations
  std::shared_ptr<const v1::EchoRequest> echo;    // set for echo
  int64_t bytes = 0;                              // serialized request message
};

struct BenchConfig {
  int concurrency = 1;
  int64_t requests = 0;                         // total to send; 0 = until `duration`
  absl::Duration duration = absl::Seconds(10);  // ignored when `requests` is set
  int64_t warmup_requests = 0;                  // completed first, left out of every figure
  CallOptions call;                             // deadline and metadata of every request
  // Called about every progress_interval from the waiting thread with the figures so far.
  std::function<void(const struct BenchProgress&)> on_progress;
  absl::Duration progress_interval = absl::Milliseconds(250);
};

struct BenchProgress {
  absl::Duration elapsed;
  int64_t completed = 0;  // measured requests answered so far, errors included
  int64_t errors = 0;
  int64_t in_flight = 0;
  double recent_rps = 0;  // over the last interval
};

struct BenchResult {
  absl::Duration elapsed;  // measured window: first measured send to last answer
  int64_t completed = 0;   // measured requests, errors included
  int64_t ok = 0;
  std::map<std::string, int64_t> errors;  // status code name -> count
  std::string first_error;                // message of the first error seen
  int64_t request_bytes = 0;              // of the ok requests
  int64_t response_bytes = 0;
  std::vector<double> latencies_us;  // of the ok requests, sorted ascending
};

// Runs the load: caller i sends requests[(i + k) % requests.size()] as its k-th request.
BenchResult RunBench(const Client& client, const std::vector<BenchRequest>& requests,
                     const BenchConfig& config);

// Nearest-rank percentile (p in [0, 100]) of ascending `sorted`; 0 when empty.
double Percentile(const std::vector<double>& sorted, double p);

// Human-readable report (several lines) and one-line JSON object of a result. `title` describes
// the request, e.g. Describe(request).
std::string FormatReport(const BenchResult& result, const std::string& title, int concurrency);
std::string FormatJson(const BenchResult& result, const std::map<std::string, std::string>& fields,
                       int concurrency);

// JSON string literal of `s` (quotes included).
std::string JsonQuote(const std::string& s);

}  // namespace scanserve::scanctl

#endif  // SCANSERVE_CLIENT_SCANCTL_BENCH_H_
