#include "reference/reference.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace scanserve::testing {

double LoadAsDouble(const void* data, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::kFloat32:
      return static_cast<const float*>(data)[i];
    case DType::kFloat16:
      return HalfToFloat(static_cast<const uint16_t*>(data)[i]);
    case DType::kBFloat16:
      return BFloat16ToFloat(static_cast<const uint16_t*>(data)[i]);
    case DType::kInt32:
      return static_cast<const int32_t*>(data)[i];
    case DType::kInt64:
      return static_cast<double>(static_cast<const int64_t*>(data)[i]);
  }
  return std::numeric_limits<double>::quiet_NaN();
}

namespace {

// Walks the steps of one row in processing order: forward 0..L-1, or L-1..0 when reversed.
struct TimeOrder {
  int64_t length;
  bool reverse;
  int64_t operator()(int64_t k) const { return reverse ? length - 1 - k : k; }
};

// The float64 states h of section 1 for every row, indexed like x.
std::vector<double> LinearStates(DType dtype, Layout layout, bool reverse, const SeqShape& s,
                                 const void* a, const void* x, const void* b, const float* h0) {
  std::vector<double> h(static_cast<size_t>(s.elements()));
  const TimeOrder order{s.length, reverse};
  for (int64_t bi = 0; bi < s.batch; ++bi) {
    for (int64_t d = 0; d < s.dim; ++d) {
      double state = h0 != nullptr ? h0[bi * s.dim + d] : 0.0;
      for (int64_t k = 0; k < s.length; ++k) {
        const int64_t i = SeqOffset(s, layout, bi, d, order(k));
        const double gate_in = b != nullptr ? LoadAsDouble(b, dtype, i) : 1.0;
        state = LoadAsDouble(a, dtype, i) * state + gate_in * LoadAsDouble(x, dtype, i);
        h[static_cast<size_t>(i)] = state;
      }
    }
  }
  return h;
}

}  // namespace

std::vector<double> ReferenceLinearScanStates(const LinearScanOptions& o,
                                              const LinearScanProblem& p) {
  return LinearStates(o.dtype, o.layout, o.reverse, p.shape, p.a, p.x, o.has_b ? p.b : nullptr,
                      o.has_h0 ? p.h0 : nullptr);
}

RefLinearScan ReferenceLinearScan(const LinearScanOptions& o, const LinearScanProblem& p) {
  const SeqShape& s = p.shape;
  RefLinearScan ref;
  const std::vector<double> h = ReferenceLinearScanStates(o, p);
  ref.y.resize(h.size());
  for (size_t i = 0; i < h.size(); ++i) {
    const double gate_out = o.has_c ? LoadAsDouble(p.c, o.dtype, static_cast<int64_t>(i)) : 1.0;
    ref.y[i] = gate_out * h[i];
  }
  if (o.return_final_state) {
    ref.final_state.resize(static_cast<size_t>(s.rows()));
    const int64_t last = o.reverse ? 0 : s.length - 1;
    for (int64_t bi = 0; bi < s.batch; ++bi) {
      for (int64_t d = 0; d < s.dim; ++d) {
        ref.final_state[static_cast<size_t>(bi * s.dim + d)] =
            h[static_cast<size_t>(SeqOffset(s, o.layout, bi, d, last))];
      }
    }
  }
  return ref;
}

RefLinearScanBackward ReferenceLinearScanBackward(const LinearScanBackwardOptions& o,
                                                  const LinearScanBackwardProblem& p) {
  const SeqShape& s = p.shape;
  const size_t n = static_cast<size_t>(s.elements());
  std::vector<double> h;
  if (o.has_states) {
    h.resize(n);
    for (size_t i = 0; i < n; ++i) h[i] = p.states[i];
  } else {
    h = LinearStates(o.dtype, o.layout, o.reverse, s, p.a, p.x, o.has_b ? p.b : nullptr,
                     o.has_h0 ? p.h0 : nullptr);
  }
  RefLinearScanBackward ref;
  ref.da.resize(n);
  ref.dx.resize(n);
  if (o.has_b) ref.db.resize(n);
  if (o.has_c) ref.dc.resize(n);
  if (o.has_h0) ref.dh0.resize(static_cast<size_t>(s.rows()));

  // In processing order k (k = 0 is the first step the forward scan took), the backward pass is
  // the formula of section 2 with t replaced by k; mirroring time covers the reverse forward scan.
  const TimeOrder order{s.length, o.reverse};
  auto load = [&](const void* t, int64_t i) { return LoadAsDouble(t, o.dtype, i); };
  for (int64_t bi = 0; bi < s.batch; ++bi) {
    for (int64_t d = 0; d < s.dim; ++d) {
      auto at = [&](int64_t k) { return SeqOffset(s, o.layout, bi, d, order(k)); };
      const double h0 = o.has_h0 ? p.h0[bi * s.dim + d] : 0.0;
      double dh_next = 0.0;  // dh[k + 1]
      double a_next = 0.0;   // a[k + 1]
      for (int64_t k = s.length - 1; k >= 0; --k) {
        const int64_t i = at(k);
        const double dy = load(p.dy, i);
        const double g = dy * (o.has_c ? load(p.c, i) : 1.0);
        const double dh = g + a_next * dh_next;
        const double h_prev = k > 0 ? h[static_cast<size_t>(at(k - 1))] : h0;
        ref.da[static_cast<size_t>(i)] = dh * h_prev;
        ref.dx[static_cast<size_t>(i)] = dh * (o.has_b ? load(p.b, i) : 1.0);
        if (o.has_b) ref.db[static_cast<size_t>(i)] = dh * load(p.x, i);
        if (o.has_c) ref.dc[static_cast<size_t>(i)] = dy * h[static_cast<size_t>(i)];
        dh_next = dh;
        a_next = load(p.a, i);
      }
      if (o.has_h0) ref.dh0[static_cast<size_t>(bi * s.dim + d)] = a_next * dh_next;
    }
  }
  return ref;
}

RefSelectiveScan ReferenceSelectiveScan(const SelectiveScanOptions& o,
                                        const SelectiveScanProblem& p) {
  const SeqShape& s = p.shape;
  const int64_t n_state = o.state_dim;
  const int64_t groups = o.groups;
  const int64_t dims_per_group = s.dim / groups;
  RefSelectiveScan ref;
  ref.y.resize(static_cast<size_t>(s.elements()));
  if (o.return_last_state) ref.last_state.resize(static_cast<size_t>(s.rows() * n_state));
  auto load = [&](const void* t, int64_t i) { return LoadAsDouble(t, o.dtype, i); };

  // Variable B/C are (B, G, N, L) in BDL and (B, L, G, N) in BLD.
  auto bc_offset = [&](int64_t bi, int64_t g, int64_t n, int64_t t) {
    return o.layout == Layout::kBDL ? ((bi * groups + g) * n_state + n) * s.length + t
                                    : ((bi * s.length + t) * groups + g) * n_state + n;
  };
  std::vector<double> h(static_cast<size_t>(n_state));
  for (int64_t bi = 0; bi < s.batch; ++bi) {
    for (int64_t d = 0; d < s.dim; ++d) {
      const int64_t g = d / dims_per_group;
      for (int64_t n = 0; n < n_state; ++n) {
        h[static_cast<size_t>(n)] = o.has_h0 ? p.h0[(bi * s.dim + d) * n_state + n] : 0.0;
      }
      for (int64_t t = 0; t < s.length; ++t) {
        const int64_t i = SeqOffset(s, o.layout, bi, d, t);
        const double u = load(p.u, i);
        double dt = load(p.delta, i) + (o.has_delta_bias ? double{p.delta_bias[d]} : 0.0);
        if (o.delta_softplus) dt = dt > 20.0 ? dt : std::log1p(std::exp(dt));
        double y = 0.0;
        for (int64_t n = 0; n < n_state; ++n) {
          const double bm = o.variable_b ? load(p.B, bc_offset(bi, g, n, t))
                                         : double{static_cast<const float*>(p.B)[d * n_state + n]};
          const double cm = o.variable_c ? load(p.C, bc_offset(bi, g, n, t))
                                         : double{static_cast<const float*>(p.C)[d * n_state + n]};
          double& hn = h[static_cast<size_t>(n)];
          hn = std::exp(dt * double{p.A[d * n_state + n]}) * hn + dt * bm * u;
          y += cm * hn;
        }
        if (o.has_d_skip) y += double{p.d_skip[d]} * u;
        if (o.has_z) {
          const double z = load(p.z, i);
          y = y * z / (1.0 + std::exp(-z));
        }
        ref.y[static_cast<size_t>(i)] = y;
      }
      if (o.return_last_state) {
        for (int64_t n = 0; n < n_state; ++n) {
          ref.last_state[static_cast<size_t>((bi * s.dim + d) * n_state + n)] =
              h[static_cast<size_t>(n)];
        }
      }
    }
  }
  return ref;
}

namespace {

double CombineDouble(ScanOperator op, double l, double r) {
  switch (op) {
    case ScanOperator::kAdd:
      return l + r;
    case ScanOperator::kMul:
      return l * r;
    case ScanOperator::kMax:
      if (std::isnan(l) || std::isnan(r)) return std::numeric_limits<double>::quiet_NaN();
      return std::max(l, r);
    case ScanOperator::kMin:
      if (std::isnan(l) || std::isnan(r)) return std::numeric_limits<double>::quiet_NaN();
      return std::min(l, r);
    case ScanOperator::kLogAddExp: {
      if (std::isnan(l) || std::isnan(r)) return std::numeric_limits<double>::quiet_NaN();
      const double hi = std::max(l, r);
      const double lo = std::min(l, r);
      if (std::isinf(hi)) return hi;  // +inf absorbs; both -inf gives -inf
      return hi + std::log1p(std::exp(lo - hi));
    }
  }
  return std::numeric_limits<double>::quiet_NaN();
}

double IdentityDouble(ScanOperator op) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  switch (op) {
    case ScanOperator::kAdd:
      return 0.0;
    case ScanOperator::kMul:
      return 1.0;
    case ScanOperator::kMax:
    case ScanOperator::kLogAddExp:
      return -kInf;
    case ScanOperator::kMin:
      return kInf;
  }
  return 0.0;
}

template <typename T, typename Combine>
std::vector<T> ScanRows(const AssociativeScanOptions& o, const AssociativeScanProblem& p,
                        T identity, Combine combine, T (*load)(const void*, DType, int64_t)) {
  const SeqShape& s = p.shape;
  std::vector<T> y(static_cast<size_t>(s.elements()));
  const TimeOrder order{s.length, o.reverse};
  for (int64_t bi = 0; bi < s.batch; ++bi) {
    for (int64_t d = 0; d < s.dim; ++d) {
      T acc = identity;
      for (int64_t k = 0; k < s.length; ++k) {
        const int64_t i = SeqOffset(s, o.layout, bi, d, order(k));
        const T x = load(p.x, o.dtype, i);
        if (o.exclusive) {
          y[static_cast<size_t>(i)] = acc;
          acc = combine(acc, x);
        } else {
          acc = combine(acc, x);
          y[static_cast<size_t>(i)] = acc;
        }
      }
    }
  }
  return y;
}

int64_t LoadInt(const void* data, DType dtype, int64_t i) {
  return dtype == DType::kInt32 ? static_cast<const int32_t*>(data)[i]
                                : static_cast<const int64_t*>(data)[i];
}

}  // namespace

std::vector<double> ReferenceAssociativeScan(const AssociativeScanOptions& o,
                                             const AssociativeScanProblem& p) {
  return ScanRows<double>(
      o, p, IdentityDouble(o.op), [&](double l, double r) { return CombineDouble(o.op, l, r); },
      &LoadAsDouble);
}

std::vector<int64_t> ReferenceAssociativeScanInt(const AssociativeScanOptions& o,
                                                 const AssociativeScanProblem& p) {
  const bool narrow = o.dtype == DType::kInt32;
  const int64_t lowest =
      narrow ? std::numeric_limits<int32_t>::min() : std::numeric_limits<int64_t>::min();
  const int64_t highest =
      narrow ? std::numeric_limits<int32_t>::max() : std::numeric_limits<int64_t>::max();
  int64_t identity = 0;
  if (o.op == ScanOperator::kMax) identity = lowest;
  if (o.op == ScanOperator::kMin) identity = highest;
  auto combine = [&](int64_t l, int64_t r) -> int64_t {
    switch (o.op) {
      case ScanOperator::kAdd: {
        // Unsigned arithmetic wraps by definition; truncating to the dtype's width gives the
        // two's-complement result.
        const uint64_t sum = static_cast<uint64_t>(l) + static_cast<uint64_t>(r);
        return narrow ? static_cast<int32_t>(static_cast<uint32_t>(sum))
                      : static_cast<int64_t>(sum);
      }
      case ScanOperator::kMax:
        return std::max(l, r);
      case ScanOperator::kMin:
        return std::min(l, r);
      case ScanOperator::kMul:
      case ScanOperator::kLogAddExp:
        break;  // not defined on integers by ops.md
    }
    return 0;
  };
  return ScanRows<int64_t>(o, p, identity, combine, &LoadInt);
}

}  // namespace scanserve::testing
