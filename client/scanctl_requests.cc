#include "client/scanctl_requests.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <iterator>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "scanserve/client_tensor.h"

namespace scanserve::scanctl {
namespace {

// How a tensor's random values are drawn.
enum class Fill {
  kUniform,       // uniform in [lo, hi) (integers: [lo, hi])
  kMambaA,        // A[d, n] = -(n + 1) * uniform(lo, hi): Mamba's S4D-real initialization, jittered
  kForwardStates  // linear_scan_backward's h: computed from the other inputs
};

struct TensorPlan {
  std::string name;
  DType dtype;
  Layout layout;
  std::vector<int64_t> shape;
  Fill fill = Fill::kUniform;
  double lo = -1.0;
  double hi = 1.0;
};

std::vector<int64_t> SeqDims(const RequestSpec& s) {
  return s.layout == Layout::kBDL ? std::vector<int64_t>{s.batch, s.dim, s.length}
                                  : std::vector<int64_t>{s.batch, s.length, s.dim};
}

bool With(const RequestSpec& s, const char* name) { return s.with.count(name) > 0; }

// Optional tensors each op accepts, by request field name.
std::vector<std::string> OptionalTensors(OpKind op) {
  switch (op) {
    case OpKind::kLinearScan:
      return {"b", "c", "h0"};
    case OpKind::kLinearScanBackward:
      return {"b", "c", "h0", "h"};
    case OpKind::kSelectiveScan:
      return {"D", "z", "delta_bias", "h0"};
    case OpKind::kAssociativeScan:
      return {};
  }
  return {};
}

// Ranges for associative_scan inputs: sums and products stay finite in every dtype; integer sums
// wrap (the contract says they wrap as two's complement, so wrapping must be exercised).
std::pair<double, double> AssociativeRange(const RequestSpec& s) {
  if (!IsFloatingPoint(s.dtype)) {
    const double big = s.dtype == DType::kInt32 ? std::ldexp(1.0, 30) : std::ldexp(1.0, 62);
    return s.scan_operator == ScanOperator::kAdd ? std::pair{-big, big} : std::pair{-1e6, 1e6};
  }
  switch (s.scan_operator) {
    case ScanOperator::kMul:
      return {0.97, 1.03};
    case ScanOperator::kLogAddExp:
      return {-3.0, 3.0};
    default:
      return {-1.0, 1.0};
  }
}

std::vector<TensorPlan> Plans(const RequestSpec& s) {
  const std::vector<int64_t> seq = SeqDims(s);
  const DType f32 = DType::kFloat32;
  const Layout bdl = Layout::kBDL;
  std::vector<TensorPlan> plans;
  auto add = [&](std::string name, DType dtype, Layout layout, std::vector<int64_t> shape,
                 double lo, double hi, Fill fill = Fill::kUniform) {
    plans.push_back(TensorPlan{std::move(name), dtype, layout, std::move(shape), fill, lo, hi});
  };
  switch (s.op) {
    case OpKind::kLinearScan:
    case OpKind::kLinearScanBackward:
      add("a", s.dtype, s.layout, seq, 0.5, 0.999);
      add("x", s.dtype, s.layout, seq, -1.0, 1.0);
      if (s.op == OpKind::kLinearScanBackward) add("dy", s.dtype, s.layout, seq, -1.0, 1.0);
      if (With(s, "b")) add("b", s.dtype, s.layout, seq, -1.0, 1.0);
      if (With(s, "c")) add("c", s.dtype, s.layout, seq, -1.0, 1.0);
      if (With(s, "h0")) add("h0", f32, bdl, {s.batch, s.dim}, -1.0, 1.0);
      if (With(s, "h")) add("h", f32, s.layout, seq, 0, 0, Fill::kForwardStates);
      break;
    case OpKind::kSelectiveScan: {
      const std::vector<int64_t> var =
          s.layout == Layout::kBDL ? std::vector<int64_t>{s.batch, s.groups, s.state_dim, s.length}
                                   : std::vector<int64_t>{s.batch, s.length, s.groups, s.state_dim};
      add("u", s.dtype, s.layout, seq, -1.0, 1.0);
      // dt lands around 0.01..0.3 either way, Mamba's usual range.
      if (s.delta_softplus) {
        add("delta", s.dtype, s.layout, seq, -4.0, 0.0);
      } else {
        add("delta", s.dtype, s.layout, seq, 0.01, 0.2);
      }
      add("A", f32, bdl, {s.dim, s.state_dim}, 0.5, 1.5, Fill::kMambaA);
      if (s.fixed_b) {
        add("B", f32, bdl, {s.dim, s.state_dim}, -1.0, 1.0);
      } else {
        add("B", s.dtype, s.layout, var, -1.0, 1.0);
      }
      if (s.fixed_c) {
        add("C", f32, bdl, {s.dim, s.state_dim}, -1.0, 1.0);
      } else {
        add("C", s.dtype, s.layout, var, -1.0, 1.0);
      }
      if (With(s, "D")) add("D", f32, bdl, {s.dim}, -1.0, 1.0);
      if (With(s, "z")) add("z", s.dtype, s.layout, seq, -2.0, 2.0);
      if (With(s, "delta_bias")) {
        if (s.delta_softplus) {
          add("delta_bias", f32, bdl, {s.dim}, -0.5, 0.5);
        } else {
          add("delta_bias", f32, bdl, {s.dim}, 0.0, 0.1);
        }
      }
      if (With(s, "h0")) add("h0", f32, bdl, {s.batch, s.dim, s.state_dim}, -1.0, 1.0);
      break;
    }
    case OpKind::kAssociativeScan: {
      const auto [lo, hi] = AssociativeRange(s);
      add("x", s.dtype, s.layout, seq, lo, hi);
      break;
    }
  }
  return plans;
}

v1::Tensor* MutableTensor(v1::StreamRequest& r, OpKind op, const std::string& name) {
  switch (op) {
    case OpKind::kLinearScan: {
      v1::LinearScanRequest* m = r.mutable_linear_scan();
      if (name == "a") return m->mutable_a();
      if (name == "x") return m->mutable_x();
      if (name == "b") return m->mutable_b();
      if (name == "c") return m->mutable_c();
      if (name == "h0") return m->mutable_h0();
      break;
    }
    case OpKind::kLinearScanBackward: {
      v1::LinearScanBackwardRequest* m = r.mutable_linear_scan_backward();
      if (name == "a") return m->mutable_a();
      if (name == "x") return m->mutable_x();
      if (name == "dy") return m->mutable_dy();
      if (name == "b") return m->mutable_b();
      if (name == "c") return m->mutable_c();
      if (name == "h0") return m->mutable_h0();
      if (name == "h") return m->mutable_h();
      break;
    }
    case OpKind::kSelectiveScan: {
      v1::SelectiveScanRequest* m = r.mutable_selective_scan();
      if (name == "u") return m->mutable_u();
      if (name == "delta") return m->mutable_delta();
      if (name == "A") return m->mutable_a();
      if (name == "B") return m->mutable_b();
      if (name == "C") return m->mutable_c();
      if (name == "D") return m->mutable_d();
      if (name == "z") return m->mutable_z();
      if (name == "delta_bias") return m->mutable_delta_bias();
      if (name == "h0") return m->mutable_h0();
      break;
    }
    case OpKind::kAssociativeScan:
      if (name == "x") return r.mutable_associative_scan()->mutable_x();
      break;
  }
  return nullptr;
}

// Sets the op's oneof and its non-tensor options.
v1::StreamRequest EmptyRequest(const RequestSpec& s) {
  v1::StreamRequest r;
  switch (s.op) {
    case OpKind::kLinearScan:
      r.mutable_linear_scan()->set_reverse(s.reverse);
      r.mutable_linear_scan()->set_return_final_state(s.return_final_state);
      break;
    case OpKind::kLinearScanBackward:
      r.mutable_linear_scan_backward()->set_reverse(s.reverse);
      break;
    case OpKind::kSelectiveScan:
      r.mutable_selective_scan()->set_delta_softplus(s.delta_softplus);
      r.mutable_selective_scan()->set_return_last_state(s.return_last_state);
      break;
    case OpKind::kAssociativeScan: {
      static constexpr v1::ScanOperator kOps[] = {v1::ADD, v1::MUL, v1::MAX, v1::MIN,
                                                  v1::LOGADDEXP};
      r.mutable_associative_scan()->set_operator_(kOps[static_cast<int>(s.scan_operator)]);
      r.mutable_associative_scan()->set_reverse(s.reverse);
      r.mutable_associative_scan()->set_exclusive(s.exclusive);
      break;
    }
  }
  return r;
}

// The forward states of linear_scan (ops.md section 1) before the output gate, in float64 from
// the values exactly as sent, stored as float32 in x's layout.
absl::StatusOr<v1::Tensor> ForwardStates(const RequestSpec& s,
                                         const v1::LinearScanBackwardRequest& r) {
  absl::StatusOr<std::vector<float>> a = TensorToFloats(r.a());
  absl::StatusOr<std::vector<float>> x = TensorToFloats(r.x());
  if (!a.ok()) return a.status();
  if (!x.ok()) return x.status();
  std::vector<float> b, h0;
  if (r.has_b()) b = TensorToFloats(r.b()).value();
  if (r.has_h0()) h0 = TensorToFloats(r.h0()).value();
  const SeqShape shape{s.batch, s.dim, s.length};
  std::vector<float> h(a->size());
  for (int64_t bi = 0; bi < s.batch; ++bi) {
    for (int64_t d = 0; d < s.dim; ++d) {
      double state = h0.empty() ? 0.0 : h0[bi * s.dim + d];
      for (int64_t step = 0; step < s.length; ++step) {
        const int64_t t = s.reverse ? s.length - 1 - step : step;
        const int64_t i = SeqOffset(shape, s.layout, bi, d, t);
        state = (*a)[i] * state + (b.empty() ? 1.0 : b[i]) * (*x)[i];
        h[i] = static_cast<float>(state);
      }
    }
  }
  return MakeTensor(h, SeqDims(s), DType::kFloat32, s.layout);
}

absl::StatusOr<v1::StreamRequest> BuildRequest(
    const RequestSpec& spec,
    const std::function<absl::StatusOr<v1::Tensor>(const TensorPlan&)>& make) {
  if (absl::Status status = CheckSpec(spec); !status.ok()) return status;
  v1::StreamRequest request = EmptyRequest(spec);
  for (const TensorPlan& plan : Plans(spec)) {
    absl::StatusOr<v1::Tensor> tensor = make(plan);
    if (!tensor.ok()) return tensor.status();
    *MutableTensor(request, spec.op, plan.name) = *std::move(tensor);
  }
  return request;
}

}  // namespace

absl::StatusOr<OpKind> ParseOp(const std::string& name) {
  for (OpKind op : {OpKind::kLinearScan, OpKind::kLinearScanBackward, OpKind::kSelectiveScan,
                    OpKind::kAssociativeScan}) {
    if (name == OpName(op)) return op;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--op: must be linear_scan, linear_scan_backward, selective_scan or associative_scan, got '",
      name, "'"));
}

absl::StatusOr<DType> ParseDType(const std::string& name) {
  for (DType d :
       {DType::kFloat32, DType::kFloat16, DType::kBFloat16, DType::kInt32, DType::kInt64}) {
    if (name == DTypeName(d)) return d;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--dtype: must be float32, float16, bfloat16, int32 or int64, got '", name, "'"));
}

absl::StatusOr<Layout> ParseLayout(const std::string& name) {
  const std::string upper = absl::AsciiStrToUpper(name);
  if (upper == "BDL") return Layout::kBDL;
  if (upper == "BLD") return Layout::kBLD;
  return absl::InvalidArgumentError(absl::StrCat("--layout: must be BDL or BLD, got '", name, "'"));
}

absl::StatusOr<ScanOperator> ParseOperator(const std::string& name) {
  for (ScanOperator op : {ScanOperator::kAdd, ScanOperator::kMul, ScanOperator::kMax,
                          ScanOperator::kMin, ScanOperator::kLogAddExp}) {
    if (name == ScanOperatorName(op)) return op;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--operator: must be add, mul, max, min or logaddexp, got '", name, "'"));
}

absl::Status CheckSpec(const RequestSpec& s) {
  if (s.batch < 1 || s.dim < 1 || s.length < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--shape: every dimension must be at least 1, got (", s.batch, ", ", s.dim,
                     ", ", s.length, ")"));
  }
  const std::string op(OpName(s.op));
  const std::vector<std::string> allowed = OptionalTensors(s.op);
  for (const std::string& name : s.with) {
    if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--with: ", op, " takes no optional tensor '", name,
          "' (it takes: ", allowed.empty() ? "none" : absl::StrJoin(allowed, ", "), ")"));
    }
  }
  if (s.op != OpKind::kAssociativeScan && !IsFloatingPoint(s.dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("--dtype: ", op,
                                                   " takes float32, float16 or bfloat16, got ",
                                                   std::string(DTypeName(s.dtype))));
  }
  if (s.op == OpKind::kAssociativeScan && !OperatorSupports(s.scan_operator, s.dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--operator: ", std::string(ScanOperatorName(s.scan_operator)), " is not defined on ",
        std::string(DTypeName(s.dtype)), " (mul and logaddexp take floating dtypes only)"));
  }
  if (s.reverse && s.op == OpKind::kSelectiveScan) {
    return absl::InvalidArgumentError("--reverse: selective_scan has no reverse option");
  }
  if (s.return_final_state && s.op != OpKind::kLinearScan) {
    return absl::InvalidArgumentError(
        "--return_final_state: only linear_scan returns a final state");
  }
  if (s.op != OpKind::kSelectiveScan &&
      (s.return_last_state || s.delta_softplus || s.fixed_b || s.fixed_c)) {
    return absl::InvalidArgumentError(
        "--return_last_state, --delta_softplus, --fixed: selective_scan options only");
  }
  if (s.exclusive && s.op != OpKind::kAssociativeScan) {
    return absl::InvalidArgumentError("--exclusive: associative_scan option only");
  }
  if (s.op == OpKind::kSelectiveScan) {
    if (s.state_dim < 1 || s.state_dim > 256) {
      return absl::InvalidArgumentError(
          absl::StrCat("--state_dim: must be in 1..256, got ", s.state_dim));
    }
    if (s.groups < 1 || s.dim % s.groups != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--groups: must be at least 1 and divide the dim ", s.dim, ", got ", s.groups));
    }
    if (s.groups != 1 && s.fixed_b && s.fixed_c) {
      return absl::InvalidArgumentError("--groups: only variable B or C have groups");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::StreamRequest> RandomRequest(const RequestSpec& spec, uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto uniform = [&rng](double lo, double hi) {
    return lo + (hi - lo) * (static_cast<double>(rng() >> 11) * 0x1.0p-53);
  };
  absl::StatusOr<v1::StreamRequest> request =
      BuildRequest(spec, [&](const TensorPlan& plan) -> absl::StatusOr<v1::Tensor> {
        absl::StatusOr<int64_t> count = ElementCount(plan.shape);
        if (!count.ok()) return count.status();
        if (plan.fill == Fill::kForwardStates) {
          // Placeholder: filled once a, x, b and h0 exist (below).
          return MakeTensor(std::vector<float>(*count, 0.0f), plan.shape, plan.dtype, plan.layout);
        }
        if (!IsFloatingPoint(plan.dtype)) {
          std::vector<int64_t> values(*count);
          // Unsigned arithmetic: the int64 range spans more than int64 can hold.
          const auto lo = static_cast<uint64_t>(static_cast<int64_t>(plan.lo));
          const uint64_t span = static_cast<uint64_t>(static_cast<int64_t>(plan.hi)) - lo + 1;
          for (int64_t& v : values) v = static_cast<int64_t>(lo + rng() % span);
          if (std::all_of(values.begin(), values.end(), [](int64_t v) { return v == 0; })) {
            values[0] = 1;
          }
          return MakeTensor(values, plan.shape, plan.dtype, plan.layout);
        }
        std::vector<float> values(*count);
        if (plan.fill == Fill::kMambaA) {
          const int64_t n = plan.shape[1];
          for (int64_t i = 0; i < *count; ++i) {
            values[i] =
                static_cast<float>(-static_cast<double>(i % n + 1) * uniform(plan.lo, plan.hi));
          }
        } else {
          for (float& v : values) v = static_cast<float>(uniform(plan.lo, plan.hi));
        }
        std::vector<float> rounded = RoundTrip(values, plan.dtype);
        if (std::all_of(rounded.begin(), rounded.end(), [](float v) { return v == 0.0f; })) {
          values[0] = static_cast<float>(plan.hi != 0 ? plan.hi / 2 : plan.lo / 2);
        }
        return MakeTensor(values, plan.shape, plan.dtype, plan.layout);
      });
  if (!request.ok()) return request;
  if (spec.op == OpKind::kLinearScanBackward && With(spec, "h")) {
    v1::LinearScanBackwardRequest* backward = request->mutable_linear_scan_backward();
    absl::StatusOr<v1::Tensor> states = ForwardStates(spec, *backward);
    if (!states.ok()) return states.status();
    *backward->mutable_h() = *std::move(states);
  }
  return request;
}

absl::StatusOr<v1::StreamRequest> RequestFromDirectory(const RequestSpec& spec,
                                                       const std::string& dir) {
  return BuildRequest(spec, [&](const TensorPlan& plan) -> absl::StatusOr<v1::Tensor> {
    const std::string path = absl::StrCat(dir, "/", plan.name, ".bin");
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      return absl::NotFoundError(absl::StrCat(path, ": cannot open (", std::string(OpName(spec.op)),
                                              " with these flags needs tensor ", plan.name, ")"));
    }
    std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    absl::StatusOr<v1::Tensor> tensor =
        MakeTensorFromBytes(std::move(data), plan.shape, plan.dtype, plan.layout);
    if (!tensor.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": ", tensor.status().message()));
    }
    return tensor;
  });
}

absl::StatusOr<v1::StreamRequest> ReadRequestFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  v1::StreamRequest request;
  if (!request.ParseFromIstream(&in)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a binary-serialized scanserve.v1.StreamRequest"));
  }
  if (absl::StatusOr<OpKind> op = RequestOp(request); !op.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", op.status().message()));
  }
  return request;
}

absl::Status WriteMessageFile(const google::protobuf::Message& message, const std::string& path) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out || !message.SerializeToOstream(&out)) {
    return absl::PermissionDeniedError(absl::StrCat(path, ": cannot write"));
  }
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

absl::StatusOr<OpKind> RequestOp(const v1::StreamRequest& request) {
  switch (request.op_case()) {
    case v1::StreamRequest::kLinearScan:
      return OpKind::kLinearScan;
    case v1::StreamRequest::kLinearScanBackward:
      return OpKind::kLinearScanBackward;
    case v1::StreamRequest::kSelectiveScan:
      return OpKind::kSelectiveScan;
    case v1::StreamRequest::kAssociativeScan:
      return OpKind::kAssociativeScan;
    default:
      return absl::InvalidArgumentError("request: carries no operation");
  }
}

std::string Describe(const v1::StreamRequest& r) {
  const v1::Tensor* main = nullptr;
  std::vector<std::string> parts;
  auto optional = [&parts](bool present, const char* name) {
    if (present) parts.push_back(absl::StrCat("+", name));
  };
  auto flag = [&parts](bool on, const char* name) {
    if (on) parts.push_back(name);
  };
  switch (r.op_case()) {
    case v1::StreamRequest::kLinearScan: {
      const auto& m = r.linear_scan();
      main = &m.x();
      optional(m.has_b(), "b");
      optional(m.has_c(), "c");
      optional(m.has_h0(), "h0");
      flag(m.reverse(), "reverse");
      flag(m.return_final_state(), "return_final_state");
      break;
    }
    case v1::StreamRequest::kLinearScanBackward: {
      const auto& m = r.linear_scan_backward();
      main = &m.x();
      optional(m.has_b(), "b");
      optional(m.has_c(), "c");
      optional(m.has_h0(), "h0");
      optional(m.has_h(), "h");
      flag(m.reverse(), "reverse");
      break;
    }
    case v1::StreamRequest::kSelectiveScan: {
      const auto& m = r.selective_scan();
      main = &m.u();
      parts.push_back(absl::StrCat("N=", m.a().shape_size() == 2 ? m.a().shape(1) : -1));
      parts.push_back(m.b().shape_size() == 2 ? "B fixed" : "B variable");
      parts.push_back(m.c().shape_size() == 2 ? "C fixed" : "C variable");
      optional(m.has_d(), "D");
      optional(m.has_z(), "z");
      optional(m.has_delta_bias(), "delta_bias");
      optional(m.has_h0(), "h0");
      flag(m.delta_softplus(), "delta_softplus");
      flag(m.return_last_state(), "return_last_state");
      break;
    }
    case v1::StreamRequest::kAssociativeScan: {
      const auto& m = r.associative_scan();
      main = &m.x();
      parts.push_back(absl::AsciiStrToLower(v1::ScanOperator_Name(m.operator_())));
      flag(m.reverse(), "reverse");
      flag(m.exclusive(), "exclusive");
      break;
    }
    default:
      return "(no operation)";
  }
  absl::StatusOr<OpKind> op = RequestOp(r);
  absl::StatusOr<DType> dtype = FromProto(main->dtype());
  return absl::StrCat(std::string(OpName(*op)), " ",
                      dtype.ok() ? std::string(DTypeName(*dtype)) : "?", " ",
                      v1::Layout_Name(main->layout()), " (", absl::StrJoin(main->shape(), ", "),
                      ")", parts.empty() ? "" : " ", absl::StrJoin(parts, " "));
}

int64_t PayloadBytes(const v1::StreamRequest& r) {
  switch (r.op_case()) {
    case v1::StreamRequest::kLinearScan:
      return static_cast<int64_t>(r.linear_scan().ByteSizeLong());
    case v1::StreamRequest::kLinearScanBackward:
      return static_cast<int64_t>(r.linear_scan_backward().ByteSizeLong());
    case v1::StreamRequest::kSelectiveScan:
      return static_cast<int64_t>(r.selective_scan().ByteSizeLong());
    case v1::StreamRequest::kAssociativeScan:
      return static_cast<int64_t>(r.associative_scan().ByteSizeLong());
    default:
      return 0;
  }
}

std::vector<std::pair<std::string, const v1::Tensor*>> OutputTensors(const v1::StreamResponse& r) {
  std::vector<std::pair<std::string, const v1::Tensor*>> out;
  auto add = [&out](bool present, const char* name, const v1::Tensor& t) {
    if (present) out.emplace_back(name, &t);
  };
  switch (r.result_case()) {
    case v1::StreamResponse::kLinearScan:
      add(r.linear_scan().has_y(), "y", r.linear_scan().y());
      add(r.linear_scan().has_final_state(), "final_state", r.linear_scan().final_state());
      break;
    case v1::StreamResponse::kLinearScanBackward: {
      const auto& m = r.linear_scan_backward();
      add(m.has_da(), "da", m.da());
      add(m.has_dx(), "dx", m.dx());
      add(m.has_db(), "db", m.db());
      add(m.has_dc(), "dc", m.dc());
      add(m.has_dh0(), "dh0", m.dh0());
      break;
    }
    case v1::StreamResponse::kSelectiveScan:
      add(r.selective_scan().has_y(), "y", r.selective_scan().y());
      add(r.selective_scan().has_last_state(), "last_state", r.selective_scan().last_state());
      break;
    case v1::StreamResponse::kAssociativeScan:
      add(r.associative_scan().has_y(), "y", r.associative_scan().y());
      break;
    default:
      break;
  }
  return out;
}

}  // namespace scanserve::scanctl
