// linear_scan (ops.md section 1) and its backward (section 2) on one tile of lanes.
//
// Lanes are addressed in processing order (tiles.h), so reverse scans run the same loops as
// forward ones with a negative time stride. kR > 0: that many BDL rows interleaved, their
// latency chains overlapping; kR == 0: a contiguous BLD channel block, vectorized across channels.
#include <algorithm>
#include <cstdint>

#include "cpu/kernels.h"
#include "cpu/numeric.h"
#include "cpu/tiles.h"
#include "cpu/tuning.h"

namespace scanserve::cpu {
namespace {

constexpr int64_t MaxLanes(int kR) { return kR > 0 ? kR : Tuning::kLaneTile; }

template <typename E, bool kB, bool kC, int kR>
void LinearForwardLanes(const LinearScanOptions& o, const LinearScanProblem& p, const Lanes& g) {
  using S = typename E::Storage;
  const S* __restrict a = static_cast<const S*>(p.a);
  const S* __restrict x = static_cast<const S*>(p.x);
  const S* __restrict b = static_cast<const S*>(p.b);
  const S* __restrict c = static_cast<const S*>(p.c);
  S* __restrict y = static_cast<S*>(p.y);
  const int64_t lanes = kR > 0 ? kR : g.lanes;
  const int64_t ls = kR > 0 ? g.lane_stride : 1;
  float h[MaxLanes(kR)];
  for (int64_t j = 0; j < lanes; ++j) h[j] = o.has_h0 ? p.h0[g.state_index + j] : 0.0f;
  for (int64_t k = 0; k < g.length; ++k) {
    const int64_t base = g.start + k * g.time_stride;
    for (int64_t j = 0; j < lanes; ++j) {
      const int64_t i = base + j * ls;
      float in = E::Load(x[i]);
      if constexpr (kB) in = E::Load(b[i]) * in;
      const float hv = E::Load(a[i]) * h[j] + in;
      h[j] = hv;
      if constexpr (kC) {
        y[i] = E::Store(E::Load(c[i]) * hv);
      } else {
        y[i] = E::Store(hv);
      }
    }
  }
  if (o.return_final_state) {
    for (int64_t j = 0; j < lanes; ++j) p.final_state[g.state_index + j] = h[j];
  }
}

template <typename E, bool kB, bool kC>
void LinearForwardTile(const LinearScanOptions& o, const LinearScanProblem& p, const Tile& t) {
  ForEachLaneGroup(
      MakeLanes(p.shape, o.layout, o.reverse, t), o.layout,
      [&](const Lanes& g, auto r) { LinearForwardLanes<E, kB, kC, r.value>(o, p, g); });
}

// Backward in chunks of Tuning::kBackwardChunk processed steps, last chunk first. For each chunk
// the forward states are laid out in `hist` as rows of `lanes`: row 0 the state before the chunk,
// row 1 + m the state after its step m. Without given states they are recomputed from per-chunk
// checkpoints with the forward's exact arithmetic, so they equal the forward's float32 states.
template <typename E, bool kB, bool kC, bool kStates, int kR>
void LinearBackwardLanes(const LinearScanBackwardOptions& o, const LinearScanBackwardProblem& p,
                         const Lanes& g) {
  using S = typename E::Storage;
  const S* __restrict a = static_cast<const S*>(p.a);
  const S* __restrict x = static_cast<const S*>(p.x);
  const S* __restrict dy = static_cast<const S*>(p.dy);
  const S* __restrict b = static_cast<const S*>(p.b);
  const S* __restrict c = static_cast<const S*>(p.c);
  const float* __restrict states = p.states;
  S* __restrict da = static_cast<S*>(p.da);
  S* __restrict dx = static_cast<S*>(p.dx);
  S* __restrict db = static_cast<S*>(p.db);
  S* __restrict dc = static_cast<S*>(p.dc);
  const int64_t lanes = kR > 0 ? kR : g.lanes;
  const int64_t ls = kR > 0 ? g.lane_stride : 1;
  const int64_t chunk = Tuning::kBackwardChunk;
  const int64_t chunks = (g.length + chunk - 1) / chunk;

  float* scratch = ThreadScratch(static_cast<size_t>((chunks + chunk + 1) * lanes));
  float* __restrict checkpoints = scratch;  // chunks rows: state before each chunk
  float* __restrict hist = scratch + chunks * lanes;

  float h[MaxLanes(kR)];
  for (int64_t j = 0; j < lanes; ++j) h[j] = o.has_h0 ? p.h0[g.state_index + j] : 0.0f;
  if constexpr (!kStates) {
    for (int64_t q = 0; q < chunks; ++q) {
      for (int64_t j = 0; j < lanes; ++j) checkpoints[q * lanes + j] = h[j];
      const int64_t k_end = std::min(g.length, (q + 1) * chunk);
      for (int64_t k = q * chunk; k < k_end; ++k) {
        const int64_t base = g.start + k * g.time_stride;
        for (int64_t j = 0; j < lanes; ++j) {
          const int64_t i = base + j * ls;
          float in = E::Load(x[i]);
          if constexpr (kB) in = E::Load(b[i]) * in;
          h[j] = E::Load(a[i]) * h[j] + in;
        }
      }
    }
  }

  float dh_next[MaxLanes(kR)];
  float a_next[MaxLanes(kR)];
  for (int64_t j = 0; j < lanes; ++j) dh_next[j] = a_next[j] = 0.0f;
  for (int64_t q = chunks - 1; q >= 0; --q) {
    const int64_t k0 = q * chunk;
    const int64_t k1 = std::min(g.length, k0 + chunk);
    // Fill hist for this chunk.
    if constexpr (kStates) {
      for (int64_t j = 0; j < lanes; ++j) {
        hist[j] = k0 == 0 ? (o.has_h0 ? p.h0[g.state_index + j] : 0.0f)
                          : states[g.start + (k0 - 1) * g.time_stride + j * ls];
      }
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t base = g.start + k * g.time_stride;
        float* __restrict row = hist + (k - k0 + 1) * lanes;
        for (int64_t j = 0; j < lanes; ++j) row[j] = states[base + j * ls];
      }
    } else {
      for (int64_t j = 0; j < lanes; ++j) hist[j] = checkpoints[q * lanes + j];
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t base = g.start + k * g.time_stride;
        const float* __restrict prev = hist + (k - k0) * lanes;
        float* __restrict row = hist + (k - k0 + 1) * lanes;
        for (int64_t j = 0; j < lanes; ++j) {
          const int64_t i = base + j * ls;
          float in = E::Load(x[i]);
          if constexpr (kB) in = E::Load(b[i]) * in;
          row[j] = E::Load(a[i]) * prev[j] + in;
        }
      }
    }
    for (int64_t k = k1 - 1; k >= k0; --k) {
      const int64_t base = g.start + k * g.time_stride;
      const float* __restrict h_prev = hist + (k - k0) * lanes;
      const float* __restrict h_cur = hist + (k - k0 + 1) * lanes;
      for (int64_t j = 0; j < lanes; ++j) {
        const int64_t i = base + j * ls;
        const float dyv = E::Load(dy[i]);
        const float gv = kC ? dyv * E::Load(c[i]) : dyv;
        const float dh = gv + a_next[j] * dh_next[j];
        da[i] = E::Store(dh * h_prev[j]);
        if constexpr (kB) {
          dx[i] = E::Store(dh * E::Load(b[i]));
          db[i] = E::Store(dh * E::Load(x[i]));
        } else {
          dx[i] = E::Store(dh);
        }
        if constexpr (kC) dc[i] = E::Store(dyv * h_cur[j]);
        dh_next[j] = dh;
        a_next[j] = E::Load(a[i]);
      }
    }
  }
  if (o.has_h0) {
    for (int64_t j = 0; j < lanes; ++j) p.dh0[g.state_index + j] = a_next[j] * dh_next[j];
  }
}

template <typename E, bool kB, bool kC, bool kStates>
void LinearBackwardTile(const LinearScanBackwardOptions& o, const LinearScanBackwardProblem& p,
                        const Tile& t) {
  ForEachLaneGroup(
      MakeLanes(p.shape, o.layout, o.reverse, t), o.layout,
      [&](const Lanes& g, auto r) { LinearBackwardLanes<E, kB, kC, kStates, r.value>(o, p, g); });
}

template <typename E>
void LinearForwardDtype(const LinearScanOptions& o, const LinearScanProblem& p, const Tile& t) {
  if (o.has_b) {
    if (o.has_c) return LinearForwardTile<E, true, true>(o, p, t);
    return LinearForwardTile<E, true, false>(o, p, t);
  }
  if (o.has_c) return LinearForwardTile<E, false, true>(o, p, t);
  return LinearForwardTile<E, false, false>(o, p, t);
}

template <typename E, bool kStates>
void LinearBackwardStates(const LinearScanBackwardOptions& o, const LinearScanBackwardProblem& p,
                          const Tile& t) {
  if (o.has_b) {
    if (o.has_c) return LinearBackwardTile<E, true, true, kStates>(o, p, t);
    return LinearBackwardTile<E, true, false, kStates>(o, p, t);
  }
  if (o.has_c) return LinearBackwardTile<E, false, true, kStates>(o, p, t);
  return LinearBackwardTile<E, false, false, kStates>(o, p, t);
}

template <typename E>
void LinearBackwardDtype(const LinearScanBackwardOptions& o, const LinearScanBackwardProblem& p,
                         const Tile& t) {
  if (o.has_states) return LinearBackwardStates<E, true>(o, p, t);
  return LinearBackwardStates<E, false>(o, p, t);
}

}  // namespace

void LinearScanTile(const LinearScanOptions& o, const LinearScanProblem& p, const Tile& t) {
  switch (o.dtype) {
    case DType::kFloat32:
      return LinearForwardDtype<F32>(o, p, t);
    case DType::kFloat16:
      return LinearForwardDtype<F16>(o, p, t);
    case DType::kBFloat16:
      return LinearForwardDtype<BF16>(o, p, t);
    case DType::kInt32:
    case DType::kInt64:
      return;  // rejected by the backend before any tile runs
  }
}

void LinearScanBackwardTile(const LinearScanBackwardOptions& o, const LinearScanBackwardProblem& p,
                            const Tile& t) {
  switch (o.dtype) {
    case DType::kFloat32:
      return LinearBackwardDtype<F32>(o, p, t);
    case DType::kFloat16:
      return LinearBackwardDtype<F16>(o, p, t);
    case DType::kBFloat16:
      return LinearBackwardDtype<BF16>(o, p, t);
    case DType::kInt32:
    case DType::kInt64:
      return;  // rejected by the backend before any tile runs
  }
}

}  // namespace scanserve::cpu
