// The CPU kernels' building blocks: branch-free 16-bit conversions (must equal types.h's exactly),
// the float32 exp, and the thread pool.
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <thread>
#include <vector>

#include "cpu/numeric.h"
#include "cpu/thread_pool.h"
#include "gtest/gtest.h"
#include "scanserve/types.h"
#include "support/test_support.h"

namespace scanserve::cpu {
namespace {

using ::scanserve::testing::Rng;

TEST(NumericTest, HalfToFloatMatchesTypesForEveryHalf) {
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    const auto bits = static_cast<uint16_t>(h);
    ASSERT_EQ(std::bit_cast<uint32_t>(HalfBitsToFloat(bits)),
              std::bit_cast<uint32_t>(HalfToFloat(bits)))
        << "half 0x" << std::hex << h;
  }
}

// Every float whose low 13 bits are a rounding boundary case, plus random ones.
TEST(NumericTest, FloatToHalfAndBFloat16MatchTypes) {
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  std::vector<uint32_t> probes;
  for (uint32_t high = 0; high < (1u << 19); ++high) {  // sign, exponent and 10 mantissa bits
    for (uint32_t low : {0x0000u, 0x0001u, 0x0fffu, 0x1000u, 0x1001u, 0x1fffu}) {
      probes.push_back((high << 13) | low);
    }
  }
  for (int i = 0; i < (1 << 20); ++i) probes.push_back(static_cast<uint32_t>(rng.engine()()));
  for (uint32_t bits : probes) {
    const float f = std::bit_cast<float>(bits);
    ASSERT_EQ(FloatToHalfBits(f), FloatToHalf(f)) << "float bits 0x" << std::hex << bits;
    ASSERT_EQ(FloatToBFloat16Bits(f), FloatToBFloat16(f)) << "float bits 0x" << std::hex << bits;
  }
}

TEST(NumericTest, FastExpIsAccurateAndHandlesTheEnds) {
  double worst = 0;
  for (double x = -87.0; x <= 88.7; x += 0.000731) {
    const float xf = static_cast<float>(x);
    const double want = std::exp(static_cast<double>(xf));
    const double err = std::abs(FastExp(xf) - want) / want;
    worst = std::max(worst, err);
  }
  EXPECT_LT(worst, 3e-7);  // about 2.5 ulp
  EXPECT_EQ(FastExp(0.0f), 1.0f);
  EXPECT_EQ(FastExp(-200.0f), 0.0f);
  EXPECT_EQ(FastExp(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_EQ(FastExp(89.0f), std::numeric_limits<float>::infinity());
  EXPECT_EQ(FastExp(std::numeric_limits<float>::infinity()),
            std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(FastExp(std::numeric_limits<float>::quiet_NaN())));
  // Subnormal results degrade gracefully instead of flushing early.
  EXPECT_NEAR(FastExp(-90.0f) / std::exp(-90.0), 1.0, 1e-4);
}

TEST(ThreadPoolTest, EveryItemRunsOnceWithConcurrentCallers) {
  for (int threads : {1, 2, 4}) {
    ThreadPool pool(threads);
    constexpr int kCallers = 3;
    constexpr int64_t kItems = 1000;
    std::vector<std::vector<std::atomic<int>>> hits(kCallers);
    for (auto& h : hits) h = std::vector<std::atomic<int>>(kItems);
    std::vector<std::thread> callers;
    for (int c = 0; c < kCallers; ++c) {
      callers.emplace_back([&, c] {
        for (int round = 0; round < 20; ++round) {
          pool.ParallelFor(kItems, [&](int64_t i) { hits[c][i].fetch_add(1); });
        }
      });
    }
    for (std::thread& t : callers) t.join();
    for (auto& h : hits) {
      for (auto& count : h) EXPECT_EQ(count.load(), 20);
    }
  }
}

}  // namespace
}  // namespace scanserve::cpu
