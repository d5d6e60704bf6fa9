// The CUDA backend (built when SCANSERVE_CUDA finds nvcc). Thread-safe (see backend.h).
#ifndef SCANSERVE_CUDA_BACKEND_H_
#define SCANSERVE_CUDA_BACKEND_H_

#include <memory>

#include "absl/status/statusor.h"
#include "scanserve/backend.h"

namespace scanserve {

// Number of usable CUDA devices; 0 when the driver or runtime reports any error (no GPU, driver
// too old), so callers can treat "no GPU" and "broken GPU stack" alike.
int CudaDeviceCount();

// FAILED_PRECONDITION when no GPU is usable.
absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(const BackendConfig& config);

}  // namespace scanserve

#endif  // SCANSERVE_CUDA_BACKEND_H_
