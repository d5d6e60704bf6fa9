#include "requests.h"

#include <cstring>
#include <functional>
#include <string>
#include <utility>

#include "google/protobuf/unknown_field_set.h"

namespace scanserve::testing {

WireShape SeqWireShape(const SeqShape& s, Layout layout) {
  return layout == Layout::kBDL ? WireShape{s.batch, s.dim, s.length}
                                : WireShape{s.batch, s.length, s.dim};
}

v1::Tensor RandomTensor(Rng& rng, DType dtype, const WireShape& shape, std::optional<Layout> layout,
                        double lo, double hi) {
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  HostTensor host(dtype, count);
  host.FillUniform(rng, lo, hi);
  v1::Tensor t;
  t.set_dtype(wire::ToWire(dtype));
  if (layout) t.set_layout(wire::ToWire(*layout));
  t.mutable_shape()->Add(shape.begin(), shape.end());
  t.set_data(static_cast<const char*>(host.data()), host.bytes());
  return t;
}

HostTensor ToHost(const v1::Tensor& t, DType dtype) {
  HostTensor host(dtype, static_cast<int64_t>(t.data().size() / DTypeSize(dtype)));
  std::memcpy(host.data(), t.data().data(), host.bytes());
  return host;
}

namespace {

const void* DataOf(const v1::Tensor& t) { return t.data().data(); }
const float* FloatsOf(const v1::Tensor& t) {
  return reinterpret_cast<const float*>(t.data().data());
}

}  // namespace

// ---- valid requests ----

v1::LinearScanRequest MakeLinearScan(Rng& rng, const LinearScanOptions& o, const SeqShape& s) {
  const WireShape seq = SeqWireShape(s, o.layout);
  v1::LinearScanRequest r;
  *r.mutable_a() = RandomTensor(rng, o.dtype, seq, o.layout, -0.99, 0.99);
  *r.mutable_x() = RandomTensor(rng, o.dtype, seq, o.layout, -1, 1);
  if (o.has_b) *r.mutable_b() = RandomTensor(rng, o.dtype, seq, o.layout, -1, 1);
  if (o.has_c) *r.mutable_c() = RandomTensor(rng, o.dtype, seq, o.layout, -1, 1);
  if (o.has_h0) {
    *r.mutable_h0() = RandomTensor(rng, DType::kFloat32, {s.batch, s.dim}, std::nullopt, -1, 1);
  }
  r.set_reverse(o.reverse);
  r.set_return_final_state(o.return_final_state);
  return r;
}

v1::LinearScanBackwardRequest MakeLinearScanBackward(Rng& rng, const LinearScanBackwardOptions& o,
                                                     const SeqShape& s) {
  const WireShape seq = SeqWireShape(s, o.layout);
  v1::LinearScanBackwardRequest r;
  *r.mutable_a() = RandomTensor(rng, o.dtype, seq, o.layout, -0.99, 0.99);
  *r.mutable_x() = RandomTensor(rng, o.dtype, seq, o.layout, -1, 1);
  *r.mutable_dy() = RandomTensor(rng, o.dtype, seq, o.layout, -1, 1);
  if (o.has_b) *r.mutable_b() = RandomTensor(rng, o.dtype, seq, o.layout, -1, 1);
  if (o.has_c) *r.mutable_c() = RandomTensor(rng, o.dtype, seq, o.layout, -1, 1);
  if (o.has_h0) {
    *r.mutable_h0() = RandomTensor(rng, DType::kFloat32, {s.batch, s.dim}, std::nullopt, -1, 1);
  }
  if (o.has_states) *r.mutable_h() = RandomTensor(rng, DType::kFloat32, seq, o.layout, -1, 1);
  r.set_reverse(o.reverse);
  return r;
}

v1::SelectiveScanRequest MakeSelectiveScan(Rng& rng, const SelectiveScanOptions& o,
                                           const SeqShape& s) {
  const WireShape seq = SeqWireShape(s, o.layout);
  const int64_t n = o.state_dim;
  const WireShape variable = o.layout == Layout::kBDL ? WireShape{s.batch, o.groups, n, s.length}
                                                      : WireShape{s.batch, s.length, o.groups, n};
  v1::SelectiveScanRequest r;
  *r.mutable_u() = RandomTensor(rng, o.dtype, seq, o.layout, -1, 1);
  // Without softplus dt is delta itself: keep it positive so the state decays.
  *r.mutable_delta() = o.delta_softplus ? RandomTensor(rng, o.dtype, seq, o.layout, -1, 1)
                                        : RandomTensor(rng, o.dtype, seq, o.layout, 0.01, 0.5);
  *r.mutable_a() = RandomTensor(rng, DType::kFloat32, {s.dim, n}, std::nullopt, -2, -0.1);
  *r.mutable_b() = o.variable_b
                       ? RandomTensor(rng, o.dtype, variable, o.layout, -1, 1)
                       : RandomTensor(rng, DType::kFloat32, {s.dim, n}, std::nullopt, -1, 1);
  *r.mutable_c() = o.variable_c
                       ? RandomTensor(rng, o.dtype, variable, o.layout, -1, 1)
                       : RandomTensor(rng, DType::kFloat32, {s.dim, n}, std::nullopt, -1, 1);
  if (o.has_d_skip) {
    *r.mutable_d() = RandomTensor(rng, DType::kFloat32, {s.dim}, std::nullopt, -1, 1);
  }
  if (o.has_z) *r.mutable_z() = RandomTensor(rng, o.dtype, seq, o.layout, -2, 2);
  if (o.has_delta_bias) {
    *r.mutable_delta_bias() = RandomTensor(rng, DType::kFloat32, {s.dim}, std::nullopt, -0.5, 0.5);
  }
  if (o.has_h0) {
    *r.mutable_h0() = RandomTensor(rng, DType::kFloat32, {s.batch, s.dim, n}, std::nullopt, -1, 1);
  }
  r.set_delta_softplus(o.delta_softplus);
  r.set_return_last_state(o.return_last_state);
  return r;
}

v1::AssociativeScanRequest MakeAssociativeScan(Rng& rng, const AssociativeScanOptions& o,
                                               const SeqShape& s) {
  double lo = -1, hi = 1;
  const bool integer = !IsFloatingPoint(o.dtype);
  switch (o.op) {
    case ScanOperator::kAdd:
      if (o.dtype == DType::kInt32) lo = -2147483648.0, hi = 2147483647.0;  // exercises the wrap
      if (o.dtype == DType::kInt64) lo = -4611686018427387904.0, hi = 4611686018427387904.0;
      break;
    case ScanOperator::kMul:
      lo = 0.9, hi = 1.1;
      break;
    case ScanOperator::kMax:
    case ScanOperator::kMin:
      lo = integer ? -1000 : -10, hi = integer ? 1000 : 10;
      break;
    case ScanOperator::kLogAddExp:
      lo = -3, hi = 3;
      break;
  }
  v1::AssociativeScanRequest r;
  *r.mutable_x() = RandomTensor(rng, o.dtype, SeqWireShape(s, o.layout), o.layout, lo, hi);
  static constexpr v1::ScanOperator kWire[] = {v1::ADD, v1::MUL, v1::MAX, v1::MIN, v1::LOGADDEXP};
  r.set_operator_(kWire[static_cast<int>(o.op)]);
  r.set_reverse(o.reverse);
  r.set_exclusive(o.exclusive);
  return r;
}

SeqShape RandomShape(Rng& rng, int64_t max_dim, int64_t max_len) {
  return SeqShape{rng.Int(1, 2), rng.Int(1, max_dim), rng.Int(1, max_len)};
}

namespace {

DType RandomFloatDType(Rng& rng) {
  static constexpr DType kTypes[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16};
  return kTypes[rng.Int(0, 2)];
}

Layout RandomLayout(Rng& rng) { return rng.Bool() ? Layout::kBDL : Layout::kBLD; }

}  // namespace

LinearScanOptions RandomLinearScanOptions(Rng& rng) {
  return {.dtype = RandomFloatDType(rng),
          .layout = RandomLayout(rng),
          .has_b = rng.Bool(),
          .has_c = rng.Bool(),
          .has_h0 = rng.Bool(),
          .reverse = rng.Bool(),
          .return_final_state = rng.Bool()};
}

LinearScanBackwardOptions RandomLinearScanBackwardOptions(Rng& rng) {
  return {.dtype = RandomFloatDType(rng),
          .layout = RandomLayout(rng),
          .has_b = rng.Bool(),
          .has_c = rng.Bool(),
          .has_h0 = rng.Bool(),
          .has_states = rng.Bool(),
          .reverse = rng.Bool()};
}

SelectiveScanOptions RandomSelectiveScanOptions(Rng& rng, const SeqShape& s) {
  std::vector<int32_t> divisors;
  for (int32_t g = 1; g <= s.dim; ++g) {
    if (s.dim % g == 0) divisors.push_back(g);
  }
  return {.dtype = RandomFloatDType(rng),
          .layout = RandomLayout(rng),
          .state_dim = static_cast<int32_t>(rng.Int(1, 16)),
          .groups = divisors[rng.Int(0, static_cast<int64_t>(divisors.size()) - 1)],
          .variable_b = rng.Bool(),
          .variable_c = rng.Bool(),
          .has_d_skip = rng.Bool(),
          .has_z = rng.Bool(),
          .has_delta_bias = rng.Bool(),
          .delta_softplus = rng.Bool(),
          .has_h0 = rng.Bool(),
          .return_last_state = rng.Bool()};
}

AssociativeScanOptions RandomAssociativeScanOptions(Rng& rng) {
  AssociativeScanOptions o;
  o.op = static_cast<ScanOperator>(rng.Int(0, 4));
  static constexpr DType kAll[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16,
                                   DType::kInt32, DType::kInt64};
  do {
    o.dtype = kAll[rng.Int(0, 4)];
  } while (!OperatorSupports(o.op, o.dtype));
  o.layout = RandomLayout(rng);
  o.reverse = rng.Bool();
  o.exclusive = rng.Bool();
  return o;
}

// ---- problems for the references ----

LinearScanProblem LinearScanProblemOf(const v1::LinearScanRequest& r, const SeqShape& s) {
  LinearScanProblem p;
  p.shape = s;
  p.a = DataOf(r.a());
  p.x = DataOf(r.x());
  if (r.has_b()) p.b = DataOf(r.b());
  if (r.has_c()) p.c = DataOf(r.c());
  if (r.has_h0()) p.h0 = FloatsOf(r.h0());
  return p;
}

LinearScanBackwardProblem LinearScanBackwardProblemOf(const v1::LinearScanBackwardRequest& r,
                                                      const SeqShape& s) {
  LinearScanBackwardProblem p;
  p.shape = s;
  p.a = DataOf(r.a());
  p.x = DataOf(r.x());
  p.dy = DataOf(r.dy());
  if (r.has_b()) p.b = DataOf(r.b());
  if (r.has_c()) p.c = DataOf(r.c());
  if (r.has_h0()) p.h0 = FloatsOf(r.h0());
  if (r.has_h()) p.states = FloatsOf(r.h());
  return p;
}

SelectiveScanProblem SelectiveScanProblemOf(const v1::SelectiveScanRequest& r, const SeqShape& s) {
  SelectiveScanProblem p;
  p.shape = s;
  p.u = DataOf(r.u());
  p.delta = DataOf(r.delta());
  p.A = FloatsOf(r.a());
  p.B = DataOf(r.b());
  p.C = DataOf(r.c());
  if (r.has_d()) p.d_skip = FloatsOf(r.d());
  if (r.has_z()) p.z = DataOf(r.z());
  if (r.has_delta_bias()) p.delta_bias = FloatsOf(r.delta_bias());
  if (r.has_h0()) p.h0 = FloatsOf(r.h0());
  return p;
}

AssociativeScanProblem AssociativeScanProblemOf(const v1::AssociativeScanRequest& r,
                                                const SeqShape& s) {
  AssociativeScanProblem p;
  p.shape = s;
  p.x = DataOf(r.x());
  return p;
}

// ---- malformed requests ----

RequestLimits MalformedCaseLimits() {
  RequestLimits limits;
  limits.max_elements_per_request = int64_t{1} << 20;
  limits.max_message_bytes = int64_t{2} << 20;
  limits.max_state_dim = 256;
  return limits;
}

namespace {

void AddUnknownField(google::protobuf::Message* m, int number) {
  m->GetReflection()->MutableUnknownFields(m)->AddVarint(number, 1);
}

void SetShape(v1::Tensor* t, const WireShape& shape) {
  t->clear_shape();
  t->mutable_shape()->Add(shape.begin(), shape.end());
}

// Resizes data to match a new shape so that only the shape rule under test is broken.
void Reshape(v1::Tensor* t, const WireShape& shape, size_t element_size) {
  SetShape(t, shape);
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  t->mutable_data()->resize(static_cast<size_t>(count) * element_size, '\x3c');
}

// Re-encodes a tensor's dtype with the right amount of data for the new dtype.
void Retype(v1::Tensor* t, v1::DType dtype, size_t element_size) {
  t->set_dtype(dtype);
  int64_t count = 1;
  for (int64_t d : t->shape()) count *= d;
  t->mutable_data()->resize(static_cast<size_t>(count) * element_size, '\x3c');
}

}  // namespace

std::vector<MalformedCase> MalformedCases(Rng& rng) {
  using Code = absl::StatusCode;
  constexpr Code kInvalid = Code::kInvalidArgument;
  std::vector<MalformedCase> cases;

  // linear_scan: float32 BDL (2, 3, 5) with b, c, h0.
  const SeqShape ls{2, 3, 5};
  const v1::LinearScanRequest linear = MakeLinearScan(rng,
                                                      {.dtype = DType::kFloat32,
                                                       .layout = Layout::kBDL,
                                                       .has_b = true,
                                                       .has_c = true,
                                                       .has_h0 = true},
                                                      ls);
  auto add_linear = [&](std::string name, std::function<void(v1::LinearScanRequest&)> mutate,
                        Code code, std::string message) {
    MalformedCase c{std::move(name), {}, code, std::move(message)};
    *c.request.mutable_linear_scan() = linear;
    mutate(*c.request.mutable_linear_scan());
    c.request.set_request_id(cases.size() + 1);
    cases.push_back(std::move(c));
  };
  add_linear(
      "linear x missing", [](auto& r) { r.clear_x(); }, kInvalid,
      "x: must be set (linear_scan requires it), got nothing");
  add_linear(
      "linear a missing", [](auto& r) { r.clear_a(); }, kInvalid,
      "a: must be set (linear_scan requires it), got nothing");
  add_linear(
      "linear x int32", [](auto& r) { r.mutable_x()->set_dtype(v1::INT32); }, kInvalid,
      "x.dtype: must be one of float32, float16, bfloat16, got int32");
  add_linear(
      "linear x dtype unspecified", [](auto& r) { r.mutable_x()->clear_dtype(); }, kInvalid,
      "x.dtype: must be one of float32, float16, bfloat16, got DTYPE_UNSPECIFIED");
  add_linear(
      "linear x dtype unknown value",
      [](auto& r) { r.mutable_x()->set_dtype(static_cast<v1::DType>(42)); }, kInvalid,
      "x.dtype: must be one of float32, float16, bfloat16, got unknown dtype 42");
  add_linear(
      "linear x layout unspecified", [](auto& r) { r.mutable_x()->clear_layout(); }, kInvalid,
      "x.layout: must be BDL or BLD, got LAYOUT_UNSPECIFIED");
  add_linear(
      "linear x two dims",
      [](auto& r) {
        Reshape(r.mutable_x(), {6, 5}, 4);
      },
      kInvalid, "x.shape: must have 3 dimensions (B, D, L), got 2");
  add_linear(
      "linear x four dims BLD",
      [](auto& r) {
        r.mutable_x()->set_layout(v1::BLD);
        Reshape(r.mutable_x(), {2, 5, 3, 1}, 4);
      },
      kInvalid, "x.shape: must have 3 dimensions (B, L, D), got 4");
  add_linear(
      "linear x zero length",
      [](auto& r) {
        Reshape(r.mutable_x(), {2, 3, 0}, 4);
      },
      kInvalid, "x.shape[2]: must be >= 1, got 0");
  add_linear(
      "linear x negative batch",
      [](auto& r) {
        SetShape(r.mutable_x(), {-2, 3, 5});
      },
      kInvalid, "x.shape[0]: must be >= 1, got -2");
  add_linear(
      "linear x element count overflows",
      [](auto& r) {
        SetShape(r.mutable_x(), {int64_t{1} << 40, int64_t{1} << 40, 5});
      },
      kInvalid, "x.shape: element count must fit in int64, got [1099511627776, 1099511627776, 5]");
  add_linear(
      "linear x byte size overflows",
      [](auto& r) {
        SetShape(r.mutable_x(), {int64_t{1} << 31, int64_t{1} << 31, 1});
      },
      kInvalid, "x.shape: byte size must fit in int64, got [2147483648, 2147483648, 1]");
  add_linear(
      "linear x data one byte short", [](auto& r) { r.mutable_x()->mutable_data()->pop_back(); },
      kInvalid, "x.data: must hold product(shape) * 4 = 120 bytes of float32, got 119 bytes");
  add_linear(
      "linear a dtype differs", [](auto& r) { Retype(r.mutable_a(), v1::FLOAT16, 2); }, kInvalid,
      "a.dtype: must equal x.dtype float32, got float16");
  add_linear(
      "linear a layout differs", [](auto& r) { r.mutable_a()->set_layout(v1::BLD); }, kInvalid,
      "a.layout: must equal x.layout BDL, got BLD");
  add_linear(
      "linear a shape differs",
      [](auto& r) {
        Reshape(r.mutable_a(), {2, 3, 4}, 4);
      },
      kInvalid, "a.shape: must equal x.shape [2, 3, 5], got [2, 3, 4]");
  add_linear(
      "linear b shape differs",
      [](auto& r) {
        Reshape(r.mutable_b(), {1, 3, 5}, 4);
      },
      kInvalid, "b.shape: must equal x.shape [2, 3, 5], got [1, 3, 5]");
  add_linear(
      "linear c dtype differs", [](auto& r) { Retype(r.mutable_c(), v1::BFLOAT16, 2); }, kInvalid,
      "c.dtype: must equal x.dtype float32, got bfloat16");
  add_linear(
      "linear c data too long", [](auto& r) { r.mutable_c()->mutable_data()->append(4, 'x'); },
      kInvalid, "c.data: must hold product(shape) * 4 = 120 bytes of float32, got 124 bytes");
  add_linear(
      "linear h0 float16", [](auto& r) { Retype(r.mutable_h0(), v1::FLOAT16, 2); }, kInvalid,
      "h0.dtype: must be float32, got float16");
  add_linear(
      "linear h0 transposed",
      [](auto& r) {
        SetShape(r.mutable_h0(), {3, 2});
      },
      kInvalid, "h0.shape: must be (B, D) = [2, 3], got [3, 2]");
  add_linear(
      "linear h0 data short", [](auto& r) { r.mutable_h0()->mutable_data()->resize(20); }, kInvalid,
      "h0.data: must hold product(shape) * 4 = 24 bytes of float32, got 20 bytes");
  add_linear(
      "linear unknown request field", [](auto& r) { AddUnknownField(&r, 99); }, kInvalid,
      "request: must hold only fields of scanserve.v1.LinearScanRequest, got unknown field number "
      "99");
  add_linear(
      "linear unknown tensor field", [](auto& r) { AddUnknownField(r.mutable_x(), 9); }, kInvalid,
      "x: must hold only fields of scanserve.v1.Tensor, got unknown field number 9");

  // linear_scan_backward: bfloat16 BLD (B=2, D=4, L=3) with b, c, h0 and states h.
  const SeqShape bs{2, 4, 3};
  const v1::LinearScanBackwardRequest backward = MakeLinearScanBackward(rng,
                                                                        {.dtype = DType::kBFloat16,
                                                                         .layout = Layout::kBLD,
                                                                         .has_b = true,
                                                                         .has_c = true,
                                                                         .has_h0 = true,
                                                                         .has_states = true},
                                                                        bs);
  auto add_backward = [&](std::string name,
                          std::function<void(v1::LinearScanBackwardRequest&)> mutate, Code code,
                          std::string message) {
    MalformedCase c{std::move(name), {}, code, std::move(message)};
    *c.request.mutable_linear_scan_backward() = backward;
    mutate(*c.request.mutable_linear_scan_backward());
    c.request.set_request_id(cases.size() + 1);
    cases.push_back(std::move(c));
  };
  add_backward(
      "backward dy missing", [](auto& r) { r.clear_dy(); }, kInvalid,
      "dy: must be set (linear_scan_backward requires it), got nothing");
  add_backward(
      "backward dy shape differs",
      [](auto& r) {
        Reshape(r.mutable_dy(), {2, 4, 3}, 2);
      },
      kInvalid, "dy.shape: must equal x.shape [2, 3, 4], got [2, 4, 3]");
  add_backward(
      "backward x int64", [](auto& r) { Retype(r.mutable_x(), v1::INT64, 8); }, kInvalid,
      "x.dtype: must be one of float32, float16, bfloat16, got int64");
  add_backward(
      "backward h bfloat16", [](auto& r) { Retype(r.mutable_h(), v1::BFLOAT16, 2); }, kInvalid,
      "h.dtype: must be float32, got bfloat16");
  add_backward(
      "backward h layout differs", [](auto& r) { r.mutable_h()->set_layout(v1::BDL); }, kInvalid,
      "h.layout: must equal x.layout BLD, got BDL");
  add_backward(
      "backward h shape differs",
      [](auto& r) {
        Reshape(r.mutable_h(), {2, 3, 5}, 4);
      },
      kInvalid, "h.shape: must be x's shape (B, L, D) = [2, 3, 4], got [2, 3, 5]");
  add_backward(
      "backward h0 three dims",
      [](auto& r) {
        Reshape(r.mutable_h0(), {2, 4, 1}, 4);
      },
      kInvalid, "h0.shape: must be (B, D) = [2, 4], got [2, 4, 1]");

  // selective_scan: float32 BDL (B=2, D=4, L=6), N=3, variable B with G=2, fixed C, D, z,
  // delta_bias, h0.
  const SeqShape ss{2, 4, 6};
  const v1::SelectiveScanRequest selective = MakeSelectiveScan(rng,
                                                               {.dtype = DType::kFloat32,
                                                                .layout = Layout::kBDL,
                                                                .state_dim = 3,
                                                                .groups = 2,
                                                                .variable_b = true,
                                                                .variable_c = false,
                                                                .has_d_skip = true,
                                                                .has_z = true,
                                                                .has_delta_bias = true,
                                                                .delta_softplus = true,
                                                                .has_h0 = true},
                                                               ss);
  auto add_selective = [&](std::string name, std::function<void(v1::SelectiveScanRequest&)> mutate,
                           Code code, std::string message) {
    MalformedCase c{std::move(name), {}, code, std::move(message)};
    *c.request.mutable_selective_scan() = selective;
    mutate(*c.request.mutable_selective_scan());
    c.request.set_request_id(cases.size() + 1);
    cases.push_back(std::move(c));
  };
  add_selective(
      "selective A missing", [](auto& r) { r.clear_a(); }, kInvalid,
      "A: must be set (selective_scan requires it), got nothing");
  add_selective(
      "selective C missing", [](auto& r) { r.clear_c(); }, kInvalid,
      "C: must be set (selective_scan requires it), got nothing");
  add_selective(
      "selective u int32", [](auto& r) { Retype(r.mutable_u(), v1::INT32, 4); }, kInvalid,
      "u.dtype: must be one of float32, float16, bfloat16, got int32");
  add_selective(
      "selective delta layout differs", [](auto& r) { r.mutable_delta()->set_layout(v1::BLD); },
      kInvalid, "delta.layout: must equal u.layout BDL, got BLD");
  add_selective(
      "selective A float16", [](auto& r) { Retype(r.mutable_a(), v1::FLOAT16, 2); }, kInvalid,
      "A.dtype: must be float32, got float16");
  add_selective(
      "selective A one dim", [](auto& r) { Reshape(r.mutable_a(), {12}, 4); }, kInvalid,
      "A.shape: must have 2 dimensions (D, N), got 1");
  add_selective(
      "selective A rows differ from D",
      [](auto& r) {
        Reshape(r.mutable_a(), {5, 3}, 4);
      },
      kInvalid, "A.shape[0]: must equal D = 4, got 5");
  add_selective(
      "selective N above 256",
      [](auto& r) {
        Reshape(r.mutable_a(), {4, 257}, 4);
      },
      kInvalid, "A.shape[1]: state size N must be in [1, 256], got 257");
  add_selective(
      "selective N zero",
      [](auto& r) {
        Reshape(r.mutable_a(), {4, 0}, 4);
      },
      kInvalid, "A.shape[1]: state size N must be in [1, 256], got 0");
  add_selective(
      "selective groups do not divide D",
      [](auto& r) {
        Reshape(r.mutable_b(), {2, 3, 3, 6}, 4);
      },
      kInvalid, "B.shape[1]: groups G must divide D = 4, got 3");
  add_selective(
      "selective variable B dtype differs", [](auto& r) { Retype(r.mutable_b(), v1::FLOAT16, 2); },
      kInvalid, "B.dtype: must equal u.dtype float32 for a variable B, got float16");
  add_selective(
      "selective variable B length differs",
      [](auto& r) {
        Reshape(r.mutable_b(), {2, 2, 3, 5}, 4);
      },
      kInvalid, "B.shape: must be (B, G, N, L) = [2, 2, 3, 6], got [2, 2, 3, 5]");
  add_selective(
      "selective B three dims",
      [](auto& r) {
        Reshape(r.mutable_b(), {2, 3, 6}, 4);
      },
      kInvalid,
      "B.shape: must have 2 dimensions (D, N) for a fixed B or 4 dimensions (B, G, N, L) for a "
      "variable B, got 3");
  add_selective(
      "selective fixed C float16", [](auto& r) { Retype(r.mutable_c(), v1::FLOAT16, 2); }, kInvalid,
      "C.dtype: must be float32 for a fixed C (D, N), got float16");
  add_selective(
      "selective fixed C state size differs",
      [](auto& r) {
        Reshape(r.mutable_c(), {4, 2}, 4);
      },
      kInvalid, "C.shape: must be (D, N) = [4, 3], got [4, 2]");
  add_selective(
      "selective variable B and C groups differ",
      [&](auto& r) {
        Rng local(rng.seed() + 1);
        *r.mutable_c() = RandomTensor(local, DType::kFloat32, {2, 1, 3, 6}, Layout::kBDL, -1, 1);
      },
      kInvalid, "C.shape: groups G must equal B's groups 2, got 1");
  add_selective(
      "selective D wrong length", [](auto& r) { Reshape(r.mutable_d(), {3}, 4); }, kInvalid,
      "D.shape: must be (D) = [4], got [3]");
  add_selective(
      "selective delta_bias bfloat16",
      [](auto& r) { Retype(r.mutable_delta_bias(), v1::BFLOAT16, 2); }, kInvalid,
      "delta_bias.dtype: must be float32, got bfloat16");
  add_selective(
      "selective z shape differs",
      [](auto& r) {
        Reshape(r.mutable_z(), {2, 4, 7}, 4);
      },
      kInvalid, "z.shape: must equal u.shape [2, 4, 6], got [2, 4, 7]");
  add_selective(
      "selective h0 without N",
      [](auto& r) {
        Reshape(r.mutable_h0(), {2, 4}, 4);
      },
      kInvalid, "h0.shape: must be (B, D, N) = [2, 4, 3], got [2, 4]");

  // associative_scan: float32 BDL (1, 2, 7) add.
  const SeqShape as{1, 2, 7};
  const v1::AssociativeScanRequest associative = MakeAssociativeScan(
      rng, {.dtype = DType::kFloat32, .layout = Layout::kBDL, .op = ScanOperator::kAdd}, as);
  auto add_associative = [&](std::string name,
                             std::function<void(v1::AssociativeScanRequest&)> mutate, Code code,
                             std::string message) {
    MalformedCase c{std::move(name), {}, code, std::move(message)};
    *c.request.mutable_associative_scan() = associative;
    mutate(*c.request.mutable_associative_scan());
    c.request.set_request_id(cases.size() + 1);
    cases.push_back(std::move(c));
  };
  add_associative(
      "associative x missing", [](auto& r) { r.clear_x(); }, kInvalid,
      "x: must be set (associative_scan requires it), got nothing");
  add_associative(
      "associative operator unspecified", [](auto& r) { r.clear_operator_(); }, kInvalid,
      "operator: must be one of ADD, MUL, MAX, MIN, LOGADDEXP, got OPERATOR_UNSPECIFIED");
  add_associative(
      "associative operator unknown value",
      [](auto& r) { r.set_operator_(static_cast<v1::ScanOperator>(17)); }, kInvalid,
      "operator: must be one of ADD, MUL, MAX, MIN, LOGADDEXP, got unknown operator 17");
  add_associative(
      "associative mul on int32",
      [](auto& r) {
        r.set_operator_(v1::MUL);
        Retype(r.mutable_x(), v1::INT32, 4);
      },
      kInvalid, "x.dtype: must be one of float32, float16, bfloat16 for operator mul, got int32");
  add_associative(
      "associative logaddexp on int64",
      [](auto& r) {
        r.set_operator_(v1::LOGADDEXP);
        Retype(r.mutable_x(), v1::INT64, 8);
      },
      kInvalid,
      "x.dtype: must be one of float32, float16, bfloat16 for operator logaddexp, got int64");
  add_associative(
      "associative x layout unknown value",
      [](auto& r) { r.mutable_x()->set_layout(static_cast<v1::Layout>(7)); }, kInvalid,
      "x.layout: must be BDL or BLD, got unknown layout 7");

  // Limits (MalformedCaseLimits): 2^20 elements, 2 MiB messages.
  add_associative(
      "associative past max_elements_per_request",
      [&](auto& r) {
        Rng local(rng.seed() + 2);
        *r.mutable_x() = RandomTensor(local, DType::kFloat16, {1, 1, 600000}, Layout::kBDL, -1, 1);
      },
      Code::kResourceExhausted,
      "request: elements in all tensors and results must be at most max_elements_per_request = "
      "1048576, got 1200000");
  {
    // A last state of B * D * N = 600 * 4 * 256 float32 values: 2.4 MB, past 2 MiB, from a request
    // of about 30 kB.
    Rng local(rng.seed() + 3);
    MalformedCase c{"selective response past max_message_bytes",
                    {},
                    Code::kResourceExhausted,
                    "response: size must be at most max_message_bytes = 2097152, got about "
                    "2467328 bytes"};
    *c.request.mutable_selective_scan() = MakeSelectiveScan(local,
                                                            {.dtype = DType::kFloat32,
                                                             .layout = Layout::kBDL,
                                                             .state_dim = 256,
                                                             .groups = 1,
                                                             .variable_b = false,
                                                             .variable_c = false,
                                                             .return_last_state = true},
                                                            SeqShape{600, 4, 1});
    c.request.set_request_id(cases.size() + 1);
    cases.push_back(std::move(c));
  }

  MalformedCase no_op{"stream request without an op",
                      {},
                      kInvalid,
                      "op: must be one of linear_scan, linear_scan_backward, selective_scan, "
                      "associative_scan, got none",
                      /*stream_only=*/true};
  no_op.request.set_request_id(cases.size() + 1);
  cases.push_back(std::move(no_op));
  return cases;
}

}  // namespace scanserve::testing
