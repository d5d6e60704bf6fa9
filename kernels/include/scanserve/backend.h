// The interface between the server's executor and a compute backend (CPU or CUDA).
//
// Thread-safety: every method may be called concurrently from several executor threads; up to
// MaxConcurrentBatches() Run calls are expected in flight at once, and a backend serializes
// internally whatever cannot overlap. Run blocks until the outputs of every problem in the batch
// are written to host memory (or an error is returned, after which outputs are unspecified).
// Results of a problem must not depend on the other problems in its batch: equal inputs give
// bit-identical outputs alone or in any batch.
#ifndef SCANSERVE_BACKEND_H_
#define SCANSERVE_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "scanserve/ops.h"

namespace scanserve {

struct DeviceStatus {
  int32_t index = 0;
  std::string name;
  int64_t memory_total_bytes = 0;
  int64_t memory_used_bytes = 0;
  int64_t batches_executed = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  // "cpu" or "cuda".
  virtual std::string_view Name() const = 0;
  // The devices this backend computes on (one entry for the host's CPUs on the CPU backend).
  virtual std::vector<DeviceStatus> Devices() const = 0;
  // How many Run calls the executor should keep in flight to keep the hardware busy.
  virtual int MaxConcurrentBatches() const = 0;
  // Set once a failure makes every later batch fail too (a sticky device error): the server then
  // reports NOT_SERVING so an orchestrator restarts it.
  virtual bool Broken() const { return false; }

  // Errors: INVALID_ARGUMENT for a batch the caller should not have formed, RESOURCE_EXHAUSTED when
  // memory for the batch cannot be had, INTERNAL for device failures (message names the cause).
  virtual absl::Status Run(const LinearScanBatch& batch) = 0;
  virtual absl::Status Run(const LinearScanBackwardBatch& batch) = 0;
  virtual absl::Status Run(const SelectiveScanBatch& batch) = 0;
  virtual absl::Status Run(const AssociativeScanBatch& batch) = 0;
};

struct BackendConfig {
  std::string kind = "auto";  // "auto", "cpu" or "cuda"; auto picks cuda when a GPU is usable
  int cpu_threads = 0;        // CPU backend pool size; 0 = hardware concurrency
  int cuda_streams_per_device = 4;
  int64_t cuda_pool_bytes_per_stream = int64_t{256} << 20;  // staging and device buffers
};

// Creates the backend the config asks for. "cuda" fails with FAILED_PRECONDITION when this build
// has no CUDA backend or no GPU is usable; "auto" falls back to the CPU backend then.
absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const BackendConfig& config);

// Whether this binary was built with the CUDA backend.
bool CudaBackendCompiled();

}  // namespace scanserve

#endif  // SCANSERVE_BACKEND_H_
