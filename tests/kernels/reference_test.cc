// Checks of the shared test support and the float64 references themselves, on cases small enough
// to work out by hand, so a backend test that agrees with a reference agrees with ops.md.
#include "reference/reference.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "gtest/gtest.h"
#include "support/test_support.h"

namespace scanserve::testing {
namespace {

TEST(TestSupportTest, PoisonIsNanForFloatsAndMinusOneForInts) {
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    HostTensor t(dtype, 5);
    t.Poison();
    for (int64_t i = 0; i < t.count(); ++i) EXPECT_TRUE(std::isnan(t.Get(i))) << DTypeName(dtype);
  }
  for (DType dtype : {DType::kInt32, DType::kInt64}) {
    HostTensor t(dtype, 5);
    t.Poison();
    for (int64_t i = 0; i < t.count(); ++i) EXPECT_EQ(t.GetInt(i), -1) << DTypeName(dtype);
  }
}

TEST(TestSupportTest, SetRoundsToTheDtype) {
  EXPECT_EQ(RoundTo(DType::kFloat16, 1.0 + 1.0 / 4096), 1.0);  // below half an ulp (2^-10)
  EXPECT_EQ(RoundTo(DType::kFloat16, 1.0 + 3.0 / 2048), 1.0 + 2.0 / 1024);  // tie to even
  EXPECT_EQ(RoundTo(DType::kBFloat16, 1.0 + 1.0 / 512), 1.0);
  EXPECT_EQ(RoundTo(DType::kBFloat16, 3.0), 3.0);
  EXPECT_EQ(RoundTo(DType::kInt32, 4294967296.0 + 7.0), 7.0);  // wraps
}

TEST(TestSupportTest, FillUniformIsNeverAllZeroAndStaysInRange) {
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  HostTensor ints(DType::kInt32, 3);
  ints.FillUniform(rng, 0, 0.5);  // the only integer in range is 0: one element is forced
  int nonzero = 0;
  for (int64_t i = 0; i < ints.count(); ++i) nonzero += ints.GetInt(i) != 0;
  EXPECT_GE(nonzero, 1);
  HostTensor floats(DType::kBFloat16, 1000);
  floats.FillUniform(rng, -2.0, 3.0);
  for (int64_t i = 0; i < floats.count(); ++i) {
    EXPECT_GE(floats.Get(i), -2.0);
    EXPECT_LE(floats.Get(i), 3.0);
  }
}

TEST(TestSupportTest, RelativeL2Error) {
  HostTensor out(DType::kFloat32, 2);
  out.Set(0, 3.0);
  out.Set(1, 4.0);
  const std::vector<double> ref = {3.0, 4.5};
  EXPECT_DOUBLE_EQ(RelativeL2Error(out, ref), 0.5 / std::sqrt(9.0 + 4.5 * 4.5));
  out.Poison();
  EXPECT_EQ(RelativeL2Error(out, ref), std::numeric_limits<double>::infinity());
  const std::vector<double> nan_ref = {std::nan(""), std::nan("")};
  EXPECT_EQ(RelativeL2Error(out, nan_ref), 0.0);
  EXPECT_EQ(RelativeL2Error(out, std::vector<double>{1.0}),
            std::numeric_limits<double>::infinity());
}

TEST(ReferenceTest, LinearScanByHand) {
  // Two rows of length 3 in BLD: row d=0 has a=(0.5,2,1), x=(1,1,2); row d=1 a=(1,1,1), x=(1,2,3).
  const std::vector<float> a = {0.5f, 1, 2, 1, 1, 1};
  const std::vector<float> x = {1, 1, 1, 2, 2, 3};
  const std::vector<float> c = {1, 1, 1, 1, 1, 10};
  const std::vector<float> h0 = {4, -1};
  LinearScanOptions o{
      .layout = Layout::kBLD, .has_c = true, .has_h0 = true, .return_final_state = true};
  LinearScanProblem p{
      .shape = {1, 2, 3}, .a = a.data(), .x = x.data(), .c = c.data(), .h0 = h0.data()};
  // Row 0: h = 0.5*4+1 = 3, 2*3+1 = 7, 1*7+2 = 9. Row 1: h = 0, 2, 5; y = c*h.
  RefLinearScan ref = ReferenceLinearScan(o, p);
  EXPECT_EQ(ref.y, (std::vector<double>{3, 0, 7, 2, 9, 50}));
  EXPECT_EQ(ref.final_state, (std::vector<double>{9, 5}));
  // Reverse, BDL, rows (0.5,1,2 | 1,1,1) with x (1,1,1 | 2,2,3): h runs from t=2 down.
  o = LinearScanOptions{.reverse = true, .return_final_state = true};
  p = LinearScanProblem{.shape = {1, 2, 3}, .a = a.data(), .x = x.data()};
  ref = ReferenceLinearScan(o, p);
  // Row 0: h2 = 1, h1 = 1*1+1 = 2, h0 = 0.5*2+1 = 2. Row 1: h2 = 3, h1 = 5, h0 = 7.
  EXPECT_EQ(ref.y, (std::vector<double>{2, 2, 1, 7, 5, 3}));
  EXPECT_EQ(ref.final_state, (std::vector<double>{2, 7}));
}

TEST(ReferenceTest, SelectiveScanByHand) {
  // One channel, N = 2, L = 2, fixed B and C, no softplus: dt = delta + bias.
  const std::vector<float> u = {1, 2};
  const std::vector<float> delta = {0.5f, 1};
  const std::vector<float> A = {0, std::log(0.5f)};
  const std::vector<float> B = {1, 2};
  const std::vector<float> C = {3, 1};
  const std::vector<float> d_skip = {0.25f};
  const std::vector<float> bias = {0.5f};
  SelectiveScanOptions o{.state_dim = 2,
                         .variable_b = false,
                         .variable_c = false,
                         .has_d_skip = true,
                         .has_delta_bias = true,
                         .return_last_state = true};
  SelectiveScanProblem p{.shape = {1, 1, 2},
                         .u = u.data(),
                         .delta = delta.data(),
                         .A = A.data(),
                         .B = B.data(),
                         .C = C.data(),
                         .d_skip = d_skip.data(),
                         .delta_bias = bias.data()};
  // t=0: dt=1; h = (1*1*1, 2*1*1) = (1, 2); y = 3 + 2 + 0.25 = 5.25.
  // t=1: dt=1.5; decay (1, 0.5^1.5); h = (1 + 1.5*2, 2*0.5^1.5 + 1.5*2*2); y = 3*h0 + h1 + 0.5.
  const RefSelectiveScan ref = ReferenceSelectiveScan(o, p);
  const double h1 = 2 * std::pow(0.5, 1.5) + 6;
  ASSERT_EQ(ref.y.size(), 2u);
  EXPECT_NEAR(ref.y[0], 5.25, 1e-6);
  EXPECT_NEAR(ref.y[1], 3 * 4 + h1 + 0.5, 1e-6);
  EXPECT_NEAR(ref.last_state[0], 4, 1e-6);
  EXPECT_NEAR(ref.last_state[1], h1, 1e-6);
}

TEST(ReferenceTest, AssociativeScanByHand) {
  const std::vector<float> x = {1, -2, 3, 0.5f};
  AssociativeScanOptions o{.op = ScanOperator::kMax, .exclusive = true};
  const AssociativeScanProblem p{.shape = {1, 1, 4}, .x = x.data()};
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_EQ(ReferenceAssociativeScan(o, p), (std::vector<double>{-inf, 1, 1, 3}));
  o = AssociativeScanOptions{.op = ScanOperator::kMul, .reverse = true};
  EXPECT_EQ(ReferenceAssociativeScan(o, p), (std::vector<double>{-3, -3, 1.5, 0.5}));
  o = AssociativeScanOptions{.op = ScanOperator::kLogAddExp};
  const std::vector<double> lse = ReferenceAssociativeScan(o, p);
  EXPECT_NEAR(lse[3], std::log(std::exp(1.0) + std::exp(-2.0) + std::exp(3.0) + std::exp(0.5)),
              1e-12);

  const std::vector<int32_t> xi = {std::numeric_limits<int32_t>::max(), 2, -5};
  o = AssociativeScanOptions{.dtype = DType::kInt32, .op = ScanOperator::kAdd};
  const AssociativeScanProblem pi{.shape = {1, 1, 3}, .x = xi.data()};
  EXPECT_EQ(ReferenceAssociativeScanInt(o, pi),
            (std::vector<int64_t>{std::numeric_limits<int32_t>::max(),
                                  std::numeric_limits<int32_t>::min() + 1,
                                  int64_t{std::numeric_limits<int32_t>::max()} - 3}));
}

// The backward reference against central differences of the forward reference: the loss is
// sum(w * y) for random weights w (so dy = w).
TEST(ReferenceTest, LinearScanBackwardMatchesFiniteDifferences) {
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  for (bool reverse : {false, true}) {
    for (Layout layout : {Layout::kBDL, Layout::kBLD}) {
      SCOPED_TRACE(reverse ? "reverse" : "forward");
      const SeqShape shape{2, 3, 5};
      const int64_t n = shape.elements();
      std::vector<float> a(n), x(n), b(n), c(n), dy(n), h0(shape.rows());
      for (auto* v : {&a, &x, &b, &c, &dy, &h0}) {
        for (float& e : *v) e = static_cast<float>(rng.Uniform(-1.0, 1.0));
      }
      LinearScanBackwardOptions bo{
          .layout = layout, .has_b = true, .has_c = true, .has_h0 = true, .reverse = reverse};
      LinearScanBackwardProblem bp{.shape = shape,
                                   .a = a.data(),
                                   .x = x.data(),
                                   .dy = dy.data(),
                                   .b = b.data(),
                                   .c = c.data(),
                                   .h0 = h0.data()};
      const RefLinearScanBackward grad = ReferenceLinearScanBackward(bo, bp);

      // Differences in float64 need float64 inputs: perturb copies held as double by scaling
      // through a float-valued problem would lose the step, so evaluate the loss directly.
      auto loss = [&](std::vector<double>& av, std::vector<double>& xv, std::vector<double>& bv,
                      std::vector<double>& cv, std::vector<double>& h0v) {
        double total = 0;
        for (int64_t bi = 0; bi < shape.batch; ++bi) {
          for (int64_t d = 0; d < shape.dim; ++d) {
            double h = h0v[bi * shape.dim + d];
            for (int64_t k = 0; k < shape.length; ++k) {
              const int64_t t = reverse ? shape.length - 1 - k : k;
              const int64_t i = SeqOffset(shape, layout, bi, d, t);
              h = av[i] * h + bv[i] * xv[i];
              total += dy[i] * cv[i] * h;
            }
          }
        }
        return total;
      };
      std::vector<double> av(a.begin(), a.end()), xv(x.begin(), x.end()), bv(b.begin(), b.end()),
          cv(c.begin(), c.end()), h0v(h0.begin(), h0.end());
      auto check = [&](std::vector<double>& param, const std::vector<double>& analytic,
                       const char* name) {
        SCOPED_TRACE(name);
        for (size_t i = 0; i < param.size(); ++i) {
          const double keep = param[i];
          const double step = 1e-6;
          param[i] = keep + step;
          const double up = loss(av, xv, bv, cv, h0v);
          param[i] = keep - step;
          const double down = loss(av, xv, bv, cv, h0v);
          param[i] = keep;
          EXPECT_NEAR(analytic[i], (up - down) / (2 * step), 1e-7) << "element " << i;
        }
      };
      check(av, grad.da, "da");
      check(xv, grad.dx, "dx");
      check(bv, grad.db, "db");
      check(cv, grad.dc, "dc");
      check(h0v, grad.dh0, "dh0");
    }
  }
}

}  // namespace
}  // namespace scanserve::testing
