// scanctl --verify: recomputes a request locally on a Backend (the CPU backend: the project's
// reference) and compares the server's answer with it, output by output, as the relative L2 error
// of ops.md against its accuracy targets.
//
// Thread-safety: the functions are pure apart from running `backend`, which is thread-safe.
#ifndef SCANSERVE_CLIENT_SCANCTL_VERIFY_H_
#define SCANSERVE_CLIENT_SCANCTL_VERIFY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "scanserve/backend.h"
#include "scanserve/types.h"
#include "scanserve/v1/scanserve.pb.h"

namespace scanserve::scanctl {

// ops.md's accuracy target for outputs of a request in `dtype`: 1e-5 for float32, 1e-2 for
// float16/bfloat16, and 0 (exact) for the integer dtypes.
double Tolerance(DType dtype);

// The dtype of a request's sequence tensors (x, or u for selective_scan).
absl::StatusOr<DType> RequestDType(const v1::StreamRequest& request);

// Runs `request` on `backend` and returns the response a server should give (request_id 0,
// code OK). Every tensor must be well formed with exactly the dtype and shape its role takes
// (INVALID_ARGUMENT naming the field otherwise): the backend trusts its problem's sizes.
absl::StatusOr<v1::StreamResponse> ComputeLocally(const v1::StreamRequest& request,
                                                  Backend& backend);

struct OutputCheck {
  std::string name;        // y, final_state, da, ...
  double rel_l2 = 0.0;     // ||got - want|| / ||want||; ||got - want|| when want is all zero
  double max_abs = 0.0;    // largest |got - want|
  int64_t mismatches = 0;  // elements that differ (NaN equals NaN, infinities of one sign agree)
  double tolerance = 0.0;
  bool ok = false;
  std::string problem;  // set when the output is missing or its dtype or shape is wrong
};

struct VerifyReport {
  std::vector<OutputCheck> outputs;
  bool ok = false;  // every output present and within tolerance, no unexpected output
};

// Compares the server's answer `got` with the local `want` for a request of `dtype`. Floating
// outputs pass with rel_l2 <= Tolerance(dtype) and NaN only where want has NaN; integer outputs
// must match exactly.
VerifyReport Compare(const v1::StreamResponse& got, const v1::StreamResponse& want, DType dtype);

}  // namespace scanserve::scanctl

#endif  // SCANSERVE_CLIENT_SCANCTL_VERIFY_H_
