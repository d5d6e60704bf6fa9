// Tuning constants of the CUDA selective scan, in one place. Plain C++ (constexpr only), shared by
// the dispatch and the device code. Numbers come from bench/cuda_selective_scan_bench.cu on an
// H100; bench/RESULTS.md records the runs.
#ifndef SCANSERVE_KERNELS_CUDA_SELECTIVE_SCAN_TUNING_H_
#define SCANSERVE_KERNELS_CUDA_SELECTIVE_SCAN_TUNING_H_

#include <cstdint>

namespace scanserve::cuda::selective_tuning {

// Threads carry `states_per_thread` consecutive states of one channel in registers across the whole
// sequence; the ceil(N / states_per_thread) threads of a channel add their partial outputs through
// shared memory. Four states per thread keep the exp2 unit busy with the fewest extra instructions
// per state; a request too small to fill the GPU that way gets two (twice the threads). It fixes
// the summation order, so it depends on the request's own N and size only.
inline constexpr int64_t kSmallRequestThreads = 32768;  // below this many threads at 4 states: 2
constexpr int StatesPerThread(int n, int64_t rows) {
  if (n <= 2) return 2;
  if (n > 64) return 8;
  return rows * ((n + 3) / 4) < kSmallRequestThreads ? 2 : 4;
}

// Time steps staged per tile: 8 per state-thread of a channel, at most kMaxTile, so that each
// thread stages at most kUnitsPerThread four-step units of u, delta, z per tile.
inline constexpr int kMaxTile = 32;
inline constexpr int kUnitsPerThread = 2;
constexpr int TileLength(int state_threads) {
  return state_threads * 8 < kMaxTile ? state_threads * 8 : kMaxTile;
}

// Elements of each of variable B and C that one thread prefetches into registers per tile; a tile
// holding more (large N with few rows per block) stages the rest with loads that wait.
inline constexpr int kBcPerThread = 4;

// Threads per block are rows_per_block * state_threads: aim at kTargetThreads (or more, so that
// the B and C tile fits the prefetch), never above kMaxThreads; rows per block is a power of two in
// [kMinRows, kMaxRows].
inline constexpr int kTargetThreads = 128;
// The kFast kernel that copies B and C with cp.async (16-bit inputs, two states per thread) aims
// at this many instead: nothing there waits on a B and C prefetch, and smaller blocks put fewer
// warps on the busiest multiprocessor.
inline constexpr int kAsyncBcTargetThreads = 64;
inline constexpr int kMaxThreads = 256;
inline constexpr int kMinRows = 8;
inline constexpr int kMaxRows = 128;

// Register cap per thread. The recurrence state, the prefetched raw tile and the staging addresses
// need about 160 registers; a cap of 128 (two 256-thread blocks per multiprocessor) spilled them
// and cost 10 to 30% on an H100, while 168 still fits three 128-thread blocks per multiprocessor,
// which is all a (8, 1536, 16, L) batch makes anyway.
inline constexpr int kMaxRegisters = 168;

// Halve rows per block (down to kMinRows) while a launch makes fewer than this many blocks per
// multiprocessor, so that small batches still fill the GPU; rows whose threads prefetch the whole
// B and C tile are never halved into rows whose threads do not.
inline constexpr int kMinBlocksPerSm = 2;

}  // namespace scanserve::cuda::selective_tuning

#endif  // SCANSERVE_KERNELS_CUDA_SELECTIVE_SCAN_TUNING_H_
