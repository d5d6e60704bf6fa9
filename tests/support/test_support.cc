#include "support/test_support.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <string>

namespace scanserve::testing {
namespace {

uint64_t FreshSeed() {
  if (const char* env = std::getenv("SCANSERVE_TEST_SEED"); env != nullptr && *env != '\0') {
    return std::strtoull(env, nullptr, 0);
  }
  std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) ^ device();
}

// Two's-complement wrap of an integral double: exact for |v| < 2^63, the range tests use.
int64_t WrapToInt64(double v) {
  const double r = std::nearbyint(v);
  if (r >= 9223372036854775808.0 || r < -9223372036854775808.0) {
    return static_cast<int64_t>(static_cast<uint64_t>(std::fmod(r, 18446744073709551616.0)));
  }
  return static_cast<int64_t>(r);
}

}  // namespace

Rng::Rng() : Rng(FreshSeed()) {}

Rng::Rng(uint64_t seed) : seed_(seed), engine_(seed) {}

double Rng::Uniform(double lo, double hi) {
  return std::uniform_real_distribution<double>(lo, hi)(engine_);
}

int64_t Rng::Int(int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(engine_);
}

std::string SeedMessage(const Rng& rng) {
  return "SCANSERVE_TEST_SEED=" + std::to_string(rng.seed()) + " replays this run";
}

void HostTensor::Free::operator()(void* p) const { ::operator delete (p, std::align_val_t{64}); }

HostTensor::HostTensor(DType dtype, int64_t count) : dtype_(dtype), count_(count) {
  // Round up so that a zero-element tensor still has a valid, distinct pointer.
  const size_t size = (std::max<size_t>(bytes(), 1) + 63) / 64 * 64;
  storage_.reset(::operator new (size, std::align_val_t{64}));
  std::memset(storage_.get(), 0, size);
}

double HostTensor::Get(int64_t i) const {
  switch (dtype_) {
    case DType::kFloat32:
      return As<float>()[i];
    case DType::kFloat16:
      return HalfToFloat(As<uint16_t>()[i]);
    case DType::kBFloat16:
      return BFloat16ToFloat(As<uint16_t>()[i]);
    case DType::kInt32:
      return As<int32_t>()[i];
    case DType::kInt64:
      return static_cast<double>(As<int64_t>()[i]);
  }
  return std::numeric_limits<double>::quiet_NaN();
}

int64_t HostTensor::GetInt(int64_t i) const {
  switch (dtype_) {
    case DType::kInt32:
      return As<int32_t>()[i];
    case DType::kInt64:
      return As<int64_t>()[i];
    default:
      return static_cast<int64_t>(Get(i));
  }
}

void HostTensor::Set(int64_t i, double v) {
  switch (dtype_) {
    case DType::kFloat32:
      As<float>()[i] = static_cast<float>(v);
      return;
    case DType::kFloat16:
      // Through float32 first: double->float rounding then float->half could double-round, but
      // tests only need a value representable in the dtype, which this always gives.
      As<uint16_t>()[i] = FloatToHalf(static_cast<float>(v));
      return;
    case DType::kBFloat16:
      As<uint16_t>()[i] = FloatToBFloat16(static_cast<float>(v));
      return;
    case DType::kInt32:
      As<int32_t>()[i] = static_cast<int32_t>(static_cast<uint32_t>(WrapToInt64(v)));
      return;
    case DType::kInt64:
      As<int64_t>()[i] = WrapToInt64(v);
      return;
  }
}

void HostTensor::FillUniform(Rng& rng, double lo, double hi) {
  const bool integral = !IsFloatingPoint(dtype_);
  bool any_nonzero = false;
  for (int64_t i = 0; i < count_; ++i) {
    if (integral) {
      Set(i, static_cast<double>(rng.Int(static_cast<int64_t>(std::ceil(lo)),
                                         static_cast<int64_t>(std::floor(hi)))));
    } else {
      Set(i, rng.Uniform(lo, hi));
    }
    any_nonzero = any_nonzero || Get(i) != 0.0;
  }
  if (!any_nonzero && count_ > 0) {
    // Pick the end of the range farthest from zero so the forced value lies inside it.
    const double v = std::abs(hi) >= std::abs(lo) ? (integral ? std::floor(hi) : hi * 0.5)
                                                  : (integral ? std::ceil(lo) : lo * 0.5);
    Set(rng.Int(0, count_ - 1), v != 0.0 ? v : 1.0);
  }
}

void HostTensor::Poison() { std::memset(data(), 0xFF, bytes()); }

bool HostTensor::BitEqual(const HostTensor& other) const {
  return dtype_ == other.dtype_ && count_ == other.count_ &&
         std::memcmp(data(), other.data(), bytes()) == 0;
}

namespace {

template <typename GetFn>
double RelativeL2ErrorImpl(int64_t n, GetFn get, std::span<const double> ref) {
  if (n != static_cast<int64_t>(ref.size())) return std::numeric_limits<double>::infinity();
  double err = 0.0;
  double norm = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double o = get(i);
    const double r = ref[static_cast<size_t>(i)];
    if (std::isnan(r)) {
      if (!std::isnan(o)) return std::numeric_limits<double>::infinity();
      continue;
    }
    if (std::isinf(r)) {
      if (o != r) return std::numeric_limits<double>::infinity();
      continue;
    }
    if (!std::isfinite(o)) return std::numeric_limits<double>::infinity();
    err += (o - r) * (o - r);
    norm += r * r;
  }
  return norm > 0.0 ? std::sqrt(err / norm) : std::sqrt(err);
}

}  // namespace

double RelativeL2Error(const HostTensor& out, std::span<const double> ref) {
  return RelativeL2ErrorImpl(
      out.count(), [&](int64_t i) { return out.Get(i); }, ref);
}

double RelativeL2Error(std::span<const float> out, std::span<const double> ref) {
  return RelativeL2ErrorImpl(
      static_cast<int64_t>(out.size()), [&](int64_t i) { return double{out[i]}; }, ref);
}

double Tolerance(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return 1e-5;
    case DType::kFloat16:
    case DType::kBFloat16:
      return 1e-2;
    case DType::kInt32:
    case DType::kInt64:
      return 0.0;
  }
  return 0.0;
}

double RoundTo(DType dtype, double v) {
  HostTensor t(dtype, 1);
  t.Set(0, v);
  return t.Get(0);
}

}  // namespace scanserve::testing
