// selective_scan (ops.md section 3) on one tile: a block of channels of one batch entry that share
// a group of variable B/C.
//
// State vectors are padded with zeros to a multiple of Tuning::kStateVector (A = B = C = 0 there,
// so the padded states stay 0 and add nothing), which lets the loop over N run as whole vectors,
// exp included (FastExp is branch-free). The sum over N uses kStateVector partial sums combined in
// a fixed order: the same for every tile, so results never depend on the batch.
// Variable B/C are converted to float per chunk of time steps, once per tile rather than once per
// channel.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "cpu/kernels.h"
#include "cpu/numeric.h"
#include "cpu/tiles.h"
#include "cpu/tuning.h"

namespace scanserve::cpu {
namespace {

constexpr int64_t kVec = Tuning::kStateVector;
static_assert(kVec == 8, "the partial-sum tree below is written for 8 lanes");

template <typename E, bool kVarB, bool kVarC>
void SelectiveTile(const SelectiveScanOptions& o, const SelectiveScanProblem& p, const Tile& t) {
  using S = typename E::Storage;
  const SeqShape& s = p.shape;
  const int64_t n_state = o.state_dim;
  const int64_t np = (n_state + kVec - 1) / kVec * kVec;
  const int64_t channels = t.count;
  const int64_t chunk = std::clamp(Tuning::kSelectiveChunkFloats / np, Tuning::kSelectiveMinChunk,
                                   Tuning::kSelectiveMaxChunk);
  const int64_t groups = o.groups;
  const int64_t group = t.first / (s.dim / groups);

  const size_t per_channel = static_cast<size_t>(channels * np);
  const size_t per_chunk = static_cast<size_t>(chunk * np);
  float* scratch = ThreadScratch(4 * per_channel + 2 * per_chunk);
  std::memset(scratch, 0, (4 * per_channel + 2 * per_chunk) * sizeof(float));
  float* const h_all = scratch;
  float* const a_all = h_all + per_channel;
  float* const bf_all = a_all + per_channel;   // fixed B, per channel
  float* const cf_all = bf_all + per_channel;  // fixed C, per channel
  float* const bt = cf_all + per_channel;      // variable B of the chunk, [step][n]
  float* const ct = bt + per_chunk;

  const auto* fixed_b = static_cast<const float*>(p.B);
  const auto* fixed_c = static_cast<const float*>(p.C);
  for (int64_t c = 0; c < channels; ++c) {
    const int64_t d = t.first + c;
    for (int64_t n = 0; n < n_state; ++n) {
      a_all[c * np + n] = p.A[d * n_state + n];
      if (o.has_h0) h_all[c * np + n] = p.h0[(t.batch * s.dim + d) * n_state + n];
      if constexpr (!kVarB) bf_all[c * np + n] = fixed_b[d * n_state + n];
      if constexpr (!kVarC) cf_all[c * np + n] = fixed_c[d * n_state + n];
    }
  }

  const S* __restrict u_in = static_cast<const S*>(p.u);
  const S* __restrict delta_in = static_cast<const S*>(p.delta);
  const S* __restrict z_in = static_cast<const S*>(p.z);
  const S* __restrict b_in = static_cast<const S*>(p.B);
  const S* __restrict c_in = static_cast<const S*>(p.C);
  S* __restrict y_out = static_cast<S*>(p.y);

  // Element offset of variable B/C entry (n, step) for this tile's batch entry and group.
  auto bc_offset = [&](int64_t n, int64_t step) {
    return o.layout == Layout::kBDL ? ((t.batch * groups + group) * n_state + n) * s.length + step
                                    : ((t.batch * s.length + step) * groups + group) * n_state + n;
  };

  // One step of one channel: c is the channel within the tile, m the step within the chunk.
  auto step = [&](int64_t c, int64_t step_index, int64_t m) {
    const int64_t d = t.first + c;
    const int64_t i = SeqOffset(s, o.layout, t.batch, d, step_index);
    const float u = E::Load(u_in[i]);
    float dt = E::Load(delta_in[i]);
    if (o.has_delta_bias) dt = dt + p.delta_bias[d];
    if (o.delta_softplus) dt = dt > 20.0f ? dt : std::log1p(std::exp(dt));
    const float dtu = dt * u;
    float* __restrict h = h_all + c * np;
    const float* __restrict a = a_all + c * np;
    const float* __restrict bm = kVarB ? bt + m * np : bf_all + c * np;
    const float* __restrict cm = kVarC ? ct + m * np : cf_all + c * np;
    float acc[kVec] = {};
    for (int64_t n0 = 0; n0 < np; n0 += kVec) {
      for (int64_t l = 0; l < kVec; ++l) {
        const int64_t n = n0 + l;
        const float hv = FastExp(dt * a[n]) * h[n] + dtu * bm[n];
        h[n] = hv;
        acc[l] = acc[l] + cm[n] * hv;
      }
    }
    float y = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    if (o.has_d_skip) y = y + p.d_skip[d] * u;
    if (o.has_z) {
      const float z = E::Load(z_in[i]);
      y = y * (z / (1.0f + std::exp(-z)));
    }
    y_out[i] = E::Store(y);
  };

  for (int64_t t0 = 0; t0 < s.length; t0 += chunk) {
    const int64_t steps = std::min(chunk, s.length - t0);
    for (int64_t m = 0; m < steps; ++m) {
      for (int64_t n = 0; n < n_state; ++n) {
        if constexpr (kVarB) bt[m * np + n] = E::Load(b_in[bc_offset(n, t0 + m)]);
        if constexpr (kVarC) ct[m * np + n] = E::Load(c_in[bc_offset(n, t0 + m)]);
      }
    }
    // BDL: a channel's steps are contiguous, so walk channel by channel; BLD: a step's channels
    // are contiguous, so walk step by step. The per-channel arithmetic is the same either way.
    if (o.layout == Layout::kBDL) {
      for (int64_t c = 0; c < channels; ++c) {
        for (int64_t m = 0; m < steps; ++m) step(c, t0 + m, m);
      }
    } else {
      for (int64_t m = 0; m < steps; ++m) {
        for (int64_t c = 0; c < channels; ++c) step(c, t0 + m, m);
      }
    }
  }

  if (o.return_last_state) {
    for (int64_t c = 0; c < channels; ++c) {
      const int64_t d = t.first + c;
      for (int64_t n = 0; n < n_state; ++n) {
        p.last_state[(t.batch * s.dim + d) * n_state + n] = h_all[c * np + n];
      }
    }
  }
}

template <typename E>
void SelectiveDtype(const SelectiveScanOptions& o, const SelectiveScanProblem& p, const Tile& t) {
  if (o.variable_b) {
    if (o.variable_c) return SelectiveTile<E, true, true>(o, p, t);
    return SelectiveTile<E, true, false>(o, p, t);
  }
  if (o.variable_c) return SelectiveTile<E, false, true>(o, p, t);
  return SelectiveTile<E, false, false>(o, p, t);
}

}  // namespace

void AppendSelectiveTiles(int64_t problem, const SelectiveScanOptions& o, const SeqShape& s,
                          std::vector<Tile>& tiles) {
  if (s.rows() <= 0) return;
  const int64_t span = (o.variable_b || o.variable_c) ? s.dim / o.groups : s.dim;
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t g0 = 0; g0 < s.dim; g0 += span) {
      for (int64_t d = g0; d < g0 + span; d += Tuning::kSelectiveChannels) {
        tiles.push_back({problem, b, d, std::min(Tuning::kSelectiveChannels, g0 + span - d)});
      }
    }
  }
}

void SelectiveScanTile(const SelectiveScanOptions& o, const SelectiveScanProblem& p,
                       const Tile& t) {
  switch (o.dtype) {
    case DType::kFloat32:
      return SelectiveDtype<F32>(o, p, t);
    case DType::kFloat16:
      return SelectiveDtype<F16>(o, p, t);
    case DType::kBFloat16:
      return SelectiveDtype<BF16>(o, p, t);
    case DType::kInt32:
    case DType::kInt64:
      return;  // rejected by the backend before any tile runs
  }
}

}  // namespace scanserve::cpu
