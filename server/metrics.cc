#include "server/metrics.h"

#include <array>
#include <exception>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"

namespace scanserve {
namespace {

class NullMetrics final : public ServerMetrics {
 public:
  void RequestFinished(OpKind, absl::StatusCode, absl::Duration) override {}
  void BytesReceived(int64_t) override {}
  void BytesSent(int64_t) override {}
  void QueueWait(OpKind, absl::Duration) override {}
  void BatchExecuted(OpKind, int64_t, int64_t, absl::Duration) override {}
  void SetQueueDepth(int64_t) override {}
  void SetBackend(const std::string&) override {}
  void SetDeviceMemoryUsed(int, int64_t) override {}
};

constexpr std::array<OpKind, 4> kOps = {OpKind::kLinearScan, OpKind::kLinearScanBackward,
                                        OpKind::kSelectiveScan, OpKind::kAssociativeScan};
// absl::StatusCode is 0 (OK) .. 16 (UNAUTHENTICATED), as in gRPC.
constexpr int kNumCodes = 17;

// first, first * factor, ...: exact for the integer ones used here.
prometheus::Histogram::BucketBoundaries Geometric(double first, double factor, int count) {
  prometheus::Histogram::BucketBoundaries bounds;
  double bound = first;
  for (int i = 0; i < count; ++i, bound *= factor) bounds.push_back(bound);
  return bounds;
}

// 10us .. 10.49s by powers of two: a tiny scan takes microseconds, a long one over a busy queue
// seconds. Divided from whole microseconds so each bound prints as a short decimal ("8e-05").
const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const auto* const buckets = [] {
    auto* bounds = new prometheus::Histogram::BucketBoundaries;
    for (int i = 0; i <= 20; ++i) bounds->push_back(static_cast<double>(int64_t{10} << i) / 1e6);
    return bounds;
  }();
  return *buckets;
}

std::string OpLabel(OpKind op) { return std::string(OpName(op)); }

}  // namespace

std::unique_ptr<ServerMetrics> MakeNullMetrics() { return std::make_unique<NullMetrics>(); }

struct PrometheusMetrics::Impl {
  struct PerOp {
    std::array<prometheus::Counter*, kNumCodes> requests{};
    prometheus::Histogram* request_duration = nullptr;
    prometheus::Histogram* queue_wait = nullptr;
    prometheus::Histogram* execution = nullptr;
    prometheus::Histogram* batch_requests = nullptr;
    prometheus::Histogram* batch_rows = nullptr;
  };

  Impl() : registry(std::make_shared<prometheus::Registry>()) {
    auto& requests = prometheus::BuildCounter()
                         .Name("scanserve_requests_total")
                         .Help("Requests answered, by op and status code.")
                         .Register(*registry);
    auto& request_duration = prometheus::BuildHistogram()
                                 .Name("scanserve_request_duration_seconds")
                                 .Help("Time from a request's arrival to its answer.")
                                 .Register(*registry);
    auto& queue_wait = prometheus::BuildHistogram()
                           .Name("scanserve_queue_wait_seconds")
                           .Help("Time a request spent queued before its batch started.")
                           .Register(*registry);
    auto& execution = prometheus::BuildHistogram()
                          .Name("scanserve_execution_seconds")
                          .Help("Backend time of one batch.")
                          .Register(*registry);
    auto& batch_requests = prometheus::BuildHistogram()
                               .Name("scanserve_batch_requests")
                               .Help("Requests per executed batch.")
                               .Register(*registry);
    auto& batch_rows = prometheus::BuildHistogram()
                           .Name("scanserve_batch_rows")
                           .Help("Rows (batch * dim summed over requests) per executed batch.")
                           .Register(*registry);
    for (OpKind op : kOps) {
      PerOp& per = ops[static_cast<size_t>(op)];
      const std::string name = OpLabel(op);
      for (int code = 0; code < kNumCodes; ++code) {
        per.requests[code] = &requests.Add(
            {{"op", name},
             {"code", absl::StatusCodeToString(static_cast<absl::StatusCode>(code))}});
      }
      per.request_duration = &request_duration.Add({{"op", name}}, LatencyBuckets());
      per.queue_wait = &queue_wait.Add({{"op", name}}, LatencyBuckets());
      per.execution = &execution.Add({{"op", name}}, LatencyBuckets());
      per.batch_requests = &batch_requests.Add({{"op", name}}, Geometric(1, 2, 14));
      per.batch_rows = &batch_rows.Add({{"op", name}}, Geometric(1, 4, 13));
    }
    queue_depth = &prometheus::BuildGauge()
                       .Name("scanserve_queue_depth")
                       .Help("Requests queued and not yet taken into a batch.")
                       .Register(*registry)
                       .Add({});
    received_bytes = &prometheus::BuildCounter()
                          .Name("scanserve_received_bytes_total")
                          .Help("Request payload bytes received.")
                          .Register(*registry)
                          .Add({});
    sent_bytes = &prometheus::BuildCounter()
                      .Name("scanserve_sent_bytes_total")
                      .Help("Response payload bytes sent.")
                      .Register(*registry)
                      .Add({});
    backend_info = &prometheus::BuildGauge()
                        .Name("scanserve_backend_info")
                        .Help("1 for the compute backend in use.")
                        .Register(*registry);
    device_memory = &prometheus::BuildGauge()
                         .Name("scanserve_device_memory_used_bytes")
                         .Help("Memory in use on each device.")
                         .Register(*registry);
  }

  PerOp& For(OpKind op) { return ops[static_cast<size_t>(op)]; }

  std::shared_ptr<prometheus::Registry> registry;
  std::array<PerOp, kOps.size()> ops;
  prometheus::Gauge* queue_depth = nullptr;
  prometheus::Counter* received_bytes = nullptr;
  prometheus::Counter* sent_bytes = nullptr;
  prometheus::Family<prometheus::Gauge>* backend_info = nullptr;
  prometheus::Family<prometheus::Gauge>* device_memory = nullptr;

  // Rare calls (start-up, once a second): label sets made on first use.
  absl::Mutex mu;
  prometheus::Gauge* backend ABSL_GUARDED_BY(mu) = nullptr;
  std::map<int, prometheus::Gauge*> devices ABSL_GUARDED_BY(mu);

  // Last, so HTTP stops before the metrics it reads are destroyed.
  std::unique_ptr<prometheus::Exposer> exposer;
};

absl::StatusOr<std::unique_ptr<PrometheusMetrics>> PrometheusMetrics::Create(
    const std::string& bind_address) {
  auto impl = std::make_unique<Impl>();
  if (!bind_address.empty()) {
    try {
      impl->exposer = std::make_unique<prometheus::Exposer>(bind_address, /*num_threads=*/1);
    } catch (const std::exception& e) {
      return absl::UnavailableError(
          absl::StrCat("cannot serve metrics on ", bind_address, ": ", e.what()));
    }
    impl->exposer->RegisterCollectable(impl->registry);
  }
  return std::unique_ptr<PrometheusMetrics>(new PrometheusMetrics(std::move(impl)));
}

PrometheusMetrics::PrometheusMetrics(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

PrometheusMetrics::~PrometheusMetrics() {
  // Stop serving before the registry and its metrics go away.
  impl_->exposer.reset();
}

std::string PrometheusMetrics::Serialize() const {
  return prometheus::TextSerializer().Serialize(impl_->registry->Collect());
}

int PrometheusMetrics::port() const {
  if (impl_->exposer == nullptr) return 0;
  const std::vector<int> ports = impl_->exposer->GetListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

void PrometheusMetrics::RequestFinished(OpKind op, absl::StatusCode code, absl::Duration latency) {
  int index = static_cast<int>(code);
  if (index < 0 || index >= kNumCodes) index = static_cast<int>(absl::StatusCode::kUnknown);
  Impl::PerOp& per = impl_->For(op);
  per.requests[index]->Increment();
  per.request_duration->Observe(absl::ToDoubleSeconds(latency));
}

void PrometheusMetrics::BytesReceived(int64_t bytes) {
  impl_->received_bytes->Increment(static_cast<double>(bytes));
}

void PrometheusMetrics::BytesSent(int64_t bytes) {
  impl_->sent_bytes->Increment(static_cast<double>(bytes));
}

void PrometheusMetrics::QueueWait(OpKind op, absl::Duration wait) {
  impl_->For(op).queue_wait->Observe(absl::ToDoubleSeconds(wait));
}

void PrometheusMetrics::BatchExecuted(OpKind op, int64_t requests, int64_t rows,
                                      absl::Duration execution) {
  Impl::PerOp& per = impl_->For(op);
  per.batch_requests->Observe(static_cast<double>(requests));
  per.batch_rows->Observe(static_cast<double>(rows));
  per.execution->Observe(absl::ToDoubleSeconds(execution));
}

void PrometheusMetrics::SetQueueDepth(int64_t requests) {
  impl_->queue_depth->Set(static_cast<double>(requests));
}

void PrometheusMetrics::SetBackend(const std::string& name) {
  absl::MutexLock lock(&impl_->mu);
  if (impl_->backend != nullptr) impl_->backend_info->Remove(impl_->backend);
  impl_->backend = &impl_->backend_info->Add({{"backend", name}});
  impl_->backend->Set(1);
}

void PrometheusMetrics::SetDeviceMemoryUsed(int device, int64_t bytes) {
  absl::MutexLock lock(&impl_->mu);
  prometheus::Gauge*& gauge = impl_->devices[device];
  if (gauge == nullptr) gauge = &impl_->device_memory->Add({{"device", std::to_string(device)}});
  gauge->Set(static_cast<double>(bytes));
}

absl::StatusOr<std::unique_ptr<ServerMetrics>> MakePrometheusMetrics(
    const std::string& bind_address) {
  absl::StatusOr<std::unique_ptr<PrometheusMetrics>> metrics =
      PrometheusMetrics::Create(bind_address);
  if (!metrics.ok()) return metrics.status();
  return std::unique_ptr<ServerMetrics>(std::move(*metrics));
}

}  // namespace scanserve
