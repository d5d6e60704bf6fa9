// The CUDA backend: one lease of a stream context per batch, host staging in pinned memory, one
// host-to-device copy, the kernels, one device-to-host copy, and a wait on that stream only, so
// batches on other contexts overlap (one's copy-in with another's kernel and a third's copy-out).
#include "scanserve/cuda_backend.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "cuda/scan_kernels.h"
#include "cuda/stream_context.h"
#include "cuda/stream_pool.h"
#include "scanserve/backend.h"
#include "scanserve/ops.h"

#if __has_include("cuda/selective_scan.h")
#include "cuda/selective_scan.h"
#define SCANSERVE_CUDA_HAS_SELECTIVE_SCAN 1
#endif

namespace scanserve {

int CudaDeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear it: "no GPU" is not an error of later calls
    return 0;
  }
  return count;
}

namespace {

using cuda::CudaStatus;
using cuda::PoolStreamContext;

constexpr size_t kAlign = 256;
size_t AlignUp(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

size_t RowBytes(const SeqShape& s) { return static_cast<size_t>(s.rows()) * sizeof(float); }

// One host tensor a problem reads or writes: `bytes` packed on the host. A sequence tensor (rows
// > 0) is staged as `rows` rows of `row_bytes` each at a pitch of `pitch_bytes`, `lead_bytes` into
// each (see cuda::StagedLayout); any other is staged as is.
struct HostSpan {
  size_t bytes = 0;
  size_t rows = 0;
  size_t row_bytes = 0;
  size_t pitch_bytes = 0;
  size_t lead_bytes = 0;
  size_t StagedBytes() const { return Padded() ? rows * pitch_bytes : bytes; }
  bool Padded() const { return rows > 0 && pitch_bytes != row_bytes; }
};
struct InTensor {
  const void* src;
  HostSpan span;
};
struct OutTensor {
  void* dst;
  HostSpan span;
};

HostSpan PackedSpan(const void* p, size_t bytes) { return {.bytes = p == nullptr ? 0 : bytes}; }

// A sequence tensor of `shape` with elements of `es` bytes, staged in `layout`.
HostSpan RowsSpan(const void* p, const SeqShape& shape, size_t es, const cuda::StagedLayout& l) {
  if (p == nullptr) return {};
  const size_t rows = static_cast<size_t>(shape.rows());
  const size_t len = static_cast<size_t>(shape.length);
  return {.bytes = rows * len * es,
          .rows = rows,
          .row_bytes = len * es,
          .pitch_bytes = static_cast<size_t>(l.pitch) * es,
          .lead_bytes = static_cast<size_t>(l.lead) * es};
}

// Up to this many tensors per problem in each direction.
constexpr int kMaxTensors = 8;

// Tensors of one problem in a fixed order per op (absent ones have 0 bytes), and their staged
// device addresses once placed.
struct Staged {
  InTensor in[kMaxTensors] = {};
  OutTensor out[kMaxTensors] = {};
  int n_in = 0;
  int n_out = 0;
  void* dev_in[kMaxTensors] = {};
  void* dev_out[kMaxTensors] = {};
  size_t out_offset[kMaxTensors] = {};

  void In(const void* src, HostSpan span) { in[n_in++] = {src, span}; }
  void Out(void* dst, HostSpan span) { out[n_out++] = {dst, span}; }
  size_t InBytes() const {
    size_t b = 0;
    for (int i = 0; i < n_in; ++i) b += AlignUp(in[i].span.StagedBytes());
    return b;
  }
  size_t OutBytes() const {
    size_t b = 0;
    for (int i = 0; i < n_out; ++i) b += AlignUp(out[i].span.StagedBytes());
    return b;
  }
};

// Copies a host tensor into its staging region, row by row where it is padded.
void PackSpan(std::byte* to, const void* from, const HostSpan& span) {
  if (!span.Padded()) {
    std::memcpy(to, from, span.bytes);
    return;
  }
  const auto* src = static_cast<const std::byte*>(from);
  for (size_t r = 0; r < span.rows; ++r) {
    std::memcpy(to + r * span.pitch_bytes + span.lead_bytes, src + r * span.row_bytes,
                span.row_bytes);
  }
}

void UnpackSpan(void* to, const std::byte* from, const HostSpan& span) {
  if (!span.Padded()) {
    std::memcpy(to, from, span.bytes);
    return;
  }
  auto* dst = static_cast<std::byte*>(to);
  for (size_t r = 0; r < span.rows; ++r) {
    std::memcpy(dst + r * span.row_bytes, from + r * span.pitch_bytes + span.lead_bytes,
                span.row_bytes);
  }
}

// ---- per-op adapters: which tensors a problem moves, and its kernel rows
// --------------------------

struct LinearScanAdapter {
  static constexpr OpKind kOp = OpKind::kLinearScan;
  using Options = LinearScanOptions;
  using Problem = LinearScanProblem;
  using Rows = cuda::LinearScanRows;

  static absl::Status Validate(const Options& o, const Problem& p) {
    if (!IsFloatingPoint(o.dtype)) {
      return absl::InvalidArgumentError("linear_scan: dtype must be float32, float16 or bfloat16");
    }
    if (p.a == nullptr || p.x == nullptr || p.y == nullptr || (o.has_b && p.b == nullptr) ||
        (o.has_c && p.c == nullptr) || (o.has_h0 && p.h0 == nullptr) ||
        (o.return_final_state && p.final_state == nullptr)) {
      return absl::InvalidArgumentError(
          "linear_scan: a tensor the options require (a, x, y, b, c, h0, final_state) is null");
    }
    return absl::OkStatus();
  }
  static cuda::StagedLayout LayoutOf(const Options& o, const SeqShape& shape) {
    return cuda::StagedLayoutOf(shape, o.layout, DTypeSize(o.dtype), o.reverse);
  }
  static void Collect(const Options& o, const Problem& p, Staged& s) {
    const cuda::StagedLayout l = LayoutOf(o, p.shape);
    const size_t es = DTypeSize(o.dtype);
    s.In(p.a, RowsSpan(p.a, p.shape, es, l));
    s.In(p.x, RowsSpan(p.x, p.shape, es, l));
    s.In(p.b, RowsSpan(o.has_b ? p.b : nullptr, p.shape, es, l));
    s.In(p.c, RowsSpan(o.has_c ? p.c : nullptr, p.shape, es, l));
    s.In(p.h0, PackedSpan(o.has_h0 ? p.h0 : nullptr, RowBytes(p.shape)));
    s.Out(p.y, RowsSpan(p.y, p.shape, es, l));
    s.Out(p.final_state,
          PackedSpan(o.return_final_state ? p.final_state : nullptr, RowBytes(p.shape)));
  }
  static Rows MakeRows(const Options& o, const Problem& p, const Staged* s) {
    Rows r;
    r.geometry = cuda::StagedGeometryOf(p.shape, o.layout, LayoutOf(o, p.shape));
    if (s != nullptr) {
      r.a = s->dev_in[0];
      r.x = s->dev_in[1];
      r.b = s->dev_in[2];
      r.c = s->dev_in[3];
      r.h0 = static_cast<const float*>(s->dev_in[4]);
      r.y = s->dev_out[0];
      r.final_state = static_cast<float*>(s->dev_out[1]);
    }
    return r;
  }
  static cuda::LaunchSizes Sizes(const Options& o, std::span<const Rows> rows) {
    return cuda::LinearScanSizes(o, rows);
  }
  static void Describe(const Options& o, std::span<const Rows> rows, void* temp, void* host) {
    cuda::LinearScanDescribe(o, rows, temp, host);
  }
  static int Launch(const Options& o, std::span<const Rows> rows, const void* desc, void* temp,
                    void* stream) {
    return cuda::LinearScanLaunch(o, rows, desc, temp, stream);
  }
};

struct LinearScanBackwardAdapter {
  static constexpr OpKind kOp = OpKind::kLinearScanBackward;
  using Options = LinearScanBackwardOptions;
  using Problem = LinearScanBackwardProblem;
  using Rows = cuda::LinearScanBackwardRows;

  static absl::Status Validate(const Options& o, const Problem& p) {
    if (!IsFloatingPoint(o.dtype)) {
      return absl::InvalidArgumentError(
          "linear_scan_backward: dtype must be float32, float16 or bfloat16");
    }
    if (p.a == nullptr || p.x == nullptr || p.dy == nullptr || p.da == nullptr || p.dx == nullptr ||
        (o.has_b && (p.b == nullptr || p.db == nullptr)) ||
        (o.has_c && (p.c == nullptr || p.dc == nullptr)) ||
        (o.has_h0 && (p.h0 == nullptr || p.dh0 == nullptr)) ||
        (o.has_states && p.states == nullptr)) {
      return absl::InvalidArgumentError(
          "linear_scan_backward: a tensor the options require (a, x, dy, b, c, h0, states, da, "
          "dx, db, dc, dh0) is null");
    }
    return absl::OkStatus();
  }
  // The backward pass runs against the forward's direction.
  static cuda::StagedLayout LayoutOf(const Options& o, const SeqShape& shape) {
    return cuda::StagedLayoutOf(shape, o.layout, DTypeSize(o.dtype), !o.reverse);
  }
  static void Collect(const Options& o, const Problem& p, Staged& s) {
    const cuda::StagedLayout l = LayoutOf(o, p.shape);
    const size_t es = DTypeSize(o.dtype);
    s.In(p.a, RowsSpan(p.a, p.shape, es, l));
    s.In(p.x, RowsSpan(p.x, p.shape, es, l));
    s.In(p.dy, RowsSpan(p.dy, p.shape, es, l));
    s.In(p.b, RowsSpan(o.has_b ? p.b : nullptr, p.shape, es, l));
    s.In(p.c, RowsSpan(o.has_c ? p.c : nullptr, p.shape, es, l));
    s.In(p.h0, PackedSpan(o.has_h0 ? p.h0 : nullptr, RowBytes(p.shape)));
    s.In(p.states, RowsSpan(o.has_states ? p.states : nullptr, p.shape, sizeof(float), l));
    s.Out(p.da, RowsSpan(p.da, p.shape, es, l));
    s.Out(p.dx, RowsSpan(p.dx, p.shape, es, l));
    s.Out(p.db, RowsSpan(o.has_b ? p.db : nullptr, p.shape, es, l));
    s.Out(p.dc, RowsSpan(o.has_c ? p.dc : nullptr, p.shape, es, l));
    s.Out(p.dh0, PackedSpan(o.has_h0 ? p.dh0 : nullptr, RowBytes(p.shape)));
  }
  static Rows MakeRows(const Options& o, const Problem& p, const Staged* s) {
    Rows r;
    r.geometry = cuda::StagedGeometryOf(p.shape, o.layout, LayoutOf(o, p.shape));
    if (s != nullptr) {
      r.a = s->dev_in[0];
      r.x = s->dev_in[1];
      r.dy = s->dev_in[2];
      r.b = s->dev_in[3];
      r.c = s->dev_in[4];
      r.h0 = static_cast<const float*>(s->dev_in[5]);
      r.states = static_cast<const float*>(s->dev_in[6]);
      r.da = s->dev_out[0];
      r.dx = s->dev_out[1];
      r.db = s->dev_out[2];
      r.dc = s->dev_out[3];
      r.dh0 = static_cast<float*>(s->dev_out[4]);
    }
    return r;
  }
  static cuda::LaunchSizes Sizes(const Options& o, std::span<const Rows> rows) {
    return cuda::LinearScanBackwardSizes(o, rows);
  }
  static void Describe(const Options& o, std::span<const Rows> rows, void* temp, void* host) {
    cuda::LinearScanBackwardDescribe(o, rows, temp, host);
  }
  static int Launch(const Options& o, std::span<const Rows> rows, const void* desc, void* temp,
                    void* stream) {
    return cuda::LinearScanBackwardLaunch(o, rows, desc, temp, stream);
  }
};

struct AssociativeScanAdapter {
  static constexpr OpKind kOp = OpKind::kAssociativeScan;
  using Options = AssociativeScanOptions;
  using Problem = AssociativeScanProblem;
  using Rows = cuda::AssociativeScanRows;

  static absl::Status Validate(const Options& o, const Problem& p) {
    if (!OperatorSupports(o.op, o.dtype)) {
      return absl::InvalidArgumentError(
          absl::StrCat("associative_scan: operator ", std::string(ScanOperatorName(o.op)),
                       " is not defined on dtype ", std::string(DTypeName(o.dtype))));
    }
    if (p.x == nullptr || p.y == nullptr) {
      return absl::InvalidArgumentError("associative_scan: x and y must not be null");
    }
    return absl::OkStatus();
  }
  static cuda::StagedLayout LayoutOf(const Options& o, const SeqShape& shape) {
    return cuda::StagedLayoutOf(shape, o.layout, DTypeSize(o.dtype), o.reverse);
  }
  static void Collect(const Options& o, const Problem& p, Staged& s) {
    const cuda::StagedLayout l = LayoutOf(o, p.shape);
    const size_t es = DTypeSize(o.dtype);
    s.In(p.x, RowsSpan(p.x, p.shape, es, l));
    s.Out(p.y, RowsSpan(p.y, p.shape, es, l));
  }
  static Rows MakeRows(const Options& o, const Problem& p, const Staged* s) {
    Rows r;
    r.geometry = cuda::StagedGeometryOf(p.shape, o.layout, LayoutOf(o, p.shape));
    if (s != nullptr) {
      r.x = s->dev_in[0];
      r.y = s->dev_out[0];
    }
    return r;
  }
  static cuda::LaunchSizes Sizes(const Options& o, std::span<const Rows> rows) {
    return cuda::AssociativeScanSizes(o, rows);
  }
  static void Describe(const Options& o, std::span<const Rows> rows, void* temp, void* host) {
    cuda::AssociativeScanDescribe(o, rows, temp, host);
  }
  static int Launch(const Options& o, std::span<const Rows> rows, const void* desc, void* temp,
                    void* stream) {
    return cuda::AssociativeScanLaunch(o, rows, desc, temp, stream);
  }
};

// ---- the backend
// -----------------------------------------------------------------------------------

class CudaBackend final : public Backend {
 public:
  static absl::StatusOr<std::unique_ptr<Backend>> Create(const BackendConfig& config);

  std::string_view Name() const override { return "cuda"; }
  std::vector<DeviceStatus> Devices() const override;
  int MaxConcurrentBatches() const override { return static_cast<int>(contexts_.size()); }
  bool Broken() const override { return broken_.load(std::memory_order_relaxed); }

  absl::Status Run(const LinearScanBatch& batch) override {
    return RunStaged<LinearScanAdapter>(batch.options, batch.problems);
  }
  absl::Status Run(const LinearScanBackwardBatch& batch) override {
    return RunStaged<LinearScanBackwardAdapter>(batch.options, batch.problems);
  }
  absl::Status Run(const AssociativeScanBatch& batch) override {
    return RunStaged<AssociativeScanAdapter>(batch.options, batch.problems);
  }
  absl::Status Run(const SelectiveScanBatch& batch) override;

 private:
  struct Device {
    int index = 0;
    std::string name;
    int64_t memory_total = 0;
    std::atomic<int64_t> batches{0};
  };

  // A context leased to one Run call, returned on destruction.
  class Lease {
   public:
    explicit Lease(CudaBackend* b) : backend_(b), ctx_(b->Acquire()) {}
    ~Lease() { backend_->Release(ctx_); }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    PoolStreamContext& ctx() { return *ctx_; }

   private:
    CudaBackend* backend_;
    PoolStreamContext* ctx_;
  };

  PoolStreamContext* Acquire();
  void Release(PoolStreamContext* ctx);
  // Wraps a CUDA failure; a sticky one marks the backend broken.
  absl::Status Check(cudaError_t err, const char* what);

  template <typename A>
  absl::Status RunStaged(const typename A::Options& options,
                         std::span<const typename A::Problem> problems);
  template <typename A>
  absl::Status RunChunk(PoolStreamContext& ctx, const typename A::Options& options,
                        std::span<const typename A::Problem> problems);

  std::vector<std::unique_ptr<Device>> devices_;
  std::vector<std::unique_ptr<PoolStreamContext>> contexts_;
  std::mutex mu_;
  std::condition_variable free_cv_;
  std::vector<PoolStreamContext*> free_;  // guarded by mu_
  std::atomic<bool> broken_{false};
};

absl::StatusOr<std::unique_ptr<Backend>> CudaBackend::Create(const BackendConfig& config) {
  const int count = CudaDeviceCount();
  if (count == 0) return absl::FailedPreconditionError("backend=cuda: no usable CUDA device");
  if (config.cuda_streams_per_device < 1) {
    return absl::InvalidArgumentError("cuda_streams_per_device: must be at least 1");
  }
  if (config.cuda_pool_bytes_per_stream < int64_t{1} << 20) {
    return absl::InvalidArgumentError("cuda_pool_bytes_per_stream: must be at least 1 MiB");
  }
  const size_t pool = AlignUp(static_cast<size_t>(config.cuda_pool_bytes_per_stream));
  auto backend = std::unique_ptr<CudaBackend>(new CudaBackend());
  for (int d = 0; d < count; ++d) {
    auto dev = std::make_unique<Device>();
    dev->index = d;
    cudaDeviceProp prop;
    absl::Status s = CudaStatus(cudaGetDeviceProperties(&prop, d), "cudaGetDeviceProperties");
    if (!s.ok()) return s;
    dev->name = prop.name;
    dev->memory_total = static_cast<int64_t>(prop.totalGlobalMem);
    backend->devices_.push_back(std::move(dev));
  }
  // Streams interleave across devices so that consecutive leases spread over the GPUs.
  for (int k = 0; k < config.cuda_streams_per_device; ++k) {
    for (int d = 0; d < count; ++d) {
      absl::StatusOr<std::unique_ptr<PoolStreamContext>> ctx =
          PoolStreamContext::Create(d, k, pool, pool);
      if (!ctx.ok()) return ctx.status();
      backend->contexts_.push_back(*std::move(ctx));
    }
  }
  for (auto it = backend->contexts_.rbegin(); it != backend->contexts_.rend(); ++it) {
    backend->free_.push_back(it->get());
  }
  return backend;
}

std::vector<DeviceStatus> CudaBackend::Devices() const {
  std::vector<DeviceStatus> out;
  for (const auto& dev : devices_) {
    DeviceStatus s;
    s.index = dev->index;
    s.name = dev->name;
    s.memory_total_bytes = dev->memory_total;
    size_t free_bytes = 0;
    size_t total_bytes = 0;
    if (cudaSetDevice(dev->index) == cudaSuccess &&
        cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) {
      s.memory_total_bytes = static_cast<int64_t>(total_bytes);
      s.memory_used_bytes = static_cast<int64_t>(total_bytes - free_bytes);
    }
    s.batches_executed = dev->batches.load(std::memory_order_relaxed);
    out.push_back(std::move(s));
  }
  return out;
}

PoolStreamContext* CudaBackend::Acquire() {
  std::unique_lock<std::mutex> lock(mu_);
  free_cv_.wait(lock, [this] { return !free_.empty(); });
  PoolStreamContext* ctx = free_.back();
  free_.pop_back();
  return ctx;
}

void CudaBackend::Release(PoolStreamContext* ctx) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(ctx);
  }
  free_cv_.notify_one();
}

absl::Status CudaBackend::Check(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return absl::OkStatus();
  if (cuda::IsStickyError(err)) broken_.store(true, std::memory_order_relaxed);
  return CudaStatus(err, what);
}

absl::Status CudaBackend::Run(const SelectiveScanBatch& batch) {
#ifdef SCANSERVE_CUDA_HAS_SELECTIVE_SCAN
  if (Broken()) return absl::InternalError("cuda backend: a sticky CUDA error occurred earlier");
  Lease lease(this);
  PoolStreamContext& ctx = lease.ctx();
  ctx.Reset();
  absl::Status s = Check(cudaSetDevice(ctx.device()), "cudaSetDevice");
  if (!s.ok()) return s;
  s = cuda::RunSelectiveScan(batch, ctx);
  if (!s.ok()) {
    // The op reports its own CUDA errors; find out whether one of them poisoned the context.
    const cudaError_t err = cudaStreamQuery(ctx.stream());
    if (cuda::IsStickyError(err)) broken_.store(true, std::memory_order_relaxed);
    return s;
  }
  devices_[static_cast<size_t>(ctx.device())]->batches.fetch_add(1, std::memory_order_relaxed);
  return absl::OkStatus();
#else
  (void)batch;
  return absl::UnimplementedError("selective_scan: not built into this CUDA backend");
#endif
}

template <typename A>
absl::Status CudaBackend::RunStaged(const typename A::Options& options,
                                    std::span<const typename A::Problem> problems) {
  for (const typename A::Problem& p : problems) {
    absl::Status s = A::Validate(options, p);
    if (!s.ok()) return s;
  }
  if (Broken()) return absl::InternalError("cuda backend: a sticky CUDA error occurred earlier");
  Lease lease(this);
  PoolStreamContext& ctx = lease.ctx();
  absl::Status s = Check(cudaSetDevice(ctx.device()), "cudaSetDevice");
  if (!s.ok()) return s;
  // Cut the batch into runs of problems that fit the pools. A run's sizes never exceed the sum of
  // its problems' sizes taken alone (scan_kernels.h), so summing them is safe.
  size_t begin = 0;
  while (begin < problems.size()) {
    size_t host = 0;
    size_t dev = 0;
    size_t end = begin;
    while (end < problems.size()) {
      Staged st;
      A::Collect(options, problems[end], st);
      const typename A::Rows rows = A::MakeRows(options, problems[end], nullptr);
      const cuda::LaunchSizes k = A::Sizes(options, std::span(&rows, 1));
      const size_t h = AlignUp(k.descriptor_bytes) + st.InBytes() + st.OutBytes();
      const size_t d = h + AlignUp(k.temp_bytes);
      if (host + h > ctx.host_capacity() || dev + d > ctx.device_capacity()) {
        if (end == begin) {
          return absl::ResourceExhaustedError(absl::StrCat(
              std::string(OpName(A::kOp)), ": request ", end, " of the batch needs ", h,
              " bytes of pinned staging and ", d, " bytes of device memory; the CUDA pools hold ",
              ctx.host_capacity(), " and ", ctx.device_capacity(), " bytes per stream"));
        }
        break;
      }
      host += h;
      dev += d;
      ++end;
    }
    s = RunChunk<A>(ctx, options, problems.subspan(begin, end - begin));
    if (!s.ok()) return s;
    begin = end;
  }
  devices_[static_cast<size_t>(ctx.device())]->batches.fetch_add(1, std::memory_order_relaxed);
  return absl::OkStatus();
}

template <typename A>
absl::Status CudaBackend::RunChunk(PoolStreamContext& ctx, const typename A::Options& options,
                                   std::span<const typename A::Problem> problems) {
  ctx.Reset();
  const size_t n = problems.size();
  std::vector<Staged> staged(n);
  std::vector<typename A::Rows> rows(n);
  size_t in_bytes = 0;
  size_t out_bytes = 0;
  for (size_t i = 0; i < n; ++i) {
    A::Collect(options, problems[i], staged[i]);
    rows[i] = A::MakeRows(options, problems[i], nullptr);
    in_bytes += staged[i].InBytes();
    out_bytes += staged[i].OutBytes();
  }
  const cuda::LaunchSizes sizes = A::Sizes(options, rows);
  const size_t desc_bytes = AlignUp(sizes.descriptor_bytes);
  const size_t copy_in = desc_bytes + in_bytes;
  absl::StatusOr<std::byte*> host = ctx.AllocHost(copy_in + out_bytes);
  if (!host.ok()) return host.status();
  absl::StatusOr<std::byte*> dev = ctx.AllocDevice(copy_in + out_bytes);
  if (!dev.ok()) return dev.status();
  std::byte* temp = nullptr;
  if (sizes.temp_bytes > 0) {
    absl::StatusOr<std::byte*> t = ctx.AllocDevice(sizes.temp_bytes);
    if (!t.ok()) return t.status();
    temp = *t;
  }

  // Pack: [descriptors][every problem's inputs] ... [every problem's outputs].
  size_t in_at = desc_bytes;
  size_t out_at = copy_in;
  for (size_t i = 0; i < n; ++i) {
    Staged& st = staged[i];
    for (int k = 0; k < st.n_in; ++k) {
      const HostSpan& span = st.in[k].span;
      if (span.bytes == 0) continue;
      PackSpan(*host + in_at, st.in[k].src, span);
      st.dev_in[k] = *dev + in_at + span.lead_bytes;
      in_at += AlignUp(span.StagedBytes());
    }
    for (int k = 0; k < st.n_out; ++k) {
      const HostSpan& span = st.out[k].span;
      if (span.bytes == 0) continue;
      st.dev_out[k] = *dev + out_at + span.lead_bytes;
      st.out_offset[k] = out_at;
      out_at += AlignUp(span.StagedBytes());
    }
    rows[i] = A::MakeRows(options, problems[i], &st);
  }
  A::Describe(options, rows, temp, *host);

  const cudaStream_t stream = ctx.stream();
  absl::Status s = Check(cudaMemcpyAsync(*dev, *host, copy_in, cudaMemcpyHostToDevice, stream),
                         "copy to device");
  if (!s.ok()) return s;
  s = Check(static_cast<cudaError_t>(A::Launch(options, rows, *dev, temp, stream)),
            "scan kernel launch");
  if (!s.ok()) return s;
  if (out_bytes > 0) {
    s = Check(
        cudaMemcpyAsync(*host + copy_in, *dev + copy_in, out_bytes, cudaMemcpyDeviceToHost, stream),
        "copy to host");
    if (!s.ok()) return s;
  }
  s = Check(cudaStreamSynchronize(stream), "scan kernels");
  if (!s.ok()) return s;

  for (size_t i = 0; i < n; ++i) {
    const Staged& st = staged[i];
    for (int k = 0; k < st.n_out; ++k) {
      if (st.out[k].span.bytes == 0) continue;
      UnpackSpan(st.out[k].dst, *host + st.out_offset[k], st.out[k].span);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(const BackendConfig& config) {
  return CudaBackend::Create(config);
}

}  // namespace scanserve
