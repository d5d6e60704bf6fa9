// Host API of the CUDA selective scan kernel (ops.md section 3) over a ragged batch whose tensors
// already sit in device memory. Plain C++: no CUDA, Abseil or gRPC types, so benchmarks and the
// backend's staging code both drive the kernel through it.
//
// Layers: LaunchSelectiveScan (this header) -> geometry dispatch and kernel variants
// (selective_scan_kernel.cu) -> tuning constants (selective_scan_tuning.h). The kernel never
// allocates: the caller supplies SelectiveScanWorkspaceBytes() of pinned host memory and of device
// memory for the per-request descriptors.
//
// Batch invariance: the only choice that changes arithmetic (how many states one thread carries,
// which fixes the order of the sum over states) is made from the request's own N and size. Rows
// per block and tile length only change which block computes a row, never the operations applied
// to it, so a request's outputs are bit-identical alone or in any batch.
//
// Thread-safety: the functions are reentrant; concurrent launches need distinct workspaces.
#ifndef SCANSERVE_KERNELS_CUDA_SELECTIVE_SCAN_KERNEL_H_
#define SCANSERVE_KERNELS_CUDA_SELECTIVE_SCAN_KERNEL_H_

#include <cstddef>
#include <span>
#include <string>

#include "scanserve/ops.h"

struct CUstream_st;  // cudaStream_t without including the CUDA headers

namespace scanserve::cuda {

// One request of the batch: like SelectiveScanProblem, but every pointer is device memory.
struct SelectiveScanRows {
  SeqShape shape;
  const void* u = nullptr;
  const void* delta = nullptr;
  const float* A = nullptr;
  const void* B = nullptr;
  const void* C = nullptr;
  const float* d_skip = nullptr;
  const void* z = nullptr;
  const float* delta_bias = nullptr;
  const float* h0 = nullptr;
  void* y = nullptr;
  float* last_state = nullptr;
};

// How a launch is laid out. states_per_thread decides the arithmetic (the order of the sum over
// states); rows_per_block is scheduling only.
struct SelectiveScanGeometry {
  int states_per_thread = 4;  // 2, 4 or 8
  int rows_per_block = 32;    // multiple of four, 8 .. 128, with rows * ceil(N / states) <= 256
};

// The states per thread the dispatch gives a request: from N and the request's own size only.
int SelectiveScanStatesPerThread(const SelectiveScanOptions& options, const SeqShape& shape);

// The rows per block the dispatch gives a group of requests that share states_per_thread: from N
// and the number of blocks the group makes on the current device.
int SelectiveScanRowsPerBlock(const SelectiveScanOptions& options, int states_per_thread,
                              std::span<const SelectiveScanRows> group);

// Bytes of host (pinned) and of device workspace a launch over `num_problems` requests needs.
size_t SelectiveScanWorkspaceBytes(size_t num_problems);

// Upper bound on a batch's request count per launch (descriptor indices are 32-bit).
inline constexpr size_t kSelectiveScanMaxProblems = size_t{1} << 20;

struct SelectiveScanLaunchResult {
  int cuda_error = 0;  // a cudaError_t; 0 is success
  std::string what;    // which step failed, when cuda_error != 0
};

// Writes the descriptors into host_workspace, copies them to device_workspace on `stream` and
// launches the kernel there (one launch per states-per-thread group); returns without
// synchronizing. Both workspaces must stay untouched until the stream passes these launches.
// Problems with zero rows or zero length are skipped. The caller has validated the batch (see
// RunSelectiveScan).
//
// With upload_descriptors false the copy is left out: device_workspace must already hold the
// descriptors of an earlier call with the same problems (repeated launches in benchmarks).
// `force`, when given, replaces the dispatch's geometry for every problem (benchmarks compare
// geometries with it; outputs then differ in rounding from the dispatch's when states differ).
SelectiveScanLaunchResult LaunchSelectiveScan(const SelectiveScanOptions& options,
                                              std::span<const SelectiveScanRows> problems,
                                              void* host_workspace, void* device_workspace,
                                              CUstream_st* stream, bool upload_descriptors = true,
                                              const SelectiveScanGeometry* force = nullptr);

}  // namespace scanserve::cuda

#endif  // SCANSERVE_KERNELS_CUDA_SELECTIVE_SCAN_KERNEL_H_
