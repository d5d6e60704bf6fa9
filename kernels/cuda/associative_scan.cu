// associative_scan (ops.md section 4) on CUDA: kernels for every (dtype, operator) pair ops.md
// defines, and the host half of the scan_kernels.h API for them.
//
// 16-bit floats are combined in float32 and rounded once per output. Integer add wraps (done in
// unsigned arithmetic); float max/min propagate NaN; logaddexp is computed stably.
#include <cuda_runtime.h>

#include <cstdint>
#include <limits>
#include <type_traits>

#include "cuda/row_scan_plan.h"
#include "cuda/scan_device.cuh"
#include "cuda/scan_kernels.h"

namespace scanserve::cuda {
namespace {

using device::Elem;
using device::kIpt;
using device::kThreads;
using device::kWarps;
using device::LookbackTemp;
using device::Maybe;
using device::RowView;
using device::ScanShared;
using device::StageElems;
using device::Unit;
using plan::GroupDesc;

template <typename C, ScanOperator kOp>
struct AssocOp {
  __device__ static C Combine(C l, C r) {
    if constexpr (kOp == ScanOperator::kAdd) {
      if constexpr (std::is_integral_v<C>) {
        using U = std::make_unsigned_t<C>;
        return static_cast<C>(static_cast<U>(l) + static_cast<U>(r));
      } else {
        return l + r;
      }
    } else if constexpr (kOp == ScanOperator::kMul) {
      return l * r;
    } else if constexpr (kOp == ScanOperator::kMax) {
      if constexpr (std::is_integral_v<C>) {
        return l > r ? l : r;
      } else {
        return (l > r || l != l) ? l : r;  // a NaN on either side wins
      }
    } else if constexpr (kOp == ScanOperator::kMin) {
      if constexpr (std::is_integral_v<C>) {
        return l < r ? l : r;
      } else {
        return (l < r || l != l) ? l : r;
      }
    } else {
      static_assert(kOp == ScanOperator::kLogAddExp);
      if (l != l || r != r) return l + r;  // NaN
      const float hi = fmaxf(l, r);
      const float lo = fminf(l, r);
      if (isinf(hi)) return hi;  // +inf absorbs; both -inf stays -inf
      return hi + log1pf(expf(lo - hi));
    }
  }

  __device__ static C Identity() {
    if constexpr (kOp == ScanOperator::kAdd) {
      return C{0};
    } else if constexpr (kOp == ScanOperator::kMul) {
      return C{1};
    } else if constexpr (std::is_integral_v<C>) {
      return kOp == ScanOperator::kMax ? std::numeric_limits<C>::min()
                                       : std::numeric_limits<C>::max();
    } else {
      return kOp == ScanOperator::kMin ? INFINITY : -INFINITY;
    }
  }
};

struct AssocFlags {
  int ngroups;
  bool ticket;
  bool reverse;
  bool exclusive;
};

// One tile of associative_scan. Descriptor slots: in = {x}, out = {y}.
template <typename T, ScanOperator kOp, bool kLookback, typename C = typename Elem<T>::C>
__device__ __forceinline__ void AssocTile(const GroupDesc& g, const Unit& u, const AssocFlags& f,
                                          const RowView& view, C* stage, ScanShared<C>& sh,
                                          const LookbackTemp& lb, Maybe<C>& carry) {
  using Op = AssocOp<C, kOp>;
  const int count = u.span.count;
  C xv[kIpt];
  device::LoadItems(static_cast<const T*>(g.in[0]) + u.offset, view, u.span, stage, xv);
  // Threads holding all kIpt items (all but a row's last) fold without the item guards.
  const bool whole = count == kIpt;
  C mine = xv[0];
  if (whole) {
#pragma unroll
    for (int i = 1; i < kIpt; ++i) mine = Op::Combine(mine, xv[i]);
  } else {
#pragma unroll
    for (int i = 1; i < kIpt; ++i) {
      if (i < count) mine = Op::Combine(mine, xv[i]);
    }
  }
  const Maybe<C> prefix = device::ThreadPrefix<kLookback, Op>(mine, count > 0, u, sh, lb, carry);

  bool has = prefix.has;
  C acc = prefix.v;
  if (f.exclusive) {
#pragma unroll
    for (int i = 0; i < kIpt; ++i) {
      if (i < count) {
        const C x = xv[i];
        xv[i] = has ? acc : Op::Identity();
        acc = has ? Op::Combine(acc, x) : x;
        has = true;
      }
    }
  } else if (whole) {
    acc = has ? Op::Combine(acc, xv[0]) : xv[0];
    xv[0] = acc;
#pragma unroll
    for (int i = 1; i < kIpt; ++i) {
      acc = Op::Combine(acc, xv[i]);
      xv[i] = acc;
    }
  } else {
#pragma unroll
    for (int i = 0; i < kIpt; ++i) {
      if (i < count) {
        acc = has ? Op::Combine(acc, xv[i]) : xv[i];
        has = true;
        xv[i] = acc;
      }
    }
  }
  device::StoreItems(static_cast<T*>(g.out[0]) + u.offset, view, u.span, stage, xv);
}

template <typename T, ScanOperator kOp, bool kLookback>
__global__ void __launch_bounds__(kThreads, kLookback ? device::Tuning::kMinBlocksPerSmAssocLookback
                                                      : device::Tuning::kMinBlocksPerSm)
    AssociativeScanKernel(const GroupDesc* __restrict__ groups, AssocFlags f, LookbackTemp lb) {
  using C = typename Elem<T>::C;
  __shared__ ScanShared<C> sh;
  __shared__ alignas(16) C stage_all[kWarps][StageElems<C>()];
  device::LoadGroup(groups, f.ngroups, f.ticket, lb, sh);
  const GroupDesc& g = sh.desc;
  const RowView view{g.length, g.step_stride, f.reverse, false};
  C* stage = stage_all[threadIdx.x >> 5];
  const int64_t steps = !kLookback && g.walk ? g.tiles_per_row : 1;
  Maybe<C> carry{C{}, false};
  Unit u = device::MakeUnit(g, sh.vblock);
  if constexpr (kLookback) {
    device::PrefetchNextTile(g, u, view, static_cast<const T*>(g.in[0]) + u.offset,
                             device::Tuning::kAssocLookbackPrefetchTiles);
  }
  for (int64_t step = 0; step < steps; ++step) {
    if (step > 0) device::NextTile(g, u);
    if (step + 1 < steps) {
      device::PrefetchNextTile(g, u, view, static_cast<const T*>(g.in[0]) + u.offset);
    }
    AssocTile<T, kOp, kLookback>(g, u, f, view, stage, sh, lb, carry);
  }
}

template <typename T, ScanOperator kOp>
cudaError_t Enqueue(bool lookback, int64_t blocks, cudaStream_t stream, const GroupDesc* d,
                    const AssocFlags& f, const LookbackTemp& lb) {
  const dim3 grid(static_cast<unsigned>(blocks));
  if (lookback) {
    AssociativeScanKernel<T, kOp, true><<<grid, kThreads, 0, stream>>>(d, f, lb);
  } else {
    AssociativeScanKernel<T, kOp, false><<<grid, kThreads, 0, stream>>>(d, f, lb);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t EnqueueFloat(ScanOperator op, bool lookback, int64_t blocks, cudaStream_t stream,
                         const GroupDesc* d, const AssocFlags& f, const LookbackTemp& lb) {
  switch (op) {
    case ScanOperator::kAdd:
      return Enqueue<T, ScanOperator::kAdd>(lookback, blocks, stream, d, f, lb);
    case ScanOperator::kMul:
      return Enqueue<T, ScanOperator::kMul>(lookback, blocks, stream, d, f, lb);
    case ScanOperator::kMax:
      return Enqueue<T, ScanOperator::kMax>(lookback, blocks, stream, d, f, lb);
    case ScanOperator::kMin:
      return Enqueue<T, ScanOperator::kMin>(lookback, blocks, stream, d, f, lb);
    case ScanOperator::kLogAddExp:
      return Enqueue<T, ScanOperator::kLogAddExp>(lookback, blocks, stream, d, f, lb);
  }
  return cudaErrorInvalidValue;
}

template <typename T>
cudaError_t EnqueueInt(ScanOperator op, bool lookback, int64_t blocks, cudaStream_t stream,
                       const GroupDesc* d, const AssocFlags& f, const LookbackTemp& lb) {
  switch (op) {
    case ScanOperator::kAdd:
      return Enqueue<T, ScanOperator::kAdd>(lookback, blocks, stream, d, f, lb);
    case ScanOperator::kMax:
      return Enqueue<T, ScanOperator::kMax>(lookback, blocks, stream, d, f, lb);
    case ScanOperator::kMin:
      return Enqueue<T, ScanOperator::kMin>(lookback, blocks, stream, d, f, lb);
    case ScanOperator::kMul:
    case ScanOperator::kLogAddExp:
      break;
  }
  return cudaErrorInvalidValue;
}

void Fill(GroupDesc& d, const AssociativeScanRows& r) {
  d.in[0] = r.x;
  d.out[0] = r.y;
}

plan::SplitPlan Plan(std::span<const AssociativeScanRows> rows, GroupDesc* out) {
  return plan::PlanSplit(rows, out, Fill);
}

}  // namespace

LaunchSizes AssociativeScanSizes(const AssociativeScanOptions& /*o*/,
                                 std::span<const AssociativeScanRows> rows) {
  const plan::SplitPlan p = Plan(rows, nullptr);
  return {static_cast<size_t>(p.groups()) * sizeof(GroupDesc), p.temp_bytes};
}

void AssociativeScanDescribe(const AssociativeScanOptions& /*o*/,
                             std::span<const AssociativeScanRows> rows, void* temp,
                             void* host_descriptors) {
  (void)temp;
  Plan(rows, static_cast<GroupDesc*>(host_descriptors));
}

int AssociativeScanLaunch(const AssociativeScanOptions& o,
                          std::span<const AssociativeScanRows> rows, const void* device_descriptors,
                          void* temp, void* stream) {
  if (!OperatorSupports(o.op, o.dtype)) return cudaErrorInvalidValue;
  const plan::SplitPlan p = Plan(rows, nullptr);
  const auto s = static_cast<cudaStream_t>(stream);
  const auto* desc = static_cast<const GroupDesc*>(device_descriptors);
  int64_t first = 0;
  for (int k = 0; k < 2; ++k) {
    const plan::BatchPlan& part = p.part[k];
    if (part.blocks == 0) continue;
    if (part.blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
    LookbackTemp lb;
    cudaError_t err = device::PrepareLookback(temp, part.slots, s, &lb);
    if (err != cudaSuccess) return err;
    const AssocFlags f{static_cast<int>(part.groups), part.slots > 0, o.reverse, o.exclusive};
    const bool lookback = k == 0;
    const GroupDesc* d = desc + first;
    switch (o.dtype) {
      case DType::kFloat32:
        err = EnqueueFloat<float>(o.op, lookback, part.blocks, s, d, f, lb);
        break;
      case DType::kFloat16:
        err = EnqueueFloat<__half>(o.op, lookback, part.blocks, s, d, f, lb);
        break;
      case DType::kBFloat16:
        err = EnqueueFloat<__nv_bfloat16>(o.op, lookback, part.blocks, s, d, f, lb);
        break;
      case DType::kInt32:
        err = EnqueueInt<int32_t>(o.op, lookback, part.blocks, s, d, f, lb);
        break;
      case DType::kInt64:
        err = EnqueueInt<int64_t>(o.op, lookback, part.blocks, s, d, f, lb);
        break;
    }
    if (err != cudaSuccess) return err;
    first += part.groups;
  }
  return cudaSuccess;
}

}  // namespace scanserve::cuda
