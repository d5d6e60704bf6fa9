// The CPU backend: checks that a batch is internally consistent, cuts it into tiles (tiles.h) and
// runs them on one shared pool. Each tile depends only on its own problem, so a request gives the
// same bytes alone or in any batch, with any pool size.
#include "scanserve/cpu_backend.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "cpu/kernels.h"
#include "cpu/thread_pool.h"
#include "cpu/tiles.h"
#include "scanserve/backend.h"
#include "scanserve/ops.h"

namespace scanserve {
namespace cpu {

float* ThreadScratch(size_t count) {
  thread_local std::vector<float> scratch;
  if (scratch.size() < count) scratch.resize(count);
  return scratch.data();
}

namespace {

// Builds INVALID_ARGUMENT messages of the form "<op>: problems[i].<field>: <rule>".
class Checker {
 public:
  Checker(std::string_view op, size_t index) : op_(op), index_(index) {}

  absl::Status Error(std::string_view field, std::string_view rule) const {
    return absl::InvalidArgumentError(std::string(op_) + ": problems[" + std::to_string(index_) +
                                      "]." + std::string(field) + ": " + std::string(rule));
  }
  // Optional tensors are null exactly when the options say they are absent (ops.h).
  absl::Status Optional(std::string_view field, const void* ptr, bool present,
                        std::string_view flag) const {
    if (present && ptr == nullptr) {
      return Error(field, "null although options." + std::string(flag) + " is set");
    }
    if (!present && ptr != nullptr) {
      return Error(field, "set although options." + std::string(flag) + " is not");
    }
    return absl::OkStatus();
  }
  absl::Status Required(std::string_view field, const void* ptr) const {
    return ptr == nullptr ? Error(field, "required tensor is null") : absl::OkStatus();
  }
  absl::Status Shape(const SeqShape& s) const {
    if (s.batch < 0 || s.dim < 0) return Error("shape", "batch and dim must be >= 0");
    if (s.length < 1) return Error("shape", "length must be >= 1");
    return absl::OkStatus();
  }

 private:
  std::string_view op_;
  size_t index_;
};

#define SCANSERVE_RETURN_IF_ERROR(expr)       \
  do {                                        \
    if (absl::Status s_ = (expr); !s_.ok()) { \
      return s_;                              \
    }                                         \
  } while (false)

absl::Status CheckFloatDtype(std::string_view op, DType dtype) {
  if (IsFloatingPoint(dtype)) return absl::OkStatus();
  return absl::InvalidArgumentError(std::string(op) + ": options.dtype: must be float32, float16 " +
                                    "or bfloat16, got " + std::string(DTypeName(dtype)));
}

absl::Status Check(const LinearScanOptions& o, const LinearScanProblem& p, size_t i) {
  const Checker c("linear_scan", i);
  SCANSERVE_RETURN_IF_ERROR(c.Shape(p.shape));
  SCANSERVE_RETURN_IF_ERROR(c.Required("a", p.a));
  SCANSERVE_RETURN_IF_ERROR(c.Required("x", p.x));
  SCANSERVE_RETURN_IF_ERROR(c.Required("y", p.y));
  SCANSERVE_RETURN_IF_ERROR(c.Optional("b", p.b, o.has_b, "has_b"));
  SCANSERVE_RETURN_IF_ERROR(c.Optional("c", p.c, o.has_c, "has_c"));
  SCANSERVE_RETURN_IF_ERROR(c.Optional("h0", p.h0, o.has_h0, "has_h0"));
  return c.Optional("final_state", p.final_state, o.return_final_state, "return_final_state");
}

absl::Status Check(const LinearScanBackwardOptions& o, const LinearScanBackwardProblem& p,
                   size_t i) {
  const Checker c("linear_scan_backward", i);
  SCANSERVE_RETURN_IF_ERROR(c.Shape(p.shape));
  SCANSERVE_RETURN_IF_ERROR(c.Required("a", p.a));
  SCANSERVE_RETURN_IF_ERROR(c.Required("x", p.x));
  SCANSERVE_RETURN_IF_ERROR(c.Required("dy", p.dy));
  SCANSERVE_RETURN_IF_ERROR(c.Required("da", p.da));
  SCANSERVE_RETURN_IF_ERROR(c.Required("dx", p.dx));
  SCANSERVE_RETURN_IF_ERROR(c.Optional("b", p.b, o.has_b, "has_b"));
  SCANSERVE_RETURN_IF_ERROR(c.Optional("db", p.db, o.has_b, "has_b"));
  SCANSERVE_RETURN_IF_ERROR(c.Optional("c", p.c, o.has_c, "has_c"));
  SCANSERVE_RETURN_IF_ERROR(c.Optional("dc", p.dc, o.has_c, "has_c"));
  SCANSERVE_RETURN_IF_ERROR(c.Optional("h0", p.h0, o.has_h0, "has_h0"));
  SCANSERVE_RETURN_IF_ERROR(c.Optional("dh0", p.dh0, o.has_h0, "has_h0"));
  return c.Optional("states", p.states, o.has_states, "has_states");
}

absl::Status Check(const SelectiveScanOptions& o, const SelectiveScanProblem& p, size_t i) {
  const Checker c("selective_scan", i);
  SCANSERVE_RETURN_IF_ERROR(c.Shape(p.shape));
  if ((o.variable_b || o.variable_c) && p.shape.dim % o.groups != 0) {
    return c.Error("shape.dim",
                   "must be divisible by options.groups (" + std::to_string(o.groups) + ")");
  }
  SCANSERVE_RETURN_IF_ERROR(c.Required("u", p.u));
  SCANSERVE_RETURN_IF_ERROR(c.Required("delta", p.delta));
  SCANSERVE_RETURN_IF_ERROR(c.Required("A", p.A));
  SCANSERVE_RETURN_IF_ERROR(c.Required("B", p.B));
  SCANSERVE_RETURN_IF_ERROR(c.Required("C", p.C));
  SCANSERVE_RETURN_IF_ERROR(c.Required("y", p.y));
  SCANSERVE_RETURN_IF_ERROR(c.Optional("d_skip", p.d_skip, o.has_d_skip, "has_d_skip"));
  SCANSERVE_RETURN_IF_ERROR(c.Optional("z", p.z, o.has_z, "has_z"));
  SCANSERVE_RETURN_IF_ERROR(
      c.Optional("delta_bias", p.delta_bias, o.has_delta_bias, "has_delta_bias"));
  SCANSERVE_RETURN_IF_ERROR(c.Optional("h0", p.h0, o.has_h0, "has_h0"));
  return c.Optional("last_state", p.last_state, o.return_last_state, "return_last_state");
}

absl::Status Check(const AssociativeScanOptions&, const AssociativeScanProblem& p, size_t i) {
  const Checker c("associative_scan", i);
  SCANSERVE_RETURN_IF_ERROR(c.Shape(p.shape));
  SCANSERVE_RETURN_IF_ERROR(c.Required("x", p.x));
  return c.Required("y", p.y);
}

absl::Status CheckOptions(const LinearScanOptions& o) {
  return CheckFloatDtype("linear_scan", o.dtype);
}
absl::Status CheckOptions(const LinearScanBackwardOptions& o) {
  return CheckFloatDtype("linear_scan_backward", o.dtype);
}
absl::Status CheckOptions(const SelectiveScanOptions& o) {
  SCANSERVE_RETURN_IF_ERROR(CheckFloatDtype("selective_scan", o.dtype));
  if (o.state_dim < 1 || o.state_dim > 256) {
    return absl::InvalidArgumentError("selective_scan: options.state_dim: must be in 1..256, got " +
                                      std::to_string(o.state_dim));
  }
  if (o.groups < 1) {
    return absl::InvalidArgumentError("selective_scan: options.groups: must be >= 1, got " +
                                      std::to_string(o.groups));
  }
  return absl::OkStatus();
}
absl::Status CheckOptions(const AssociativeScanOptions& o) {
  if (!OperatorSupports(o.op, o.dtype)) {
    return absl::InvalidArgumentError(
        "associative_scan: options.op: " + std::string(ScanOperatorName(o.op)) +
        " is not defined on " + std::string(DTypeName(o.dtype)));
  }
  return absl::OkStatus();
}

void AppendTiles(const LinearScanOptions& o, int64_t i, const LinearScanProblem& p,
                 std::vector<Tile>& tiles) {
  AppendLaneTiles(i, p.shape, o.layout, tiles);
}
void AppendTiles(const LinearScanBackwardOptions& o, int64_t i, const LinearScanBackwardProblem& p,
                 std::vector<Tile>& tiles) {
  AppendLaneTiles(i, p.shape, o.layout, tiles);
}
void AppendTiles(const SelectiveScanOptions& o, int64_t i, const SelectiveScanProblem& p,
                 std::vector<Tile>& tiles) {
  AppendSelectiveTiles(i, o, p.shape, tiles);
}
void AppendTiles(const AssociativeScanOptions& o, int64_t i, const AssociativeScanProblem& p,
                 std::vector<Tile>& tiles) {
  AppendLaneTiles(i, p.shape, o.layout, tiles);
}

void RunTile(const LinearScanOptions& o, const LinearScanProblem& p, const Tile& t) {
  LinearScanTile(o, p, t);
}
void RunTile(const LinearScanBackwardOptions& o, const LinearScanBackwardProblem& p,
             const Tile& t) {
  LinearScanBackwardTile(o, p, t);
}
void RunTile(const SelectiveScanOptions& o, const SelectiveScanProblem& p, const Tile& t) {
  SelectiveScanTile(o, p, t);
}
void RunTile(const AssociativeScanOptions& o, const AssociativeScanProblem& p, const Tile& t) {
  AssociativeScanTile(o, p, t);
}

int64_t PhysicalMemoryBytes(int name) {
  const long pages = sysconf(name);
  const long page_size = sysconf(_SC_PAGESIZE);
  return pages > 0 && page_size > 0 ? int64_t{pages} * page_size : 0;
}

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int threads) : pool_(threads) {}

  std::string_view Name() const override { return "cpu"; }

  std::vector<DeviceStatus> Devices() const override {
    DeviceStatus device;
    device.index = 0;
    device.name = "cpu (" + std::to_string(pool_.threads()) + " threads)";
    device.memory_total_bytes = PhysicalMemoryBytes(_SC_PHYS_PAGES);
    device.memory_used_bytes =
        std::max<int64_t>(0, device.memory_total_bytes - PhysicalMemoryBytes(_SC_AVPHYS_PAGES));
    device.batches_executed = batches_executed_.load(std::memory_order_relaxed);
    return {device};
  }

  // Two batches in flight let one batch's setup and tail overlap the other's bulk; more would only
  // split the same cores further.
  int MaxConcurrentBatches() const override { return 2; }

  absl::Status Run(const LinearScanBatch& batch) override { return RunBatch(batch); }
  absl::Status Run(const LinearScanBackwardBatch& batch) override { return RunBatch(batch); }
  absl::Status Run(const SelectiveScanBatch& batch) override { return RunBatch(batch); }
  absl::Status Run(const AssociativeScanBatch& batch) override { return RunBatch(batch); }

 private:
  template <typename Options, typename Problem>
  absl::Status RunBatch(const Batch<Options, Problem>& batch) {
    SCANSERVE_RETURN_IF_ERROR(CheckOptions(batch.options));
    std::vector<Tile> tiles;
    for (size_t i = 0; i < batch.problems.size(); ++i) {
      SCANSERVE_RETURN_IF_ERROR(Check(batch.options, batch.problems[i], i));
      AppendTiles(batch.options, static_cast<int64_t>(i), batch.problems[i], tiles);
    }
    pool_.ParallelFor(static_cast<int64_t>(tiles.size()), [&](int64_t k) {
      const Tile& tile = tiles[static_cast<size_t>(k)];
      RunTile(batch.options, batch.problems[static_cast<size_t>(tile.problem)], tile);
    });
    batches_executed_.fetch_add(1, std::memory_order_relaxed);
    return absl::OkStatus();
  }

  mutable ThreadPool pool_;
  std::atomic<int64_t> batches_executed_{0};
};

}  // namespace
}  // namespace cpu

std::unique_ptr<Backend> MakeCpuBackend(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::make_unique<cpu::CpuBackend>(threads);
}

}  // namespace scanserve
