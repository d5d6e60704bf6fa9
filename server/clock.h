// Time source for the batcher and executor, so tests can drive time by hand.
// Thread-safety: implementations are safe to call from any thread.
#ifndef SCANSERVE_SERVER_CLOCK_H_
#define SCANSERVE_SERVER_CLOCK_H_

#include <atomic>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace scanserve {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
  // A process-wide real clock; never deleted.
  static Clock* Real();
};

// A clock that moves only when told to.
class FakeClock : public Clock {
 public:
  explicit FakeClock(absl::Time start = absl::UnixEpoch()) : now_ns_(absl::ToUnixNanos(start)) {}
  absl::Time Now() const override { return absl::FromUnixNanos(now_ns_.load()); }
  void Advance(absl::Duration d) { now_ns_ += absl::ToInt64Nanoseconds(d); }

 private:
  std::atomic<int64_t> now_ns_;
};

}  // namespace scanserve

#endif  // SCANSERVE_SERVER_CLOCK_H_
