#include "request_fuzz.h"

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <variant>

#include "absl/status/statusor.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "scanserve/cpu_backend.h"
#include "scanserve/ops.h"
#include "scanserve/v1/scanserve.pb.h"
#include "server/validation.h"

namespace scanserve::fuzz {
namespace {

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "request_fuzz: property violated: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

int64_t WireDTypeSize(int dtype) {
  switch (dtype) {
    case v1::FLOAT32:
    case v1::INT32:
      return 4;
    case v1::FLOAT16:
    case v1::BFLOAT16:
      return 2;
    case v1::INT64:
      return 8;
    default:
      return 0;
  }
}

void CheckTensor(const v1::Tensor& t, const std::string& name) {
  const int64_t size = WireDTypeSize(t.dtype());
  if (size == 0) Fail(name + ": response tensor has dtype " + std::to_string(t.dtype()));
  int64_t elements = 1;
  for (int64_t d : t.shape()) {
    if (d < 1) Fail(name + ": response shape has dimension " + std::to_string(d));
    if (__builtin_mul_overflow(elements, d, &elements)) Fail(name + ": response shape overflows");
  }
  if (static_cast<int64_t>(t.data().size()) != elements * size) {
    Fail(name + ": response data has " + std::to_string(t.data().size()) + " bytes for " +
         std::to_string(elements) + " elements of " + std::to_string(size) + " bytes");
  }
}

// Every Tensor reachable from `message` (the response, sized by validation) is consistent.
void CheckResponseTensors(const google::protobuf::Message& message, const std::string& path) {
  const google::protobuf::Reflection* reflection = message.GetReflection();
  const google::protobuf::Descriptor* descriptor = message.GetDescriptor();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* field = descriptor->field(i);
    if (field->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE ||
        field->is_repeated() || !reflection->HasField(message, field)) {
      continue;
    }
    const google::protobuf::Message& sub = reflection->GetMessage(message, field);
    const std::string name = path + field->name();
    if (sub.GetDescriptor() == v1::Tensor::descriptor()) {
      CheckTensor(static_cast<const v1::Tensor&>(sub), name);
    } else {
      CheckResponseTensors(sub, name + ".");
    }
  }
}

void CheckRefusal(const absl::Status& status) {
  if (status.code() != absl::StatusCode::kInvalidArgument &&
      status.code() != absl::StatusCode::kResourceExhausted) {
    Fail("refusal with code " + absl::StatusCodeToString(status.code()) + ": " +
         std::string(status.message()));
  }
  const std::string message(status.message());
  const size_t colon = message.find(": ");
  if (colon == 0 || colon == std::string::npos ||
      message.substr(0, colon).find(' ') != std::string::npos) {
    Fail("refusal message does not start with \"<field>: \": " + message);
  }
}

Backend& CpuBackend() {
  // One thread: kernels on fuzz-sized inputs are tiny, and a single worker keeps runs
  // reproducible.
  static Backend* backend = MakeCpuBackend(1).release();
  return *backend;
}

absl::Status Run(const Work& work) {
  return std::visit(
      [](const auto& w) {
        using W = std::decay_t<decltype(w)>;
        Batch<decltype(W::options), decltype(W::problem)> batch{
            w.options, std::span<const decltype(W::problem)>(&w.problem, 1)};
        return CpuBackend().Run(batch);
      },
      work);
}

template <typename Request, typename Response, typename Validate>
absl::Status Check(const uint8_t* data, size_t size, const RequestLimits& limits,
                   Validate validate) {
  Request request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) {
    return absl::InvalidArgumentError("request: must be a serialized " +
                                      Request::descriptor()->full_name() + ", got " +
                                      std::to_string(size) + " undecodable bytes");
  }
  Response response;
  absl::StatusOr<ValidatedWork> v = validate(request, limits, &response);
  if (!v.ok()) {
    CheckRefusal(v.status());
    return v.status();
  }
  if (v->bytes <= 0) Fail("accepted request reports " + std::to_string(v->bytes) + " bytes");
  CheckResponseTensors(response, "");
  const absl::Status ran = Run(v->work);
  if (!ran.ok()) Fail("CPU backend refused validated work: " + ran.ToString());
  return absl::OkStatus();
}

}  // namespace

RequestLimits FuzzLimits(bool tight) {
  RequestLimits limits;
  if (tight) {
    limits.max_elements_per_request = 4096;
    limits.max_message_bytes = 16 << 10;
    limits.max_state_dim = 16;
  }
  return limits;
}

std::string EncodeInput(MessageKind kind, bool tight, const std::string& message) {
  std::string out(1, static_cast<char>(static_cast<uint8_t>(kind) | (tight ? 8 : 0)));
  return out + message;
}

absl::Status FuzzRequest(const uint8_t* data, size_t size) {
  if (size == 0) return absl::InvalidArgumentError("input: must hold a selector byte, got none");
  const auto kind = static_cast<MessageKind>((data[0] & 7) % 5);
  const RequestLimits limits = FuzzLimits((data[0] & 8) != 0);
  ++data;
  --size;
  switch (kind) {
    case MessageKind::kStream:
      return Check<v1::StreamRequest, v1::StreamResponse>(data, size, limits,
                                                          ValidateStreamRequest);
    case MessageKind::kLinearScan:
      return Check<v1::LinearScanRequest, v1::LinearScanResponse>(data, size, limits,
                                                                  ValidateLinearScan);
    case MessageKind::kLinearScanBackward:
      return Check<v1::LinearScanBackwardRequest, v1::LinearScanBackwardResponse>(
          data, size, limits, ValidateLinearScanBackward);
    case MessageKind::kSelectiveScan:
      return Check<v1::SelectiveScanRequest, v1::SelectiveScanResponse>(data, size, limits,
                                                                        ValidateSelectiveScan);
    case MessageKind::kAssociativeScan:
      return Check<v1::AssociativeScanRequest, v1::AssociativeScanResponse>(
          data, size, limits, ValidateAssociativeScan);
  }
  return absl::InternalError("unreachable");
}

}  // namespace scanserve::fuzz
