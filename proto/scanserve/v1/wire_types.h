// The one mapping between the wire enums of scanserve.v1 and the backend's DType and Layout,
// shared by the server's validation, the client library and the tests so that they cannot drift
// apart when a dtype is added. Header-only and pure: thread-safe.
#ifndef SCANSERVE_PROTO_SCANSERVE_V1_WIRE_TYPES_H_
#define SCANSERVE_PROTO_SCANSERVE_V1_WIRE_TYPES_H_

#include <optional>

#include "scanserve/types.h"
#include "scanserve/v1/scanserve.pb.h"

namespace scanserve::wire {

constexpr v1::DType ToWire(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return v1::FLOAT32;
    case DType::kFloat16:
      return v1::FLOAT16;
    case DType::kBFloat16:
      return v1::BFLOAT16;
    case DType::kInt32:
      return v1::INT32;
    case DType::kInt64:
      return v1::INT64;
  }
  return v1::DTYPE_UNSPECIFIED;
}

constexpr v1::Layout ToWire(Layout layout) { return layout == Layout::kBDL ? v1::BDL : v1::BLD; }

// Takes the raw int because a message parsed from a newer client may carry values this build's
// enum does not name; those (and the UNSPECIFIED zero) have no DType.
constexpr std::optional<DType> DTypeFromWire(int dtype) {
  switch (dtype) {
    case v1::FLOAT32:
      return DType::kFloat32;
    case v1::FLOAT16:
      return DType::kFloat16;
    case v1::BFLOAT16:
      return DType::kBFloat16;
    case v1::INT32:
      return DType::kInt32;
    case v1::INT64:
      return DType::kInt64;
    default:
      return std::nullopt;
  }
}

constexpr std::optional<Layout> LayoutFromWire(int layout) {
  switch (layout) {
    case v1::BDL:
      return Layout::kBDL;
    case v1::BLD:
      return Layout::kBLD;
    default:
      return std::nullopt;
  }
}

}  // namespace scanserve::wire

#endif  // SCANSERVE_PROTO_SCANSERVE_V1_WIRE_TYPES_H_
