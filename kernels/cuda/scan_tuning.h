// Tuning constants of the CUDA row-scan kernels (linear_scan, linear_scan_backward and
// associative_scan share one family). Plain C++: read by the host-side dispatch and by device code.
//
// Batch invariance rests on these numbers: a row's tile size and whether it walks are functions of
// its length and its request's row count alone, so changing them changes results bit-wise (never
// their accuracy) and must be done for all rows at once, never per batch.
#ifndef SCANSERVE_KERNELS_CUDA_SCAN_TUNING_H_
#define SCANSERVE_KERNELS_CUDA_SCAN_TUNING_H_

#include <cstdint>

namespace scanserve::cuda::tuning {

struct RowScan {
  // Threads per block; a block runs one tile of a long row or several short rows side by side.
  static constexpr int kBlockThreads = 256;
  // Consecutive steps each thread holds in registers: 4 (16-bit: 2, 64-bit: 8) 16-byte vectors.
  static constexpr int kItemsPerThread = 16;
  // Steps of one tile. Rows up to this length are scanned by one unit (a power-of-two group of
  // threads just large enough for the row); longer rows are cut into tiles of this size that run
  // on different blocks and chain through a look-back.
  static constexpr int kTileItems = kBlockThreads * kItemsPerThread;
  // Rows of up to this many tiles are scanned by one block that walks its tiles in order,
  // carrying the state in registers: no look-back, no temp storage, and no block waits on another.
  // Longer rows spread over many blocks instead, so that a single long request still fills the
  // GPU; at this size one row alone takes one SM for tens of microseconds at most.
  static constexpr int kWalkMaxTiles = 16;
  // Longer rows are walked too when their request has at least this many of them: one block per
  // row then already fills the GPU (about 264 blocks are resident on an H100), and a walked tile
  // runs at the copy floor where a look-back tile, which pays its block's start and a round trip
  // to its predecessors, runs at about half of it. The row count is the request's own (a request
  // is never split), so this keeps batch invariance.
  static constexpr int64_t kWalkAnyLengthRows = 256;
  // Tiles a look-back reads before its own: it takes the latest inclusive prefix among them and
  // folds the aggregates after it, one at a time. The fold is a left fold whatever the range, so
  // this changes speed only, never bits. On an H100, (1, 1, 2^24) linear_scan took 0.137 ms at 32
  // (tiles wait for a prefix to come in range), 0.102 at 64, 0.111 at 128 and 0.135 at 256 (the
  // longer folds lie on the path from one prefix to the next); with the staged look-back's L2
  // prefetch, 0.0985 at 64 and 0.1000 at 96.
  static constexpr int kLookbackRange = 64;
  // Occupancy hints for __launch_bounds__: blocks that must fit on one SM at once (register cap
  // 65536 / (kBlockThreads * n)). At three blocks (80 registers) the kernels spill hundreds of
  // bytes; on the H200 that was 5-30% slower on most shapes (faster only for associative scans
  // and look-back rows), so the walk variants and linear_scan's look-back variant take two.
  static constexpr int kMinBlocksPerSm = 2;
  // Forward launches whose rows all fit one tile (no walk, no look-back) run LinearScanKernel's
  // single-tile variant at three blocks per SM (80 registers, about 250 bytes spilled): a
  // (8, 1536, 128) batch's 384 blocks then fit the H100 in one wave instead of 1.45. On the H100
  // it made rows of 127-129 and 511-513 steps 7-19% faster and the 256-request ragged batch 9%;
  // four blocks (64 registers, 600 bytes spilled) were slower than two.
  static constexpr int kMinBlocksPerSmShortRows = 3;
  // Associative scans' look-back rows (tiles of one long row on many blocks) run at three blocks
  // per SM: each block's time is mostly latency (its start, the ticket, its predecessors' words),
  // which a third block hides. On an H200 a (1, 1, 2^24) add scan took 0.129 -> 0.114 ms; the
  // same for linear_scan's look-back kernel (80 registers, 864 bytes spilled) was 15% slower.
  static constexpr int kMinBlocksPerSmAssocLookback = 3;
  // Look-back tiles start in ticket order, about one GPU-full of blocks at a time; each block
  // prefetches into L2 the tile of its row this many tiles ahead (the blocks resident at once on
  // 132 SMs at three blocks each), so the block that takes it a wave later finds it on chip. On an
  // H200 (1, 1, 2^24) add 0.112 -> 0.105 ms; linear_scan's look-back (two blocks per SM, 264
  // tiles ahead) measured 3% slower with it and does not prefetch.
  static constexpr int kAssocLookbackPrefetchTiles = 396;
  static constexpr int kMinBlocksPerSmBackward = 2;
  // linear_scan's look-back rows whose tiles pass through shared memory (linear_scan.cu,
  // LinearScanStagedLookbackKernel): 32 KiB of float32 tile per block. Three, four and five
  // blocks per SM ran a (1, 1, 2^24) row alike on an H100 (0.102 ms); with the L2 prefetch below,
  // five (48 registers) took 0.1003 ms against 0.0985 at four.
  static constexpr int kMinBlocksPerSmStagedLookback = 4;
  // Each block of LinearScanStagedLookbackKernel asks the L2 for the a and x of the tile this many
  // tiles after its own, so that the block which takes that tile later finds them on chip. On an
  // H100, a (1, 1, 2^24) float32 row took 0.1030 ms without it, 0.1011 at 4 tiles ahead, 0.0986
  // from 48 to 198, 0.0998 at 264 and 0.1173 at 528 (as many tiles as blocks are resident).
  static constexpr int kStagedLookbackPrefetchTiles = 128;
  // 16-bit walks whose tiles pass through shared memory (linear_scan.cu,
  // LinearScanStagedWalkKernel): two 16 KiB buffers per block. On an H100, bf16 (8, 1536, 65536)
  // took 1.598 ms at three blocks per SM (80 registers, 20 bytes spilled) and 1.98 at four (64
  // registers, 122 bytes spilled); the register walk at two takes 1.895.
  static constexpr int kMinBlocksPerSmStagedWalk = 3;
  // linear_scan's forward kernel runs a row's last tile of at most this many steps on one thread
  // (rows of 2^k + 1 and the like), and its plan lets a row that many steps past a unit's tile keep
  // that unit; more steps would need registers that the walk's hot loop cannot spare.
  static constexpr int kShortTail = 4;
};

}  // namespace scanserve::cuda::tuning

#endif  // SCANSERVE_KERNELS_CUDA_SCAN_TUNING_H_
