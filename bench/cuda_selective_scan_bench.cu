// Kernel-level benchmark of the CUDA selective scan (issue 4's table), with its two floors measured
// in the same run:
//   memory floor = bytes of u, delta, z, y (input dtype) plus variable B and C, each moved once,
//                  over the measured device-to-device copy bandwidth (bytes read + written);
//   exp floor    = B*D*N*L exp2 evaluations over the measured rate of a kernel doing only exp2.
// Every shape runs with variable B and C (one group), D_skip, z, delta_bias and softplus, BDL.
// Times are medians over many launches (CUDA events, after warm-up), rotating over several input
// sets so that no run finds its inputs in L2. Besides the dispatch's own geometry, the other
// geometries are timed too (the tuning table's evidence).
//
// Usage: cuda_selective_scan_bench [--json PATH] [--runs N] [--no-variants] [--only I]
//                                   [--shape B,D,N,L,DTYPE]...
// (--only I times the table's I-th shape alone, for profilers. --shape, repeatable, times the
// given shapes instead of the table's, with the same options: how the time scales with D, L or N
// around a goal shape. DTYPE is float32, float16 or bfloat16.)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "cuda/selective_scan_kernel.h"
#include "scanserve/ops.h"

namespace {

using scanserve::DType;
using scanserve::DTypeName;
using scanserve::DTypeSize;
using scanserve::Layout;
using scanserve::SelectiveScanOptions;
using scanserve::SeqShape;
using scanserve::cuda::SelectiveScanGeometry;
using scanserve::cuda::SelectiveScanRows;

#define CHECK_CUDA(expr)                                                 \
  do {                                                                   \
    const cudaError_t err_ = (expr);                                     \
    if (err_ != cudaSuccess) {                                           \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, \
                   cudaGetErrorString(err_));                            \
      std::exit(1);                                                      \
    }                                                                    \
  } while (0)

__device__ __forceinline__ float Ex2(float x) {
  float y;
  asm volatile("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Only exp2: eight independent chains per thread, one FFMA each to keep the chain's values bounded.
constexpr int kExpChains = 8;
constexpr int kExpIters = 4096;
__global__ void Exp2Only(float* out) {
  float x[kExpChains];
#pragma unroll
  for (int c = 0; c < kExpChains; ++c) x[c] = 0.01f * (threadIdx.x + c);
  for (int i = 0; i < kExpIters; ++i) {
#pragma unroll
    for (int c = 0; c < kExpChains; ++c) x[c] = Ex2(fmaf(x[c], -0.5f, 0.25f));
  }
  float s = 0.f;
#pragma unroll
  for (int c = 0; c < kExpChains; ++c) s += x[c];
  out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}

__device__ uint32_t Hash(uint64_t i, uint32_t seed) {
  uint64_t x = i * 0x9E3779B97F4A7C15ull + seed * 0xBF58476D1CE4E5B9ull;
  x ^= x >> 31;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 29;
  return static_cast<uint32_t>(x);
}

__device__ float UniformAt(uint64_t i, uint32_t seed, float lo, float hi) {
  return lo + (hi - lo) * (Hash(i, seed) >> 8) * (1.0f / 16777216.0f);
}

__global__ void FillKernel(void* p, long long count, int dtype, uint32_t seed, float lo, float hi,
                           int negexp) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    float v = UniformAt(i, seed, lo, hi);
    if (negexp) v = -expf(v);
    if (dtype == 0) {
      static_cast<float*>(p)[i] = v;
    } else if (dtype == 1) {
      static_cast<unsigned short*>(p)[i] = __half_as_ushort(__float2half_rn(v));
    } else {
      static_cast<unsigned short*>(p)[i] = __bfloat16_as_ushort(__float2bfloat16_rn(v));
    }
  }
}

void Fill(void* p, long long count, DType dtype, uint32_t seed, float lo, float hi,
          bool negexp = false) {
  const int code = dtype == DType::kFloat32 ? 0 : (dtype == DType::kFloat16 ? 1 : 2);
  FillKernel<<<1024, 256>>>(p, count, code, seed, lo, hi, negexp ? 1 : 0);
  CHECK_CUDA(cudaGetLastError());
}

float Median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double MeasureCopyBandwidth(cudaStream_t stream) {
  const size_t bytes = size_t{1} << 30;
  void* a = nullptr;
  void* b = nullptr;
  CHECK_CUDA(cudaMalloc(&a, bytes));
  CHECK_CUDA(cudaMalloc(&b, bytes));
  CHECK_CUDA(cudaMemsetAsync(a, 1, bytes, stream));
  cudaEvent_t e0, e1;
  CHECK_CUDA(cudaEventCreate(&e0));
  CHECK_CUDA(cudaEventCreate(&e1));
  std::vector<float> ms;
  for (int i = 0; i < 23; ++i) {
    CHECK_CUDA(cudaEventRecord(e0, stream));
    CHECK_CUDA(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, stream));
    CHECK_CUDA(cudaEventRecord(e1, stream));
    CHECK_CUDA(cudaEventSynchronize(e1));
    float t = 0;
    CHECK_CUDA(cudaEventElapsedTime(&t, e0, e1));
    if (i >= 3) ms.push_back(t);
  }
  CHECK_CUDA(cudaEventDestroy(e0));
  CHECK_CUDA(cudaEventDestroy(e1));
  CHECK_CUDA(cudaFree(a));
  CHECK_CUDA(cudaFree(b));
  return 2.0 * bytes / (Median(ms) * 1e-3);  // bytes read + written per second
}

double MeasureExp2Rate(cudaStream_t stream, int sms) {
  const int blocks = sms * 8;
  const int threads = 256;
  float* out = nullptr;
  CHECK_CUDA(cudaMalloc(&out, sizeof(float) * blocks * threads));
  cudaEvent_t e0, e1;
  CHECK_CUDA(cudaEventCreate(&e0));
  CHECK_CUDA(cudaEventCreate(&e1));
  std::vector<float> ms;
  for (int i = 0; i < 13; ++i) {
    CHECK_CUDA(cudaEventRecord(e0, stream));
    Exp2Only<<<blocks, threads, 0, stream>>>(out);
    CHECK_CUDA(cudaGetLastError());
    CHECK_CUDA(cudaEventRecord(e1, stream));
    CHECK_CUDA(cudaEventSynchronize(e1));
    float t = 0;
    CHECK_CUDA(cudaEventElapsedTime(&t, e0, e1));
    if (i >= 3) ms.push_back(t);
  }
  CHECK_CUDA(cudaEventDestroy(e0));
  CHECK_CUDA(cudaEventDestroy(e1));
  CHECK_CUDA(cudaFree(out));
  const double evals = static_cast<double>(blocks) * threads * kExpIters * kExpChains;
  return evals / (Median(ms) * 1e-3);
}

struct Shape {
  int64_t batch, dim, n, length;
  DType dtype;
  double mamba_ms;  // mamba_ssm selective_scan_fwd on the H100 (issue 4); 0 where not measured
  double goal_ms;   // 0 where the issue sets none
};

// "B,D,N,L,DTYPE" as --shape takes it; false on anything else.
bool ParseShape(const std::string& text, Shape& out) {
  long long b = 0, d = 0, n = 0, l = 0;
  char dtype[16] = {};
  if (std::sscanf(text.c_str(), "%lld,%lld,%lld,%lld,%15s", &b, &d, &n, &l, dtype) != 5) {
    return false;
  }
  if (b < 1 || d < 1 || n < 1 || n > 256 || l < 1) return false;
  const std::string name = dtype;
  DType t;
  if (name == "float32") {
    t = DType::kFloat32;
  } else if (name == "float16") {
    t = DType::kFloat16;
  } else if (name == "bfloat16") {
    t = DType::kBFloat16;
  } else {
    return false;
  }
  out = Shape{b, d, n, l, t, 0.0, 0.0};
  return true;
}

struct Timing {
  SelectiveScanGeometry geo;
  float median_ms = 0;
  float min_ms = 0;
};

// Device buffers of one input set plus its outputs.
struct Set {
  std::vector<void*> buffers;
  SelectiveScanRows rows;
};

void* Alloc(Set& set, size_t bytes) {
  void* p = nullptr;
  CHECK_CUDA(cudaMalloc(&p, bytes));
  set.buffers.push_back(p);
  return p;
}

Set MakeSet(const SelectiveScanOptions& o, const Shape& sh, uint32_t seed) {
  Set set;
  const SeqShape s{sh.batch, sh.dim, sh.length};
  const size_t elem = DTypeSize(o.dtype);
  const long long seq = s.elements();
  const long long bc = sh.batch * o.groups * sh.n * sh.length;
  SelectiveScanRows& r = set.rows;
  r.shape = s;
  void* u = Alloc(set, seq * elem);
  void* delta = Alloc(set, seq * elem);
  void* z = Alloc(set, seq * elem);
  void* B = Alloc(set, bc * elem);
  void* C = Alloc(set, bc * elem);
  auto* A = static_cast<float*>(Alloc(set, sh.dim * sh.n * sizeof(float)));
  auto* dskip = static_cast<float*>(Alloc(set, sh.dim * sizeof(float)));
  auto* bias = static_cast<float*>(Alloc(set, sh.dim * sizeof(float)));
  Fill(u, seq, o.dtype, seed + 1, -1.f, 1.f);
  Fill(delta, seq, o.dtype, seed + 2, -4.f, 1.f);
  Fill(z, seq, o.dtype, seed + 3, -3.f, 3.f);
  Fill(B, bc, o.dtype, seed + 4, -1.f, 1.f);
  Fill(C, bc, o.dtype, seed + 5, -1.f, 1.f);
  Fill(A, sh.dim * sh.n, DType::kFloat32, seed + 6, -2.5f, 2.0f, /*negexp=*/true);
  Fill(dskip, sh.dim, DType::kFloat32, seed + 7, -1.f, 1.f);
  Fill(bias, sh.dim, DType::kFloat32, seed + 8, -1.f, 0.5f);
  r.u = u;
  r.delta = delta;
  r.z = z;
  r.B = B;
  r.C = C;
  r.A = A;
  r.d_skip = dskip;
  r.delta_bias = bias;
  r.y = Alloc(set, seq * elem);
  return set;
}

// Times the dispatch's own choice when `force` is null, else the forced geometry.
Timing TimeGeometry(const SelectiveScanOptions& o, std::vector<Set>& sets,
                    const SelectiveScanGeometry& geo, const SelectiveScanGeometry* force, int runs,
                    cudaStream_t stream) {
  const size_t ws = scanserve::cuda::SelectiveScanWorkspaceBytes(1);
  std::vector<void*> host_ws(sets.size());
  std::vector<void*> dev_ws(sets.size());
  for (size_t i = 0; i < sets.size(); ++i) {
    CHECK_CUDA(cudaMallocHost(&host_ws[i], ws));
    CHECK_CUDA(cudaMalloc(&dev_ws[i], ws));
  }
  auto launch = [&](size_t i, bool upload) {
    const auto res = scanserve::cuda::LaunchSelectiveScan(
        o, std::span<const SelectiveScanRows>(&sets[i].rows, 1), host_ws[i], dev_ws[i], stream,
        upload, force);
    if (res.cuda_error != 0) {
      std::fprintf(stderr, "%s: %s\n", res.what.c_str(),
                   cudaGetErrorString(static_cast<cudaError_t>(res.cuda_error)));
      std::exit(1);
    }
  };
  for (size_t i = 0; i < sets.size(); ++i) launch(i, true);  // descriptors + warm-up
  for (size_t i = 0; i < sets.size(); ++i) launch(i, false);
  CHECK_CUDA(cudaStreamSynchronize(stream));
  cudaEvent_t e0, e1;
  CHECK_CUDA(cudaEventCreate(&e0));
  CHECK_CUDA(cudaEventCreate(&e1));
  std::vector<float> ms;
  for (int k = 0; k < runs; ++k) {
    const size_t i = static_cast<size_t>(k) % sets.size();
    CHECK_CUDA(cudaEventRecord(e0, stream));
    launch(i, false);
    CHECK_CUDA(cudaEventRecord(e1, stream));
    CHECK_CUDA(cudaEventSynchronize(e1));
    float t = 0;
    CHECK_CUDA(cudaEventElapsedTime(&t, e0, e1));
    ms.push_back(t);
  }
  CHECK_CUDA(cudaEventDestroy(e0));
  CHECK_CUDA(cudaEventDestroy(e1));
  for (size_t i = 0; i < sets.size(); ++i) {
    CHECK_CUDA(cudaFreeHost(host_ws[i]));
    CHECK_CUDA(cudaFree(dev_ws[i]));
  }
  Timing t;
  t.geo = geo;
  t.median_ms = Median(ms);
  t.min_ms = *std::min_element(ms.begin(), ms.end());
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path;
  int runs = 50;
  bool variants = true;
  int only = -1;
  std::vector<Shape> custom;
  const char* usage =
      "usage: %s [--json PATH] [--runs N] [--no-variants] [--only I] [--shape B,D,N,L,DTYPE]...\n";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--json" && i + 1 < argc) {
      json_path = argv[++i];
    } else if (a == "--runs" && i + 1 < argc) {
      runs = std::max(3, std::atoi(argv[++i]));
    } else if (a == "--no-variants") {
      variants = false;
    } else if (a == "--only" && i + 1 < argc) {
      only = std::atoi(argv[++i]);
    } else if (a == "--shape" && i + 1 < argc) {
      Shape sh;
      if (!ParseShape(argv[++i], sh)) {
        std::fprintf(stderr,
                     "--shape wants B,D,N,L,DTYPE (N 1..256, DTYPE float32, float16 or "
                     "bfloat16), got %s\n",
                     argv[i]);
        return 2;
      }
      custom.push_back(sh);
    } else {
      std::fprintf(stderr, usage, argv[0]);
      return 2;
    }
  }
  int device = 0;
  CHECK_CUDA(cudaSetDevice(device));
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, device));
  int clock_khz = 0;
  cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, device);
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  char date[64];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));

  const double copy_bw = MeasureCopyBandwidth(stream);
  const double exp_rate = MeasureExp2Rate(stream, prop.multiProcessorCount);
  std::printf("device: %s, %d SMs, L2 %d MiB, max clock %d MHz; %s\n", prop.name,
              prop.multiProcessorCount, prop.l2CacheSize >> 20, clock_khz / 1000, date);
  std::printf("measured copy bandwidth: %.0f GB/s (read + write); exp2 rate: %.3f Tex2/s\n",
              copy_bw * 1e-9, exp_rate * 1e-12);

  const std::vector<Shape> table = {
      {8, 1536, 16, 2048, DType::kFloat32, 0.882, 0.44},
      {8, 1536, 16, 2048, DType::kBFloat16, 0.451, 0.225},
      {8, 1536, 16, 8192, DType::kFloat32, 3.80, 1.90},
      {1, 5120, 16, 2048, DType::kBFloat16, 0.200, 0.100},
      {16, 768, 16, 1024, DType::kFloat32, 0.442, 0.221},
  };
  const std::vector<Shape>& shapes = custom.empty() ? table : custom;
  struct Row {
    Shape sh;
    Timing best_default;
    std::vector<Timing> all;
    double mem_floor_ms, exp_floor_ms;
  };
  std::vector<Row> rows;
  for (size_t si = 0; si < shapes.size(); ++si) {
    if (only >= 0 && static_cast<size_t>(only) != si) continue;
    const Shape& sh = shapes[si];
    SelectiveScanOptions o;
    o.dtype = sh.dtype;
    o.layout = Layout::kBDL;
    o.state_dim = static_cast<int32_t>(sh.n);
    o.groups = 1;
    o.variable_b = o.variable_c = true;
    o.has_d_skip = o.has_z = o.has_delta_bias = o.delta_softplus = true;
    const size_t elem = DTypeSize(sh.dtype);
    const double seq_bytes = static_cast<double>(sh.batch) * sh.dim * sh.length * elem;
    const double bc_bytes = static_cast<double>(sh.batch) * o.groups * sh.n * sh.length * elem;
    const double bytes = 4 * seq_bytes + 2 * bc_bytes;
    // Enough input sets that consecutive runs never share data through L2 (at least three).
    const int nsets = static_cast<int>(
        std::max(3.0, std::ceil(3.0 * prop.l2CacheSize / (3 * seq_bytes + 2 * bc_bytes))));
    std::vector<Set> sets;
    for (int i = 0; i < nsets; ++i) sets.push_back(MakeSet(o, sh, 1000u * (i + 1)));
    CHECK_CUDA(cudaDeviceSynchronize());

    Row row;
    row.sh = sh;
    row.mem_floor_ms = bytes / copy_bw * 1e3;
    row.exp_floor_ms = static_cast<double>(sh.batch) * sh.dim * sh.n * sh.length / exp_rate * 1e3;
    SelectiveScanGeometry chosen;
    chosen.states_per_thread = scanserve::cuda::SelectiveScanStatesPerThread(o, sets[0].rows.shape);
    chosen.rows_per_block = scanserve::cuda::SelectiveScanRowsPerBlock(
        o, chosen.states_per_thread, std::span<const SelectiveScanRows>(&sets[0].rows, 1));
    row.best_default = TimeGeometry(o, sets, chosen, nullptr, runs, stream);
    if (variants) {
      for (int s : {2, 4, 8}) {
        for (int r : {8, 12, 16, 20, 24, 28, 32, 64}) {
          const int p = static_cast<int>((sh.n + s - 1) / s);
          if (r * p > 256 || (s == chosen.states_per_thread && r == chosen.rows_per_block)) {
            continue;
          }
          const SelectiveScanGeometry forced{s, r};
          row.all.push_back(TimeGeometry(o, sets, forced, &forced, runs, stream));
        }
      }
    }
    CHECK_CUDA(cudaDeviceSynchronize());
    for (Set& set : sets) {
      for (void* p : set.buffers) CHECK_CUDA(cudaFree(p));
    }
    rows.push_back(row);
  }

  std::printf("\nvariants (states per thread S, rows per block R): median ms\n");
  for (const Row& r : rows) {
    std::printf("(%ld,%ld,%ld,%ld) %-8s default S=%d R=%d %.4f |", static_cast<long>(r.sh.batch),
                static_cast<long>(r.sh.dim), static_cast<long>(r.sh.n),
                static_cast<long>(r.sh.length), std::string(DTypeName(r.sh.dtype)).c_str(),
                r.best_default.geo.states_per_thread, r.best_default.geo.rows_per_block,
                r.best_default.median_ms);
    for (const Timing& t : r.all) {
      std::printf(" S%dR%d %.4f", t.geo.states_per_thread, t.geo.rows_per_block, t.median_ms);
    }
    std::printf("\n");
  }

  std::printf(
      "\nselective_scan, variable B/C (G=1), D_skip, z, delta_bias, softplus; BDL; median of %d\n",
      runs);
  std::printf("%-22s %-8s %9s %9s %9s %9s %9s %8s %8s %6s\n", "(B, D, N, L)", "dtype", "ms", "goal",
              "mamba", "mem_flr", "exp_flr", "x_mem", "x_exp", "met");
  for (const Row& r : rows) {
    char shape[64];
    std::snprintf(shape, sizeof(shape), "(%ld, %ld, %ld, %ld)", static_cast<long>(r.sh.batch),
                  static_cast<long>(r.sh.dim), static_cast<long>(r.sh.n),
                  static_cast<long>(r.sh.length));
    const double t = r.best_default.median_ms;
    // Shapes from --shape have neither a goal nor a Mamba time: those columns show "-".
    const bool has_goal = r.sh.goal_ms > 0;
    char goal[16] = "-";
    char mamba[16] = "-";
    if (has_goal) std::snprintf(goal, sizeof(goal), "%.3f", r.sh.goal_ms);
    if (r.sh.mamba_ms > 0) std::snprintf(mamba, sizeof(mamba), "%.3f", r.sh.mamba_ms);
    std::printf("%-22s %-8s %9.4f %9s %9s %9.4f %9.4f %8.2f %8.2f %6s\n", shape,
                std::string(DTypeName(r.sh.dtype)).c_str(), t, goal, mamba, r.mem_floor_ms,
                r.exp_floor_ms, t / r.mem_floor_ms, t / r.exp_floor_ms,
                !has_goal ? "-" : (t <= r.sh.goal_ms ? "yes" : "no"));
  }

  if (!json_path.empty()) {
    FILE* f = std::fopen(json_path.c_str(), "w");
    if (f == nullptr) {
      std::fprintf(stderr, "cannot write %s\n", json_path.c_str());
      return 1;
    }
    std::fprintf(f,
                 "{\n  \"device\": \"%s\",\n  \"date\": \"%s\",\n  \"sms\": %d,\n"
                 "  \"copy_bandwidth_gbps\": %.1f,\n  \"exp2_rate_per_s\": %.4e,\n"
                 "  \"runs\": %d,\n  \"shapes\": [\n",
                 prop.name, date, prop.multiProcessorCount, copy_bw * 1e-9, exp_rate, runs);
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      std::fprintf(f,
                   "    {\"batch\": %ld, \"dim\": %ld, \"n\": %ld, \"length\": %ld, "
                   "\"dtype\": \"%s\", \"states_per_thread\": %d, \"rows_per_block\": %d, "
                   "\"median_ms\": %.5f, \"min_ms\": %.5f, \"goal_ms\": %.3f, "
                   "\"mamba_ms\": %.3f, \"mem_floor_ms\": %.5f, \"exp_floor_ms\": %.5f, "
                   "\"variants\": [",
                   static_cast<long>(r.sh.batch), static_cast<long>(r.sh.dim),
                   static_cast<long>(r.sh.n), static_cast<long>(r.sh.length),
                   std::string(DTypeName(r.sh.dtype)).c_str(), r.best_default.geo.states_per_thread,
                   r.best_default.geo.rows_per_block, r.best_default.median_ms,
                   r.best_default.min_ms, r.sh.goal_ms, r.sh.mamba_ms, r.mem_floor_ms,
                   r.exp_floor_ms);
      for (size_t k = 0; k < r.all.size(); ++k) {
        std::fprintf(f, "%s{\"s\": %d, \"r\": %d, \"median_ms\": %.5f}", k ? ", " : "",
                     r.all[k].geo.states_per_thread, r.all[k].geo.rows_per_block,
                     r.all[k].median_ms);
      }
      std::fprintf(f, "]}%s\n", i + 1 < rows.size() ? "," : "");
    }
    std::fprintf(f, "  ]\n}\n");
    std::fclose(f);
  }
  CHECK_CUDA(cudaStreamDestroy(stream));
  return 0;
}
