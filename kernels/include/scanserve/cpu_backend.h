// The CPU backend: every operation of ops.md in float32 arithmetic on a fixed thread pool that
// spreads the rows of a batch. It is the reference the CUDA kernels are tested against and the
// default where no GPU exists. Thread-safe (see backend.h); owns its pool.
#ifndef SCANSERVE_CPU_BACKEND_H_
#define SCANSERVE_CPU_BACKEND_H_

#include <memory>

#include "scanserve/backend.h"

namespace scanserve {

// threads <= 0 uses std::thread::hardware_concurrency().
std::unique_ptr<Backend> MakeCpuBackend(int threads);

}  // namespace scanserve

#endif  // SCANSERVE_CPU_BACKEND_H_
