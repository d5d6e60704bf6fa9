#include "client/scanctl_verify.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/scanctl_requests.h"
#include "scanserve/client_tensor.h"
#include "scanserve/ops.h"

namespace scanserve::scanctl {
namespace {

#define SCANCTL_ASSIGN_OR_RETURN(lhs, expr)     \
  auto lhs##_or = (expr);                       \
  if (!lhs##_or.ok()) return lhs##_or.status(); \
  auto lhs = *std::move(lhs##_or)

// Owns the aligned copies of inputs and the outputs the backend writes: proto byte strings give
// no alignment guarantee for the element types.
class Buffers {
 public:
  void* Alloc(size_t bytes) {
    blocks_.push_back(std::make_unique<uint64_t[]>((bytes + 7) / 8 + 1));
    sizes_.push_back(bytes);
    return blocks_.back().get();
  }

  // Checks `t` has exactly `dtype` and `shape` (and `layout` for sequence tensors) and returns an
  // aligned copy of its elements.
  absl::StatusOr<const void*> Input(const v1::Tensor& t, const std::string& name, DType dtype,
                                    const std::vector<int64_t>& shape,
                                    std::optional<Layout> layout) {
    absl::StatusOr<int64_t> count = CheckTensor(t);
    if (!count.ok())
      return absl::InvalidArgumentError(absl::StrCat(name, ": ", count.status().message()));
    if (t.dtype() != ToProto(dtype)) {
      return absl::InvalidArgumentError(absl::StrCat(name, ".dtype: must be ",
                                                     std::string(DTypeName(dtype)), ", got ",
                                                     v1::DType_Name(t.dtype())));
    }
    if (!std::equal(t.shape().begin(), t.shape().end(), shape.begin(), shape.end())) {
      return absl::InvalidArgumentError(absl::StrCat(name, ".shape: must be (",
                                                     absl::StrJoin(shape, ", "), "), got (",
                                                     absl::StrJoin(t.shape(), ", "), ")"));
    }
    if (layout.has_value() && t.layout() != ToProto(*layout)) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ".layout: must match the request's layout ", std::string(LayoutName(*layout))));
    }
    void* copy = Alloc(t.data().size());
    std::memcpy(copy, t.data().data(), t.data().size());
    return static_cast<const void*>(copy);
  }

 private:
  std::vector<std::unique_ptr<uint64_t[]>> blocks_;
  std::vector<size_t> sizes_;
};

struct Sequence {
  DType dtype;
  Layout layout;
  SeqShape shape;
  std::vector<int64_t> dims;  // in memory order
};

absl::StatusOr<Sequence> SequenceOf(const v1::Tensor& t, const std::string& name) {
  SCANCTL_ASSIGN_OR_RETURN(dtype, FromProto(t.dtype()));
  SCANCTL_ASSIGN_OR_RETURN(layout, FromProto(t.layout()));
  if (t.shape_size() != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ".shape: must have 3 dimensions, got ", t.shape_size()));
  }
  Sequence s{dtype, layout, {}, {t.shape(0), t.shape(1), t.shape(2)}};
  s.shape = layout == Layout::kBDL ? SeqShape{t.shape(0), t.shape(1), t.shape(2)}
                                   : SeqShape{t.shape(0), t.shape(2), t.shape(1)};
  if (s.shape.batch < 1 || s.shape.dim < 1 || s.shape.length < 1) {
    return absl::InvalidArgumentError(absl::StrCat(name, ".shape: dimensions must be positive"));
  }
  return s;
}

v1::Tensor OutputTensor(const void* data, DType dtype, const std::vector<int64_t>& shape,
                        Layout layout) {
  const int64_t count = ElementCount(shape).value();
  std::string bytes(static_cast<const char*>(data), static_cast<size_t>(count) * DTypeSize(dtype));
  return MakeTensorFromBytes(std::move(bytes), shape, dtype, layout).value();
}

size_t SeqBytes(const Sequence& s, DType dtype) {
  return static_cast<size_t>(s.shape.elements()) * DTypeSize(dtype);
}

// (B, D): the shape of per-row states (h0, final state, dh0).
std::vector<int64_t> StateDims(const Sequence& seq) { return {seq.shape.batch, seq.shape.dim}; }

// The inputs linear_scan and linear_scan_backward share: a, x and the optional b, c and h0.
template <typename Request, typename Problem>
absl::Status LinearInputs(const Request& m, const Sequence& seq, Buffers& buffers, Problem& p) {
  p.shape = seq.shape;
  SCANCTL_ASSIGN_OR_RETURN(a, buffers.Input(m.a(), "a", seq.dtype, seq.dims, seq.layout));
  SCANCTL_ASSIGN_OR_RETURN(x, buffers.Input(m.x(), "x", seq.dtype, seq.dims, seq.layout));
  p.a = a;
  p.x = x;
  if (m.has_b()) {
    SCANCTL_ASSIGN_OR_RETURN(b, buffers.Input(m.b(), "b", seq.dtype, seq.dims, seq.layout));
    p.b = b;
  }
  if (m.has_c()) {
    SCANCTL_ASSIGN_OR_RETURN(c, buffers.Input(m.c(), "c", seq.dtype, seq.dims, seq.layout));
    p.c = c;
  }
  if (m.has_h0()) {
    SCANCTL_ASSIGN_OR_RETURN(
        h0, buffers.Input(m.h0(), "h0", DType::kFloat32, StateDims(seq), std::nullopt));
    p.h0 = static_cast<const float*>(h0);
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::StreamResponse> LinearScan(const v1::LinearScanRequest& m, Backend& backend) {
  SCANCTL_ASSIGN_OR_RETURN(seq, SequenceOf(m.x(), "x"));
  Buffers buffers;
  LinearScanOptions o{
      seq.dtype, seq.layout, m.has_b(), m.has_c(), m.has_h0(), m.reverse(), m.return_final_state()};
  LinearScanProblem p;
  if (absl::Status s = LinearInputs(m, seq, buffers, p); !s.ok()) return s;
  const std::vector<int64_t> state_dims = StateDims(seq);
  p.y = buffers.Alloc(SeqBytes(seq, seq.dtype));
  if (o.return_final_state) {
    p.final_state = static_cast<float*>(buffers.Alloc(seq.shape.rows() * sizeof(float)));
  }
  if (absl::Status s = backend.Run(LinearScanBatch{o, std::span(&p, 1)}); !s.ok()) return s;
  v1::StreamResponse response;
  v1::LinearScanResponse* out = response.mutable_linear_scan();
  *out->mutable_y() = OutputTensor(p.y, seq.dtype, seq.dims, seq.layout);
  if (o.return_final_state) {
    *out->mutable_final_state() =
        OutputTensor(p.final_state, DType::kFloat32, state_dims, Layout::kBDL);
  }
  return response;
}

absl::StatusOr<v1::StreamResponse> LinearScanBackward(const v1::LinearScanBackwardRequest& m,
                                                      Backend& backend) {
  SCANCTL_ASSIGN_OR_RETURN(seq, SequenceOf(m.x(), "x"));
  Buffers buffers;
  LinearScanBackwardOptions o{seq.dtype,  seq.layout, m.has_b(),  m.has_c(),
                              m.has_h0(), m.has_h(),  m.reverse()};
  LinearScanBackwardProblem p;
  if (absl::Status s = LinearInputs(m, seq, buffers, p); !s.ok()) return s;
  SCANCTL_ASSIGN_OR_RETURN(dy, buffers.Input(m.dy(), "dy", seq.dtype, seq.dims, seq.layout));
  p.dy = dy;
  const std::vector<int64_t> state_dims = StateDims(seq);
  if (o.has_states) {
    SCANCTL_ASSIGN_OR_RETURN(h, buffers.Input(m.h(), "h", DType::kFloat32, seq.dims, seq.layout));
    p.states = static_cast<const float*>(h);
  }
  p.da = buffers.Alloc(SeqBytes(seq, seq.dtype));
  p.dx = buffers.Alloc(SeqBytes(seq, seq.dtype));
  if (o.has_b) p.db = buffers.Alloc(SeqBytes(seq, seq.dtype));
  if (o.has_c) p.dc = buffers.Alloc(SeqBytes(seq, seq.dtype));
  if (o.has_h0) p.dh0 = static_cast<float*>(buffers.Alloc(seq.shape.rows() * sizeof(float)));
  if (absl::Status s = backend.Run(LinearScanBackwardBatch{o, std::span(&p, 1)}); !s.ok()) {
    return s;
  }
  v1::StreamResponse response;
  v1::LinearScanBackwardResponse* out = response.mutable_linear_scan_backward();
  *out->mutable_da() = OutputTensor(p.da, seq.dtype, seq.dims, seq.layout);
  *out->mutable_dx() = OutputTensor(p.dx, seq.dtype, seq.dims, seq.layout);
  if (o.has_b) *out->mutable_db() = OutputTensor(p.db, seq.dtype, seq.dims, seq.layout);
  if (o.has_c) *out->mutable_dc() = OutputTensor(p.dc, seq.dtype, seq.dims, seq.layout);
  if (o.has_h0) {
    *out->mutable_dh0() = OutputTensor(p.dh0, DType::kFloat32, state_dims, Layout::kBDL);
  }
  return response;
}

absl::StatusOr<v1::StreamResponse> SelectiveScan(const v1::SelectiveScanRequest& m,
                                                 Backend& backend) {
  SCANCTL_ASSIGN_OR_RETURN(seq, SequenceOf(m.u(), "u"));
  const int64_t B = seq.shape.batch, D = seq.shape.dim, L = seq.shape.length;
  if (m.a().shape_size() != 2 || m.a().shape(0) != D || m.a().shape(1) < 1) {
    return absl::InvalidArgumentError(absl::StrCat("A.shape: must be (dim=", D, ", state), got (",
                                                   absl::StrJoin(m.a().shape(), ", "), ")"));
  }
  const int64_t N = m.a().shape(1);
  // Variable B/C: (B, G, N, L) in BDL, (B, L, G, N) in BLD; the group count is read off them.
  auto groups_of = [&](const v1::Tensor& t) -> int64_t {
    if (t.shape_size() != 4) return 0;
    return seq.layout == Layout::kBDL ? t.shape(1) : t.shape(2);
  };
  const bool variable_b = m.b().shape_size() != 2;
  const bool variable_c = m.c().shape_size() != 2;
  const int64_t groups = variable_b ? groups_of(m.b()) : variable_c ? groups_of(m.c()) : 1;
  if (groups < 1 || D % groups != 0) {
    return absl::InvalidArgumentError(
        "B, C: variable B/C must be 4-dimensional with a group count that divides dim");
  }
  const std::vector<int64_t> var_dims = seq.layout == Layout::kBDL
                                            ? std::vector<int64_t>{B, groups, N, L}
                                            : std::vector<int64_t>{B, L, groups, N};
  const std::vector<int64_t> param_dims = {D, N};
  SelectiveScanOptions o;
  o.dtype = seq.dtype;
  o.layout = seq.layout;
  o.state_dim = static_cast<int32_t>(N);
  o.groups = static_cast<int32_t>(groups);
  o.variable_b = variable_b;
  o.variable_c = variable_c;
  o.has_d_skip = m.has_d();
  o.has_z = m.has_z();
  o.has_delta_bias = m.has_delta_bias();
  o.delta_softplus = m.delta_softplus();
  o.has_h0 = m.has_h0();
  o.return_last_state = m.return_last_state();

  Buffers buffers;
  SelectiveScanProblem p;
  p.shape = seq.shape;
  SCANCTL_ASSIGN_OR_RETURN(u, buffers.Input(m.u(), "u", seq.dtype, seq.dims, seq.layout));
  SCANCTL_ASSIGN_OR_RETURN(delta,
                           buffers.Input(m.delta(), "delta", seq.dtype, seq.dims, seq.layout));
  SCANCTL_ASSIGN_OR_RETURN(A, buffers.Input(m.a(), "A", DType::kFloat32, param_dims, std::nullopt));
  p.u = u;
  p.delta = delta;
  p.A = static_cast<const float*>(A);
  SCANCTL_ASSIGN_OR_RETURN(
      Bm, variable_b ? buffers.Input(m.b(), "B", seq.dtype, var_dims, seq.layout)
                     : buffers.Input(m.b(), "B", DType::kFloat32, param_dims, std::nullopt));
  SCANCTL_ASSIGN_OR_RETURN(
      Cm, variable_c ? buffers.Input(m.c(), "C", seq.dtype, var_dims, seq.layout)
                     : buffers.Input(m.c(), "C", DType::kFloat32, param_dims, std::nullopt));
  p.B = Bm;
  p.C = Cm;
  if (o.has_d_skip) {
    SCANCTL_ASSIGN_OR_RETURN(d, buffers.Input(m.d(), "D", DType::kFloat32, {D}, std::nullopt));
    p.d_skip = static_cast<const float*>(d);
  }
  if (o.has_z) {
    SCANCTL_ASSIGN_OR_RETURN(z, buffers.Input(m.z(), "z", seq.dtype, seq.dims, seq.layout));
    p.z = z;
  }
  if (o.has_delta_bias) {
    SCANCTL_ASSIGN_OR_RETURN(
        bias, buffers.Input(m.delta_bias(), "delta_bias", DType::kFloat32, {D}, std::nullopt));
    p.delta_bias = static_cast<const float*>(bias);
  }
  const std::vector<int64_t> state_dims = {B, D, N};
  if (o.has_h0) {
    SCANCTL_ASSIGN_OR_RETURN(
        h0, buffers.Input(m.h0(), "h0", DType::kFloat32, state_dims, std::nullopt));
    p.h0 = static_cast<const float*>(h0);
  }
  p.y = buffers.Alloc(SeqBytes(seq, seq.dtype));
  if (o.return_last_state) {
    p.last_state = static_cast<float*>(buffers.Alloc(static_cast<size_t>(B * D * N) * 4));
  }
  if (absl::Status s = backend.Run(SelectiveScanBatch{o, std::span(&p, 1)}); !s.ok()) return s;
  v1::StreamResponse response;
  v1::SelectiveScanResponse* out = response.mutable_selective_scan();
  *out->mutable_y() = OutputTensor(p.y, seq.dtype, seq.dims, seq.layout);
  if (o.return_last_state) {
    *out->mutable_last_state() =
        OutputTensor(p.last_state, DType::kFloat32, state_dims, Layout::kBDL);
  }
  return response;
}

absl::StatusOr<v1::StreamResponse> AssociativeScan(const v1::AssociativeScanRequest& m,
                                                   Backend& backend) {
  SCANCTL_ASSIGN_OR_RETURN(seq, SequenceOf(m.x(), "x"));
  AssociativeScanOptions o;
  o.dtype = seq.dtype;
  o.layout = seq.layout;
  switch (m.operator_()) {
    case v1::ADD:
      o.op = ScanOperator::kAdd;
      break;
    case v1::MUL:
      o.op = ScanOperator::kMul;
      break;
    case v1::MAX:
      o.op = ScanOperator::kMax;
      break;
    case v1::MIN:
      o.op = ScanOperator::kMin;
      break;
    case v1::LOGADDEXP:
      o.op = ScanOperator::kLogAddExp;
      break;
    default:
      return absl::InvalidArgumentError("operator: must be set");
  }
  if (!OperatorSupports(o.op, o.dtype)) {
    return absl::InvalidArgumentError("operator: not defined on the dtype of x");
  }
  o.reverse = m.reverse();
  o.exclusive = m.exclusive();
  Buffers buffers;
  AssociativeScanProblem p;
  p.shape = seq.shape;
  SCANCTL_ASSIGN_OR_RETURN(x, buffers.Input(m.x(), "x", seq.dtype, seq.dims, seq.layout));
  p.x = x;
  p.y = buffers.Alloc(SeqBytes(seq, seq.dtype));
  if (absl::Status s = backend.Run(AssociativeScanBatch{o, std::span(&p, 1)}); !s.ok()) return s;
  v1::StreamResponse response;
  *response.mutable_associative_scan()->mutable_y() =
      OutputTensor(p.y, seq.dtype, seq.dims, seq.layout);
  return response;
}

OutputCheck CompareTensor(const std::string& name, const v1::Tensor& got, const v1::Tensor& want,
                          double tolerance) {
  OutputCheck check;
  check.name = name;
  check.tolerance = tolerance;
  if (got.dtype() != want.dtype() || !std::equal(got.shape().begin(), got.shape().end(),
                                                 want.shape().begin(), want.shape().end())) {
    check.problem = absl::StrCat(
        "expected ", v1::DType_Name(want.dtype()), " (", absl::StrJoin(want.shape(), ", "),
        "), got ", v1::DType_Name(got.dtype()), " (", absl::StrJoin(got.shape(), ", "), ")");
    return check;
  }
  if (absl::StatusOr<int64_t> n = CheckTensor(got); !n.ok()) {
    check.problem = std::string(n.status().message());
    return check;
  }
  const DType dtype = *FromProto(want.dtype());
  if (!IsFloatingPoint(dtype)) {
    const std::vector<int64_t> g = *TensorToInts(got), w = *TensorToInts(want);
    double diff2 = 0, ref2 = 0;
    for (size_t i = 0; i < g.size(); ++i) {
      const double d = static_cast<double>(g[i]) - static_cast<double>(w[i]);
      if (g[i] != w[i]) ++check.mismatches;
      diff2 += d * d;
      ref2 += static_cast<double>(w[i]) * static_cast<double>(w[i]);
      check.max_abs = std::max(check.max_abs, std::abs(d));
    }
    check.rel_l2 = ref2 > 0 ? std::sqrt(diff2 / ref2) : std::sqrt(diff2);
    check.ok = check.mismatches == 0;
    return check;
  }
  const std::vector<float> g = *TensorToFloats(got), w = *TensorToFloats(want);
  double diff2 = 0, ref2 = 0;
  bool nan_mismatch = false;
  for (size_t i = 0; i < g.size(); ++i) {
    const double gv = g[i], wv = w[i];
    if (std::isnan(wv) || std::isnan(gv)) {
      if (std::isnan(wv) != std::isnan(gv)) {
        nan_mismatch = true;
        ++check.mismatches;
      }
      continue;
    }
    if (std::isinf(wv) || std::isinf(gv)) {
      if (gv != wv) {
        nan_mismatch = true;
        ++check.mismatches;
      }
      continue;
    }
    const double d = gv - wv;
    if (d != 0) ++check.mismatches;
    diff2 += d * d;
    ref2 += wv * wv;
    check.max_abs = std::max(check.max_abs, std::abs(d));
  }
  check.rel_l2 = ref2 > 0 ? std::sqrt(diff2 / ref2) : std::sqrt(diff2);
  if (nan_mismatch) {
    check.problem = "non-finite values differ from the reference";
    check.rel_l2 = INFINITY;
  }
  check.ok = !nan_mismatch && check.rel_l2 <= tolerance;
  return check;
}

}  // namespace

double Tolerance(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return 1e-5;
    case DType::kFloat16:
    case DType::kBFloat16:
      return 1e-2;
    case DType::kInt32:
    case DType::kInt64:
      return 0.0;
  }
  return 0.0;
}

absl::StatusOr<DType> RequestDType(const v1::StreamRequest& r) {
  switch (r.op_case()) {
    case v1::StreamRequest::kLinearScan:
      return FromProto(r.linear_scan().x().dtype());
    case v1::StreamRequest::kLinearScanBackward:
      return FromProto(r.linear_scan_backward().x().dtype());
    case v1::StreamRequest::kSelectiveScan:
      return FromProto(r.selective_scan().u().dtype());
    case v1::StreamRequest::kAssociativeScan:
      return FromProto(r.associative_scan().x().dtype());
    default:
      return absl::InvalidArgumentError("request: carries no operation");
  }
}

absl::StatusOr<v1::StreamResponse> ComputeLocally(const v1::StreamRequest& request,
                                                  Backend& backend) {
  switch (request.op_case()) {
    case v1::StreamRequest::kLinearScan:
      return LinearScan(request.linear_scan(), backend);
    case v1::StreamRequest::kLinearScanBackward:
      return LinearScanBackward(request.linear_scan_backward(), backend);
    case v1::StreamRequest::kSelectiveScan:
      return SelectiveScan(request.selective_scan(), backend);
    case v1::StreamRequest::kAssociativeScan:
      return AssociativeScan(request.associative_scan(), backend);
    default:
      return absl::InvalidArgumentError("request: carries no operation");
  }
}

VerifyReport Compare(const v1::StreamResponse& got, const v1::StreamResponse& want, DType dtype) {
  VerifyReport report;
  report.ok = true;
  const auto got_outputs = OutputTensors(got);
  const auto want_outputs = OutputTensors(want);
  for (const auto& [name, want_tensor] : want_outputs) {
    const v1::Tensor* got_tensor = nullptr;
    for (const auto& [got_name, t] : got_outputs) {
      if (got_name == name) got_tensor = t;
    }
    OutputCheck check;
    if (got_tensor == nullptr) {
      check.name = name;
      check.tolerance = Tolerance(dtype);
      check.problem = "missing from the response";
    } else {
      check = CompareTensor(name, *got_tensor, *want_tensor, Tolerance(dtype));
    }
    report.ok = report.ok && check.ok;
    report.outputs.push_back(std::move(check));
  }
  for (const auto& [name, t] : got_outputs) {
    bool expected = false;
    for (const auto& [want_name, w] : want_outputs) expected = expected || want_name == name;
    if (!expected) {
      OutputCheck check;
      check.name = name;
      check.problem = "not expected for this request";
      report.ok = false;
      report.outputs.push_back(std::move(check));
    }
  }
  return report;
}

}  // namespace scanserve::scanctl
