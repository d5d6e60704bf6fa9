// The CPU kernels: each computes one tile (tiles.h) of one problem of a batch whose options and
// pointers the backend has already checked. Tiles of one problem write disjoint outputs, so tiles
// run concurrently on the pool. Scratch memory is per thread and reused across calls.
#ifndef SCANSERVE_KERNELS_CPU_KERNELS_H_
#define SCANSERVE_KERNELS_CPU_KERNELS_H_

#include <vector>

#include "cpu/tiles.h"
#include "scanserve/ops.h"

namespace scanserve::cpu {

void LinearScanTile(const LinearScanOptions& options, const LinearScanProblem& problem,
                    const Tile& tile);
void LinearScanBackwardTile(const LinearScanBackwardOptions& options,
                            const LinearScanBackwardProblem& problem, const Tile& tile);
void AssociativeScanTile(const AssociativeScanOptions& options,
                         const AssociativeScanProblem& problem, const Tile& tile);

// selective_scan tiles are channel blocks that never straddle a group of variable B/C.
void AppendSelectiveTiles(int64_t problem, const SelectiveScanOptions& options, const SeqShape& s,
                          std::vector<Tile>& tiles);
void SelectiveScanTile(const SelectiveScanOptions& options, const SelectiveScanProblem& problem,
                       const Tile& tile);

// A per-thread float buffer of at least `count` elements, valid until the thread's next call.
float* ThreadScratch(size_t count);

}  // namespace scanserve::cpu

#endif  // SCANSERVE_KERNELS_CPU_KERNELS_H_
