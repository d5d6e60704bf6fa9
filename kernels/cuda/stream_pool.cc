#include "cuda/stream_pool.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace scanserve::cuda {

absl::Status CudaStatus(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(what, ": ", cudaGetErrorName(err), ": ", cudaGetErrorString(err)));
}

bool IsStickyError(cudaError_t err) {
  switch (err) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorLaunchTimeout:
    case cudaErrorECCUncorrectable:
    case cudaErrorNvlinkUncorrectable:
    case cudaErrorAssert:
    case cudaErrorContextIsDestroyed:
    case cudaErrorDevicesUnavailable:
    case cudaErrorUnknown:
      return true;
    default:
      return false;
  }
}

absl::StatusOr<std::unique_ptr<PoolStreamContext>> PoolStreamContext::Create(int device, int index,
                                                                             size_t host_bytes,
                                                                             size_t device_bytes) {
  std::unique_ptr<PoolStreamContext> ctx(new PoolStreamContext(device, index));
  const std::string where = absl::StrCat("device ", device, " stream ", index);
  absl::Status s = CudaStatus(cudaSetDevice(device), "cudaSetDevice");
  if (!s.ok()) return s;
  s = CudaStatus(cudaStreamCreateWithFlags(&ctx->stream_, cudaStreamNonBlocking),
                 "cudaStreamCreateWithFlags");
  if (!s.ok()) return s;
  void* host = nullptr;
  cudaError_t err = cudaHostAlloc(&host, host_bytes, cudaHostAllocDefault);
  if (err == cudaErrorMemoryAllocation) {
    return absl::ResourceExhaustedError(
        absl::StrCat(where, ": cannot pin ", host_bytes, " bytes of host staging memory"));
  }
  if (err != cudaSuccess) return CudaStatus(err, "cudaHostAlloc");
  ctx->host_ = static_cast<std::byte*>(host);
  ctx->host_capacity_ = host_bytes;
  void* dev = nullptr;
  err = cudaMalloc(&dev, device_bytes);
  if (err == cudaErrorMemoryAllocation) {
    return absl::ResourceExhaustedError(
        absl::StrCat(where, ": cannot allocate ", device_bytes, " bytes of device memory"));
  }
  if (err != cudaSuccess) return CudaStatus(err, "cudaMalloc");
  ctx->device_memory_ = static_cast<std::byte*>(dev);
  ctx->device_capacity_ = device_bytes;
  return ctx;
}

PoolStreamContext::~PoolStreamContext() {
  // Errors here have no one to report to; the process is shutting the backend down.
  cudaSetDevice(device_);
  if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  if (device_memory_ != nullptr) cudaFree(device_memory_);
  if (host_ != nullptr) cudaFreeHost(host_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

namespace {

constexpr size_t kAlign = 256;

size_t AlignUp(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

}  // namespace

absl::StatusOr<std::byte*> PoolStreamContext::AllocHost(size_t bytes) {
  const size_t need = AlignUp(bytes);
  if (need > host_capacity_ - host_used_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("pinned host pool of device ", device_, " stream ", index_, ": need ", bytes,
                     " bytes, ", host_capacity_ - host_used_, " of ", host_capacity_, " free"));
  }
  std::byte* p = host_ + host_used_;
  host_used_ += need;
  return p;
}

absl::StatusOr<std::byte*> PoolStreamContext::AllocDevice(size_t bytes) {
  const size_t need = AlignUp(bytes);
  if (need > device_capacity_ - device_used_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "device pool of device ", device_, " stream ", index_, ": need ", bytes, " bytes, ",
        device_capacity_ - device_used_, " of ", device_capacity_, " free"));
  }
  std::byte* p = device_memory_ + device_used_;
  device_used_ += need;
  return p;
}

}  // namespace scanserve::cuda
