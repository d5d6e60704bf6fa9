// Per-stream resources the CUDA backend hands to each operation's host-side path for one batch.
//
// Ownership: the backend owns one context per (device, stream) with a pinned host pool and a
// device pool, allocated at start-up and reused; nothing here calls cudaMalloc, cudaHostAlloc or
// cudaFree per batch. Thread-safety: none; the backend gives a context to one batch at a time.
#ifndef SCANSERVE_CUDA_STREAM_CONTEXT_H_
#define SCANSERVE_CUDA_STREAM_CONTEXT_H_

#include <cuda_runtime.h>

#include <cstddef>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace scanserve::cuda {

class StreamContext {
 public:
  virtual ~StreamContext() = default;
  virtual int device() const = 0;
  virtual cudaStream_t stream() const = 0;
  // Bump allocations from the pools, 256-byte aligned, valid until the batch ends.
  // RESOURCE_EXHAUSTED (naming the pool and the sizes) when the pool cannot hold them.
  virtual absl::StatusOr<std::byte*> AllocHost(size_t bytes) = 0;
  virtual absl::StatusOr<std::byte*> AllocDevice(size_t bytes) = 0;
  // Bytes the pools can hand out in one batch.
  virtual size_t host_capacity() const = 0;
  virtual size_t device_capacity() const = 0;
};

// INTERNAL with the CUDA error's name and text, prefixed by `what`, unless err is cudaSuccess.
absl::Status CudaStatus(cudaError_t err, const char* what);

}  // namespace scanserve::cuda

#endif  // SCANSERVE_CUDA_STREAM_CONTEXT_H_
