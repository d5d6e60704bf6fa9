// linear_scan (ops.md section 1) and linear_scan_backward (section 2) on CUDA: kernels, and the
// host half of the scan_kernels.h API for them.
//
// Both are first-order recurrences h -> a * h + u, scanned as pairs (A, B) composed
// (A1, B1) then (A2, B2) = (A1 * A2, A2 * B1 + B2). The backward pass runs against the forward's
// processing order with the pair (a[k], a[k] * g[k]): its state entering step k is
// u[k+1] = a[k+1] * dh[k+1], so dh[k] = g[k] + u[k+1] and dh0 = u[0].
#include <cuda_runtime.h>

#include <atomic>
#include <cstring>

#include "cuda/row_scan_plan.h"
#include "cuda/scan_device.cuh"
#include "cuda/scan_kernels.h"

namespace scanserve::cuda {
namespace {

using device::kIpt;
using device::kThreads;
using device::kWarps;
using device::LookbackTemp;
using device::Maybe;
using device::Pair;
using device::RowView;
using device::ScanShared;
using device::StageElems;
using device::Unit;
using plan::GroupDesc;

struct LinearOp {
  __device__ static Pair Combine(Pair l, Pair r) { return {l.a * r.a, fmaf(r.a, l.b, r.b)}; }
};

struct LinearFlags {
  int ngroups;
  bool ticket;
  bool has_b;
  bool has_c;
  bool has_h0;
  bool reverse;
  bool final_state;
  // Walks prefetch their next tile into L2 (WalksPrefetch).
  bool prefetch;
};

// The state entering a thread's first item: the row's h0 (0 without one) carried through
// `prefix`, the composition of every step before it.
__device__ __forceinline__ float EnteringState(const Maybe<Pair>& prefix, bool has_h0, float h0) {
  if (!prefix.has) return h0;
  return has_h0 ? fmaf(prefix.v.a, h0, prefix.v.b) : prefix.v.b;
}

// The composition of a thread's first `count` items, folded left to right (the first item's pair
// when count < 2; a thread without items passes its pair on as absent).
__device__ __forceinline__ Pair FoldItems(const float (&av)[kIpt], const float (&hv)[kIpt],
                                          int count) {
  Pair mine{av[0], hv[0]};
#pragma unroll
  for (int i = 1; i < kIpt; ++i) {
    if (i < count) mine = {mine.a * av[i], fmaf(av[i], mine.b, hv[i])};
  }
  return mine;
}

// Runs the recurrence from `h` over a thread's first `count` items, leaving each state in `hv`
// (which held the inputs x, or x * b); returns the state after the last.
template <int kN>
__device__ __forceinline__ float RunItems(float h, const float (&av)[kN], float (&hv)[kN],
                                          int count) {
#pragma unroll
  for (int i = 0; i < kN; ++i) {
    if (i < count) {
      h = fmaf(av[i], h, hv[i]);
      hv[i] = h;
    }
  }
  return h;
}

// One tile of linear_scan: loads, scans and stores the unit's items.
template <typename T, bool kLookback, bool kWholeSplit = !kLookback>
__device__ __forceinline__ void ForwardTile(const GroupDesc& g, const Unit& u, const LinearFlags& f,
                                            const RowView& view, float* stage, ScanShared<Pair>& sh,
                                            const LookbackTemp& lb, Maybe<Pair>& carry) {
  const int count = u.span.count;
  float av[kIpt];
  float hv[kIpt];
  device::LoadItems2(static_cast<const T*>(g.in[0]) + u.offset,
                     static_cast<const T*>(g.in[1]) + u.offset, view, u.span, stage, av, hv);
  if (f.has_b) {
    float bv[kIpt];
    device::LoadItems(static_cast<const T*>(g.in[2]) + u.offset, view, u.span, stage, bv);
#pragma unroll
    for (int i = 0; i < kIpt; ++i) hv[i] *= bv[i];
  }

  // Threads holding all kIpt items (all but a row's last) fold and re-run without the item
  // guards: the same operations, and no predicate per item. Only where ForwardTile runs inside
  // LinearScanKernel's walk loop: in the two variants that call it once (look-back and single-tile)
  // this split made rows' final states wrong on the H100 (small integers stored instead of h;
  // tests/cuda LinearScanLongRows, LinearScanMatchesReference and others), although the PTX it
  // compiles to is correct. Those variants keep the guarded loops.
  const bool whole = kWholeSplit && count == kIpt;
  Pair mine{av[0], hv[0]};
  if (whole) {
#pragma unroll
    for (int i = 1; i < kIpt; ++i) mine = {mine.a * av[i], fmaf(av[i], mine.b, hv[i])};
  } else {
    mine = FoldItems(av, hv, count);
  }
  const Maybe<Pair> prefix =
      device::ThreadPrefix<kLookback, LinearOp>(mine, count > 0, u, sh, lb, carry);

  const float h0 = f.has_h0 && u.valid ? g.h0[u.row] : 0.0f;
  float h = EnteringState(prefix, f.has_h0, h0);
  if (whole) {
#pragma unroll
    for (int i = 0; i < kIpt; ++i) {
      h = fmaf(av[i], h, hv[i]);
      hv[i] = h;
    }
  } else {
    h = RunItems(h, av, hv, count);
  }
  if (f.final_state && count > 0 && u.span.s + count == g.length) g.row_out[u.row] = h;
  if (g.out[1] != nullptr) {
    device::StoreItems(static_cast<float*>(g.out[1]) + u.offset, view, u.span, stage, hv);
  }
  if (g.out[0] != nullptr) {
    if (f.has_c) {
      float cv[kIpt];
      device::LoadItems(static_cast<const T*>(g.in[3]) + u.offset, view, u.span, stage, cv);
#pragma unroll
      for (int i = 0; i < kIpt; ++i) hv[i] *= cv[i];
    }
    device::StoreItems(static_cast<T*>(g.out[0]) + u.offset, view, u.span, stage, hv);
  }
}

constexpr int kShortTail = device::Tuning::kShortTail;

// One tensor's 16 bytes at element `at` (16-byte aligned), as floats.
template <typename T>
__device__ __forceinline__ void LoadVector(const void* base, int64_t at,
                                           float (&out)[16 / sizeof(T)]) {
  const uint4 raw = __ldg(reinterpret_cast<const uint4*>(static_cast<const T*>(base) + at));
  T v[16 / sizeof(T)];
  memcpy(v, &raw, 16);
#pragma unroll
  for (int i = 0; i < 16 / static_cast<int>(sizeof(T)); ++i) out[i] = device::Elem<T>::Load(v[i]);
}

// ForwardTail for a padded row (RowGeometry::padded, left to right): its tail starts at a tile's
// end, 16 bytes aligned, and the row's padding runs on to the next 16-byte boundary, so each
// tensor's tail moves as one vector, padding included (written as zeros). The outputs then reach
// the L2 as whole 16-byte pieces instead of a lone element beside padding nobody writes: on an
// H100, staged (8, 1536, 129) float32 went from 0.0146 to 0.0139 ms. The arithmetic is
// ForwardTail's.
template <typename T>
__device__ __forceinline__ void ForwardTailVector(const GroupDesc& g, const Unit& u,
                                                  const LinearFlags& f, const Maybe<Pair>& carry,
                                                  int64_t t0, int n) {
  constexpr int kVec = 16 / sizeof(T);
  static_assert(kVec >= kShortTail, "a short tail fits one vector");
  const int64_t at = u.offset + t0;
  float av[kVec];
  float hv[kVec];
  LoadVector<T>(g.in[0], at, av);
  LoadVector<T>(g.in[1], at, hv);
  if (f.has_b) {
    float bv[kVec];
    LoadVector<T>(g.in[2], at, bv);
#pragma unroll
    for (int i = 0; i < kVec; ++i) hv[i] *= bv[i];
  }
  const float h =
      RunItems(EnteringState(carry, f.has_h0, f.has_h0 ? g.h0[u.row] : 0.0f), av, hv, n);
  if (f.final_state) g.row_out[u.row] = h;
  float y[kVec];
#pragma unroll
  for (int i = 0; i < kVec; ++i) y[i] = i < n ? hv[i] : 0.0f;
  if (g.out[1] != nullptr) {
    *reinterpret_cast<float4*>(static_cast<float*>(g.out[1]) + at) =
        make_float4(y[0], y[1], y[2], y[3]);
  }
  if (g.out[0] != nullptr) {
    if (f.has_c) {
      float cv[kVec];
      LoadVector<T>(g.in[3], at, cv);
#pragma unroll
      for (int i = 0; i < kVec; ++i) y[i] = i < n ? y[i] * cv[i] : 0.0f;
    }
    T v[kVec];
#pragma unroll
    for (int i = 0; i < kVec; ++i) v[i] = device::Elem<T>::Store(y[i]);
    uint4 raw;
    memcpy(&raw, v, 16);
    *reinterpret_cast<uint4*>(static_cast<T*>(g.out[0]) + at) = raw;
  }
}

// A walked row's last tile of at most kShortTail steps (scan_tuning.h), run on from the carry by
// the unit's first thread alone. ForwardTile would give that thread all of the tile's items and the
// others none, so this is the same arithmetic in the same order, without a tile's loads through
// staging, its scans and its barriers for a step or two.
template <typename T>
__device__ __forceinline__ void ForwardTail(const GroupDesc& g, const Unit& u, const LinearFlags& f,
                                            const RowView& view, const Maybe<Pair>& carry) {
  if (!u.valid || (threadIdx.x & (g.unit_threads - 1)) != 0) return;
  const int64_t t0 = u.span.s;
  const int n = static_cast<int>(g.length - t0);
  if constexpr (sizeof(T) <= 4) {
    if (view.padded && !view.reverse) {
      ForwardTailVector<T>(g, u, f, carry, t0, n);
      return;
    }
  }
  const T* a = static_cast<const T*>(g.in[0]) + u.offset;
  const T* x = static_cast<const T*>(g.in[1]) + u.offset;
  float av[kShortTail];
  float hv[kShortTail];
#pragma unroll
  for (int i = 0; i < kShortTail; ++i) {
    if (i < n) {
      const int64_t at = view.Phys(t0 + i);
      av[i] = device::Elem<T>::Load(device::LoadReadOnly(a + at));
      hv[i] = device::Elem<T>::Load(device::LoadReadOnly(x + at));
      if (f.has_b) {
        hv[i] *= device::Elem<T>::Load(
            device::LoadReadOnly(static_cast<const T*>(g.in[2]) + u.offset + at));
      }
    }
  }
  const float h =
      RunItems(EnteringState(carry, f.has_h0, f.has_h0 ? g.h0[u.row] : 0.0f), av, hv, n);
  if (f.final_state) g.row_out[u.row] = h;
#pragma unroll
  for (int i = 0; i < kShortTail; ++i) {
    if (i >= n) continue;
    const int64_t at = view.Phys(t0 + i);
    if (g.out[1] != nullptr) static_cast<float*>(g.out[1])[u.offset + at] = hv[i];
    if (g.out[0] != nullptr) {
      float y = hv[i];
      if (f.has_c) {
        y *= device::Elem<T>::Load(
            device::LoadReadOnly(static_cast<const T*>(g.in[3]) + u.offset + at));
      }
      static_cast<T*>(g.out[0])[u.offset + at] = device::Elem<T>::Store(y);
    }
  }
}

// The unit's next tile of every input into L2 (device::PrefetchNextTile).
template <typename T>
__device__ __forceinline__ void PrefetchInputs(const GroupDesc& g, const Unit& u,
                                               const LinearFlags& f, const RowView& view) {
  for (int k = 0; k < 4; ++k) {
    if (k == 2 && !f.has_b) continue;
    if (k == 3 && !f.has_c) continue;
    device::PrefetchNextTile(g, u, view, static_cast<const T*>(g.in[k]) + u.offset);
  }
}

// Descriptor slots. Forward: in = {a, x, b, c}, out = {y, states}, row_out = final state.
// Backward: in = {a, x, dy, b, c, states}, out = {da, dx, db, dc}, row_out = dh0.
// kSingleTile: a launch whose rows all fit one tile. Each unit runs its one tile with the guarded
// loops (see ForwardTile) at a register budget that lets three blocks share an SM; the arithmetic
// is the same, so a row's bits do not depend on which variant runs it.
// kTail (single-tile launches only): some rows are one tile and a short tail (row_scan_plan.h);
// a variant of its own, because the tail's code cost the other single-tile rows up to 4% (H200).
template <typename T, bool kLookback, bool kSingleTile = false, bool kPadded = false,
          bool kTail = false>
__global__ void __launch_bounds__(kThreads, kSingleTile ? device::Tuning::kMinBlocksPerSmShortRows
                                                        : device::Tuning::kMinBlocksPerSm)
    LinearScanKernel(const GroupDesc* __restrict__ groups, LinearFlags f, LookbackTemp lb) {
  __shared__ ScanShared<Pair> sh;
  __shared__ alignas(16) float stage_all[kWarps][StageElems<float>()];
  device::LoadGroup(groups, f.ngroups, f.ticket, lb, sh);
  const GroupDesc& g = sh.desc;
  const RowView view{g.length, g.step_stride, f.reverse, kPadded && g.padded != 0};
  float* stage = stage_all[threadIdx.x >> 5];
  Maybe<Pair> carry{Pair{}, false};
  Unit u = device::MakeUnit(g, sh.vblock);
  if constexpr (kSingleTile && kTail) {
    // A tail's lines are asked for first, so that its one thread finds them on chip.
    const bool tail = g.tiles_per_row > 1;
    if (tail) PrefetchInputs<T>(g, u, f, view);
    ForwardTile<T, false, false>(g, u, f, view, stage, sh, lb, carry);
    if (tail) {
      device::NextTile(g, u);
      ForwardTail<T>(g, u, f, view, carry);
    }
  } else if constexpr (kSingleTile) {
    ForwardTile<T, false, false>(g, u, f, view, stage, sh, lb, carry);
  } else {
    const int64_t tiles = !kLookback && g.walk ? g.tiles_per_row : 1;
    const int64_t tile_items = int64_t{g.unit_threads} * kIpt;
    const bool short_tail = tiles > 1 && g.length - (tiles - 1) * tile_items <= kShortTail;
    // The short last tile runs after the loop, which keeps the loop itself as it was: a check in
    // it cost other walked rows up to 1.4% (H200, bf16).
    const int64_t steps = short_tail ? tiles - 1 : tiles;
    const int64_t prefetch_steps = f.prefetch ? steps - 1 : 0;
    // Only a row's last tile can hold a partial segment, so for 16-bit types the padded variant
    // runs the tiles before it with a view that folds the padded path away (the loop of the plain
    // variant) and that tile after the loop. H100, staged bf16 (8,1536,65535) and 65537 2.09 ->
    // 2.00 and 2.17 -> 2.08 ms; float32 rows measured 0.5-2.5% slower so, and keep the padded loop.
    constexpr bool kPeel = kPadded && sizeof(T) == 2;
    const RowView inner{g.length, g.step_stride, f.reverse, kPeel ? false : view.padded};
    const int64_t loop_steps = kPeel ? steps - 1 : steps;
    for (int64_t step = 0; step < loop_steps; ++step) {
      if (step > 0) device::NextTile(g, u);
      if (step < prefetch_steps) PrefetchInputs<T>(g, u, f, inner);
      ForwardTile<T, kLookback>(g, u, f, inner, stage, sh, lb, carry);
    }
    if constexpr (kPeel) {
      if (steps > 1) device::NextTile(g, u);
      ForwardTile<T, kLookback>(g, u, f, view, stage, sh, lb, carry);
    }
    if (short_tail) {
      device::NextTile(g, u);
      ForwardTail<T>(g, u, f, view, carry);
    }
  }
}

// ---- look-back rows through shared memory -------------------------------------------------------
//
// A look-back row runs one tile per block. LinearScanKernel<T, true> holds the tile's items in
// registers through the look-back (113 registers, two blocks per SM). This variant lands the tile
// in shared memory with asynchronous 16-byte copies, folds, looks back, then reads its items
// again (55 registers, four blocks per SM). On an H100 it took a (1, 1, 2^24) row from 0.1445
// to 0.1416 ms under the earlier windowed look-back; under the left-fold look-back the limit is
// the wait for a prefix, not occupancy (three to five blocks per SM measured alike), and the
// register kernel was not measured again on such rows. Each thread holds the same items and
// performs the same operations in the same order as ForwardTile<T, true>, so the bits do not depend
// on which variant runs a row. It runs launches whose look-back rows are all contiguous, left to
// right, 16-byte aligned, and read only a and x (StagedLookbackFits). Each block also asks the L2
// for a later tile of its row (Tuning::kStagedLookbackPrefetchTiles).

// Steps of a tile, and its 16-byte chunks of T, in the kernels that stage tiles in shared memory.
constexpr int kTileItems = kThreads * kIpt;
template <typename T>
constexpr int kStagedTileChunks = static_cast<int>(sizeof(T)) * kTileItems / 16;

// 16-byte chunks of one thread's items, and where chunk c of a tile sits in shared memory: the XOR
// spreads the chunks that the lanes of an 8-lane phase read at once (lane t reads chunk
// t * kChunksPerThread + j) over distinct banks, and keeps every aligned run of 8 chunks (what
// the coalesced copies move) a permutation of itself.
template <typename T>
constexpr int kChunksPerThread = static_cast<int>(sizeof(T)) * kIpt / 16;
template <typename T>
__device__ __forceinline__ int StagedChunk(int c) {
  return c ^ ((c >> 3) & (kChunksPerThread<T> - 1));
}

__device__ __forceinline__ void CopyChunkAsync(uint4* dst, const uint4* src) {
  const unsigned to = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(to), "l"(src) : "memory");
}

// Every copy this thread has issued has landed.
__device__ __forceinline__ void AwaitChunks() { asm volatile("cp.async.wait_all;" ::: "memory"); }

// Closes this thread's copies issued since the last call into a group that AwaitChunkGroups counts.
__device__ __forceinline__ void CommitChunks() {
  asm volatile("cp.async.commit_group;" ::: "memory");
}

// All but the latest kPending of this thread's committed groups have landed.
template <int kPending>
__device__ __forceinline__ void AwaitChunkGroups() {
  asm volatile("cp.async.wait_group %0;" ::"n"(kPending) : "memory");
}

// Steps [0, n) of a tile from global `src` (16-byte aligned) into shared `tile`, chunk-swizzled.
template <typename T>
__device__ __forceinline__ void StageTileIn(const T* __restrict__ src, int n, uint4* tile) {
  constexpr int kChunkItems = 16 / sizeof(T);
  const int whole = n / kChunkItems;
  const auto* chunks = reinterpret_cast<const uint4*>(src);
  for (int c = threadIdx.x; c < whole; c += kThreads) {
    CopyChunkAsync(tile + StagedChunk<T>(c), chunks + c);
  }
  const int rest = n - whole * kChunkItems;
  if (static_cast<int>(threadIdx.x) < rest) {
    reinterpret_cast<T*>(tile + StagedChunk<T>(whole))[threadIdx.x] =
        src[whole * kChunkItems + threadIdx.x];
  }
}

// This thread's kIpt items of a staged tile, as floats.
template <typename T>
__device__ __forceinline__ void ReadStagedItems(const uint4* tile, float (&out)[kIpt]) {
  constexpr int kChunkItems = 16 / sizeof(T);
#pragma unroll
  for (int j = 0; j < kChunksPerThread<T>; ++j) {
    const uint4 raw = tile[StagedChunk<T>(threadIdx.x * kChunksPerThread<T> + j)];
    T v[kChunkItems];
    memcpy(v, &raw, 16);
#pragma unroll
    for (int i = 0; i < kChunkItems; ++i) out[j * kChunkItems + i] = device::Elem<T>::Load(v[i]);
  }
}

// Writes this thread's kIpt results, converted to T, over its own chunks of a staged tile.
template <typename T>
__device__ __forceinline__ void WriteStagedItems(uint4* tile, const float (&in)[kIpt]) {
  constexpr int kChunkItems = 16 / sizeof(T);
#pragma unroll
  for (int j = 0; j < kChunksPerThread<T>; ++j) {
    T v[kChunkItems];
#pragma unroll
    for (int i = 0; i < kChunkItems; ++i) v[i] = device::Elem<T>::Store(in[j * kChunkItems + i]);
    uint4 raw;
    memcpy(&raw, v, 16);
    tile[StagedChunk<T>(threadIdx.x * kChunksPerThread<T> + j)] = raw;
  }
}

// Steps [0, n) of a staged tile out to global `dst` (16-byte aligned), coalesced.
template <typename T>
__device__ __forceinline__ void StageTileOut(const uint4* tile, int n, T* __restrict__ dst) {
  constexpr int kChunkItems = 16 / sizeof(T);
  const int whole = n / kChunkItems;
  auto* chunks = reinterpret_cast<uint4*>(dst);
  for (int c = threadIdx.x; c < whole; c += kThreads) chunks[c] = tile[StagedChunk<T>(c)];
  const int rest = n - whole * kChunkItems;
  if (static_cast<int>(threadIdx.x) < rest) {
    dst[whole * kChunkItems + threadIdx.x] =
        reinterpret_cast<const T*>(tile + StagedChunk<T>(whole))[threadIdx.x];
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads, device::Tuning::kMinBlocksPerSmStagedLookback)
    LinearScanStagedLookbackKernel(const GroupDesc* __restrict__ groups, LinearFlags f,
                                   LookbackTemp lb) {
  constexpr int kTileChunks = kStagedTileChunks<T>;
  __shared__ ScanShared<Pair> sh;
  __shared__ uint4 tile_a[kTileChunks];
  __shared__ uint4 tile_x[kTileChunks];
  device::LoadGroup(groups, f.ngroups, f.ticket, lb, sh);
  const GroupDesc& g = sh.desc;
  const Unit u = device::MakeUnit(g, sh.vblock);
  const RowView ahead{g.length, 1, false, false};
  constexpr int kAhead = device::Tuning::kStagedLookbackPrefetchTiles;
  device::PrefetchNextTile(g, u, ahead, static_cast<const T*>(g.in[0]) + u.offset, kAhead);
  device::PrefetchNextTile(g, u, ahead, static_cast<const T*>(g.in[1]) + u.offset, kAhead);
  const int64_t tile_start = u.tile * kTileItems;
  const int n = static_cast<int>(min(int64_t{kTileItems}, g.length - tile_start));
  const int64_t at = u.offset + tile_start;
  StageTileIn(static_cast<const T*>(g.in[0]) + at, n, tile_a);
  StageTileIn(static_cast<const T*>(g.in[1]) + at, n, tile_x);
  AwaitChunks();
  __syncthreads();

  const int count = u.span.count;
  float av[kIpt];
  float hv[kIpt];
  ReadStagedItems<T>(tile_a, av);
  ReadStagedItems<T>(tile_x, hv);
  const Pair mine = FoldItems(av, hv, count);
  Maybe<Pair> carry{Pair{}, false};
  // Its barrier also keeps the reads above before any thread's results land in tile_a below.
  const Maybe<Pair> prefix =
      device::ThreadPrefix<true, LinearOp>(mine, count > 0, u, sh, lb, carry);

  ReadStagedItems<T>(tile_a, av);
  ReadStagedItems<T>(tile_x, hv);
  const float h =
      RunItems(EnteringState(prefix, f.has_h0, f.has_h0 ? g.h0[u.row] : 0.0f), av, hv, count);
  if (f.final_state && count > 0 && u.span.s + count == g.length) g.row_out[u.row] = h;
  WriteStagedItems<T>(tile_a, hv);
  __syncthreads();
  StageTileOut(tile_a, n, static_cast<T*>(g.out[0]) + at);
}

// Walked rows through shared memory: the block scans one tile while the next tile's a and x land
// by asynchronous copies, so that a 16-bit walk keeps its loads in flight at three blocks per SM
// instead of waiting on them at two (bf16 (8, 1536, 65536) on an H100: 1.895 -> 1.598 ms, the
// copy floor). A third buffer, two tiles ahead, measured the same. Each thread holds the same items
// and performs the same operations in the same order as LinearScanKernel's walk (ForwardTile, then
// ForwardTail for a short last tile), so the bits do not depend on which variant runs a row.
// StagedWalkFits says which launches it runs.
template <typename T>
__global__ void __launch_bounds__(kThreads, device::Tuning::kMinBlocksPerSmStagedWalk)
    LinearScanStagedWalkKernel(const GroupDesc* __restrict__ groups, LinearFlags f,
                               LookbackTemp lb) {
  constexpr int kTileChunks = kStagedTileChunks<T>;
  __shared__ ScanShared<Pair> sh;
  // Two buffers, each a tile of a then one of x.
  __shared__ uint4 staged[2][2 * kTileChunks];
  device::LoadGroup(groups, f.ngroups, f.ticket, lb, sh);
  const GroupDesc& g = sh.desc;
  Unit u = device::MakeUnit(g, sh.vblock);
  const int64_t tiles = g.tiles_per_row;
  const bool short_tail = g.length - (tiles - 1) * kTileItems <= kShortTail;
  const int64_t steps = short_tail ? tiles - 1 : tiles;
  const auto* a = static_cast<const T*>(g.in[0]) + u.offset;
  const auto* x = static_cast<const T*>(g.in[1]) + u.offset;
  auto* y = static_cast<T*>(g.out[0]) + u.offset;
  const auto items = [&](int64_t tile) {
    return static_cast<int>(min(int64_t{kTileItems}, g.length - tile * kTileItems));
  };
  const auto stage = [&](int64_t tile) {
    if (tile < steps) {
      uint4* buf = staged[tile & 1];
      StageTileIn(a + tile * kTileItems, items(tile), buf);
      StageTileIn(x + tile * kTileItems, items(tile), buf + kTileChunks);
    }
    CommitChunks();
  };
  stage(0);
  const float h0 = f.has_h0 ? g.h0[u.row] : 0.0f;
  Maybe<Pair> carry{Pair{}, false};
  for (int64_t step = 0; step < steps; ++step) {
    if (step > 0) device::NextTile(g, u);
    AwaitChunkGroups<0>();
    // Past this barrier every copy of this tile has landed and every thread is done with the
    // other buffer (the tile before this one), which the copies issued next fill.
    __syncthreads();
    stage(step + 1);
    uint4* tile_a = staged[step & 1];
    const int count = u.span.count;
    float av[kIpt];
    float hv[kIpt];
    ReadStagedItems<T>(tile_a, av);
    ReadStagedItems<T>(tile_a + kTileChunks, hv);
    const Pair mine = FoldItems(av, hv, count);
    const Maybe<Pair> prefix =
        device::ThreadPrefix<false, LinearOp>(mine, count > 0, u, sh, lb, carry);
    const float h = RunItems(EnteringState(prefix, f.has_h0, h0), av, hv, count);
    if (f.final_state && count > 0 && u.span.s + count == g.length) g.row_out[u.row] = h;
    // The prefix's barrier keeps every read of tile_a above before these writes.
    WriteStagedItems<T>(tile_a, hv);
    __syncthreads();
    StageTileOut(tile_a, items(step), y + step * kTileItems);
  }
  if (short_tail) {
    device::NextTile(g, u);
    ForwardTail<T>(g, u, f, RowView{g.length, 1, false, false}, carry);
  }
}

// One tile of linear_scan_backward.
template <typename T, bool kLookback>
__device__ __forceinline__ void BackwardTile(const GroupDesc& g, const Unit& u,
                                             const LinearFlags& f, const RowView& view,
                                             float* stage, ScanShared<Pair>& sh,
                                             const LookbackTemp& lb, Maybe<Pair>& carry) {
  const int count = u.span.count;
  float av[kIpt];
  float dh[kIpt];  // g = dy * c until the recurrence turns it into dh
  device::LoadItems2(static_cast<const T*>(g.in[0]) + u.offset,
                     static_cast<const T*>(g.in[2]) + u.offset, view, u.span, stage, av, dh);
  if (f.has_c) {
    float cv[kIpt];
    device::LoadItems(static_cast<const T*>(g.in[4]) + u.offset, view, u.span, stage, cv);
#pragma unroll
    for (int i = 0; i < kIpt; ++i) dh[i] *= cv[i];
  }

  Pair mine{av[0], av[0] * dh[0]};
#pragma unroll
  for (int i = 1; i < kIpt; ++i) {
    if (i < count) mine = {mine.a * av[i], fmaf(av[i], mine.b, av[i] * dh[i])};
  }
  const Maybe<Pair> prefix =
      device::ThreadPrefix<kLookback, LinearOp>(mine, count > 0, u, sh, lb, carry);

  float next = prefix.has ? prefix.v.b : 0.0f;
#pragma unroll
  for (int i = 0; i < kIpt; ++i) {
    if (i < count) {
      dh[i] += next;
      next = av[i] * dh[i];
    }
  }
  if (f.has_h0 && count > 0 && u.span.s + count == g.length) g.row_out[u.row] = next;

  // States h at these steps, and at the step after the thread's last (forward's previous step).
  const float* states = static_cast<const float*>(g.in[5]) + u.offset;
  float hv[kIpt];
  device::LoadItems(states, view, u.span, stage, hv);
  float h_after = 0.0f;
  if (count > 0) {
    const int64_t next = u.span.s + count;
    if (next < g.length) {
      h_after = __ldg(states + view.Phys(next));
    } else if (f.has_h0) {
      h_after = g.h0[u.row];
    }
  }
  float out[kIpt];
#pragma unroll
  for (int i = 0; i < kIpt; ++i) {
    const float h_prev = (i + 1 < kIpt && i + 1 < count) ? hv[i + 1 < kIpt ? i + 1 : i] : h_after;
    out[i] = dh[i] * h_prev;
  }
  device::StoreItems(static_cast<T*>(g.out[0]) + u.offset, view, u.span, stage, out);

  if (f.has_b) {
    device::LoadItems(static_cast<const T*>(g.in[3]) + u.offset, view, u.span, stage, out);
#pragma unroll
    for (int i = 0; i < kIpt; ++i) out[i] *= dh[i];
    device::StoreItems(static_cast<T*>(g.out[1]) + u.offset, view, u.span, stage, out);
    device::LoadItems(static_cast<const T*>(g.in[1]) + u.offset, view, u.span, stage, out);
#pragma unroll
    for (int i = 0; i < kIpt; ++i) out[i] *= dh[i];
    device::StoreItems(static_cast<T*>(g.out[2]) + u.offset, view, u.span, stage, out);
  } else {
    device::StoreItems(static_cast<T*>(g.out[1]) + u.offset, view, u.span, stage, dh);
  }
  if (f.has_c) {
    device::LoadItems(static_cast<const T*>(g.in[2]) + u.offset, view, u.span, stage, out);
#pragma unroll
    for (int i = 0; i < kIpt; ++i) out[i] *= hv[i];
    device::StoreItems(static_cast<T*>(g.out[3]) + u.offset, view, u.span, stage, out);
  }
}

template <typename T, bool kLookback>
__global__ void __launch_bounds__(kThreads, device::Tuning::kMinBlocksPerSmBackward)
    LinearScanBackwardKernel(const GroupDesc* __restrict__ groups, LinearFlags f, LookbackTemp lb) {
  __shared__ ScanShared<Pair> sh;
  __shared__ alignas(16) float stage_all[kWarps][StageElems<float>()];
  device::LoadGroup(groups, f.ngroups, f.ticket, lb, sh);
  const GroupDesc& g = sh.desc;
  // Logical step k here is the forward's processing step L-1-k: the scan runs against it.
  const RowView view{g.length, g.step_stride, !f.reverse, false};
  float* stage = stage_all[threadIdx.x >> 5];
  const int64_t steps = !kLookback && g.walk ? g.tiles_per_row : 1;
  Maybe<Pair> carry{Pair{}, false};
  Unit u = device::MakeUnit(g, sh.vblock);
  for (int64_t step = 0; step < steps; ++step) {
    if (step > 0) device::NextTile(g, u);
    // No L2 prefetch of the next tile here (see LinearScanKernel): on an H200 it made the float32
    // backward 3-5% slower.
    BackwardTile<T, kLookback>(g, u, f, view, stage, sh, lb, carry);
  }
}

template <typename T>
cudaError_t Enqueue(bool backward, bool lookback, bool staged_lookback, bool staged_walk,
                    bool single_tile, bool tail, bool padded, int64_t blocks, cudaStream_t stream,
                    const GroupDesc* d, const LinearFlags& f, const LookbackTemp& lb) {
  const dim3 grid(static_cast<unsigned>(blocks));
  if (backward) {
    if (lookback) {
      LinearScanBackwardKernel<T, true><<<grid, kThreads, 0, stream>>>(d, f, lb);
    } else {
      LinearScanBackwardKernel<T, false><<<grid, kThreads, 0, stream>>>(d, f, lb);
    }
  } else {
    if (lookback && staged_lookback) {
      LinearScanStagedLookbackKernel<T><<<grid, kThreads, 0, stream>>>(d, f, lb);
    } else if (!lookback && staged_walk && !single_tile) {
      if constexpr (sizeof(T) == 2) {
        LinearScanStagedWalkKernel<T><<<grid, kThreads, 0, stream>>>(d, f, lb);
      } else {
        return cudaErrorInvalidValue;
      }
    } else if (lookback) {
      LinearScanKernel<T, true><<<grid, kThreads, 0, stream>>>(d, f, lb);
    } else if (single_tile && tail) {
      if (padded) {
        LinearScanKernel<T, false, true, true, true><<<grid, kThreads, 0, stream>>>(d, f, lb);
      } else {
        LinearScanKernel<T, false, true, false, true><<<grid, kThreads, 0, stream>>>(d, f, lb);
      }
    } else if (single_tile) {
      if (padded) {
        LinearScanKernel<T, false, true, true><<<grid, kThreads, 0, stream>>>(d, f, lb);
      } else {
        LinearScanKernel<T, false, true><<<grid, kThreads, 0, stream>>>(d, f, lb);
      }
    } else if (padded) {
      LinearScanKernel<T, false, false, true><<<grid, kThreads, 0, stream>>>(d, f, lb);
    } else {
      LinearScanKernel<T, false><<<grid, kThreads, 0, stream>>>(d, f, lb);
    }
  }
  return cudaGetLastError();
}

// Enqueues both parts of a split plan: look-back reset, then the kernel variant of each part.
// `staged_lookback`: the forward look-back rows suit LinearScanStagedLookbackKernel;
// `staged_walk`: the forward walked rows suit LinearScanStagedWalkKernel.
cudaError_t EnqueueSplit(DType dtype, bool backward, const plan::SplitPlan& p, cudaStream_t stream,
                         const GroupDesc* d, void* temp, LinearFlags f,
                         bool staged_lookback = false, bool staged_walk = false) {
  int64_t first = 0;
  for (int k = 0; k < 2; ++k) {
    const plan::BatchPlan& part = p.part[k];
    if (part.blocks == 0) continue;
    if (part.blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
    LookbackTemp lb;
    cudaError_t err = device::PrepareLookback(temp, part.slots, stream, &lb);
    if (err != cudaSuccess) return err;
    f.ngroups = static_cast<int>(part.groups);
    f.ticket = part.slots > 0;
    const bool lookback = k == 0;
    const bool single = !backward && !lookback && part.single_tile;  // a forward-only variant
    // Padded rows' last segments move as units in the forward walk and single-tile variants;
    // elsewhere (look-back rows, backward, right-to-left scans) they take the scalar path.
    const bool padded = !backward && !lookback && !f.reverse && part.padded;
    switch (dtype) {
      case DType::kFloat32:
        err = Enqueue<float>(backward, lookback, staged_lookback, false, single, part.tail, padded,
                             part.blocks, stream, d + first, f, lb);
        break;
      case DType::kFloat16:
        err = Enqueue<__half>(backward, lookback, staged_lookback, staged_walk, single, part.tail,
                              padded, part.blocks, stream, d + first, f, lb);
        break;
      case DType::kBFloat16:
        err = Enqueue<__nv_bfloat16>(backward, lookback, staged_lookback, staged_walk, single,
                                     part.tail, padded, part.blocks, stream, d + first, f, lb);
        break;
      case DType::kInt32:
      case DType::kInt64:
        return cudaErrorInvalidValue;
    }
    if (err != cudaSuccess) return err;
    first += part.groups;
  }
  return cudaSuccess;
}

// Elements a tensor laid out by `g` spans (its last row's last step, plus one).
int64_t SpanElements(const RowGeometry& g) {
  if (g.rows <= 0 || g.length <= 0) return 0;
  const int64_t last_b = (g.rows - 1) / g.dim;
  const int64_t last_d = g.rows >= g.dim ? g.dim - 1 : g.rows - 1;
  const int64_t padding = g.padded ? g.row_stride - g.length : 0;
  return last_b * g.batch_stride + last_d * g.row_stride + (g.length - 1) * g.step_stride + 1 +
         padding;
}

void FillForward(GroupDesc& d, const LinearScanRows& r) {
  d.in[0] = r.a;
  d.in[1] = r.x;
  d.in[2] = r.b;
  d.in[3] = r.c;
  d.h0 = r.h0;
  d.out[0] = r.y;
  d.row_out = r.final_state;
}

plan::SplitPlan PlanForward(std::span<const LinearScanRows> rows, GroupDesc* out) {
  return plan::PlanSplit(rows, out, FillForward, kShortTail);
}

// Whether the pointer and every row and batch stride of `g` keep a tensor's rows 16-byte aligned.
bool RowsAligned(const RowGeometry& g, const void* p, int64_t es) {
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  const bool many_dims = g.dim > 1 && g.rows > 1;
  const bool many_batches = g.rows > g.dim;
  if (many_dims && g.row_stride * es % 16 != 0) return false;
  return !(many_batches && g.batch_stride * es % 16 != 0);
}

// Peak DRAM bandwidth per SM (GB/s) above which walks of rows that load as 16-byte units still
// gain from the L2 prefetch: their two blocks per SM keep too few bytes in flight on their own.
// H100 SXM (3.35 TB/s peak, 25 GB/s per SM): float32 (8, 1536, 65536) 3.24 ms (99% of the copy
// floor) without it, 3.52 with; H200 (4.9 TB/s, 37 per SM): 2.61 without, 2.47 with.
constexpr double kPrefetchAlignedGBpsPerSm = 30;

bool DeviceNeedsAlignedPrefetch() {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return true;
  // 0: not known yet, 1: no, 2: yes; devices past the table ask each time.
  static std::atomic<int> known[64];
  if (device < 64 && known[device].load(std::memory_order_relaxed) != 0) {
    return known[device].load(std::memory_order_relaxed) == 2;
  }
  int clock_khz = 0;
  int bus_bits = 0;
  int sms = 0;
  if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
      sms <= 0) {
    return true;
  }
  const double gbps_per_sm = 2.0 * clock_khz * 1e3 * (bus_bits / 8) / 1e9 / sms;
  const bool needs = gbps_per_sm > kPrefetchAlignedGBpsPerSm;
  if (device < 64) known[device].store(needs ? 2 : 1, std::memory_order_relaxed);
  return needs;
}

// Whether a forward launch's walks prefetch their next tile into L2: always for 16-bit types and
// for rows that take the scalar load path (more instructions per byte, so fewer bytes in flight),
// and for aligned float32 rows where DeviceNeedsAlignedPrefetch says so.
bool WalksPrefetch(const LinearScanOptions& o, std::span<const LinearScanRows> rows) {
  const auto es = static_cast<int64_t>(DTypeSize(o.dtype));
  if (es != 4) return true;
  for (const LinearScanRows& r : rows) {
    const RowGeometry& g = r.geometry;
    if (g.step_stride != 1) continue;  // BLD rows are not prefetched
    if (!RowsAligned(g, r.a, es) || !RowsAligned(g, r.x, es) || !RowsAligned(g, r.y, es) ||
        (o.has_b && !RowsAligned(g, r.b, es)) || (o.has_c && !RowsAligned(g, r.c, es))) {
      return true;
    }
  }
  return DeviceNeedsAlignedPrefetch();
}

// Whether a forward launch reads left to right from a and x only, as the kernels that stage tiles
// in shared memory do.
bool StagesAandX(const LinearScanOptions& o) { return !o.reverse && !o.has_b && !o.has_c; }

// Whether a group's rows are contiguous and every tile of them (kTileItems steps, a multiple of 16
// bytes) starts 16-byte aligned in a, x and y, as the kernels that stage tiles copy them.
bool StagesRow(const LinearScanRows& r, int64_t es) {
  const RowGeometry& g = r.geometry;
  return g.step_stride == 1 && r.y != nullptr && RowsAligned(g, r.a, es) &&
         RowsAligned(g, r.x, es) && RowsAligned(g, r.y, es);
}

// Whether every look-back row of a forward launch suits LinearScanStagedLookbackKernel.
bool StagedLookbackFits(const LinearScanOptions& o, std::span<const LinearScanRows> rows) {
  const auto es = static_cast<int64_t>(DTypeSize(o.dtype));
  if (!StagesAandX(o) || (es != 2 && es != 4)) return false;
  for (const LinearScanRows& r : rows) {
    if (plan::NeedsLookback(r.geometry, kShortTail) && !StagesRow(r, es)) return false;
  }
  return true;
}

// Whether every walked row of a forward launch suits LinearScanStagedWalkKernel: a 16-bit type
// (two tiles of a and x in shared memory) and rows walked by whole blocks.
bool StagedWalkFits(const LinearScanOptions& o, std::span<const LinearScanRows> rows) {
  if (!StagesAandX(o) || DTypeSize(o.dtype) != 2) return false;
  for (const LinearScanRows& r : rows) {
    if (plan::NeedsLookback(r.geometry, kShortTail)) continue;
    const plan::GroupPlan p = plan::PlanGroup(r.geometry, kShortTail);
    if (p.blocks == 0) continue;
    if (!p.walk || p.unit_threads != kThreads || !StagesRow(r, 2)) return false;
  }
  return true;
}

// Recomputed states of the backward pass: one 256-byte aligned float32 region per group, at the
// start of temp; the look-back storage follows.
size_t StatesBytes(const LinearScanBackwardOptions& o,
                   std::span<const LinearScanBackwardRows> rows) {
  if (o.has_states) return 0;
  size_t bytes = 0;
  for (const LinearScanBackwardRows& r : rows) {
    bytes += plan::AlignUp(static_cast<size_t>(SpanElements(r.geometry)) * sizeof(float), 256);
  }
  return bytes;
}

void FillBackward(GroupDesc& d, const LinearScanBackwardRows& r) {
  d.in[0] = r.a;
  d.in[1] = r.x;
  d.in[2] = r.dy;
  d.in[3] = r.b;
  d.in[4] = r.c;
  d.in[5] = r.states;
  d.h0 = r.h0;
  d.out[0] = r.da;
  d.out[1] = r.dx;
  d.out[2] = r.db;
  d.out[3] = r.dc;
  d.row_out = r.dh0;
}

plan::SplitPlan PlanBackward(std::span<const LinearScanBackwardRows> rows, GroupDesc* out) {
  return plan::PlanSplit(rows, out, FillBackward);
}

}  // namespace

LaunchSizes LinearScanSizes(const LinearScanOptions& /*o*/, std::span<const LinearScanRows> rows) {
  const plan::SplitPlan p = PlanForward(rows, nullptr);
  return {static_cast<size_t>(p.groups()) * sizeof(GroupDesc), p.temp_bytes};
}

void LinearScanDescribe(const LinearScanOptions& /*o*/, std::span<const LinearScanRows> rows,
                        void* temp, void* host_descriptors) {
  (void)temp;
  PlanForward(rows, static_cast<GroupDesc*>(host_descriptors));
}

int LinearScanLaunch(const LinearScanOptions& o, std::span<const LinearScanRows> rows,
                     const void* device_descriptors, void* temp, void* stream) {
  const plan::SplitPlan p = PlanForward(rows, nullptr);
  const LinearFlags f{0,
                      false,
                      o.has_b,
                      o.has_c,
                      o.has_h0,
                      o.reverse,
                      o.return_final_state,
                      WalksPrefetch(o, rows)};
  return EnqueueSplit(o.dtype, false, p, static_cast<cudaStream_t>(stream),
                      static_cast<const GroupDesc*>(device_descriptors), temp, f,
                      StagedLookbackFits(o, rows), StagedWalkFits(o, rows));
}

LaunchSizes LinearScanBackwardSizes(const LinearScanBackwardOptions& o,
                                    std::span<const LinearScanBackwardRows> rows) {
  const plan::SplitPlan p = PlanBackward(rows, nullptr);
  const size_t n = static_cast<size_t>(p.groups()) * sizeof(GroupDesc);
  // The recomputing forward pass reuses the look-back storage after the backward plan's own.
  return {o.has_states ? n : 2 * n, StatesBytes(o, rows) + p.temp_bytes};
}

void LinearScanBackwardDescribe(const LinearScanBackwardOptions& o,
                                std::span<const LinearScanBackwardRows> rows, void* temp,
                                void* host_descriptors) {
  auto* desc = static_cast<GroupDesc*>(host_descriptors);
  const plan::SplitPlan p = PlanBackward(rows, desc);
  if (o.has_states) return;
  // Point every group at its states region, then describe the forward pass that fills them:
  // same groups and order (hence same plan), reading a, x, b and writing only the states.
  // Descriptors are in plan order (look-back part first), so walk the rows in that order too.
  char* states = static_cast<char*>(temp);
  const int64_t n = p.groups();
  int64_t i = 0;
  for (int k = 0; k < 2; ++k) {
    for (const LinearScanBackwardRows& r : rows) {
      if (i >= n) break;
      if (plan::PlanGroup(r.geometry).blocks == 0) continue;
      if (plan::NeedsLookback(r.geometry) != (k == 0)) continue;
      desc[i].in[5] = states;
      states += plan::AlignUp(static_cast<size_t>(SpanElements(r.geometry)) * sizeof(float), 256);
      ++i;
    }
  }
  GroupDesc* fwd = desc + n;
  for (int64_t j = 0; j < n; ++j) {
    fwd[j] = desc[j];
    std::memset(fwd[j].in, 0, sizeof(fwd[j].in));
    std::memset(fwd[j].out, 0, sizeof(fwd[j].out));
    fwd[j].in[0] = desc[j].in[0];
    fwd[j].in[1] = desc[j].in[1];
    fwd[j].in[2] = desc[j].in[3];
    fwd[j].out[1] = const_cast<void*>(desc[j].in[5]);
    fwd[j].row_out = nullptr;
  }
}

int LinearScanBackwardLaunch(const LinearScanBackwardOptions& o,
                             std::span<const LinearScanBackwardRows> rows,
                             const void* device_descriptors, void* temp, void* stream) {
  const plan::SplitPlan p = PlanBackward(rows, nullptr);
  const auto s = static_cast<cudaStream_t>(stream);
  const auto* desc = static_cast<const GroupDesc*>(device_descriptors);
  void* lookback = static_cast<char*>(temp) + StatesBytes(o, rows);
  if (!o.has_states) {
    const LinearFlags f{0, false, o.has_b, false, o.has_h0, o.reverse, false, true};
    const cudaError_t err = EnqueueSplit(o.dtype, false, p, s, desc + p.groups(), lookback, f);
    if (err != cudaSuccess) return err;
  }
  const LinearFlags f{0, false, o.has_b, o.has_c, o.has_h0, o.reverse, false, true};
  return EnqueueSplit(o.dtype, true, p, s, desc, lookback, f);
}

}  // namespace scanserve::cuda
