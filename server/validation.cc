#include "server/validation.h"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/message.h"
#include "google/protobuf/unknown_field_set.h"
#include "scanserve/v1/wire_types.h"

namespace scanserve {
namespace {

using Shape = std::vector<int64_t>;

#define SCANSERVE_RETURN_IF_ERROR(expr)                 \
  do {                                                  \
    if (absl::Status status_ = (expr); !status_.ok()) { \
      return status_;                                   \
    }                                                   \
  } while (false)

#define SCANSERVE_CONCAT_INNER(a, b) a##b
#define SCANSERVE_CONCAT(a, b) SCANSERVE_CONCAT_INNER(a, b)
#define SCANSERVE_ASSIGN_OR_RETURN(lhs, expr) \
  SCANSERVE_ASSIGN_OR_RETURN_IMPL(SCANSERVE_CONCAT(statusor_, __LINE__), lhs, expr)
#define SCANSERVE_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                    \
  if (!tmp.ok()) return tmp.status();                   \
  lhs = std::move(tmp).value()

// Bytes a tensor adds to a serialized message beyond its data: field tags, lengths, dtype, layout
// and a packed shape of at most four varints. Generous, so a response estimated to fit does fit.
constexpr int64_t kTensorOverheadBytes = 64;

absl::Status Invalid(const std::string& field, const std::string& rule, const std::string& got) {
  return absl::InvalidArgumentError(field + ": " + rule + ", got " + got);
}

std::string ShapeText(const Shape& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

Shape ShapeOf(const v1::Tensor& t) { return Shape(t.shape().begin(), t.shape().end()); }

std::string WireDTypeText(int dtype) {
  if (std::optional<DType> d = wire::DTypeFromWire(dtype)) return std::string(DTypeName(*d));
  if (dtype == v1::DTYPE_UNSPECIFIED) return "DTYPE_UNSPECIFIED";
  return "unknown dtype " + std::to_string(dtype);
}

std::string WireLayoutText(int layout) {
  if (layout == v1::BDL) return "BDL";
  if (layout == v1::BLD) return "BLD";
  if (layout == v1::LAYOUT_UNSPECIFIED) return "LAYOUT_UNSPECIFIED";
  return "unknown layout " + std::to_string(layout);
}

std::string Name(DType dtype) { return std::string(DTypeName(dtype)); }
std::string Name(Layout layout) { return std::string(LayoutName(layout)); }

// Fields this server does not know were sent by a client built against another contract: they
// would be silently ignored, so a request carrying them is refused instead.
absl::Status CheckNoUnknownFields(const google::protobuf::Message& message,
                                  const std::string& field) {
  const google::protobuf::UnknownFieldSet& unknown =
      message.GetReflection()->GetUnknownFields(message);
  if (unknown.empty()) return absl::OkStatus();
  return Invalid(field, "must hold only fields of " + message.GetDescriptor()->full_name(),
                 "unknown field number " + std::to_string(unknown.field(0).number()));
}

absl::Status Require(bool present, const std::string& field, std::string_view op) {
  if (present) return absl::OkStatus();
  return Invalid(field, "must be set (" + std::string(op) + " requires it)", "nothing");
}

// Element count and byte size of a tensor whose every dimension is checked to be >= 1, with
// overflow-safe products.
struct Extent {
  int64_t elements = 0;
  int64_t bytes = 0;
};

absl::StatusOr<Extent> CheckDims(const std::string& name, const Shape& shape, DType dtype) {
  int64_t elements = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 1) {
      return Invalid(name + ".shape[" + std::to_string(i) + "]", "must be >= 1",
                     std::to_string(shape[i]));
    }
  }
  for (int64_t dim : shape) {
    if (__builtin_mul_overflow(elements, dim, &elements)) {
      return Invalid(name + ".shape", "element count must fit in int64", ShapeText(shape));
    }
  }
  int64_t bytes = 0;
  if (__builtin_mul_overflow(elements, static_cast<int64_t>(DTypeSize(dtype)), &bytes)) {
    return Invalid(name + ".shape", "byte size must fit in int64", ShapeText(shape));
  }
  return Extent{elements, bytes};
}

// Checks the data size against the (already checked) extent and returns a pointer to the data.
absl::StatusOr<const void*> CheckData(const std::string& name, const v1::Tensor& t, DType dtype,
                                      const Extent& extent) {
  const int64_t got = static_cast<int64_t>(t.data().size());
  if (got != extent.bytes) {
    return Invalid(name + ".data",
                   "must hold product(shape) * " + std::to_string(DTypeSize(dtype)) + " = " +
                       std::to_string(extent.bytes) + " bytes of " + Name(dtype),
                   std::to_string(got) + " bytes");
  }
  const void* data = t.data().data();
  // Heap strings are 16-byte aligned and short strings live inside an 8-byte aligned object, so
  // this holds for every element type; kernels rely on it.
  if (reinterpret_cast<uintptr_t>(data) % DTypeSize(dtype) != 0) {
    return absl::InternalError(name + ".data: not aligned to its element size");
  }
  return data;
}

// Running totals of what one request sends and receives, checked against the limits at the end.
class Totals {
 public:
  void Add(const Extent& e, bool output) {
    Saturate(elements_, e.elements);
    Saturate(bytes_, e.bytes);
    if (output) {
      Saturate(response_bytes_, e.bytes);
      Saturate(response_bytes_, kTensorOverheadBytes);
    }
  }
  absl::Status Check(const RequestLimits& limits) const {
    if (elements_ > limits.max_elements_per_request) {
      return absl::ResourceExhaustedError(
          "request: elements in all tensors and results must be at most "
          "max_elements_per_request = " +
          std::to_string(limits.max_elements_per_request) + ", got " + std::to_string(elements_));
    }
    if (response_bytes_ > limits.max_message_bytes) {
      return absl::ResourceExhaustedError("response: size must be at most max_message_bytes = " +
                                          std::to_string(limits.max_message_bytes) +
                                          ", got about " + std::to_string(response_bytes_) +
                                          " bytes");
    }
    return absl::OkStatus();
  }
  int64_t bytes() const { return bytes_; }

 private:
  static void Saturate(int64_t& total, int64_t add) {
    if (__builtin_add_overflow(total, add, &total)) total = INT64_MAX;
  }
  int64_t elements_ = 0;
  int64_t bytes_ = 0;
  int64_t response_bytes_ = 0;
};

// The geometry shared by an op's sequence tensors, taken from its primary one (x or u).
struct Seq {
  DType dtype;
  Layout layout;
  SeqShape shape;
  std::string name;  // the primary tensor's field name, for messages

  // Shape of a sequence tensor in memory order.
  Shape wire() const {
    return layout == Layout::kBDL ? Shape{shape.batch, shape.dim, shape.length}
                                  : Shape{shape.batch, shape.length, shape.dim};
  }
};

const char* SeqDimsText(Layout layout) {
  return layout == Layout::kBDL ? "(B, D, L)" : "(B, L, D)";
}

constexpr const char* kFloatDTypes = "one of float32, float16, bfloat16";
constexpr const char* kAllDTypes = "one of float32, float16, bfloat16, int32, int64";

// The primary sequence tensor: dtype among the op's, a layout, three dimensions.
absl::StatusOr<Seq> CheckPrimary(const std::string& name, const v1::Tensor& t, bool floats_only,
                                 Totals& totals, const void** data) {
  SCANSERVE_RETURN_IF_ERROR(CheckNoUnknownFields(t, name));
  std::optional<DType> dtype = wire::DTypeFromWire(t.dtype());
  if (!dtype || (floats_only && !IsFloatingPoint(*dtype))) {
    return Invalid(name + ".dtype",
                   std::string("must be ") + (floats_only ? kFloatDTypes : kAllDTypes),
                   WireDTypeText(t.dtype()));
  }
  const std::optional<Layout> wire_layout = wire::LayoutFromWire(t.layout());
  if (!wire_layout) {
    return Invalid(name + ".layout", "must be BDL or BLD", WireLayoutText(t.layout()));
  }
  const Layout layout = *wire_layout;
  const Shape shape = ShapeOf(t);
  if (shape.size() != 3) {
    return Invalid(name + ".shape", std::string("must have 3 dimensions ") + SeqDimsText(layout),
                   std::to_string(shape.size()));
  }
  SCANSERVE_ASSIGN_OR_RETURN(Extent extent, CheckDims(name, shape, *dtype));
  SCANSERVE_ASSIGN_OR_RETURN(*data, CheckData(name, t, *dtype, extent));
  totals.Add(extent, /*output=*/false);
  Seq seq{*dtype, layout, {}, name};
  seq.shape = layout == Layout::kBDL ? SeqShape{shape[0], shape[1], shape[2]}
                                     : SeqShape{shape[0], shape[2], shape[1]};
  return seq;
}

// What a secondary tensor must look like.
struct Expect {
  DType dtype;
  std::string dtype_rule;        // e.g. "must equal x.dtype float16"
  std::optional<Layout> layout;  // sequence tensors only
  std::string layout_rule;
  Shape shape;
  std::string shape_rule;  // e.g. "must be (B, D) = [2, 3]"
};

// A tensor fully determined by the request's geometry. Returns its data.
absl::StatusOr<const void*> CheckExact(const std::string& name, const v1::Tensor& t,
                                       const Expect& want, Totals& totals) {
  SCANSERVE_RETURN_IF_ERROR(CheckNoUnknownFields(t, name));
  if (wire::DTypeFromWire(t.dtype()) != want.dtype) {
    return Invalid(name + ".dtype", want.dtype_rule, WireDTypeText(t.dtype()));
  }
  if (want.layout && t.layout() != wire::ToWire(*want.layout)) {
    return Invalid(name + ".layout", want.layout_rule, WireLayoutText(t.layout()));
  }
  const Shape shape = ShapeOf(t);
  if (shape != want.shape) {
    return Invalid(name + ".shape", want.shape_rule, ShapeText(shape));
  }
  SCANSERVE_ASSIGN_OR_RETURN(Extent extent, CheckDims(name, shape, want.dtype));
  SCANSERVE_ASSIGN_OR_RETURN(const void* data, CheckData(name, t, want.dtype, extent));
  totals.Add(extent, /*output=*/false);
  return data;
}

// A sequence tensor like the primary one: same dtype, layout and shape.
Expect LikePrimary(const Seq& seq) {
  return Expect{seq.dtype,  "must equal " + seq.name + ".dtype " + Name(seq.dtype),
                seq.layout, "must equal " + seq.name + ".layout " + Name(seq.layout),
                seq.wire(), "must equal " + seq.name + ".shape " + ShapeText(seq.wire())};
}

// A float32 tensor of a fixed shape; `dims` names the dimensions, e.g. "(B, D)".
Expect Float32(const Shape& shape, const std::string& dims, std::optional<Layout> layout = {}) {
  Expect e{DType::kFloat32, "must be float32",
           layout,          {},
           shape,           "must be " + dims + " = " + ShapeText(shape)};
  if (layout) e.layout_rule = "must equal the sequence layout " + Name(*layout);
  return e;
}

// Sizes an output tensor of the response and returns where the backend writes it.
void* SizeOutput(v1::Tensor* t, DType dtype, std::optional<Layout> layout, const Shape& shape,
                 Totals& totals) {
  t->set_dtype(wire::ToWire(dtype));
  if (layout) t->set_layout(wire::ToWire(*layout));
  int64_t elements = 1;
  for (int64_t d : shape) {
    t->add_shape(d);
    elements *= d;  // inputs of the same extent were already checked for overflow
  }
  const int64_t bytes = elements * static_cast<int64_t>(DTypeSize(dtype));
  totals.Add({elements, bytes}, /*output=*/true);
  std::string* data = t->mutable_data();
  data->resize(static_cast<size_t>(bytes));
  return data->data();
}

// Output extents are known before the response is sized, so the limits are checked first and a
// refused request never allocates its outputs.
void CountOutput(const Shape& shape, DType dtype, Totals& totals) {
  Extent e{1, 0};
  bool overflow = false;
  for (int64_t d : shape) overflow |= __builtin_mul_overflow(e.elements, d, &e.elements);
  overflow |= __builtin_mul_overflow(e.elements, static_cast<int64_t>(DTypeSize(dtype)), &e.bytes);
  if (overflow) e = {INT64_MAX, INT64_MAX};  // fails the limits
  totals.Add(e, /*output=*/true);
}

// The inputs linear_scan and linear_scan_backward share: x (which sets dtype, layout and shape), a
// and the optional b, c and h0. Returns x's geometry.
template <typename Request, typename Problem>
absl::StatusOr<Seq> CheckLinearInputs(const Request& request, Totals& totals, Problem& p) {
  SCANSERVE_ASSIGN_OR_RETURN(Seq x, CheckPrimary("x", request.x(), true, totals, &p.x));
  const Expect like_x = LikePrimary(x);
  SCANSERVE_ASSIGN_OR_RETURN(p.a, CheckExact("a", request.a(), like_x, totals));
  if (request.has_b()) {
    SCANSERVE_ASSIGN_OR_RETURN(p.b, CheckExact("b", request.b(), like_x, totals));
  }
  if (request.has_c()) {
    SCANSERVE_ASSIGN_OR_RETURN(p.c, CheckExact("c", request.c(), like_x, totals));
  }
  if (request.has_h0()) {
    const Shape bd{x.shape.batch, x.shape.dim};
    SCANSERVE_ASSIGN_OR_RETURN(const void* h0,
                               CheckExact("h0", request.h0(), Float32(bd, "(B, D)"), totals));
    p.h0 = static_cast<const float*>(h0);
  }
  return x;
}

}  // namespace

absl::StatusOr<ValidatedWork> ValidateLinearScan(const v1::LinearScanRequest& request,
                                                 const RequestLimits& limits,
                                                 v1::LinearScanResponse* response) {
  constexpr std::string_view kOp = "linear_scan";
  SCANSERVE_RETURN_IF_ERROR(CheckNoUnknownFields(request, "request"));
  SCANSERVE_RETURN_IF_ERROR(Require(request.has_a(), "a", kOp));
  SCANSERVE_RETURN_IF_ERROR(Require(request.has_x(), "x", kOp));
  Totals totals;
  LinearScanWork w;
  LinearScanProblem& p = w.problem;
  SCANSERVE_ASSIGN_OR_RETURN(Seq x, CheckLinearInputs(request, totals, p));
  const Shape bd{x.shape.batch, x.shape.dim};
  w.options = {.dtype = x.dtype,
               .layout = x.layout,
               .has_b = request.has_b(),
               .has_c = request.has_c(),
               .has_h0 = request.has_h0(),
               .reverse = request.reverse(),
               .return_final_state = request.return_final_state()};
  Totals outputs = totals;
  CountOutput(x.wire(), x.dtype, outputs);
  if (request.return_final_state()) CountOutput(bd, DType::kFloat32, outputs);
  SCANSERVE_RETURN_IF_ERROR(outputs.Check(limits));

  response->Clear();
  p.shape = x.shape;
  p.y = SizeOutput(response->mutable_y(), x.dtype, x.layout, x.wire(), totals);
  if (request.return_final_state()) {
    p.final_state = static_cast<float*>(
        SizeOutput(response->mutable_final_state(), DType::kFloat32, {}, bd, totals));
  }
  return ValidatedWork{std::move(w), totals.bytes()};
}

absl::StatusOr<ValidatedWork> ValidateLinearScanBackward(
    const v1::LinearScanBackwardRequest& request, const RequestLimits& limits,
    v1::LinearScanBackwardResponse* response) {
  constexpr std::string_view kOp = "linear_scan_backward";
  SCANSERVE_RETURN_IF_ERROR(CheckNoUnknownFields(request, "request"));
  SCANSERVE_RETURN_IF_ERROR(Require(request.has_a(), "a", kOp));
  SCANSERVE_RETURN_IF_ERROR(Require(request.has_x(), "x", kOp));
  SCANSERVE_RETURN_IF_ERROR(Require(request.has_dy(), "dy", kOp));
  Totals totals;
  LinearScanBackwardWork w;
  LinearScanBackwardProblem& p = w.problem;
  SCANSERVE_ASSIGN_OR_RETURN(Seq x, CheckLinearInputs(request, totals, p));
  SCANSERVE_ASSIGN_OR_RETURN(p.dy, CheckExact("dy", request.dy(), LikePrimary(x), totals));
  const Shape bd{x.shape.batch, x.shape.dim};
  if (request.has_h()) {
    Expect states = Float32(x.wire(), std::string("x's shape ") + SeqDimsText(x.layout), x.layout);
    states.layout_rule = "must equal x.layout " + Name(x.layout);
    SCANSERVE_ASSIGN_OR_RETURN(const void* h, CheckExact("h", request.h(), states, totals));
    p.states = static_cast<const float*>(h);
  }
  w.options = {.dtype = x.dtype,
               .layout = x.layout,
               .has_b = request.has_b(),
               .has_c = request.has_c(),
               .has_h0 = request.has_h0(),
               .has_states = request.has_h(),
               .reverse = request.reverse()};
  Totals outputs = totals;
  const int sequence_outputs = 2 + request.has_b() + request.has_c();
  for (int i = 0; i < sequence_outputs; ++i) CountOutput(x.wire(), x.dtype, outputs);
  if (request.has_h0()) CountOutput(bd, DType::kFloat32, outputs);
  SCANSERVE_RETURN_IF_ERROR(outputs.Check(limits));

  response->Clear();
  p.shape = x.shape;
  p.da = SizeOutput(response->mutable_da(), x.dtype, x.layout, x.wire(), totals);
  p.dx = SizeOutput(response->mutable_dx(), x.dtype, x.layout, x.wire(), totals);
  if (request.has_b()) {
    p.db = SizeOutput(response->mutable_db(), x.dtype, x.layout, x.wire(), totals);
  }
  if (request.has_c()) {
    p.dc = SizeOutput(response->mutable_dc(), x.dtype, x.layout, x.wire(), totals);
  }
  if (request.has_h0()) {
    p.dh0 =
        static_cast<float*>(SizeOutput(response->mutable_dh0(), DType::kFloat32, {}, bd, totals));
  }
  return ValidatedWork{std::move(w), totals.bytes()};
}

namespace {

// Selective scan's B or C: fixed (D, N) float32 or variable (B, G, N, L) / (B, L, G, N) in u's
// dtype and layout.
struct SelectiveBC {
  const void* data = nullptr;
  bool variable = false;
  int64_t groups = 1;
};

absl::StatusOr<SelectiveBC> CheckSelectiveBC(const std::string& name, const v1::Tensor& t,
                                             const Seq& u, int64_t n, Totals& totals) {
  const Shape shape = ShapeOf(t);
  const SeqShape& s = u.shape;
  if (shape.size() == 2) {
    Expect fixed = Float32({s.dim, n}, "(D, N)");
    fixed.dtype_rule = "must be float32 for a fixed " + name + " (D, N)";
    SCANSERVE_ASSIGN_OR_RETURN(const void* data, CheckExact(name, t, fixed, totals));
    return SelectiveBC{data, false, 1};
  }
  const bool bdl = u.layout == Layout::kBDL;
  const char* dims = bdl ? "(B, G, N, L)" : "(B, L, G, N)";
  if (shape.size() != 4) {
    return Invalid(name + ".shape",
                   "must have 2 dimensions (D, N) for a fixed " + name + " or 4 dimensions " +
                       dims + " for a variable " + name,
                   std::to_string(shape.size()));
  }
  SCANSERVE_RETURN_IF_ERROR(CheckDims(name, shape, u.dtype).status());
  const size_t g_axis = bdl ? 1 : 2;
  const int64_t groups = shape[g_axis];
  if (s.dim % groups != 0) {
    return Invalid(name + ".shape[" + std::to_string(g_axis) + "]",
                   "groups G must divide D = " + std::to_string(s.dim), std::to_string(groups));
  }
  const Shape want =
      bdl ? Shape{s.batch, groups, n, s.length} : Shape{s.batch, s.length, groups, n};
  Expect e{u.dtype,  "must equal u.dtype " + Name(u.dtype) + " for a variable " + name,
           u.layout, "must equal u.layout " + Name(u.layout),
           want,     std::string("must be ") + dims + " = " + ShapeText(want)};
  SCANSERVE_ASSIGN_OR_RETURN(const void* data, CheckExact(name, t, e, totals));
  return SelectiveBC{data, true, groups};
}

}  // namespace

absl::StatusOr<ValidatedWork> ValidateSelectiveScan(const v1::SelectiveScanRequest& request,
                                                    const RequestLimits& limits,
                                                    v1::SelectiveScanResponse* response) {
  constexpr std::string_view kOp = "selective_scan";
  SCANSERVE_RETURN_IF_ERROR(CheckNoUnknownFields(request, "request"));
  SCANSERVE_RETURN_IF_ERROR(Require(request.has_u(), "u", kOp));
  SCANSERVE_RETURN_IF_ERROR(Require(request.has_delta(), "delta", kOp));
  SCANSERVE_RETURN_IF_ERROR(Require(request.has_a(), "A", kOp));
  SCANSERVE_RETURN_IF_ERROR(Require(request.has_b(), "B", kOp));
  SCANSERVE_RETURN_IF_ERROR(Require(request.has_c(), "C", kOp));
  Totals totals;
  SelectiveScanWork w;
  SelectiveScanProblem& p = w.problem;
  SCANSERVE_ASSIGN_OR_RETURN(Seq u, CheckPrimary("u", request.u(), true, totals, &p.u));
  const Expect like_u = LikePrimary(u);
  SCANSERVE_ASSIGN_OR_RETURN(p.delta, CheckExact("delta", request.delta(), like_u, totals));

  // A fixes N.
  const v1::Tensor& a = request.a();
  const Shape a_shape = ShapeOf(a);
  if (a_shape.size() != 2) {
    return Invalid("A.shape", "must have 2 dimensions (D, N)", std::to_string(a_shape.size()));
  }
  if (a_shape[0] != u.shape.dim) {
    return Invalid("A.shape[0]", "must equal D = " + std::to_string(u.shape.dim),
                   std::to_string(a_shape[0]));
  }
  const int64_t n = a_shape[1];
  const int64_t max_n = std::min(limits.max_state_dim, kMaxStateDimSupported);
  if (n < 1 || n > max_n) {
    return Invalid("A.shape[1]", "state size N must be in [1, " + std::to_string(max_n) + "]",
                   std::to_string(n));
  }
  SCANSERVE_ASSIGN_OR_RETURN(const void* a_data,
                             CheckExact("A", a, Float32({u.shape.dim, n}, "(D, N)"), totals));
  p.A = static_cast<const float*>(a_data);

  SCANSERVE_ASSIGN_OR_RETURN(SelectiveBC b, CheckSelectiveBC("B", request.b(), u, n, totals));
  SCANSERVE_ASSIGN_OR_RETURN(SelectiveBC c, CheckSelectiveBC("C", request.c(), u, n, totals));
  if (b.variable && c.variable && b.groups != c.groups) {
    return Invalid("C.shape", "groups G must equal B's groups " + std::to_string(b.groups),
                   std::to_string(c.groups));
  }
  p.B = b.data;
  p.C = c.data;

  const Shape d{u.shape.dim};
  if (request.has_d()) {
    SCANSERVE_ASSIGN_OR_RETURN(const void* data,
                               CheckExact("D", request.d(), Float32(d, "(D)"), totals));
    p.d_skip = static_cast<const float*>(data);
  }
  if (request.has_z()) {
    SCANSERVE_ASSIGN_OR_RETURN(p.z, CheckExact("z", request.z(), like_u, totals));
  }
  if (request.has_delta_bias()) {
    SCANSERVE_ASSIGN_OR_RETURN(const void* data, CheckExact("delta_bias", request.delta_bias(),
                                                            Float32(d, "(D)"), totals));
    p.delta_bias = static_cast<const float*>(data);
  }
  const Shape bdn{u.shape.batch, u.shape.dim, n};
  if (request.has_h0()) {
    SCANSERVE_ASSIGN_OR_RETURN(const void* data,
                               CheckExact("h0", request.h0(), Float32(bdn, "(B, D, N)"), totals));
    p.h0 = static_cast<const float*>(data);
  }
  w.options = {.dtype = u.dtype,
               .layout = u.layout,
               .state_dim = static_cast<int32_t>(n),
               .groups = static_cast<int32_t>(b.variable ? b.groups : c.groups),
               .variable_b = b.variable,
               .variable_c = c.variable,
               .has_d_skip = request.has_d(),
               .has_z = request.has_z(),
               .has_delta_bias = request.has_delta_bias(),
               .delta_softplus = request.delta_softplus(),
               .has_h0 = request.has_h0(),
               .return_last_state = request.return_last_state()};
  Totals outputs = totals;
  CountOutput(u.wire(), u.dtype, outputs);
  if (request.return_last_state()) CountOutput(bdn, DType::kFloat32, outputs);
  SCANSERVE_RETURN_IF_ERROR(outputs.Check(limits));

  response->Clear();
  p.shape = u.shape;
  p.y = SizeOutput(response->mutable_y(), u.dtype, u.layout, u.wire(), totals);
  if (request.return_last_state()) {
    p.last_state = static_cast<float*>(
        SizeOutput(response->mutable_last_state(), DType::kFloat32, {}, bdn, totals));
  }
  return ValidatedWork{std::move(w), totals.bytes()};
}

absl::StatusOr<ValidatedWork> ValidateAssociativeScan(const v1::AssociativeScanRequest& request,
                                                      const RequestLimits& limits,
                                                      v1::AssociativeScanResponse* response) {
  SCANSERVE_RETURN_IF_ERROR(CheckNoUnknownFields(request, "request"));
  SCANSERVE_RETURN_IF_ERROR(Require(request.has_x(), "x", "associative_scan"));
  std::optional<ScanOperator> op;
  switch (request.operator_()) {
    case v1::ADD:
      op = ScanOperator::kAdd;
      break;
    case v1::MUL:
      op = ScanOperator::kMul;
      break;
    case v1::MAX:
      op = ScanOperator::kMax;
      break;
    case v1::MIN:
      op = ScanOperator::kMin;
      break;
    case v1::LOGADDEXP:
      op = ScanOperator::kLogAddExp;
      break;
    default:
      break;
  }
  if (!op) {
    const int value = request.operator_();
    return Invalid("operator", "must be one of ADD, MUL, MAX, MIN, LOGADDEXP",
                   value == v1::OPERATOR_UNSPECIFIED ? std::string("OPERATOR_UNSPECIFIED")
                                                     : "unknown operator " + std::to_string(value));
  }
  Totals totals;
  AssociativeScanWork w;
  AssociativeScanProblem& p = w.problem;
  SCANSERVE_ASSIGN_OR_RETURN(Seq x, CheckPrimary("x", request.x(), false, totals, &p.x));
  if (!OperatorSupports(*op, x.dtype)) {
    return Invalid("x.dtype",
                   std::string("must be ") + kFloatDTypes + " for operator " +
                       std::string(ScanOperatorName(*op)),
                   Name(x.dtype));
  }
  w.options = {.dtype = x.dtype,
               .layout = x.layout,
               .op = *op,
               .reverse = request.reverse(),
               .exclusive = request.exclusive()};
  Totals outputs = totals;
  CountOutput(x.wire(), x.dtype, outputs);
  SCANSERVE_RETURN_IF_ERROR(outputs.Check(limits));

  response->Clear();
  p.shape = x.shape;
  p.y = SizeOutput(response->mutable_y(), x.dtype, x.layout, x.wire(), totals);
  return ValidatedWork{std::move(w), totals.bytes()};
}

std::optional<OpKind> StreamRequestOp(const v1::StreamRequest& request) {
  switch (request.op_case()) {
    case v1::StreamRequest::kLinearScan:
      return OpKind::kLinearScan;
    case v1::StreamRequest::kLinearScanBackward:
      return OpKind::kLinearScanBackward;
    case v1::StreamRequest::kSelectiveScan:
      return OpKind::kSelectiveScan;
    case v1::StreamRequest::kAssociativeScan:
      return OpKind::kAssociativeScan;
    case v1::StreamRequest::OP_NOT_SET:
      break;
  }
  return std::nullopt;
}

absl::StatusOr<ValidatedWork> ValidateStreamRequest(const v1::StreamRequest& request,
                                                    const RequestLimits& limits,
                                                    v1::StreamResponse* response) {
  SCANSERVE_RETURN_IF_ERROR(CheckNoUnknownFields(request, "request"));
  switch (request.op_case()) {
    case v1::StreamRequest::kLinearScan:
      return ValidateLinearScan(request.linear_scan(), limits, response->mutable_linear_scan());
    case v1::StreamRequest::kLinearScanBackward:
      return ValidateLinearScanBackward(request.linear_scan_backward(), limits,
                                        response->mutable_linear_scan_backward());
    case v1::StreamRequest::kSelectiveScan:
      return ValidateSelectiveScan(request.selective_scan(), limits,
                                   response->mutable_selective_scan());
    case v1::StreamRequest::kAssociativeScan:
      return ValidateAssociativeScan(request.associative_scan(), limits,
                                     response->mutable_associative_scan());
    case v1::StreamRequest::OP_NOT_SET:
      break;
  }
  return Invalid("op",
                 "must be one of linear_scan, linear_scan_backward, selective_scan, "
                 "associative_scan",
                 "none");
}

}  // namespace scanserve
