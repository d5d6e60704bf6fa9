// associative_scan (ops.md section 4) on one tile of lanes; see linear_scan.cc for the lane scheme.
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "cpu/kernels.h"
#include "cpu/numeric.h"
#include "cpu/tiles.h"
#include "cpu/tuning.h"

namespace scanserve::cpu {
namespace {

// Each operator carries a State per lane: Identity() starts it, Combine() folds in the next
// element, Value() is the prefix result so far.
//
// Float add is compensated (Kahan): a plain float32 running sum drifts by about sqrt(length) ulps,
// which on rows of 10^5 and more steps breaks ops.md's 1e-5 target; the compensated sum stays
// within a few ulps at any length.
template <typename V>
struct AddOp {
  struct State {
    V sum;
    V comp;
  };
  static State Identity() { return {V{0}, V{0}}; }
  static void Combine(State& st, V x) {
    if constexpr (std::is_floating_point_v<V>) {
      const V yv = x - st.comp;
      const V t = st.sum + yv;
      const V next = (t - st.sum) - yv;
      // Once the sum is inf or NaN the compensation would turn inf into NaN; the sum alone is
      // then already exact.
      st.comp = std::isfinite(t) ? next : V{0};
      st.sum = t;
    } else {
      using U = std::make_unsigned_t<V>;
      st.sum = static_cast<V>(static_cast<U>(st.sum) + static_cast<U>(x));  // two's complement
    }
  }
  static V Value(const State& st) { return st.sum; }
};

template <typename V>
struct MulOp {
  struct State {
    V product;
  };
  static State Identity() { return {V{1}}; }
  static void Combine(State& st, V x) { st.product = st.product * x; }
  static V Value(const State& st) { return st.product; }
};

template <typename V>
struct MaxOp {
  struct State {
    V value;
  };
  static State Identity() {
    if constexpr (std::is_floating_point_v<V>) return {-std::numeric_limits<V>::infinity()};
    return {std::numeric_limits<V>::lowest()};
  }
  // A NaN input replaces the running value and, once there, stays: x > NaN is false.
  static void Combine(State& st, V x) {
    if constexpr (std::is_floating_point_v<V>) {
      st.value = (x > st.value || x != x) ? x : st.value;
    } else {
      st.value = x > st.value ? x : st.value;
    }
  }
  static V Value(const State& st) { return st.value; }
};

template <typename V>
struct MinOp {
  struct State {
    V value;
  };
  static State Identity() {
    if constexpr (std::is_floating_point_v<V>) return {std::numeric_limits<V>::infinity()};
    return {std::numeric_limits<V>::max()};
  }
  static void Combine(State& st, V x) {
    if constexpr (std::is_floating_point_v<V>) {
      st.value = (x < st.value || x != x) ? x : st.value;
    } else {
      st.value = x < st.value ? x : st.value;
    }
  }
  static V Value(const State& st) { return st.value; }
};

// log(sum exp(x)) as max + log(sum exp(x - max)): the running maximum m and the compensated sum
// S of exp(x - m) (>= 1 once anything finite arrived) never overflow, and each output is one
// rounding of m + log(S) instead of an error carried from step to step, so long rows stay within
// a few ulps. A new maximum rescales S (and its compensation) by exp(old m - new m) <= 1.
// -inf inputs add nothing; +inf makes the result +inf from there on (unless NaN follows); NaN
// sticks in S.
template <typename V>
struct LogAddExpOp {
  struct State {
    V max;
    V sum;
    V comp;
  };
  static State Identity() { return {-std::numeric_limits<V>::infinity(), V{0}, V{0}}; }
  static void Combine(State& st, V x) {
    if (x != x) {
      st.sum = x;  // NaN: every later sum and output stays NaN
      return;
    }
    if (x == -std::numeric_limits<V>::infinity() || st.max == std::numeric_limits<V>::infinity()) {
      return;
    }
    if (x > st.max) {
      const V scale = std::exp(st.max - x);
      st.sum = st.sum * scale + V{1};
      st.comp = st.comp * scale;
      st.max = x;
      return;
    }
    const V yv = std::exp(x - st.max) - st.comp;
    const V t = st.sum + yv;
    st.comp = (t - st.sum) - yv;
    st.sum = t;
  }
  static V Value(const State& st) { return st.max + std::log(st.sum); }
};

template <typename E, typename Op, bool kExclusive, int kR>
void ScanLanes(const AssociativeScanProblem& p, const Lanes& g) {
  using S = typename E::Storage;
  using V = typename E::Value;
  const S* __restrict x = static_cast<const S*>(p.x);
  S* __restrict y = static_cast<S*>(p.y);
  const int64_t lanes = kR > 0 ? kR : g.lanes;
  const int64_t ls = kR > 0 ? g.lane_stride : 1;
  typename Op::State st[kR > 0 ? kR : Tuning::kLaneTile];
  for (int64_t j = 0; j < lanes; ++j) st[j] = Op::Identity();
  for (int64_t k = 0; k < g.length; ++k) {
    const int64_t base = g.start + k * g.time_stride;
    for (int64_t j = 0; j < lanes; ++j) {
      const int64_t i = base + j * ls;
      const V xv = E::Load(x[i]);
      if constexpr (kExclusive) y[i] = E::Store(Op::Value(st[j]));
      Op::Combine(st[j], xv);
      if constexpr (!kExclusive) y[i] = E::Store(Op::Value(st[j]));
    }
  }
}

template <typename E, typename Op>
void ScanTile(const AssociativeScanOptions& o, const AssociativeScanProblem& p, const Tile& t) {
  const Lanes lanes = MakeLanes(p.shape, o.layout, o.reverse, t);
  if (o.exclusive) {
    ForEachLaneGroup(lanes, o.layout,
                     [&](const Lanes& g, auto r) { ScanLanes<E, Op, true, r.value>(p, g); });
  } else {
    ForEachLaneGroup(lanes, o.layout,
                     [&](const Lanes& g, auto r) { ScanLanes<E, Op, false, r.value>(p, g); });
  }
}

template <typename E>
void ScanDtype(const AssociativeScanOptions& o, const AssociativeScanProblem& p, const Tile& t) {
  using V = typename E::Value;
  switch (o.op) {
    case ScanOperator::kAdd:
      return ScanTile<E, AddOp<V>>(o, p, t);
    case ScanOperator::kMax:
      return ScanTile<E, MaxOp<V>>(o, p, t);
    case ScanOperator::kMin:
      return ScanTile<E, MinOp<V>>(o, p, t);
    case ScanOperator::kMul:
      if constexpr (std::is_floating_point_v<V>) return ScanTile<E, MulOp<V>>(o, p, t);
      return;  // rejected by the backend before any tile runs
    case ScanOperator::kLogAddExp:
      if constexpr (std::is_floating_point_v<V>) return ScanTile<E, LogAddExpOp<V>>(o, p, t);
      return;
  }
}

}  // namespace

void AssociativeScanTile(const AssociativeScanOptions& o, const AssociativeScanProblem& p,
                         const Tile& t) {
  switch (o.dtype) {
    case DType::kFloat32:
      return ScanDtype<F32>(o, p, t);
    case DType::kFloat16:
      return ScanDtype<F16>(o, p, t);
    case DType::kBFloat16:
      return ScanDtype<BF16>(o, p, t);
    case DType::kInt32:
      return ScanDtype<I32>(o, p, t);
    case DType::kInt64:
      return ScanDtype<I64>(o, p, t);
  }
}

}  // namespace scanserve::cpu
