// Device code and dispatch of the selective scan (ops.md section 3).
//
// Work decomposition. A block owns `rows` consecutive channels of one (batch, group) pair, so that
// the variable B and C of that group are staged once per tile for all of them, and walks the whole
// sequence in tiles of `tile` steps. Each channel's N states are split over P = ceil(N / S)
// threads holding S states each in registers for the entire sequence: the recurrence is a plain
// sequential loop, one exp2 per (step, state), no scan tree and no second pass. Per tile:
// - prefetch: raw u, delta, z of the next tile into registers, and B and C (16-bit inputs at two
//   states: cp.async into shared memory), the global loads in flight during compute;
// - compute: each state-thread advances its S states over the tile and per step writes its partial
//   sum over its states of C * h to shared memory;
// - finalize: the partial sums are added in state order, D * u and the z gate applied, y stored;
// - stage: the prefetched tile becomes dt = softplus(delta + bias) and dt * u in shared memory,
//   computed once per (channel, step) rather than once per state-thread.
// Two barriers per tile separate them, except in the kernel that copies B and C: it double-buffers
// and finalizes the tile before and stages the tile after beside each tile's compute, with one.
// Steps past the end of a row are staged with dt = 0, which leaves every state unchanged exactly
// (exp2(0) = 1 and dt * u * B = 0), so tiles need no tail branches in the recurrence.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <type_traits>
#include <utility>
#include <vector>

#include "cuda/selective_scan_kernel.h"
#include "cuda/selective_scan_tuning.h"

namespace scanserve::cuda {
namespace {

namespace tuning = selective_tuning;

constexpr float kLog2e = 1.4426950408889634f;

// One request as the kernel reads it. Written by the host into the pinned workspace.
struct Desc {
  const void* u;
  const void* delta;
  const void* z;
  const void* B;
  const void* C;
  const float* A;
  const float* d_skip;
  const float* delta_bias;
  const float* h0;
  void* y;
  float* last_state;
  long long batch;
  long long dim;
  long long length;
  long long first_block;  // index of this request's first block in the launch
  int vec_ok;             // four-step vectors of u, delta, z and y are aligned (BDL only)
  int bc_copy16;          // B and C rows can be copied in 16-byte pieces (the fast path's copies)
};

struct Params {
  const Desc* descs;
  int num_descs;
  int n;              // N
  int groups;         // G
  int state_threads;  // P = ceil(N / S)
  int rows;           // R, channels per block
  int tile;           // T, steps per tile (multiple of 8)
  bool bld;
  bool has_z;
  bool softplus;
  bool has_d_skip;
  bool has_bias;
  bool has_h0;
  bool last_state;
  bool fast;  // launch the kFast kernel (host side only: the kernel knows it from its template)
};

__device__ __forceinline__ float Ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Copies `bytes` (kBytes, or 0 for none) from global memory to the kBytes of shared memory at
// shared address `dst`, filling with zeros what it does not copy; completes at cp.async.wait_all.
template <int kBytes>
__device__ __forceinline__ void CopyAsync(unsigned dst, const void* src, int bytes) {
  if constexpr (kBytes == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes)
                 : "memory");
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(dst), "l"(src), "r"(bytes)
                 : "memory");
  }
}

// ops.md: log1p(exp(v)), and v itself where v > 20. Written as max(v, 0) + log1p(exp(-|v|)) with
// log1p(e) = e * P(e) on [0, 1], P a degree-8 Chebyshev fit of log1p(e) / e (relative error
// 2.2e-7 in float32): branch-free and one exp2, where log1pf costs a few dozen instructions.
__device__ __forceinline__ float Softplus(float v) {
  const float e = Ex2(-fabsf(v) * kLog2e);
  float p = 5.126102362e-03f;
  p = fmaf(p, e, -2.907406539e-02f);
  p = fmaf(p, e, 7.751608640e-02f);
  p = fmaf(p, e, -1.360224783e-01f);
  p = fmaf(p, e, 1.907688081e-01f);
  p = fmaf(p, e, -2.483539879e-01f);
  p = fmaf(p, e, 3.331812024e-01f);
  p = fmaf(p, e, -4.999944568e-01f);
  p = fmaf(p, e, 9.999999404e-01f);
  const float r = fmaxf(v, 0.f) + e * p;
  return v > 20.f ? v : r;
}

// The same function for 16-bit inputs, whose outputs keep 8 or 11 bits: log1p(e) as lg2(1 + e) *
// ln2 (absolute error about 1e-7), seven instructions fewer than the polynomial for one more MUFU
// op.
__device__ __forceinline__ float SoftplusCoarse(float v) {
  const float e = Ex2(-fabsf(v) * kLog2e);
  float l;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(l) : "f"(1.f + e));
  // Past v = 17, 1 + e rounds to 1, lg2 gives 0 and the result is v itself: ops.md's cut at 20
  // needs no branch here.
  return fmaf(l, 0.6931471805599453f, fmaxf(v, 0.f));
}

// z * sigmoid(z); for very negative z the denominator overflows to inf and the gate goes to 0.
__device__ __forceinline__ float SiluGate(float z) { return __fdividef(z, 1.f + Ex2(-z * kLog2e)); }

// ---- element types: four consecutive steps of a sequence tensor, loaded raw -------------------
// The raw values stay in registers untouched until the stage step, so the global loads of the next
// tile are still in flight while the current tile is computed.

struct F32 {
  using Raw = float;
  static constexpr bool kCoarseSoftplus = false;
  struct Quad {
    float v[4];
  };
  __device__ static Quad Load(const float* p, long long step, int count, bool vec) {
    Quad q;
    if (vec) {
      const float4 x = __ldcs(reinterpret_cast<const float4*>(p));
      q.v[0] = x.x;
      q.v[1] = x.y;
      q.v[2] = x.z;
      q.v[3] = x.w;
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i) q.v[i] = i < count ? __ldcs(p + i * step) : 0.f;
    }
    return q;
  }
  __device__ static float Get(const Quad& q, int i) { return q.v[i]; }
  __device__ static float ToFloat(float x) { return x; }
  // One element of B or C, kept raw until staged.
  using One = float;
  __device__ static One LoadOne(const float* p) { return __ldg(p); }
  __device__ static float OneToFloat(One x) { return x; }
  __device__ static void Store(float* p, long long step, int count, bool vec, const float (&y)[4]) {
    if (vec) {
      __stcs(reinterpret_cast<float4*>(p), make_float4(y[0], y[1], y[2], y[3]));
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        if (i < count) __stcs(p + i * step, y[i]);
      }
    }
  }
};

// float16 and bfloat16 share the raw handling: four 16-bit words packed in two registers however
// they were loaded (one vector load, or strided or tail loads), so that a quad costs two registers.
template <typename Conv>
struct Bits16 {
  using Raw = unsigned short;
  static constexpr bool kCoarseSoftplus = true;
  struct Quad {
    unsigned int w[2];
  };
  __device__ static Quad Load(const unsigned short* p, long long step, int count, bool vec) {
    Quad q;
    if (vec) {
      const uint2 x = __ldcs(reinterpret_cast<const uint2*>(p));
      q.w[0] = x.x;
      q.w[1] = x.y;
    } else {
      unsigned int v[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) v[i] = i < count ? __ldcs(p + i * step) : 0u;
      q.w[0] = v[0] | (v[1] << 16);
      q.w[1] = v[2] | (v[3] << 16);
    }
    return q;
  }
  __device__ static float Get(const Quad& q, int i) {
    return Conv::ToFloat(static_cast<unsigned short>((q.w[i >> 1] >> (16 * (i & 1))) & 0xffffu));
  }
  __device__ static float ToFloat(unsigned short x) { return Conv::ToFloat(x); }
  using One = unsigned int;
  __device__ static One LoadOne(const unsigned short* p) { return __ldg(p); }
  __device__ static float OneToFloat(One x) {
    return Conv::ToFloat(static_cast<unsigned short>(x));
  }
  __device__ static void Store(unsigned short* p, long long step, int count, bool vec,
                               const float (&y)[4]) {
    if (vec) {
      uint2 x;
      x.x = Conv::FromFloat(y[0]) | (static_cast<unsigned int>(Conv::FromFloat(y[1])) << 16);
      x.y = Conv::FromFloat(y[2]) | (static_cast<unsigned int>(Conv::FromFloat(y[3])) << 16);
      __stcs(reinterpret_cast<uint2*>(p), x);
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        if (i < count) p[i * step] = Conv::FromFloat(y[i]);
      }
    }
  }
};

struct HalfConv {
  __device__ static float ToFloat(unsigned short x) { return __half2float(__ushort_as_half(x)); }
  __device__ static unsigned short FromFloat(float f) {
    return __half_as_ushort(__float2half_rn(f));
  }
};
struct BFloat16Conv {
  __device__ static float ToFloat(unsigned short x) {
    return __uint_as_float(static_cast<unsigned int>(x) << 16);
  }
  __device__ static unsigned short FromFloat(float f) {
    return __bfloat16_as_ushort(__float2bfloat16_rn(f));
  }
};
using F16 = Bits16<HalfConv>;
using BF16 = Bits16<BFloat16Conv>;

// S consecutive floats of shared memory (8- or 16-byte aligned by the layout).
template <int S>
__device__ __forceinline__ void LoadStates(const float* p, float (&v)[S]) {
  if constexpr (S == 2) {
    const float2 x = *reinterpret_cast<const float2*>(p);
    v[0] = x.x;
    v[1] = x.y;
  } else {
#pragma unroll
    for (int i = 0; i < S; i += 4) {
      const float4 x = *reinterpret_cast<const float4*>(p + i);
      v[i] = x.x;
      v[i + 1] = x.y;
      v[i + 2] = x.z;
      v[i + 3] = x.w;
    }
  }
}

// kFastP > 0: the configuration Mamba layers run (BDL rows aligned for four-step vectors, variable
// B and C, z, softplus and D_skip all on, tiles of kMaxTile steps, B and C offsets within 32 bits,
// kFastP state threads per channel). Those facts become compile-time constants, so that full tiles
// carry neither the scalar load path, nor the option branches, nor a loop over the partial sums;
// the arithmetic is the same as the general kernel's (kFastP = 0), step for step.
template <typename E, int S, bool kVarB, bool kVarC, bool kBld, int kFastP>
__global__ void __maxnreg__(tuning::kMaxRegisters) SelectiveScanKernel(const Params prm) {
  constexpr bool kFast = kFastP != 0;
  // Four-step staging units per thread and tile: a tile has kMaxTile / 4 of them per channel,
  // shared by the channel's P threads. With P known, registers are held for only as many as are
  // used (one at P = 8, where two cost (1, 5120, 16, 2048) bf16 8% on an H200).
  constexpr int kUnits =
      kFast ? std::max(1, tuning::kMaxTile / 4 / kFastP) : tuning::kUnitsPerThread;
  using Raw = typename E::Raw;
  using Quad = typename E::Quad;
  using One = typename E::One;
  constexpr int kBc = tuning::kBcPerThread;
  extern __shared__ float4 smem4[];
  float* const smem = reinterpret_cast<float*>(smem4);

  // The request this block belongs to: the last descriptor whose first block is not after it.
  const long long blk = blockIdx.x;
  int lo = 0;
  int hi = prm.num_descs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (prm.descs[mid].first_block <= blk) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  const Desc& ds = prm.descs[lo];
  const long long D = ds.dim;
  const long long L = ds.length;
  const int N = prm.n;
  const int G = prm.groups;
  const int P = kFast ? kFastP : prm.state_threads;
  const int R = prm.rows;
  const int T = kFast ? tuning::kMaxTile : prm.tile;
  const bool has_z = kFast || prm.has_z;
  const bool softplus = kFast || prm.softplus;
  const bool has_d_skip = kFast || prm.has_d_skip;
  const long long Dg = D / G;
  const long long blocks_per_group = (Dg + R - 1) / R;
  long long local = blk - ds.first_block;
  const long long cb = local % blocks_per_group;
  local /= blocks_per_group;
  const long long g = local % G;
  const long long b = local / G;
  const long long d0 = g * Dg + cb * R;
  const int rows_valid = static_cast<int>(min(static_cast<long long>(R), Dg - cb * R));

  const int nthreads = R * P;
  const int tid = threadIdx.x;
  // Thread tid runs state thread p of row r. A 16-byte shared load serves eight lanes at a time,
  // and rows r and r + 8k of dt and dt*u share banks: eight consecutive threads must hold eight
  // consecutive rows or repeat the same ones. Rows [0, R8) therefore walk in runs of R8, and the
  // R - R8 rows past them (four when R is not a multiple of eight) come last, for every p.
  const int R8 = R & ~7;
  const int r = tid < R8 * P ? tid % R8 : R8 + (tid - R8 * P) % (R - R8);
  const int p = tid < R8 * P ? tid / R8 : (tid - R8 * P) / (R - R8);
  const int TP = T + 4;      // padded row of dt, dt*u and partial y: conflict-free 16-byte access
  const int NP = P * S + 4;  // padded row of staged B and C
  constexpr bool kAsyncBc = kFast && S == 2 && !std::is_same_v<E, F32>;
  float* const s_dt = smem;
  float* const s_dtu = s_dt + R * TP;
  float* const s_skip = s_dtu + R * TP;   // D * u
  float* const s_gate = s_skip + R * TP;  // z * sigmoid(z)
  float* const s_y = s_gate + R * TP;     // [P][R][TP]
  // The copied-B-and-C kernel double-buffers dt, dt * u (in the D * u and gate rows, which it does
  // not use) and the partial outputs, so that a tile needs one barrier: see the tile loop.
  float* const s_B = s_y + (kAsyncBc ? 2 : 1) * P * R * TP;
  float* const s_C = s_B + (kVarB ? T * NP : 0);
  // Two states per thread with 16-bit inputs on the fast path: B and C stay in their 16-bit form
  // and in their global layout, one row of steps per state, copied by cp.async straight from
  // global to shared memory one tile ahead into the second of two buffers. No thread holds them in
  // registers, repacks them or computes an address per element: a thread issues a few 16- or 8-byte
  // copies per tile, against 8 loads with 64-bit addresses and 4 stores of words packed per
  // (step, state pair) before. In the recurrence a thread loads 8 steps of each of its rows with
  // one 16-byte load, and the conversions to float are exact, so the results keep their bits. At
  // four states per thread packing B and C (one 128-bit load per step) was 7% slower on an H100,
  // and that configuration keeps floats. The fast path is BDL only, so B and C rows run along time.
  constexpr int kPs = kFast ? kFastP * S : 1;  // state rows per tensor, N rounded up
  // 16-bit words per row: a multiple of 8 (16-byte copies), and 8 past the tile that the compute
  // loop's last lookahead reads.
  constexpr int kBcRow = tuning::kMaxTile + 8;
  constexpr int kBcBuffer = 2 * kPs * kBcRow;  // B's rows, then C's
  // A thread's copies per tile: B and C rows hold 2 * N * kMaxTile / 8 pieces of 16 bytes (twice
  // as many of 8), and blocks have at least kMinRows rows, so at most this many of 16 bytes.
  constexpr int kMaxCopies16 =
      kAsyncBc ? (2 * kPs * tuning::kMaxTile / 8 + tuning::kMinRows * kFastP - 1) /
                     (tuning::kMinRows * kFastP)
               : 1;
  constexpr int kMaxCopies = 2 * kMaxCopies16;
  static_assert(!kAsyncBc || 2 * kBcBuffer * 2 <= (2 * tuning::kMaxTile + 4) * (kPs + 4) * 4,
                "the two B and C buffers fit the shared memory SharedBytes gives B and C");
  unsigned short* const s_bc16 = reinterpret_cast<unsigned short*>(s_B);

  constexpr bool bld = kBld;
  const long long tstride = bld ? D : 1;  // elements between consecutive steps of one channel
  const bool vec_ok = kFast || ds.vec_ok != 0;

  // ---- per-thread recurrence state: S states of channel d in registers ----
  const bool row_ok = r < rows_valid;
  const long long d = d0 + r;
  float a2[S];
  float h[S];
  float bfix[S];
  float cfix[S];
#pragma unroll
  for (int s = 0; s < S; ++s) {
    const int n = p * S + s;
    const bool ok = row_ok && n < N;
    a2[s] = ok ? ds.A[d * N + n] * kLog2e : 0.f;
    h[s] = ok && prm.has_h0 ? ds.h0[(b * D + d) * N + n] : 0.f;
    if constexpr (!kVarB) bfix[s] = ok ? static_cast<const float*>(ds.B)[d * N + n] : 0.f;
    if constexpr (!kVarC) cfix[s] = ok ? static_cast<const float*>(ds.C)[d * N + n] : 0.f;
  }

  // Padded state columns of staged B and C stay zero: staging writes only n < N.
  if constexpr (kAsyncBc) {
    // Rows N..kPs - 1 of both tensors in both buffers: cp.async never writes them.
    const int pad_rows = kPs - N;
    for (int i = tid; i < 4 * pad_rows * kBcRow; i += nthreads) {
      const int rows_before = (i / kBcRow / pad_rows) * kPs + N + (i / kBcRow) % pad_rows;
      s_bc16[rows_before * kBcRow + i % kBcRow] = 0;
    }
  } else if constexpr (kVarB || kVarC) {
    const int pad = NP - N;
    for (int i = tid; i < T * pad; i += nthreads) {
      const int at = (i / pad) * NP + N + i % pad;
      if constexpr (kVarB) s_B[at] = 0.f;
      if constexpr (kVarC) s_C[at] = 0.f;
    }
  }

  // ---- staging units: four consecutive steps of one channel ----
  // BDL: consecutive threads walk along time (contiguous); BLD: along channels (contiguous).
  const int quads = T / 4;
  const int units = R * quads;
  bool u_on[kUnits];
  int u_step[kUnits];      // first step of the unit within a tile
  int u_smem[kUnits];      // offset of the unit in s_dt, s_dtu and each s_y slice
  long long u_at[kUnits];  // element index of the unit's first step in tile 0
  float u_bias[kUnits];
  float u_dskip[kUnits];
#pragma unroll
  for (int j = 0; j < kUnits; ++j) {
    const int ui = tid + j * nthreads;
    const int row = bld ? ui % R : ui / quads;
    u_step[j] = 4 * (bld ? ui / R : ui % quads);
    u_on[j] = ui < units && row < rows_valid;
    u_smem[j] = row * TP + u_step[j];
    u_at[j] = bld ? (b * L + u_step[j]) * D + d0 + row : (b * D + d0 + row) * L + u_step[j];
    u_bias[j] = u_on[j] && prm.has_bias ? ds.delta_bias[d0 + row] : 0.f;
    u_dskip[j] = u_on[j] && has_d_skip ? ds.d_skip[d0 + row] : 0.f;
  }

  // ---- B and C tile elements this thread prefetches: (step, state) packed as step << 10 | n ----
  int bc_pk[kBc];
#pragma unroll
  for (int k = 0; k < kBc; ++k) {
    const int e = tid + k * nthreads;
    const int t = bld ? e / N : e % T;
    const int n = bld ? e % N : e / T;
    bc_pk[k] = !kAsyncBc && e < T * N ? (t << 10) | n : -1;
  }
  const long long GN = static_cast<long long>(G) * N;
  // Element index of (step 0 of the tile, state 0) in B and C, and the offset of (t, n) from it.
  auto bc_tile_at = [&](long long t0) {
    return bld ? (b * L + t0) * GN + g * N : (b * G + g) * N * L + t0;
  };
  auto bc_offset = [&](int t, int n) {
    return bld ? static_cast<long long>(t) * GN + n : static_cast<long long>(n) * L + t;
  };
  // The fast path's offsets fit 32 bits (the dispatch checks N * L), so they are computed once.
  int bc_off[kBc];
#pragma unroll
  for (int k = 0; k < kBc; ++k) {
    bc_off[k] =
        kFast && bc_pk[k] >= 0 ? static_cast<int>(bc_offset(bc_pk[k] >> 10, bc_pk[k] & 1023)) : 0;
  }

  const Raw* const gu = static_cast<const Raw*>(ds.u);
  const Raw* const gdelta = static_cast<const Raw*>(ds.delta);
  const Raw* const gz = static_cast<const Raw*>(ds.z);
  const Raw* const gB = static_cast<const Raw*>(ds.B);
  const Raw* const gC = static_cast<const Raw*>(ds.C);
  Raw* const gy = static_cast<Raw*>(ds.y);

  // The fast path (BDL, the N * L of a request within 32 bits) forms a unit's sequence pointers
  // once and moves them by t0 elements per tile, a 32-bit offset.
  const Raw* unit_u[kUnits];
  const Raw* unit_delta[kUnits];
  const Raw* unit_z[kUnits];
  Raw* unit_y[kUnits];
#pragma unroll
  for (int j = 0; j < kUnits; ++j) {
    unit_u[j] = gu + u_at[j];
    unit_delta[j] = gdelta + u_at[j];
    unit_z[j] = gz + u_at[j];
    unit_y[j] = gy + u_at[j];
  }

  // The copies of B and C this thread issues per tile, `steps` (8 or 4) steps each: copy c = tid +
  // j * nthreads covers steps (c % (T / steps)) * steps on of state row c / (T / steps), B's rows
  // before C's. 16-byte pieces where the request's rows allow them (half the instructions).
  const bool copy16 = ds.bc_copy16 != 0;
  const int copy_steps = copy16 ? 8 : 4;
  const int copies_per_row = tuning::kMaxTile / copy_steps;
  const Raw* copy_src[kMaxCopies];  // in tile 0
  unsigned copy_dst[kMaxCopies];    // shared-space address in buffer 0; kNoCopy: none
  constexpr unsigned kNoCopy = ~0u;
  if constexpr (kAsyncBc) {
    const unsigned s_bc_base = static_cast<unsigned>(__cvta_generic_to_shared(s_bc16));
    const long long row0 = (b * G + g) * N * L;  // element index of (state 0, step 0) of the group
#pragma unroll
    for (int j = 0; j < kMaxCopies; ++j) {
      const int c = tid + j * nthreads;
      const int row = c / copies_per_row;  // tensor * N + n
      const int step = copy_steps * (c % copies_per_row);
      const int tensor = row / N;
      const int n = row % N;
      const bool on = row < 2 * N && (!copy16 || j < kMaxCopies16);
      copy_src[j] = (tensor == 0 ? gB : gC) + row0 + static_cast<long long>(n) * L + step;
      copy_dst[j] =
          on ? s_bc_base + 2u * static_cast<unsigned>((tensor * kPs + n) * kBcRow + step) : kNoCopy;
    }
  }

  // The fast path keeps each unit's D * u and z gate in registers from its staging to its finalize
  // (the same thread does both), instead of a round trip through shared memory; D_skip and z are
  // always on there, so the kept finalize needs no option checks. At four states per thread with
  // 16-bit inputs this ran 1.7% slower on an H100 and is not used.
  constexpr bool kKeepGate = kFast && (S == 2 || std::is_same_v<E, F32>);
  // [buffer][unit][step]: the copied-B-and-C kernel stages a tile while the one before it still
  // waits to be finalized.
  float kept_skip[kAsyncBc ? 2 : 1][kKeepGate ? kUnits : 1][4];
  float kept_gate[kAsyncBc ? 2 : 1][kKeepGate ? kUnits : 1][4];
  Quad raw_u[kUnits];
  Quad raw_delta[kUnits];
  Quad raw_z[kUnits];
  One raw_b[kBc];
  One raw_c[kBc];

  // Tiles that lie wholly inside the row (all but at most the last) take the kFull paths: no
  // per-step bounds checks.
  auto prefetch = [&](long long t0, auto full_tag) {
    constexpr bool kFull = decltype(full_tag)::value;
#pragma unroll
    for (int j = 0; j < kUnits; ++j) {
      if (!u_on[j]) continue;
      const int count = kFull ? 4 : static_cast<int>(max(0LL, min(4LL, L - t0 - u_step[j])));
      if (count == 0) continue;
      const bool vec = !bld && vec_ok && (kFull || count == 4);
      if constexpr (kFast) {
        const int t0i = static_cast<int>(t0);
        raw_u[j] = E::Load(unit_u[j] + t0i, 1, count, vec);
        raw_delta[j] = E::Load(unit_delta[j] + t0i, 1, count, vec);
        raw_z[j] = E::Load(unit_z[j] + t0i, 1, count, vec);
      } else {
        const long long at = u_at[j] + t0 * tstride;
        raw_u[j] = E::Load(gu + at, tstride, count, vec);
        raw_delta[j] = E::Load(gdelta + at, tstride, count, vec);
        if (has_z) raw_z[j] = E::Load(gz + at, tstride, count, vec);
      }
    }
    if constexpr (kAsyncBc) {
      const unsigned buffer = static_cast<unsigned>((t0 / tuning::kMaxTile) & 1) * 2u * kBcBuffer;
      const int t0i = static_cast<int>(t0);  // the fast path's N * L fits 32 bits
      // L is a multiple of the piece (8 steps for 16-byte pieces, 4 on the fast path): a piece
      // lies wholly inside the row or past it, and one past it reads nothing and fills zeros
      // (finite, and multiplied by dt = 0).
      auto copy = [&](int j, auto bytes_tag) {
        constexpr int kBytes = decltype(bytes_tag)::value;
        if (copy_dst[j] == kNoCopy) return;
        const bool inside =
            kFull || t0i + (kBytes / 2) * ((tid + j * nthreads) % (tuning::kMaxTile * 2 / kBytes)) <
                         static_cast<int>(L);
        CopyAsync<kBytes>(copy_dst[j] + buffer, inside ? copy_src[j] + t0i : copy_src[j],
                          inside ? kBytes : 0);
      };
      if (copy16) {
#pragma unroll
        for (int j = 0; j < kMaxCopies16; ++j) copy(j, std::integral_constant<int, 16>{});
      } else {
#pragma unroll
        for (int j = 0; j < kMaxCopies; ++j) copy(j, std::integral_constant<int, 8>{});
      }
    } else if constexpr (kVarB || kVarC) {
      const long long tv = L - t0;
      const long long base = bc_tile_at(t0);
#pragma unroll
      for (int k = 0; k < kBc; ++k) {
        const int t = bc_pk[k] >> 10;
        if (bc_pk[k] < 0 || (!kFull && t >= tv)) continue;
        const long long at = base + (kFast ? bc_off[k] : bc_offset(t, bc_pk[k] & 1023));
        if constexpr (kVarB) raw_b[k] = E::LoadOne(gB + at);
        if constexpr (kVarC) raw_c[k] = E::LoadOne(gC + at);
      }
    }
  };

  // `buf_tag`: which of the double buffers (0 or 1) the tile uses; always 0 but in the
  // copied-B-and-C kernel.
  auto stage = [&](long long t0, auto full_tag, auto buf_tag) {
    constexpr bool kFull = decltype(full_tag)::value;
    constexpr int kBuf = decltype(buf_tag)::value;
    float* const dt_base = s_dt + kBuf * 2 * R * TP;
    float* const dtu_base = s_dtu + kBuf * 2 * R * TP;
#pragma unroll
    for (int j = 0; j < kUnits; ++j) {
      if (!u_on[j]) continue;
      float dtq[4];
      float dtuq[4];
      float skip[4];
      float gate[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const bool valid = kFull || t0 + u_step[j] + i < L;
        const float uf = valid ? E::Get(raw_u[j], i) : 0.f;
        float v = (valid ? E::Get(raw_delta[j], i) : 0.f) + u_bias[j];
        if (softplus) v = E::kCoarseSoftplus ? SoftplusCoarse(v) : Softplus(v);
        dtq[i] = valid ? v : 0.f;
        dtuq[i] = dtq[i] * uf;
        skip[i] = u_dskip[j] * uf;
        gate[i] = has_z && valid ? SiluGate(E::Get(raw_z[j], i)) : 1.f;
      }
      *reinterpret_cast<float4*>(dt_base + u_smem[j]) = make_float4(dtq[0], dtq[1], dtq[2], dtq[3]);
      *reinterpret_cast<float4*>(dtu_base + u_smem[j]) =
          make_float4(dtuq[0], dtuq[1], dtuq[2], dtuq[3]);
      if constexpr (kKeepGate) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          kept_skip[kBuf][j][i] = skip[i];
          kept_gate[kBuf][j][i] = gate[i];
        }
      } else {
        if (has_d_skip) {
          *reinterpret_cast<float4*>(s_skip + u_smem[j]) =
              make_float4(skip[0], skip[1], skip[2], skip[3]);
        }
        if (has_z) {
          *reinterpret_cast<float4*>(s_gate + u_smem[j]) =
              make_float4(gate[0], gate[1], gate[2], gate[3]);
        }
      }
    }
    if constexpr (kAsyncBc) {
      // This thread's copies of the next tile have landed; the barrier after staging shows every
      // thread's to the block.
      asm volatile("cp.async.wait_all;\n" ::: "memory");
    } else if constexpr (kVarB || kVarC) {
      const long long tv = L - t0;
#pragma unroll
      for (int k = 0; k < kBc; ++k) {
        if (bc_pk[k] < 0) continue;
        const int t = bc_pk[k] >> 10;
        const int at = t * NP + (bc_pk[k] & 1023);
        if constexpr (kVarB) s_B[at] = kFull || t < tv ? E::OneToFloat(raw_b[k]) : 0.f;
        if constexpr (kVarC) s_C[at] = kFull || t < tv ? E::OneToFloat(raw_c[k]) : 0.f;
      }
      // Whatever the prefetch does not cover (large N, few rows per block): loads that wait.
      if (kBc * nthreads < T * N) {
        const long long base = bc_tile_at(t0);
        for (int e = tid + kBc * nthreads; e < T * N; e += nthreads) {
          const int t = bld ? e / N : e % T;
          const int n = bld ? e % N : e / T;
          const long long at = base + bc_offset(t, n);
          if constexpr (kVarB) s_B[t * NP + n] = kFull || t < tv ? E::ToFloat(gB[at]) : 0.f;
          if constexpr (kVarC) s_C[t * NP + n] = kFull || t < tv ? E::ToFloat(gC[at]) : 0.f;
        }
      }
    }
  };

  // One four-step group of a thread's recurrence inputs, held in registers.
  struct Group {
    float dt[4];
    float dtu[4];
    float b[4][S];
    float c[4][S];
  };
  auto load_group = [&](const float* dt_row, const float* dtu_row, int t, Group& gr) {
    const float4 dt4 = *reinterpret_cast<const float4*>(dt_row + t);
    const float4 dtu4 = *reinterpret_cast<const float4*>(dtu_row + t);
    gr.dt[0] = dt4.x;
    gr.dt[1] = dt4.y;
    gr.dt[2] = dt4.z;
    gr.dt[3] = dt4.w;
    gr.dtu[0] = dtu4.x;
    gr.dtu[1] = dtu4.y;
    gr.dtu[2] = dtu4.z;
    gr.dtu[3] = dtu4.w;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if constexpr (kVarB) {
        LoadStates<S>(s_B + (t + i) * NP + p * S, gr.b[i]);
      } else {
#pragma unroll
        for (int s = 0; s < S; ++s) gr.b[i][s] = bfix[s];
      }
      if constexpr (kVarC) {
        LoadStates<S>(s_C + (t + i) * NP + p * S, gr.c[i]);
      } else {
#pragma unroll
        for (int s = 0; s < S; ++s) gr.c[i][s] = cfix[s];
      }
    }
  };

  // The recurrence over one four-step group: the states advance, and yq[i] gets step i's partial
  // sum over this thread's states of C * h. b(i, s) and c(i, s) give step i's B and C of state s.
  auto advance_group = [&](const float(&dt)[4], const float(&dtu)[4], auto b, auto c,
                           float(&yq)[4]) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float acc = 0.f;
#pragma unroll
      for (int s = 0; s < S; ++s) {
        const float a = Ex2(dt[i] * a2[s]);
        h[s] = fmaf(a, h[s], dtu[i] * b(i, s));
        acc = fmaf(c(i, s), h[s], acc);
      }
      yq[i] = acc;
    }
  };

  auto compute = [&](long long t0, auto full_tag, auto buf_tag) {
    constexpr int kBuf = decltype(buf_tag)::value;
    if (!row_ok) return;
    const float* const dt_row = s_dt + kBuf * 2 * R * TP + r * TP;
    const float* const dtu_row = s_dtu + kBuf * 2 * R * TP + r * TP;
    float* const y_row = s_y + kBuf * P * R * TP + (p * R + r) * TP;
    if constexpr (kAsyncBc) {
      const unsigned short* const bc_rows = s_bc16 + kBuf * kBcBuffer + p * S * kBcRow;
      // Copied B and C: each of the thread's rows is loaded 8 steps at a time (one 16-byte load
      // per row and two groups instead of two 8-byte ones), a pair of groups ahead, and converted
      // where it is used. The tile is always whole here (steps past the end of the row were
      // staged with dt = 0 and copied as zeros, and leave the state unchanged), so the loop unrolls
      // completely. The last lookahead reads the 8 padding steps of each row.
      struct Rows8 {
        uint4 b[S];
        uint4 c[S];
      };
      auto load_rows8 = [&](int t, Rows8& w) {
#pragma unroll
        for (int s = 0; s < S; ++s) {
          w.b[s] = *reinterpret_cast<const uint4*>(bc_rows + s * kBcRow + t);
          w.c[s] = *reinterpret_cast<const uint4*>(bc_rows + (kPs + s) * kBcRow + t);
        }
      };
      auto half = [](const uint4& w, int i) {  // step i (0..7) of an 8-step load
        const unsigned word = i < 2 ? w.x : i < 4 ? w.y : i < 6 ? w.z : w.w;
        return static_cast<unsigned short>(word >> (16 * (i & 1)));
      };
      // Four steps from `first` (0 or 4) of an 8-step load, with the group's dt and dt * u.
      auto advance = [&](const float4& dt4, const float4& dtu4, const Rows8& w, int first,
                         float* y_out) {
        const float dt[4] = {dt4.x, dt4.y, dt4.z, dt4.w};
        const float dtu[4] = {dtu4.x, dtu4.y, dtu4.z, dtu4.w};
        float yq[4];
        advance_group(
            dt, dtu, [&](int i, int s) { return E::ToFloat(half(w.b[s], first + i)); },
            [&](int i, int s) { return E::ToFloat(half(w.c[s], first + i)); }, yq);
        *reinterpret_cast<float4*>(y_out) = make_float4(yq[0], yq[1], yq[2], yq[3]);
      };
      Rows8 cur_rows;
      load_rows8(0, cur_rows);
      float4 dt_a = *reinterpret_cast<const float4*>(dt_row);
      float4 dtu_a = *reinterpret_cast<const float4*>(dtu_row);
#pragma unroll
      for (int t = 0; t < tuning::kMaxTile; t += 8) {
        // Every load comes before the store it could otherwise wait behind.
        const float4 dt_b = *reinterpret_cast<const float4*>(dt_row + t + 4);
        const float4 dtu_b = *reinterpret_cast<const float4*>(dtu_row + t + 4);
        Rows8 next_rows;
        load_rows8(t + 8, next_rows);
        advance(dt_a, dtu_a, cur_rows, 0, y_row + t);
        dt_a = *reinterpret_cast<const float4*>(dt_row + t + 8);
        dtu_a = *reinterpret_cast<const float4*>(dtu_row + t + 8);
        advance(dt_b, dtu_b, cur_rows, 4, y_row + t + 4);
        cur_rows = next_rows;
      }
    } else {
      // Software-pipelined by one four-step group. The compiler cannot tell the partial-sum rows
      // from the inputs in shared memory, so it never moves a load above an earlier store: written
      // in plain order, each group's loads would wait for the previous group's store and the whole
      // group would run at the latency of its loads and exp2s. The next group's loads therefore
      // come before this group's store (2-4% faster on an H100 at four states per thread). Past
      // the last group they read the padding at the end of each row and of the B and C tile, whose
      // values are never used.
      //
      // Four groups per iteration give the scheduler more independent exp2s (1-3% faster on an
      // H200 at two states per thread, and at four with float32 inputs). 16-bit inputs at four
      // states ran 1% slower that way, and at eight states four groups spill more registers: both
      // keep two.
      constexpr bool kFull = decltype(full_tag)::value;
      constexpr int kGroupsPerIteration = S == 2 || (S == 4 && std::is_same_v<E, F32>) ? 4 : 2;
      const int steps =
          kFull ? T : static_cast<int>(min(static_cast<long long>(T), (L - t0 + 3) & ~3LL));
      Group cur;
      load_group(dt_row, dtu_row, 0, cur);
#pragma unroll kGroupsPerIteration
      for (int t = 0; t < steps; t += 4) {
        Group next;
        load_group(dt_row, dtu_row, t + 4, next);
        float yq[4];
        advance_group(
            cur.dt, cur.dtu, [&](int i, int s) { return cur.b[i][s]; },
            [&](int i, int s) { return cur.c[i][s]; }, yq);
        *reinterpret_cast<float4*>(y_row + t) = make_float4(yq[0], yq[1], yq[2], yq[3]);
        cur = next;
      }
    }
  };

  auto finalize = [&](long long t0, auto full_tag, auto buf_tag) {
    constexpr bool kFull = decltype(full_tag)::value;
    constexpr int kBuf = decltype(buf_tag)::value;
    const float* const y_base = s_y + kBuf * P * R * TP;
#pragma unroll
    for (int j = 0; j < kUnits; ++j) {
      if (!u_on[j]) continue;
      const int count = kFull ? 4 : static_cast<int>(max(0LL, min(4LL, L - t0 - u_step[j])));
      if (count == 0) continue;
      float4 acc = *reinterpret_cast<const float4*>(y_base + u_smem[j]);
      for (int q = 1; q < P; ++q) {
        const float4 x = *reinterpret_cast<const float4*>(y_base + q * R * TP + u_smem[j]);
        acc.x += x.x;
        acc.y += x.y;
        acc.z += x.z;
        acc.w += x.w;
      }
      if constexpr (kKeepGate) {
        acc.x = (acc.x + kept_skip[kBuf][j][0]) * kept_gate[kBuf][j][0];
        acc.y = (acc.y + kept_skip[kBuf][j][1]) * kept_gate[kBuf][j][1];
        acc.z = (acc.z + kept_skip[kBuf][j][2]) * kept_gate[kBuf][j][2];
        acc.w = (acc.w + kept_skip[kBuf][j][3]) * kept_gate[kBuf][j][3];
      } else {
        if (has_d_skip) {
          const float4 x = *reinterpret_cast<const float4*>(s_skip + u_smem[j]);
          acc.x += x.x;
          acc.y += x.y;
          acc.z += x.z;
          acc.w += x.w;
        }
        if (has_z) {
          const float4 x = *reinterpret_cast<const float4*>(s_gate + u_smem[j]);
          acc.x *= x.x;
          acc.y *= x.y;
          acc.z *= x.z;
          acc.w *= x.w;
        }
      }
      const float y[4] = {acc.x, acc.y, acc.z, acc.w};
      if constexpr (kFast) {
        E::Store(unit_y[j] + static_cast<int>(t0), 1, count, kFull || count == 4, y);
      } else {
        E::Store(gy + u_at[j] + t0 * tstride, tstride, count,
                 !bld && vec_ok && (kFull || count == 4), y);
      }
    }
  };

  // Every tile but the last two runs the kFull paths alone, so that the main loop carries none of
  // the bounds checks (nor their registers); the tail tiles follow it.
  using Full = std::true_type;
  using Part = std::false_type;
  constexpr std::integral_constant<int, 0> kNoNext{};
  constexpr std::integral_constant<int, 1> kPartNext{};
  constexpr std::integral_constant<int, 2> kFullNext{};
  using Buf0 = std::integral_constant<int, 0>;
  using Buf1 = std::integral_constant<int, 1>;
  const long long full_tiles = L / T;
  const bool has_part = full_tiles * T < L;
  if (full_tiles > 0) {
    prefetch(0, Full{});
    stage(0, Full{}, Buf0{});
  } else {
    prefetch(0, Part{});
    stage(0, Part{}, Buf0{});
  }
  __syncthreads();
  if constexpr (kAsyncBc) {
    // One barrier per tile. Tile k computes from buffer k % 2 while the same threads finalize tile
    // k - 1 from the other buffer's partial outputs and stage tile k + 1 into the other buffer's
    // dt rows, which tile k - 1 finished reading before the last barrier; the barrier then shows
    // tile k's partial outputs and tile k + 1's inputs to the block. Finalizing and staging thus
    // run beside the recurrence of the same warp and of its block mates, and a warp waits for the
    // others once per tile instead of twice. Only the last tile can be partial: tiles before it
    // finalize whole.
    auto step = [&](long long k, auto buf_tag, auto finalize_tag, auto next_tag) {
      constexpr int kBuf = decltype(buf_tag)::value;
      using Other = std::integral_constant<int, 1 - kBuf>;
      constexpr int kNext = decltype(next_tag)::value;
      const long long t0 = k * T;
      if constexpr (kNext == 2) prefetch(t0 + T, Full{});
      if constexpr (kNext == 1) prefetch(t0 + T, Part{});
      compute(t0, Full{}, buf_tag);
      if constexpr (decltype(finalize_tag)::value) finalize(t0 - T, Full{}, Other{});
      if constexpr (kNext == 2) stage(t0 + T, Full{}, Other{});
      if constexpr (kNext == 1) stage(t0 + T, Part{}, Other{});
      __syncthreads();
    };
    const long long tiles = full_tiles + (has_part ? 1 : 0);
    // Any tile: the kind of the next one and the buffer decided at run time.
    auto any_step = [&](long long k, auto finalize_tag) {
      auto with_buf = [&](auto buf_tag) {
        if (k + 1 < full_tiles) {
          step(k, buf_tag, finalize_tag, kFullNext);
        } else if (k + 1 < tiles) {
          step(k, buf_tag, finalize_tag, kPartNext);
        } else {
          step(k, buf_tag, finalize_tag, kNoNext);
        }
      };
      if (k & 1) {
        with_buf(Buf1{});
      } else {
        with_buf(Buf0{});
      }
    };
    any_step(0, std::false_type{});
    long long k = 1;
    // The main loop, two tiles per pass so that the buffers are compile-time constants.
    for (; k + 2 < full_tiles; k += 2) {
      step(k, Buf1{}, std::true_type{}, kFullNext);
      step(k + 1, Buf0{}, std::true_type{}, kFullNext);
    }
    for (; k < tiles; ++k) any_step(k, std::true_type{});
    const long long last = tiles - 1;
    auto finalize_last = [&](auto buf_tag) {
      if (has_part) {
        finalize(last * T, Part{}, buf_tag);
      } else {
        finalize(last * T, Full{}, buf_tag);
      }
    };
    if (last & 1) {
      finalize_last(Buf1{});
    } else {
      finalize_last(Buf0{});
    }
  } else {
    auto tile = [&](long long t0, auto cur_tag, auto next_tag) {
      constexpr int kNext = decltype(next_tag)::value;
      if constexpr (kNext == 2) prefetch(t0 + T, Full{});
      if constexpr (kNext == 1) prefetch(t0 + T, Part{});
      compute(t0, cur_tag, Buf0{});
      __syncthreads();
      finalize(t0, cur_tag, Buf0{});
      if constexpr (kNext == 2) stage(t0 + T, Full{}, Buf0{});
      if constexpr (kNext == 1) stage(t0 + T, Part{}, Buf0{});
      __syncthreads();
    };
    for (long long k = 0; k + 1 < full_tiles; ++k) tile(k * T, Full{}, kFullNext);
    if (full_tiles > 0) {
      if (has_part) {
        tile((full_tiles - 1) * T, Full{}, kPartNext);
      } else {
        tile((full_tiles - 1) * T, Full{}, kNoNext);
      }
    }
    if (has_part) tile(full_tiles * T, Part{}, kNoNext);
  }

  if (prm.last_state && row_ok) {
#pragma unroll
    for (int s = 0; s < S; ++s) {
      const int n = p * S + s;
      if (n < N) ds.last_state[(b * D + d) * N + n] = h[s];
    }
  }
}

// `async_bc`: the kernel that copies B and C (two buffers of partial outputs).
size_t SharedBytes(int S, int P, int R, int T, bool var_b, bool var_c, bool async_bc) {
  const size_t TP = static_cast<size_t>(T) + 4;
  const size_t NP = static_cast<size_t>(P) * S + 4;
  // Four rows past the B and C tile: the compute loop's loads run one four-step group ahead.
  const size_t floats = (4 + static_cast<size_t>(P) * (async_bc ? 2 : 1)) * R * TP +
                        (static_cast<size_t>(var_b) + var_c) * static_cast<size_t>(T) * NP + 4 * NP;
  return floats * sizeof(float);
}

template <typename E, int S, bool kVarB, bool kVarC>
cudaError_t LaunchTyped(const Params& prm, unsigned int blocks, size_t smem, cudaStream_t stream) {
  auto* kernel = prm.bld ? &SelectiveScanKernel<E, S, kVarB, kVarC, true, 0>
                         : &SelectiveScanKernel<E, S, kVarB, kVarC, false, 0>;
  if constexpr (kVarB && kVarC && S != 8) {
    if (prm.fast) {
      kernel = prm.state_threads == 4 ? &SelectiveScanKernel<E, S, true, true, false, 4>
                                      : &SelectiveScanKernel<E, S, true, true, false, 8>;
    }
  }
  if (smem > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess) return err;
  }
  kernel<<<blocks, prm.rows * prm.state_threads, smem, stream>>>(prm);
  return cudaGetLastError();
}

template <typename E, int S>
cudaError_t LaunchFlags(const Params& prm, bool var_b, bool var_c, unsigned int blocks, size_t smem,
                        cudaStream_t stream) {
  if (var_b) {
    return var_c ? LaunchTyped<E, S, true, true>(prm, blocks, smem, stream)
                 : LaunchTyped<E, S, true, false>(prm, blocks, smem, stream);
  }
  return var_c ? LaunchTyped<E, S, false, true>(prm, blocks, smem, stream)
               : LaunchTyped<E, S, false, false>(prm, blocks, smem, stream);
}

template <typename E>
cudaError_t LaunchStates(const Params& prm, int S, bool var_b, bool var_c, unsigned int blocks,
                         size_t smem, cudaStream_t stream) {
  switch (S) {
    case 2:
      return LaunchFlags<E, 2>(prm, var_b, var_c, blocks, smem, stream);
    case 4:
      return LaunchFlags<E, 4>(prm, var_b, var_c, blocks, smem, stream);
    case 8:
      return LaunchFlags<E, 8>(prm, var_b, var_c, blocks, smem, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

long long BlocksOf(const SeqShape& s, int groups, int rows) {
  if (s.batch <= 0 || s.dim <= 0 || s.length <= 0) return 0;
  const long long per_group = s.dim / groups;
  return s.batch * groups * ((per_group + rows - 1) / rows);
}

// An attribute of the current device, or the H100's value where there is none: these numbers only
// tune the geometry.
int DeviceAttribute(cudaDeviceAttr attribute, int h100_value) {
  int device = 0;
  int value = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&value, attribute, device) != cudaSuccess || value <= 0) {
    cudaGetLastError();  // clear the error
    return h100_value;
  }
  return value;
}

int MultiprocessorCount() { return DeviceAttribute(cudaDevAttrMultiProcessorCount, 132); }

bool Aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

int StateThreads(int n, int states) { return (n + states - 1) / states; }

// Four-step vectors of u, delta, z and y are aligned (BDL rows of a length divisible by four).
bool VectorsAligned(const SelectiveScanOptions& options, const SelectiveScanRows& p) {
  const size_t vec_bytes = 4 * DTypeSize(options.dtype);
  return options.layout == Layout::kBDL && p.shape.length % 4 == 0 && Aligned(p.u, vec_bytes) &&
         Aligned(p.delta, vec_bytes) && Aligned(p.y, vec_bytes) &&
         (!options.has_z || Aligned(p.z, vec_bytes));
}

// Whether a request runs the kFast kernel at S states per thread: its own alignment and shape and
// the options decide, never its batch mates, so that batching keeps its bits.
bool RunsFastKernel(const SelectiveScanOptions& options, const SelectiveScanRows& p, int S) {
  const int N = options.state_dim;
  const int P = StateThreads(N, S);
  // 16-bit inputs at two states copy B and C to shared memory in 8-byte pieces.
  const bool bc_copies_aligned =
      DTypeSize(options.dtype) == 4 || S != 2 || (Aligned(p.B, 8) && Aligned(p.C, 8));
  return options.variable_b && options.variable_c && options.has_z && options.delta_softplus &&
         options.has_d_skip && S != 8 && (P == 4 || P == 8) && VectorsAligned(options, p) &&
         bc_copies_aligned &&
         static_cast<long long>(N) * p.shape.length < INT_MAX - tuning::kMaxTile;
}

// Whether a launch of the kFast kernel (`fast`) or of the general one copies B and C with
// cp.async: the kFast kernel at two states per thread with 16-bit inputs (its kAsyncBc). Nothing
// waits for a B and C prefetch there, whatever the rows per block.
bool CopiesBcAsync(const SelectiveScanOptions& options, int S, bool fast) {
  return fast && DTypeSize(options.dtype) == 2 && S == 2;
}

// Whether blocks of `rows` channels prefetch their whole B and C tile into registers (else the rest
// is staged with loads that wait).
bool PrefetchCoversBc(const SelectiveScanOptions& options, int P, int T, int rows) {
  return !(options.variable_b || options.variable_c) ||
         rows * P * tuning::kBcPerThread >= T * options.state_dim;
}

// When a launch fits the GPU in one wave, its time is that of the multiprocessors with the most
// channels. Powers of two can leave that badly uneven (5120 channels at N = 8 in blocks of 16: 3
// blocks on some multiprocessors, 2 on others, 48 channels at most); a multiple of four near
// `rows` that lowers the most channels per multiprocessor, still in one wave and with the B and C
// tile still prefetched, takes its place (there: 20 rows, 2 blocks everywhere, 40 channels at
// most). Blocks grow no larger than kTargetThreads (or `rows`, if larger): at N = 16 the same
// 5120 channels ran 2-4% slower in 160-thread blocks of 20 rows than in 128-thread blocks of 16,
// though the latter put 48 channels on some multiprocessors. Rows per block only schedule
// channels: results do not depend on them.
int BalanceRows(const SelectiveScanOptions& options, int S, int P, int T, int rows,
                std::span<const SelectiveScanRows> group, bool prefetched_bc) {
  auto covers = [&](int r) { return !prefetched_bc || PrefetchCoversBc(options, P, T, r); };
  const int sms = MultiprocessorCount();
  const int regs_per_sm = DeviceAttribute(cudaDevAttrMaxRegistersPerMultiprocessor, 65536);
  const int smem_per_sm = DeviceAttribute(cudaDevAttrMaxSharedMemoryPerMultiprocessor, 233472);
  auto resident = [&](int r) {  // blocks of r rows that fit one multiprocessor at once
    const int warps = (r * P + 31) / 32;
    const int by_regs = regs_per_sm / (warps * 32 * tuning::kMaxRegisters);
    // Plus the 1 KiB the driver reserves per block.
    const size_t smem =
        SharedBytes(S, P, r, T, options.variable_b, options.variable_c, !prefetched_bc) + 1024;
    const int by_smem = static_cast<int>(static_cast<size_t>(smem_per_sm) / smem);
    return std::min(by_regs, by_smem);
  };
  auto most_channels = [&](int r) -> long long {  // per multiprocessor; -1: not one wave
    long long blocks = 0;
    for (const SelectiveScanRows& p : group) blocks += BlocksOf(p.shape, options.groups, r);
    const int per_sm = resident(r);
    if (per_sm < 1 || blocks > static_cast<long long>(per_sm) * sms) return -1;
    return (blocks + sms - 1) / sms * r;
  };
  long long best = most_channels(rows);
  if (best < 0 || !covers(rows)) return rows;
  int chosen = rows;
  const int max_threads = std::min(tuning::kMaxThreads, std::max(rows * P, tuning::kTargetThreads));
  for (int r = std::max(tuning::kMinRows, rows / 2); r <= 2 * rows; r += 4) {
    if (r * P > max_threads || r > tuning::kMaxRows) break;
    if (!covers(r)) continue;
    const long long c = most_channels(r);
    if (c >= 0 && c < best) {
      best = c;
      chosen = r;
    }
  }
  return chosen;
}

}  // namespace

int SelectiveScanStatesPerThread(const SelectiveScanOptions& options, const SeqShape& shape) {
  return tuning::StatesPerThread(options.state_dim, shape.rows());
}

int SelectiveScanRowsPerBlock(const SelectiveScanOptions& options, int states_per_thread,
                              std::span<const SelectiveScanRows> group) {
  const int N = options.state_dim;
  const int P = StateThreads(N, states_per_thread);
  const int T = tuning::TileLength(P);
  // A launch's requests all run the kFast kernel or none does (the launch groups them so).
  if (CopiesBcAsync(options, states_per_thread,
                    !group.empty() && RunsFastKernel(options, group.front(), states_per_thread))) {
    // Fewer warps on the busiest multiprocessor pay there: an H100 ran (1, 5120, 16, 2048) bf16 in
    // 0.101 ms at 8 rows (64 threads), 0.106 at 16, and (1, 768) to (1, 6336) and (2, 2048)
    // 2.5-6% faster at 8 rows than at 16.
    int rows = tuning::kMinRows;
    while (rows * 2 * P <= tuning::kAsyncBcTargetThreads) rows *= 2;
    return BalanceRows(options, states_per_thread, P, T, rows, group, /*prefetched_bc=*/false);
  }
  const int cap = std::min(tuning::kMaxRows, tuning::kMaxThreads / P);
  int rows = tuning::kMinRows;
  // At least the target threads, and enough threads that the B and C tile fits the prefetch.
  while (rows * 2 <= cap &&
         (rows * 2 * P <= tuning::kTargetThreads || !PrefetchCoversBc(options, P, T, rows))) {
    rows *= 2;
  }
  const long long want = static_cast<long long>(tuning::kMinBlocksPerSm) * MultiprocessorCount();
  while (rows > tuning::kMinRows) {
    // Halving never gives up a whole B and C prefetch: the loads that wait instead cost more than
    // the extra blocks gain (an H100 ran (1, 2112, 16, 2048) bf16 in 0.065 ms at 16 rows, 0.096 at
    // 8; at four states, 8448 channels in 0.145 ms at 32 rows, 0.240 at 16).
    if (PrefetchCoversBc(options, P, T, rows) && !PrefetchCoversBc(options, P, T, rows / 2)) break;
    long long blocks = 0;
    for (const SelectiveScanRows& p : group) blocks += BlocksOf(p.shape, options.groups, rows);
    if (blocks >= want) break;
    rows /= 2;
  }
  return BalanceRows(options, states_per_thread, P, T, rows, group, /*prefetched_bc=*/true);
}

size_t SelectiveScanWorkspaceBytes(size_t num_problems) {
  return std::max<size_t>(num_problems, 1) * sizeof(Desc);
}

SelectiveScanLaunchResult LaunchSelectiveScan(const SelectiveScanOptions& options,
                                              std::span<const SelectiveScanRows> problems,
                                              void* host_workspace, void* device_workspace,
                                              CUstream_st* stream, bool upload_descriptors,
                                              const SelectiveScanGeometry* force) {
  const int N = options.state_dim;
  if (N < 1 || N > 256 || options.groups < 1) {
    return {cudaErrorInvalidValue, "selective_scan: state_dim or groups out of range"};
  }
  if (force != nullptr) {
    const int S = force->states_per_thread;
    const int R = force->rows_per_block;
    if ((S != 2 && S != 4 && S != 8) || R < tuning::kMinRows || R > tuning::kMaxRows ||
        R % 4 != 0 || R * StateThreads(N, S) > tuning::kMaxThreads) {
      return {cudaErrorInvalidValue, "selective_scan: unsupported forced geometry"};
    }
  }
  if (problems.size() > kSelectiveScanMaxProblems) {
    return {cudaErrorInvalidValue, "selective_scan: too many problems in one launch"};
  }
  const bool bld = options.layout == Layout::kBLD;
  Desc* const descs = static_cast<Desc*>(host_workspace);
  static_assert(
      tuning::TileLength(4) == tuning::kMaxTile && tuning::TileLength(8) == tuning::kMaxTile,
      "the kFast kernel's tiles are kMaxTile steps long");

  // One launch per (states per thread, fast) group; descriptors of all groups go up in one copy.
  constexpr std::pair<int, bool> kGroupKeys[] = {{2, false}, {2, true},  {4, false},
                                                 {4, true},  {8, false}, {8, true}};
  struct Group {
    bool fast = false;
    int states = 0;
    int rows = 0;
    int first = 0;  // first descriptor
    int count = 0;
    long long blocks = 0;
  };
  Group groups[std::size(kGroupKeys)];
  int ngroups = 0;
  int count = 0;
  std::vector<SelectiveScanRows> members;
  for (const auto& [S, is_fast] : kGroupKeys) {
    members.clear();
    for (const SelectiveScanRows& p : problems) {
      if (BlocksOf(p.shape, options.groups, 1) == 0) continue;
      const int s = force != nullptr ? force->states_per_thread
                                     : SelectiveScanStatesPerThread(options, p.shape);
      if (s == S && RunsFastKernel(options, p, S) == is_fast) members.push_back(p);
    }
    if (members.empty()) continue;
    Group& grp = groups[ngroups++];
    grp.fast = is_fast;
    grp.states = S;
    grp.rows =
        force != nullptr ? force->rows_per_block : SelectiveScanRowsPerBlock(options, S, members);
    grp.first = count;
    for (const SelectiveScanRows& p : members) {
      Desc ds;
      std::memset(&ds, 0, sizeof(ds));
      ds.u = p.u;
      ds.delta = p.delta;
      ds.z = p.z;
      ds.B = p.B;
      ds.C = p.C;
      ds.A = p.A;
      ds.d_skip = p.d_skip;
      ds.delta_bias = p.delta_bias;
      ds.h0 = p.h0;
      ds.y = p.y;
      ds.last_state = p.last_state;
      ds.batch = p.shape.batch;
      ds.dim = p.shape.dim;
      ds.length = p.shape.length;
      ds.first_block = grp.blocks;
      ds.vec_ok = VectorsAligned(options, p);
      ds.bc_copy16 = p.shape.length % 8 == 0 && Aligned(p.B, 16) && Aligned(p.C, 16);
      std::memcpy(&descs[count], &ds, sizeof(ds));
      ++count;
      ++grp.count;
      grp.blocks += BlocksOf(p.shape, options.groups, grp.rows);
    }
    if (grp.blocks > INT_MAX) {
      return {cudaErrorInvalidConfiguration, "selective_scan: batch needs more than 2^31 blocks"};
    }
  }
  if (count == 0) return {};
  cudaError_t err = cudaSuccess;
  if (upload_descriptors) {
    err = cudaMemcpyAsync(device_workspace, host_workspace, count * sizeof(Desc),
                          cudaMemcpyHostToDevice, stream);
    if (err != cudaSuccess) return {err, "selective_scan: descriptor upload"};
  }
  for (int i = 0; i < ngroups; ++i) {
    const Group& grp = groups[i];
    Params prm;
    prm.descs = static_cast<const Desc*>(device_workspace) + grp.first;
    prm.num_descs = grp.count;
    prm.n = N;
    prm.groups = options.groups;
    prm.state_threads = StateThreads(N, grp.states);
    prm.rows = grp.rows;
    prm.tile = tuning::TileLength(prm.state_threads);
    prm.bld = bld;
    prm.has_z = options.has_z;
    prm.softplus = options.delta_softplus;
    prm.has_d_skip = options.has_d_skip;
    prm.has_bias = options.has_delta_bias;
    prm.has_h0 = options.has_h0;
    prm.last_state = options.return_last_state;
    prm.fast = grp.fast;
    const size_t smem =
        SharedBytes(grp.states, prm.state_threads, grp.rows, prm.tile, options.variable_b,
                    options.variable_c, CopiesBcAsync(options, grp.states, grp.fast));
    const auto nblocks = static_cast<unsigned int>(grp.blocks);
    const bool vb = options.variable_b;
    const bool vc = options.variable_c;
    switch (options.dtype) {
      case DType::kFloat32:
        err = LaunchStates<F32>(prm, grp.states, vb, vc, nblocks, smem, stream);
        break;
      case DType::kFloat16:
        err = LaunchStates<F16>(prm, grp.states, vb, vc, nblocks, smem, stream);
        break;
      case DType::kBFloat16:
        err = LaunchStates<BF16>(prm, grp.states, vb, vc, nblocks, smem, stream);
        break;
      default:
        return {cudaErrorInvalidValue,
                "selective_scan: dtype must be float32, float16 or bfloat16"};
    }
    if (err != cudaSuccess) return {err, "selective_scan: kernel launch"};
  }
  return {};
}

}  // namespace scanserve::cuda
