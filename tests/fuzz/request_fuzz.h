// The request fuzz harness: raw bytes in, as a client could put them on the wire, through the
// server's decoding and validation, then (when validation accepts) through the CPU backend.
//
// Input format: byte 0 selects what the rest decodes as and under which limits:
//   (byte0 & 7) % 5: 0 scanserve.v1.StreamRequest, 1 LinearScanRequest,
//                    2 LinearScanBackwardRequest, 3 SelectiveScanRequest, 4 AssociativeScanRequest;
//   byte0 & 8:       the tight limits of FuzzLimits(true) instead of the server's defaults.
// Bytes 1.. are the serialized message.
//
// FuzzRequest aborts the process (a crash to the fuzzer) when a property the server relies on
// fails:
//   - a refused request gets INVALID_ARGUMENT or RESOURCE_EXHAUSTED with a message of the form
//     "<field>: <rule>..." (field non-empty, no spaces);
//   - an accepted request sizes every response tensor consistently (data bytes = product(shape) *
//     dtype size) and reports a positive queued-bytes figure;
//   - the CPU backend runs accepted work with status OK (so validation let nothing through a
//     kernel would reject), and ASan sees every input and output access stay in bounds.
// Everything else it returns: the parse failure (INVALID_ARGUMENT, as gRPC would refuse the
// message) or the validation status.
//
// Thread-safety: FuzzRequest may be called from several threads (the backend is shared and
// thread-safe). Ownership: nothing outlives a call except the process-wide backend.
#ifndef SCANSERVE_TESTS_FUZZ_REQUEST_FUZZ_H_
#define SCANSERVE_TESTS_FUZZ_REQUEST_FUZZ_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "server/config.h"

namespace scanserve::fuzz {

enum class MessageKind : uint8_t {
  kStream = 0,
  kLinearScan = 1,
  kLinearScanBackward = 2,
  kSelectiveScan = 3,
  kAssociativeScan = 4,
};

// The server's default limits, or small ones a fuzzer's inputs can reach.
RequestLimits FuzzLimits(bool tight);

// Byte 0 for `kind` and `tight`, followed by `message` (already serialized).
std::string EncodeInput(MessageKind kind, bool tight, const std::string& message);

absl::Status FuzzRequest(const uint8_t* data, size_t size);

}  // namespace scanserve::fuzz

#endif  // SCANSERVE_TESTS_FUZZ_REQUEST_FUZZ_H_
