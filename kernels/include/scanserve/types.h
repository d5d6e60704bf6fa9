// Element types, tensor layouts and the 16-bit float conversions shared by every backend, the
// server and the client. Plain C++ with no dependencies: safe to include anywhere, including
// translation units compiled by nvcc as host code. All functions are pure and thread-safe.
#ifndef SCANSERVE_TYPES_H_
#define SCANSERVE_TYPES_H_

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace scanserve {

enum class DType : uint8_t { kFloat32, kFloat16, kBFloat16, kInt32, kInt64 };

constexpr size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
    case DType::kInt32:
      return 4;
    case DType::kFloat16:
    case DType::kBFloat16:
      return 2;
    case DType::kInt64:
      return 8;
  }
  return 0;
}

constexpr std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat16:
      return "float16";
    case DType::kBFloat16:
      return "bfloat16";
    case DType::kInt32:
      return "int32";
    case DType::kInt64:
      return "int64";
  }
  return "unknown";
}

constexpr bool IsFloatingPoint(DType dtype) {
  return dtype == DType::kFloat32 || dtype == DType::kFloat16 || dtype == DType::kBFloat16;
}

// BDL: (batch, dim, length) with length contiguous. BLD: (batch, length, dim) with dim contiguous.
enum class Layout : uint8_t { kBDL, kBLD };

constexpr std::string_view LayoutName(Layout layout) {
  return layout == Layout::kBDL ? "BDL" : "BLD";
}

// Geometry of one request's sequence tensors: batch * dim independent rows of `length` steps.
struct SeqShape {
  int64_t batch = 0;
  int64_t dim = 0;
  int64_t length = 0;

  constexpr int64_t rows() const { return batch * dim; }
  constexpr int64_t elements() const { return batch * dim * length; }
  friend constexpr bool operator==(const SeqShape&, const SeqShape&) = default;
};

// Element offset of step t of row (b, d) in a sequence tensor of this shape and layout.
constexpr int64_t SeqOffset(const SeqShape& s, Layout layout, int64_t b, int64_t d, int64_t t) {
  return layout == Layout::kBDL ? (b * s.dim + d) * s.length + t : (b * s.length + t) * s.dim + d;
}

// Distance in elements between consecutive steps of one row.
constexpr int64_t SeqStepStride(const SeqShape& s, Layout layout) {
  return layout == Layout::kBDL ? 1 : s.dim;
}

// IEEE binary16 <-> binary32, round to nearest even; NaN stays NaN, overflow becomes infinity.
inline float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {  // subnormal: normalize
    exponent = 113;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
  }
  return std::bit_cast<float>(bits);
}

inline uint16_t FloatToHalf(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // inf or NaN; keep NaN quiet and non-zero
    return static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
  }
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds past 65504
  if (abs < 0x38800000u) {               // result is subnormal or zero
    if (abs < 0x33000000u) return sign;  // below half the smallest subnormal
    const uint32_t exponent = abs >> 23;
    const uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - exponent;  // 14..24
    uint32_t value = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (value & 1u))) ++value;
    return static_cast<uint16_t>(sign | value);
  }
  uint32_t value = ((abs >> 13) - (112u << 10));
  const uint32_t rest = abs & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (value & 1u))) ++value;
  return static_cast<uint16_t>(sign | value);
}

inline float BFloat16ToFloat(uint16_t h) {
  return std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
}

inline uint16_t FloatToBFloat16(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

}  // namespace scanserve

#endif  // SCANSERVE_TYPES_H_
