// Throughput of the CPU backend per op, layout and shape, and the machine's copy bandwidth.
//
// Each op benchmark reports items_per_second (sequence elements) and bytes_per_second counting the
// bytes that must move: every input read once and every output written once. The memcpy
// benchmarks give the floor on the same terms (bytes read plus bytes written), single-threaded and
// with as many threads as the backend's pool, so "fraction of the floor" = op GB/s / memcpy GB/s.
//
//   cpu_backend_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "scanserve/backend.h"
#include "scanserve/cpu_backend.h"
#include "scanserve/ops.h"
#include "scanserve/types.h"

namespace scanserve {
namespace {

Backend& SharedBackend() {
  static const std::unique_ptr<Backend> backend = MakeCpuBackend(0);
  return *backend;
}

int PoolThreads() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

// An owned buffer of `count` elements of `dtype` holding uniform values in [lo, hi).
class Buffer {
 public:
  Buffer(DType dtype, int64_t count, double lo, double hi) : dtype_(dtype) {
    storage_.resize(static_cast<size_t>(count) * DTypeSize(dtype) / 4 + 1);
    std::mt19937 gen(static_cast<uint32_t>(count) ^ 0x5ca7u);
    std::uniform_real_distribution<float> dist(static_cast<float>(lo), static_cast<float>(hi));
    for (int64_t i = 0; i < count; ++i) {
      const float v = dist(gen);
      switch (dtype) {
        case DType::kFloat32:
          reinterpret_cast<float*>(storage_.data())[i] = v;
          break;
        case DType::kFloat16:
          reinterpret_cast<uint16_t*>(storage_.data())[i] = FloatToHalf(v);
          break;
        case DType::kBFloat16:
          reinterpret_cast<uint16_t*>(storage_.data())[i] = FloatToBFloat16(v);
          break;
        case DType::kInt32:
          reinterpret_cast<int32_t*>(storage_.data())[i] = static_cast<int32_t>(v * 1000);
          break;
        case DType::kInt64:
          break;
      }
    }
  }
  void* data() { return storage_.data(); }

 private:
  DType dtype_;
  std::vector<uint32_t> storage_;
};

std::string ShapeName(const SeqShape& s) {
  return std::to_string(s.batch) + "x" + std::to_string(s.dim) + "x" + std::to_string(s.length);
}

void Report(benchmark::State& state, const SeqShape& s, int64_t bytes_moved) {
  state.SetItemsProcessed(state.iterations() * s.elements());
  state.SetBytesProcessed(state.iterations() * bytes_moved);
  state.counters["elements"] = static_cast<double>(s.elements());
}

void LinearScanBench(benchmark::State& state, LinearScanOptions o, SeqShape s) {
  const int64_t n = s.elements();
  Buffer a(o.dtype, n, 0.5, 1.0), x(o.dtype, n, -1, 1), y(o.dtype, n, 0, 0);
  LinearScanProblem p{.shape = s, .a = a.data(), .x = x.data(), .y = y.data()};
  for (auto _ : state) {
    const absl::Status status = SharedBackend().Run(LinearScanBatch{o, {&p, 1}});
    if (!status.ok()) state.SkipWithError(status.ToString().c_str());
  }
  Report(state, s, 3 * n * static_cast<int64_t>(DTypeSize(o.dtype)));
}

void LinearScanBackwardBench(benchmark::State& state, LinearScanBackwardOptions o, SeqShape s) {
  const int64_t n = s.elements();
  Buffer a(o.dtype, n, 0.5, 1.0), x(o.dtype, n, -1, 1), dy(o.dtype, n, -1, 1);
  Buffer da(o.dtype, n, 0, 0), dx(o.dtype, n, 0, 0);
  LinearScanBackwardProblem p{
      .shape = s, .a = a.data(), .x = x.data(), .dy = dy.data(), .da = da.data(), .dx = dx.data()};
  for (auto _ : state) {
    const absl::Status status = SharedBackend().Run(LinearScanBackwardBatch{o, {&p, 1}});
    if (!status.ok()) state.SkipWithError(status.ToString().c_str());
  }
  Report(state, s, 5 * n * static_cast<int64_t>(DTypeSize(o.dtype)));
}

// Mamba's usual call: variable B and C (one group), D skip, z gating, delta bias and softplus.
void SelectiveScanBench(benchmark::State& state, SelectiveScanOptions o, SeqShape s) {
  const int64_t n = s.elements();
  const int64_t ns = o.state_dim;
  const int64_t bc = s.batch * o.groups * ns * s.length;
  Buffer u(o.dtype, n, -1, 1), delta(o.dtype, n, -4, 2), z(o.dtype, n, -2, 2), y(o.dtype, n, 0, 0);
  Buffer A(DType::kFloat32, s.dim * ns, -1.5, -0.05), B(o.dtype, bc, -1, 1), C(o.dtype, bc, -1, 1);
  Buffer d_skip(DType::kFloat32, s.dim, -1, 1), bias(DType::kFloat32, s.dim, -0.5, 0.5);
  SelectiveScanProblem p{.shape = s,
                         .u = u.data(),
                         .delta = delta.data(),
                         .A = static_cast<const float*>(A.data()),
                         .B = B.data(),
                         .C = C.data(),
                         .d_skip = static_cast<const float*>(d_skip.data()),
                         .z = z.data(),
                         .delta_bias = static_cast<const float*>(bias.data()),
                         .y = y.data()};
  for (auto _ : state) {
    const absl::Status status = SharedBackend().Run(SelectiveScanBatch{o, {&p, 1}});
    if (!status.ok()) state.SkipWithError(status.ToString().c_str());
  }
  const int64_t size = static_cast<int64_t>(DTypeSize(o.dtype));
  Report(state, s, (4 * n + 2 * bc) * size + s.dim * ns * 4);
  state.counters["state_updates/s"] = benchmark::Counter(
      static_cast<double>(state.iterations() * n * ns), benchmark::Counter::kIsRate);
}

void AssociativeScanBench(benchmark::State& state, AssociativeScanOptions o, SeqShape s) {
  const int64_t n = s.elements();
  Buffer x(o.dtype, n, -1, 1), y(o.dtype, n, 0, 0);
  AssociativeScanProblem p{.shape = s, .x = x.data(), .y = y.data()};
  for (auto _ : state) {
    const absl::Status status = SharedBackend().Run(AssociativeScanBatch{o, {&p, 1}});
    if (!status.ok()) state.SkipWithError(status.ToString().c_str());
  }
  Report(state, s, 2 * n * static_cast<int64_t>(DTypeSize(o.dtype)));
}

// Copy bandwidth with `threads` threads each copying its share of one large buffer.
void MemcpyBench(benchmark::State& state, int threads) {
  const size_t bytes = size_t{512} << 20;
  std::vector<char> src(bytes, 1), dst(bytes, 0);
  const size_t share = bytes / static_cast<size_t>(threads);
  for (auto _ : state) {
    std::vector<std::thread> pool;
    for (int t = 1; t < threads; ++t) {
      pool.emplace_back(
          [&, t] { std::memcpy(dst.data() + t * share, src.data() + t * share, share); });
    }
    std::memcpy(dst.data(), src.data(), share);
    for (std::thread& th : pool) th.join();
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(2 * share * threads));
}

void RegisterAll() {
  benchmark::RegisterBenchmark("memcpy/threads:1", MemcpyBench, 1)->UseRealTime();
  benchmark::RegisterBenchmark(("memcpy/threads:" + std::to_string(PoolThreads())).c_str(),
                               MemcpyBench, PoolThreads())
      ->UseRealTime();

  const SeqShape shapes[] = {{1, 64, 1024}, {8, 1536, 2048}, {1, 1, int64_t{1} << 24}};
  const Layout layouts[] = {Layout::kBDL, Layout::kBLD};
  for (const SeqShape& s : shapes) {
    for (Layout layout : layouts) {
      const bool single_row = s.rows() == 1;
      if (single_row && layout == Layout::kBLD) continue;  // one row: the layouts coincide
      const std::string suffix = std::string(LayoutName(layout)) + "/" + ShapeName(s);
      for (DType dtype : {DType::kFloat32, DType::kBFloat16}) {
        const std::string dt = std::string(DTypeName(dtype)) + "/";
        benchmark::RegisterBenchmark(("linear_scan/" + dt + suffix).c_str(), LinearScanBench,
                                     LinearScanOptions{.dtype = dtype, .layout = layout}, s)
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
      }
      benchmark::RegisterBenchmark(("linear_scan_backward/float32/" + suffix).c_str(),
                                   LinearScanBackwardBench,
                                   LinearScanBackwardOptions{.layout = layout}, s)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
      for (ScanOperator op : {ScanOperator::kAdd, ScanOperator::kMax, ScanOperator::kLogAddExp}) {
        benchmark::RegisterBenchmark(
            ("associative_scan/" + std::string(ScanOperatorName(op)) + "/float32/" + suffix)
                .c_str(),
            AssociativeScanBench, AssociativeScanOptions{.layout = layout, .op = op}, s)
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
      }
      if (single_row) continue;
      for (DType dtype : {DType::kFloat32, DType::kBFloat16}) {
        benchmark::RegisterBenchmark(
            ("selective_scan/n16/" + std::string(DTypeName(dtype)) + "/" + suffix).c_str(),
            SelectiveScanBench,
            SelectiveScanOptions{.dtype = dtype,
                                 .layout = layout,
                                 .state_dim = 16,
                                 .has_d_skip = true,
                                 .has_z = true,
                                 .has_delta_bias = true,
                                 .delta_softplus = true},
            s)
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
      }
    }
  }
}

}  // namespace
}  // namespace scanserve

int main(int argc, char** argv) {
  scanserve::RegisterAll();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
