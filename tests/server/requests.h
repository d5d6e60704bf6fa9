// Wire requests for the service tests: random valid requests of every op from a small spec, the
// float64 reference problem of a request (built from its tensors by field name, independently of
// the server's validation), and the table of malformed requests with the exact status each must
// get.
//
// Ownership: everything is returned by value; a Problem returned by *ProblemOf points into the
// request passed in, which must outlive it. Thread-safety: pure functions.
#ifndef SCANSERVE_TESTS_SERVER_REQUESTS_H_
#define SCANSERVE_TESTS_SERVER_REQUESTS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "scanserve/ops.h"
#include "scanserve/v1/scanserve.pb.h"
#include "scanserve/v1/wire_types.h"
#include "server/config.h"
#include "support/test_support.h"

namespace scanserve::testing {

using WireShape = std::vector<int64_t>;

// The shape of a sequence tensor in memory order.
WireShape SeqWireShape(const SeqShape& s, Layout layout);

// A tensor of `dtype` with random values in [lo, hi) rounded to the dtype (integers: [lo, hi]),
// never all zero. `layout` is set only when given (sequence tensors).
v1::Tensor RandomTensor(Rng& rng, DType dtype, const WireShape& shape, std::optional<Layout> layout,
                        double lo, double hi);

// ---- valid requests ----
// The options structs of ops.h double as specs: they say which tensors are present. Shapes come
// separately.

v1::LinearScanRequest MakeLinearScan(Rng& rng, const LinearScanOptions& o, const SeqShape& s);
// has_states: the forward states are sent (float32, random).
v1::LinearScanBackwardRequest MakeLinearScanBackward(Rng& rng, const LinearScanBackwardOptions& o,
                                                     const SeqShape& s);
v1::SelectiveScanRequest MakeSelectiveScan(Rng& rng, const SelectiveScanOptions& o,
                                           const SeqShape& s);
v1::AssociativeScanRequest MakeAssociativeScan(Rng& rng, const AssociativeScanOptions& o,
                                               const SeqShape& s);

// Random specs covering every option; shapes with batch 1..2, dim 1..max_dim, length 1..max_len.
SeqShape RandomShape(Rng& rng, int64_t max_dim, int64_t max_len);
LinearScanOptions RandomLinearScanOptions(Rng& rng);
LinearScanBackwardOptions RandomLinearScanBackwardOptions(Rng& rng);
// dim must be divisible by the groups chosen: the result's groups divides s.dim.
SelectiveScanOptions RandomSelectiveScanOptions(Rng& rng, const SeqShape& s);
AssociativeScanOptions RandomAssociativeScanOptions(Rng& rng);

// ---- the same request as the references read it: pointers into the request's tensors ----

LinearScanProblem LinearScanProblemOf(const v1::LinearScanRequest& r, const SeqShape& s);
LinearScanBackwardProblem LinearScanBackwardProblemOf(const v1::LinearScanBackwardRequest& r,
                                                      const SeqShape& s);
SelectiveScanProblem SelectiveScanProblemOf(const v1::SelectiveScanRequest& r, const SeqShape& s);
AssociativeScanProblem AssociativeScanProblemOf(const v1::AssociativeScanRequest& r,
                                                const SeqShape& s);

// A response tensor's data copied into a HostTensor of `dtype` (checks nothing).
HostTensor ToHost(const v1::Tensor& t, DType dtype);

// ---- malformed requests ----

struct MalformedCase {
  std::string name;
  v1::StreamRequest request;  // the op it targets, or no op at all
  absl::StatusCode code;
  std::string message;       // the exact message expected
  bool stream_only = false;  // no unary RPC can carry it (a Stream request without an op)
};

// The limits MalformedCases() is written against: the server under test must use them.
RequestLimits MalformedCaseLimits();
std::vector<MalformedCase> MalformedCases(Rng& rng);

}  // namespace scanserve::testing

#endif  // SCANSERVE_TESTS_SERVER_REQUESTS_H_
