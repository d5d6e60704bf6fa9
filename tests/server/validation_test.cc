// Request validation without gRPC: every malformed request of the shared table gets its exact
// status, and valid requests of every op and option become Work that points into the request's
// bytes and the response's pre-sized outputs.
#include "server/validation.h"

#include <string>
#include <variant>

#include "gtest/gtest.h"
#include "requests.h"
#include "server/config.h"
#include "support/test_support.h"

namespace scanserve::testing {
namespace {

absl::StatusOr<ValidatedWork> ValidateUnary(const v1::StreamRequest& request,
                                            const RequestLimits& limits) {
  switch (request.op_case()) {
    case v1::StreamRequest::kLinearScan: {
      v1::LinearScanResponse response;
      return ValidateLinearScan(request.linear_scan(), limits, &response);
    }
    case v1::StreamRequest::kLinearScanBackward: {
      v1::LinearScanBackwardResponse response;
      return ValidateLinearScanBackward(request.linear_scan_backward(), limits, &response);
    }
    case v1::StreamRequest::kSelectiveScan: {
      v1::SelectiveScanResponse response;
      return ValidateSelectiveScan(request.selective_scan(), limits, &response);
    }
    case v1::StreamRequest::kAssociativeScan: {
      v1::AssociativeScanResponse response;
      return ValidateAssociativeScan(request.associative_scan(), limits, &response);
    }
    case v1::StreamRequest::OP_NOT_SET:
      break;
  }
  return absl::InternalError("no op");
}

TEST(ValidationTest, EveryMalformedRequestGetsItsStatusAndMessage) {
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  const std::vector<MalformedCase> cases = MalformedCases(rng);
  ASSERT_GE(cases.size(), 20u);
  const RequestLimits limits = MalformedCaseLimits();
  for (const MalformedCase& c : cases) {
    SCOPED_TRACE(c.name);
    if (!c.stream_only) {
      absl::StatusOr<ValidatedWork> unary = ValidateUnary(c.request, limits);
      EXPECT_EQ(unary.status().code(), c.code) << unary.status();
      EXPECT_EQ(unary.status().message(), c.message);
    }
    v1::StreamResponse response;
    absl::StatusOr<ValidatedWork> stream = ValidateStreamRequest(c.request, limits, &response);
    EXPECT_EQ(stream.status().code(), c.code) << stream.status();
    EXPECT_EQ(stream.status().message(), c.message);
  }
}

TEST(ValidationTest, MalformedCasesAreValidBeforeTheirMutation) {
  // Each case breaks one rule of a valid base request; the bases themselves must pass, or a case
  // could be failing for a reason other than the one it names.
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  const RequestLimits limits = MalformedCaseLimits();
  v1::LinearScanResponse lr;
  EXPECT_TRUE(ValidateLinearScan(
                  MakeLinearScan(
                      rng, {.dtype = DType::kFloat32, .has_b = true, .has_c = true, .has_h0 = true},
                      {2, 3, 5}),
                  limits, &lr)
                  .ok());
  v1::LinearScanBackwardResponse br;
  EXPECT_TRUE(ValidateLinearScanBackward(MakeLinearScanBackward(rng,
                                                                {.dtype = DType::kBFloat16,
                                                                 .layout = Layout::kBLD,
                                                                 .has_b = true,
                                                                 .has_c = true,
                                                                 .has_h0 = true,
                                                                 .has_states = true},
                                                                {2, 4, 3}),
                                         limits, &br)
                  .ok());
  v1::SelectiveScanResponse sr;
  EXPECT_TRUE(ValidateSelectiveScan(MakeSelectiveScan(rng,
                                                      {.state_dim = 3,
                                                       .groups = 2,
                                                       .variable_b = true,
                                                       .variable_c = false,
                                                       .has_d_skip = true,
                                                       .has_z = true,
                                                       .has_delta_bias = true,
                                                       .delta_softplus = true,
                                                       .has_h0 = true},
                                                      {2, 4, 6}),
                                    limits, &sr)
                  .ok());
}

int64_t DataBytes(const v1::Tensor& t) { return static_cast<int64_t>(t.data().size()); }

void ExpectOutput(const v1::Tensor& t, const void* pointer, DType dtype,
                  std::optional<Layout> layout, const WireShape& shape) {
  EXPECT_EQ(t.dtype(), wire::ToWire(dtype));
  if (layout) {
    EXPECT_EQ(t.layout(), wire::ToWire(*layout));
  }
  EXPECT_EQ(WireShape(t.shape().begin(), t.shape().end()), shape);
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  EXPECT_EQ(DataBytes(t), count * static_cast<int64_t>(DTypeSize(dtype)));
  EXPECT_EQ(pointer, static_cast<const void*>(t.data().data()));
}

TEST(ValidationTest, LinearScanWorkPointsIntoRequestAndResponse) {
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  for (int i = 0; i < 40; ++i) {
    const LinearScanOptions o = RandomLinearScanOptions(rng);
    const SeqShape s = RandomShape(rng, 6, 20);
    const v1::LinearScanRequest request = MakeLinearScan(rng, o, s);
    v1::LinearScanResponse response;
    response.mutable_final_state()->set_data("stale");  // validation starts from a clean response
    absl::StatusOr<ValidatedWork> v = ValidateLinearScan(request, RequestLimits{}, &response);
    ASSERT_TRUE(v.ok()) << v.status();
    const auto* w = std::get_if<LinearScanWork>(&v->work);
    ASSERT_NE(w, nullptr);
    EXPECT_EQ(w->options, o);
    EXPECT_EQ(w->problem.shape, s);
    EXPECT_EQ(w->problem.a, request.a().data().data());
    EXPECT_EQ(w->problem.x, request.x().data().data());
    EXPECT_EQ(w->problem.b, o.has_b ? request.b().data().data() : nullptr);
    EXPECT_EQ(w->problem.c, o.has_c ? request.c().data().data() : nullptr);
    EXPECT_EQ(static_cast<const void*>(w->problem.h0),
              o.has_h0 ? request.h0().data().data() : nullptr);
    const WireShape seq = SeqWireShape(s, o.layout);
    ExpectOutput(response.y(), w->problem.y, o.dtype, o.layout, seq);
    EXPECT_EQ(response.has_final_state(), o.return_final_state);
    int64_t bytes = DataBytes(request.a()) + DataBytes(request.x()) + DataBytes(request.b()) +
                    DataBytes(request.c()) + DataBytes(request.h0()) + DataBytes(response.y());
    if (o.return_final_state) {
      ExpectOutput(response.final_state(), w->problem.final_state, DType::kFloat32, std::nullopt,
                   {s.batch, s.dim});
      bytes += DataBytes(response.final_state());
    } else {
      EXPECT_EQ(w->problem.final_state, nullptr);
    }
    EXPECT_EQ(v->bytes, bytes);
  }
}

TEST(ValidationTest, LinearScanBackwardWorkPointsIntoRequestAndResponse) {
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  for (int i = 0; i < 40; ++i) {
    const LinearScanBackwardOptions o = RandomLinearScanBackwardOptions(rng);
    const SeqShape s = RandomShape(rng, 6, 20);
    const v1::LinearScanBackwardRequest request = MakeLinearScanBackward(rng, o, s);
    v1::LinearScanBackwardResponse response;
    absl::StatusOr<ValidatedWork> v =
        ValidateLinearScanBackward(request, RequestLimits{}, &response);
    ASSERT_TRUE(v.ok()) << v.status();
    const auto* w = std::get_if<LinearScanBackwardWork>(&v->work);
    ASSERT_NE(w, nullptr);
    EXPECT_EQ(w->options, o);
    const LinearScanBackwardProblem& p = w->problem;
    EXPECT_EQ(p.shape, s);
    EXPECT_EQ(p.a, request.a().data().data());
    EXPECT_EQ(p.x, request.x().data().data());
    EXPECT_EQ(p.dy, request.dy().data().data());
    EXPECT_EQ(p.b, o.has_b ? request.b().data().data() : nullptr);
    EXPECT_EQ(p.c, o.has_c ? request.c().data().data() : nullptr);
    EXPECT_EQ(static_cast<const void*>(p.h0), o.has_h0 ? request.h0().data().data() : nullptr);
    EXPECT_EQ(static_cast<const void*>(p.states),
              o.has_states ? request.h().data().data() : nullptr);
    const WireShape seq = SeqWireShape(s, o.layout);
    const DType dt = o.dtype;
    const Layout lay = o.layout;
    ExpectOutput(response.da(), p.da, dt, lay, seq);
    ExpectOutput(response.dx(), p.dx, dt, lay, seq);
    EXPECT_EQ(response.has_db(), o.has_b);
    EXPECT_EQ(response.has_dc(), o.has_c);
    EXPECT_EQ(response.has_dh0(), o.has_h0);
    if (o.has_b) ExpectOutput(response.db(), p.db, dt, lay, seq);
    if (o.has_c) ExpectOutput(response.dc(), p.dc, dt, lay, seq);
    if (o.has_h0)
      ExpectOutput(response.dh0(), p.dh0, DType::kFloat32, std::nullopt, {s.batch, s.dim});
    EXPECT_EQ(p.db == nullptr, !o.has_b);
    EXPECT_EQ(p.dc == nullptr, !o.has_c);
    EXPECT_EQ(p.dh0 == nullptr, !o.has_h0);
    EXPECT_EQ(v->bytes,
              DataBytes(request.a()) + DataBytes(request.x()) + DataBytes(request.dy()) +
                  DataBytes(request.b()) + DataBytes(request.c()) + DataBytes(request.h0()) +
                  DataBytes(request.h()) + DataBytes(response.da()) + DataBytes(response.dx()) +
                  DataBytes(response.db()) + DataBytes(response.dc()) + DataBytes(response.dh0()));
  }
}

TEST(ValidationTest, SelectiveScanWorkPointsIntoRequestAndResponse) {
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  for (int i = 0; i < 60; ++i) {
    const SeqShape s = RandomShape(rng, 8, 20);
    SelectiveScanOptions o = RandomSelectiveScanOptions(rng, s);
    const v1::SelectiveScanRequest request = MakeSelectiveScan(rng, o, s);
    v1::SelectiveScanResponse response;
    absl::StatusOr<ValidatedWork> v = ValidateSelectiveScan(request, RequestLimits{}, &response);
    ASSERT_TRUE(v.ok()) << v.status();
    const auto* w = std::get_if<SelectiveScanWork>(&v->work);
    ASSERT_NE(w, nullptr);
    // Groups only exist for variable B/C; with both fixed the signature says 1.
    if (!o.variable_b && !o.variable_c) o.groups = 1;
    EXPECT_EQ(w->options, o) << SignatureKey(w->options) << " vs " << SignatureKey(o);
    const SelectiveScanProblem& p = w->problem;
    EXPECT_EQ(p.shape, s);
    EXPECT_EQ(p.u, request.u().data().data());
    EXPECT_EQ(p.delta, request.delta().data().data());
    EXPECT_EQ(static_cast<const void*>(p.A), request.a().data().data());
    EXPECT_EQ(p.B, request.b().data().data());
    EXPECT_EQ(p.C, request.c().data().data());
    EXPECT_EQ(static_cast<const void*>(p.d_skip),
              o.has_d_skip ? request.d().data().data() : nullptr);
    EXPECT_EQ(p.z, o.has_z ? request.z().data().data() : nullptr);
    EXPECT_EQ(static_cast<const void*>(p.delta_bias),
              o.has_delta_bias ? request.delta_bias().data().data() : nullptr);
    EXPECT_EQ(static_cast<const void*>(p.h0), o.has_h0 ? request.h0().data().data() : nullptr);
    ExpectOutput(response.y(), p.y, o.dtype, o.layout, SeqWireShape(s, o.layout));
    EXPECT_EQ(response.has_last_state(), o.return_last_state);
    if (o.return_last_state) {
      ExpectOutput(response.last_state(), p.last_state, DType::kFloat32, std::nullopt,
                   {s.batch, s.dim, o.state_dim});
    } else {
      EXPECT_EQ(p.last_state, nullptr);
    }
  }
}

TEST(ValidationTest, AssociativeScanWorkPointsIntoRequestAndResponse) {
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  for (int i = 0; i < 60; ++i) {
    const AssociativeScanOptions o = RandomAssociativeScanOptions(rng);
    const SeqShape s = RandomShape(rng, 6, 20);
    const v1::AssociativeScanRequest request = MakeAssociativeScan(rng, o, s);
    v1::AssociativeScanResponse response;
    absl::StatusOr<ValidatedWork> v = ValidateAssociativeScan(request, RequestLimits{}, &response);
    ASSERT_TRUE(v.ok()) << v.status();
    const auto* w = std::get_if<AssociativeScanWork>(&v->work);
    ASSERT_NE(w, nullptr);
    EXPECT_EQ(w->options, o);
    EXPECT_EQ(w->problem.shape, s);
    EXPECT_EQ(w->problem.x, request.x().data().data());
    ExpectOutput(response.y(), w->problem.y, o.dtype, o.layout, SeqWireShape(s, o.layout));
    EXPECT_EQ(v->bytes, 2 * DataBytes(request.x()));
  }
}

TEST(ValidationTest, StreamRequestsFillTheMatchingResult) {
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  const SeqShape s{1, 3, 4};
  v1::StreamRequest request;
  *request.mutable_associative_scan() =
      MakeAssociativeScan(rng, {.dtype = DType::kInt64, .op = ScanOperator::kMax}, s);
  v1::StreamResponse response;
  absl::StatusOr<ValidatedWork> v = ValidateStreamRequest(request, RequestLimits{}, &response);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(response.result_case(), v1::StreamResponse::kAssociativeScan);
  EXPECT_EQ(std::get<AssociativeScanWork>(v->work).problem.y,
            response.associative_scan().y().data().data());
  EXPECT_EQ(StreamRequestOp(request), OpKind::kAssociativeScan);

  *request.mutable_selective_scan() = MakeSelectiveScan(rng, {.state_dim = 2}, s);
  v = ValidateStreamRequest(request, RequestLimits{}, &response);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(response.result_case(), v1::StreamResponse::kSelectiveScan);
  EXPECT_EQ(StreamRequestOp(request), OpKind::kSelectiveScan);
  EXPECT_EQ(StreamRequestOp(v1::StreamRequest()), std::nullopt);
}

TEST(ValidationTest, ElementLimitIsInclusive) {
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  // a, x and y: 3 * 2 * 3 * 7 = 126 elements.
  const v1::LinearScanRequest request = MakeLinearScan(rng, {}, {2, 3, 7});
  RequestLimits limits;
  limits.max_elements_per_request = 126;
  v1::LinearScanResponse response;
  EXPECT_TRUE(ValidateLinearScan(request, limits, &response).ok());
  limits.max_elements_per_request = 125;
  absl::StatusOr<ValidatedWork> v = ValidateLinearScan(request, limits, &response);
  EXPECT_EQ(v.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(v.status().message(),
            "request: elements in all tensors and results must be at most "
            "max_elements_per_request = 125, got 126");
}

TEST(ValidationTest, MessageLimitCountsEveryOutput) {
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  // y and final_state: 2*3*7*4 + 2*3*4 = 192 data bytes, plus framing for two tensors.
  const v1::LinearScanRequest request =
      MakeLinearScan(rng, {.return_final_state = true}, {2, 3, 7});
  RequestLimits limits;
  limits.max_message_bytes = 192 + 2 * 64;
  v1::LinearScanResponse response;
  ASSERT_TRUE(ValidateLinearScan(request, limits, &response).ok());
  EXPECT_LE(static_cast<int64_t>(response.ByteSizeLong()), limits.max_message_bytes);
  limits.max_message_bytes -= 1;
  EXPECT_EQ(ValidateLinearScan(request, limits, &response).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(ValidationTest, ConfiguredStateLimitBelowTheContract) {
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  const v1::SelectiveScanRequest request = MakeSelectiveScan(rng, {.state_dim = 17}, {1, 2, 3});
  RequestLimits limits;
  v1::SelectiveScanResponse response;
  EXPECT_TRUE(ValidateSelectiveScan(request, limits, &response).ok());
  limits.max_state_dim = 16;
  absl::StatusOr<ValidatedWork> v = ValidateSelectiveScan(request, limits, &response);
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(v.status().message(), "A.shape[1]: state size N must be in [1, 16], got 17");
}

TEST(ValidationTest, LongRowWithinDefaultLimits) {
  // ops.md: rows of 2^24 elements and more must work; the default limits admit one.
  const SeqShape s{1, 1, (int64_t{1} << 24) + 3};
  v1::AssociativeScanRequest request;
  request.set_operator_(v1::MAX);
  v1::Tensor* x = request.mutable_x();
  x->set_dtype(v1::FLOAT32);
  x->set_layout(v1::BLD);
  for (int64_t d : SeqWireShape(s, Layout::kBLD)) x->add_shape(d);
  x->mutable_data()->assign(static_cast<size_t>(s.elements()) * 4, '\x01');
  v1::AssociativeScanResponse response;
  absl::StatusOr<ValidatedWork> v = ValidateAssociativeScan(request, RequestLimits{}, &response);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(std::get<AssociativeScanWork>(v->work).problem.shape, s);
}

TEST(ConfigTest, DefaultsAreValidAndRangesAreChecked) {
  EXPECT_TRUE(ValidateConfig(ServerConfig{}).ok());
  ServerConfig c;
  c.port = 70000;
  EXPECT_EQ(ValidateConfig(c).message(), "port: must be in [0, 65535], got 70000");
  c = {};
  c.limits.max_state_dim = 300;
  EXPECT_EQ(ValidateConfig(c).message(), "max_state_dim: must be in [1, 256], got 300");
  c = {};
  c.batching.max_batch_requests = 0;
  EXPECT_EQ(ValidateConfig(c).code(), absl::StatusCode::kInvalidArgument);
  c = {};
  c.limits.max_message_bytes = int64_t{4} << 30;
  EXPECT_EQ(ValidateConfig(c).code(), absl::StatusCode::kInvalidArgument);
  c = {};
  c.stream_max_in_flight = 0;
  EXPECT_EQ(ValidateConfig(c).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace scanserve::testing
