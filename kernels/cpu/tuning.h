// The CPU kernels' tuning constants in one table. None of them changes a result: every row is
// computed by the same sequence of float32 operations whatever its tiling, so these trade only
// speed (and scratch memory) and may be changed freely.
#ifndef SCANSERVE_KERNELS_CPU_TUNING_H_
#define SCANSERVE_KERNELS_CPU_TUNING_H_

#include <cstdint>

namespace scanserve::cpu {

struct Tuning {
  // BLD: channels per tile, processed as one contiguous vector loop per time step.
  static constexpr int64_t kLaneTile = 64;
  // BDL: rows whose recurrences are interleaved so their latency chains overlap.
  static constexpr int kRowGroup = 8;
  // BDL: a tile holds whole row groups and at least this many elements, so tiny rows still make
  // tasks worth a trip through the pool.
  static constexpr int64_t kTaskElements = int64_t{1} << 15;
  // linear_scan_backward without states: steps between the checkpoints of the recomputed
  // forward pass (scratch is about length / kBackwardChunk + kBackwardChunk states per lane).
  static constexpr int64_t kBackwardChunk = 256;
  // selective_scan: channels of one group per tile; state vectors are padded to a multiple of
  // kStateVector so the loop over N has no remainder.
  static constexpr int64_t kSelectiveChannels = 8;
  static constexpr int64_t kStateVector = 8;
  // selective_scan: time steps of variable B/C converted per chunk ~ this many floats / padded N.
  static constexpr int64_t kSelectiveChunkFloats = 8192;
  static constexpr int64_t kSelectiveMinChunk = 8;
  static constexpr int64_t kSelectiveMaxChunk = 64;
};

}  // namespace scanserve::cpu

#endif  // SCANSERVE_KERNELS_CPU_TUNING_H_
