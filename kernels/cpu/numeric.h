// Element access and float32 math for the CPU kernels, written branch-free so that loops calling
// them vectorize. Every function here uses only exactly-rounded IEEE operations (the library is
// built with -ffp-contract=off), so a vectorized loop, its scalar remainder and builds for other
// x86-64 levels give bit-identical results: batch invariance rests on that.
// Pure functions; thread-safe.
#ifndef SCANSERVE_KERNELS_CPU_NUMERIC_H_
#define SCANSERVE_KERNELS_CPU_NUMERIC_H_

#include <bit>
#include <cstdint>
#include <limits>

namespace scanserve::cpu {

// IEEE binary16 bits to float; the same values as HalfToFloat in types.h, without branches.
inline float HalfBitsToFloat(uint16_t h) {
  const uint32_t x = h;
  const uint32_t sign = (x & 0x8000u) << 16;
  const uint32_t em = x & 0x7fffu;
  const uint32_t normal = (em << 13) + 0x38000000u;   // rebias the exponent by 127 - 15
  const uint32_t special = (em << 13) + 0x70000000u;  // inf and NaN keep an all-ones exponent
  // Subnormals are em * 2^-24; the int-to-float conversion and the power-of-two scale are exact.
  const float subnormal = static_cast<float>(static_cast<int32_t>(em)) * 5.9604644775390625e-8f;
  uint32_t bits = em >= 0x7c00u ? special : normal;
  bits = em < 0x400u ? std::bit_cast<uint32_t>(subnormal) : bits;
  return std::bit_cast<float>(bits | sign);
}

// Float to binary16 bits with round to nearest even; the same values as FloatToHalf in types.h.
inline uint16_t FloatToHalfBits(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  const uint32_t sign = bits & 0x80000000u;
  const uint32_t abs = bits ^ sign;
  // Overflow (>= 65520 after rounding) or inf/NaN; NaN stays quiet.
  const uint32_t special = abs > 0x7f800000u ? 0x7e00u : 0x7c00u;
  // Small values: adding 0.5f aligns the binary point so the float adder does the rounding.
  const float small_sum = std::bit_cast<float>(abs) + 0.5f;
  const uint32_t small = std::bit_cast<uint32_t>(small_sum) - 0x3f000000u;
  // Normal values: rebias, then round to nearest even on the 13 dropped bits.
  const uint32_t odd = (abs >> 13) & 1u;
  const uint32_t normal = (abs + 0xc8000fffu + odd) >> 13;  // 0xc8000000 = (15 - 127) << 23
  uint32_t out = abs >= 0x47800000u ? special : normal;
  out = abs < 0x38800000u ? small : out;
  return static_cast<uint16_t>(out | (sign >> 16));
}

inline float BFloat16BitsToFloat(uint16_t h) {
  return std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
}

// Round to nearest even; NaN stays quiet and non-zero. Same values as FloatToBFloat16.
inline uint16_t FloatToBFloat16Bits(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const uint32_t nan = (bits >> 16) | 0x40u;
  return static_cast<uint16_t>((bits & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

// Storage types of the sequence tensors. Value is the type arithmetic runs in.
struct F32 {
  using Storage = float;
  using Value = float;
  static Value Load(Storage s) { return s; }
  static Storage Store(Value v) { return v; }
};
struct F16 {
  using Storage = uint16_t;
  using Value = float;
  static Value Load(Storage s) { return HalfBitsToFloat(s); }
  static Storage Store(Value v) { return FloatToHalfBits(v); }
};
struct BF16 {
  using Storage = uint16_t;
  using Value = float;
  static Value Load(Storage s) { return BFloat16BitsToFloat(s); }
  static Storage Store(Value v) { return FloatToBFloat16Bits(v); }
};
struct I32 {
  using Storage = int32_t;
  using Value = int32_t;
  static Value Load(Storage s) { return s; }
  static Storage Store(Value v) { return v; }
};
struct I64 {
  using Storage = int64_t;
  using Value = int64_t;
  static Value Load(Storage s) { return s; }
  static Storage Store(Value v) { return v; }
};

// exp(x) in float32 to within about 2 ulp, from a Cody-Waite reduction and a degree-6
// polynomial (Cephes expf). Gradual underflow to 0 below -103.9; +inf above 88.72; NaN stays NaN.
inline float FastExp(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  constexpr float kLow = -103.5f;
  constexpr float kHigh = 88.7228394f;
  float c = x < kLow ? kLow : x;
  c = c > kHigh ? kHigh : c;
  const float shifted = c * kLog2e + kRound;
  const float n = shifted - kRound;
  const int32_t ni = static_cast<int32_t>(std::bit_cast<uint32_t>(shifted) - 0x4b400000u);
  float r = c - n * kLn2Hi;
  r = r - n * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  // 2^n in two factors so that n in [-150, 128] needs no subnormal or overflowing exponent.
  const int32_t n1 = ni >> 1;
  const int32_t n2 = ni - n1;
  const float s1 = std::bit_cast<float>(static_cast<uint32_t>(n1 + 127) << 23);
  const float s2 = std::bit_cast<float>(static_cast<uint32_t>(n2 + 127) << 23);
  float result = (p * s1) * s2;
  result = x < kLow ? 0.0f : result;
  result = x > kHigh ? std::numeric_limits<float>::infinity() : result;
  return result;
}

}  // namespace scanserve::cpu

#endif  // SCANSERVE_KERNELS_CPU_NUMERIC_H_
