// The CUDA backend against the shared backend cases (float64 references, batch invariance,
// concurrency) and against the CPU backend on the same random requests. Every case skips with the
// reason printed when no GPU is usable.
#include "scanserve/cuda_backend.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cuda/row_scan_plan.h"
#include "cuda/scan_kernels.h"
#include "gtest/gtest.h"
#include "kernels/backend_cases.h"
#include "scanserve/cpu_backend.h"

namespace scanserve::testing {
namespace {

// A backend that cannot be made skips the test only when there is no GPU; with one, that is a
// failure (an earlier sticky error in this process, say), never a silent skip.
absl::StatusOr<std::unique_ptr<Backend>> MakeTestCudaBackend(int64_t pool_bytes = int64_t{256}
                                                                                  << 20) {
  BackendConfig config;
  config.kind = "cuda";
  config.cuda_streams_per_device = 2;
  // 256 MiB holds the largest shared case, one float32 row of 2^24 steps (a, x and y).
  config.cuda_pool_bytes_per_stream = pool_bytes;
  absl::StatusOr<std::unique_ptr<Backend>> made = MakeCudaBackend(config);
  if (!made.ok() && CudaDeviceCount() > 0) {
    ADD_FAILURE() << "a GPU is visible but the CUDA backend failed: " << made.status();
  }
  return made;
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

// Copies of a request's outputs, poisoning the originals for the next run.
template <typename Data>
std::vector<HostTensor> TakeOutputs(Data& d) {
  std::vector<HostTensor> copies;
  for (HostTensor* t : d.Outputs()) {
    HostTensor copy(t->dtype(), t->count());
    std::memcpy(copy.data(), t->data(), t->bytes());
    copies.push_back(std::move(copy));
    t->Poison();
  }
  return copies;
}

// Runs each request alone on `backend` and expects the bits `batched[k]` it gave in a batch.
template <typename Data>
void ExpectSameBitsAlone(Backend& backend, std::vector<Data>& requests,
                         const std::vector<std::vector<HostTensor>>& batched) {
  for (size_t k = 0; k < requests.size(); ++k) {
    const absl::Status status = RunBatch(backend, {&requests[k]});
    ASSERT_TRUE(status.ok()) << status;
    const std::vector<HostTensor*> alone = requests[k].Outputs();
    for (size_t t = 0; t < alone.size(); ++t) {
      EXPECT_EQ(std::memcmp(alone[t]->data(), batched[k][t].data(), batched[k][t].bytes()), 0)
          << "request " << k << " output " << t
          << " differs between the batch and the request alone";
    }
  }
}

// One linear_scan launch of the kernel layer on device tensors `r`: sizes, descriptors and temp
// storage as a backend makes them, then a synchronous wait. Empty on success, else what failed.
std::string LaunchLinearScanAlone(const LinearScanOptions& o, const cuda::LinearScanRows& r) {
  const std::span<const cuda::LinearScanRows> span(&r, 1);
  const cuda::LaunchSizes sizes = cuda::LinearScanSizes(o, span);
  std::vector<char> host_desc(sizes.descriptor_bytes);
  void* desc = nullptr;
  void* temp = nullptr;
  std::string error;
  if (cudaMalloc(&desc, sizes.descriptor_bytes + 16) != cudaSuccess ||
      (sizes.temp_bytes > 0 && cudaMalloc(&temp, sizes.temp_bytes) != cudaSuccess)) {
    error = "cudaMalloc of descriptors or temp storage";
  } else {
    cuda::LinearScanDescribe(o, span, temp, host_desc.data());
    if (cudaMemcpy(desc, host_desc.data(), sizes.descriptor_bytes, cudaMemcpyHostToDevice) !=
        cudaSuccess) {
      error = "cudaMemcpy of descriptors";
    } else if (const int launch = cuda::LinearScanLaunch(o, span, desc, temp, nullptr);
               launch != 0) {
      error =
          "LinearScanLaunch: " + std::string(cudaGetErrorString(static_cast<cudaError_t>(launch)));
    } else if (const cudaError_t sync = cudaDeviceSynchronize(); sync != cudaSuccess) {
      error = "cudaDeviceSynchronize: " + std::string(cudaGetErrorString(sync));
    }
  }
  cudaFree(desc);
  if (temp != nullptr) cudaFree(temp);
  return error;
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
    const absl::Status cpu_status = RunBatch(*cpu_, batch);
    ASSERT_TRUE(cpu_status.ok()) << cpu_status;
    std::vector<std::vector<HostTensor>> cpu_out;
    for (Data& d : requests) cpu_out.push_back(TakeOutputs(d));
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

// Each request alone on both backends; a mismatch names the first differing (row, step) and how
// the mismatches fall on the threads' 16-step runs, which tells a scan bug from an I/O bug.
TEST_F(CudaAgreesWithCpu, LinearScanAloneWhereMismatchesFall) {
  SCANSERVE_TRACE_SEED(rng_);
  // 12288 and 20001 steps: rows one block walks over several tiles (aligned, and not); 16 and
  // 128 steps: several rows per warp, each filling its threads.
  const SeqShape shapes[] = {{1, 1, 1},     {2, 13, 33},   {1, 67, 5},  {1, 12, 2501}, {2, 7, 200},
                             {1, 3, 12288}, {1, 2, 20001}, {2, 9, 128}, {1, 40, 16}};
  for (int variant = 0; variant < 5; ++variant) {
    const LinearScanOptions o{.has_b = variant == 1 || variant >= 3,
                              .has_h0 = variant >= 2,
                              .reverse = variant == 4,
                              .return_final_state = variant >= 2};
    for (const SeqShape& shape : shapes) {
      LinearScanData d = MakeLinearScanData(o, shape, rng_);
      d.y.Poison();
      ASSERT_TRUE(RunBatch(*cpu_, {&d}).ok());
      HostTensor want(d.y.dtype(), d.y.count());
      std::memcpy(want.data(), d.y.data(), d.y.bytes());
      d.y.Poison();
      const absl::Status status = RunBatch(*cuda_, {&d});
      ASSERT_TRUE(status.ok()) << status;
      int64_t bad = 0;
      int64_t first = -1;
      int by_item[16] = {};
      for (int64_t i = 0; i < want.count(); ++i) {
        const double w = want.Get(i);
        const double g = d.y.Get(i);
        if (!(std::abs(g - w) <= 1e-4 * (std::abs(w) + 1.0))) {
          if (first < 0) first = i;
          ++bad;
          ++by_item[(i % shape.length) % 16];
        }
      }
      std::string hist;
      for (int k = 0; k < 16; ++k) hist += std::to_string(by_item[k]) + " ";
      EXPECT_EQ(bad, 0) << "b" << o.has_b << " h0" << o.has_h0 << " reverse" << o.reverse
                        << " shape (" << shape.batch << "," << shape.dim << "," << shape.length
                        << "): " << bad << " of " << want.count() << " differ; first at row "
                        << first / shape.length << " step " << first % shape.length << " got "
                        << d.y.Get(first) << " want " << want.Get(first)
                        << "; by step % 16: " << hist;
    }
  }
}

// How the backend stages sequence tensors (host-side arithmetic only; runs without a GPU): rows off
// 16-byte boundaries get a 16-byte pitch (rows of 64 KiB and more: whole 128-byte lines), padded
// after the row (which the kernels may then write into), or before it when the kernel scans right
// to left and the row has more than one segment; short rows, strided rows and 8-byte types stay
// packed.
TEST(CudaStagedLayout, PadsUnalignedRowsLongerThanOneSegment) {
  struct Want {
    SeqShape shape;
    Layout layout;
    size_t bytes;
    bool right_to_left;
    int64_t pitch;
    int64_t lead;
  };
  const Want wants[] = {
      {{2, 3, 8191}, Layout::kBDL, 4, false, 8192, 0},
      {{2, 3, 8191}, Layout::kBDL, 4, true, 8192, 1},
      {{1, 2, 8193}, Layout::kBDL, 2, false, 8200, 0},
      {{1, 2, 8193}, Layout::kBDL, 2, true, 8200, 7},
      {{1, 2, 8188}, Layout::kBDL, 4, true, 8188, 0},  // 16-byte rows already
      {{1, 2, 8188}, Layout::kBDL, 2, false, 8192, 0},
      {{1, 2, 513}, Layout::kBDL, 4, false, 516, 0},
      {{4, 5, 511}, Layout::kBDL, 4, false, 512, 0},
      {{4, 5, 511}, Layout::kBDL, 4, true, 511, 0},  // one segment, right to left: no gain
      {{4, 5, 65}, Layout::kBDL, 2, false, 72, 0},
      {{4, 5, 63}, Layout::kBDL, 2, false, 63, 0},      // short rows: padding would cost copies
      {{2, 3, 8191}, Layout::kBLD, 4, false, 8191, 0},  // strided rows
      {{2, 3, 8191}, Layout::kBDL, 8, false, 8191, 0},  // 8-byte types move as scalars
      // Rows of 64 KiB and more: whole 128-byte lines.
      {{1, 2, 16383}, Layout::kBDL, 4, false, 16384, 0},  // 4 bytes short of 64 KiB
      {{1, 2, 16385}, Layout::kBDL, 4, false, 16416, 0},
      {{1, 2, 65537}, Layout::kBDL, 2, false, 65600, 0},
      {{1, 2, 65537}, Layout::kBDL, 2, true, 65600, 63},
      {{1, 2, 65544}, Layout::kBDL, 2, false, 65600, 0},  // 16-byte rows, not whole lines
      {{1, 2, 65536}, Layout::kBDL, 2, false, 65536, 0},
  };
  for (const Want& w : wants) {
    SCOPED_TRACE(::testing::Message()
                 << "(" << w.shape.batch << "," << w.shape.dim << "," << w.shape.length << ") "
                 << w.bytes << "-byte elements" << (w.layout == Layout::kBDL ? " bdl" : " bld")
                 << (w.right_to_left ? " right to left" : ""));
    const cuda::StagedLayout l = cuda::StagedLayoutOf(w.shape, w.layout, w.bytes, w.right_to_left);
    EXPECT_EQ(l.pitch, w.pitch);
    EXPECT_EQ(l.lead, w.lead);
    EXPECT_EQ(l.pitch * static_cast<int64_t>(w.bytes) % 16 == 0 || l.pitch == w.shape.length, true);
    if (w.shape.length * static_cast<int64_t>(w.bytes) >= cuda::kRowScanLinePitchBytes) {
      EXPECT_EQ(l.pitch * static_cast<int64_t>(w.bytes) % 128, 0);
    }
    const cuda::RowGeometry g = cuda::StagedGeometryOf(w.shape, w.layout, l);
    const cuda::RowGeometry packed = cuda::RowGeometryOf(w.shape, w.layout);
    EXPECT_EQ(g.rows, packed.rows);
    EXPECT_EQ(g.length, packed.length);
    EXPECT_EQ(g.step_stride, packed.step_stride);
    EXPECT_EQ(g.padded, l.pitch > w.shape.length && l.lead == 0);
    if (w.layout == Layout::kBDL) {
      EXPECT_EQ(g.row_stride, w.pitch);
      EXPECT_EQ(g.batch_stride, w.shape.dim * w.pitch);
    } else {
      EXPECT_EQ(g.row_stride, packed.row_stride);
      EXPECT_EQ(g.batch_stride, packed.batch_stride);
    }
  }
}

// How rows are planned (host-side only; runs without a GPU): the unit for a row's length, a narrow
// unit and a one-thread tail for rows a few steps past a tile, walks for rows of up to 16 tiles or
// of requests of 256 rows, look-back for the rest, and the launch flags that pick kernel variants.
TEST(CudaRowScanPlan, UnitsTailsWalksAndLookBack) {
  struct Want {
    SeqShape shape;
    int short_tail;
    int32_t unit;
    int64_t tiles;
    bool walk;
    bool tile_and_tail;
    int64_t blocks;
    int64_t slots;
  };
  const Want wants[] = {
      {{1, 1, 128}, 4, 8, 1, false, false, 1, 0},
      {{1, 1, 129}, 4, 8, 2, true, true, 1, 0},     // 8 threads and a one-step tail
      {{1, 1, 129}, 0, 16, 1, false, false, 1, 0},  // ops without a tail keep the wider unit
      {{8, 1536, 129}, 4, 8, 2, true, true, 384, 0},
      {{1, 1, 132}, 4, 8, 2, true, true, 1, 0},
      {{1, 1, 133}, 4, 16, 1, false, false, 1, 0},  // five steps past: the wider unit
      {{1, 1, 513}, 4, 32, 2, true, false, 1, 0},   // a warp's unit and a tail walk
      {{1, 1, 4097}, 4, 256, 2, true, false, 1, 0},
      {{1, 1, 65536}, 4, 256, 16, true, false, 1, 0},
      {{1, 1, 65537}, 4, 256, 17, false, false, 17, 17},
      {{1, 256, 65537}, 4, 256, 17, true, false, 256, 0},
  };
  for (const Want& w : wants) {
    SCOPED_TRACE(::testing::Message() << "(" << w.shape.batch << "," << w.shape.dim << ","
                                      << w.shape.length << ") short tail " << w.short_tail);
    const cuda::plan::GroupPlan p =
        cuda::plan::PlanGroup(cuda::RowGeometryOf(w.shape, Layout::kBDL), w.short_tail);
    EXPECT_EQ(p.unit_threads, w.unit);
    EXPECT_EQ(p.units_per_block, 256 / w.unit);
    EXPECT_EQ(p.tiles_per_row, w.tiles);
    EXPECT_EQ(p.walk, w.walk);
    EXPECT_EQ(p.tile_and_tail, w.tile_and_tail);
    EXPECT_EQ(p.blocks, w.blocks);
    EXPECT_EQ(p.slots, w.slots);
  }

  const auto batch = [](std::vector<SeqShape> shapes) {
    std::vector<cuda::LinearScanRows> rows(shapes.size());
    for (size_t i = 0; i < shapes.size(); ++i) {
      rows[i].geometry = cuda::RowGeometryOf(shapes[i], Layout::kBDL);
    }
    return cuda::plan::PlanBatch(
        std::span<const cuda::LinearScanRows>(rows), nullptr,
        [](cuda::plan::GroupDesc&, const cuda::LinearScanRows&) {},
        [](const cuda::LinearScanRows&) { return true; }, 4);
  };
  const cuda::plan::BatchPlan tails = batch({{1, 3, 128}, {2, 5, 129}});
  EXPECT_TRUE(tails.single_tile);
  EXPECT_TRUE(tails.tail);
  const cuda::plan::BatchPlan walks = batch({{1, 3, 129}, {1, 3, 513}});
  EXPECT_FALSE(walks.single_tile);
  EXPECT_TRUE(walks.tail);
  const cuda::plan::BatchPlan plain = batch({{1, 3, 127}, {1, 1, 512}});
  EXPECT_TRUE(plain.single_tile);
  EXPECT_FALSE(plain.tail);

  // One 16-byte word per look-back slot after the 256-byte ticket counter, in 256-byte blocks.
  const cuda::plan::LookbackLayout l = cuda::plan::LookbackLayoutFor(17);
  EXPECT_EQ(l.words_offset, 256u);
  EXPECT_EQ(l.total_bytes, 256u + 512u);
  EXPECT_EQ(l.zero_bytes, l.total_bytes);
  EXPECT_EQ(cuda::plan::LookbackLayoutFor(0).total_bytes, 0u);
}

// The kernels alone, on device buffers of their own (no backend, no staging): forward linear
// scans with and without h0 against a float64 recurrence, every output checked.
TEST(CudaLinearScanKernel, MatchesRecurrenceOnDeviceBuffers) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no usable CUDA device";
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  const SeqShape shapes[] = {{1, 1, 1},     {2, 7, 200},   {1, 67, 5},
                             {1, 12, 2501}, {2, 3, 12288}, {4, 9, 64}};
  for (bool has_h0 : {false, true}) {
    for (const SeqShape& shape : shapes) {
      const int64_t n = shape.elements();
      const int64_t rows = shape.rows();
      std::vector<float> a(n), x(n), h0(rows), y(n, NAN), fin(rows, NAN);
      for (float& v : a) v = static_cast<float>(rng.Uniform(0.5, 1.0));
      for (float& v : x) v = static_cast<float>(rng.Uniform(-1.0, 1.0));
      for (float& v : h0) v = static_cast<float>(rng.Uniform(-1.0, 1.0));
      float* d = nullptr;
      const size_t seq = (static_cast<size_t>(n) * 4 + 255) / 256 * 256;
      const size_t row = (static_cast<size_t>(rows) * 4 + 255) / 256 * 256;
      ASSERT_EQ(cudaMalloc(&d, 3 * seq + 2 * row), cudaSuccess);
      char* base = reinterpret_cast<char*>(d);
      float* da = reinterpret_cast<float*>(base);
      float* dx = reinterpret_cast<float*>(base + seq);
      float* dy = reinterpret_cast<float*>(base + 2 * seq);
      float* dh0 = reinterpret_cast<float*>(base + 3 * seq);
      float* dfin = reinterpret_cast<float*>(base + 3 * seq + row);
      ASSERT_EQ(cudaMemcpy(da, a.data(), n * 4, cudaMemcpyHostToDevice), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(dx, x.data(), n * 4, cudaMemcpyHostToDevice), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(dh0, h0.data(), rows * 4, cudaMemcpyHostToDevice), cudaSuccess);
      ASSERT_EQ(cudaMemset(dy, 0xff, seq), cudaSuccess);
      ASSERT_EQ(cudaMemset(dfin, 0xff, row), cudaSuccess);
      const LinearScanOptions o{.has_h0 = has_h0, .return_final_state = true};
      cuda::LinearScanRows r;
      r.geometry = cuda::RowGeometryOf(shape, Layout::kBDL);
      r.a = da;
      r.x = dx;
      r.h0 = has_h0 ? dh0 : nullptr;
      r.y = dy;
      r.final_state = dfin;
      ASSERT_EQ(LaunchLinearScanAlone(o, r), "");
      ASSERT_EQ(cudaMemcpy(y.data(), dy, n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(fin.data(), dfin, rows * 4, cudaMemcpyDeviceToHost), cudaSuccess);
      cudaFree(d);
      int64_t bad = 0;
      std::string first;
      for (int64_t rr = 0; rr < rows; ++rr) {
        double h = has_h0 ? h0[rr] : 0.0;
        for (int64_t t = 0; t < shape.length; ++t) {
          const int64_t i = rr * shape.length + t;
          h = static_cast<double>(a[i]) * h + x[i];
          if (!(std::abs(y[i] - h) <= 1e-5 * (std::abs(h) + 1.0))) {
            if (bad++ == 0) {
              first = "row " + std::to_string(rr) + " step " + std::to_string(t) + " got " +
                      std::to_string(y[i]) + " want " + std::to_string(h);
            }
          }
        }
        EXPECT_NEAR(fin[rr], h, 1e-5 * (std::abs(h) + 1.0)) << "final state of row " << rr;
      }
      EXPECT_EQ(bad, 0) << "h0 " << has_h0 << " shape (" << shape.batch << "," << shape.dim << ","
                        << shape.length << "): first " << first;
    }
  }
}

// Rows whose length is not a multiple of a 16-byte unit start at every alignment and end in
// partial segments, so their warps move unaligned windows: aligned units inside, single elements
// at the edges. Each op, dtype, layout and direction against the CPU backend and float64; 65537
// steps run on the look-back, 20003 on a walk, the rest on one unit per row.
TEST_F(CudaAgreesWithCpu, OddLengthRowsEveryPath) {
  SCANSERVE_TRACE_SEED(rng_);
  const SeqShape shapes[] = {{1, 3, 8191}, {2, 3, 4097}, {1, 5, 511},   {2, 3, 513},   {3, 5, 127},
                             {1, 7, 129},  {1, 3, 1027}, {1, 2, 20003}, {1, 1, 65537}, {2, 9, 33}};
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    SCOPED_TRACE(std::string(DTypeName(dtype)));
    const double tol = dtype == DType::kFloat32 ? 1e-4 : (dtype == DType::kFloat16 ? 4e-3 : 2e-2);
    for (const Layout layout : {Layout::kBDL, Layout::kBLD}) {
      for (const bool reverse : {false, true}) {
        SCOPED_TRACE(std::string(layout == Layout::kBDL ? "bdl" : "bld") +
                     (reverse ? " reverse" : " forward"));
        std::vector<LinearScanData> linear;
        std::vector<LinearScanBackwardData> backward;
        std::vector<AssociativeScanData> associative;
        std::vector<AssociativeScanData> integers;
        for (const SeqShape& shape : shapes) {
          linear.push_back(MakeLinearScanData({.dtype = dtype,
                                               .layout = layout,
                                               .has_b = true,
                                               .has_c = true,
                                               .has_h0 = true,
                                               .reverse = reverse,
                                               .return_final_state = true},
                                              shape, rng_));
          backward.push_back(MakeLinearScanBackwardData(
              {.dtype = dtype, .layout = layout, .has_b = true, .reverse = reverse}, shape, rng_));
          associative.push_back(MakeAssociativeScanData(
              {.dtype = dtype, .layout = layout, .op = ScanOperator::kAdd, .reverse = reverse},
              shape, rng_));
          if (dtype == DType::kFloat32) {
            integers.push_back(MakeAssociativeScanData({.dtype = DType::kInt32,
                                                        .layout = layout,
                                                        .op = ScanOperator::kAdd,
                                                        .reverse = reverse},
                                                       shape, rng_));
          }
        }
        Compare(linear, tol);
        ExpectMatchesReference(linear);
        {
          // In this batch every row walks; alone, rows of one tile, or of one narrow tile and a
          // short tail (129), run the single-tile kernel: the same bits.
          std::vector<std::vector<HostTensor>> batched;
          for (LinearScanData& d : linear) batched.push_back(TakeOutputs(d));
          ExpectSameBitsAlone(*cuda_, linear, batched);
        }
        Compare(backward, tol);
        ExpectMatchesReference(backward);
        Compare(associative, tol);
        ExpectMatchesReference(associative);
        if (!integers.empty()) {
          Compare(integers, 0.0);
          ExpectMatchesReference(integers);
        }
      }
    }
  }
}

// Walked 16-bit rows that are contiguous, aligned and read only a and x run through shared memory
// (LinearScanStagedWalkKernel) when every walked row of the launch suits it; a batch that also
// holds a short request walks them in registers. Both give the same bits, h0 and final states
// included, and agree with the CPU backend and float64.
TEST_F(CudaAgreesWithCpu, SixteenBitWalksGiveTheSameBitsThroughSharedMemoryAndRegisters) {
  SCANSERVE_TRACE_SEED(rng_);
  // Two tiles; five tiles less one step; three tiles and a one-step tail; 13 tiles and a tail of
  // four steps (the longest that runs on one thread).
  const SeqShape shapes[] = {{1, 3, 8192}, {2, 2, 20479}, {1, 2, 12289}, {1, 1, 13 * 4096 + 4}};
  for (const DType dtype : {DType::kFloat16, DType::kBFloat16}) {
    SCOPED_TRACE(std::string(DTypeName(dtype)));
    const double tol = dtype == DType::kFloat16 ? 4e-3 : 2e-2;
    std::vector<LinearScanData> linear;
    for (const SeqShape& shape : shapes) {
      linear.push_back(MakeLinearScanData(
          {.dtype = dtype, .has_h0 = true, .return_final_state = true}, shape, rng_));
    }
    linear.push_back(MakeLinearScanData(
        {.dtype = dtype, .has_h0 = true, .return_final_state = true}, {1, 4, 1000}, rng_));
    Compare(linear, tol);
    ExpectMatchesReference(linear);
    std::vector<std::vector<HostTensor>> batched;
    for (LinearScanData& d : linear) batched.push_back(TakeOutputs(d));
    ExpectSameBitsAlone(*cuda_, linear, batched);
  }
}

// A request of many long rows walks them (one block per row fills the GPU); a lone row of the same
// length chains its tiles through the look-back. The path is chosen from the request's own shape,
// so each keeps its bits in a batch with the other; both agree with the CPU backend and float64.
TEST_F(CudaAgreesWithCpu, WideRequestsWalkLongRowsLoneRowsLookBackEachWithItsOwnBits) {
  SCANSERVE_TRACE_SEED(rng_);
  // 17 tiles and 3 steps: past the walk limit of lone rows. Pools of 1 GiB hold the backward
  // pass of 256 such float32 rows (seven tensors plus the recomputed states).
  absl::StatusOr<std::unique_ptr<Backend>> big = MakeTestCudaBackend(int64_t{1} << 30);
  ASSERT_TRUE(big.ok()) << big.status();
  cuda_ = std::move(big).value();
  const int64_t length = 17 * 4096 + 3;
  const bool reverse = rng_.Bool();
  SCOPED_TRACE(reverse ? "reverse" : "forward");
  const SeqShape shapes[] = {{1, 256, length}, {1, 1, length}};
  std::vector<LinearScanData> linear;
  std::vector<LinearScanBackwardData> backward;
  std::vector<AssociativeScanData> associative;
  for (const SeqShape& shape : shapes) {
    linear.push_back(MakeLinearScanData(
        {.has_b = true, .has_h0 = true, .reverse = reverse, .return_final_state = true}, shape,
        rng_));
    backward.push_back(MakeLinearScanBackwardData(
        {.has_b = true, .has_h0 = true, .reverse = reverse}, shape, rng_));
    associative.push_back(
        MakeAssociativeScanData({.op = ScanOperator::kAdd, .reverse = reverse}, shape, rng_));
  }
  auto same_bits_alone = [&](auto& requests) {
    std::vector<std::vector<HostTensor>> batched;
    for (auto& d : requests) batched.push_back(TakeOutputs(d));
    ExpectSameBitsAlone(*cuda_, requests, batched);
  };
  Compare(linear, 1e-4);
  ExpectMatchesReference(linear);
  same_bits_alone(linear);
  Compare(backward, 1e-4);
  ExpectMatchesReference(backward);
  same_bits_alone(backward);
  Compare(associative, 1e-4);
  ExpectMatchesReference(associative);
  same_bits_alone(associative);
}

// The bytes of y from a forward linear scan (no b, c or h0) of `a` and `x` (`es`-byte elements,
// dtype `dtype`) whose device copies start `offset` elements past a 256-byte boundary and end at
// the end of their allocations, so that a load past a tensor's end is a memcheck error. With
// `staged`, the rows lie as the backend stages them (cuda::StagedLayoutOf). y has guard elements
// on both sides; `guards_intact` says whether the launch left them, and any padding the geometry
// does not declare writable, alone.
struct OffsetRun {
  std::vector<unsigned char> y;
  bool guards_intact = false;
};
OffsetRun RunLinearAtOffset(DType dtype, size_t es, SeqShape shape, bool reverse, int offset,
                            const std::vector<unsigned char>& a,
                            const std::vector<unsigned char>& x, bool staged = false) {
  constexpr int kGuard = 64;
  constexpr unsigned char kSentinel = 0x7b;
  const cuda::StagedLayout layout = staged ? cuda::StagedLayoutOf(shape, Layout::kBDL, es, reverse)
                                           : cuda::StagedLayout{shape.length, 0};
  const cuda::RowGeometry geometry = cuda::StagedGeometryOf(shape, Layout::kBDL, layout);
  const size_t rows = static_cast<size_t>(shape.rows());
  const size_t row_bytes = static_cast<size_t>(shape.length) * es;
  const size_t pitch = static_cast<size_t>(layout.pitch) * es;
  const size_t row_lead = static_cast<size_t>(layout.lead) * es;
  const size_t bytes = rows * pitch;
  const size_t lead = static_cast<size_t>(offset) * es;
  OffsetRun run;
  void* da = nullptr;
  void* dx = nullptr;
  void* dy = nullptr;
  const size_t y_bytes = lead + bytes + 2 * kGuard * es;
  EXPECT_EQ(cudaMalloc(&da, lead + bytes), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&dx, lead + bytes), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&dy, y_bytes), cudaSuccess);
  char* pa = static_cast<char*>(da) + lead;
  char* px = static_cast<char*>(dx) + lead;
  char* py = static_cast<char*>(dy) + kGuard * es + lead;
  EXPECT_EQ(cudaMemcpy2D(pa + row_lead, pitch, a.data(), row_bytes, row_bytes, rows,
                         cudaMemcpyHostToDevice),
            cudaSuccess);
  EXPECT_EQ(cudaMemcpy2D(px + row_lead, pitch, x.data(), row_bytes, row_bytes, rows,
                         cudaMemcpyHostToDevice),
            cudaSuccess);
  EXPECT_EQ(cudaMemset(dy, kSentinel, y_bytes), cudaSuccess);
  const LinearScanOptions o{.dtype = dtype, .reverse = reverse};
  cuda::LinearScanRows r;
  r.geometry = geometry;
  r.a = pa + row_lead;
  r.x = px + row_lead;
  r.y = py + row_lead;
  EXPECT_EQ(LaunchLinearScanAlone(o, r), "");
  std::vector<unsigned char> all(y_bytes);
  EXPECT_EQ(cudaMemcpy(all.data(), dy, y_bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(da);
  cudaFree(dx);
  cudaFree(dy);
  const size_t y0 = kGuard * es + lead;
  const auto intact = [&](size_t from, size_t to) {
    return std::all_of(all.begin() + from, all.begin() + to,
                       [](unsigned char c) { return c == kSentinel; });
  };
  run.guards_intact = intact(0, y0) && intact(y0 + bytes, all.size());
  for (size_t row = 0; row < rows; ++row) {
    const size_t at = y0 + row * pitch;
    run.y.insert(run.y.end(), all.begin() + at + row_lead, all.begin() + at + row_lead + row_bytes);
    if (!geometry.padded && pitch > row_bytes) {
      run.guards_intact = run.guards_intact && (row_lead > 0 ? intact(at, at + row_lead)
                                                             : intact(at + row_bytes, at + pitch));
    }
  }
  return run;
}

// The same rows at every misalignment of their tensors, and padded as the backend stages them, give
// the same bits (whichever path loads and stores them), match a float64 recurrence, and write
// nothing outside y and its writable padding.
TEST(CudaLinearScanKernel, MisalignedTensorsGiveTheSameBitsAndWriteOnlyTheirRows) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no usable CUDA device";
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  // Walks (8191, 12289), single units (511, 127), one unit and a one-step tail (129, 513), an
  // aligned length, and look-back rows (more than 16 tiles). Look-back rows, and bfloat16 walks,
  // run through shared memory where every row is aligned (offset 0 of 73728 and 12289 steps, 69633
  // and 8191 staged) and in registers elsewhere; staged tails move as one vector into the padding.
  // Small enough for the sanitizers.
  const SeqShape shapes[] = {{1, 2, 8191}, {1, 1, 12289}, {2, 3, 511},   {1, 9, 127},  {2, 5, 129},
                             {1, 3, 513},  {1, 1, 4096},  {1, 1, 73728}, {1, 2, 69633}};
  for (const DType dtype : {DType::kFloat32, DType::kBFloat16}) {
    const size_t es = dtype == DType::kFloat32 ? 4 : 2;
    const int units = static_cast<int>(16 / es);
    const double tol = dtype == DType::kFloat32 ? 1e-5 : 2e-2;
    // float32 values, and bfloat16 as the top half of float32 (truncation keeps it exact).
    const auto encode = [&](float v, unsigned char* out) {
      uint32_t bits;
      std::memcpy(&bits, &v, 4);
      if (es == 2) {
        const uint16_t top = static_cast<uint16_t>(bits >> 16);
        std::memcpy(out, &top, 2);
      } else {
        std::memcpy(out, &bits, 4);
      }
    };
    const auto decode = [&](const unsigned char* in) {
      uint32_t bits = 0;
      if (es == 2) {
        uint16_t top;
        std::memcpy(&top, in, 2);
        bits = uint32_t{top} << 16;
      } else {
        std::memcpy(&bits, in, 4);
      }
      float v;
      std::memcpy(&v, &bits, 4);
      return static_cast<double>(v);
    };
    for (const bool reverse : {false, true}) {
      for (const SeqShape& shape : shapes) {
        const int64_t n = shape.elements();
        std::vector<unsigned char> a(n * es), x(n * es);
        for (int64_t i = 0; i < n; ++i) {
          encode(static_cast<float>(rng.Uniform(0.5, 1.0)), a.data() + i * es);
          encode(static_cast<float>(rng.Uniform(-1.0, 1.0)), x.data() + i * es);
        }
        std::vector<unsigned char> first;
        // Offsets 0 .. units - 1, then (offset == units) the rows as the backend stages them.
        const cuda::StagedLayout staged_layout =
            cuda::StagedLayoutOf(shape, Layout::kBDL, es, reverse);
        const bool stages_padded = staged_layout.pitch != shape.length;
        for (int offset = 0; offset <= units; ++offset) {
          const bool staged = offset == units;
          if (staged && !stages_padded) continue;
          const OffsetRun run =
              RunLinearAtOffset(dtype, es, shape, reverse, staged ? 0 : offset, a, x, staged);
          const std::string where =
              std::string(DTypeName(dtype)) + " reverse " + std::to_string(reverse) + " shape (" +
              std::to_string(shape.batch) + "," + std::to_string(shape.dim) + "," +
              std::to_string(shape.length) + ") " +
              (staged ? std::string("staged") : "offset " + std::to_string(offset));
          EXPECT_TRUE(run.guards_intact) << where << ": a store left y";
          if (offset == 0) {
            first = run.y;
            int64_t bad = 0;
            std::string first_bad;
            for (int64_t row = 0; row < shape.rows(); ++row) {
              double h = 0;
              for (int64_t k = 0; k < shape.length; ++k) {
                const int64_t t = reverse ? shape.length - 1 - k : k;
                const int64_t i = row * shape.length + t;
                h = decode(a.data() + i * es) * h + decode(x.data() + i * es);
                const double got = decode(run.y.data() + i * es);
                if (!(std::abs(got - h) <= tol * (std::abs(h) + 1.0)) && bad++ == 0) {
                  first_bad = "row " + std::to_string(row) + " step " + std::to_string(t) +
                              " got " + std::to_string(got) + " want " + std::to_string(h);
                }
              }
            }
            EXPECT_EQ(bad, 0) << where << ": first " << first_bad;
          } else {
            int64_t differ = 0;
            int64_t at = -1;
            for (size_t b = 0; b < first.size(); ++b) {
              if (first[b] != run.y[b] && differ++ == 0) at = static_cast<int64_t>(b / es);
            }
            EXPECT_EQ(differ, 0) << where << ": bytes differ from offset 0, first at element "
                                 << at;
          }
        }
      }
    }
  }
}

TEST_F(CudaAgreesWithCpu, EveryOpEveryDtype) {
  SCANSERVE_TRACE_SEED(rng_);
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    SCOPED_TRACE(std::string(DTypeName(dtype)));
    // Outputs of 16-bit requests may differ by one rounding step of the storage type.
    const double tol = dtype == DType::kFloat32 ? 1e-4 : (dtype == DType::kFloat16 ? 4e-3 : 2e-2);
    // A batch shares one options value (the first request's), so each batch holds one layout.
    for (const Layout layout : {Layout::kBDL, Layout::kBLD}) {
      SCOPED_TRACE(layout == Layout::kBDL ? "bdl" : "bld");
      const bool reverse = rng_.Bool();
      std::vector<LinearScanData> linear;
      std::vector<LinearScanBackwardData> backward;
      std::vector<SelectiveScanData> selective;
      std::vector<AssociativeScanData> associative;
      for (int k = 0; k < 3; ++k) {
        linear.push_back(MakeLinearScanData({.dtype = dtype,
                                             .layout = layout,
                                             .has_b = true,
                                             .has_c = true,
                                             .has_h0 = true,
                                             .return_final_state = true},
                                            RandomShape(rng_, 3, 40, 3000), rng_));
        backward.push_back(MakeLinearScanBackwardData(
            {.dtype = dtype, .layout = layout, .has_b = true, .reverse = reverse},
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
                                                  RandomShape(rng_, 2, 16, 700, 2), rng_));
        associative.push_back(MakeAssociativeScanData({.dtype = dtype,
                                                       .layout = layout,
                                                       .op = ScanOperator::kLogAddExp,
                                                       .exclusive = reverse},
                                                      RandomShape(rng_, 3, 40, 3000), rng_));
      }
      Compare(linear, tol);
      Compare(backward, tol);
      Compare(selective, tol);
      Compare(associative, tol);
    }
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
  std::vector<std::vector<HostTensor>> batched;
  for (LinearScanData& d : batch) batched.push_back(TakeOutputs(d));
  ExpectSameBitsAlone(*backend_, batch, batched);
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
