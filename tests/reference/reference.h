// Float64 references of the four operations of ops.md, written from the formulas there as plain
// loops. They read a problem's inputs through its pointers (ops.h), converting each element from
// the batch's dtype to double, so a test fills its tensors once and hands the same Problem to the
// backend under test and to the reference.
//
// Every returned vector is in the memory order of the output tensor it checks: sequence outputs in
// the batch's layout, states (B, D) or (B, D, N) dense. The output pointers of the problem are
// never read or written. Pure functions; thread-safe.
#ifndef SCANSERVE_TESTS_REFERENCE_REFERENCE_H_
#define SCANSERVE_TESTS_REFERENCE_REFERENCE_H_

#include <cstdint>
#include <vector>

#include "scanserve/ops.h"

namespace scanserve::testing {

// Element i of a tensor of `dtype` at `data`, as double.
double LoadAsDouble(const void* data, DType dtype, int64_t i);

struct RefLinearScan {
  std::vector<double> y;            // like x
  std::vector<double> final_state;  // (B, D); empty unless return_final_state
};
RefLinearScan ReferenceLinearScan(const LinearScanOptions& options,
                                  const LinearScanProblem& problem);

// When the options say has_states the given forward states are used for h (as the op does);
// otherwise h is recomputed in float64.
struct RefLinearScanBackward {
  std::vector<double> da, dx;  // like x
  std::vector<double> db, dc;  // like x; empty unless has_b / has_c
  std::vector<double> dh0;     // (B, D); empty unless has_h0
};
RefLinearScanBackward ReferenceLinearScanBackward(const LinearScanBackwardOptions& options,
                                                  const LinearScanBackwardProblem& problem);

struct RefSelectiveScan {
  std::vector<double> y;           // like u
  std::vector<double> last_state;  // (B, D, N); empty unless return_last_state
};
RefSelectiveScan ReferenceSelectiveScan(const SelectiveScanOptions& options,
                                        const SelectiveScanProblem& problem);

// Floating-point dtypes (integers are converted to double too, but use the exact version for them).
std::vector<double> ReferenceAssociativeScan(const AssociativeScanOptions& options,
                                             const AssociativeScanProblem& problem);
// Exact for int32 and int64: add wraps as two's complement in the dtype's width.
std::vector<int64_t> ReferenceAssociativeScanInt(const AssociativeScanOptions& options,
                                                 const AssociativeScanProblem& problem);

// The forward states h (before the output gate) of a linear scan in float64, like x: what a
// training framework would keep for linear_scan_backward's `states`.
std::vector<double> ReferenceLinearScanStates(const LinearScanOptions& options,
                                              const LinearScanProblem& problem);

}  // namespace scanserve::testing

#endif  // SCANSERVE_TESTS_REFERENCE_REFERENCE_H_
