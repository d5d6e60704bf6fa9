#include "scanserve/client_tensor.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "scanserve/v1/wire_types.h"

namespace scanserve {
namespace {

constexpr int64_t kMaxElements = int64_t{1} << 62;

// Byte-wise little-endian stores and loads keep the wire format independent of the host order.
template <typename U>
void StoreLE(char* dst, U value) {
  for (size_t i = 0; i < sizeof(U); ++i) {
    dst[i] = static_cast<char>(static_cast<uint8_t>(value >> (8 * i)));
  }
}

template <typename U>
U LoadLE(const char* src) {
  U value = 0;
  for (size_t i = 0; i < sizeof(U); ++i) {
    value |= static_cast<U>(static_cast<uint8_t>(src[i])) << (8 * i);
  }
  return value;
}

std::string ShapeString(absl::Span<const int64_t> shape) {
  return absl::StrCat("(", absl::StrJoin(shape, ", "), ")");
}

absl::Status CheckCount(size_t values, absl::Span<const int64_t> shape, int64_t* count) {
  absl::StatusOr<int64_t> n = ElementCount(shape);
  if (!n.ok()) return n.status();
  if (static_cast<uint64_t>(*n) != values) {
    return absl::InvalidArgumentError(absl::StrCat("tensor values: ", values,
                                                   " values given for shape ", ShapeString(shape),
                                                   " which holds ", *n));
  }
  *count = *n;
  return absl::OkStatus();
}

v1::Tensor NewTensor(absl::Span<const int64_t> shape, DType dtype, Layout layout, int64_t count) {
  v1::Tensor tensor;
  tensor.set_dtype(ToProto(dtype));
  tensor.set_layout(ToProto(layout));
  tensor.mutable_shape()->Add(shape.begin(), shape.end());
  tensor.mutable_data()->resize(static_cast<size_t>(count) * DTypeSize(dtype));
  return tensor;
}

void StoreFloat(char* dst, DType dtype, float value) {
  switch (dtype) {
    case DType::kFloat32:
      StoreLE<uint32_t>(dst, std::bit_cast<uint32_t>(value));
      return;
    case DType::kFloat16:
      StoreLE<uint16_t>(dst, FloatToHalf(value));
      return;
    case DType::kBFloat16:
      StoreLE<uint16_t>(dst, FloatToBFloat16(value));
      return;
    case DType::kInt32:
    case DType::kInt64:
      return;  // callers route integers elsewhere
  }
}

float LoadFloat(const char* src, DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return std::bit_cast<float>(LoadLE<uint32_t>(src));
    case DType::kFloat16:
      return HalfToFloat(LoadLE<uint16_t>(src));
    case DType::kBFloat16:
      return BFloat16ToFloat(LoadLE<uint16_t>(src));
    case DType::kInt32:
      return static_cast<float>(static_cast<int32_t>(LoadLE<uint32_t>(src)));
    case DType::kInt64:
      return static_cast<float>(static_cast<int64_t>(LoadLE<uint64_t>(src)));
  }
  return 0.0f;
}

// Stores integers into an integer tensor (int32 range checked) or converts them to a float dtype.
template <typename Int>
absl::StatusOr<v1::Tensor> MakeFromInts(absl::Span<const Int> values,
                                        absl::Span<const int64_t> shape, DType dtype,
                                        Layout layout) {
  int64_t count = 0;
  if (absl::Status s = CheckCount(values.size(), shape, &count); !s.ok()) return s;
  v1::Tensor tensor = NewTensor(shape, dtype, layout, count);
  char* out = tensor.mutable_data()->data();
  const size_t size = DTypeSize(dtype);
  for (size_t i = 0; i < values.size(); ++i) {
    const int64_t v = values[i];
    switch (dtype) {
      case DType::kInt32:
        if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max()) {
          return absl::InvalidArgumentError(
              absl::StrCat("tensor values: value ", v, " at index ", i, " does not fit in int32"));
        }
        StoreLE<uint32_t>(out + i * size, static_cast<uint32_t>(static_cast<int32_t>(v)));
        break;
      case DType::kInt64:
        StoreLE<uint64_t>(out + i * size, static_cast<uint64_t>(v));
        break;
      default:
        StoreFloat(out + i * size, dtype, static_cast<float>(v));
    }
  }
  return tensor;
}

}  // namespace

v1::DType ToProto(DType dtype) { return wire::ToWire(dtype); }

v1::Layout ToProto(Layout layout) { return wire::ToWire(layout); }

absl::StatusOr<DType> FromProto(v1::DType dtype) {
  if (std::optional<DType> d = wire::DTypeFromWire(dtype)) return *d;
  return absl::InvalidArgumentError(
      absl::StrCat("tensor dtype: must be one of FLOAT32, FLOAT16, BFLOAT16, INT32, INT64, got ",
                   static_cast<int>(dtype)));
}

absl::StatusOr<Layout> FromProto(v1::Layout layout) {
  if (std::optional<Layout> l = wire::LayoutFromWire(layout)) return *l;
  return absl::InvalidArgumentError(
      absl::StrCat("tensor layout: must be BDL or BLD, got ", static_cast<int>(layout)));
}

absl::StatusOr<int64_t> ElementCount(absl::Span<const int64_t> shape) {
  int64_t count = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    const int64_t d = shape[i];
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor shape: dimension ", i, " is negative (", d, ")"));
    }
    if (d != 0 && count > kMaxElements / d) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor shape: ", ShapeString(shape), " has more than 2^62 elements"));
    }
    count *= d;
  }
  return count;
}

absl::StatusOr<v1::Tensor> MakeTensor(absl::Span<const float> values,
                                      absl::Span<const int64_t> shape, DType dtype, Layout layout) {
  int64_t count = 0;
  if (absl::Status s = CheckCount(values.size(), shape, &count); !s.ok()) return s;
  if (!IsFloatingPoint(dtype)) {
    std::vector<int64_t> ints(values.size());
    // Range limits as doubles: 2^31 and 2^63 are exact, and a float equal to them is out of range.
    const double limit = dtype == DType::kInt32 ? 2147483648.0 : 9223372036854775808.0;
    for (size_t i = 0; i < values.size(); ++i) {
      const double v = values[i];
      if (!(std::trunc(v) == v && v >= -limit && v < limit)) {
        return absl::InvalidArgumentError(absl::StrCat("tensor values: value ", v, " at index ", i,
                                                       " is not an integer that fits in ",
                                                       std::string(DTypeName(dtype))));
      }
      ints[i] = static_cast<int64_t>(v);
    }
    return MakeFromInts<int64_t>(ints, shape, dtype, layout);
  }
  v1::Tensor tensor = NewTensor(shape, dtype, layout, count);
  char* out = tensor.mutable_data()->data();
  const size_t size = DTypeSize(dtype);
  for (size_t i = 0; i < values.size(); ++i) StoreFloat(out + i * size, dtype, values[i]);
  return tensor;
}

absl::StatusOr<v1::Tensor> MakeTensor(absl::Span<const int64_t> values,
                                      absl::Span<const int64_t> shape, DType dtype, Layout layout) {
  return MakeFromInts<int64_t>(values, shape, dtype, layout);
}

absl::StatusOr<v1::Tensor> MakeTensor(absl::Span<const int32_t> values,
                                      absl::Span<const int64_t> shape, DType dtype, Layout layout) {
  return MakeFromInts<int32_t>(values, shape, dtype, layout);
}

absl::StatusOr<v1::Tensor> MakeTensorFromBytes(std::string data, absl::Span<const int64_t> shape,
                                               DType dtype, Layout layout) {
  absl::StatusOr<int64_t> count = ElementCount(shape);
  if (!count.ok()) return count.status();
  const uint64_t want = static_cast<uint64_t>(*count) * DTypeSize(dtype);
  if (data.size() != want) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor data: ", data.size(), " bytes given, shape ", ShapeString(shape),
                     " of ", std::string(DTypeName(dtype)), " needs ", want));
  }
  v1::Tensor tensor;
  tensor.set_dtype(ToProto(dtype));
  tensor.set_layout(ToProto(layout));
  tensor.mutable_shape()->Add(shape.begin(), shape.end());
  *tensor.mutable_data() = std::move(data);
  return tensor;
}

absl::StatusOr<int64_t> CheckTensor(const v1::Tensor& tensor) {
  absl::StatusOr<DType> dtype = FromProto(tensor.dtype());
  if (!dtype.ok()) return dtype.status();
  absl::Span<const int64_t> shape(tensor.shape().data(), tensor.shape().size());
  absl::StatusOr<int64_t> count = ElementCount(shape);
  if (!count.ok()) return count.status();
  const uint64_t want = static_cast<uint64_t>(*count) * DTypeSize(*dtype);
  if (tensor.data().size() != want) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor data: holds ", tensor.data().size(), " bytes, shape ",
                     ShapeString(shape), " of ", std::string(DTypeName(*dtype)), " needs ", want));
  }
  return *count;
}

absl::StatusOr<std::vector<float>> TensorToFloats(const v1::Tensor& tensor) {
  absl::StatusOr<int64_t> count = CheckTensor(tensor);
  if (!count.ok()) return count.status();
  const DType dtype = *FromProto(tensor.dtype());
  const size_t size = DTypeSize(dtype);
  const char* in = tensor.data().data();
  std::vector<float> values(static_cast<size_t>(*count));
  for (size_t i = 0; i < values.size(); ++i) values[i] = LoadFloat(in + i * size, dtype);
  return values;
}

absl::StatusOr<std::vector<int64_t>> TensorToInts(const v1::Tensor& tensor) {
  absl::StatusOr<int64_t> count = CheckTensor(tensor);
  if (!count.ok()) return count.status();
  const DType dtype = *FromProto(tensor.dtype());
  if (IsFloatingPoint(dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor dtype: TensorToInts needs int32 or "
                     "int64, the tensor holds ",
                     std::string(DTypeName(dtype))));
  }
  const char* in = tensor.data().data();
  std::vector<int64_t> values(static_cast<size_t>(*count));
  for (size_t i = 0; i < values.size(); ++i) {
    values[i] = dtype == DType::kInt32 ? static_cast<int32_t>(LoadLE<uint32_t>(in + i * 4))
                                       : static_cast<int64_t>(LoadLE<uint64_t>(in + i * 8));
  }
  return values;
}

std::vector<float> RoundTrip(absl::Span<const float> values, DType dtype) {
  std::vector<float> out(values.begin(), values.end());
  if (dtype == DType::kFloat16) {
    for (float& v : out) v = HalfToFloat(FloatToHalf(v));
  } else if (dtype == DType::kBFloat16) {
    for (float& v : out) v = BFloat16ToFloat(FloatToBFloat16(v));
  }
  return out;
}

}  // namespace scanserve
