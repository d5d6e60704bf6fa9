#include "kernels/backend_cases.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "reference/reference.h"

namespace scanserve::testing {
namespace {

constexpr DType kFloatTypes[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16};
constexpr DType kAllTypes[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16, DType::kInt32,
                               DType::kInt64};
constexpr Layout kLayouts[] = {Layout::kBDL, Layout::kBLD};
constexpr ScanOperator kOperators[] = {ScanOperator::kAdd, ScanOperator::kMul, ScanOperator::kMax,
                                       ScanOperator::kMin, ScanOperator::kLogAddExp};

HostTensor Filled(DType dtype, int64_t count, Rng& rng, double lo, double hi) {
  HostTensor t(dtype, count);
  t.FillUniform(rng, lo, hi);
  return t;
}

std::string ShapeText(const SeqShape& s) {
  return "shape (" + std::to_string(s.batch) + ", " + std::to_string(s.dim) + ", " +
         std::to_string(s.length) + ")";
}

void ExpectWithin(const HostTensor& out, const std::vector<double>& ref, double tolerance,
                  const char* name) {
  const double err = RelativeL2Error(out, ref);
  EXPECT_LE(err, tolerance) << name << ": relative L2 error " << err;
}

// Sums ||out - ref||^2 and ||ref||^2 per named output over the requests of a batch, so the batch is
// judged as one vector: alone, a request of a handful of elements whose terms cancel has a tiny
// ||ref|| against which even correctly rounded float32 arithmetic looks inaccurate.
class ErrorReport {
 public:
  void Add(const std::string& name, const HostTensor& out, const std::vector<double>& ref,
           double tolerance) {
    Entry& e = Find(name, tolerance);
    const double rel = RelativeL2Error(out, ref);
    double ref2 = 0.0;
    for (double r : ref) ref2 += std::isfinite(r) ? r * r : 0.0;
    if (!std::isfinite(rel)) {
      e.err2 = std::numeric_limits<double>::infinity();
    } else {
      e.err2 += ref2 > 0.0 ? rel * rel * ref2 : rel * rel;
    }
    e.ref2 += ref2;
  }

  void AddExact(const std::string& name, const HostTensor& out, const std::vector<int64_t>& ref) {
    Entry& e = Find(name, 0.0);
    e.exact = true;
    for (int64_t i = 0; i < out.count(); ++i) {
      if (out.GetInt(i) == ref[static_cast<size_t>(i)]) continue;
      if (e.mismatches++ == 0) {
        e.first = "element " + std::to_string(i) + ": got " + std::to_string(out.GetInt(i)) +
                  ", want " + std::to_string(ref[static_cast<size_t>(i)]);
      }
    }
  }

  void Expect() const {
    for (const Entry& e : entries_) {
      if (e.exact) {
        EXPECT_EQ(e.mismatches, 0) << e.name << ": first mismatch at " << e.first;
        continue;
      }
      const double err = e.ref2 > 0.0 ? std::sqrt(e.err2 / e.ref2) : std::sqrt(e.err2);
      EXPECT_LE(err, e.tolerance) << e.name << ": relative L2 error " << err;
    }
  }

 private:
  struct Entry {
    std::string name;
    double tolerance = 0.0;
    double err2 = 0.0;
    double ref2 = 0.0;
    bool exact = false;
    int64_t mismatches = 0;
    std::string first;
  };

  Entry& Find(const std::string& name, double tolerance) {
    for (Entry& e : entries_) {
      if (e.name == name) return e;
    }
    Entry& e = entries_.emplace_back();
    e.name = name;
    e.tolerance = tolerance;
    return e;
  }

  std::vector<Entry> entries_;
};

// Copies steps [t0, t0 + dst_shape.length) of a sequence tensor into a tensor of dst_shape.
void CopySteps(const HostTensor& src, const SeqShape& src_shape, Layout layout, int64_t t0,
               HostTensor& dst, const SeqShape& dst_shape) {
  const size_t size = DTypeSize(src.dtype());
  for (int64_t b = 0; b < dst_shape.batch; ++b) {
    for (int64_t d = 0; d < dst_shape.dim; ++d) {
      for (int64_t t = 0; t < dst_shape.length; ++t) {
        std::memcpy(static_cast<char*>(dst.data()) + SeqOffset(dst_shape, layout, b, d, t) * size,
                    static_cast<const char*>(src.data()) +
                        SeqOffset(src_shape, layout, b, d, t0 + t) * size,
                    size);
      }
    }
  }
}

// The inverse of CopySteps: writes all of `piece` (shape `piece_shape`) into steps t0.. of
// `whole`, which is how chained requests reassemble one request's output.
void PasteSteps(const HostTensor& piece, const SeqShape& piece_shape, Layout layout, int64_t t0,
                HostTensor& whole, const SeqShape& whole_shape) {
  for (int64_t b = 0; b < piece_shape.batch; ++b) {
    for (int64_t d = 0; d < piece_shape.dim; ++d) {
      for (int64_t t = 0; t < piece_shape.length; ++t) {
        whole.Set(SeqOffset(whole_shape, layout, b, d, t0 + t),
                  piece.Get(SeqOffset(piece_shape, layout, b, d, t)));
      }
    }
  }
}

// Splits [0, length) into `pieces` non-empty consecutive ranges, returned as starts plus length.
std::vector<int64_t> RandomCuts(Rng& rng, int64_t length, int pieces) {
  std::vector<int64_t> cuts = {0, length};
  while (static_cast<int>(cuts.size()) < pieces + 1) {
    const int64_t c = rng.Int(1, length - 1);
    if (std::find(cuts.begin(), cuts.end(), c) == cuts.end()) cuts.push_back(c);
  }
  std::sort(cuts.begin(), cuts.end());
  return cuts;
}

using Snapshot = std::vector<std::vector<unsigned char>>;

template <typename Data>
Snapshot Take(Data& data) {
  Snapshot snap;
  for (HostTensor* t : data.Outputs()) {
    const auto* bytes = static_cast<const unsigned char*>(t->data());
    snap.emplace_back(bytes, bytes + t->bytes());
  }
  return snap;
}

template <typename Data>
void Poison(Data& data) {
  for (HostTensor* t : data.Outputs()) t->Poison();
}

template <typename Data>
void ExpectSameBytes(Data& data, const Snapshot& expected, const std::string& what) {
  const Snapshot got = Take(data);
  ASSERT_EQ(got.size(), expected.size());
  for (size_t k = 0; k < got.size(); ++k) {
    EXPECT_TRUE(got[k] == expected[k])
        << what << ": output " << k << " of " << ShapeText(data.shape) << " differs";
  }
}

// Runs one request alone and checks it against the reference.
template <typename Data>
void RunAndCheck(Backend& backend, Data& data) {
  SCOPED_TRACE(ShapeText(data.shape));
  Poison(data);
  const absl::Status status = RunBatch(backend, std::vector<Data*>{&data});
  ASSERT_TRUE(status.ok()) << status.ToString();
  ExpectMatchesReference(data);
}

// Runs `requests` as one batch after poisoning their outputs, then checks the batch against the
// reference.
template <typename Data>
void RunBatchAndCheck(Backend& backend, std::vector<Data>& requests) {
  std::vector<Data*> ptrs;
  for (Data& r : requests) {
    Poison(r);
    ptrs.push_back(&r);
  }
  const absl::Status status = RunBatch(backend, ptrs);
  ASSERT_TRUE(status.ok()) << status.ToString();
  ExpectMatchesReference(requests);
}

// The small ragged shapes every option combination is tried on: L = 1, odd lengths, BDL row counts
// that are not a multiple of any row grouping, BLD widths past 64 channels, plus a random one.
std::vector<SeqShape> SmallShapes(Rng& rng, int64_t dim_multiple = 1) {
  const int64_t m = dim_multiple;
  return {SeqShape{1, m, 1}, SeqShape{2, 13 * m, 33}, SeqShape{1, 67 * m, 5},
          RandomShape(rng, 3, 80, 200, m)};
}

}  // namespace

// ---- data ----

LinearScanProblem LinearScanData::Problem() {
  return {shape,    a.data(),       x.data(), b.data(),
          c.data(), h0.As<float>(), y.data(), final_state.As<float>()};
}

std::vector<HostTensor*> LinearScanData::Outputs() {
  std::vector<HostTensor*> out = {&y};
  if (options.return_final_state) out.push_back(&final_state);
  return out;
}

LinearScanData MakeLinearScanData(const LinearScanOptions& o, SeqShape s, Rng& rng) {
  LinearScanData d;
  d.options = o;
  d.shape = s;
  const int64_t n = s.elements();
  d.a = Filled(o.dtype, n, rng, 0.5, 1.0);
  d.x = Filled(o.dtype, n, rng, -1.0, 1.0);
  if (o.has_b) d.b = Filled(o.dtype, n, rng, -1.0, 1.0);
  if (o.has_c) d.c = Filled(o.dtype, n, rng, -1.0, 1.0);
  if (o.has_h0) d.h0 = Filled(DType::kFloat32, s.rows(), rng, -1.0, 1.0);
  d.y = HostTensor(o.dtype, n);
  if (o.return_final_state) d.final_state = HostTensor(DType::kFloat32, s.rows());
  return d;
}

LinearScanBackwardProblem LinearScanBackwardData::Problem() {
  return {shape,     a.data(),       x.data(),           dy.data(), b.data(),
          c.data(),  h0.As<float>(), states.As<float>(), da.data(), dx.data(),
          db.data(), dc.data(),      dh0.As<float>()};
}

std::vector<HostTensor*> LinearScanBackwardData::Outputs() {
  std::vector<HostTensor*> out = {&da, &dx};
  if (options.has_b) out.push_back(&db);
  if (options.has_c) out.push_back(&dc);
  if (options.has_h0) out.push_back(&dh0);
  return out;
}

namespace {

LinearScanOptions ForwardOf(const LinearScanBackwardOptions& o) {
  return {.dtype = o.dtype,
          .layout = o.layout,
          .has_b = o.has_b,
          .has_c = o.has_c,
          .has_h0 = o.has_h0,
          .reverse = o.reverse};
}

LinearScanProblem ForwardOf(const LinearScanBackwardProblem& p) {
  return {.shape = p.shape, .a = p.a, .x = p.x, .b = p.b, .c = p.c, .h0 = p.h0};
}

}  // namespace

LinearScanBackwardData MakeLinearScanBackwardData(const LinearScanBackwardOptions& o, SeqShape s,
                                                  Rng& rng) {
  LinearScanBackwardData d;
  d.options = o;
  d.shape = s;
  const int64_t n = s.elements();
  d.a = Filled(o.dtype, n, rng, 0.5, 1.0);
  d.x = Filled(o.dtype, n, rng, -1.0, 1.0);
  d.dy = Filled(o.dtype, n, rng, -1.0, 1.0);
  if (o.has_b) d.b = Filled(o.dtype, n, rng, -1.0, 1.0);
  if (o.has_c) d.c = Filled(o.dtype, n, rng, -1.0, 1.0);
  if (o.has_h0) d.h0 = Filled(DType::kFloat32, s.rows(), rng, -1.0, 1.0);
  if (o.has_states) {
    const std::vector<double> h = ReferenceLinearScanStates(ForwardOf(o), ForwardOf(d.Problem()));
    d.states = HostTensor(DType::kFloat32, n);
    for (int64_t i = 0; i < n; ++i) d.states.Set(i, h[static_cast<size_t>(i)]);
  }
  d.da = HostTensor(o.dtype, n);
  d.dx = HostTensor(o.dtype, n);
  if (o.has_b) d.db = HostTensor(o.dtype, n);
  if (o.has_c) d.dc = HostTensor(o.dtype, n);
  if (o.has_h0) d.dh0 = HostTensor(DType::kFloat32, s.rows());
  return d;
}

SelectiveScanProblem SelectiveScanData::Problem() {
  return {shape,
          u.data(),
          delta.data(),
          A.As<float>(),
          B.data(),
          C.data(),
          d_skip.As<float>(),
          z.data(),
          delta_bias.As<float>(),
          h0.As<float>(),
          y.data(),
          last_state.As<float>()};
}

std::vector<HostTensor*> SelectiveScanData::Outputs() {
  std::vector<HostTensor*> out = {&y};
  if (options.return_last_state) out.push_back(&last_state);
  return out;
}

SelectiveScanData MakeSelectiveScanData(const SelectiveScanOptions& o, SeqShape s, Rng& rng,
                                        double delta_lo, double delta_hi) {
  SelectiveScanData d;
  d.options = o;
  d.shape = s;
  const int64_t n = s.elements();
  const int64_t ns = o.state_dim;
  if (delta_lo == delta_hi) {
    delta_lo = o.delta_softplus ? -4.0 : 0.0;
    delta_hi = o.delta_softplus ? 2.0 : 0.5;
  }
  d.u = Filled(o.dtype, n, rng, -1.0, 1.0);
  d.delta = Filled(o.dtype, n, rng, delta_lo, delta_hi);
  d.A = Filled(DType::kFloat32, s.dim * ns, rng, -1.5, -0.05);
  const int64_t bc_count = s.batch * o.groups * ns * s.length;
  d.B = o.variable_b ? Filled(o.dtype, bc_count, rng, -1.0, 1.0)
                     : Filled(DType::kFloat32, s.dim * ns, rng, -1.0, 1.0);
  d.C = o.variable_c ? Filled(o.dtype, bc_count, rng, -1.0, 1.0)
                     : Filled(DType::kFloat32, s.dim * ns, rng, -1.0, 1.0);
  if (o.has_d_skip) d.d_skip = Filled(DType::kFloat32, s.dim, rng, -1.0, 1.0);
  if (o.has_z) d.z = Filled(o.dtype, n, rng, -2.0, 2.0);
  // Without softplus a negative dt would make the state grow without bound.
  if (o.has_delta_bias) {
    d.delta_bias = Filled(DType::kFloat32, s.dim, rng, o.delta_softplus ? -0.5 : 0.0, 0.5);
  }
  if (o.has_h0) d.h0 = Filled(DType::kFloat32, s.rows() * ns, rng, -1.0, 1.0);
  d.y = HostTensor(o.dtype, n);
  if (o.return_last_state) d.last_state = HostTensor(DType::kFloat32, s.rows() * ns);
  return d;
}

AssociativeScanProblem AssociativeScanData::Problem() { return {shape, x.data(), y.data()}; }

std::vector<HostTensor*> AssociativeScanData::Outputs() { return {&y}; }

AssociativeScanData MakeAssociativeScanData(const AssociativeScanOptions& o, SeqShape s, Rng& rng) {
  AssociativeScanData d;
  d.options = o;
  d.shape = s;
  const int64_t n = s.elements();
  d.x = HostTensor(o.dtype, n);
  if (o.dtype == DType::kInt32 || o.dtype == DType::kInt64) {
    const bool wide = o.dtype == DType::kInt64;
    const int64_t lo = o.op != ScanOperator::kAdd ? -1000
                       : wide                     ? std::numeric_limits<int64_t>::min()
                                                  : std::numeric_limits<int32_t>::min();
    const int64_t hi = o.op != ScanOperator::kAdd ? 1000
                       : wide                     ? std::numeric_limits<int64_t>::max()
                                                  : std::numeric_limits<int32_t>::max();
    for (int64_t i = 0; i < n; ++i) {
      const int64_t v = rng.Int(lo, hi);
      if (wide) {
        d.x.As<int64_t>()[i] = v;
      } else {
        d.x.As<int32_t>()[i] = static_cast<int32_t>(v);
      }
    }
    if (n > 0 && d.x.GetInt(0) == 0) d.x.Set(0, 7);  // never all zero
  } else {
    switch (o.op) {
      case ScanOperator::kAdd:
        d.x.FillUniform(rng, -1.0, 1.0);
        break;
      case ScanOperator::kMul:
        for (int64_t i = 0; i < n; ++i) d.x.Set(i, rng.Uniform(0.9, 1.1) * (rng.Bool() ? 1 : -1));
        break;
      case ScanOperator::kMax:
      case ScanOperator::kMin:
        d.x.FillUniform(rng, -100.0, 100.0);
        break;
      case ScanOperator::kLogAddExp:
        d.x.FillUniform(rng, -5.0, 5.0);
        break;
    }
  }
  d.y = HostTensor(o.dtype, n);
  return d;
}

// ---- running and checking ----

namespace {

template <typename Options, typename Data>
absl::Status RunDataBatch(Backend& backend, const std::vector<Data*>& requests) {
  if (requests.empty()) return absl::OkStatus();
  using ProblemT = decltype(requests.front()->Problem());
  std::vector<ProblemT> problems;
  for (Data* r : requests) problems.push_back(r->Problem());
  const Batch<Options, ProblemT> batch{requests.front()->options, problems};
  return backend.Run(batch);
}

}  // namespace

absl::Status RunBatch(Backend& backend, std::vector<LinearScanData*> requests) {
  return RunDataBatch<LinearScanOptions>(backend, requests);
}
absl::Status RunBatch(Backend& backend, std::vector<LinearScanBackwardData*> requests) {
  return RunDataBatch<LinearScanBackwardOptions>(backend, requests);
}
absl::Status RunBatch(Backend& backend, std::vector<SelectiveScanData*> requests) {
  return RunDataBatch<SelectiveScanOptions>(backend, requests);
}
absl::Status RunBatch(Backend& backend, std::vector<AssociativeScanData*> requests) {
  return RunDataBatch<AssociativeScanOptions>(backend, requests);
}

namespace {

void Collect(LinearScanData& d, ErrorReport& report) {
  const RefLinearScan ref = ReferenceLinearScan(d.options, d.Problem());
  report.Add("y", d.y, ref.y, Tolerance(d.options.dtype));
  if (d.options.return_final_state) {
    report.Add("final_state", d.final_state, ref.final_state, Tolerance(DType::kFloat32));
  }
}

void Collect(LinearScanBackwardData& d, ErrorReport& report) {
  const RefLinearScanBackward ref = ReferenceLinearScanBackward(d.options, d.Problem());
  const double tol = Tolerance(d.options.dtype);
  report.Add("da", d.da, ref.da, tol);
  report.Add("dx", d.dx, ref.dx, tol);
  if (d.options.has_b) report.Add("db", d.db, ref.db, tol);
  if (d.options.has_c) report.Add("dc", d.dc, ref.dc, tol);
  if (d.options.has_h0) report.Add("dh0", d.dh0, ref.dh0, Tolerance(DType::kFloat32));
}

void Collect(SelectiveScanData& d, ErrorReport& report) {
  const RefSelectiveScan ref = ReferenceSelectiveScan(d.options, d.Problem());
  report.Add("y", d.y, ref.y, Tolerance(d.options.dtype));
  if (d.options.return_last_state) {
    report.Add("last_state", d.last_state, ref.last_state, Tolerance(DType::kFloat32));
  }
}

void Collect(AssociativeScanData& d, ErrorReport& report) {
  if (IsFloatingPoint(d.options.dtype)) {
    report.Add("y", d.y, ReferenceAssociativeScan(d.options, d.Problem()),
               Tolerance(d.options.dtype));
  } else {
    report.AddExact("y", d.y, ReferenceAssociativeScanInt(d.options, d.Problem()));
  }
}

template <typename Data>
void ExpectBatchMatches(std::vector<Data>& requests) {
  ErrorReport report;
  for (Data& d : requests) Collect(d, report);
  report.Expect();
}

template <typename Data>
void ExpectOneMatches(Data& d) {
  ErrorReport report;
  Collect(d, report);
  report.Expect();
}

}  // namespace

void ExpectMatchesReference(LinearScanData& d) { ExpectOneMatches(d); }
void ExpectMatchesReference(LinearScanBackwardData& d) { ExpectOneMatches(d); }
void ExpectMatchesReference(SelectiveScanData& d) { ExpectOneMatches(d); }
void ExpectMatchesReference(AssociativeScanData& d) { ExpectOneMatches(d); }
void ExpectMatchesReference(std::vector<LinearScanData>& batch) { ExpectBatchMatches(batch); }
void ExpectMatchesReference(std::vector<LinearScanBackwardData>& batch) {
  ExpectBatchMatches(batch);
}
void ExpectMatchesReference(std::vector<SelectiveScanData>& batch) { ExpectBatchMatches(batch); }
void ExpectMatchesReference(std::vector<AssociativeScanData>& batch) { ExpectBatchMatches(batch); }

SeqShape RandomShape(Rng& rng, int64_t max_batch, int64_t max_dim, int64_t max_length,
                     int64_t dim_multiple) {
  const int64_t m = std::max<int64_t>(dim_multiple, 1);
  return {rng.Int(1, max_batch), m * rng.Int(1, std::max<int64_t>(max_dim / m, 1)),
          rng.Int(1, max_length)};
}

std::vector<LinearScanOptions> AllLinearScanOptions() {
  std::vector<LinearScanOptions> all;
  for (DType dtype : kFloatTypes) {
    for (Layout layout : kLayouts) {
      for (int bits = 0; bits < 32; ++bits) {
        all.push_back({.dtype = dtype,
                       .layout = layout,
                       .has_b = (bits & 1) != 0,
                       .has_c = (bits & 2) != 0,
                       .has_h0 = (bits & 4) != 0,
                       .reverse = (bits & 8) != 0,
                       .return_final_state = (bits & 16) != 0});
      }
    }
  }
  return all;
}

std::vector<LinearScanBackwardOptions> AllLinearScanBackwardOptions() {
  std::vector<LinearScanBackwardOptions> all;
  for (DType dtype : kFloatTypes) {
    for (Layout layout : kLayouts) {
      for (int bits = 0; bits < 32; ++bits) {
        all.push_back({.dtype = dtype,
                       .layout = layout,
                       .has_b = (bits & 1) != 0,
                       .has_c = (bits & 2) != 0,
                       .has_h0 = (bits & 4) != 0,
                       .has_states = (bits & 8) != 0,
                       .reverse = (bits & 16) != 0});
      }
    }
  }
  return all;
}

std::vector<SelectiveScanOptions> AllSelectiveScanOptions() {
  std::vector<SelectiveScanOptions> all;
  for (DType dtype : kFloatTypes) {
    for (Layout layout : kLayouts) {
      for (int bits = 0; bits < 256; ++bits) {
        all.push_back({.dtype = dtype,
                       .layout = layout,
                       .state_dim = 3,
                       .groups = 1,
                       .variable_b = (bits & 1) != 0,
                       .variable_c = (bits & 2) != 0,
                       .has_d_skip = (bits & 4) != 0,
                       .has_z = (bits & 8) != 0,
                       .has_delta_bias = (bits & 16) != 0,
                       .delta_softplus = (bits & 32) != 0,
                       .has_h0 = (bits & 64) != 0,
                       .return_last_state = (bits & 128) != 0});
      }
    }
  }
  return all;
}

std::vector<AssociativeScanOptions> AllAssociativeScanOptions() {
  std::vector<AssociativeScanOptions> all;
  for (DType dtype : kAllTypes) {
    for (ScanOperator op : kOperators) {
      if (!OperatorSupports(op, dtype)) continue;
      for (Layout layout : kLayouts) {
        for (int bits = 0; bits < 4; ++bits) {
          all.push_back({.dtype = dtype,
                         .layout = layout,
                         .op = op,
                         .reverse = (bits & 1) != 0,
                         .exclusive = (bits & 2) != 0});
        }
      }
    }
  }
  return all;
}

// ---- linear_scan ----

void LinearScanMatchesReference(Backend& backend, Rng& rng) {
  for (const LinearScanOptions& o : AllLinearScanOptions()) {
    SCOPED_TRACE(SignatureKey(o));
    std::vector<LinearScanData> requests;
    for (const SeqShape& s : SmallShapes(rng)) requests.push_back(MakeLinearScanData(o, s, rng));
    RunBatchAndCheck(backend, requests);
    if (::testing::Test::HasFailure()) return;
  }
}

void LinearScanLongRows(Backend& backend, Rng& rng) {
  for (DType dtype : {DType::kFloat32, DType::kBFloat16}) {
    for (Layout layout : kLayouts) {
      const LinearScanOptions o{.dtype = dtype,
                                .layout = layout,
                                .has_b = rng.Bool(),
                                .has_c = rng.Bool(),
                                .has_h0 = true,
                                .reverse = rng.Bool(),
                                .return_final_state = true};
      SCOPED_TRACE(SignatureKey(o));
      const SeqShape shape =
          layout == Layout::kBDL ? SeqShape{1, 2, 100003} : SeqShape{1, 3, 70001};
      LinearScanData d = MakeLinearScanData(o, shape, rng);
      RunAndCheck(backend, d);
    }
  }
}

void LinearScanHugeRow(Backend& backend, Rng& rng) {
  const LinearScanOptions o{.has_h0 = true, .return_final_state = true};
  LinearScanData d = MakeLinearScanData(o, SeqShape{1, 1, int64_t{1} << 24}, rng);
  RunAndCheck(backend, d);
}

void LinearScanChained(Backend& backend, Rng& rng, bool bit_exact) {
  for (Layout layout : kLayouts) {
    for (bool reverse : {false, true}) {
      const LinearScanOptions o{.dtype = rng.Bool() ? DType::kFloat32 : DType::kBFloat16,
                                .layout = layout,
                                .has_b = rng.Bool(),
                                .has_c = rng.Bool(),
                                .has_h0 = true,
                                .reverse = reverse,
                                .return_final_state = true};
      SCOPED_TRACE(SignatureKey(o));
      const SeqShape shape{2, 5, 301};
      LinearScanData whole = MakeLinearScanData(o, shape, rng);
      Poison(whole);
      ASSERT_TRUE(RunBatch(backend, {&whole}).ok());

      std::vector<int64_t> cuts = RandomCuts(rng, shape.length, 3);
      std::vector<std::pair<int64_t, int64_t>> pieces;  // [t0, t1) in processing order
      for (size_t k = 0; k + 1 < cuts.size(); ++k) pieces.push_back({cuts[k], cuts[k + 1]});
      if (reverse) std::reverse(pieces.begin(), pieces.end());

      HostTensor y(o.dtype, shape.elements());
      HostTensor state(DType::kFloat32, shape.rows());
      std::memcpy(state.data(), whole.h0.data(), whole.h0.bytes());
      for (const auto& [t0, t1] : pieces) {
        const SeqShape ps{shape.batch, shape.dim, t1 - t0};
        LinearScanData piece = MakeLinearScanData(o, ps, rng);
        CopySteps(whole.a, shape, layout, t0, piece.a, ps);
        CopySteps(whole.x, shape, layout, t0, piece.x, ps);
        if (o.has_b) CopySteps(whole.b, shape, layout, t0, piece.b, ps);
        if (o.has_c) CopySteps(whole.c, shape, layout, t0, piece.c, ps);
        std::memcpy(piece.h0.data(), state.data(), state.bytes());
        Poison(piece);
        ASSERT_TRUE(RunBatch(backend, {&piece}).ok());
        std::memcpy(state.data(), piece.final_state.data(), state.bytes());
        PasteSteps(piece.y, ps, layout, t0, y, shape);
      }
      const RefLinearScan ref = ReferenceLinearScan(o, whole.Problem());
      ExpectWithin(y, ref.y, Tolerance(o.dtype), "chained y");
      ExpectWithin(state, ref.final_state, Tolerance(DType::kFloat32), "chained final state");
      if (bit_exact) {
        EXPECT_TRUE(y.BitEqual(whole.y)) << "chained y differs from one request";
        EXPECT_TRUE(state.BitEqual(whole.final_state)) << "chained state differs";
      }
    }
  }
}

// ---- linear_scan_backward ----

void LinearScanBackwardMatchesReference(Backend& backend, Rng& rng) {
  for (const LinearScanBackwardOptions& o : AllLinearScanBackwardOptions()) {
    SCOPED_TRACE(SignatureKey(o));
    std::vector<LinearScanBackwardData> requests;
    for (const SeqShape& s : SmallShapes(rng)) {
      requests.push_back(MakeLinearScanBackwardData(o, s, rng));
    }
    RunBatchAndCheck(backend, requests);
    if (::testing::Test::HasFailure()) return;
  }
}

void LinearScanBackwardMatchesFiniteDifferences(Backend& backend, Rng& rng) {
  for (const LinearScanBackwardOptions& o : AllLinearScanBackwardOptions()) {
    if (o.dtype != DType::kFloat32) continue;
    SCOPED_TRACE(SignatureKey(o));
    const SeqShape shape{2, 3, 7};
    LinearScanBackwardData d = MakeLinearScanBackwardData(o, shape, rng);
    Poison(d);
    ASSERT_TRUE(RunBatch(backend, {&d}).ok());

    const LinearScanOptions fo = ForwardOf(o);
    auto loss = [&] {
      const RefLinearScan fwd = ReferenceLinearScan(fo, ForwardOf(d.Problem()));
      double total = 0.0;
      for (int64_t i = 0; i < shape.elements(); ++i) {
        total += d.dy.Get(i) * fwd.y[static_cast<size_t>(i)];
      }
      return total;
    };
    // Perturbed values are rounded to float32, so the step actually taken is measured.
    auto differences = [&](HostTensor& input) {
      std::vector<double> grad(static_cast<size_t>(input.count()));
      for (int64_t i = 0; i < input.count(); ++i) {
        const double keep = input.Get(i);
        const double step = 1.0 / 64;
        input.Set(i, keep + step);
        const double up_at = input.Get(i);
        const double up = loss();
        input.Set(i, keep - step);
        const double down_at = input.Get(i);
        const double down = loss();
        input.Set(i, keep);
        grad[static_cast<size_t>(i)] = (up - down) / (up_at - down_at);
      }
      return grad;
    };
    const double tol = Tolerance(DType::kFloat32);
    ExpectWithin(d.da, differences(d.a), tol, "da vs finite differences");
    ExpectWithin(d.dx, differences(d.x), tol, "dx vs finite differences");
    if (o.has_b) ExpectWithin(d.db, differences(d.b), tol, "db vs finite differences");
    if (o.has_c) ExpectWithin(d.dc, differences(d.c), tol, "dc vs finite differences");
    if (o.has_h0) ExpectWithin(d.dh0, differences(d.h0), tol, "dh0 vs finite differences");
    if (::testing::Test::HasFailure()) return;
  }
}

void LinearScanBackwardLongRow(Backend& backend, Rng& rng) {
  for (Layout layout : kLayouts) {
    for (bool states : {false, true}) {
      const LinearScanBackwardOptions o{.layout = layout,
                                        .has_b = true,
                                        .has_c = true,
                                        .has_h0 = true,
                                        .has_states = states,
                                        .reverse = rng.Bool()};
      SCOPED_TRACE(SignatureKey(o));
      // Several rows, so that dh0's relative L2 error is taken over a vector: a single row's dh0
      // is a signed sum that can cancel to near zero, and then no float32 evaluation meets a
      // relative target on it alone (the CPU backend missed 1e-5 by up to 25x on such seeds).
      const SeqShape shape =
          layout == Layout::kBDL ? SeqShape{1, 4, 100003} : SeqShape{1, 5, 66001};
      LinearScanBackwardData d = MakeLinearScanBackwardData(o, shape, rng);
      RunAndCheck(backend, d);
    }
  }
}

// ---- selective_scan ----

void SelectiveScanMatchesReference(Backend& backend, Rng& rng) {
  for (SelectiveScanOptions o : AllSelectiveScanOptions()) {
    o.state_dim = static_cast<int32_t>(rng.Int(1, 17));
    if (o.variable_b || o.variable_c) o.groups = static_cast<int32_t>(rng.Int(1, 3));
    SCOPED_TRACE(SignatureKey(o));
    std::vector<SelectiveScanData> requests;
    for (const SeqShape& s : {SeqShape{1, o.groups, 1}, SeqShape{2, 5 * o.groups, 9},
                              RandomShape(rng, 2, 12, 40, o.groups)}) {
      requests.push_back(MakeSelectiveScanData(o, s, rng));
    }
    RunBatchAndCheck(backend, requests);
    if (::testing::Test::HasFailure()) return;
  }
}

void SelectiveScanStateSizes(Backend& backend, Rng& rng) {
  for (int32_t n : {1, 4, 16, 64, 256}) {
    for (Layout layout : kLayouts) {
      for (DType dtype : {DType::kFloat32, DType::kBFloat16}) {
        const SelectiveScanOptions o{.dtype = dtype,
                                     .layout = layout,
                                     .state_dim = n,
                                     .groups = n == 16 ? 4 : 2,
                                     .variable_b = true,
                                     .variable_c = n != 64,
                                     .has_d_skip = true,
                                     .has_z = true,
                                     .has_delta_bias = true,
                                     .delta_softplus = true,
                                     .has_h0 = true,
                                     .return_last_state = true};
        SCOPED_TRACE(SignatureKey(o));
        std::vector<SelectiveScanData> requests;
        requests.push_back(MakeSelectiveScanData(o, SeqShape{2, 12, 37}, rng));
        requests.push_back(MakeSelectiveScanData(o, SeqShape{1, 4, 1}, rng));
        RunBatchAndCheck(backend, requests);
      }
    }
  }
}

void SelectiveScanSoftplusThreshold(Backend& backend, Rng& rng) {
  for (Layout layout : kLayouts) {
    const SelectiveScanOptions o{.layout = layout,
                                 .state_dim = 5,
                                 .has_d_skip = true,
                                 .has_delta_bias = rng.Bool(),
                                 .delta_softplus = true,
                                 .return_last_state = true};
    SCOPED_TRACE(SignatureKey(o));
    // Past about 88 a float32 exp overflows: a softplus without the threshold gives inf there.
    SelectiveScanData d = MakeSelectiveScanData(o, SeqShape{2, 6, 50}, rng, 15.0, 120.0);
    RunAndCheck(backend, d);
  }
}

void SelectiveScanLongRow(Backend& backend, Rng& rng) {
  for (Layout layout : kLayouts) {
    const SelectiveScanOptions o{.layout = layout,
                                 .state_dim = 16,
                                 .has_d_skip = true,
                                 .has_z = true,
                                 .has_delta_bias = true,
                                 .delta_softplus = true,
                                 .return_last_state = true};
    SCOPED_TRACE(SignatureKey(o));
    SelectiveScanData d = MakeSelectiveScanData(o, SeqShape{1, 2, 70001}, rng);
    RunAndCheck(backend, d);
  }
}

void SelectiveScanChained(Backend& backend, Rng& rng, bool bit_exact) {
  for (Layout layout : kLayouts) {
    const SelectiveScanOptions o{.dtype = rng.Bool() ? DType::kFloat32 : DType::kBFloat16,
                                 .layout = layout,
                                 .state_dim = static_cast<int32_t>(rng.Int(1, 20)),
                                 .groups = 2,
                                 .variable_b = true,
                                 .variable_c = rng.Bool(),
                                 .has_d_skip = true,
                                 .has_z = rng.Bool(),
                                 .has_delta_bias = true,
                                 .delta_softplus = true,
                                 .has_h0 = true,
                                 .return_last_state = true};
    SCOPED_TRACE(SignatureKey(o));
    const SeqShape shape{2, 6, 173};
    SelectiveScanData whole = MakeSelectiveScanData(o, shape, rng);
    Poison(whole);
    ASSERT_TRUE(RunBatch(backend, {&whole}).ok());

    // Variable B/C, (batch, G, N, L) or (batch, L, G, N), slice like sequences of G * N channels.
    const int64_t bc_dim = int64_t{o.groups} * o.state_dim;
    const std::vector<int64_t> cuts = RandomCuts(rng, shape.length, 3);
    HostTensor y(o.dtype, shape.elements());
    HostTensor state(DType::kFloat32, whole.h0.count());
    std::memcpy(state.data(), whole.h0.data(), whole.h0.bytes());
    for (size_t k = 0; k + 1 < cuts.size(); ++k) {
      const int64_t t0 = cuts[k];
      const SeqShape ps{shape.batch, shape.dim, cuts[k + 1] - t0};
      SelectiveScanData piece = MakeSelectiveScanData(o, ps, rng);
      CopySteps(whole.u, shape, layout, t0, piece.u, ps);
      CopySteps(whole.delta, shape, layout, t0, piece.delta, ps);
      if (o.has_z) CopySteps(whole.z, shape, layout, t0, piece.z, ps);
      const SeqShape bc_whole{shape.batch, bc_dim, shape.length};
      const SeqShape bc_piece{shape.batch, bc_dim, ps.length};
      if (o.variable_b) {
        CopySteps(whole.B, bc_whole, layout, t0, piece.B, bc_piece);
      } else {
        std::memcpy(piece.B.data(), whole.B.data(), whole.B.bytes());
      }
      if (o.variable_c) {
        CopySteps(whole.C, bc_whole, layout, t0, piece.C, bc_piece);
      } else {
        std::memcpy(piece.C.data(), whole.C.data(), whole.C.bytes());
      }
      for (auto [dst, src] :
           {std::pair{&piece.A, &whole.A}, std::pair{&piece.d_skip, &whole.d_skip},
            std::pair{&piece.delta_bias, &whole.delta_bias}, std::pair{&piece.h0, &state}}) {
        std::memcpy(dst->data(), src->data(), src->bytes());
      }
      Poison(piece);
      ASSERT_TRUE(RunBatch(backend, {&piece}).ok());
      std::memcpy(state.data(), piece.last_state.data(), state.bytes());
      PasteSteps(piece.y, ps, layout, t0, y, shape);
    }
    const RefSelectiveScan ref = ReferenceSelectiveScan(o, whole.Problem());
    ExpectWithin(y, ref.y, Tolerance(o.dtype), "chained y");
    ExpectWithin(state, ref.last_state, Tolerance(DType::kFloat32), "chained last state");
    if (bit_exact) {
      EXPECT_TRUE(y.BitEqual(whole.y)) << "chained y differs from one request";
      EXPECT_TRUE(state.BitEqual(whole.last_state)) << "chained state differs";
    }
  }
}

// ---- associative_scan ----

void AssociativeScanMatchesReference(Backend& backend, Rng& rng) {
  for (const AssociativeScanOptions& o : AllAssociativeScanOptions()) {
    SCOPED_TRACE(SignatureKey(o));
    std::vector<AssociativeScanData> requests;
    for (const SeqShape& s : SmallShapes(rng)) {
      requests.push_back(MakeAssociativeScanData(o, s, rng));
    }
    RunBatchAndCheck(backend, requests);
    if (::testing::Test::HasFailure()) return;
  }
}

void AssociativeScanIntegerAddWraps(Backend& backend, Rng& rng) {
  for (DType dtype : {DType::kInt32, DType::kInt64}) {
    for (Layout layout : kLayouts) {
      const AssociativeScanOptions o{
          .dtype = dtype, .layout = layout, .op = ScanOperator::kAdd, .reverse = rng.Bool()};
      SCOPED_TRACE(SignatureKey(o));
      AssociativeScanData d = MakeAssociativeScanData(o, SeqShape{2, 3, 101}, rng);
      // Large positive inputs only: every prefix past the first few has wrapped, so a wrapped
      // (negative) output must appear.
      const int64_t max = dtype == DType::kInt32 ? std::numeric_limits<int32_t>::max()
                                                 : std::numeric_limits<int64_t>::max();
      for (int64_t i = 0; i < d.x.count(); ++i) {
        const int64_t v = rng.Int(max / 2, max);
        if (dtype == DType::kInt32) {
          d.x.As<int32_t>()[i] = static_cast<int32_t>(v);
        } else {
          d.x.As<int64_t>()[i] = v;
        }
      }
      RunAndCheck(backend, d);
      bool wrapped = false;
      for (int64_t i = 0; i < d.y.count(); ++i) wrapped = wrapped || d.y.GetInt(i) < 0;
      EXPECT_TRUE(wrapped);
    }
  }
}

void AssociativeScanNanPropagates(Backend& backend, Rng& rng) {
  for (DType dtype : kFloatTypes) {
    for (ScanOperator op : {ScanOperator::kMax, ScanOperator::kMin}) {
      for (Layout layout : kLayouts) {
        const AssociativeScanOptions o{.dtype = dtype,
                                       .layout = layout,
                                       .op = op,
                                       .reverse = rng.Bool(),
                                       .exclusive = rng.Bool()};
        SCOPED_TRACE(SignatureKey(o));
        const SeqShape shape{2, 9, 41};
        AssociativeScanData d = MakeAssociativeScanData(o, shape, rng);
        // One NaN in most rows, at a random step; the reference says where NaN must follow.
        for (int64_t b = 0; b < shape.batch; ++b) {
          for (int64_t c = 0; c < shape.dim; ++c) {
            if (rng.Int(0, 3) == 0) continue;
            d.x.Set(SeqOffset(shape, layout, b, c, rng.Int(0, shape.length - 1)),
                    std::numeric_limits<double>::quiet_NaN());
          }
        }
        RunAndCheck(backend, d);
      }
    }
  }
}

void AssociativeScanExclusiveIdentities(Backend& backend, Rng& rng) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  for (DType dtype : kAllTypes) {
    for (ScanOperator op : kOperators) {
      if (!OperatorSupports(op, dtype)) continue;
      for (bool reverse : {false, true}) {
        const AssociativeScanOptions o{.dtype = dtype,
                                       .layout = rng.Bool() ? Layout::kBDL : Layout::kBLD,
                                       .op = op,
                                       .reverse = reverse,
                                       .exclusive = true};
        SCOPED_TRACE(SignatureKey(o));
        const SeqShape shape{2, 3, 6};
        AssociativeScanData d = MakeAssociativeScanData(o, shape, rng);
        RunAndCheck(backend, d);
        const bool is_int = !IsFloatingPoint(dtype);
        const int64_t int_min = dtype == DType::kInt32 ? std::numeric_limits<int32_t>::min()
                                                       : std::numeric_limits<int64_t>::min();
        const int64_t int_max = dtype == DType::kInt32 ? std::numeric_limits<int32_t>::max()
                                                       : std::numeric_limits<int64_t>::max();
        for (int64_t b = 0; b < shape.batch; ++b) {
          for (int64_t c = 0; c < shape.dim; ++c) {
            const int64_t i = SeqOffset(shape, o.layout, b, c, reverse ? shape.length - 1 : 0);
            switch (op) {
              case ScanOperator::kAdd:
                EXPECT_EQ(d.y.Get(i), 0.0);
                break;
              case ScanOperator::kMul:
                EXPECT_EQ(d.y.Get(i), 1.0);
                break;
              case ScanOperator::kMax:
                if (is_int) {
                  EXPECT_EQ(d.y.GetInt(i), int_min);
                } else {
                  EXPECT_EQ(d.y.Get(i), -kInf);
                }
                break;
              case ScanOperator::kMin:
                if (is_int) {
                  EXPECT_EQ(d.y.GetInt(i), int_max);
                } else {
                  EXPECT_EQ(d.y.Get(i), kInf);
                }
                break;
              case ScanOperator::kLogAddExp:
                EXPECT_EQ(d.y.Get(i), -kInf);
                break;
            }
          }
        }
      }
    }
  }
}

void AssociativeScanLongRows(Backend& backend, Rng& rng) {
  const struct {
    DType dtype;
    ScanOperator op;
    Layout layout;
    SeqShape shape;
  } cases[] = {
      {DType::kFloat32, ScanOperator::kAdd, Layout::kBDL, {1, 1, (int64_t{1} << 17) + 3}},
      {DType::kFloat32, ScanOperator::kAdd, Layout::kBLD, {1, 3, 70001}},
      {DType::kBFloat16, ScanOperator::kAdd, Layout::kBDL, {1, 2, 70001}},
      {DType::kFloat32, ScanOperator::kLogAddExp, Layout::kBDL, {1, 1, 70001}},
      {DType::kInt64, ScanOperator::kAdd, Layout::kBLD, {1, 2, 70001}},
      {DType::kFloat16, ScanOperator::kMax, Layout::kBDL, {1, 1, 70001}},
  };
  for (const auto& c : cases) {
    const AssociativeScanOptions o{
        .dtype = c.dtype, .layout = c.layout, .op = c.op, .reverse = rng.Bool()};
    SCOPED_TRACE(SignatureKey(o));
    AssociativeScanData d = MakeAssociativeScanData(o, c.shape, rng);
    RunAndCheck(backend, d);
  }
}

// ---- properties of any batch ----

namespace {

template <typename Data, typename Make>
void ExpectBatchInvariant(Backend& backend, Rng& rng, Make make) {
  std::vector<Data> requests;
  const int count = static_cast<int>(rng.Int(2, 6));
  for (int k = 0; k < count; ++k) requests.push_back(make());
  std::vector<Snapshot> alone;
  for (Data& r : requests) {
    Poison(r);
    ASSERT_TRUE(RunBatch(backend, {&r}).ok());
    alone.push_back(Take(r));
  }
  std::vector<Data*> batch;
  for (Data& r : requests) {
    Poison(r);
    batch.push_back(&r);
  }
  std::shuffle(batch.begin(), batch.end(), rng.engine());
  ASSERT_TRUE(RunBatch(backend, batch).ok());
  for (int k = 0; k < count; ++k) {
    ExpectSameBytes(requests[static_cast<size_t>(k)], alone[static_cast<size_t>(k)],
                    "alone vs in batch, request " + std::to_string(k));
  }
}

template <typename T>
const T& Pick(Rng& rng, const std::vector<T>& all) {
  return all[static_cast<size_t>(rng.Int(0, static_cast<int64_t>(all.size()) - 1))];
}

}  // namespace

void BatchInvariance(Backend& backend, Rng& rng) {
  const auto linear = AllLinearScanOptions();
  const auto backward = AllLinearScanBackwardOptions();
  const auto selective = AllSelectiveScanOptions();
  const auto associative = AllAssociativeScanOptions();
  for (int round = 0; round < 6; ++round) {
    const LinearScanOptions lo = Pick(rng, linear);
    SCOPED_TRACE(SignatureKey(lo));
    ExpectBatchInvariant<LinearScanData>(
        backend, rng, [&] { return MakeLinearScanData(lo, RandomShape(rng, 3, 70, 600), rng); });

    const LinearScanBackwardOptions bo = Pick(rng, backward);
    SCOPED_TRACE(SignatureKey(bo));
    ExpectBatchInvariant<LinearScanBackwardData>(backend, rng, [&] {
      return MakeLinearScanBackwardData(bo, RandomShape(rng, 3, 70, 600), rng);
    });

    SelectiveScanOptions so = Pick(rng, selective);
    so.state_dim = static_cast<int32_t>(rng.Int(1, 40));
    so.groups = static_cast<int32_t>(rng.Int(1, 3));
    SCOPED_TRACE(SignatureKey(so));
    ExpectBatchInvariant<SelectiveScanData>(backend, rng, [&] {
      return MakeSelectiveScanData(so, RandomShape(rng, 2, 24, 200, so.groups), rng);
    });

    const AssociativeScanOptions ao = Pick(rng, associative);
    SCOPED_TRACE(SignatureKey(ao));
    ExpectBatchInvariant<AssociativeScanData>(backend, rng, [&] {
      return MakeAssociativeScanData(ao, RandomShape(rng, 3, 70, 600), rng);
    });
    if (::testing::Test::HasFailure()) return;
  }
}

void ConcurrentBatches(Backend& backend, Rng& rng) {
  constexpr int kThreads = 4;
  constexpr int kRepeats = 5;
  std::vector<std::vector<LinearScanData>> linear(kThreads);
  std::vector<std::vector<SelectiveScanData>> selective(kThreads);
  std::vector<std::vector<Snapshot>> linear_expected(kThreads), selective_expected(kThreads);
  const auto linear_options = AllLinearScanOptions();
  const auto selective_options = AllSelectiveScanOptions();
  for (int k = 0; k < kThreads; ++k) {
    const LinearScanOptions lo = Pick(rng, linear_options);
    SelectiveScanOptions so = Pick(rng, selective_options);
    so.state_dim = 16;
    for (int r = 0; r < 3; ++r) {
      linear[k].push_back(MakeLinearScanData(lo, RandomShape(rng, 2, 64, 3000), rng));
      selective[k].push_back(MakeSelectiveScanData(so, RandomShape(rng, 2, 16, 500), rng));
    }
    for (auto& d : linear[k]) {
      Poison(d);
      ASSERT_TRUE(RunBatch(backend, {&d}).ok());
      linear_expected[k].push_back(Take(d));
    }
    for (auto& d : selective[k]) {
      Poison(d);
      ASSERT_TRUE(RunBatch(backend, {&d}).ok());
      selective_expected[k].push_back(Take(d));
    }
  }
  std::vector<std::thread> threads;
  for (int k = 0; k < kThreads; ++k) {
    threads.emplace_back([&, k] {
      for (int rep = 0; rep < kRepeats; ++rep) {
        std::vector<LinearScanData*> lb;
        for (auto& d : linear[k]) {
          Poison(d);
          lb.push_back(&d);
        }
        EXPECT_TRUE(RunBatch(backend, lb).ok());
        std::vector<SelectiveScanData*> sb;
        for (auto& d : selective[k]) {
          Poison(d);
          sb.push_back(&d);
        }
        EXPECT_TRUE(RunBatch(backend, sb).ok());
        for (size_t r = 0; r < linear[k].size(); ++r) {
          ExpectSameBytes(linear[k][r], linear_expected[k][r], "concurrent linear_scan");
          ExpectSameBytes(selective[k][r], selective_expected[k][r], "concurrent selective_scan");
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
}

void InconsistentBatchIsInvalidArgument(Backend& backend) {
  Rng rng;
  LinearScanData d = MakeLinearScanData({.has_b = true}, SeqShape{1, 2, 8}, rng);
  LinearScanProblem p = d.Problem();
  p.b = nullptr;
  const LinearScanBatch batch{d.options, std::span<const LinearScanProblem>(&p, 1)};
  EXPECT_EQ(backend.Run(batch).code(), absl::StatusCode::kInvalidArgument);

  LinearScanBackwardData bd =
      MakeLinearScanBackwardData({.has_c = true, .has_h0 = true}, SeqShape{2, 2, 8}, rng);
  LinearScanBackwardProblem bp = bd.Problem();
  bp.dh0 = nullptr;
  const LinearScanBackwardBatch bbatch{bd.options,
                                       std::span<const LinearScanBackwardProblem>(&bp, 1)};
  EXPECT_EQ(backend.Run(bbatch).code(), absl::StatusCode::kInvalidArgument);

  SelectiveScanData sd = MakeSelectiveScanData({.state_dim = 4, .has_z = true}, {1, 2, 8}, rng);
  SelectiveScanProblem sp = sd.Problem();
  sp.z = nullptr;
  const SelectiveScanBatch sbatch{sd.options, std::span<const SelectiveScanProblem>(&sp, 1)};
  EXPECT_EQ(backend.Run(sbatch).code(), absl::StatusCode::kInvalidArgument);

  AssociativeScanData ad = MakeAssociativeScanData({}, {1, 2, 8}, rng);
  AssociativeScanProblem ap = ad.Problem();
  ap.y = nullptr;
  const AssociativeScanBatch abatch{ad.options, std::span<const AssociativeScanProblem>(&ap, 1)};
  EXPECT_EQ(backend.Run(abatch).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace scanserve::testing
