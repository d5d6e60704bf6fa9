// Dispatch layer of the row-scan kernels: turns row groups into per-group descriptors the kernels
// read, choosing each group's unit size and tiling from its own row length and row count alone
// (a group is one request's tensor). Plain C++ shared by the host halves of the .cu files; pure
// functions, thread-safe.
#ifndef SCANSERVE_KERNELS_CUDA_ROW_SCAN_PLAN_H_
#define SCANSERVE_KERNELS_CUDA_ROW_SCAN_PLAN_H_

#include <cstddef>
#include <cstdint>
#include <span>

#include "cuda/scan_kernels.h"
#include "cuda/scan_tuning.h"

namespace scanserve::cuda::plan {

using Tuning = tuning::RowScan;

// The backend's staging leaves rows of one warp-wide segment of the kernels packed where a scan
// runs right to left.
static_assert(kRowScanSegment == 32 * Tuning::kItemsPerThread);

// What the kernels read about one group. Tensor slots are op-specific (see each .cu file).
struct alignas(16) GroupDesc {
  int64_t rows;
  int64_t dim;
  int64_t length;
  int64_t batch_stride;
  int64_t row_stride;
  int64_t step_stride;
  int64_t tiles_per_row;
  int64_t block_begin;  // first (virtual) block of the group
  int64_t slot_begin;   // first look-back slot (rows with several tiles only)
  int32_t unit_threads;
  int32_t units_per_block;
  int32_t walk;    // 1: the row's tiles are walked by one block in order (no look-back)
  int32_t padded;  // RowGeometry::padded
  const void* in[6];
  void* out[5];
  const float* h0;
  float* row_out;  // per-row float32 output (final state, dh0)
};
static_assert(sizeof(GroupDesc) % 16 == 0);

struct GroupPlan {
  int32_t unit_threads = 1;
  int32_t units_per_block = Tuning::kBlockThreads;
  int64_t tiles_per_row = 0;
  bool walk = false;
  int64_t blocks = 0;
  int64_t slots = 0;
  // One tile of a unit narrower than a warp and a last tile of at most `short_tail` steps: the
  // single-tile kernel variant runs such rows too. On an H100, 129-step rows (a unit of 8 and a
  // tail) took 0.0146 ms there and 0.0153 as one tile of a unit of 16 (as a two-tile walk, at two
  // blocks per SM, they had measured 9% slower than that on unaligned rows). 513-step rows (a
  // warp and a tail) walk: 0.0368 ms in the single-tile kernel, 0.0352 walked.
  bool tile_and_tail = false;
};

// The smallest power-of-two thread group (up to a block) whose registers hold the row, the
// number of such tiles the row needs, and whether one block walks them or they chain through the
// look-back: a function of the group's (one request's) row length and row count alone, and of
// `short_tail`, the most steps the op's kernel runs as a last tile on one thread (linear_scan
// forward: kernels' kShortTail; others 0). A row a few steps longer than a unit's tile then takes
// the half-size unit and such a tail (513 steps: 32 threads and one step, not 64 threads; 129
// steps: 8 threads and one step).
inline GroupPlan PlanGroup(const RowGeometry& g, int short_tail = 0) {
  GroupPlan p;
  if (g.rows <= 0 || g.length <= 0) return p;
  const auto unit_for = [](int64_t length) {
    const int64_t per_thread = (length + Tuning::kItemsPerThread - 1) / Tuning::kItemsPerThread;
    int32_t unit = 1;
    while (unit < per_thread && unit < Tuning::kBlockThreads) unit <<= 1;
    return unit;
  };
  int32_t unit = unit_for(g.length);
  if (short_tail > 0 && g.length > short_tail && unit < Tuning::kBlockThreads) {
    const int32_t shorter = unit_for(g.length - short_tail);
    if (shorter < unit) {
      unit = shorter;
      p.tile_and_tail = unit < 32;
    }
  }
  p.unit_threads = unit;
  p.units_per_block = Tuning::kBlockThreads / unit;
  const int64_t tile = int64_t{unit} * Tuning::kItemsPerThread;
  p.tiles_per_row = (g.length + tile - 1) / tile;
  p.walk = p.tiles_per_row > 1 &&
           (p.tiles_per_row <= Tuning::kWalkMaxTiles || g.rows >= Tuning::kWalkAnyLengthRows);
  const int64_t units = p.walk ? g.rows : g.rows * p.tiles_per_row;
  p.blocks = (units + p.units_per_block - 1) / p.units_per_block;
  p.slots = p.tiles_per_row > 1 && !p.walk ? units : 0;
  return p;
}

struct BatchPlan {
  int64_t groups = 0;  // non-empty groups, each with one descriptor
  int64_t blocks = 0;
  int64_t slots = 0;
  bool single_tile = true;  // every planned row fits one tile (and maybe a short tail)
  bool tail = false;        // some planned row is one tile and a short tail
  bool padded = false;      // some planned group's rows are padded (RowGeometry::padded)
};

// Plans the non-empty groups for which `include(rows)` holds, in order; `fill(desc, rows)` sets
// the tensor slots of each descriptor when `out` is non-null.
template <typename Rows, typename Fill, typename Include>
BatchPlan PlanBatch(std::span<const Rows> rows, GroupDesc* out, Fill fill, Include include,
                    int short_tail = 0) {
  BatchPlan batch;
  for (const Rows& r : rows) {
    if (!include(r)) continue;
    const GroupPlan p = PlanGroup(r.geometry, short_tail);
    if (p.blocks == 0) continue;
    batch.single_tile = batch.single_tile && (p.tiles_per_row == 1 || p.tile_and_tail);
    batch.tail = batch.tail || p.tile_and_tail;
    batch.padded = batch.padded || r.geometry.padded;
    if (out != nullptr) {
      GroupDesc& d = out[batch.groups];
      d = GroupDesc{};
      d.rows = r.geometry.rows;
      d.dim = r.geometry.dim;
      d.length = r.geometry.length;
      d.batch_stride = r.geometry.batch_stride;
      d.row_stride = r.geometry.row_stride;
      d.step_stride = r.geometry.step_stride;
      d.tiles_per_row = p.tiles_per_row;
      d.block_begin = batch.blocks;
      d.slot_begin = batch.slots;
      d.unit_threads = p.unit_threads;
      d.units_per_block = p.units_per_block;
      d.walk = p.walk ? 1 : 0;
      d.padded = r.geometry.padded ? 1 : 0;
      fill(d, r);
    }
    ++batch.groups;
    batch.blocks += p.blocks;
    batch.slots += p.slots;
  }
  return batch;
}

// Whether the group's rows chain their tiles through the look-back (rows longer than a walk). Such
// groups run in a kernel variant of their own, so that the look-back's registers never weigh on
// the code of the other rows; a function of the group's own shape, like everything in the plan.
inline bool NeedsLookback(const RowGeometry& g, int short_tail = 0) {
  const GroupPlan p = PlanGroup(g, short_tail);
  return p.tiles_per_row > 1 && !p.walk;
}

constexpr size_t AlignUp(size_t v, size_t a) { return (v + a - 1) / a * a; }

// Temp storage of the look-back: a block ticket counter, then one 16-byte word per slot (a tile's
// value and its status written together, so that one load both sees the status and reads the
// value). All of it is zeroed before each launch.
struct LookbackLayout {
  size_t words_offset = 256;
  size_t zero_bytes = 0;
  size_t total_bytes = 0;
};

inline LookbackLayout LookbackLayoutFor(int64_t slots) {
  LookbackLayout l;
  if (slots <= 0) return l;
  l.total_bytes = l.words_offset + AlignUp(static_cast<size_t>(slots) * 16, 256);
  l.zero_bytes = l.total_bytes;
  return l;
}

// A batch split into the look-back groups (part 0) and the rest (part 1): their descriptors follow
// each other, each part runs its own kernel variant, and part 0 has the look-back temp storage.
struct SplitPlan {
  BatchPlan part[2];
  size_t temp_bytes = 0;
  int64_t groups() const { return part[0].groups + part[1].groups; }
};

template <typename Rows, typename Fill>
SplitPlan PlanSplit(std::span<const Rows> rows, GroupDesc* out, Fill fill, int short_tail = 0) {
  SplitPlan s;
  s.part[0] = PlanBatch(
      rows, out, fill, [&](const Rows& r) { return NeedsLookback(r.geometry, short_tail); },
      short_tail);
  s.part[1] = PlanBatch(
      rows, out == nullptr ? nullptr : out + s.part[0].groups, fill,
      [&](const Rows& r) { return !NeedsLookback(r.geometry, short_tail); }, short_tail);
  s.temp_bytes = LookbackLayoutFor(s.part[0].slots).total_bytes;
  return s;
}

}  // namespace scanserve::cuda::plan

#endif  // SCANSERVE_KERNELS_CUDA_ROW_SCAN_PLAN_H_
