#include "server/clock.h"

namespace scanserve {
namespace {

class RealClock final : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
};

}  // namespace

Clock* Clock::Real() {
  // Leaked on purpose: threads that outlive main's locals may still read the time at exit.
  static Clock* const clock = new RealClock;
  return clock;
}

}  // namespace scanserve
