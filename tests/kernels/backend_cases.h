// Test cases every backend must pass, written against the Backend interface only. A backend's test
// file instantiates them all with one line:
//
//   SCANSERVE_BACKEND_CASES(CpuBackendCases, MakeMyBackend());
//
// where the expression yields absl::StatusOr<std::unique_ptr<Backend>>; a non-OK status skips the
// cases with the status as the printed reason (e.g. "no usable CUDA device").
//
// Each case draws random inputs (never all zero) from an Rng whose seed is printed with every
// failure, poisons the outputs before each run, and compares against the float64 references at
// ops.md's accuracy targets. The *Data structs own one request's tensors and are reusable by
// backend-specific tests. Not thread-safe; a Backend passed in must be (backend.h).
#ifndef SCANSERVE_TESTS_KERNELS_BACKEND_CASES_H_
#define SCANSERVE_TESTS_KERNELS_BACKEND_CASES_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "scanserve/backend.h"
#include "scanserve/ops.h"
#include "support/test_support.h"

namespace scanserve::testing {

// ---- one request's tensors ----

struct LinearScanData {
  LinearScanOptions options;
  SeqShape shape;
  HostTensor a, x, b, c, y;    // dtype, like x; b and c empty when absent
  HostTensor h0, final_state;  // float32 (batch, dim); empty when absent
  LinearScanProblem Problem();
  std::vector<HostTensor*> Outputs();
};
// Gates a in [0.5, 1), other tensors in [-1, 1).
LinearScanData MakeLinearScanData(const LinearScanOptions& options, SeqShape shape, Rng& rng);

struct LinearScanBackwardData {
  LinearScanBackwardOptions options;
  SeqShape shape;
  HostTensor a, x, dy, b, c;       // dtype
  HostTensor h0, states;           // float32; states like x (the float64 forward, rounded)
  HostTensor da, dx, db, dc, dh0;  // outputs
  LinearScanBackwardProblem Problem();
  std::vector<HostTensor*> Outputs();
};
LinearScanBackwardData MakeLinearScanBackwardData(const LinearScanBackwardOptions& options,
                                                  SeqShape shape, Rng& rng);

struct SelectiveScanData {
  SelectiveScanOptions options;
  SeqShape shape;
  HostTensor u, delta, z, y;         // dtype, like u
  HostTensor B, C;                   // variable: dtype; fixed: float32 (dim, N)
  HostTensor A, d_skip, delta_bias;  // float32
  HostTensor h0, last_state;         // float32 (batch, dim, N)
  SelectiveScanProblem Problem();
  std::vector<HostTensor*> Outputs();
};
// u, B, C, D_skip, h0 in [-1, 1); z in [-2, 2); A in [-1.5, -0.05); delta in [0, 0.5) without
// softplus and [-4, 2) with it (unless delta_lo < delta_hi are given); delta_bias in [0, 0.5)
// without softplus and [-0.5, 0.5) with it, so dt stays positive.
SelectiveScanData MakeSelectiveScanData(const SelectiveScanOptions& options, SeqShape shape,
                                        Rng& rng, double delta_lo = 0, double delta_hi = 0);

struct AssociativeScanData {
  AssociativeScanOptions options;
  SeqShape shape;
  HostTensor x, y;
  AssociativeScanProblem Problem();
  std::vector<HostTensor*> Outputs();
};
// Value ranges per operator keep long rows finite: add [-1, 1), mul magnitudes in [0.9, 1.1) with
// random signs, max/min [-100, 100), logaddexp [-5, 5); integers span the whole dtype for add
// (so sums wrap) and [-1000, 1000] otherwise.
AssociativeScanData MakeAssociativeScanData(const AssociativeScanOptions& options, SeqShape shape,
                                            Rng& rng);

// Runs the requests as one batch (outputs are not poisoned here).
absl::Status RunBatch(Backend& backend, std::vector<LinearScanData*> requests);
absl::Status RunBatch(Backend& backend, std::vector<LinearScanBackwardData*> requests);
absl::Status RunBatch(Backend& backend, std::vector<SelectiveScanData*> requests);
absl::Status RunBatch(Backend& backend, std::vector<AssociativeScanData*> requests);

// Expects the outputs to match the float64 reference at ops.md's targets (integers exactly).
void ExpectMatchesReference(LinearScanData& data);
void ExpectMatchesReference(LinearScanBackwardData& data);
void ExpectMatchesReference(SelectiveScanData& data);
void ExpectMatchesReference(AssociativeScanData& data);
// The same for the requests of one batch, each output judged over the whole batch as one vector
// (a request of a few elements whose terms cancel has too small a norm to be judged alone).
void ExpectMatchesReference(std::vector<LinearScanData>& batch);
void ExpectMatchesReference(std::vector<LinearScanBackwardData>& batch);
void ExpectMatchesReference(std::vector<SelectiveScanData>& batch);
void ExpectMatchesReference(std::vector<AssociativeScanData>& batch);

// A shape with batch in [1, max_batch], dim a multiple of dim_multiple in [dim_multiple,
// max_dim] and length in [1, max_length].
SeqShape RandomShape(Rng& rng, int64_t max_batch, int64_t max_dim, int64_t max_length,
                     int64_t dim_multiple = 1);

// Every combination of the options of each op (dtypes and layouts included).
std::vector<LinearScanOptions> AllLinearScanOptions();
std::vector<LinearScanBackwardOptions> AllLinearScanBackwardOptions();
std::vector<SelectiveScanOptions> AllSelectiveScanOptions();  // state_dim 3, groups 1
std::vector<AssociativeScanOptions> AllAssociativeScanOptions();

// ---- the cases ----

// Every option combination on a ragged batch of small shapes (odd lengths, L = 1 included).
void LinearScanMatchesReference(Backend& backend, Rng& rng);
// Rows longer than 65536 steps, both layouts.
void LinearScanLongRows(Backend& backend, Rng& rng);
// One row of 2^24 elements.
void LinearScanHugeRow(Backend& backend, Rng& rng);
// A long request cut in pieces, each piece's final state fed as the next piece's h0, gives the
// long request's outputs: equal bytes when bit_exact, else within ops.md's targets.
void LinearScanChained(Backend& backend, Rng& rng, bool bit_exact);

void LinearScanBackwardMatchesReference(Backend& backend, Rng& rng);
// float32 gradients against central differences of the float64 forward of
// loss = sum(dy * y); the loss is linear in each single input, so the differences are exact.
void LinearScanBackwardMatchesFiniteDifferences(Backend& backend, Rng& rng);
void LinearScanBackwardLongRow(Backend& backend, Rng& rng);

void SelectiveScanMatchesReference(Backend& backend, Rng& rng);
// N in {1, 4, 16, 64, 256}, groups > 1, odd lengths, both layouts.
void SelectiveScanStateSizes(Backend& backend, Rng& rng);
// delta + bias around 20 so both sides of softplus's threshold are taken.
void SelectiveScanSoftplusThreshold(Backend& backend, Rng& rng);
void SelectiveScanLongRow(Backend& backend, Rng& rng);
void SelectiveScanChained(Backend& backend, Rng& rng, bool bit_exact);

void AssociativeScanMatchesReference(Backend& backend, Rng& rng);
void AssociativeScanIntegerAddWraps(Backend& backend, Rng& rng);
void AssociativeScanNanPropagates(Backend& backend, Rng& rng);
void AssociativeScanExclusiveIdentities(Backend& backend, Rng& rng);
void AssociativeScanLongRows(Backend& backend, Rng& rng);

// Each request alone and inside a shuffled, ragged batch of other random requests gives identical
// bytes, for every op (several option sets each).
void BatchInvariance(Backend& backend, Rng& rng);
// Batches run from several threads at once give the same bytes as run one at a time.
void ConcurrentBatches(Backend& backend, Rng& rng);
// A batch whose options promise a tensor that a problem lacks is INVALID_ARGUMENT, not a crash.
void InconsistentBatchIsInvalidArgument(Backend& backend);

}  // namespace scanserve::testing

// Defines one gtest test per case above for the backend that `make_backend` (an expression of type
// absl::StatusOr<std::unique_ptr<scanserve::Backend>>) creates.
#define SCANSERVE_BACKEND_CASES(Suite, make_backend)                                       \
  class Suite : public ::testing::Test {                                                   \
   protected:                                                                              \
    void SetUp() override {                                                                \
      absl::StatusOr<std::unique_ptr<::scanserve::Backend>> made = (make_backend);         \
      if (!made.ok()) GTEST_SKIP() << "backend unavailable: " << made.status().ToString(); \
      backend_ = std::move(made).value();                                                  \
    }                                                                                      \
    ::scanserve::Backend& backend() { return *backend_; }                                  \
    ::scanserve::testing::Rng rng_;                                                        \
                                                                                           \
   private:                                                                                \
    std::unique_ptr<::scanserve::Backend> backend_;                                        \
  };                                                                                       \
  SCANSERVE_BACKEND_CASE_(Suite, LinearScanMatchesReference)                               \
  SCANSERVE_BACKEND_CASE_(Suite, LinearScanLongRows)                                       \
  SCANSERVE_BACKEND_CASE_(Suite, LinearScanHugeRow)                                        \
  SCANSERVE_BACKEND_CASE_(Suite, LinearScanBackwardMatchesReference)                       \
  SCANSERVE_BACKEND_CASE_(Suite, LinearScanBackwardMatchesFiniteDifferences)               \
  SCANSERVE_BACKEND_CASE_(Suite, LinearScanBackwardLongRow)                                \
  SCANSERVE_BACKEND_CASE_(Suite, SelectiveScanMatchesReference)                            \
  SCANSERVE_BACKEND_CASE_(Suite, SelectiveScanStateSizes)                                  \
  SCANSERVE_BACKEND_CASE_(Suite, SelectiveScanSoftplusThreshold)                           \
  SCANSERVE_BACKEND_CASE_(Suite, SelectiveScanLongRow)                                     \
  SCANSERVE_BACKEND_CASE_(Suite, AssociativeScanMatchesReference)                          \
  SCANSERVE_BACKEND_CASE_(Suite, AssociativeScanIntegerAddWraps)                           \
  SCANSERVE_BACKEND_CASE_(Suite, AssociativeScanNanPropagates)                             \
  SCANSERVE_BACKEND_CASE_(Suite, AssociativeScanExclusiveIdentities)                       \
  SCANSERVE_BACKEND_CASE_(Suite, AssociativeScanLongRows)                                  \
  SCANSERVE_BACKEND_CASE_(Suite, BatchInvariance)                                          \
  SCANSERVE_BACKEND_CASE_(Suite, ConcurrentBatches)                                        \
  TEST_F(Suite, LinearScanChained) {                                                       \
    SCANSERVE_TRACE_SEED(rng_);                                                            \
    ::scanserve::testing::LinearScanChained(backend(), rng_, /*bit_exact=*/false);         \
  }                                                                                        \
  TEST_F(Suite, SelectiveScanChained) {                                                    \
    SCANSERVE_TRACE_SEED(rng_);                                                            \
    ::scanserve::testing::SelectiveScanChained(backend(), rng_, /*bit_exact=*/false);      \
  }                                                                                        \
  TEST_F(Suite, InconsistentBatchIsInvalidArgument) {                                      \
    ::scanserve::testing::InconsistentBatchIsInvalidArgument(backend());                   \
  }

#define SCANSERVE_BACKEND_CASE_(Suite, Case)     \
  TEST_F(Suite, Case) {                          \
    SCANSERVE_TRACE_SEED(rng_);                  \
    ::scanserve::testing::Case(backend(), rng_); \
  }

#endif  // SCANSERVE_TESTS_KERNELS_BACKEND_CASES_H_
