#include "absl/status/status.h"
#include "scanserve/backend.h"
#include "scanserve/cpu_backend.h"
#ifdef SCANSERVE_HAVE_CUDA
#include "scanserve/cuda_backend.h"
#endif

namespace scanserve {

bool CudaBackendCompiled() {
#ifdef SCANSERVE_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const BackendConfig& config) {
  if (config.kind == "cpu") return MakeCpuBackend(config.cpu_threads);
  if (config.kind != "cuda" && config.kind != "auto") {
    return absl::InvalidArgumentError("backend: must be one of auto, cpu, cuda; got '" +
                                      config.kind + "'");
  }
#ifdef SCANSERVE_HAVE_CUDA
  if (CudaDeviceCount() > 0) return MakeCudaBackend(config);
#endif
  if (config.kind == "cuda") {
    return absl::FailedPreconditionError(CudaBackendCompiled()
                                             ? "backend=cuda: no usable CUDA device"
                                             : "backend=cuda: this build has no CUDA backend");
  }
  return MakeCpuBackend(config.cpu_threads);
}

}  // namespace scanserve
