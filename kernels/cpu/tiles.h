// How the CPU backend cuts a batch into tasks for its pool, and how a task addresses its rows.
// A tile depends only on its own problem's shape, never on the rest of the batch.
// Plain value types and pure functions; thread-safe.
#ifndef SCANSERVE_KERNELS_CPU_TILES_H_
#define SCANSERVE_KERNELS_CPU_TILES_H_

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu/tuning.h"
#include "scanserve/types.h"

namespace scanserve::cpu {

// A group of rows of one problem. BDL: rows [first, first + count) of the flattened (batch, dim)
// rows. BLD and selective_scan: channels [first, first + count) of batch entry `batch`.
struct Tile {
  int64_t problem = 0;
  int64_t batch = 0;
  int64_t first = 0;
  int64_t count = 0;
};

// The addressing of a tile's rows ("lanes") in processing order: lane j at processed step k lives
// at element start + k * time_stride + j * lane_stride, and its entry of a (batch, dim) state
// tensor is state_index + j.
struct Lanes {
  int64_t start = 0;
  int64_t time_stride = 0;
  int64_t lane_stride = 0;
  int64_t lanes = 0;
  int64_t length = 0;
  int64_t state_index = 0;
};

inline Lanes MakeLanes(const SeqShape& s, Layout layout, bool reverse, const Tile& tile) {
  Lanes g;
  g.lanes = tile.count;
  g.length = s.length;
  if (layout == Layout::kBDL) {
    g.lane_stride = s.length;
    g.time_stride = reverse ? -1 : 1;
    g.start = tile.first * s.length + (reverse ? s.length - 1 : 0);
    g.state_index = tile.first;
  } else {
    g.lane_stride = 1;
    g.time_stride = reverse ? -s.dim : s.dim;
    g.start = tile.batch * s.length * s.dim + tile.first + (reverse ? (s.length - 1) * s.dim : 0);
    g.state_index = tile.batch * s.dim + tile.first;
  }
  return g;
}

// Appends the tiles of one problem of a row-wise op (linear_scan, its backward, associative_scan).
inline void AppendLaneTiles(int64_t problem, const SeqShape& s, Layout layout,
                            std::vector<Tile>& tiles) {
  if (s.rows() <= 0) return;
  if (layout == Layout::kBDL) {
    const int64_t group = Tuning::kRowGroup;
    const int64_t want = (Tuning::kTaskElements + s.length - 1) / s.length;
    const int64_t rows = std::max(group, (want + group - 1) / group * group);
    for (int64_t r = 0; r < s.rows(); r += rows) {
      tiles.push_back({problem, 0, r, std::min(rows, s.rows() - r)});
    }
  } else {
    for (int64_t b = 0; b < s.batch; ++b) {
      for (int64_t d = 0; d < s.dim; d += Tuning::kLaneTile) {
        tiles.push_back({problem, b, d, std::min(Tuning::kLaneTile, s.dim - d)});
      }
    }
  }
}

// Runs body(lanes_of_group, kR) over a tile: BDL in groups of Tuning::kRowGroup rows (the rest one
// by one), BLD as one contiguous group. `run` is a callable template taking (Lanes, IntTag).
template <int kValue>
struct IntTag {
  static constexpr int value = kValue;
};

template <typename Run>
void ForEachLaneGroup(const Lanes& g, Layout layout, Run&& run) {
  if (layout == Layout::kBLD) {
    run(g, IntTag<0>{});
    return;
  }
  Lanes sub = g;
  int64_t j = 0;
  for (; j + Tuning::kRowGroup <= g.lanes; j += Tuning::kRowGroup) {
    sub.start = g.start + j * g.lane_stride;
    sub.state_index = g.state_index + j;
    sub.lanes = Tuning::kRowGroup;
    run(sub, IntTag<Tuning::kRowGroup>{});
  }
  for (; j < g.lanes; ++j) {
    sub.start = g.start + j * g.lane_stride;
    sub.state_index = g.state_index + j;
    sub.lanes = 1;
    run(sub, IntTag<1>{});
  }
}

}  // namespace scanserve::cpu

#endif  // SCANSERVE_KERNELS_CPU_TILES_H_
