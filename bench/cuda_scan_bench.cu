// Kernel-level benchmark of the CUDA row scans (issue 7's table): linear_scan forward on every
// shape of the table, odd lengths beside each power of two, one ragged launch of 256 requests,
// associative add and linear_scan_backward, each against the memory floor measured in the same
// run:
//   floor = bytes that must move (each input read once, each output written once)
//           / device-to-device copy bandwidth (bytes read + written, 1 GiB copies).
// The kernels are called through the entry points the backend uses (scan_kernels.h) on device
// pointers; descriptors are copied to the device before timing, so the timed region holds what a
// batch's launch enqueues (look-back reset and kernels) and nothing else. Times are medians of
// many launches, each between two CUDA events, queued behind a spin kernel so that host launch
// gaps stay out of them, after warm-up, rotating over input sets that
// together exceed the L2 several times. One row of each case is checked against a float64
// recurrence on the host, so a fast wrong kernel cannot pass unnoticed. Cases marked "staged" run
// the rows laid out as the backend stages them (unaligned rows padded to a 16-byte or 128-byte
// pitch, see sc::StagedLayoutOf) beside the same case on packed rows. Beside each case, "stream" is
// the same bytes moved by the leanest one-launch kernel (StreamKernel), timed the same way: the
// floor at the case's own size, where a launch's start and its last wave's drain count. Single rows
// of 2^20 steps and more, which the issue's public kernels refuse, are also scanned by
// cub::DeviceScan (linear_scan as a scan of (a, x) pairs under the same composition), checked the
// same way.
//
// Usage: cuda_scan_bench [--json PATH] [--runs N] [--only SUBSTRING]
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/transform_iterator.h>
#include <thrust/iterator/transform_output_iterator.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cub/device/device_scan.cuh>
#include <string>
#include <vector>

#include "cuda/scan_kernels.h"
#include "scanserve/ops.h"

namespace {

using scanserve::AssociativeScanOptions;
using scanserve::DType;
using scanserve::DTypeName;
using scanserve::DTypeSize;
using scanserve::Layout;
using scanserve::LinearScanBackwardOptions;
using scanserve::LinearScanOptions;
using scanserve::ScanOperator;
using scanserve::SeqShape;
namespace sc = scanserve::cuda;

#define CHECK_CUDA(expr)                                                 \
  do {                                                                   \
    const cudaError_t err_ = (expr);                                     \
    if (err_ != cudaSuccess) {                                           \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, \
                   cudaGetErrorString(err_));                            \
      std::exit(1);                                                      \
    }                                                                    \
  } while (0)

__device__ uint32_t Hash(uint64_t i, uint32_t seed) {
  uint64_t x = i * 0x9E3779B97F4A7C15ull + seed * 0xBF58476D1CE4E5B9ull;
  x ^= x >> 31;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 29;
  return static_cast<uint32_t>(x);
}

// Uniform values in [lo, hi): decays near one keep long recurrences from vanishing to zero.
template <typename T>
__global__ void Fill(T* p, int64_t n, uint32_t seed, float lo, float hi) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float u = (Hash(static_cast<uint64_t>(i), seed) >> 8) * (1.0f / 16777216.0f);
    const float v = lo + (hi - lo) * u;
    if constexpr (sizeof(T) == 4) {
      p[i] = v;
    } else {
      p[i] = __float2bfloat16_rn(v);
    }
  }
}

// Holds the stream for `ns` nanoseconds, so that the timed launches queue up behind it and run
// back to back: each then measures the kernels, not the host's launch rate.
__global__ void Spin(unsigned long long ns) {
  unsigned long long t0;
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  } while (t - t0 < ns);
}

void FillDevice(void* p, DType dtype, int64_t n, uint32_t seed, float lo, float hi) {
  if (dtype == DType::kFloat32) {
    Fill<float><<<1024, 256>>>(static_cast<float*>(p), n, seed, lo, hi);
  } else {
    Fill<__nv_bfloat16><<<1024, 256>>>(static_cast<__nv_bfloat16*>(p), n, seed, lo, hi);
  }
  CHECK_CUDA(cudaGetLastError());
}

float BF16ToFloat(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Host copy of elements [first, first + n) of a device tensor, as float.
std::vector<float> Fetch(const void* p, DType dtype, int64_t first, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  if (dtype == DType::kFloat32) {
    CHECK_CUDA(cudaMemcpy(out.data(), static_cast<const float*>(p) + first, n * 4,
                          cudaMemcpyDeviceToHost));
  } else {
    std::vector<uint16_t> raw(static_cast<size_t>(n));
    CHECK_CUDA(cudaMemcpy(raw.data(), static_cast<const uint16_t*>(p) + first, n * 2,
                          cudaMemcpyDeviceToHost));
    for (int64_t i = 0; i < n; ++i) out[i] = BF16ToFloat(raw[i]);
  }
  return out;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

size_t AlignUp(size_t v, size_t a) { return (v + a - 1) / a * a; }

// Device-to-device copy bandwidth: bytes read plus bytes written, median of 1 GiB copies.
double CopyBandwidth() {
  const size_t bytes = size_t{1} << 30;
  void* src = nullptr;
  void* dst = nullptr;
  CHECK_CUDA(cudaMalloc(&src, bytes));
  CHECK_CUDA(cudaMalloc(&dst, bytes));
  CHECK_CUDA(cudaMemset(src, 1, bytes));
  CHECK_CUDA(cudaMemset(dst, 0, bytes));
  cudaEvent_t e0, e1;
  CHECK_CUDA(cudaEventCreate(&e0));
  CHECK_CUDA(cudaEventCreate(&e1));
  std::vector<double> ms;
  for (int i = 0; i < 23; ++i) {
    CHECK_CUDA(cudaEventRecord(e0));
    CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice));
    CHECK_CUDA(cudaEventRecord(e1));
    CHECK_CUDA(cudaEventSynchronize(e1));
    float t = 0;
    CHECK_CUDA(cudaEventElapsedTime(&t, e0, e1));
    if (i >= 3) ms.push_back(t);
  }
  CHECK_CUDA(cudaEventDestroy(e0));
  CHECK_CUDA(cudaEventDestroy(e1));
  CHECK_CUDA(cudaFree(src));
  CHECK_CUDA(cudaFree(dst));
  return 2.0 * bytes / (Median(ms) * 1e-3) / 1e9;
}

enum class Op { kLinear, kAssociativeAdd, kBackward, kBackwardStates };

const char* OpName(Op op) {
  switch (op) {
    case Op::kLinear:
      return "linear_scan";
    case Op::kAssociativeAdd:
      return "assoc_add";
    case Op::kBackward:
      return "linear_bwd";
    case Op::kBackwardStates:
      return "linear_bwd+states";
  }
  return "?";
}

struct Case {
  Op op;
  DType dtype;
  SeqShape shape;    // of one request
  int requests;      // requests in the one launch (each its own row group)
  double goal_ms;    // the issue's goal, 0 when it sets none in milliseconds
  double goal_frac;  // the issue's goal as a fraction of the floor, 0 when none
  std::string name;
  // Rows laid out as the CUDA backend stages them (sc::StagedLayoutOf: unaligned rows padded to a
  // 16-byte pitch, or whole 128-byte lines for rows of 64 KiB and more) rather than packed.
  bool staged = false;
};

// The layout of one request's sequence tensors: packed, or as the backend stages them.
sc::StagedLayout LayoutOf(const Case& c) {
  if (!c.staged) return {c.shape.length, 0};
  const bool right_to_left = c.op == Op::kBackward || c.op == Op::kBackwardStates;
  return sc::StagedLayoutOf(c.shape, Layout::kBDL, DTypeSize(c.dtype), right_to_left);
}

sc::RowGeometry GeometryOf(const Case& c) {
  return sc::StagedGeometryOf(c.shape, Layout::kBDL, LayoutOf(c));
}

// Inputs and outputs of one launch: tensors of every request, each request's tensors starting at a
// 256-byte boundary as the backend's staging places them.
struct Tensors {
  int n_in = 0;
  int n_out = 0;
  int64_t seq_elems = 0;  // elements of one request's sequence tensor (padding included)
  int64_t pitch = 0;      // elements from one row to the next
  void* base = nullptr;
  std::vector<std::vector<void*>> in;   // [request][k]
  std::vector<std::vector<void*>> out;  // [request][k]
  void* desc = nullptr;
  void* temp = nullptr;
};

// Per op: which sequence tensors are read and written (states are float32).
void TensorCounts(Op op, int* n_in, int* n_out) {
  switch (op) {
    case Op::kLinear:
      *n_in = 2;   // a, x
      *n_out = 1;  // y
      return;
    case Op::kAssociativeAdd:
      *n_in = 1;
      *n_out = 1;
      return;
    case Op::kBackward:
      *n_in = 3;   // a, x, dy (states recomputed)
      *n_out = 2;  // da, dx
      return;
    case Op::kBackwardStates:
      *n_in = 4;  // a, x, dy, states
      *n_out = 2;
      return;
  }
}

// Bytes that must move: each input read once, each output written once. x is not needed by the
// backward pass without b, but the op reads it (the states come from it), so it counts only when
// the states are recomputed.
double FloorBytes(const Case& c) {
  const double n = static_cast<double>(c.shape.elements()) * c.requests;
  const double e = static_cast<double>(DTypeSize(c.dtype));
  switch (c.op) {
    case Op::kLinear:
      return 3 * n * e;
    case Op::kAssociativeAdd:
      return 2 * n * e;
    case Op::kBackward:
      return 5 * n * e;
    case Op::kBackwardStates:
      return 4 * n * e + 4 * n;  // a, dy, da, dx in dtype; states float32
  }
  return 0;
}

struct Result {
  double ms = 0;
  double floor_ms = 0;
  double check = 0;  // max |got - want| / (|want| + 1) over the checked row
  int runs = 0;
  int sets = 0;
  double stream_ms = 0;    // the same bytes through StreamKernel (StreamSameBytes)
  int stream_vectors = 0;  // 16-byte vectors per thread and array of its fastest variant
  double cub_ms = 0;       // the same scan by cub::DeviceScan (TimeCub), 0 where not run
  double cub_check = 0;    // CheckRow of cub::DeviceScan's output
};

LinearScanOptions LinearOptions(const Case& c) {
  return {.dtype = c.dtype, .layout = Layout::kBDL};
}
LinearScanBackwardOptions BackwardOptions(const Case& c) {
  return {.dtype = c.dtype, .layout = Layout::kBDL, .has_states = c.op == Op::kBackwardStates};
}
AssociativeScanOptions AddOptions(const Case& c) {
  return {.dtype = c.dtype, .layout = Layout::kBDL, .op = ScanOperator::kAdd};
}

std::vector<sc::LinearScanRows> LinearRows(const Case& c, const Tensors& t) {
  std::vector<sc::LinearScanRows> rows(c.requests);
  for (int r = 0; r < c.requests; ++r) {
    rows[r].geometry = GeometryOf(c);
    rows[r].a = t.in[r][0];
    rows[r].x = t.in[r][1];
    rows[r].y = t.out[r][0];
  }
  return rows;
}
std::vector<sc::LinearScanBackwardRows> BackwardRows(const Case& c, const Tensors& t) {
  std::vector<sc::LinearScanBackwardRows> rows(c.requests);
  for (int r = 0; r < c.requests; ++r) {
    rows[r].geometry = GeometryOf(c);
    rows[r].a = t.in[r][0];
    rows[r].x = t.in[r][1];
    rows[r].dy = t.in[r][2];
    if (c.op == Op::kBackwardStates) rows[r].states = static_cast<const float*>(t.in[r][3]);
    rows[r].da = t.out[r][0];
    rows[r].dx = t.out[r][1];
  }
  return rows;
}
std::vector<sc::AssociativeScanRows> AddRows(const Case& c, const Tensors& t) {
  std::vector<sc::AssociativeScanRows> rows(c.requests);
  for (int r = 0; r < c.requests; ++r) {
    rows[r].geometry = GeometryOf(c);
    rows[r].x = t.in[r][0];
    rows[r].y = t.out[r][0];
  }
  return rows;
}

sc::LaunchSizes SizesOf(const Case& c, const Tensors& t) {
  switch (c.op) {
    case Op::kLinear: {
      const auto rows = LinearRows(c, t);
      return sc::LinearScanSizes(LinearOptions(c), rows);
    }
    case Op::kAssociativeAdd: {
      const auto rows = AddRows(c, t);
      return sc::AssociativeScanSizes(AddOptions(c), rows);
    }
    default: {
      const auto rows = BackwardRows(c, t);
      return sc::LinearScanBackwardSizes(BackwardOptions(c), rows);
    }
  }
}

void Describe(const Case& c, const Tensors& t, void* host) {
  switch (c.op) {
    case Op::kLinear: {
      const auto rows = LinearRows(c, t);
      sc::LinearScanDescribe(LinearOptions(c), rows, t.temp, host);
      return;
    }
    case Op::kAssociativeAdd: {
      const auto rows = AddRows(c, t);
      sc::AssociativeScanDescribe(AddOptions(c), rows, t.temp, host);
      return;
    }
    default: {
      const auto rows = BackwardRows(c, t);
      sc::LinearScanBackwardDescribe(BackwardOptions(c), rows, t.temp, host);
      return;
    }
  }
}

// The row lists are rebuilt outside the timed region: a launch takes them as a span.
struct Prepared {
  std::vector<sc::LinearScanRows> linear;
  std::vector<sc::LinearScanBackwardRows> backward;
  std::vector<sc::AssociativeScanRows> add;
};

int Launch(const Case& c, const Tensors& t, const Prepared& p, cudaStream_t s) {
  switch (c.op) {
    case Op::kLinear:
      return sc::LinearScanLaunch(LinearOptions(c), p.linear, t.desc, t.temp, s);
    case Op::kAssociativeAdd:
      return sc::AssociativeScanLaunch(AddOptions(c), p.add, t.desc, t.temp, s);
    default:
      return sc::LinearScanBackwardLaunch(BackwardOptions(c), p.backward, t.desc, t.temp, s);
  }
}

Tensors MakeTensors(const Case& c, uint32_t seed) {
  Tensors t;
  TensorCounts(c.op, &t.n_in, &t.n_out);
  const sc::StagedLayout layout = LayoutOf(c);
  t.seq_elems = c.shape.rows() * layout.pitch;
  t.pitch = layout.pitch;
  const size_t e = DTypeSize(c.dtype);
  const size_t seq = AlignUp(static_cast<size_t>(t.seq_elems) * e, 256);
  const size_t states = AlignUp(static_cast<size_t>(t.seq_elems) * 4, 256);
  const bool with_states = c.op == Op::kBackwardStates;
  const size_t per_request =
      seq * (t.n_in + t.n_out - (with_states ? 1 : 0)) + (with_states ? states : 0);
  CHECK_CUDA(cudaMalloc(&t.base, per_request * c.requests));
  char* at = static_cast<char*>(t.base);
  t.in.resize(c.requests);
  t.out.resize(c.requests);
  for (int r = 0; r < c.requests; ++r) {
    for (int k = 0; k < t.n_in; ++k) {
      const bool is_states = with_states && k == 3;
      t.in[r].push_back(at + layout.lead * (is_states ? 4 : e));
      if (is_states) {
        FillDevice(at, DType::kFloat32, t.seq_elems, seed + 97 * r + k, -1.0f, 1.0f);
      } else if (k == 0 && c.op != Op::kAssociativeAdd) {
        FillDevice(at, c.dtype, t.seq_elems, seed + 97 * r + k, 0.9f, 1.0f);  // decays
      } else {
        FillDevice(at, c.dtype, t.seq_elems, seed + 97 * r + k, -1.0f, 1.0f);
      }
      at += is_states ? states : seq;
    }
    for (int k = 0; k < t.n_out; ++k) {
      t.out[r].push_back(at + layout.lead * e);
      CHECK_CUDA(cudaMemset(at, 0xff, seq));  // NaN poison: unwritten outputs fail the check
      at += seq;
    }
  }
  const sc::LaunchSizes sizes = SizesOf(c, t);
  if (sizes.temp_bytes > 0) CHECK_CUDA(cudaMalloc(&t.temp, sizes.temp_bytes));
  std::vector<char> host(sizes.descriptor_bytes);
  Describe(c, t, host.data());
  CHECK_CUDA(cudaMalloc(&t.desc, std::max<size_t>(sizes.descriptor_bytes, 16)));
  CHECK_CUDA(cudaMemcpy(t.desc, host.data(), sizes.descriptor_bytes, cudaMemcpyHostToDevice));
  return t;
}

void FreeTensors(Tensors& t) {
  CHECK_CUDA(cudaFree(t.base));
  if (t.temp != nullptr) CHECK_CUDA(cudaFree(t.temp));
  CHECK_CUDA(cudaFree(t.desc));
}

// Checks the last row of the last request against a float64 recurrence. Tolerances: float32
// storage and arithmetic against float64 (long rows accumulate rounding), bf16 output rounding.
double CheckRow(const Case& c, const Tensors& t) {
  const int r = c.requests - 1;
  const int64_t L = c.shape.length;
  const int64_t first = (c.shape.rows() - 1) * t.pitch;
  double worst = 0;
  auto gap = [](double got, double want) -> double {
    if (std::isnan(got)) return HUGE_VAL;
    return std::abs(got - want) / (std::abs(want) + 1.0);
  };
  if (c.op == Op::kLinear) {
    const auto a = Fetch(t.in[r][0], c.dtype, first, L);
    const auto x = Fetch(t.in[r][1], c.dtype, first, L);
    const auto y = Fetch(t.out[r][0], c.dtype, first, L);
    double h = 0;
    for (int64_t i = 0; i < L; ++i) {
      h = static_cast<double>(a[i]) * h + x[i];
      worst = std::max(worst, gap(y[i], h));
    }
  } else if (c.op == Op::kAssociativeAdd) {
    const auto x = Fetch(t.in[r][0], c.dtype, first, L);
    const auto y = Fetch(t.out[r][0], c.dtype, first, L);
    double s = 0;
    double scale = 0;
    for (int64_t i = 0; i < L; ++i) {
      s += x[i];
      scale += std::abs(x[i]);
      // Sums of +-1 values grow like sqrt(i); measure against the sum of magnitudes so that
      // cancellation near zero does not read as error.
      if (std::isnan(y[i])) return HUGE_VAL;
      worst = std::max(worst, std::abs(y[i] - s) / (scale + 1.0));
    }
  } else {
    const auto a = Fetch(t.in[r][0], c.dtype, first, L);
    const auto x = Fetch(t.in[r][1], c.dtype, first, L);
    const auto dy = Fetch(t.in[r][2], c.dtype, first, L);
    const auto da = Fetch(t.out[r][0], c.dtype, first, L);
    const auto dx = Fetch(t.out[r][1], c.dtype, first, L);
    std::vector<double> h(static_cast<size_t>(L));
    if (c.op == Op::kBackwardStates) {
      const auto st = Fetch(t.in[r][3], DType::kFloat32, first, L);
      for (int64_t i = 0; i < L; ++i) h[i] = st[i];
    } else {
      double s = 0;
      for (int64_t i = 0; i < L; ++i) h[i] = s = static_cast<double>(a[i]) * s + x[i];
    }
    double dh = 0;
    for (int64_t i = L - 1; i >= 0; --i) {
      dh = dy[i] + (i + 1 < L ? static_cast<double>(a[i + 1]) * dh : 0.0);
      const double h_prev = i > 0 ? h[i - 1] : 0.0;
      worst = std::max(worst, gap(dx[i], dh));
      worst = std::max(worst, gap(da[i], dh * h_prev));
    }
  }
  return worst;
}

// Median milliseconds of `runs` calls of `launch(i)` on `stream`, each between two CUDA events,
// queued behind a spin kernel so that they run back to back and host launch gaps stay out of them.
template <typename Launch>
double TimeLaunches(cudaStream_t stream, int runs, Launch launch) {
  std::vector<cudaEvent_t> ev(2 * static_cast<size_t>(runs));
  for (cudaEvent_t& e : ev) CHECK_CUDA(cudaEventCreate(&e));
  Spin<<<1, 1, 0, stream>>>(2000000ull + 20000ull * runs);
  CHECK_CUDA(cudaGetLastError());
  for (int i = 0; i < runs; ++i) {
    CHECK_CUDA(cudaEventRecord(ev[2 * i], stream));
    launch(i);
    CHECK_CUDA(cudaEventRecord(ev[2 * i + 1], stream));
  }
  CHECK_CUDA(cudaStreamSynchronize(stream));
  std::vector<double> ms;
  for (int i = 0; i < runs; ++i) {
    float t = 0;
    CHECK_CUDA(cudaEventElapsedTime(&t, ev[2 * i], ev[2 * i + 1]));
    ms.push_back(t);
  }
  for (cudaEvent_t& e : ev) CHECK_CUDA(cudaEventDestroy(e));
  return Median(ms);
}

// Inputs and outputs of the streaming reference: kIn arrays read and kOut written, `vecs` 16-byte
// vectors each.
struct StreamArgs {
  const int4* in[4];
  int4* out[2];
  int64_t vecs;
};

// The leanest kernel that moves a case's bytes: each thread loads kV vectors of every input, all in
// flight before the first is used, combines them and stores kV vectors of every output. Nothing
// else: no scan, no barrier, no descriptor.
template <int kV, int kIn, int kOut>
__global__ void __launch_bounds__(256) StreamKernel(StreamArgs s) {
  const int64_t first = blockIdx.x * int64_t{256} * kV + threadIdx.x;
  int4 w[kIn][kV];
#pragma unroll
  for (int k = 0; k < kIn; ++k) {
#pragma unroll
    for (int v = 0; v < kV; ++v) {
      const int64_t i = first + v * 256;
      w[k][v] = i < s.vecs ? __ldg(s.in[k] + i) : int4{0, 0, 0, 0};
    }
  }
#pragma unroll
  for (int v = 0; v < kV; ++v) {
    const int64_t i = first + v * 256;
    if (i >= s.vecs) continue;
    int4 acc = w[0][v];
#pragma unroll
    for (int k = 1; k < kIn; ++k) {
      acc.x ^= w[k][v].x;
      acc.y ^= w[k][v].y;
      acc.z ^= w[k][v].z;
      acc.w ^= w[k][v].w;
    }
#pragma unroll
    for (int k = 0; k < kOut; ++k) {
      s.out[k][i] = int4{acc.x + k, acc.y, acc.z, acc.w};
    }
  }
}

template <int kV>
void LaunchStream(int n_in, int n_out, const StreamArgs& a, cudaStream_t st) {
  const int64_t per_block = int64_t{256} * kV;
  const unsigned blocks = static_cast<unsigned>((a.vecs + per_block - 1) / per_block);
  if (n_in == 2 && n_out == 1) {
    StreamKernel<kV, 2, 1><<<blocks, 256, 0, st>>>(a);
  } else if (n_in == 1 && n_out == 1) {
    StreamKernel<kV, 1, 1><<<blocks, 256, 0, st>>>(a);
  } else if (n_in == 3 && n_out == 2) {
    StreamKernel<kV, 3, 2><<<blocks, 256, 0, st>>>(a);
  } else {
    std::fprintf(stderr, "StreamKernel: no instance reads %d and writes %d arrays\n", n_in, n_out);
    std::exit(1);
  }
  CHECK_CUDA(cudaGetLastError());
}

// The floor at a case's own size: its bytes (FloorBytes, as kIn equal arrays read and kOut written)
// streamed by StreamKernel in one launch, timed as the case is (events, behind a spin, inputs
// rotated past the L2), fastest of 1, 2 and 4 vectors per thread. The 1 GiB copy bandwidth leaves
// out what a launch of a few microseconds pays in full: its start, the ramp to full bandwidth and
// the drain of its last wave.
void StreamSameBytes(const Case& c, int sets, int runs, cudaStream_t stream, Result* res) {
  int n_in = 0;
  int n_out = 0;
  TensorCounts(c.op, &n_in, &n_out);
  if (c.op == Op::kBackwardStates) n_in = 3;  // a, dy and the states; x is not read
  const double array_bytes = FloorBytes(c) / (n_in + n_out);
  const int64_t vecs = static_cast<int64_t>(std::ceil(array_bytes / 16));
  const size_t stride = AlignUp(static_cast<size_t>(vecs) * 16, 256);
  void* base = nullptr;
  CHECK_CUDA(cudaMalloc(&base, stride * (n_in + n_out) * sets));
  CHECK_CUDA(cudaMemset(base, 0x3c, stride * (n_in + n_out) * sets));
  std::vector<StreamArgs> args(sets);
  for (int s = 0; s < sets; ++s) {
    char* at = static_cast<char*>(base) + stride * (n_in + n_out) * s;
    for (int k = 0; k < n_in; ++k) args[s].in[k] = reinterpret_cast<const int4*>(at + stride * k);
    for (int k = 0; k < n_out; ++k) {
      args[s].out[k] = reinterpret_cast<int4*>(at + stride * (n_in + k));
    }
    args[s].vecs = vecs;
  }
  auto launch = [&](int v, const StreamArgs& a) {
    if (v == 1) LaunchStream<1>(n_in, n_out, a, stream);
    if (v == 2) LaunchStream<2>(n_in, n_out, a, stream);
    if (v == 4) LaunchStream<4>(n_in, n_out, a, stream);
  };
  res->stream_ms = HUGE_VAL;
  for (const int v : {1, 2, 4}) {
    for (int i = 0; i < 3; ++i) launch(v, args[i % sets]);
    const double m = TimeLaunches(stream, runs, [&](int i) { launch(v, args[(i + 1) % sets]); });
    if (m < res->stream_ms) {
      res->stream_ms = m;
      res->stream_vectors = v;
    }
  }
  CHECK_CUDA(cudaFree(base));
}

// cub::DeviceScan as a reference for single long rows, the case the issue's public kernels refuse:
// linear_scan as a scan of (a, x) pairs under the same composition, associative add as
// InclusiveSum, on the same float32 tensors.
struct PairAt {
  const float* a;
  const float* x;
  __device__ float2 operator()(int64_t i) const { return {__ldg(a + i), __ldg(x + i)}; }
};
struct ComposeLinear {
  __device__ float2 operator()(float2 l, float2 r) const {
    return {l.x * r.x, fmaf(r.x, l.y, r.y)};
  }
};
struct StateOf {
  __device__ float operator()(float2 p) const { return p.y; }
};

bool CubComparable(const Case& c) {
  return c.dtype == DType::kFloat32 && c.requests == 1 && c.shape.rows() == 1 &&
         c.shape.length >= (int64_t{1} << 20) &&
         (c.op == Op::kLinear || c.op == Op::kAssociativeAdd);
}

cudaError_t CubScan(const Case& c, const Tensors& t, void* temp, size_t& temp_bytes,
                    cudaStream_t stream) {
  const int64_t n = c.shape.length;
  const auto* x = static_cast<const float*>(t.in[0][c.op == Op::kLinear ? 1 : 0]);
  auto* y = static_cast<float*>(t.out[0][0]);
  if (c.op == Op::kAssociativeAdd) {
    return cub::DeviceScan::InclusiveSum(temp, temp_bytes, x, y, n, stream);
  }
  const auto* a = static_cast<const float*>(t.in[0][0]);
  auto in = thrust::make_transform_iterator(thrust::counting_iterator<int64_t>(0), PairAt{a, x});
  auto out = thrust::make_transform_output_iterator(y, StateOf{});
  return cub::DeviceScan::InclusiveScan(temp, temp_bytes, in, out, ComposeLinear{}, n, stream);
}

// Times CubScan over the case's input sets as RunCase times the kernel, after checking its output
// (poisoned first) against the float64 recurrence.
void TimeCub(const Case& c, std::vector<Tensors>& t, int runs, cudaStream_t stream, Result* res) {
  const int sets = static_cast<int>(t.size());
  size_t temp_bytes = 0;
  CHECK_CUDA(CubScan(c, t[0], nullptr, temp_bytes, nullptr));
  void* temp = nullptr;
  CHECK_CUDA(cudaMalloc(&temp, std::max<size_t>(temp_bytes, 16)));
  for (Tensors& x : t) {
    CHECK_CUDA(cudaMemsetAsync(x.out[0][0], 0xff, static_cast<size_t>(c.shape.length) * 4, stream));
  }
  for (int i = 0; i < 3; ++i) CHECK_CUDA(CubScan(c, t[i % sets], temp, temp_bytes, stream));
  CHECK_CUDA(cudaStreamSynchronize(stream));
  res->cub_check = CheckRow(c, t[(3 - 1) % sets]);
  res->cub_ms = TimeLaunches(stream, runs, [&](int i) {
    CHECK_CUDA(CubScan(c, t[(i + 1) % sets], temp, temp_bytes, stream));
  });
  CHECK_CUDA(cudaFree(temp));
}

Result RunCase(const Case& c, int runs_wanted, size_t l2_bytes) {
  Result res;
  const double floor_bytes = FloorBytes(c);
  // Enough input sets that one pass over them all is at least four L2s, within free memory.
  size_t free_bytes = 0;
  size_t total_bytes = 0;
  CHECK_CUDA(cudaMemGetInfo(&free_bytes, &total_bytes));
  const double set_bytes = floor_bytes * 1.05 + 4096.0 * c.requests;
  int sets = static_cast<int>(std::ceil(4.0 * l2_bytes / set_bytes));
  sets = std::clamp(sets, 2, 16);
  while (sets > 1 && sets * set_bytes > 0.8 * free_bytes) --sets;
  if (set_bytes > 0.8 * free_bytes) {
    std::fprintf(stderr, "%s: needs %.1f GB, %.1f GB free; skipped\n", c.name.c_str(),
                 set_bytes / 1e9, free_bytes / 1e9);
    res.ms = NAN;
    return res;
  }
  std::vector<Tensors> t;
  std::vector<Prepared> p;
  for (int s = 0; s < sets; ++s) {
    t.push_back(MakeTensors(c, 1000u * s + 17u));
    Prepared q;
    if (c.op == Op::kLinear) q.linear = LinearRows(c, t.back());
    if (c.op == Op::kAssociativeAdd) q.add = AddRows(c, t.back());
    if (c.op == Op::kBackward || c.op == Op::kBackwardStates)
      q.backward = BackwardRows(c, t.back());
    p.push_back(std::move(q));
  }
  CHECK_CUDA(cudaDeviceSynchronize());
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const int max_runs = runs_wanted;
  std::vector<cudaEvent_t> ev(2);
  for (cudaEvent_t& e : ev) CHECK_CUDA(cudaEventCreate(&e));

  // Warm-up: module load, first-touch, and a first estimate that sizes the run count.
  for (int i = 0; i < 3; ++i) {
    CHECK_CUDA(static_cast<cudaError_t>(Launch(c, t[i % sets], p[i % sets], stream)));
  }
  CHECK_CUDA(cudaStreamSynchronize(stream));
  res.check = CheckRow(c, t[(3 - 1) % sets]);

  CHECK_CUDA(cudaEventRecord(ev[0], stream));
  CHECK_CUDA(static_cast<cudaError_t>(Launch(c, t[0], p[0], stream)));
  CHECK_CUDA(cudaEventRecord(ev[1], stream));
  CHECK_CUDA(cudaEventSynchronize(ev[1]));
  float est = 0;
  CHECK_CUDA(cudaEventElapsedTime(&est, ev[0], ev[1]));
  // About a quarter second of timed launches, between 20 and max_runs of them.
  const int runs = std::clamp(static_cast<int>(250.0 / std::max(est, 0.001f)), 20, max_runs);
  for (cudaEvent_t& e : ev) CHECK_CUDA(cudaEventDestroy(e));

  res.ms = TimeLaunches(stream, runs, [&](int i) {
    const int s = (i + 1) % sets;
    CHECK_CUDA(static_cast<cudaError_t>(Launch(c, t[s], p[s], stream)));
  });
  if (CubComparable(c)) TimeCub(c, t, runs, stream, &res);
  for (Tensors& x : t) FreeTensors(x);
  res.runs = runs;
  res.sets = sets;
  StreamSameBytes(c, sets, runs, stream, &res);
  CHECK_CUDA(cudaStreamDestroy(stream));
  return res;
}

std::string ShapeText(const Case& c) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "(%lld,%lld,%lld)", static_cast<long long>(c.shape.batch),
                static_cast<long long>(c.shape.dim), static_cast<long long>(c.shape.length));
  return c.requests > 1 ? std::to_string(c.requests) + "x" + buf : std::string(buf);
}

std::vector<Case> Cases() {
  std::vector<Case> cs;
  auto add = [&](Op op, DType dt, SeqShape s, int req, double goal_ms, double goal_frac) {
    Case c{op, dt, s, req, goal_ms, goal_frac, ""};
    c.name = std::string(OpName(op)) + " " + std::string(DTypeName(dt)) + " " + ShapeText(c);
    cs.push_back(c);
    // The same case staged as the backend stages it, where that differs from packed rows.
    c.staged = true;
    const sc::StagedLayout l = LayoutOf(c);
    if (s.rows() > 1 && (l.pitch != s.length || l.lead != 0)) {
      c.name += " staged";
      cs.push_back(c);
    }
  };
  const DType f32 = DType::kFloat32;
  const DType bf16 = DType::kBFloat16;
  // The issue's table, each power of two followed by odd lengths beside it.
  struct Row {
    DType dt;
    int64_t L;
    double goal_ms;
    double goal_frac;
  };
  const Row table[] = {{f32, 65536, 3.24, 0},
                       {bf16, 65536, 1.63, 0},
                       {f32, 8192, 0.405, 0},
                       {f32, 512, 0.0277, 0.9},
                       {f32, 128, 0.0089, 0.7}};
  for (const Row& r : table) {
    add(Op::kLinear, r.dt, {8, 1536, r.L}, 1, r.goal_ms, r.goal_frac);
    add(Op::kLinear, r.dt, {8, 1536, r.L - 1}, 1, 0, 0);
    add(Op::kLinear, r.dt, {8, 1536, r.L + 1}, 1, 0, 0);
  }
  add(Op::kLinear, f32, {1, 64, 1024}, 256, 0.1, 0);
  add(Op::kLinear, f32, {1, 1, int64_t{1} << 24}, 1, 0, 0.7);
  add(Op::kLinear, f32, {1, 1, (int64_t{1} << 24) - 1}, 1, 0, 0);
  add(Op::kLinear, f32, {1, 1, (int64_t{1} << 24) + 1}, 1, 0, 0);
  add(Op::kAssociativeAdd, f32, {8, 1536, 8192}, 1, 0, 0);
  add(Op::kAssociativeAdd, f32, {8, 1536, 65536}, 1, 0, 0);
  add(Op::kAssociativeAdd, f32, {1, 1, int64_t{1} << 24}, 1, 0, 0);
  add(Op::kBackward, f32, {8, 1536, 8192}, 1, 0, 0);
  add(Op::kBackwardStates, f32, {8, 1536, 8192}, 1, 0, 0);
  add(Op::kBackward, bf16, {8, 1536, 8192}, 1, 0, 0);
  return cs;
}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path;
  std::string only;
  int runs = 300;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--json" && i + 1 < argc) {
      json_path = argv[++i];
    } else if (a == "--runs" && i + 1 < argc) {
      runs = std::max(5, std::atoi(argv[++i]));
    } else if (a == "--only" && i + 1 < argc) {
      only = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--json PATH] [--runs N] [--only SUBSTRING]\n", argv[0]);
      return 2;
    }
  }
  int device = 0;
  CHECK_CUDA(cudaGetDevice(&device));
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, device));
  const double bw = CopyBandwidth();
  std::printf("device %s, %d SMs, L2 %d MB; copy bandwidth %.0f GB/s (read + write)\n", prop.name,
              prop.multiProcessorCount, prop.l2CacheSize >> 20, bw);

  struct Row {
    Case c;
    Result r;
  };
  std::vector<Row> rows;
  for (const Case& c : Cases()) {
    if (!only.empty() && c.name.find(only) == std::string::npos) continue;
    Result r = RunCase(c, runs, static_cast<size_t>(prop.l2CacheSize));
    r.floor_ms = FloorBytes(c) / (bw * 1e9) * 1e3;
    std::printf(
        "%-44s %9.4f ms  floor %9.4f  %5.1f%%  stream %9.4f (x%d)  check %.1e  (%d runs, %d "
        "sets)\n",
        c.name.c_str(), r.ms, r.floor_ms, 100 * r.floor_ms / r.ms, r.stream_ms, r.stream_vectors,
        r.check, r.runs, r.sets);
    if (r.cub_ms > 0) {
      std::printf("%-44s %9.4f ms  cub::DeviceScan, same rows  check %.1e\n", "", r.cub_ms,
                  r.cub_check);
    }
    std::fflush(stdout);
    rows.push_back({c, r});
  }

  // Odd lengths: their efficiency against the power of two they sit beside (goal >= 90% of it).
  auto pow2_frac = [&](const Row& row) -> double {
    const int64_t L = row.c.shape.length;
    for (const Row& o : rows) {
      const int64_t M = o.c.shape.length;
      if (o.c.op == row.c.op && o.c.dtype == row.c.dtype && o.c.requests == row.c.requests &&
          o.c.shape.batch == row.c.shape.batch && o.c.shape.dim == row.c.shape.dim && !o.c.staged &&
          (M & (M - 1)) == 0 && (M == L - 1 || M == L + 1)) {
        return o.r.floor_ms / o.r.ms;
      }
    }
    return 0;
  };

  bool all_checks = true;
  std::printf("== table (copy bandwidth %.0f GB/s, %s)\n", bw, prop.name);
  std::printf("%-44s %10s %10s %7s %10s %7s %-16s %s\n", "case", "median ms", "floor ms", "floor%",
              "stream ms", "stream%", "goal", "met");
  for (const Row& row : rows) {
    const double frac = row.r.floor_ms / row.r.ms;
    std::string goal = "-";
    std::string met = "";
    char buf[64];
    if (row.c.goal_ms > 0) {
      std::snprintf(buf, sizeof buf, "<= %.4g ms", row.c.goal_ms);
      goal = buf;
      met = row.r.ms <= row.c.goal_ms ? "yes" : "NO";
    } else if (row.c.goal_frac > 0) {
      std::snprintf(buf, sizeof buf, ">= %.0f%% floor", 100 * row.c.goal_frac);
      goal = buf;
      met = frac >= row.c.goal_frac ? "yes" : "NO";
    } else if (const double p = pow2_frac(row); p > 0) {
      std::snprintf(buf, sizeof buf, ">= %.1f%% (0.9x2^k)", 90 * p);
      goal = buf;
      met = frac >= 0.9 * p ? "yes" : "NO";
    }
    const bool ok = row.r.check < (row.c.dtype == DType::kFloat32 ? 1e-3 : 5e-2);
    all_checks = all_checks && ok;
    std::printf("%-44s %10.4f %10.4f %6.1f%% %10.4f %6.1f%% %-16s %s%s\n", row.c.name.c_str(),
                row.r.ms, row.r.floor_ms, 100 * frac, row.r.stream_ms,
                100 * row.r.stream_ms / row.r.ms, goal.c_str(), met.c_str(),
                ok ? "" : "  CHECK FAILED");
  }

  std::printf(
      "== cub::DeviceScan on the same single rows (linear_scan as a scan of (a, x) pairs)\n");
  for (const Row& row : rows) {
    if (row.r.cub_ms <= 0) continue;
    const bool ok = row.r.cub_check < 1e-3;
    all_checks = all_checks && ok;
    std::printf("%-44s %10.4f ms %6.1f%% of floor; scanserve %.4f ms (%.2fx)%s\n",
                row.c.name.c_str(), row.r.cub_ms, 100 * row.r.floor_ms / row.r.cub_ms, row.r.ms,
                row.r.cub_ms / row.r.ms, ok ? "" : "  CHECK FAILED");
  }

  if (!json_path.empty()) {
    FILE* f = std::fopen(json_path.c_str(), "w");
    if (f == nullptr) {
      std::fprintf(stderr, "cannot write %s\n", json_path.c_str());
      return 1;
    }
    std::fprintf(f, "{\"device\": \"%s\", \"copy_bandwidth_gbs\": %.1f, \"cases\": [", prop.name,
                 bw);
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& row = rows[i];
      std::fprintf(f,
                   "%s\n {\"name\": \"%s\", \"op\": \"%s\", \"dtype\": \"%s\", \"requests\": %d, "
                   "\"B\": %lld, \"D\": %lld, \"L\": %lld, \"median_ms\": %.6f, "
                   "\"floor_ms\": %.6f, \"fraction_of_floor\": %.4f, \"goal_ms\": %.4f, "
                   "\"goal_fraction\": %.2f, \"check\": %.3e, \"runs\": %d, \"sets\": %d, "
                   "\"staged\": %s, \"stream_ms\": %.6f, \"stream_vectors\": %d, \"cub_ms\": %.6f}",
                   i ? "," : "", row.c.name.c_str(), OpName(row.c.op),
                   std::string(DTypeName(row.c.dtype)).c_str(), row.c.requests,
                   static_cast<long long>(row.c.shape.batch),
                   static_cast<long long>(row.c.shape.dim),
                   static_cast<long long>(row.c.shape.length), row.r.ms, row.r.floor_ms,
                   row.r.floor_ms / row.r.ms, row.c.goal_ms, row.c.goal_frac, row.r.check,
                   row.r.runs, row.r.sets, row.c.staged ? "true" : "false", row.r.stream_ms,
                   row.r.stream_vectors, row.r.cub_ms);
    }
    std::fprintf(f, "\n]}\n");
    std::fclose(f);
  }
  return all_checks ? 0 : 1;
}
