#include "server/job.h"

#include <type_traits>
#include <utility>

namespace scanserve {
namespace {

std::atomic<uint64_t> cancellation_epoch{0};

template <typename T>
constexpr OpKind OpOf() {
  if constexpr (std::is_same_v<T, LinearScanWork>) {
    return OpKind::kLinearScan;
  } else if constexpr (std::is_same_v<T, LinearScanBackwardWork>) {
    return OpKind::kLinearScanBackward;
  } else if constexpr (std::is_same_v<T, SelectiveScanWork>) {
    return OpKind::kSelectiveScan;
  } else {
    static_assert(std::is_same_v<T, AssociativeScanWork>, "every Work alternative needs an op");
    return OpKind::kAssociativeScan;
  }
}

SeqShape ShapeOf(const Work& work) {
  return std::visit([](const auto& w) { return w.problem.shape; }, work);
}

}  // namespace

OpKind WorkOp(const Work& work) {
  return std::visit([](const auto& w) { return OpOf<std::decay_t<decltype(w)>>(); }, work);
}

std::string WorkKey(const Work& work) {
  return std::visit([](const auto& w) { return SignatureKey(w.options); }, work);
}

Job::Job(Work work, int64_t bytes, absl::Time deadline)
    : work_(std::move(work)),
      op_(WorkOp(work_)),
      key_(WorkKey(work_)),
      rows_(ShapeOf(work_).rows()),
      elements_(ShapeOf(work_).elements()),
      bytes_(bytes),
      deadline_(deadline) {}

void Job::Cancel() {
  // Only the first call counts, so the epoch moves once per job. The release on the epoch
  // publishes the flag to whoever acquires the new epoch value.
  if (!cancelled_.exchange(true, std::memory_order_relaxed)) {
    cancellation_epoch.fetch_add(1, std::memory_order_release);
  }
}

uint64_t Job::CancellationEpoch() { return cancellation_epoch.load(std::memory_order_acquire); }

}  // namespace scanserve
