// The CUDA backend's selective_scan (ops.md section 3) for one ragged batch of host tensors.
//
// RunSelectiveScan stages the batch through the stream context's pools (pinned host, then device),
// launches the kernel of selective_scan_kernel.h on the context's stream, copies the outputs back,
// synchronizes that stream and writes each problem's y and last state through its host pointers.
// A batch larger than the pools runs in pieces of whole problems, one after another; a single
// problem larger than the pools is RESOURCE_EXHAUSTED.
//
// Thread-safety: as safe as the context it is given (a context serves one batch at a time).
// Ownership: borrows the problems' buffers for the duration of the call only.
#ifndef SCANSERVE_KERNELS_CUDA_SELECTIVE_SCAN_H_
#define SCANSERVE_KERNELS_CUDA_SELECTIVE_SCAN_H_

#include "absl/status/status.h"
#include "cuda/stream_context.h"
#include "scanserve/ops.h"

namespace scanserve::cuda {

// INVALID_ARGUMENT when the batch breaks ops.h's rules (N outside 1..256, dim not divisible by
// groups, a non-float dtype, a tensor missing that the options require); RESOURCE_EXHAUSTED when a
// single problem cannot fit the pools; INTERNAL for CUDA failures.
absl::Status RunSelectiveScan(const SelectiveScanBatch& batch, StreamContext& ctx);

}  // namespace scanserve::cuda

#endif  // SCANSERVE_KERNELS_CUDA_SELECTIVE_SCAN_H_
