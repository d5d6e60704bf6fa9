// scanctl's requests: what one request of each operation looks like for a given shape, dtype,
// layout and set of options, filled with seeded random values or read from files.
//
// Every request is carried as a scanserve.v1.StreamRequest, whose oneof names the operation; the
// unary RPCs take its inner message.
//
// File formats:
//   - Request file: one binary-serialized scanserve.v1.StreamRequest (any request_id). Written by
//     `scanctl run --save_request=FILE`, read by `scanctl run --in=FILE`; from Python:
//     `open(f, "wb").write(scanserve_pb2.StreamRequest(linear_scan=...).SerializeToString())`.
//   - Tensor directory: one file per tensor, named after its request field (a.bin, x.bin, ...,
//     A.bin, B.bin, delta_bias.bin), holding the raw little-endian elements in memory order, e.g.
//     numpy's `array.astype(np.float32).tofile("DIR/x.bin")`. Shapes and dtypes follow from the
//     RequestSpec (the same flags as random inputs): sequence tensors in the spec's dtype and
//     layout, parameters and states in float32 (see scanserve.proto for each shape). A file of the
//     wrong size is an error naming the file and the size expected.
//
// Pure functions; thread-safe.
#ifndef SCANSERVE_CLIENT_SCANCTL_REQUESTS_H_
#define SCANSERVE_CLIENT_SCANCTL_REQUESTS_H_

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "scanserve/ops.h"
#include "scanserve/types.h"
#include "scanserve/v1/scanserve.pb.h"

namespace scanserve::scanctl {

// Everything that decides a request's tensors: the operation's options of ops.md.
struct RequestSpec {
  OpKind op = OpKind::kLinearScan;
  int64_t batch = 1;
  int64_t dim = 64;
  int64_t length = 1024;
  DType dtype = DType::kFloat32;
  Layout layout = Layout::kBDL;
  // Optional tensors to send, by request field name: b, c, h0 (linear ops), h (forward states,
  // linear_scan_backward), D, z, delta_bias, h0 (selective_scan).
  std::set<std::string> with;
  bool reverse = false;             // linear ops, associative_scan
  bool return_final_state = false;  // linear_scan
  // selective_scan
  int64_t state_dim = 16;
  int64_t groups = 1;
  bool fixed_b = false;  // B as (dim, N) float32 instead of per step
  bool fixed_c = false;
  bool delta_softplus = false;
  bool return_last_state = false;
  // associative_scan
  ScanOperator scan_operator = ScanOperator::kAdd;
  bool exclusive = false;
};

// "linear_scan" -> kLinearScan, ...; INVALID_ARGUMENT listing the names otherwise.
absl::StatusOr<OpKind> ParseOp(const std::string& name);
absl::StatusOr<DType> ParseDType(const std::string& name);    // float32, float16, bfloat16, ...
absl::StatusOr<Layout> ParseLayout(const std::string& name);  // BDL or BLD (any case)
absl::StatusOr<ScanOperator> ParseOperator(const std::string& name);  // add, mul, ...

// Checks the spec is a request the contract allows (positive sizes, optional tensors the op
// takes, dtype allowed for the op and operator, D divisible by groups, ...): INVALID_ARGUMENT
// naming the flag otherwise. The server checks the same rules; checking here first gives a
// clearer message than a round trip.
absl::Status CheckSpec(const RequestSpec& spec);

// A request of `spec` with random values from `seed`: the same seed gives the same request. The
// values suit each op (gates in (0.5, 1) so states stay bounded, softplus inputs around Mamba's,
// products near 1, integers that wrap under add) and are never all zero. linear_scan_backward's
// forward states h, when asked for, are the true forward states of the generated inputs.
absl::StatusOr<v1::StreamRequest> RandomRequest(const RequestSpec& spec, uint64_t seed);

// A request of `spec` with every tensor read from `dir` (see the file formats above).
absl::StatusOr<v1::StreamRequest> RequestFromDirectory(const RequestSpec& spec,
                                                       const std::string& dir);

// Reads / writes a request file (binary StreamRequest).
absl::StatusOr<v1::StreamRequest> ReadRequestFile(const std::string& path);
absl::Status WriteMessageFile(const google::protobuf::Message& message, const std::string& path);

// The operation a request carries; INVALID_ARGUMENT when its oneof is empty.
absl::StatusOr<OpKind> RequestOp(const v1::StreamRequest& request);

// A one-line description of a request: op, dtype, layout, shape and options.
std::string Describe(const v1::StreamRequest& request);

// Bytes of the operation's message in `request`, as sent on a unary RPC.
int64_t PayloadBytes(const v1::StreamRequest& request);

// Named output tensors of a response (y, final_state, da, ...), in a fixed order; absent
// optional outputs are left out.
std::vector<std::pair<std::string, const v1::Tensor*>> OutputTensors(
    const v1::StreamResponse& response);

}  // namespace scanserve::scanctl

#endif  // SCANSERVE_CLIENT_SCANCTL_REQUESTS_H_
