// scanctl's parts: request building and files, local verification on the CPU backend (checked
// against float64 loops written here from ops.md), the comparison rules, the load generator
// against an in-process Echo server, and the report formats.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "client/scanctl_bench.h"
#include "client/scanctl_requests.h"
#include "client/scanctl_verify.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "scanserve/client.h"
#include "scanserve/cpu_backend.h"

namespace scanserve::scanctl {
namespace {

using ::testing::HasSubstr;

uint64_t FreshSeed() { return (uint64_t{std::random_device{}()} << 32) | std::random_device{}(); }

std::vector<double> Doubles(const v1::Tensor& t) {
  std::vector<float> f = TensorToFloats(t).value();
  return std::vector<double>(f.begin(), f.end());
}

double RelL2(const std::vector<double>& got, const std::vector<double>& want) {
  double d = 0, r = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    d += (got[i] - want[i]) * (got[i] - want[i]);
    r += want[i] * want[i];
  }
  return std::sqrt(d / r);
}

// Element offset of (b, d, t) in a sequence tensor of dims (B, D, L) in `layout`.
int64_t Seq(Layout layout, int64_t D, int64_t L, int64_t b, int64_t d, int64_t t) {
  return layout == Layout::kBDL ? (b * D + d) * L + t : (b * L + t) * D + d;
}

class ScanctlVerifyTest : public ::testing::Test {
 protected:
  std::unique_ptr<Backend> backend_ = MakeCpuBackend(2);
};

TEST_F(ScanctlVerifyTest, LinearScanMatchesAFloat64LoopInEveryLayout) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  for (Layout layout : {Layout::kBDL, Layout::kBLD}) {
    for (bool reverse : {false, true}) {
      SCOPED_TRACE(::testing::Message() << LayoutName(layout) << " reverse " << reverse);
      RequestSpec spec;
      spec.op = OpKind::kLinearScan;
      spec.batch = 2, spec.dim = 3, spec.length = 37;
      spec.layout = layout;
      spec.with = {"b", "c", "h0"};
      spec.reverse = reverse;
      spec.return_final_state = true;
      const v1::StreamRequest request = RandomRequest(spec, seed).value();
      const v1::StreamResponse got = ComputeLocally(request, *backend_).value();
      const auto& m = request.linear_scan();
      const std::vector<double> a = Doubles(m.a()), x = Doubles(m.x()), b = Doubles(m.b()),
                                c = Doubles(m.c()), h0 = Doubles(m.h0());
      std::vector<double> y(a.size()), final_state(6);
      for (int64_t bi = 0; bi < 2; ++bi) {
        for (int64_t d = 0; d < 3; ++d) {
          double h = h0[bi * 3 + d];
          for (int64_t s = 0; s < 37; ++s) {
            const int64_t i = Seq(layout, 3, 37, bi, d, reverse ? 36 - s : s);
            h = a[i] * h + b[i] * x[i];
            y[i] = c[i] * h;
          }
          final_state[bi * 3 + d] = h;
        }
      }
      EXPECT_LE(RelL2(Doubles(got.linear_scan().y()), y), 1e-5);
      EXPECT_LE(RelL2(Doubles(got.linear_scan().final_state()), final_state), 1e-5);
      EXPECT_THAT(got.linear_scan().y().shape(), ::testing::ElementsAreArray(m.x().shape()));
      EXPECT_EQ(got.linear_scan().y().layout(), m.x().layout());
    }
  }
}

TEST_F(ScanctlVerifyTest, LinearScanBackwardMatchesAFloat64Loop) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  for (bool reverse : {false, true}) {
    SCOPED_TRACE(::testing::Message() << "reverse " << reverse);
    RequestSpec spec;
    spec.op = OpKind::kLinearScanBackward;
    spec.batch = 1, spec.dim = 4, spec.length = 29;
    spec.layout = Layout::kBLD;
    spec.with = {"b", "c", "h0", "h"};
    spec.reverse = reverse;
    const v1::StreamRequest request = RandomRequest(spec, seed).value();
    const auto& m = request.linear_scan_backward();
    const std::vector<double> a = Doubles(m.a()), x = Doubles(m.x()), dy = Doubles(m.dy()),
                              b = Doubles(m.b()), c = Doubles(m.c()), h0 = Doubles(m.h0()),
                              h_sent = Doubles(m.h());
    const int64_t L = 29, D = 4;
    std::vector<double> h(a.size()), da(a.size()), dx(a.size()), db(a.size()), dc(a.size()), dh0(D);
    for (int64_t d = 0; d < D; ++d) {
      auto at = [&](int64_t s) { return Seq(Layout::kBLD, D, L, 0, d, reverse ? L - 1 - s : s); };
      double state = h0[d];
      for (int64_t s = 0; s < L; ++s) h[at(s)] = state = a[at(s)] * state + b[at(s)] * x[at(s)];
      double dh = 0;
      for (int64_t s = L - 1; s >= 0; --s) {
        dh = dy[at(s)] * c[at(s)] + (s + 1 < L ? a[at(s + 1)] * dh : 0.0);
        da[at(s)] = dh * (s > 0 ? h[at(s - 1)] : h0[d]);
        dx[at(s)] = dh * b[at(s)];
        db[at(s)] = dh * x[at(s)];
        dc[at(s)] = dy[at(s)] * h[at(s)];
        if (s == 0) dh0[d] = a[at(0)] * dh;
      }
    }
    // The states scanctl generates are the true forward states.
    EXPECT_LE(RelL2(h_sent, h), 1e-6);
    const v1::StreamResponse got = ComputeLocally(request, *backend_).value();
    const auto& g = got.linear_scan_backward();
    EXPECT_LE(RelL2(Doubles(g.da()), da), 1e-5);
    EXPECT_LE(RelL2(Doubles(g.dx()), dx), 1e-5);
    EXPECT_LE(RelL2(Doubles(g.db()), db), 1e-5);
    EXPECT_LE(RelL2(Doubles(g.dc()), dc), 1e-5);
    EXPECT_LE(RelL2(Doubles(g.dh0()), dh0), 1e-5);
  }
}

TEST_F(ScanctlVerifyTest, SelectiveScanMatchesAFloat64LoopWithGroupsInBothLayouts) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  for (Layout layout : {Layout::kBDL, Layout::kBLD}) {
    SCOPED_TRACE(std::string(LayoutName(layout)));
    RequestSpec spec;
    spec.op = OpKind::kSelectiveScan;
    spec.batch = 2, spec.dim = 4, spec.length = 23;
    spec.layout = layout;
    spec.state_dim = 3;
    spec.groups = 2;
    spec.fixed_c = true;
    spec.delta_softplus = true;
    spec.return_last_state = true;
    spec.with = {"D", "z", "delta_bias", "h0"};
    const v1::StreamRequest request = RandomRequest(spec, seed).value();
    const auto& m = request.selective_scan();
    const int64_t B = 2, D = 4, L = 23, N = 3, G = 2;
    const std::vector<double> u = Doubles(m.u()), delta = Doubles(m.delta()), A = Doubles(m.a()),
                              Bm = Doubles(m.b()), C = Doubles(m.c()), Dskip = Doubles(m.d()),
                              z = Doubles(m.z()), bias = Doubles(m.delta_bias()),
                              h0 = Doubles(m.h0());
    std::vector<double> y(u.size()), last(B * D * N);
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t d = 0; d < D; ++d) {
        const int64_t g = d / (D / G);
        std::vector<double> h(N);
        for (int64_t n = 0; n < N; ++n) h[n] = h0[(b * D + d) * N + n];
        for (int64_t t = 0; t < L; ++t) {
          const int64_t i = Seq(layout, D, L, b, d, t);
          double dt = delta[i] + bias[d];
          dt = dt > 20 ? dt : std::log1p(std::exp(dt));
          double out = 0;
          for (int64_t n = 0; n < N; ++n) {
            const int64_t bi = layout == Layout::kBDL ? ((b * G + g) * N + n) * L + t
                                                      : ((b * L + t) * G + g) * N + n;
            h[n] = std::exp(dt * A[d * N + n]) * h[n] + dt * Bm[bi] * u[i];
            out += C[d * N + n] * h[n];
          }
          out += Dskip[d] * u[i];
          y[i] = out * z[i] / (1 + std::exp(-z[i]));
        }
        for (int64_t n = 0; n < N; ++n) last[(b * D + d) * N + n] = h[n];
      }
    }
    const v1::StreamResponse got = ComputeLocally(request, *backend_).value();
    EXPECT_LE(RelL2(Doubles(got.selective_scan().y()), y), 1e-5);
    EXPECT_LE(RelL2(Doubles(got.selective_scan().last_state()), last), 1e-5);
  }
}

TEST_F(ScanctlVerifyTest, AssociativeIntegerAddWrapsAndIsExact) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  RequestSpec spec;
  spec.op = OpKind::kAssociativeScan;
  spec.batch = 1, spec.dim = 3, spec.length = 101;
  spec.layout = Layout::kBLD;
  spec.dtype = DType::kInt32;
  spec.exclusive = true;
  spec.reverse = true;
  const v1::StreamRequest request = RandomRequest(spec, seed).value();
  const std::vector<int64_t> x = TensorToInts(request.associative_scan().x()).value();
  std::vector<int64_t> y(x.size());
  bool wrapped = false;
  for (int64_t d = 0; d < 3; ++d) {
    uint32_t acc = 0;
    int64_t exact = 0;
    for (int64_t t = 100; t >= 0; --t) {
      const int64_t i = Seq(Layout::kBLD, 3, 101, 0, d, t);
      y[i] = static_cast<int32_t>(acc);
      acc += static_cast<uint32_t>(x[i]);
      exact += x[i];
      wrapped = wrapped || exact != static_cast<int32_t>(acc);
    }
  }
  EXPECT_TRUE(wrapped) << "random int32 inputs should overflow an add scan of 101 steps";
  const v1::StreamResponse got = ComputeLocally(request, *backend_).value();
  EXPECT_EQ(TensorToInts(got.associative_scan().y()).value(), y);
  const VerifyReport report = Compare(got, got, DType::kInt32);
  EXPECT_TRUE(report.ok);
}

TEST_F(ScanctlVerifyTest, CompareFlagsErrorsPastTheTargetAndMissingOrExtraOutputs) {
  RequestSpec spec;
  spec.op = OpKind::kLinearScan;
  spec.batch = 1, spec.dim = 8, spec.length = 64;
  spec.return_final_state = true;
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const v1::StreamRequest request = RandomRequest(spec, seed).value();
  const v1::StreamResponse want = ComputeLocally(request, *backend_).value();

  VerifyReport same = Compare(want, want, DType::kFloat32);
  ASSERT_TRUE(same.ok);
  ASSERT_EQ(same.outputs.size(), 2u);
  EXPECT_EQ(same.outputs[0].name, "y");
  EXPECT_EQ(same.outputs[0].rel_l2, 0.0);

  // One element off by 1e-3 of the whole norm: rel L2 1e-3, past float32's 1e-5, within 1e-2.
  std::vector<float> y = TensorToFloats(want.linear_scan().y()).value();
  double norm = 0;
  for (float v : y) norm += static_cast<double>(v) * v;
  y[17] += static_cast<float>(1e-3 * std::sqrt(norm));
  v1::StreamResponse off = want;
  *off.mutable_linear_scan()->mutable_y() = MakeTensor(y, {1, 8, 64}, DType::kFloat32).value();
  VerifyReport bad = Compare(off, want, DType::kFloat32);
  EXPECT_FALSE(bad.ok);
  EXPECT_NEAR(bad.outputs[0].rel_l2, 1e-3, 1e-5);
  EXPECT_EQ(bad.outputs[0].mismatches, 1);
  EXPECT_TRUE(bad.outputs[1].ok);
  EXPECT_TRUE(Compare(off, want, DType::kBFloat16).ok);

  y[3] = NAN;
  *off.mutable_linear_scan()->mutable_y() = MakeTensor(y, {1, 8, 64}, DType::kFloat32).value();
  EXPECT_FALSE(Compare(off, want, DType::kBFloat16).ok);

  v1::StreamResponse missing = want;
  missing.mutable_linear_scan()->clear_final_state();
  VerifyReport m = Compare(missing, want, DType::kFloat32);
  EXPECT_FALSE(m.ok);
  EXPECT_THAT(m.outputs[1].problem, HasSubstr("missing"));
  VerifyReport extra = Compare(want, missing, DType::kFloat32);
  EXPECT_FALSE(extra.ok);

  v1::StreamResponse reshaped = want;
  reshaped.mutable_linear_scan()->mutable_y()->set_shape(2, 32);
  reshaped.mutable_linear_scan()->mutable_y()->add_shape(2);
  EXPECT_FALSE(Compare(reshaped, want, DType::kFloat32).ok);
}

TEST_F(ScanctlVerifyTest, MalformedRequestsAreRejectedBeforeTheBackendRuns) {
  RequestSpec spec;
  spec.op = OpKind::kLinearScan;
  spec.dim = 4, spec.length = 16;
  v1::StreamRequest request = RandomRequest(spec, 1).value();
  request.mutable_linear_scan()->mutable_a()->set_shape(2, 15);
  absl::StatusOr<v1::StreamResponse> r = ComputeLocally(request, *backend_);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("a"));

  spec.op = OpKind::kSelectiveScan;
  request = RandomRequest(spec, 1).value();
  v1::Tensor* A = request.mutable_selective_scan()->mutable_a();
  A->set_dtype(v1::FLOAT16);
  A->mutable_data()->resize(A->data().size() / 2);
  r = ComputeLocally(request, *backend_);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("A.dtype"));
  EXPECT_EQ(ComputeLocally(v1::StreamRequest(), *backend_).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ScanctlRequestsTest, RandomRequestsAreSeededAndShapedByTheSpec) {
  RequestSpec spec;
  spec.op = OpKind::kSelectiveScan;
  spec.batch = 2, spec.dim = 6, spec.length = 5;
  spec.layout = Layout::kBLD;
  spec.dtype = DType::kBFloat16;
  spec.state_dim = 4;
  spec.groups = 3;
  spec.fixed_b = true;
  spec.with = {"z", "h0"};
  const v1::StreamRequest a = RandomRequest(spec, 7).value();
  EXPECT_EQ(a.SerializeAsString(), RandomRequest(spec, 7).value().SerializeAsString());
  EXPECT_NE(a.SerializeAsString(), RandomRequest(spec, 8).value().SerializeAsString());
  const auto& m = a.selective_scan();
  EXPECT_THAT(m.u().shape(), ::testing::ElementsAre(2, 5, 6));
  EXPECT_EQ(m.u().dtype(), v1::BFLOAT16);
  EXPECT_EQ(m.u().layout(), v1::BLD);
  EXPECT_THAT(m.a().shape(), ::testing::ElementsAre(6, 4));
  EXPECT_EQ(m.a().dtype(), v1::FLOAT32);
  EXPECT_THAT(m.b().shape(), ::testing::ElementsAre(6, 4));
  EXPECT_THAT(m.c().shape(), ::testing::ElementsAre(2, 5, 3, 4));
  EXPECT_EQ(m.c().dtype(), v1::BFLOAT16);
  EXPECT_THAT(m.h0().shape(), ::testing::ElementsAre(2, 6, 4));
  EXPECT_TRUE(m.has_z());
  EXPECT_FALSE(m.has_d());
  EXPECT_FALSE(m.has_delta_bias());
  const std::vector<float> A = TensorToFloats(m.a()).value();
  for (float v : A) EXPECT_LT(v, 0.0f);
  EXPECT_THAT(Describe(a), HasSubstr("selective_scan bfloat16 BLD (2, 5, 6)"));
  EXPECT_EQ(RequestOp(a).value(), OpKind::kSelectiveScan);
  EXPECT_GT(PayloadBytes(a), 2 * 5 * 6 * 2 * 3);
}

TEST(ScanctlRequestsTest, SpecsOutsideTheContractAreRejectedNamingTheFlag) {
  auto message = [](const RequestSpec& s) { return std::string(CheckSpec(s).message()); };
  RequestSpec s;
  s.with = {"z"};
  EXPECT_THAT(message(s), HasSubstr("--with"));
  s = RequestSpec();
  s.dtype = DType::kInt32;
  EXPECT_THAT(message(s), HasSubstr("--dtype"));
  s.op = OpKind::kAssociativeScan;
  EXPECT_TRUE(CheckSpec(s).ok());
  s.scan_operator = ScanOperator::kLogAddExp;
  EXPECT_THAT(message(s), HasSubstr("--operator"));
  s = RequestSpec();
  s.op = OpKind::kSelectiveScan;
  s.groups = 5;
  EXPECT_THAT(message(s), HasSubstr("--groups"));
  s.groups = 1;
  s.state_dim = 257;
  EXPECT_THAT(message(s), HasSubstr("--state_dim"));
  s.state_dim = 16;
  s.reverse = true;
  EXPECT_THAT(message(s), HasSubstr("--reverse"));
  s = RequestSpec();
  s.length = 0;
  EXPECT_THAT(message(s), HasSubstr("--shape"));
  s = RequestSpec();
  s.exclusive = true;
  EXPECT_THAT(message(s), HasSubstr("--exclusive"));
  EXPECT_EQ(ParseOp("linear_scan_backward").value(), OpKind::kLinearScanBackward);
  EXPECT_FALSE(ParseOp("scan").ok());
  EXPECT_EQ(ParseLayout("bld").value(), Layout::kBLD);
  EXPECT_EQ(ParseDType("bfloat16").value(), DType::kBFloat16);
  EXPECT_EQ(ParseOperator("logaddexp").value(), ScanOperator::kLogAddExp);
}

TEST(ScanctlRequestsTest, TensorDirectoriesAndRequestFilesRoundTrip) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("scanctl_test_" + std::to_string(FreshSeed()));
  std::filesystem::create_directories(dir);
  RequestSpec spec;
  spec.op = OpKind::kLinearScanBackward;
  spec.batch = 1, spec.dim = 3, spec.length = 11;
  spec.dtype = DType::kFloat16;
  spec.with = {"b", "h0", "h"};
  const v1::StreamRequest request = RandomRequest(spec, 3).value();
  const auto& m = request.linear_scan_backward();
  for (const auto& [name, tensor] :
       std::vector<std::pair<std::string, const v1::Tensor*>>{{"a", &m.a()},
                                                              {"x", &m.x()},
                                                              {"dy", &m.dy()},
                                                              {"b", &m.b()},
                                                              {"h0", &m.h0()},
                                                              {"h", &m.h()}}) {
    std::ofstream((dir / (name + ".bin")).string(), std::ios::binary) << tensor->data();
  }
  EXPECT_EQ(RequestFromDirectory(spec, dir.string()).value().SerializeAsString(),
            request.SerializeAsString());

  std::ofstream((dir / "h0.bin").string(), std::ios::binary) << std::string(5, 'x');
  absl::StatusOr<v1::StreamRequest> short_file = RequestFromDirectory(spec, dir.string());
  EXPECT_EQ(short_file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(short_file.status().message()), HasSubstr("h0.bin"));
  spec.with.insert("c");
  EXPECT_EQ(RequestFromDirectory(spec, dir.string()).status().code(), absl::StatusCode::kNotFound);

  const std::string file = (dir / "request.pb").string();
  ASSERT_TRUE(WriteMessageFile(request, file).ok());
  EXPECT_EQ(ReadRequestFile(file).value().SerializeAsString(), request.SerializeAsString());
  std::ofstream(file, std::ios::binary) << "\xff\xff\xff";
  EXPECT_EQ(ReadRequestFile(file).status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(WriteMessageFile(v1::StreamRequest(), file).ok());
  EXPECT_THAT(std::string(ReadRequestFile(file).status().message()), HasSubstr("no operation"));
  EXPECT_EQ(ReadRequestFile((dir / "absent").string()).status().code(),
            absl::StatusCode::kNotFound);
  std::filesystem::remove_all(dir);
}

TEST(ScanctlBenchTest, PercentilesAreNearestRank) {
  std::vector<double> v(100);
  for (int i = 0; i < 100; ++i) v[i] = i + 1;
  EXPECT_EQ(Percentile(v, 50), 50);
  EXPECT_EQ(Percentile(v, 90), 90);
  EXPECT_EQ(Percentile(v, 99), 99);
  EXPECT_EQ(Percentile(v, 100), 100);
  EXPECT_EQ(Percentile(v, 0), 1);
  EXPECT_EQ(Percentile({7.0}, 99), 7);
  EXPECT_EQ(Percentile({}, 50), 0);
  EXPECT_EQ(Percentile({1, 2, 3}, 50), 2);
}

TEST(ScanctlBenchTest, JsonHasEveryFigureAndEscapesStrings) {
  BenchResult r;
  r.elapsed = absl::Seconds(2);
  r.completed = 5;
  r.ok = 4;
  r.errors["DEADLINE_EXCEEDED"] = 1;
  r.first_error = "DEADLINE_EXCEEDED: \"late\"\n";
  r.request_bytes = 4000;
  r.response_bytes = 2000;
  r.latencies_us = {1000, 2000, 3000, 4000};
  const std::string json = FormatJson(r, {{"op", JsonQuote("linear_scan")}}, 8);
  EXPECT_EQ(json.front(), '{');
  EXPECT_EQ(json.back(), '}');
  EXPECT_THAT(json, HasSubstr(R"("op":"linear_scan")"));
  EXPECT_THAT(json, HasSubstr(R"("concurrency":8)"));
  EXPECT_THAT(json, HasSubstr(R"("requests":5,"ok":4,"failed":1)"));
  EXPECT_THAT(json, HasSubstr(R"("errors":{"DEADLINE_EXCEEDED":1})"));
  EXPECT_THAT(json, HasSubstr(R"("throughput_rps":2.000)"));
  EXPECT_THAT(json, HasSubstr(R"("payload_gbps":0.000003)"));
  EXPECT_THAT(json, HasSubstr(R"("p50":2.0000)"));
  EXPECT_THAT(json, HasSubstr(R"("max":4.0000)"));
  EXPECT_THAT(json, HasSubstr(R"("first_error":"DEADLINE_EXCEEDED: \"late\"\n")"));
  const std::string text = FormatReport(r, "title", 8);
  EXPECT_THAT(text, HasSubstr("4 ok, 1 failed"));
  EXPECT_THAT(text, HasSubstr("DEADLINE_EXCEEDED 1"));
  EXPECT_EQ(JsonQuote(std::string("a\x01", 2)), "\"a\\u0001\"");
}

// Echo server counting the calls in flight at once.
class CountingEcho final : public v1::ScanService::CallbackService {
 public:
  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* context,
                                 const v1::EchoRequest* request,
                                 v1::EchoResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    ++calls;
    if (request->payload() == "fail") {
      reactor->Finish(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "scripted"));
      return reactor;
    }
    response->set_payload(request->payload());
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  std::atomic<int64_t> calls{0};
};

class ScanctlBenchServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ClientOptions options;
    options.target = "127.0.0.1:" + std::to_string(port);
    options.default_timeout = absl::Seconds(30);
    client_ = Client::Create(options).value();
  }
  void TearDown() override { server_->Shutdown(); }

  static BenchRequest Echo(const std::string& payload) {
    auto r = std::make_shared<v1::EchoRequest>();
    r->set_payload(payload);
    return BenchRequest{nullptr, r, static_cast<int64_t>(r->ByteSizeLong())};
  }

  CountingEcho service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<Client> client_;
};

TEST_F(ScanctlBenchServerTest, RequestCountModeSendsExactlyTheCountPlusWarmup) {
  BenchConfig config;
  config.concurrency = 64;
  config.requests = 300;
  config.warmup_requests = 20;
  int progress_calls = 0;
  config.on_progress = [&](const BenchProgress&) { ++progress_calls; };
  config.progress_interval = absl::Milliseconds(1);
  const BenchResult r = RunBench(*client_, {Echo("a"), Echo("bb")}, config);
  EXPECT_EQ(r.ok, 300);
  EXPECT_EQ(r.completed, 300);
  EXPECT_TRUE(r.errors.empty());
  EXPECT_EQ(service_.calls.load(), 320);
  EXPECT_EQ(r.latencies_us.size(), 300u);
  EXPECT_TRUE(std::is_sorted(r.latencies_us.begin(), r.latencies_us.end()));
  EXPECT_GT(r.latencies_us.front(), 0);
  EXPECT_GT(r.elapsed, absl::ZeroDuration());
  // Messages of 3 ("a") and 4 ("bb") bytes, echoed back unchanged.
  EXPECT_GE(r.request_bytes, 300 * 3);
  EXPECT_LE(r.request_bytes, 300 * 4);
  EXPECT_EQ(r.response_bytes, r.request_bytes);
}

TEST_F(ScanctlBenchServerTest, ErrorsAreCountedByStatusCode) {
  BenchConfig config;
  config.concurrency = 1;  // one caller alternates: exactly half fail
  config.requests = 100;
  const BenchResult r = RunBench(*client_, {Echo("ok"), Echo("fail")}, config);
  EXPECT_EQ(r.completed, 100);
  EXPECT_EQ(r.ok, 50);
  ASSERT_EQ(r.errors.count("FAILED_PRECONDITION"), 1u);
  EXPECT_EQ(r.errors.at("FAILED_PRECONDITION"), 50);
  EXPECT_THAT(r.first_error, HasSubstr("scripted"));
  EXPECT_EQ(r.latencies_us.size(), 50u);

  config.concurrency = 4;
  const BenchResult mixed = RunBench(*client_, {Echo("ok"), Echo("fail")}, config);
  EXPECT_EQ(mixed.completed, 100);
  EXPECT_EQ(mixed.ok + mixed.errors.at("FAILED_PRECONDITION"), 100);
  EXPECT_GT(mixed.ok, 0);
}

TEST_F(ScanctlBenchServerTest, DurationModeStopsAndFailingFastStaysBounded) {
  BenchConfig config;
  config.concurrency = 8;
  config.duration = absl::Milliseconds(200);
  const BenchResult r = RunBench(*client_, {Echo("x")}, config);
  EXPECT_GT(r.ok, 0);
  EXPECT_EQ(r.ok, r.completed);
  EXPECT_LT(r.elapsed, absl::Seconds(10));

  // Nothing listens: every call fails at once, possibly inline; the run still ends.
  server_->Shutdown();
  ClientOptions options = client_->options();
  options.retry_max_attempts = 1;
  std::unique_ptr<Client> dead = Client::Create(options).value();
  const BenchResult failed = RunBench(*dead, {Echo("x")}, config);
  EXPECT_EQ(failed.ok, 0);
  EXPECT_GT(failed.completed, 0);
  EXPECT_EQ(failed.errors.count("UNAVAILABLE"), 1u);
}

}  // namespace
}  // namespace scanserve::scanctl
