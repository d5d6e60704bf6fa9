// Device building blocks of the row-scan kernels: what one block does with one tile.
//
// A block of kThreads threads is split into units of `unit_threads` threads (a power of two fixed
// per row length by the plan); each unit scans one tile of one row, and each thread holds
// kItemsPerThread consecutive steps of it in registers. The order of every floating-point
// operation is a function of the row length and the group's row count only:
//   1. each thread folds its own items left to right;
//   2. a Kogge-Stone scan over the lanes of a warp (segmented to the unit when it is narrower);
//   3. a left fold over the warps of the unit (units wider than a warp);
//   4. for rows of several tiles, either the composition of the row's earlier tiles, carried in
//      registers by the one block that walks them in order (rows of up to kWalkMaxTiles tiles, or
//      of any length in groups of at least kWalkAnyLengthRows rows), or a look-back (the other
//      rows) that yields the left fold of the tiles' aggregates before it, however far its
//      predecessors had got;
//   5. each thread then re-runs its recurrence from the state entering it.
// Loads and stores go through shared memory per warp: as coalesced 16-byte units where a warp's
// segment is contiguous, full and aligned, else as coalesced scalars. Both give the same values in
// the same registers, so neither alignment nor the path changes results.
#ifndef SCANSERVE_KERNELS_CUDA_SCAN_DEVICE_CUH_
#define SCANSERVE_KERNELS_CUDA_SCAN_DEVICE_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "cuda/row_scan_plan.h"

namespace scanserve::cuda::device {

using Tuning = tuning::RowScan;
using plan::GroupDesc;

constexpr int kThreads = Tuning::kBlockThreads;
constexpr int kIpt = Tuning::kItemsPerThread;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFull = 0xffffffffu;
static_assert(kThreads % 32 == 0 && (kThreads & (kThreads - 1)) == 0);
static_assert(Tuning::kLookbackRange % 32 == 0);

// ---- element types: storage T, compute type C -------------------------------------------------

template <typename T>
struct Elem;
template <>
struct Elem<float> {
  using C = float;
  __device__ static float Load(float v) { return v; }
  __device__ static float Store(float v) { return v; }
};
// 16-bit types also convert two values at once (one instruction on sm_90), rounding each as Store.
template <>
struct Elem<__half> {
  using C = float;
  __device__ static float Load(__half v) { return __half2float(v); }
  __device__ static __half Store(float v) { return __float2half_rn(v); }
  __device__ static __half2 Store2(float lo, float hi) { return __floats2half2_rn(lo, hi); }
};
template <>
struct Elem<__nv_bfloat16> {
  using C = float;
  __device__ static float Load(__nv_bfloat16 v) { return __bfloat162float(v); }
  __device__ static __nv_bfloat16 Store(float v) { return __float2bfloat16_rn(v); }
  __device__ static __nv_bfloat162 Store2(float lo, float hi) {
    return __floats2bfloat162_rn(lo, hi);
  }
};
template <>
struct Elem<int32_t> {
  using C = int32_t;
  __device__ static int32_t Load(int32_t v) { return v; }
  __device__ static int32_t Store(int32_t v) { return v; }
};
template <>
struct Elem<int64_t> {
  using C = int64_t;
  __device__ static int64_t Load(int64_t v) { return v; }
  __device__ static int64_t Store(int64_t v) { return v; }
};

// A pair (A, B) of the first-order recurrence: the map h -> A * h + B.
struct Pair {
  float a;
  float b;
};

template <typename X>
struct Maybe {
  X v;
  bool has;
};

// ---- shuffles of 4- and 8-byte values
// ------------------------------------------------------------

// Applies a 32-bit warp shuffle to each word of a 4- or 8-byte value.
template <typename X, typename Shuffle>
__device__ __forceinline__ X ShflWords(X v, Shuffle shuffle) {
  static_assert(sizeof(X) == 4 || sizeof(X) == 8);
  unsigned words[sizeof(X) / 4];
  memcpy(words, &v, sizeof(X));
#pragma unroll
  for (unsigned& w : words) w = shuffle(w);
  memcpy(&v, words, sizeof(X));
  return v;
}

template <typename X>
__device__ __forceinline__ X ShflUp(X v, unsigned d) {
  return ShflWords(v, [d](unsigned w) { return __shfl_up_sync(kFull, w, d); });
}

template <typename X>
__device__ __forceinline__ X ShflDown(X v, unsigned d) {
  return ShflWords(v, [d](unsigned w) { return __shfl_down_sync(kFull, w, d); });
}

template <typename X>
__device__ __forceinline__ X ShflIdx(X v, int lane) {
  return ShflWords(v, [lane](unsigned w) { return __shfl_sync(kFull, w, lane); });
}

template <typename X>
__device__ __forceinline__ unsigned long long Pack(X v) {
  static_assert(sizeof(X) <= 8);
  unsigned long long bits = 0;
  memcpy(&bits, &v, sizeof(X));
  return bits;
}

template <typename X>
__device__ __forceinline__ X Unpack(unsigned long long bits) {
  X v;
  memcpy(&v, &bits, sizeof(X));
  return v;
}

// Left-then-right composition of two optional aggregates.
template <typename Op, typename X>
__device__ __forceinline__ Maybe<X> Compose(const Maybe<X>& l, const Maybe<X>& r) {
  if (!l.has) return r;
  if (!r.has) return l;
  return {Op::Combine(l.v, r.v), true};
}

// ---- where a thread's items lie ----------------------------------------------------------------

// One row of one tensor as the scan walks it: logical step t is element Phys(t) of the row.
struct RowView {
  int64_t length;
  int64_t stride;
  bool reverse;
  // RowGeometry::padded, where the kernel variant moves padded rows' last segments as units (a
  // compile-time false elsewhere).
  bool padded;
  __device__ __forceinline__ int64_t Phys(int64_t t) const {
    return (reverse ? length - 1 - t : t) * stride;
  }
};

// A thread's items are logical steps [s, s + count) of its row. Loads and stores that cannot use
// vectors go through a segment: `seg_lanes` lanes (a warp, or the unit when narrower) that move
// logical steps [seg_start, seg_start + seg_n) coalesced, lane li taking every seg_lanes-th.
struct Span {
  int64_t s;
  int count;
  int64_t seg_start;
  int seg_n;
  int li;
  int seg_lanes;
  int buf_base;  // where the segment starts in the warp's staging buffer
};

// What one unit (and its thread) works on.
struct Unit {
  bool valid;
  bool walk;
  // Every thread of the unit holds at least one item (all but the last kIpt), so the scans can
  // skip the bookkeeping of empty threads (with the same operations on the same values): true for
  // tiles inside their row and for a last tile short of at most kIpt - 1 items (rows of 2^k - 1).
  bool full;
  int unit_threads;
  int64_t row;
  int64_t tile;
  int64_t tiles;
  int64_t offset;  // element offset of the row's step 0 in each sequence tensor
  Span span;
};

// Staging buffer of one warp, padded so that both the coalesced and the per-thread walks avoid
// bank conflicts.
template <typename C>
__device__ __forceinline__ int Pad(int i) {
  return sizeof(C) == 8 ? i + (i >> 4) : i + (i >> 5);
}
template <typename C>
constexpr int StageElems() {
  return 32 * kIpt + (sizeof(C) == 8 ? (32 * kIpt >> 4) : (32 * kIpt >> 5));
}

// Places the thread's span at tile `u.tile` of its row. Unit and segment widths are powers of two,
// so the divisions are shifts.
__device__ __forceinline__ void PlaceSpan(const GroupDesc& g, Unit& u) {
  const int lane = threadIdx.x & 31;
  const int in_unit = threadIdx.x & (g.unit_threads - 1);
  const int64_t tile_items = int64_t{g.unit_threads} * kIpt;
  const int64_t tile_start = u.tile * tile_items;
  const int64_t n_tile = u.valid ? min(tile_items, g.length - tile_start) : 0;
  u.full = n_tile > tile_items - kIpt;
  const int seg_lanes = min(g.unit_threads, 32);
  const int li = lane & (seg_lanes - 1);
  const int seg_index = in_unit >> (__ffs(seg_lanes) - 1);
  const int seg_items = seg_lanes * kIpt;
  Span& sp = u.span;
  sp.seg_lanes = seg_lanes;
  sp.li = li;
  sp.seg_start = tile_start + seg_index * seg_items;
  sp.seg_n =
      static_cast<int>(max(int64_t{0}, min(int64_t{seg_items}, n_tile - seg_index * seg_items)));
  sp.s = sp.seg_start + li * kIpt;
  sp.count = max(0, min(kIpt, sp.seg_n - li * kIpt));
  sp.buf_base = (lane - li) * kIpt;
}

// The unit of this thread in virtual block `vblock`; a walk starts at its row's first tile.
__device__ __forceinline__ Unit MakeUnit(const GroupDesc& g, int64_t vblock) {
  Unit u;
  u.unit_threads = g.unit_threads;
  u.walk = g.walk != 0;
  const int64_t unit =
      (vblock - g.block_begin) * g.units_per_block + (threadIdx.x >> (__ffs(g.unit_threads) - 1));
  u.tiles = g.tiles_per_row;
  if (u.walk) {
    u.valid = unit < g.rows;
    u.row = u.valid ? unit : 0;
    u.tile = 0;
  } else {
    u.valid = unit < g.rows * g.tiles_per_row;
    u.row = u.valid ? unit / g.tiles_per_row : 0;
    u.tile = u.valid ? unit % g.tiles_per_row : 0;
  }
  PlaceSpan(g, u);
  const int64_t b = u.row / g.dim;
  const int64_t d = u.row - b * g.dim;
  u.offset = b * g.batch_stride + d * g.row_stride;
  return u;
}

// Moves a walking unit on to its row's next tile. Everything but the span stays, so the row's
// divisions are paid once per row, not once per tile.
__device__ __forceinline__ void NextTile(const GroupDesc& g, Unit& u) {
  ++u.tile;
  PlaceSpan(g, u);
}

// Asks the L2 to fetch logical steps [t0, t0 + n) of a contiguous row (one bulk prefetch: the copy
// engine does the work and no register waits for it), so that a walk's next tile is on chip when
// its loads issue. Only whole 16-byte units inside the range are named, so nothing outside the
// tensor is touched; a range holding no whole unit (a row's short last tile) gets a line prefetch
// of its first and last elements instead. Rows with a step stride (BLD) are not prefetched.
template <typename T>
__device__ __forceinline__ void PrefetchRowL2(const T* row, const RowView& v, int64_t t0,
                                              int64_t n) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (v.stride != 1 || n <= 0) return;
  const int64_t first = v.reverse ? v.length - (t0 + n) : t0;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(row + first) + 15) & ~uintptr_t{15};
  const uintptr_t end = reinterpret_cast<uintptr_t>(row + first + n) & ~uintptr_t{15};
  if (end <= begin) {
    asm volatile("prefetch.global.L2 [%0];" ::"l"(row + first));
    asm volatile("prefetch.global.L2 [%0];" ::"l"(row + first + n - 1));
    return;
  }
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(begin),
               "r"(static_cast<unsigned>(end - begin))
               : "memory");
#endif
}

// A walking unit's next tile (or the tile `ahead` tiles on) of one sequence tensor (`row`: the
// row's step 0 in it) to L2, issued by the unit's first thread. Without it each tile's loads wait
// out a DRAM round trip with nothing else in flight (two blocks per SM); with it they find the tile
// on chip (H200: forward walks 4-15% faster, bf16 the most; associative walks 15%). Aligned
// float32 forward walks skip it where linear_scan.cu's WalksPrefetch says it costs more than it
// saves.
template <typename T>
__device__ __forceinline__ void PrefetchNextTile(const GroupDesc& g, const Unit& u,
                                                 const RowView& v, const T* row, int ahead = 1) {
  if (!u.valid || (threadIdx.x & (g.unit_threads - 1)) != 0) return;
  const int64_t tile_items = int64_t{g.unit_threads} * kIpt;
  const int64_t t0 = (u.tile + ahead) * tile_items;
  PrefetchRowL2(row, v, t0, min(tile_items, g.length - t0));
}

// ---- loads and stores ---------------------------------------------------------------------------

// A read-only load (the non-coherent path the unit loads take too); inputs never alias outputs.
template <typename T>
__device__ __forceinline__ T LoadReadOnly(const T* p) {
  if constexpr (std::is_same_v<T, int64_t>) {
    return static_cast<int64_t>(__ldg(reinterpret_cast<const long long*>(p)));
  } else {
    return __ldg(p);
  }
}

// Whether the warp moves one full warp-wide segment (the same answer on every lane). Then li is
// the lane and buf_base is 0, so every staging index below is a per-lane base plus a constant:
// Pad(32 j + li) = Pad(li) + j Pad(32), and Pad(kIpt li + i) = Pad(kIpt li) + i for i < kIpt.
static_assert(kIpt == 16, "the constant staging offsets assume 16 items per thread");
__device__ __forceinline__ bool WholeWarpSegment(const Span& sp) {
  return sp.seg_lanes == 32 && sp.seg_n == 32 * kIpt;
}

// Coalesced loads of this lane's share of its segment: segment element j * seg_lanes + li lands
// in tmp[j]. Elements are a fixed stride apart, so the address walk is one add per item.
template <typename T, typename C>
__device__ __forceinline__ void GatherSegment(const T* __restrict__ row, const RowView& v,
                                              const Span& sp, C (&tmp)[kIpt]) {
  const int64_t step = (v.reverse ? -v.stride : v.stride) * sp.seg_lanes;
  const T* p = row + v.Phys(sp.seg_start + sp.li);
  if (WholeWarpSegment(sp)) {
#pragma unroll
    for (int j = 0; j < kIpt; ++j) {
      tmp[j] = Elem<T>::Load(LoadReadOnly(p));
      p += step;
    }
  } else {
#pragma unroll
    for (int j = 0; j < kIpt; ++j) {
      if (j * sp.seg_lanes + sp.li < sp.seg_n) tmp[j] = Elem<T>::Load(LoadReadOnly(p));
      p += step;
    }
  }
}

// Moves a segment from the lanes that loaded it (tmp) to the lanes that own its items (out).
template <typename C>
__device__ __forceinline__ void SegmentToThread(const Span& sp, C* stage, const C (&tmp)[kIpt],
                                                C (&out)[kIpt]) {
  if (WholeWarpSegment(sp)) {
    C* w = stage + Pad<C>(sp.li);
#pragma unroll
    for (int j = 0; j < kIpt; ++j) w[j * Pad<C>(32)] = tmp[j];
    __syncwarp();
    const C* r = stage + Pad<C>(sp.li * kIpt);
#pragma unroll
    for (int i = 0; i < kIpt; ++i) out[i] = r[i];
    __syncwarp();
    return;
  }
#pragma unroll
  for (int j = 0; j < kIpt; ++j) {
    const int e = j * sp.seg_lanes + sp.li;
    if (e < sp.seg_n) stage[Pad<C>(sp.buf_base + e)] = tmp[j];
  }
  __syncwarp();
#pragma unroll
  for (int i = 0; i < kIpt; ++i) {
    if (i < sp.count) out[i] = stage[Pad<C>(sp.buf_base + sp.li * kIpt + i)];
  }
  __syncwarp();
}

// ---- the unit path: whole segments moved as 16-byte units --------------------------------------
//
// A warp whose segments (one per unit narrower than a warp) are contiguous, full (seg_lanes *
// kIpt steps each) and 16-byte aligned moves them as 16-byte units: lane l of a segment loads its
// units l, l + seg_lanes, ... coalesced, then the staging buffer hands each thread its own
// consecutive units. Same values in the same registers as the scalar path,
// with a quarter (16-bit types: an eighth) of its load, store and shared-memory instructions.
template <typename T>
struct UnitPath {
  static constexpr bool kOn = sizeof(T) == 2 || sizeof(T) == 4;
  static constexpr int kPerUnit = 16 / sizeof(T);
  static constexpr int kPerThread = kIpt / kPerUnit;
};

// Where unit u of a segment lies in the staging buffer: each row of 8 units (all 32 banks) is
// rotated by its row index, so that both walks (lane l taking units l + 32k, and a thread taking
// its own kPerThread consecutive units) hit 8 different 16-byte bank groups in each quarter warp.
__device__ __forceinline__ int UnitSlot(int u) { return (u & ~7) | ((u + (u >> 3)) & 7); }

// Element offset of the segment's lowest address in its row.
__device__ __forceinline__ int64_t UnitStart(const RowView& v, const Span& sp) {
  return v.reverse ? v.length - sp.seg_start - sp.seg_n : sp.seg_start;
}

// Whether the warp's segments of `row` take the unit path (the same answer on every lane). A
// segment that is not full takes it too when it ends its row and the row is followed by padding
// to a 16-byte boundary (left-to-right scans only: right to left, it starts its row): its units
// then run at most into that padding.
template <typename T>
__device__ __forceinline__ bool UnitPathOk(const T* row, const RowView& v, const Span& sp) {
  const bool units =
      sp.seg_n == sp.seg_lanes * kIpt ||
      (v.padded && !v.reverse && (sp.seg_n == 0 || sp.seg_start + sp.seg_n == v.length));
  const bool ok =
      v.stride == 1 && units && (reinterpret_cast<uintptr_t>(row + UnitStart(v, sp)) & 15) == 0;
  return __all_sync(kFull, ok);
}

// Units of the segment: all of a full one's; a padded row's last segment ends in its padding.
template <typename T>
__device__ __forceinline__ int SegmentUnits(const Span& sp) {
  return (sp.seg_n + UnitPath<T>::kPerUnit - 1) / UnitPath<T>::kPerUnit;
}

template <typename T>
__device__ __forceinline__ void UnitLoad(const T* __restrict__ row, const RowView& v,
                                         const Span& sp, uint4 (&raw)[UnitPath<T>::kPerThread]) {
  const uint4* src = reinterpret_cast<const uint4*>(row + UnitStart(v, sp)) + sp.li;
  // Full segments (all but a padded row's last) without the per-unit guard. Kernels that never
  // see padded rows construct their views with padded false, which folds the guard away: on an
  // H200 it cost aligned rows 3-11% even where it was never taken.
  if (!v.padded || sp.seg_n == sp.seg_lanes * kIpt) {
#pragma unroll
    for (int k = 0; k < UnitPath<T>::kPerThread; ++k) raw[k] = __ldg(src + sp.seg_lanes * k);
    return;
  }
  const int units = SegmentUnits<T>(sp);
#pragma unroll
  for (int k = 0; k < UnitPath<T>::kPerThread; ++k) {
    raw[k] = sp.seg_lanes * k + sp.li < units ? __ldg(src + sp.seg_lanes * k) : uint4{0, 0, 0, 0};
  }
}

// Hands the loaded units to the threads that own them, in logical order.
template <typename T, typename C>
__device__ __forceinline__ void UnitToThread(const RowView& v, const Span& sp, C* stage,
                                             const uint4 (&raw)[UnitPath<T>::kPerThread],
                                             C (&out)[kIpt]) {
  using P = UnitPath<T>;
  // The staging buffer holds the segment's units, each row of it starting 16-byte aligned.
  static_assert(StageElems<C>() * sizeof(C) % 16 == 0 &&
                StageElems<C>() * sizeof(C) >= 32 * kIpt * sizeof(T));
  uint4* st = reinterpret_cast<uint4*>(stage);
  const int base = (sp.buf_base / kIpt) * P::kPerThread;  // the segment's first unit
#pragma unroll
  for (int k = 0; k < P::kPerThread; ++k) st[UnitSlot(base + sp.seg_lanes * k + sp.li)] = raw[k];
  __syncwarp();
  // In a reverse row, lane l's logical steps are the physical units of lane seg_lanes - 1 - l of
  // its segment, backwards.
  const int owner = v.reverse ? sp.seg_lanes - 1 - sp.li : sp.li;
  T vals[kIpt];
#pragma unroll
  for (int k = 0; k < P::kPerThread; ++k) {
    const uint4 w = st[UnitSlot(base + P::kPerThread * owner + k)];
    memcpy(vals + k * P::kPerUnit, &w, 16);
  }
  if (v.reverse) {
#pragma unroll
    for (int i = 0; i < kIpt; ++i) out[i] = Elem<T>::Load(vals[kIpt - 1 - i]);
  } else {
#pragma unroll
    for (int i = 0; i < kIpt; ++i) out[i] = Elem<T>::Load(vals[i]);
  }
  __syncwarp();
}

template <typename T, typename C>
__device__ __forceinline__ void UnitStore(T* __restrict__ row, const RowView& v, const Span& sp,
                                          C* stage, const C (&in)[kIpt]) {
  using P = UnitPath<T>;
  // The staging buffer holds the segment's units, each row of it starting 16-byte aligned.
  static_assert(StageElems<C>() * sizeof(C) % 16 == 0 &&
                StageElems<C>() * sizeof(C) >= 32 * kIpt * sizeof(T));
  T vals[kIpt];
  if constexpr (sizeof(T) == 2) {
#pragma unroll
    for (int m = 0; m < kIpt; m += 2) {
      const auto pair = v.reverse ? Elem<T>::Store2(in[kIpt - 1 - m], in[kIpt - 2 - m])
                                  : Elem<T>::Store2(in[m], in[m + 1]);
      memcpy(vals + m, &pair, 4);
    }
  } else if (v.reverse) {
#pragma unroll
    for (int i = 0; i < kIpt; ++i) vals[kIpt - 1 - i] = Elem<T>::Store(in[i]);
  } else {
#pragma unroll
    for (int i = 0; i < kIpt; ++i) vals[i] = Elem<T>::Store(in[i]);
  }
  uint4* st = reinterpret_cast<uint4*>(stage);
  const int base = (sp.buf_base / kIpt) * P::kPerThread;
  const int owner = v.reverse ? sp.seg_lanes - 1 - sp.li : sp.li;
#pragma unroll
  for (int k = 0; k < P::kPerThread; ++k) {
    uint4 w;
    memcpy(&w, vals + k * P::kPerUnit, 16);
    st[UnitSlot(base + P::kPerThread * owner + k)] = w;
  }
  __syncwarp();
  uint4* dst = reinterpret_cast<uint4*>(row + UnitStart(v, sp)) + sp.li;
  if (!v.padded || sp.seg_n == sp.seg_lanes * kIpt) {
#pragma unroll
    for (int k = 0; k < P::kPerThread; ++k) {
      dst[sp.seg_lanes * k] = st[UnitSlot(base + sp.seg_lanes * k + sp.li)];
    }
  } else {
    const int units = SegmentUnits<T>(sp);
#pragma unroll
    for (int k = 0; k < P::kPerThread; ++k) {
      if (sp.seg_lanes * k + sp.li < units) {
        dst[sp.seg_lanes * k] = st[UnitSlot(base + sp.seg_lanes * k + sp.li)];
      }
    }
  }
  __syncwarp();
}

// Loads the thread's items (logical order) as compute values. Every lane of the warp must call it.
// A warp takes the unit path when all its segments allow it, else the coalesced scalar path.
template <typename T, typename C>
__device__ __forceinline__ void LoadItems(const T* __restrict__ row, const RowView& v,
                                          const Span& sp, C* stage, C (&out)[kIpt]) {
  if constexpr (UnitPath<T>::kOn) {
    if (UnitPathOk(row, v, sp)) {
      uint4 raw[UnitPath<T>::kPerThread];
      UnitLoad(row, v, sp, raw);
      UnitToThread<T>(v, sp, stage, raw, out);
      return;
    }
  }
  C tmp[kIpt];
  GatherSegment(row, v, sp, tmp);
  SegmentToThread(sp, stage, tmp, out);
}

// LoadItems of two tensors; on the unit path the loads of both are in flight before either is
// needed (the scalar path would need twice the registers for that).
template <typename T, typename C>
__device__ __forceinline__ void LoadItems2(const T* __restrict__ row0, const T* __restrict__ row1,
                                           const RowView& v, const Span& sp, C* stage,
                                           C (&out0)[kIpt], C (&out1)[kIpt]) {
  if constexpr (UnitPath<T>::kOn) {
    if (UnitPathOk(row0, v, sp) && UnitPathOk(row1, v, sp)) {
      uint4 raw0[UnitPath<T>::kPerThread];
      uint4 raw1[UnitPath<T>::kPerThread];
      UnitLoad(row0, v, sp, raw0);
      UnitLoad(row1, v, sp, raw1);
      UnitToThread<T>(v, sp, stage, raw0, out0);
      UnitToThread<T>(v, sp, stage, raw1, out1);
      return;
    }
  }
  LoadItems(row0, v, sp, stage, out0);
  LoadItems(row1, v, sp, stage, out1);
}

// Stores the thread's items (logical order), converting to T. Every lane of the warp must call it.
template <typename T, typename C>
__device__ __forceinline__ void StoreItems(T* __restrict__ row, const RowView& v, const Span& sp,
                                           C* stage, const C (&in)[kIpt]) {
  if constexpr (UnitPath<T>::kOn) {
    if (UnitPathOk(row, v, sp)) {
      UnitStore(row, v, sp, stage, in);
      return;
    }
  }
  const int64_t step = (v.reverse ? -v.stride : v.stride) * sp.seg_lanes;
  T* p = row + v.Phys(sp.seg_start + sp.li);
  if (WholeWarpSegment(sp)) {
    C* w = stage + Pad<C>(sp.li * kIpt);
#pragma unroll
    for (int i = 0; i < kIpt; ++i) w[i] = in[i];
    __syncwarp();
    const C* r = stage + Pad<C>(sp.li);
#pragma unroll
    for (int j = 0; j < kIpt; ++j) {
      *p = Elem<T>::Store(r[j * Pad<C>(32)]);
      p += step;
    }
    __syncwarp();
    return;
  }
#pragma unroll
  for (int i = 0; i < kIpt; ++i) {
    if (i < sp.count) stage[Pad<C>(sp.buf_base + sp.li * kIpt + i)] = in[i];
  }
  __syncwarp();
#pragma unroll
  for (int j = 0; j < kIpt; ++j) {
    const int e = j * sp.seg_lanes + sp.li;
    if (e < sp.seg_n) *p = Elem<T>::Store(stage[Pad<C>(sp.buf_base + e)]);
    p += step;
  }
  __syncwarp();
}

// ---- block prologue: which group and which virtual block ---------------------------------------

// Look-back state in the launch's temp storage (see plan::LookbackLayout): per slot (a tile of a
// look-back row) one 16-byte word {value, status}, written and read whole.
struct LookbackTemp {
  unsigned long long* counter;
  ulonglong2* words;
};

// A look-back word's status: nothing yet, the tile's aggregate, or its inclusive prefix (the left
// fold of its row's tile aggregates up to and including its own).
constexpr unsigned long long kWordEmpty = 0;
constexpr unsigned long long kWordAggregate = 1;
constexpr unsigned long long kWordInclusive = 2;

// Points `lb` into temp storage and enqueues the zeroing of its counter and words.
inline cudaError_t PrepareLookback(void* temp, int64_t slots, cudaStream_t stream,
                                   LookbackTemp* lb) {
  *lb = LookbackTemp{};
  if (slots <= 0) return cudaSuccess;
  const plan::LookbackLayout l = plan::LookbackLayoutFor(slots);
  char* base = static_cast<char*>(temp);
  lb->counter = reinterpret_cast<unsigned long long*>(base);
  lb->words = reinterpret_cast<ulonglong2*>(base + l.words_offset);
  return cudaMemsetAsync(base, 0, l.zero_bytes, stream);
}

template <typename Agg>
struct ScanShared {
  GroupDesc desc;
  long long vblock;
  // Two sets, used by alternate tiles of a walk, so that a tile's writes never race the reads of
  // the tile before it without a second barrier.
  Agg warp_agg[2][kWarps];
  int warp_has[2][kWarps];
  Agg prefix;
  int prefix_has;
  // The look-back's aggregates, for the left fold on one lane (LookbackPrefix).
  Agg fold[Tuning::kLookbackRange];
};

// Finds this block's group and copies its descriptor to shared memory. With `ticket`, blocks
// number themselves in the order they start (so a tile only ever waits on tiles whose blocks
// already run); otherwise by blockIdx.
template <typename Agg>
__device__ __forceinline__ void LoadGroup(const GroupDesc* __restrict__ groups, int ngroups,
                                          bool ticket, const LookbackTemp& lb,
                                          ScanShared<Agg>& sh) {
  if (threadIdx.x < 32) {
    long long vb = blockIdx.x;
    if (ticket && threadIdx.x == 0) vb = static_cast<long long>(atomicAdd(lb.counter, 1ull));
    vb = __shfl_sync(kFull, vb, 0);
    // A 32-way search: each round probes 32 evenly spaced groups at once, so a ragged batch of
    // hundreds of groups costs two dependent loads, not a binary search's eight or more.
    // groups[lo].block_begin <= vb holds throughout (the first group begins at block 0).
    const int lane = threadIdx.x;
    int lo = 0;
    int n = ngroups;
    while (n > 1) {
      const int stride = (n + 31) / 32;
      const int probe = lo + lane * stride;
      const bool before = lane * stride < n && groups[probe].block_begin <= vb;
      const unsigned found = __ballot_sync(kFull, before);
      const int k = 31 - __clz(static_cast<int>(found));
      lo += k * stride;
      n = min(stride, n - k * stride);
    }
    constexpr int kWords = sizeof(GroupDesc) / 16;
    static_assert(kWords <= 32);
    if (threadIdx.x < kWords) {
      reinterpret_cast<uint4*>(&sh.desc)[threadIdx.x] =
          reinterpret_cast<const uint4*>(groups + lo)[threadIdx.x];
    }
    if (threadIdx.x == 0) sh.vblock = vb;
  }
  __syncthreads();
}

// ---- scans over lanes, warps and tiles ----------------------------------------------------------

// Exclusive prefix of this thread within its unit, and the unit's total. `full`: every thread of
// the unit has items (the same for all threads of a unit); warps whose units are all full take a
// path without the has-flags, which performs the same operations on the same values.
template <typename Op, typename Agg>
__device__ __forceinline__ void UnitScan(Agg mine, bool has, bool full, int unit_threads,
                                         int parity, ScanShared<Agg>& sh, Maybe<Agg>& excl,
                                         Maybe<Agg>& total) {
  const int lane = threadIdx.x & 31;
  const int seg = min(unit_threads, 32);
  const int li = lane & (seg - 1);
  const int last = (lane & ~(seg - 1)) + seg - 1;
  Agg ex;
  bool exh;
  Agg seg_total;
  bool seg_has;
  if (__all_sync(kFull, full)) {
    Agg incl = mine;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
      if (d >= seg) break;
      const Agg o = ShflUp(incl, d);
      if (li >= d) incl = Op::Combine(o, incl);
    }
    ex = ShflUp(incl, 1);
    exh = li > 0;
    seg_total = ShflIdx(incl, last);
    seg_has = true;
  } else {
    Agg incl = mine;
    bool h = has;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
      const Agg o = ShflUp(incl, d);
      const bool oh = __shfl_up_sync(kFull, static_cast<int>(h), d) != 0;
      if (d < seg && li >= d && oh) {
        incl = h ? Op::Combine(o, incl) : o;
        h = true;
      }
    }
    ex = ShflUp(incl, 1);
    exh = (__shfl_up_sync(kFull, static_cast<int>(h), 1) != 0) && li > 0;
    seg_total = ShflIdx(incl, last);
    seg_has = __shfl_sync(kFull, static_cast<int>(h), last) != 0;
  }
  if (unit_threads <= 32) {
    excl = {ex, exh};
    total = {seg_total, seg_has};
    return;
  }
  const int warp = threadIdx.x >> 5;
  if (lane == 31) {
    sh.warp_agg[parity][warp] = seg_total;
    sh.warp_has[parity][warp] = seg_has;
  }
  __syncthreads();
  const int warps_per_unit = unit_threads >> 5;
  const int first = warp & ~(warps_per_unit - 1);
  Maybe<Agg> before{Agg{}, false};
  if (full) {
    // A left fold over the unit's warps, all of which have items.
    Agg all = sh.warp_agg[parity][first];
#pragma unroll
    for (int k = 1; k < kWarps; ++k) {
      if (k >= warps_per_unit) break;
      if (first + k == warp) before = {all, true};
      all = Op::Combine(all, sh.warp_agg[parity][first + k]);
    }
    total = {all, true};
  } else {
    Maybe<Agg> all{Agg{}, false};
    for (int w = first; w < first + warps_per_unit; ++w) {
      if (w == warp) before = all;
      if (sh.warp_has[parity][w]) all = Compose<Op>(all, Maybe<Agg>{sh.warp_agg[parity][w], true});
    }
    total = all;
  }
  excl = Compose<Op>(before, Maybe<Agg>{ex, exh});
}

// A look-back word is written and read as one 128-bit access (single-copy atomic on sm_70 and
// later), so a reader that sees the status also sees the value: no fence and no second dependent
// load, and a lane can have all of its loads in flight at once.
__device__ __forceinline__ void PublishWord(ulonglong2* p, unsigned long long value,
                                            unsigned long long status) {
  asm volatile(
      "{\n\t.reg .b128 w;\n\tmov.b128 w, {%1, %2};\n\tst.relaxed.gpu.global.b128 [%0], w;\n\t}" ::
          "l"(p),
      "l"(value), "l"(status)
      : "memory");
}

__device__ __forceinline__ ulonglong2 PollWord(const ulonglong2* p) {
  ulonglong2 w;
  asm volatile(
      "{\n\t.reg .b128 w;\n\tld.relaxed.gpu.global.b128 w, [%2];\n\tmov.b128 {%0, %1}, w;\n\t}"
      : "=l"(w.x), "=l"(w.y)
      : "l"(p));
  return w;
}

// The composition of everything before `tile` (> 0) in its row; called by all lanes of one warp.
// It is always the left fold (((a0 . a1) . a2) ... a[tile-1]) of the row's tile aggregates: it
// starts from the latest inclusive prefix among the kLookbackRange tiles before this one (itself
// that left fold, made the same way) and folds the aggregates after it in order. So its bits do
// not depend on how far the other tiles had got, and no tile waits for one particular
// predecessor: any inclusive prefix in range will do, and tile 0 publishes one without looking
// back.
template <typename Op, typename Agg>
__device__ __forceinline__ Agg LookbackPrefix(const LookbackTemp& lb, int64_t slot0, int64_t tile,
                                              Agg* fold) {
  constexpr int kRange = Tuning::kLookbackRange;
  constexpr int kPerLane = kRange / 32;
  const int lane = threadIdx.x & 31;
  // Position i of the range is tile `first + i`; the lane polls positions lane * kPerLane + k.
  const int64_t first = tile - kRange;
  const ulonglong2* words = lb.words + slot0;
  ulonglong2 w[kPerLane];
  int start;
  for (;;) {
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      const int64_t t = first + lane * kPerLane + k;
      w[k] = t >= 0 ? PollWord(words + t) : ulonglong2{0, kWordEmpty};
    }
    int latest = -1;
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      if (w[k].y == kWordInclusive) latest = k;
    }
    const unsigned with_inclusive = __ballot_sync(kFull, latest >= 0);
    if (with_inclusive != 0) {
      const int src = 31 - __clz(static_cast<int>(with_inclusive));
      start = src * kPerLane + __shfl_sync(kFull, latest, src);
      bool missing = false;
#pragma unroll
      for (int k = 0; k < kPerLane; ++k) {
        missing = missing || (lane * kPerLane + k > start && w[k].y == kWordEmpty);
      }
      if (!__any_sync(kFull, missing)) break;
    }
    __nanosleep(64);
  }
#pragma unroll
  for (int k = 0; k < kPerLane; ++k) fold[lane * kPerLane + k] = Unpack<Agg>(w[k].x);
  __syncwarp();
  Agg p{};
  if (lane == 0) {
    p = fold[start];
    for (int i = start + 1; i < kRange; ++i) p = Op::Combine(p, fold[i]);
  }
  return ShflIdx(p, 0);
}

// The composition of every item before this thread's first one in its row: the unit scan, then
// (rows of several tiles) the walk's carry or, in the kLookback variant (which runs only
// look-back groups), the look-back. `carry` holds the composition of the tiles a walk has passed
// (start it empty); every thread of the block must call this once per tile.
template <bool kLookback, typename Op, typename Agg>
__device__ __forceinline__ Maybe<Agg> ThreadPrefix(Agg mine, bool has, const Unit& u,
                                                   ScanShared<Agg>& sh, const LookbackTemp& lb,
                                                   Maybe<Agg>& carry) {
  Maybe<Agg> excl;
  Maybe<Agg> total;
  UnitScan<Op>(mine, has, u.full, u.unit_threads, static_cast<int>(u.tile & 1), sh, excl, total);
  if constexpr (!kLookback) {
    if (u.tiles == 1) return excl;
    const Maybe<Agg> prefix = Compose<Op>(carry, excl);
    carry = Compose<Op>(carry, total);
    return prefix;
  } else {
    // Look-back rows have one unit per block, every unit of the group is valid, and every tile
    // has items. The last tile of a row publishes nothing: no tile reads it.
    const int64_t slot0 = sh.desc.slot_begin + u.row * u.tiles;
    const bool last_tile = u.tile == u.tiles - 1;
    ulonglong2* word = lb.words + slot0 + u.tile;
    if (threadIdx.x == 0 && !last_tile) {
      PublishWord(word, Pack(total.v), u.tile == 0 ? kWordInclusive : kWordAggregate);
    }
    if (threadIdx.x < 32) {
      Maybe<Agg> p{Agg{}, false};
      if (u.tile > 0) p = {LookbackPrefix<Op, Agg>(lb, slot0, u.tile, sh.fold), true};
      if (threadIdx.x == 0) {
        sh.prefix = p.v;
        sh.prefix_has = p.has;
        if (u.tile > 0 && !last_tile) {
          PublishWord(word, Pack(Compose<Op>(p, total).v), kWordInclusive);
        }
      }
    }
    __syncthreads();
    return Compose<Op>(Maybe<Agg>{sh.prefix, sh.prefix_has != 0}, excl);
  }
}

}  // namespace scanserve::cuda::device

#endif  // SCANSERVE_KERNELS_CUDA_SCAN_DEVICE_CUH_
