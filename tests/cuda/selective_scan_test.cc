// The CUDA selective scan (RunSelectiveScan) against the float64 reference of ops.md section 3:
// every option on and off, N from 1 to 256, odd lengths, groups, both layouts and all three dtypes;
// chained requests against one long request; batch invariance; pieces when the pools are small.
// Skips with the reason printed when no GPU is usable (the host-side dispatch test runs anyway).
#include "cuda/selective_scan.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cuda/selective_scan_kernel.h"
#include "gtest/gtest.h"
#include "reference/reference.h"
#include "scanserve/ops.h"
#include "support/test_support.h"

namespace scanserve::cuda {
namespace {

using ::scanserve::testing::HostTensor;
using ::scanserve::testing::ReferenceSelectiveScan;
using ::scanserve::testing::RefSelectiveScan;
using ::scanserve::testing::RelativeL2Error;
using ::scanserve::testing::Rng;
using ::scanserve::testing::Tolerance;

// States are float32 computed from the same (rounded) inputs in every dtype: float32's target.
constexpr double kStateTolerance = 1e-5;

std::string GpuSkipReason() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return std::string("no usable GPU: ") + cudaGetErrorString(err);
  }
  return count == 0 ? "no CUDA device present" : "";
}

// A StreamContext over pools this test owns, sized per test so that pieces can be forced.
class PoolContext : public StreamContext {
 public:
  static std::unique_ptr<PoolContext> Make(size_t host_bytes, size_t device_bytes) {
    auto ctx = std::unique_ptr<PoolContext>(new PoolContext(host_bytes, device_bytes));
    if (cudaStreamCreate(&ctx->stream_) != cudaSuccess ||
        cudaMallocHost(&ctx->host_, host_bytes) != cudaSuccess ||
        cudaMalloc(&ctx->device_, device_bytes) != cudaSuccess) {
      return nullptr;
    }
    return ctx;
  }
  ~PoolContext() override {
    if (host_ != nullptr) cudaFreeHost(host_);
    if (device_ != nullptr) cudaFree(device_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }
  int device() const override { return 0; }
  cudaStream_t stream() const override { return stream_; }
  absl::StatusOr<std::byte*> AllocHost(size_t bytes) override {
    return Bump(static_cast<std::byte*>(host_), host_capacity_, &host_used_, bytes, "host");
  }
  absl::StatusOr<std::byte*> AllocDevice(size_t bytes) override {
    return Bump(static_cast<std::byte*>(device_), device_capacity_, &device_used_, bytes, "device");
  }
  size_t host_capacity() const override { return host_capacity_; }
  size_t device_capacity() const override { return device_capacity_; }
  // A new batch: the pools are handed out from the start again.
  void Reset() { host_used_ = device_used_ = 0; }

 private:
  PoolContext(size_t host_bytes, size_t device_bytes)
      : host_capacity_(host_bytes), device_capacity_(device_bytes) {}
  static absl::StatusOr<std::byte*> Bump(std::byte* base, size_t capacity, size_t* used,
                                         size_t bytes, const char* pool) {
    const size_t at = (*used + 255) / 256 * 256;
    if (at + bytes > capacity) {
      return absl::ResourceExhaustedError(std::string(pool) + " pool: " + std::to_string(bytes) +
                                          " bytes asked, " + std::to_string(capacity - at) +
                                          " left");
    }
    *used = at + bytes;
    return base + at;
  }
  size_t host_capacity_;
  size_t device_capacity_;
  size_t host_used_ = 0;
  size_t device_used_ = 0;
  void* host_ = nullptr;
  void* device_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

// One request with owned random inputs and poisoned outputs.
struct Case {
  SelectiveScanOptions o;
  SeqShape s;
  HostTensor u, delta, z, B, C, A, d_skip, bias, h0, y, last;

  SelectiveScanProblem Problem() {
    SelectiveScanProblem p;
    p.shape = s;
    p.u = u.data();
    p.delta = delta.data();
    p.A = A.As<float>();
    p.B = B.data();
    p.C = C.data();
    p.d_skip = o.has_d_skip ? d_skip.As<float>() : nullptr;
    p.z = o.has_z ? z.data() : nullptr;
    p.delta_bias = o.has_delta_bias ? bias.As<float>() : nullptr;
    p.h0 = o.has_h0 ? h0.As<float>() : nullptr;
    p.y = y.data();
    p.last_state = o.return_last_state ? last.As<float>() : nullptr;
    return p;
  }
  void Poison() {
    y.Poison();
    last.Poison();
  }
};

int64_t BcCount(const SelectiveScanOptions& o, const SeqShape& s, bool variable) {
  return variable ? s.batch * o.groups * o.state_dim * s.length : s.dim * o.state_dim;
}

Case MakeCase(const SelectiveScanOptions& o, const SeqShape& s, Rng& rng) {
  Case c;
  c.o = o;
  c.s = s;
  const int64_t n = o.state_dim;
  const int64_t states = std::max<int64_t>(s.rows() * n, 1);
  c.u = HostTensor(o.dtype, std::max<int64_t>(s.elements(), 1));
  c.delta = HostTensor(o.dtype, std::max<int64_t>(s.elements(), 1));
  c.z = HostTensor(o.dtype, std::max<int64_t>(s.elements(), 1));
  c.y = HostTensor(o.dtype, std::max<int64_t>(s.elements(), 1));
  c.B = HostTensor(o.variable_b ? o.dtype : DType::kFloat32,
                   std::max<int64_t>(BcCount(o, s, o.variable_b), 1));
  c.C = HostTensor(o.variable_c ? o.dtype : DType::kFloat32,
                   std::max<int64_t>(BcCount(o, s, o.variable_c), 1));
  c.A = HostTensor(DType::kFloat32, std::max<int64_t>(s.dim * n, 1));
  c.d_skip = HostTensor(DType::kFloat32, std::max<int64_t>(s.dim, 1));
  c.bias = HostTensor(DType::kFloat32, std::max<int64_t>(s.dim, 1));
  c.h0 = HostTensor(DType::kFloat32, states);
  c.last = HostTensor(DType::kFloat32, states);
  c.u.FillUniform(rng, -1.0, 1.0);
  // Softplus sees both branches and the v > 20 threshold; without it dt is a plain positive step.
  if (o.delta_softplus) {
    c.delta.FillUniform(rng, -4.0, 1.5);
    for (int64_t i = 0; i < c.delta.count(); i += 97) c.delta.Set(i, rng.Uniform(19.0, 24.0));
  } else {
    c.delta.FillUniform(rng, 0.002, 0.3);
  }
  c.z.FillUniform(rng, -4.0, 4.0);
  c.B.FillUniform(rng, -1.0, 1.0);
  c.C.FillUniform(rng, -1.0, 1.0);
  // Decay rates spread over two decades, as learned Mamba A (negative) are.
  for (int64_t i = 0; i < c.A.count(); ++i) c.A.Set(i, -std::exp(rng.Uniform(-2.5, 2.0)));
  c.d_skip.FillUniform(rng, -1.0, 1.0);
  if (o.delta_softplus) {
    c.bias.FillUniform(rng, -1.0, 0.5);
  } else {
    c.bias.FillUniform(rng, 0.0, 0.1);
  }
  c.h0.FillUniform(rng, -1.0, 1.0);
  c.Poison();
  return c;
}

absl::Status RunBatch(PoolContext& ctx, const SelectiveScanOptions& o,
                      std::vector<SelectiveScanProblem> problems) {
  ctx.Reset();
  SelectiveScanBatch batch{o, problems};
  return RunSelectiveScan(batch, ctx);
}

std::string Describe(const SelectiveScanOptions& o, const SeqShape& s) {
  return SignatureKey(o) + " shape=(" + std::to_string(s.batch) + "," + std::to_string(s.dim) +
         "," + std::to_string(s.length) + ")";
}

// Checks one case's outputs against the float64 reference.
void ExpectMatchesReference(Case& c) {
  SCOPED_TRACE(Describe(c.o, c.s));
  const SelectiveScanProblem p = c.Problem();
  const RefSelectiveScan ref = ReferenceSelectiveScan(c.o, p);
  HostTensor y_view(c.o.dtype, c.s.elements());
  std::memcpy(y_view.data(), c.y.data(), y_view.bytes());
  EXPECT_LE(RelativeL2Error(y_view, ref.y), Tolerance(c.o.dtype)) << "y";
  if (c.o.return_last_state) {
    const std::span<const float> last(c.last.As<float>(),
                                      static_cast<size_t>(c.s.rows()) * c.o.state_dim);
    EXPECT_LE(RelativeL2Error(last, ref.last_state), kStateTolerance) << "last_state";
  }
}

class SelectiveScanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string reason = GpuSkipReason();
    if (!reason.empty()) GTEST_SKIP() << reason;
    ctx_ = PoolContext::Make(size_t{64} << 20, size_t{64} << 20);
    ASSERT_NE(ctx_, nullptr) << "could not create the test's CUDA stream and pools";
  }

  // Runs one random case alone and checks it against the reference.
  void CheckOne(const SelectiveScanOptions& o, const SeqShape& s) {
    SCANSERVE_TRACE_SEED(rng_);
    Case c = MakeCase(o, s, rng_);
    const absl::Status st = RunBatch(*ctx_, o, {c.Problem()});
    ASSERT_TRUE(st.ok()) << st << " " << Describe(o, s);
    ExpectMatchesReference(c);
  }

  Rng rng_;
  std::unique_ptr<PoolContext> ctx_;
};

SelectiveScanOptions AllOn(DType dtype, Layout layout, int n) {
  SelectiveScanOptions o;
  o.dtype = dtype;
  o.layout = layout;
  o.state_dim = n;
  o.groups = 1;
  o.variable_b = o.variable_c = true;
  o.has_d_skip = o.has_z = o.has_delta_bias = o.delta_softplus = true;
  o.has_h0 = o.return_last_state = true;
  return o;
}

TEST_F(SelectiveScanTest, EveryOptionOnAndOff) {
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    for (Layout layout : {Layout::kBDL, Layout::kBLD}) {
      std::vector<SelectiveScanOptions> configs;
      configs.push_back(AllOn(dtype, layout, 16));
      SelectiveScanOptions off;
      off.dtype = dtype;
      off.layout = layout;
      off.state_dim = 16;
      off.variable_b = off.variable_c = false;
      configs.push_back(off);
      for (int flag = 0; flag < 8; ++flag) {
        SelectiveScanOptions o = AllOn(dtype, layout, 16);
        bool* flags[] = {&o.variable_b, &o.variable_c,     &o.has_d_skip,     &o.has_z,
                         &o.has_h0,     &o.delta_softplus, &o.has_delta_bias, &o.return_last_state};
        *flags[flag] = false;
        configs.push_back(o);
      }
      for (const SelectiveScanOptions& o : configs) {
        const SeqShape s{2, 12, 2 * rng_.Int(20, 70) + 1};
        CheckOne(o, s);
      }
    }
  }
}

TEST_F(SelectiveScanTest, StateDimsGroupsAndOddLengths) {
  for (int n : {1, 3, 4, 16, 17, 64, 256}) {
    for (Layout layout : {Layout::kBDL, Layout::kBLD}) {
      for (DType dtype : {DType::kFloat32, DType::kBFloat16}) {
        SelectiveScanOptions o = AllOn(dtype, layout, n);
        o.groups = n == 256 ? 2 : 4;
        const int64_t dim = o.groups * (n == 256 ? 3 : 5);
        CheckOne(o, SeqShape{2, dim, 2 * rng_.Int(10, 50) + 1});
      }
    }
  }
}

TEST_F(SelectiveScanTest, FixedAndVariableMixedWithGroups) {
  for (Layout layout : {Layout::kBDL, Layout::kBLD}) {
    SelectiveScanOptions o = AllOn(DType::kFloat32, layout, 8);
    o.groups = 3;
    o.variable_c = false;
    CheckOne(o, SeqShape{3, 9, 45});
    o.variable_c = true;
    o.variable_b = false;
    CheckOne(o, SeqShape{3, 9, 45});
  }
}

TEST_F(SelectiveScanTest, ShortAndAlignedLengths) {
  // 1..5 steps, multiples of four (vector loads) and not, and a channel count that leaves a block
  // partly empty.
  for (int64_t length : {1, 2, 3, 4, 5, 8, 64, 67}) {
    for (DType dtype : {DType::kFloat32, DType::kFloat16}) {
      CheckOne(AllOn(dtype, Layout::kBDL, 16), SeqShape{1, 37, length});
      CheckOne(AllOn(dtype, Layout::kBLD, 16), SeqShape{1, 37, length});
    }
  }
}

TEST_F(SelectiveScanTest, AlignedRowsWithEveryMambaOption) {
  // BDL rows whose length is a multiple of four, with variable B and C, z, softplus and D_skip on,
  // run the kernel specialized for that configuration (4 or 8 state threads per channel: N = 8 and
  // 16 here): whole tiles and a partial last tile, whose B and C copies (16-bit inputs) come in
  // 16-byte pieces where the length is a multiple of eight (160, 200, 1024) and in 8-byte ones
  // where it is not (228). N = 64 (32 state threads) runs the general kernel beside them, with a B
  // and C tile larger than the prefetch.
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    for (int n : {8, 16, 64}) {
      for (int64_t length : {160, 200, 228, 1024}) {
        SelectiveScanOptions o = AllOn(dtype, Layout::kBDL, n);
        o.has_h0 = length != 228;
        CheckOne(o, SeqShape{2, 40, length});
      }
    }
    // Requests of many rows take four states per thread (requests this small take two): four and
    // eight state threads per channel.
    CheckOne(AllOn(dtype, Layout::kBDL, 16), SeqShape{1, 8192, 68});
    CheckOne(AllOn(dtype, Layout::kBDL, 32), SeqShape{2, 2048, 36});
    // A few thousand channels in one wave, the last block partly empty: 20 rows per block at
    // N = 8 (rows 16 to 19 run after all others, see the kernel's thread map), 16 at N = 16.
    CheckOne(AllOn(dtype, Layout::kBDL, 8), SeqShape{1, 5110, 36});
    CheckOne(AllOn(dtype, Layout::kBDL, 16), SeqShape{1, 5110, 36});
    // N = 15 leaves the last state thread of each channel one state short, and two groups of 22
    // channels each end in a partly empty block.
    SelectiveScanOptions o = AllOn(dtype, Layout::kBDL, 15);
    o.groups = 2;
    CheckOne(o, SeqShape{2, 44, 100});
  }
}

// Host-side dispatch only: runs without a GPU too (132 multiprocessors are assumed then).
TEST(SelectiveScanDispatch, RowsPerBlockEvenOutOneWave) {
  int device = 0;
  int sms = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    cudaGetLastError();
    sms = 132;
  }
  if (sms != 132) GTEST_SKIP() << "the expectations are for 132 multiprocessors, not " << sms;
  SelectiveScanOptions o;
  o.dtype = DType::kBFloat16;
  o.state_dim = 16;
  o.variable_b = o.variable_c = true;
  SelectiveScanRows one;
  one.shape = SeqShape{1, 5120, 2048};
  // At N = 16 blocks of 16 rows already hold the target 128 threads and do not grow, though 20
  // rows would put 40 channels on each multiprocessor instead of 48 on some.
  EXPECT_EQ(SelectiveScanRowsPerBlock(o, 2, {&one, 1}), 16);
  // At N = 8 blocks of 16 rows (64 threads) may grow: 20 rows make 256 blocks, 2 on each
  // multiprocessor (40 channels) instead of 3 on some (48).
  o.state_dim = 8;
  EXPECT_EQ(SelectiveScanRowsPerBlock(o, 2, {&one, 1}), 20);
  o.state_dim = 16;
  // (8, 1536) at four states: 384 blocks of 32 rows, 3 on each multiprocessor; nothing evens it
  // out further in one wave.
  one.shape = SeqShape{8, 1536, 2048};
  EXPECT_EQ(SelectiveScanRowsPerBlock(o, 4, {&one, 1}), 32);

  // Batches too small for two blocks per multiprocessor halve their rows per block, but not below
  // the rows whose threads prefetch the whole B and C tile (16 at two states, 32 at four).
  one.shape = SeqShape{1, 2048, 2048};
  EXPECT_EQ(SelectiveScanRowsPerBlock(o, 2, {&one, 1}), 16);
  one.shape = SeqShape{1, 8192, 2048};
  EXPECT_EQ(SelectiveScanRowsPerBlock(o, 4, {&one, 1}), 32);
  // With fixed B and C there is no tile to prefetch, and 16 rows halve to 8 (256 blocks, not 128).
  o.variable_b = o.variable_c = false;
  one.shape = SeqShape{1, 2048, 2048};
  EXPECT_EQ(SelectiveScanRowsPerBlock(o, 2, {&one, 1}), 8);

  // Mamba's options with 16-bit inputs at two states run the kernel that copies B and C with
  // cp.async: blocks of 64 threads, evened out over one wave.
  o.variable_b = o.variable_c = true;
  o.has_z = o.delta_softplus = o.has_d_skip = true;
  one.shape = SeqShape{1, 5120, 2048};
  EXPECT_EQ(SelectiveScanRowsPerBlock(o, 2, {&one, 1}), 8);  // 640 blocks, 40 channels at most
  one.shape = SeqShape{1, 768, 2048};
  EXPECT_EQ(SelectiveScanRowsPerBlock(o, 2, {&one, 1}), 8);
  // 4752 channels: 12 rows make 396 blocks, 3 on each multiprocessor (36 channels), where 8 rows
  // put 40 on some.
  one.shape = SeqShape{1, 4752, 2048};
  EXPECT_EQ(SelectiveScanRowsPerBlock(o, 2, {&one, 1}), 12);
  one.shape = SeqShape{1, 768, 2048};
  // float32 keeps the general rule (16 rows), and so does a length the vectors cannot take.
  o.dtype = DType::kFloat32;
  EXPECT_EQ(SelectiveScanRowsPerBlock(o, 2, {&one, 1}), 16);
  o.dtype = DType::kBFloat16;
  one.shape = SeqShape{1, 768, 2047};
  EXPECT_EQ(SelectiveScanRowsPerBlock(o, 2, {&one, 1}), 16);
}

TEST_F(SelectiveScanTest, LongRows) {
  for (Layout layout : {Layout::kBDL, Layout::kBLD}) {
    CheckOne(AllOn(DType::kFloat32, layout, 16), SeqShape{1, 6, 6001});
  }
}

// Copies steps [t0, t1) of a tensor viewed as (outer, length, inner) into a new tensor.
HostTensor SliceSteps(const HostTensor& src, int64_t outer, int64_t length, int64_t inner,
                      int64_t t0, int64_t t1) {
  HostTensor out(src.dtype(), outer * (t1 - t0) * inner);
  const size_t elem = DTypeSize(src.dtype());
  const auto* s = static_cast<const std::byte*>(src.data());
  auto* d = static_cast<std::byte*>(out.data());
  for (int64_t o = 0; o < outer; ++o) {
    std::memcpy(d + static_cast<size_t>(o * (t1 - t0) * inner) * elem,
                s + static_cast<size_t>((o * length + t0) * inner) * elem,
                static_cast<size_t>((t1 - t0) * inner) * elem);
  }
  return out;
}

HostTensor Copy(const HostTensor& src) {
  HostTensor out(src.dtype(), src.count());
  std::memcpy(out.data(), src.data(), src.bytes());
  return out;
}

TEST_F(SelectiveScanTest, ChainedRequestsEqualOneLongRequest) {
  for (Layout layout : {Layout::kBDL, Layout::kBLD}) {
    for (DType dtype : {DType::kFloat32, DType::kBFloat16}) {
      SCANSERVE_TRACE_SEED(rng_);
      SelectiveScanOptions o = AllOn(dtype, layout, 16);
      o.groups = 2;
      const SeqShape whole{2, 10, 157};
      SCOPED_TRACE(Describe(o, whole));
      Case full = MakeCase(o, whole, rng_);
      ASSERT_TRUE(RunBatch(*ctx_, o, {full.Problem()}).ok());
      ExpectMatchesReference(full);

      // Three consecutive pieces of the sequence, the last state of each fed as h0 of the next.
      const bool bdl = layout == Layout::kBDL;
      const int64_t cuts[] = {0, 61, 100, whole.length};
      HostTensor state = Copy(full.h0);
      for (int k = 0; k < 3; ++k) {
        const int64_t t0 = cuts[k];
        const int64_t t1 = cuts[k + 1];
        Case part;
        part.o = o;
        part.s = SeqShape{whole.batch, whole.dim, t1 - t0};
        const int64_t so = bdl ? whole.rows() : whole.batch;
        const int64_t si = bdl ? 1 : whole.dim;
        const int64_t bo = bdl ? whole.batch * o.groups * o.state_dim : whole.batch;
        const int64_t bi = bdl ? 1 : o.groups * o.state_dim;
        part.u = SliceSteps(full.u, so, whole.length, si, t0, t1);
        part.delta = SliceSteps(full.delta, so, whole.length, si, t0, t1);
        part.z = SliceSteps(full.z, so, whole.length, si, t0, t1);
        part.B = SliceSteps(full.B, bo, whole.length, bi, t0, t1);
        part.C = SliceSteps(full.C, bo, whole.length, bi, t0, t1);
        part.A = Copy(full.A);
        part.d_skip = Copy(full.d_skip);
        part.bias = Copy(full.bias);
        part.h0 = Copy(state);
        part.y = HostTensor(dtype, part.s.elements());
        part.last = HostTensor(DType::kFloat32, whole.rows() * o.state_dim);
        part.Poison();
        ASSERT_TRUE(RunBatch(*ctx_, o, {part.Problem()}).ok());
        // The recurrence runs step by step in the same order either way: bit-identical results.
        const HostTensor want = SliceSteps(full.y, so, whole.length, si, t0, t1);
        EXPECT_TRUE(part.y.BitEqual(want)) << "y of piece " << k;
        state = Copy(part.last);
      }
      EXPECT_TRUE(state.BitEqual(full.last)) << "last state after the pieces";
    }
  }
}

TEST_F(SelectiveScanTest, BatchInvariance) {
  for (Layout layout : {Layout::kBDL, Layout::kBLD}) {
    for (DType dtype : {DType::kFloat32, DType::kFloat16}) {
      SCANSERVE_TRACE_SEED(rng_);
      SelectiveScanOptions o = AllOn(dtype, layout, 16);
      const SeqShape target_shape{2, 24, 203};
      Case alone = MakeCase(o, target_shape, rng_);
      ASSERT_TRUE(RunBatch(*ctx_, o, {alone.Problem()}).ok());
      ExpectMatchesReference(alone);

      // The same request between others of other shapes (a larger batch changes the geometry).
      Case again = MakeCase(o, target_shape, rng_);
      again.u = Copy(alone.u);
      again.delta = Copy(alone.delta);
      again.z = Copy(alone.z);
      again.B = Copy(alone.B);
      again.C = Copy(alone.C);
      again.A = Copy(alone.A);
      again.d_skip = Copy(alone.d_skip);
      again.bias = Copy(alone.bias);
      again.h0 = Copy(alone.h0);
      Case before = MakeCase(o, SeqShape{3, 512, 64}, rng_);
      Case after = MakeCase(o, SeqShape{1, 8, 9}, rng_);
      Case empty = MakeCase(o, SeqShape{0, 8, 9}, rng_);
      ASSERT_TRUE(
          RunBatch(*ctx_, o, {before.Problem(), empty.Problem(), again.Problem(), after.Problem()})
              .ok());
      EXPECT_TRUE(again.y.BitEqual(alone.y)) << "y differs inside a batch";
      EXPECT_TRUE(again.last.BitEqual(alone.last)) << "last state differs inside a batch";
      ExpectMatchesReference(before);
      ExpectMatchesReference(after);
    }
  }
}

TEST_F(SelectiveScanTest, BatchLargerThanPoolsRunsInPieces) {
  SCANSERVE_TRACE_SEED(rng_);
  const SelectiveScanOptions o = AllOn(DType::kFloat32, Layout::kBDL, 16);
  std::vector<Case> cases;
  for (int i = 0; i < 5; ++i) cases.push_back(MakeCase(o, SeqShape{2, 16, 100 + 7 * i}, rng_));
  std::vector<SelectiveScanProblem> problems;
  for (Case& c : cases) problems.push_back(c.Problem());
  // Room for about two of these problems at a time.
  auto small = PoolContext::Make(300 << 10, 300 << 10);
  ASSERT_NE(small, nullptr);
  const absl::Status st = RunBatch(*small, o, problems);
  ASSERT_TRUE(st.ok()) << st;
  std::vector<HostTensor> pieced;
  for (Case& c : cases) {
    ExpectMatchesReference(c);
    pieced.push_back(Copy(c.y));
    c.Poison();
  }
  ASSERT_TRUE(RunBatch(*ctx_, o, problems).ok());
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_TRUE(cases[i].y.BitEqual(pieced[i])) << "problem " << i;
  }
}

TEST_F(SelectiveScanTest, ErrorsNameTheRule) {
  SCANSERVE_TRACE_SEED(rng_);
  SelectiveScanOptions o = AllOn(DType::kFloat32, Layout::kBDL, 16);
  Case c = MakeCase(o, SeqShape{2, 64, 1000}, rng_);
  auto tiny = PoolContext::Make(64 << 10, 64 << 10);
  ASSERT_NE(tiny, nullptr);
  absl::Status st = RunBatch(*tiny, o, {c.Problem()});
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
  EXPECT_NE(st.message().find("bytes"), std::string::npos) << st;

  SelectiveScanOptions bad = o;
  bad.state_dim = 257;
  st = RunBatch(*ctx_, bad, {c.Problem()});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("state_dim"), std::string::npos) << st;

  bad = o;
  bad.groups = 3;  // 64 channels do not split into 3 groups
  st = RunBatch(*ctx_, bad, {c.Problem()});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("groups"), std::string::npos) << st;
}

}  // namespace
}  // namespace scanserve::cuda
