// Request validation: turns a wire request into the Work the executor runs, checking every rule of
// ops.md on the way, and sizes the response's output tensors.
//
// The returned Work points into `request` (input bytes, zero copy) and into `response` (output
// bytes, sized here, written later by the backend). The caller keeps both alive and leaves their
// tensor data untouched until the work has run. On error nothing useful is left in `response`.
//
// Errors: INVALID_ARGUMENT for a broken rule, RESOURCE_EXHAUSTED for a configured limit; the
// message starts with the field and states the rule and what was received, e.g.
//   "x.shape: must have 3 dimensions (B, D, L), got 2".
//
// Pure functions of their arguments; thread-safe.
#ifndef SCANSERVE_SERVER_VALIDATION_H_
#define SCANSERVE_SERVER_VALIDATION_H_

#include <cstdint>
#include <optional>

#include "absl/status/statusor.h"
#include "scanserve/ops.h"
#include "scanserve/v1/scanserve.pb.h"
#include "server/config.h"
#include "server/job.h"

namespace scanserve {

struct ValidatedWork {
  Work work;
  // Input plus output bytes: what the job holds while queued (Job's `bytes`).
  int64_t bytes = 0;
};

absl::StatusOr<ValidatedWork> ValidateLinearScan(const v1::LinearScanRequest& request,
                                                 const RequestLimits& limits,
                                                 v1::LinearScanResponse* response);
absl::StatusOr<ValidatedWork> ValidateLinearScanBackward(
    const v1::LinearScanBackwardRequest& request, const RequestLimits& limits,
    v1::LinearScanBackwardResponse* response);
absl::StatusOr<ValidatedWork> ValidateSelectiveScan(const v1::SelectiveScanRequest& request,
                                                    const RequestLimits& limits,
                                                    v1::SelectiveScanResponse* response);
absl::StatusOr<ValidatedWork> ValidateAssociativeScan(const v1::AssociativeScanRequest& request,
                                                      const RequestLimits& limits,
                                                      v1::AssociativeScanResponse* response);

// The operation a Stream request carries, or nullopt when none is set.
std::optional<OpKind> StreamRequestOp(const v1::StreamRequest& request);

// Validates the operation a Stream request carries and sizes the matching result in `response`
// (request_id is left to the caller). Field names in messages are those of the operation's own
// request message, as on its unary RPC.
absl::StatusOr<ValidatedWork> ValidateStreamRequest(const v1::StreamRequest& request,
                                                    const RequestLimits& limits,
                                                    v1::StreamResponse* response);

}  // namespace scanserve

#endif  // SCANSERVE_SERVER_VALIDATION_H_
