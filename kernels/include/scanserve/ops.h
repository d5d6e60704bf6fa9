// Host-side description of the four scan operations of ops.md as ragged batches.
//
// An *Options struct is the batch signature: everything a kernel specializes on. Requests whose
// options compare equal may run in one backend call. A *Problem is one request: its shape and
// pointers to its tensors. Problems never own memory: the caller keeps every pointed-to buffer
// alive and unaliased until the backend call returns. Pointers need only the alignment of their
// element type. Optional tensors are null exactly when the options say they are absent.
//
// Sequence tensors have the request's SeqShape and the batch's layout (see types.h). Parameter and
// state tensors are float32 and dense in the order written next to them.
#ifndef SCANSERVE_OPS_H_
#define SCANSERVE_OPS_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "scanserve/types.h"

namespace scanserve {

enum class OpKind : uint8_t { kLinearScan, kLinearScanBackward, kSelectiveScan, kAssociativeScan };

constexpr std::string_view OpName(OpKind op) {
  switch (op) {
    case OpKind::kLinearScan:
      return "linear_scan";
    case OpKind::kLinearScanBackward:
      return "linear_scan_backward";
    case OpKind::kSelectiveScan:
      return "selective_scan";
    case OpKind::kAssociativeScan:
      return "associative_scan";
  }
  return "unknown";
}

// ---- linear_scan (ops.md section 1) ----

struct LinearScanOptions {
  DType dtype = DType::kFloat32;  // a, x, b, c and y
  Layout layout = Layout::kBDL;
  bool has_b = false;
  bool has_c = false;
  bool has_h0 = false;
  bool reverse = false;
  bool return_final_state = false;
  friend bool operator==(const LinearScanOptions&, const LinearScanOptions&) = default;
};

struct LinearScanProblem {
  SeqShape shape;
  const void* a = nullptr;
  const void* x = nullptr;
  const void* b = nullptr;
  const void* c = nullptr;
  const float* h0 = nullptr;     // (batch, dim)
  void* y = nullptr;             // output, like x
  float* final_state = nullptr;  // output (batch, dim), when return_final_state
};

// ---- linear_scan_backward (ops.md section 2) ----

struct LinearScanBackwardOptions {
  DType dtype = DType::kFloat32;  // a, x, dy, b, c, da, dx, db, dc
  Layout layout = Layout::kBDL;
  bool has_b = false;
  bool has_c = false;
  bool has_h0 = false;
  bool has_states = false;  // forward states h given; otherwise recomputed
  bool reverse = false;
  friend bool operator==(const LinearScanBackwardOptions&,
                         const LinearScanBackwardOptions&) = default;
};

struct LinearScanBackwardProblem {
  SeqShape shape;
  const void* a = nullptr;
  const void* x = nullptr;
  const void* dy = nullptr;
  const void* b = nullptr;
  const void* c = nullptr;
  const float* h0 = nullptr;      // (batch, dim)
  const float* states = nullptr;  // forward h before the output gate: float32, like x
  void* da = nullptr;             // outputs, like x
  void* dx = nullptr;
  void* db = nullptr;    // when has_b
  void* dc = nullptr;    // when has_c
  float* dh0 = nullptr;  // (batch, dim), when has_h0
};

// ---- selective_scan (ops.md section 3) ----

struct SelectiveScanOptions {
  DType dtype = DType::kFloat32;  // u, delta, z, y and variable B/C
  Layout layout = Layout::kBDL;
  int32_t state_dim = 1;  // N, 1..256
  int32_t groups = 1;     // G for variable B/C; dim % groups == 0
  bool variable_b =
      true;  // B is (batch, groups, N, length) [BDL] or (batch, length, groups, N) [BLD]
  bool variable_c = true;  //   in dtype; otherwise fixed (dim, N) float32
  bool has_d_skip = false;
  bool has_z = false;
  bool has_delta_bias = false;
  bool delta_softplus = false;
  bool has_h0 = false;
  bool return_last_state = false;
  friend bool operator==(const SelectiveScanOptions&, const SelectiveScanOptions&) = default;
};

struct SelectiveScanProblem {
  SeqShape shape;
  const void* u = nullptr;
  const void* delta = nullptr;
  const float* A = nullptr;  // (dim, N)
  const void* B = nullptr;   // see SelectiveScanOptions::variable_b
  const void* C = nullptr;
  const float* d_skip = nullptr;      // (dim)
  const void* z = nullptr;            // like u
  const float* delta_bias = nullptr;  // (dim)
  const float* h0 = nullptr;          // (batch, dim, N)
  void* y = nullptr;                  // output, like u
  float* last_state = nullptr;        // output (batch, dim, N), when return_last_state
};

// ---- associative_scan (ops.md section 4) ----

enum class ScanOperator : uint8_t { kAdd, kMul, kMax, kMin, kLogAddExp };

constexpr std::string_view ScanOperatorName(ScanOperator op) {
  switch (op) {
    case ScanOperator::kAdd:
      return "add";
    case ScanOperator::kMul:
      return "mul";
    case ScanOperator::kMax:
      return "max";
    case ScanOperator::kMin:
      return "min";
    case ScanOperator::kLogAddExp:
      return "logaddexp";
  }
  return "unknown";
}

// Whether ops.md's table allows `op` on `dtype`.
constexpr bool OperatorSupports(ScanOperator op, DType dtype) {
  if (op == ScanOperator::kMul || op == ScanOperator::kLogAddExp) return IsFloatingPoint(dtype);
  return true;
}

struct AssociativeScanOptions {
  DType dtype = DType::kFloat32;
  Layout layout = Layout::kBDL;
  ScanOperator op = ScanOperator::kAdd;
  bool reverse = false;
  bool exclusive = false;
  friend bool operator==(const AssociativeScanOptions&, const AssociativeScanOptions&) = default;
};

struct AssociativeScanProblem {
  SeqShape shape;
  const void* x = nullptr;
  void* y = nullptr;  // output, like x
};

// ---- ragged batches: one signature, any number of requests of any shapes ----

template <typename Options, typename Problem>
struct Batch {
  Options options;
  std::span<const Problem> problems;
};

using LinearScanBatch = Batch<LinearScanOptions, LinearScanProblem>;
using LinearScanBackwardBatch = Batch<LinearScanBackwardOptions, LinearScanBackwardProblem>;
using SelectiveScanBatch = Batch<SelectiveScanOptions, SelectiveScanProblem>;
using AssociativeScanBatch = Batch<AssociativeScanOptions, AssociativeScanProblem>;

// A stable text form of each signature, used as the batcher's queue key and in logs.
std::string SignatureKey(const LinearScanOptions& options);
std::string SignatureKey(const LinearScanBackwardOptions& options);
std::string SignatureKey(const SelectiveScanOptions& options);
std::string SignatureKey(const AssociativeScanOptions& options);

}  // namespace scanserve

#endif  // SCANSERVE_OPS_H_
