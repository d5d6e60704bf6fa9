// The CPU backend against the shared backend cases, plus what only the CPU backend promises:
// bit-exact chaining and results independent of the pool size.
#include "scanserve/cpu_backend.h"

#include <cstring>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "kernels/backend_cases.h"

namespace scanserve::testing {
namespace {

absl::StatusOr<std::unique_ptr<Backend>> MakeDefaultCpuBackend() { return MakeCpuBackend(0); }

SCANSERVE_BACKEND_CASES(CpuBackendCases, MakeDefaultCpuBackend());

TEST(CpuBackendTest, ChainedRequestsEqualOneRequestExactly) {
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  std::unique_ptr<Backend> backend = MakeCpuBackend(0);
  LinearScanChained(*backend, rng, /*bit_exact=*/true);
  SelectiveScanChained(*backend, rng, /*bit_exact=*/true);
}

// Snapshot of every output tensor of `data`.
template <typename Data>
std::vector<std::vector<unsigned char>> Outputs(Data& data) {
  std::vector<std::vector<unsigned char>> out;
  for (HostTensor* t : data.Outputs()) {
    const auto* p = static_cast<const unsigned char*>(t->data());
    out.emplace_back(p, p + t->bytes());
  }
  return out;
}

template <typename Data>
void ExpectSameOnEveryPoolSize(std::vector<Data>& requests) {
  std::vector<std::vector<std::vector<unsigned char>>> first;
  for (int threads : {1, 2, 3, 5}) {
    SCOPED_TRACE(threads);
    std::unique_ptr<Backend> backend = MakeCpuBackend(threads);
    std::vector<Data*> batch;
    for (Data& d : requests) {
      for (HostTensor* t : d.Outputs()) t->Poison();
      batch.push_back(&d);
    }
    ASSERT_TRUE(RunBatch(*backend, batch).ok());
    for (size_t k = 0; k < requests.size(); ++k) {
      if (threads == 1) {
        first.push_back(Outputs(requests[k]));
      } else {
        EXPECT_TRUE(Outputs(requests[k]) == first[k]) << "request " << k;
      }
    }
  }
}

TEST(CpuBackendTest, ResultsDoNotDependOnPoolSize) {
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  for (Layout layout : {Layout::kBDL, Layout::kBLD}) {
    std::vector<LinearScanData> linear;
    std::vector<LinearScanBackwardData> backward;
    std::vector<SelectiveScanData> selective;
    std::vector<AssociativeScanData> associative;
    for (int k = 0; k < 4; ++k) {
      linear.push_back(MakeLinearScanData(
          {.layout = layout, .has_b = true, .has_c = true, .return_final_state = true},
          RandomShape(rng, 3, 150, 2000), rng));
      backward.push_back(MakeLinearScanBackwardData(
          {.dtype = DType::kBFloat16, .layout = layout, .has_c = true, .reverse = true},
          RandomShape(rng, 3, 150, 2000), rng));
      selective.push_back(MakeSelectiveScanData({.layout = layout,
                                                 .state_dim = 16,
                                                 .groups = 2,
                                                 .has_z = true,
                                                 .delta_softplus = true,
                                                 .return_last_state = true},
                                                RandomShape(rng, 2, 40, 300, 2), rng));
      associative.push_back(MakeAssociativeScanData({.layout = layout, .op = ScanOperator::kAdd},
                                                    RandomShape(rng, 3, 150, 2000), rng));
    }
    ExpectSameOnEveryPoolSize(linear);
    ExpectSameOnEveryPoolSize(backward);
    ExpectSameOnEveryPoolSize(selective);
    ExpectSameOnEveryPoolSize(associative);
  }
}

TEST(CpuBackendTest, DescribesItself) {
  std::unique_ptr<Backend> backend = MakeCpuBackend(3);
  EXPECT_EQ(backend->Name(), "cpu");
  EXPECT_GE(backend->MaxConcurrentBatches(), 1);
  const std::vector<DeviceStatus> devices = backend->Devices();
  ASSERT_EQ(devices.size(), 1u);
  EXPECT_EQ(devices[0].batches_executed, 0);
  EXPECT_GT(devices[0].memory_total_bytes, 0);
  Rng rng;
  AssociativeScanData d = MakeAssociativeScanData({}, {1, 1, 4}, rng);
  ASSERT_TRUE(RunBatch(*backend, {&d}).ok());
  EXPECT_EQ(backend->Devices()[0].batches_executed, 1);
}

}  // namespace
}  // namespace scanserve::testing
