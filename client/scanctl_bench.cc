#include "client/scanctl_bench.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace scanserve::scanctl {
namespace {

using SteadyClock = std::chrono::steady_clock;

// Completions may run inline on the thread that started the call (a call failing at once, e.g.
// with no server): the next send then nests inside the previous one's callback. Past this depth
// the send is handed to the waiting thread instead, so the stack stays bounded.
constexpr int kMaxInlineDepth = 16;
thread_local int inline_depth = 0;

class LoadRun {
 public:
  LoadRun(const Client& client, const std::vector<BenchRequest>& requests,
          const BenchConfig& config)
      : client_(client),
        requests_(requests),
        config_(config),
        callers_(static_cast<size_t>(config.concurrency)),
        total_(config.requests > 0 ? config.requests + config.warmup_requests : 0) {}

  BenchResult Run() {
    const SteadyClock::time_point run_start = SteadyClock::now();
    {
      absl::MutexLock lock(&mu_);
      active_ = config_.concurrency;
      if (config_.warmup_requests == 0) measure_start_ = run_start;
    }
    for (int i = 0; i < config_.concurrency; ++i) Issue(i);

    int64_t last_completed = 0;
    SteadyClock::time_point last_tick = run_start;
    bool stopping = false;
    for (;;) {
      std::vector<int> deferred;
      bool all_done;
      std::optional<SteadyClock::time_point> measure_start;
      {
        absl::MutexLock lock(&mu_);
        mu_.AwaitWithTimeout(absl::Condition(this, &LoadRun::WakeLocked),
                             config_.progress_interval);
        deferred.swap(deferred_);
        all_done = active_ == 0;
        measure_start = measure_start_;
      }
      for (int caller : deferred) Issue(caller);
      if (all_done) break;
      const SteadyClock::time_point now = SteadyClock::now();
      if (!stopping && total_ == 0 && measure_start.has_value() &&
          now - *measure_start >= absl::ToChronoNanoseconds(config_.duration)) {
        stopping = true;
        stop_.store(true);
      }
      if (config_.on_progress &&
          now - last_tick >= absl::ToChronoNanoseconds(config_.progress_interval)) {
        BenchProgress progress;
        progress.elapsed = absl::FromChrono(now - measure_start.value_or(run_start));
        progress.completed = measured_completed_.load();
        progress.errors = measured_errors_.load();
        progress.in_flight = in_flight_.load();
        const double seconds = std::chrono::duration<double>(now - last_tick).count();
        progress.recent_rps = (progress.completed - last_completed) / seconds;
        last_completed = progress.completed;
        last_tick = now;
        config_.on_progress(progress);
      }
    }

    // Every caller has stopped, but the last completions may still be on their way out of OnDone
    // (releasing mu_); this object must outlive them.
    while (callbacks_running_.load() != 0) std::this_thread::yield();

    BenchResult result;
    absl::MutexLock lock(&mu_);
    result.first_error = first_error_;
    if (measure_start_.has_value() && last_completion_ > *measure_start_) {
      result.elapsed = absl::FromChrono(last_completion_ - *measure_start_);
    }
    for (const Caller& c : callers_) {
      result.ok += c.ok;
      result.request_bytes += c.request_bytes;
      result.response_bytes += c.response_bytes;
      for (const auto& [code, n] : c.errors) {
        result.errors[code] += n;
        result.completed += n;
      }
      result.latencies_us.insert(result.latencies_us.end(), c.latencies_us.begin(),
                                 c.latencies_us.end());
    }
    result.completed += result.ok;
    std::sort(result.latencies_us.begin(), result.latencies_us.end());
    return result;
  }

 private:
  // What one caller accumulates; touched only by that caller's chain of callbacks, one at a
  // time, and read after every caller finished.
  struct Caller {
    int64_t sent = 0;
    int64_t ok = 0;
    int64_t request_bytes = 0;
    int64_t response_bytes = 0;
    std::map<std::string, int64_t> errors;
    std::vector<double> latencies_us;
  };

  bool WakeLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return active_ == 0 || !deferred_.empty();
  }

  void Issue(int index) {
    Caller& caller = callers_[static_cast<size_t>(index)];
    if (stop_.load() || (total_ > 0 && claimed_.fetch_add(1) >= total_)) {
      absl::MutexLock lock(&mu_);
      --active_;
      return;
    }
    const size_t n = requests_.size();
    const BenchRequest& request =
        requests_[(static_cast<size_t>(index) + static_cast<size_t>(caller.sent)) % n];
    ++caller.sent;
    in_flight_.fetch_add(1);
    const SteadyClock::time_point start = SteadyClock::now();
    auto done = [this, index, start, &request](absl::Status status, int64_t response_bytes) {
      OnDone(index, start, request, status, response_bytes);
    };
    if (request.echo != nullptr) {
      client_.EchoAsync(
          request.echo,
          [done](absl::StatusOr<v1::EchoResponse> r) {
            done(r.status(), r.ok() ? static_cast<int64_t>(r->ByteSizeLong()) : 0);
          },
          config_.call);
      return;
    }
    const std::shared_ptr<const v1::StreamRequest>& scan = request.scan;
    auto on = [done](const auto& r) {
      done(r.status(), r.ok() ? static_cast<int64_t>(r->ByteSizeLong()) : 0);
    };
    switch (scan->op_case()) {
      case v1::StreamRequest::kLinearScan:
        client_.LinearScanAsync(
            std::shared_ptr<const v1::LinearScanRequest>(scan, &scan->linear_scan()),
            [on](absl::StatusOr<v1::LinearScanResponse> r) { on(r); }, config_.call);
        break;
      case v1::StreamRequest::kLinearScanBackward:
        client_.LinearScanBackwardAsync(
            std::shared_ptr<const v1::LinearScanBackwardRequest>(scan,
                                                                 &scan->linear_scan_backward()),
            [on](absl::StatusOr<v1::LinearScanBackwardResponse> r) { on(r); }, config_.call);
        break;
      case v1::StreamRequest::kSelectiveScan:
        client_.SelectiveScanAsync(
            std::shared_ptr<const v1::SelectiveScanRequest>(scan, &scan->selective_scan()),
            [on](absl::StatusOr<v1::SelectiveScanResponse> r) { on(r); }, config_.call);
        break;
      case v1::StreamRequest::kAssociativeScan:
        client_.AssociativeScanAsync(
            std::shared_ptr<const v1::AssociativeScanRequest>(scan, &scan->associative_scan()),
            [on](absl::StatusOr<v1::AssociativeScanResponse> r) { on(r); }, config_.call);
        break;
      default:
        done(absl::InvalidArgumentError("request: carries no operation"), 0);
    }
  }

  void OnDone(int index, SteadyClock::time_point start, const BenchRequest& request,
              const absl::Status& status, int64_t response_bytes) {
    callbacks_running_.fetch_add(1);
    Complete(index, start, request, status, response_bytes);
    // The last touch of this object: Run() returns once the count is back at zero.
    callbacks_running_.fetch_sub(1);
  }

  void Complete(int index, SteadyClock::time_point start, const BenchRequest& request,
                const absl::Status& status, int64_t response_bytes) {
    const SteadyClock::time_point end = SteadyClock::now();
    in_flight_.fetch_sub(1);
    const int64_t order = completed_.fetch_add(1);
    const bool measured = order >= config_.warmup_requests;
    Caller& caller = callers_[static_cast<size_t>(index)];
    if (measured) {
      if (status.ok()) {
        ++caller.ok;
        caller.request_bytes += request.bytes;
        caller.response_bytes += response_bytes;
        caller.latencies_us.push_back(
            std::chrono::duration<double, std::micro>(end - start).count());
      } else {
        ++caller.errors[absl::StatusCodeToString(status.code())];
        measured_errors_.fetch_add(1);
      }
      measured_completed_.fetch_add(1);
    }
    {
      absl::MutexLock lock(&mu_);
      if (order + 1 == config_.warmup_requests) measure_start_ = end;
      if (measured) last_completion_ = std::max(last_completion_, end);
      if (!status.ok() && first_error_.empty()) {
        first_error_ =
            absl::StrCat(absl::StatusCodeToString(status.code()), ": ", status.message());
      }
      if (inline_depth >= kMaxInlineDepth) {
        deferred_.push_back(index);
        return;
      }
    }
    ++inline_depth;
    Issue(index);
    --inline_depth;
  }

  const Client& client_;
  const std::vector<BenchRequest>& requests_;
  const BenchConfig& config_;
  std::vector<Caller> callers_;
  const int64_t total_;  // sends in all, warmup included; 0 = run for the duration

  std::atomic<bool> stop_{false};
  std::atomic<int64_t> claimed_{0};
  std::atomic<int64_t> completed_{0};
  std::atomic<int64_t> measured_completed_{0};
  std::atomic<int64_t> measured_errors_{0};
  std::atomic<int64_t> in_flight_{0};
  std::atomic<int> callbacks_running_{0};

  absl::Mutex mu_;
  int active_ ABSL_GUARDED_BY(mu_) = 0;  // callers still sending
  std::vector<int> deferred_ ABSL_GUARDED_BY(mu_);
  std::optional<SteadyClock::time_point> measure_start_ ABSL_GUARDED_BY(mu_);
  SteadyClock::time_point last_completion_ ABSL_GUARDED_BY(mu_);
  std::string first_error_ ABSL_GUARDED_BY(mu_);
};

std::string Fixed(double v, int digits) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.*f", digits, v);
  return buffer;
}

}  // namespace

BenchResult RunBench(const Client& client, const std::vector<BenchRequest>& requests,
                     const BenchConfig& config) {
  if (requests.empty() || config.concurrency < 1) return BenchResult();
  LoadRun run(client, requests, config);
  return run.Run();
}

double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0.0;
  const double rank = std::ceil(p / 100.0 * static_cast<double>(sorted.size()));
  const size_t index = rank < 1 ? 0 : static_cast<size_t>(rank) - 1;
  return sorted[std::min(index, sorted.size() - 1)];
}

namespace {

struct Figures {
  double seconds, rps, request_gbps, response_gbps, mean_us;
};

Figures Compute(const BenchResult& r) {
  Figures f{};
  f.seconds = absl::ToDoubleSeconds(r.elapsed);
  if (f.seconds > 0) {
    f.rps = static_cast<double>(r.ok) / f.seconds;
    f.request_gbps = static_cast<double>(r.request_bytes) / f.seconds / 1e9;
    f.response_gbps = static_cast<double>(r.response_bytes) / f.seconds / 1e9;
  }
  double sum = 0;
  for (double v : r.latencies_us) sum += v;
  f.mean_us = r.latencies_us.empty() ? 0 : sum / static_cast<double>(r.latencies_us.size());
  return f;
}

}  // namespace

std::string FormatReport(const BenchResult& r, const std::string& title, int concurrency) {
  const Figures f = Compute(r);
  const auto ms = [](double us) { return Fixed(us / 1000.0, 3); };
  std::string out = absl::StrCat(title, ", concurrency ", concurrency, "\n");
  absl::StrAppend(&out, "  requests    ", r.ok, " ok, ", r.completed - r.ok, " failed in ",
                  Fixed(f.seconds, 3), " s\n");
  absl::StrAppend(&out, "  throughput  ", Fixed(f.rps, 1), " req/s, payload ",
                  Fixed(f.request_gbps + f.response_gbps, 3), " GB/s (request ",
                  Fixed(f.request_gbps, 3), " + response ", Fixed(f.response_gbps, 3), ")\n");
  absl::StrAppend(&out, "  latency ms  p50 ", ms(Percentile(r.latencies_us, 50)), "  p90 ",
                  ms(Percentile(r.latencies_us, 90)), "  p99 ", ms(Percentile(r.latencies_us, 99)),
                  "  max ", ms(r.latencies_us.empty() ? 0 : r.latencies_us.back()), "  mean ",
                  ms(f.mean_us), "\n");
  if (!r.errors.empty()) {
    absl::StrAppend(&out, "  errors     ");
    for (const auto& [code, n] : r.errors) absl::StrAppend(&out, " ", code, " ", n);
    absl::StrAppend(&out, "\n  first error ", r.first_error, "\n");
  }
  return out;
}

std::string JsonQuote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buffer[8];
          std::snprintf(buffer, sizeof(buffer), "\\u%04x", c);
          out += buffer;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string FormatJson(const BenchResult& r, const std::map<std::string, std::string>& fields,
                       int concurrency) {
  const Figures f = Compute(r);
  const auto ms = [](double us) { return Fixed(us / 1000.0, 4); };
  std::string out = "{";
  for (const auto& [key, value] : fields) absl::StrAppend(&out, JsonQuote(key), ":", value, ",");
  absl::StrAppend(&out, "\"concurrency\":", concurrency, ",\"elapsed_s\":", Fixed(f.seconds, 6),
                  ",\"requests\":", r.completed, ",\"ok\":", r.ok,
                  ",\"failed\":", r.completed - r.ok, ",\"errors\":{");
  bool first = true;
  for (const auto& [code, n] : r.errors) {
    absl::StrAppend(&out, first ? "" : ",", JsonQuote(code), ":", n);
    first = false;
  }
  absl::StrAppend(&out, "},\"throughput_rps\":", Fixed(f.rps, 3),
                  ",\"payload_gbps\":", Fixed(f.request_gbps + f.response_gbps, 6),
                  ",\"request_bytes\":", r.request_bytes, ",\"response_bytes\":", r.response_bytes,
                  ",\"latency_ms\":{\"p50\":", ms(Percentile(r.latencies_us, 50)),
                  ",\"p90\":", ms(Percentile(r.latencies_us, 90)),
                  ",\"p99\":", ms(Percentile(r.latencies_us, 99)),
                  ",\"max\":", ms(r.latencies_us.empty() ? 0 : r.latencies_us.back()),
                  ",\"mean\":", ms(f.mean_us), "}");
  if (!r.first_error.empty()) absl::StrAppend(&out, ",\"first_error\":", JsonQuote(r.first_error));
  return out + "}";
}

}  // namespace scanserve::scanctl
