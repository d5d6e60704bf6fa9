// Host API of the CUDA row-scan kernels: linear_scan, linear_scan_backward and associative_scan
// (ops.md sections 1, 2 and 4) over ragged batches of rows that already live in device memory.
//
// Plain C++ (no CUDA, absl or gRPC types), so host code of any kind can describe a launch. A batch
// is a list of row groups: the rows of one request, all of one length, laid out by a RowGeometry.
// A launch is three steps, none of which allocates:
//   1. *Sizes: bytes of the descriptor block (host-written, then copied to the device by the
//      caller) and of device temp storage the launch needs.
//   2. *Describe: writes the descriptor block into host memory (pinned staging, typically); it
//      may point into the temp storage, whose device address it is given.
//   3. *Launch: enqueues the kernels on a stream, given the device copy of the descriptor block
//      (16-byte aligned) and the temp storage (256-byte aligned). Returns a cudaError_t value.
// The same rows and options must be passed to all three steps. Sizes depend only on the options
// and geometries (not on where tensors lie), and the sizes of a batch never exceed the sums of the
// sizes of its groups taken one at a time, so a caller can cut batches by summing. Every tensor
// pointer is a device pointer with the alignment of its element type; inputs must not alias
// outputs.
//
// Results depend only on each group's own shape and data: the kernel variant, tile size and the
// order of every floating-point operation are chosen per group from its row length and row count,
// never from the rest of the batch, so a group (one request's tensor) gives the same bits alone or
// in any batch.
//
// Thread-safety: all functions are reentrant; a launch's buffers belong to it until the stream
// passes it.
#ifndef SCANSERVE_KERNELS_CUDA_SCAN_KERNELS_H_
#define SCANSERVE_KERNELS_CUDA_SCAN_KERNELS_H_

#include <cstddef>
#include <cstdint>
#include <span>

#include "scanserve/ops.h"
#include "scanserve/types.h"

namespace scanserve::cuda {

// Where the rows of one group lie in each of its sequence tensors: row r = (b, d) with
// b = r / dim and d = r % dim starts at element b * batch_stride + d * row_stride, and its step t
// is step_stride elements further.
struct RowGeometry {
  int64_t rows = 0;
  int64_t dim = 1;
  int64_t length = 0;
  int64_t batch_stride = 0;
  int64_t row_stride = 0;
  int64_t step_stride = 1;
  // Each row is followed by row_stride - length elements of padding (BDL rows only) that reach a
  // 16-byte boundary and that the kernels may overwrite (including after the last row), so a row's
  // last segment moves as whole 16-byte units too.
  bool padded = false;
};

// The geometry of a dense (batch, dim, length) request in `layout`.
constexpr RowGeometry RowGeometryOf(const SeqShape& shape, Layout layout) {
  RowGeometry g;
  g.rows = shape.rows();
  g.dim = shape.dim;
  g.length = shape.length;
  g.batch_stride = shape.dim * shape.length;
  g.row_stride = layout == Layout::kBDL ? shape.length : 1;
  g.step_stride = layout == Layout::kBDL ? 1 : shape.dim;
  return g;
}

// How the CUDA backend lays out a dense request's sequence tensors when it stages them. A BDL row
// whose bytes are not a multiple of 16 leaves the rows after it off the 16-byte boundaries that the
// kernels' vector loads and stores need, and unaligned rows take the scalar path (on an H200, rows
// of 65535 steps ran at 0.86x (float32) and 0.69x (bfloat16) the efficiency of 65536). Staged rows
// get a pitch of whole 16-byte units instead (128-byte lines for long rows, see
// kRowScanLinePitchBytes), so every segment of a row starts aligned but, where the scan runs right
// to left, its last in scan order (at the row's start), and there the padding goes before the row.
// Left to right, the padding follows the row and the kernels may write into it
// (RowGeometry::padded), so that linear_scan's walking and single-tile kernels move the row's last
// segment as units too (the others take their scalar path there). Staying packed: rows of one
// warp-wide segment (kRowScanSegment steps) scanned right to left, which have no aligned segment to
// gain; rows shorter than kRowScanPadMin steps, where padding would add more than a few percent to
// the bytes copied; BLD tensors, whose rows are strided; and 8-byte types, which the kernels move
// as scalars. The kernels give the same bits at any alignment, so the layout changes speed, never
// results; float32 tensors of a 16-bit request (states) share the pitch, which keeps them aligned.
struct StagedLayout {
  int64_t pitch = 0;  // elements from one row's first element to the next row's
  int64_t lead = 0;   // padding elements before each row's first element
};

inline constexpr int64_t kRowScanSegment = 512;
inline constexpr int64_t kRowScanPadMin = 64;
// Rows of at least this many bytes get a pitch of whole 128-byte lines instead of 16-byte units.
// On an H100, bfloat16 (8, 1536, 65537) took 1.825 ms at a 16-byte pitch and 1.646 at 128 bytes,
// and rows of 65536 steps moved 16 bytes apart took 1.822 against 1.635 packed: each warp's
// 512-byte run of a tile then spans five lines instead of four. Shorter rows keep the 16-byte
// pitch: at 64 or 128 bytes, float32 rows of 8193 steps (32 KiB) took 0.431 -> 0.442-0.445 ms on an
// H100 and rows of 513 steps 0.0351 -> 0.039. The padding of a row this long is at most 0.2% of its
// bytes.
inline constexpr int64_t kRowScanLinePitchBytes = 65536;

constexpr StagedLayout StagedLayoutOf(const SeqShape& shape, Layout layout, size_t dtype_bytes,
                                      bool right_to_left) {
  StagedLayout s{shape.length, 0};
  const int64_t shortest = right_to_left ? kRowScanSegment + 1 : kRowScanPadMin;
  if (layout != Layout::kBDL || dtype_bytes > 4 || shape.length < shortest) return s;
  const auto es = static_cast<int64_t>(dtype_bytes);
  const int64_t unit = (shape.length * es >= kRowScanLinePitchBytes ? 128 : 16) / es;
  if (shape.length % unit == 0) return s;
  s.pitch = (shape.length + unit - 1) / unit * unit;
  if (right_to_left) s.lead = s.pitch - shape.length;
  return s;
}

// RowGeometryOf for rows staged in `staged` (offset the tensors' pointers by its lead).
constexpr RowGeometry StagedGeometryOf(const SeqShape& shape, Layout layout,
                                       const StagedLayout& staged) {
  RowGeometry g = RowGeometryOf(shape, layout);
  if (layout == Layout::kBDL) {
    g.row_stride = staged.pitch;
    g.batch_stride = shape.dim * staged.pitch;
    g.padded = staged.pitch > shape.length && staged.lead == 0;
  }
  return g;
}

// One group of linear_scan rows. Sequence tensors use `geometry` and the batch's dtype; h0 and
// final_state are float32, one value per row.
struct LinearScanRows {
  RowGeometry geometry;
  const void* a = nullptr;
  const void* x = nullptr;
  const void* b = nullptr;  // when options.has_b
  const void* c = nullptr;  // when options.has_c
  const float* h0 = nullptr;
  void* y = nullptr;
  float* final_state = nullptr;  // when options.return_final_state
};

// One group of linear_scan_backward rows; `states` (float32, laid out by `geometry`) when
// options.has_states, otherwise the launch recomputes them into its temp storage.
struct LinearScanBackwardRows {
  RowGeometry geometry;
  const void* a = nullptr;
  const void* x = nullptr;
  const void* dy = nullptr;
  const void* b = nullptr;
  const void* c = nullptr;
  const float* h0 = nullptr;
  const float* states = nullptr;
  void* da = nullptr;
  void* dx = nullptr;
  void* db = nullptr;
  void* dc = nullptr;
  float* dh0 = nullptr;
};

struct AssociativeScanRows {
  RowGeometry geometry;
  const void* x = nullptr;
  void* y = nullptr;
};

struct LaunchSizes {
  size_t descriptor_bytes = 0;
  size_t temp_bytes = 0;
};

LaunchSizes LinearScanSizes(const LinearScanOptions& options, std::span<const LinearScanRows> rows);
void LinearScanDescribe(const LinearScanOptions& options, std::span<const LinearScanRows> rows,
                        void* temp, void* host_descriptors);
int LinearScanLaunch(const LinearScanOptions& options, std::span<const LinearScanRows> rows,
                     const void* device_descriptors, void* temp, void* stream);

LaunchSizes LinearScanBackwardSizes(const LinearScanBackwardOptions& options,
                                    std::span<const LinearScanBackwardRows> rows);
void LinearScanBackwardDescribe(const LinearScanBackwardOptions& options,
                                std::span<const LinearScanBackwardRows> rows, void* temp,
                                void* host_descriptors);
int LinearScanBackwardLaunch(const LinearScanBackwardOptions& options,
                             std::span<const LinearScanBackwardRows> rows,
                             const void* device_descriptors, void* temp, void* stream);

// Fails with cudaErrorInvalidValue (before enqueuing anything) for an operator ops.md does not
// define on the dtype.
LaunchSizes AssociativeScanSizes(const AssociativeScanOptions& options,
                                 std::span<const AssociativeScanRows> rows);
void AssociativeScanDescribe(const AssociativeScanOptions& options,
                             std::span<const AssociativeScanRows> rows, void* temp,
                             void* host_descriptors);
int AssociativeScanLaunch(const AssociativeScanOptions& options,
                          std::span<const AssociativeScanRows> rows, const void* device_descriptors,
                          void* temp, void* stream);

}  // namespace scanserve::cuda

#endif  // SCANSERVE_KERNELS_CUDA_SCAN_KERNELS_H_
