// The CUDA backend against the shared backend cases (float64 references, batch invariance,
// concurrency) and against the CPU backend on the same random requests. Every case skips with the
// reason printed when no GPU is usable.
#include "scanserve/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "kernels/backend_cases.h"
#include "scanserve/cpu_backend.h"

namespace scanserve::testing {
namespace {

absl::StatusOr<std::unique_ptr<Backend>> MakeTestCudaBackend(int64_t pool_bytes = int64_t{256}
                                                                                  << 20) {
  BackendConfig config;
  config.kind = "cuda";
  config.cuda_streams_per_device = 2;
  // 256 MiB holds the largest shared case, one float32 row of 2^24 steps (a, x and y).
  config.cuda_pool_bytes_per_stream = pool_bytes;
  return MakeCudaBackend(config);
}

SCANSERVE_BACKEND_CASES(CudaBackendCases, MakeTestCudaBackend());

// Largest |cuda - cpu| over |cpu| + 1 across two snapshots of the same outputs.
double MaxRelativeGap(const HostTensor& cuda, const HostTensor& cpu) {
  double gap = 0;
  for (int64_t i = 0; i < cpu.count(); ++i) {
    const double want = cpu.Get(i);
    const double got = cuda.Get(i);
    if (std::isnan(want) && std::isnan(got)) continue;
    gap = std::max(gap, std::abs(got - want) / (std::abs(want) + 1.0));
  }
  return gap;
}

class CudaAgreesWithCpu : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Backend>> made = MakeTestCudaBackend();
    if (!made.ok()) GTEST_SKIP() << "backend unavailable: " << made.status().ToString();
    cuda_ = std::move(made).value();
    cpu_ = MakeCpuBackend(0);
  }

  // Runs `requests` on both backends (outputs poisoned before each) and compares every output.
  template <typename Data>
  void Compare(std::vector<Data>& requests, double tolerance) {
    std::vector<Data*> batch;
    for (Data& d : requests) batch.push_back(&d);
    for (Data& d : requests) {
      for (HostTensor* t : d.Outputs()) t->Poison();
    }
    ASSERT_TRUE(RunBatch(*cpu_, batch).ok());
    std::vector<std::vector<HostTensor>> cpu_out;
    for (Data& d : requests) {
      std::vector<HostTensor> copies;
      for (HostTensor* t : d.Outputs()) {
        HostTensor copy(t->dtype(), t->count());
        std::memcpy(copy.data(), t->data(), t->bytes());
        copies.push_back(std::move(copy));
        t->Poison();
      }
      cpu_out.push_back(std::move(copies));
    }
    absl::Status status = RunBatch(*cuda_, batch);
    ASSERT_TRUE(status.ok()) << status;
    for (size_t k = 0; k < requests.size(); ++k) {
      std::vector<HostTensor*> outs = requests[k].Outputs();
      for (size_t t = 0; t < outs.size(); ++t) {
        EXPECT_LE(MaxRelativeGap(*outs[t], cpu_out[k][t]), tolerance)
            << "request " << k << " output " << t;
      }
    }
  }

  Rng rng_;
  std::unique_ptr<Backend> cuda_;
  std::unique_ptr<Backend> cpu_;
};

TEST_F(CudaAgreesWithCpu, EveryOpEveryDtype) {
  SCANSERVE_TRACE_SEED(rng_);
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    SCOPED_TRACE(std::string(DTypeName(dtype)));
    // Outputs of 16-bit requests may differ by one rounding step of the storage type.
    const double tol = dtype == DType::kFloat32 ? 1e-4 : (dtype == DType::kFloat16 ? 4e-3 : 2e-2);
    std::vector<LinearScanData> linear;
    std::vector<LinearScanBackwardData> backward;
    std::vector<SelectiveScanData> selective;
    std::vector<AssociativeScanData> associative;
    for (int k = 0; k < 6; ++k) {
      const Layout layout = k % 2 == 0 ? Layout::kBDL : Layout::kBLD;
      linear.push_back(MakeLinearScanData({.dtype = dtype,
                                           .layout = layout,
                                           .has_b = true,
                                           .has_c = true,
                                           .has_h0 = true,
                                           .return_final_state = true},
                                          RandomShape(rng_, 3, 40, 3000), rng_));
      backward.push_back(MakeLinearScanBackwardData(
          {.dtype = dtype, .layout = layout, .has_b = true, .reverse = k % 3 == 0},
          RandomShape(rng_, 3, 40, 3000), rng_));
      selective.push_back(MakeSelectiveScanData({.dtype = dtype,
                                                 .layout = layout,
                                                 .state_dim = 16,
                                                 .groups = 2,
                                                 .has_d_skip = true,
                                                 .has_z = true,
                                                 .has_delta_bias = true,
                                                 .delta_softplus = true,
                                                 .has_h0 = true,
                                                 .return_last_state = true},
                                                RandomShape(rng_, 2, 16, 700), rng_));
      associative.push_back(MakeAssociativeScanData(
          {.dtype = dtype, .layout = layout, .op = ScanOperator::kLogAddExp, .exclusive = k == 1},
          RandomShape(rng_, 3, 40, 3000), rng_));
    }
    Compare(linear, tol);
    Compare(backward, tol);
    Compare(selective, tol);
    Compare(associative, tol);
  }
}

// A batch whose requests together outgrow the pools runs in several pieces, each request with the
// same bits as alone; one request larger than a pool answers RESOURCE_EXHAUSTED and the backend
// keeps serving.
class CudaBackendPools : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Backend>> made = MakeTestCudaBackend(int64_t{1} << 20);
    if (!made.ok()) GTEST_SKIP() << "backend unavailable: " << made.status().ToString();
    backend_ = std::move(made).value();
  }
  Rng rng_;
  std::unique_ptr<Backend> backend_;
};

TEST_F(CudaBackendPools, BatchLargerThanPoolsRunsInPiecesWithTheBitsOfEachAlone) {
  SCANSERVE_TRACE_SEED(rng_);
  const LinearScanOptions o{
      .has_b = true, .has_h0 = true, .reverse = rng_.Bool(), .return_final_state = true};
  // Each request moves about 4 * 12 * 3000 * 4 bytes = 576 KB: at most one fits a 1 MiB pool.
  std::vector<LinearScanData> batch;
  for (int k = 0; k < 7; ++k) {
    batch.push_back(MakeLinearScanData(o, SeqShape{1, 12, rng_.Int(2000, 3000)}, rng_));
  }
  std::vector<LinearScanData*> ptrs;
  for (LinearScanData& d : batch) {
    for (HostTensor* t : d.Outputs()) t->Poison();
    ptrs.push_back(&d);
  }
  absl::Status status = RunBatch(*backend_, ptrs);
  ASSERT_TRUE(status.ok()) << status;
  ExpectMatchesReference(batch);
  for (LinearScanData& d : batch) {
    std::vector<HostTensor> batched;
    for (HostTensor* t : d.Outputs()) {
      HostTensor copy(t->dtype(), t->count());
      std::memcpy(copy.data(), t->data(), t->bytes());
      batched.push_back(std::move(copy));
      t->Poison();
    }
    status = RunBatch(*backend_, {&d});
    ASSERT_TRUE(status.ok()) << status;
    const std::vector<HostTensor*> alone = d.Outputs();
    for (size_t t = 0; t < alone.size(); ++t) {
      EXPECT_EQ(std::memcmp(alone[t]->data(), batched[t].data(), batched[t].bytes()), 0)
          << "output " << t << " differs between the batch and the request alone";
    }
  }
}

TEST_F(CudaBackendPools, RequestLargerThanPoolIsResourceExhaustedAndServingGoesOn) {
  SCANSERVE_TRACE_SEED(rng_);
  const LinearScanOptions o{};
  // a, x and y of 2^18 float32 steps: 3 MiB against 1 MiB pools.
  LinearScanData huge = MakeLinearScanData(o, SeqShape{1, 1, int64_t{1} << 18}, rng_);
  const absl::Status status = RunBatch(*backend_, {&huge});
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_FALSE(backend_->Broken());

  LinearScanData small = MakeLinearScanData(o, SeqShape{2, 3, 777}, rng_);
  for (HostTensor* t : small.Outputs()) t->Poison();
  const absl::Status again = RunBatch(*backend_, {&small});
  ASSERT_TRUE(again.ok()) << again;
  ExpectMatchesReference(small);
}

}  // namespace
}  // namespace scanserve::testing
