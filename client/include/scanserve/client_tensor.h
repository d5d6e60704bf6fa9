// Typed tensors for the client: building scanserve.v1.Tensor messages from plain C++ values and
// reading them back, in any dtype of the wire contract.
//
// A Tensor carries its elements as little-endian bytes of its dtype (see scanserve.proto). These
// helpers do the encoding: floats become float16/bfloat16 with round-to-nearest-even (the
// conversions of scanserve/types.h, the same the server and its kernels use), integers are range
// checked, and every read checks that the byte count matches the shape.
//
//   scanserve::v1::Tensor x =
//       scanserve::MakeTensor(values, {1, 64, 1024}, scanserve::DType::kBFloat16).value();
//   std::vector<float> y = scanserve::TensorToFloats(response.y()).value();
//
// All functions are pure and thread-safe; results are owned by the caller.
#ifndef SCANSERVE_CLIENT_TENSOR_H_
#define SCANSERVE_CLIENT_TENSOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "scanserve/types.h"
#include "scanserve/v1/scanserve.pb.h"

namespace scanserve {

// Enum conversions between the wire contract and the kernels' host types.
v1::DType ToProto(DType dtype);
v1::Layout ToProto(Layout layout);
// INVALID_ARGUMENT for *_UNSPECIFIED and values this build does not know.
absl::StatusOr<DType> FromProto(v1::DType dtype);
absl::StatusOr<Layout> FromProto(v1::Layout layout);

// Product of `shape`. INVALID_ARGUMENT for a negative dimension or a product past 2^62.
absl::StatusOr<int64_t> ElementCount(absl::Span<const int64_t> shape);

// Builds a tensor of `dtype` holding `values` in `shape` (memory order, outermost first).
// `layout` is meaningful only on sequence tensors; leave it kBDL on parameter and state tensors.
//
// From float values: float32 stores the value as is; float16/bfloat16 round to nearest even;
// int32/int64 accept only integral values inside the type's range (INVALID_ARGUMENT otherwise).
// From integer values: integer dtypes store them (int32 rejects values outside its range);
// floating dtypes convert, rounding to the nearest representable value.
// Either way values.size() must equal the product of shape (INVALID_ARGUMENT naming both).
absl::StatusOr<v1::Tensor> MakeTensor(absl::Span<const float> values,
                                      absl::Span<const int64_t> shape, DType dtype,
                                      Layout layout = Layout::kBDL);
absl::StatusOr<v1::Tensor> MakeTensor(absl::Span<const int64_t> values,
                                      absl::Span<const int64_t> shape, DType dtype,
                                      Layout layout = Layout::kBDL);
absl::StatusOr<v1::Tensor> MakeTensor(absl::Span<const int32_t> values,
                                      absl::Span<const int64_t> shape, DType dtype,
                                      Layout layout = Layout::kBDL);

// Wraps bytes already encoded in `dtype` (little-endian, row-major in `shape`). The byte count
// must be exactly product(shape) * DTypeSize(dtype).
absl::StatusOr<v1::Tensor> MakeTensorFromBytes(std::string data, absl::Span<const int64_t> shape,
                                               DType dtype, Layout layout = Layout::kBDL);

// Checks that the tensor is well formed: a known dtype, non-negative dimensions and exactly
// product(shape) * DTypeSize(dtype) data bytes. Returns the element count.
absl::StatusOr<int64_t> CheckTensor(const v1::Tensor& tensor);

// Reads every element as float, in memory order. Any dtype; int64 values beyond 2^24 lose
// precision as float does. Fails when CheckTensor does.
absl::StatusOr<std::vector<float>> TensorToFloats(const v1::Tensor& tensor);
// Reads every element as int64, in memory order. Integer dtypes only (INVALID_ARGUMENT for
// floating dtypes: a silent truncation would hide a wrong call). Fails when CheckTensor does.
absl::StatusOr<std::vector<int64_t>> TensorToInts(const v1::Tensor& tensor);

// Rounds each value to `dtype` and back: what a float tensor of that dtype can hold. Useful to
// compute a local reference from exactly the values a server received. Floating dtypes only.
std::vector<float> RoundTrip(absl::Span<const float> values, DType dtype);

}  // namespace scanserve

#endif  // SCANSERVE_CLIENT_TENSOR_H_
