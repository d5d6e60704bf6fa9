// The CUDA backend's StreamContext: one CUDA stream with a pinned host pool and a device pool,
// allocated once when the backend starts and bump-allocated per batch.
//
// Ownership: owns its stream and both pools and releases them on destruction. Thread-safety: none;
// the backend leases a context to one batch at a time and calls Reset() between batches.
#ifndef SCANSERVE_KERNELS_CUDA_STREAM_POOL_H_
#define SCANSERVE_KERNELS_CUDA_STREAM_POOL_H_

#include <cuda_runtime.h>

#include <cstddef>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cuda/stream_context.h"

namespace scanserve::cuda {

class PoolStreamContext final : public StreamContext {
 public:
  // Creates the stream and both pools on `device`. RESOURCE_EXHAUSTED when the memory cannot be
  // had, INTERNAL for other CUDA failures.
  static absl::StatusOr<std::unique_ptr<PoolStreamContext>> Create(int device, int index,
                                                                   size_t host_bytes,
                                                                   size_t device_bytes);
  ~PoolStreamContext() override;
  PoolStreamContext(const PoolStreamContext&) = delete;
  PoolStreamContext& operator=(const PoolStreamContext&) = delete;

  int device() const override { return device_; }
  cudaStream_t stream() const override { return stream_; }
  absl::StatusOr<std::byte*> AllocHost(size_t bytes) override;
  absl::StatusOr<std::byte*> AllocDevice(size_t bytes) override;
  size_t host_capacity() const override { return host_capacity_; }
  size_t device_capacity() const override { return device_capacity_; }

  // Returns both pools to empty; the previous batch's pointers become invalid.
  void Reset() {
    host_used_ = 0;
    device_used_ = 0;
  }

 private:
  PoolStreamContext(int device, int index) : device_(device), index_(index) {}

  const int device_;
  const int index_;  // stream number on its device, for messages
  cudaStream_t stream_ = nullptr;
  std::byte* host_ = nullptr;
  std::byte* device_memory_ = nullptr;
  size_t host_capacity_ = 0;
  size_t device_capacity_ = 0;
  size_t host_used_ = 0;
  size_t device_used_ = 0;
};

// Whether `err` leaves the CUDA context unusable, so that every later call fails too.
bool IsStickyError(cudaError_t err);

}  // namespace scanserve::cuda

#endif  // SCANSERVE_KERNELS_CUDA_STREAM_POOL_H_
