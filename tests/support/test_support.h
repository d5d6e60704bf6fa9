// Helpers shared by every backend's tests: seeded random numbers, host tensors of any element type
// with poisoning, and the relative L2 error that ops.md's accuracy targets are stated in.
//
// Ownership: HostTensor owns its storage (64-byte aligned, freed on destruction; movable, not
// copyable). Thread-safety: none of these types is safe for concurrent mutation; distinct objects
// may be used from distinct threads.
#ifndef SCANSERVE_TESTS_SUPPORT_TEST_SUPPORT_H_
#define SCANSERVE_TESTS_SUPPORT_TEST_SUPPORT_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <string>

#include "gtest/gtest.h"
#include "scanserve/types.h"

namespace scanserve::testing {

// A random engine whose seed is fresh for every run (std::random_device) unless the environment
// variable SCANSERVE_TEST_SEED pins it, so that any failure can be replayed.
class Rng {
 public:
  Rng();
  explicit Rng(uint64_t seed);

  uint64_t seed() const { return seed_; }
  // Uniform real in [lo, hi).
  double Uniform(double lo, double hi);
  // Uniform integer in [lo, hi], both ends included.
  int64_t Int(int64_t lo, int64_t hi);
  bool Bool() { return Int(0, 1) == 1; }
  std::mt19937_64& engine() { return engine_; }

 private:
  uint64_t seed_;
  std::mt19937_64 engine_;
};

// "SCANSERVE_TEST_SEED=<seed>": the text that replays a failing run.
std::string SeedMessage(const Rng& rng);

// Adds the seed of `rng` to every failure reported in the enclosing scope.
#define SCANSERVE_TRACE_SEED(rng) SCOPED_TRACE(::scanserve::testing::SeedMessage(rng))

// A dense host tensor of `count` elements of one DType.
class HostTensor {
 public:
  HostTensor() = default;
  HostTensor(DType dtype, int64_t count);
  HostTensor(HostTensor&&) noexcept = default;
  HostTensor& operator=(HostTensor&&) noexcept = default;

  DType dtype() const { return dtype_; }
  int64_t count() const { return count_; }
  size_t bytes() const { return static_cast<size_t>(count_) * DTypeSize(dtype_); }
  void* data() { return storage_.get(); }
  const void* data() const { return storage_.get(); }
  template <typename T>
  T* As() {
    return static_cast<T*>(data());
  }
  template <typename T>
  const T* As() const {
    return static_cast<const T*>(data());
  }

  // Element i converted to double (int64 values beyond 2^53 lose precision; use GetInt).
  double Get(int64_t i) const;
  // Element i of an integer tensor, exactly; a float element is truncated toward zero.
  int64_t GetInt(int64_t i) const;
  // Stores v rounded to the dtype (round to nearest even for floats; integers round to nearest
  // and wrap as two's complement).
  void Set(int64_t i, double v);

  // Fills with uniform values in [lo, hi) (integers: [lo, hi]), rounded to the dtype. The result is
  // never all zero: if it would be, one element is forced non-zero.
  void FillUniform(Rng& rng, double lo, double hi);
  // 0xFF in every byte: NaN for the float types, -1 for the integer types, so an output the
  // backend never writes is caught.
  void Poison();
  // Whether every byte equals the other tensor's (same dtype and count required).
  bool BitEqual(const HostTensor& other) const;

 private:
  struct Free {
    void operator()(void* p) const;
  };
  DType dtype_ = DType::kFloat32;
  int64_t count_ = 0;
  std::unique_ptr<void, Free> storage_;
};

// ||out - ref|| / ||ref|| over all elements. +inf when out holds a NaN (or inf) where ref holds a
// finite value, or when their sizes differ; positions where ref is NaN must be NaN in out too. When
// ||ref|| is 0 the absolute norm ||out|| is returned.
double RelativeL2Error(const HostTensor& out, std::span<const double> ref);
// The same for a float32 array (states returned by the backends).
double RelativeL2Error(std::span<const float> out, std::span<const double> ref);

// ops.md's accuracy target for outputs of `dtype`: 1e-5 for float32, 1e-2 for the 16-bit types,
// 0 for the integer types (their results are exact).
double Tolerance(DType dtype);

// Rounds v to the precision of `dtype` and back (identity for float64-representable ints).
double RoundTo(DType dtype, double v);

}  // namespace scanserve::testing

#endif  // SCANSERVE_TESTS_SUPPORT_TEST_SUPPORT_H_
