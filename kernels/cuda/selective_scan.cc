#include "cuda/selective_scan.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "cuda/selective_scan_kernel.h"

namespace scanserve::cuda {
namespace {

constexpr size_t kAlign = 256;

size_t AlignUp(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// Byte sizes of one problem's tensors as they travel; zero for tensors the options leave out.
struct Footprint {
  size_t seq = 0;    // u, delta, z, y each
  size_t b = 0;      // B
  size_t c = 0;      // C
  size_t param = 0;  // A
  size_t vec = 0;    // d_skip, delta_bias each
  size_t state = 0;  // h0, last_state each

  size_t inputs(const SelectiveScanOptions& o) const {
    return AlignUp(seq) * (o.has_z ? 3 : 2) + AlignUp(b) + AlignUp(c) + AlignUp(param) +
           AlignUp(vec) * ((o.has_d_skip ? 1 : 0) + (o.has_delta_bias ? 1 : 0)) +
           (o.has_h0 ? AlignUp(state) : 0);
  }
  size_t outputs(const SelectiveScanOptions& o) const {
    return AlignUp(seq) + (o.return_last_state ? AlignUp(state) : 0);
  }
};

Footprint FootprintOf(const SelectiveScanOptions& o, const SeqShape& s) {
  const auto elem = static_cast<size_t>(DTypeSize(o.dtype));
  const auto n = static_cast<size_t>(o.state_dim);
  const size_t var_bc = static_cast<size_t>(s.batch) * o.groups * n * s.length * elem;
  const size_t fixed_bc = static_cast<size_t>(s.dim) * n * sizeof(float);
  Footprint f;
  f.seq = static_cast<size_t>(s.elements()) * elem;
  f.b = o.variable_b ? var_bc : fixed_bc;
  f.c = o.variable_c ? var_bc : fixed_bc;
  f.param = fixed_bc;
  f.vec = static_cast<size_t>(s.dim) * sizeof(float);
  f.state = static_cast<size_t>(s.rows()) * n * sizeof(float);
  return f;
}

absl::Status Validate(const SelectiveScanBatch& batch) {
  const SelectiveScanOptions& o = batch.options;
  if (o.dtype != DType::kFloat32 && o.dtype != DType::kFloat16 && o.dtype != DType::kBFloat16) {
    return absl::InvalidArgumentError(absl::StrCat("selective_scan: dtype must be float32, ",
                                                   "float16 or bfloat16, got ",
                                                   std::string(DTypeName(o.dtype))));
  }
  if (o.state_dim < 1 || o.state_dim > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("selective_scan: state_dim must be in 1..256, got ", o.state_dim));
  }
  if (o.groups < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("selective_scan: groups must be >= 1, got ", o.groups));
  }
  for (size_t i = 0; i < batch.problems.size(); ++i) {
    const SelectiveScanProblem& p = batch.problems[i];
    const SeqShape& s = p.shape;
    if (s.batch < 0 || s.dim < 0 || s.length < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("selective_scan: problem ", i, " has a negative shape"));
    }
    if (s.dim % o.groups != 0) {
      return absl::InvalidArgumentError(absl::StrCat("selective_scan: problem ", i, " dim ", s.dim,
                                                     " is not divisible by groups ", o.groups));
    }
    if (s.elements() == 0) continue;
    const bool missing =
        p.u == nullptr || p.delta == nullptr || p.A == nullptr || p.B == nullptr ||
        p.C == nullptr || p.y == nullptr || (o.has_z && p.z == nullptr) ||
        (o.has_d_skip && p.d_skip == nullptr) || (o.has_delta_bias && p.delta_bias == nullptr) ||
        (o.has_h0 && p.h0 == nullptr) || (o.return_last_state && p.last_state == nullptr);
    if (missing) {
      return absl::InvalidArgumentError(
          absl::StrCat("selective_scan: problem ", i, " lacks a tensor its options require"));
    }
  }
  return absl::OkStatus();
}

// Copies `bytes` from src to the pinned region at *offset and advances it; returns the offset.
size_t Pack(std::byte* host, size_t* offset, const void* src, size_t bytes) {
  const size_t at = *offset;
  if (bytes > 0) std::memcpy(host + at, src, bytes);
  *offset += AlignUp(bytes);
  return at;
}

}  // namespace

absl::Status RunSelectiveScan(const SelectiveScanBatch& batch, StreamContext& ctx) {
  if (absl::Status st = Validate(batch); !st.ok()) return st;
  const SelectiveScanOptions& o = batch.options;
  const size_t count = batch.problems.size();
  if (count == 0) return absl::OkStatus();

  // Plan pieces of whole problems that fit both pools, then take one region of the largest piece's
  // size from each pool and reuse it for every piece.
  const size_t capacity = std::min(ctx.host_capacity(), ctx.device_capacity());
  std::vector<Footprint> foot(count);
  std::vector<size_t> piece_end;  // exclusive problem index of each piece
  size_t region = 0;
  {
    size_t in = 0;
    size_t out = 0;
    size_t first = 0;
    for (size_t i = 0; i < count; ++i) {
      foot[i] = FootprintOf(o, batch.problems[i].shape);
      const size_t pin = foot[i].inputs(o);
      const size_t pout = foot[i].outputs(o);
      const size_t alone = pin + pout + AlignUp(SelectiveScanWorkspaceBytes(1));
      if (alone > capacity) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "selective_scan: problem ", i, " (batch ", batch.problems[i].shape.batch, ", dim ",
            batch.problems[i].shape.dim, ", length ", batch.problems[i].shape.length, ", N ",
            o.state_dim, ") needs ", alone, " bytes of staging; the stream's pools hold ",
            ctx.host_capacity(), " host and ", ctx.device_capacity(), " device bytes"));
      }
      const size_t n = i - first + 1;
      const size_t need = in + pin + out + pout + AlignUp(SelectiveScanWorkspaceBytes(n));
      if (need > capacity || n > kSelectiveScanMaxProblems) {
        piece_end.push_back(i);
        region = std::max(region, in + out + AlignUp(SelectiveScanWorkspaceBytes(i - first)));
        first = i;
        in = 0;
        out = 0;
      }
      in += pin;
      out += pout;
    }
    piece_end.push_back(count);
    region = std::max(region, in + out + AlignUp(SelectiveScanWorkspaceBytes(count - first)));
  }
  absl::StatusOr<std::byte*> host = ctx.AllocHost(region);
  if (!host.ok()) return host.status();
  absl::StatusOr<std::byte*> device = ctx.AllocDevice(region);
  if (!device.ok()) return device.status();
  cudaStream_t stream = ctx.stream();

  std::vector<SelectiveScanRows> rows;
  std::vector<size_t> y_at;
  std::vector<size_t> last_at;
  size_t first = 0;
  for (const size_t end : piece_end) {
    const size_t n = end - first;
    rows.assign(n, SelectiveScanRows{});
    y_at.assign(n, 0);
    last_at.assign(n, 0);
    // Inputs first (one upload), then outputs (one download), then the descriptors.
    size_t off = 0;
    std::byte* const h = *host;
    std::byte* const dev = *device;
    auto dptr = [&](size_t at) { return static_cast<void*>(dev + at); };
    for (size_t k = 0; k < n; ++k) {
      const SelectiveScanProblem& p = batch.problems[first + k];
      const Footprint& f = foot[first + k];
      SelectiveScanRows& r = rows[k];
      r.shape = p.shape;
      if (p.shape.elements() == 0) continue;
      r.u = dptr(Pack(h, &off, p.u, f.seq));
      r.delta = dptr(Pack(h, &off, p.delta, f.seq));
      if (o.has_z) r.z = dptr(Pack(h, &off, p.z, f.seq));
      r.B = dptr(Pack(h, &off, p.B, f.b));
      r.C = dptr(Pack(h, &off, p.C, f.c));
      r.A = static_cast<const float*>(dptr(Pack(h, &off, p.A, f.param)));
      if (o.has_d_skip) r.d_skip = static_cast<const float*>(dptr(Pack(h, &off, p.d_skip, f.vec)));
      if (o.has_delta_bias) {
        r.delta_bias = static_cast<const float*>(dptr(Pack(h, &off, p.delta_bias, f.vec)));
      }
      if (o.has_h0) r.h0 = static_cast<const float*>(dptr(Pack(h, &off, p.h0, f.state)));
    }
    const size_t in_bytes = off;
    for (size_t k = 0; k < n; ++k) {
      if (batch.problems[first + k].shape.elements() == 0) continue;
      const Footprint& f = foot[first + k];
      y_at[k] = off;
      rows[k].y = dptr(off);
      off += AlignUp(f.seq);
      if (o.return_last_state) {
        last_at[k] = off;
        rows[k].last_state = static_cast<float*>(dptr(off));
        off += AlignUp(f.state);
      }
    }
    const size_t out_begin = in_bytes;
    const size_t out_bytes = off - in_bytes;
    const size_t ws_at = off;

    if (in_bytes > 0) {
      if (absl::Status st =
              CudaStatus(cudaMemcpyAsync(dev, h, in_bytes, cudaMemcpyHostToDevice, stream),
                         "selective_scan: input upload");
          !st.ok()) {
        return st;
      }
    }
    const SelectiveScanLaunchResult launch =
        LaunchSelectiveScan(o, rows, h + ws_at, dev + ws_at, stream);
    if (launch.cuda_error != 0) {
      return CudaStatus(static_cast<cudaError_t>(launch.cuda_error), launch.what.c_str());
    }
    if (out_bytes > 0) {
      if (absl::Status st = CudaStatus(cudaMemcpyAsync(h + out_begin, dev + out_begin, out_bytes,
                                                       cudaMemcpyDeviceToHost, stream),
                                       "selective_scan: output download");
          !st.ok()) {
        return st;
      }
    }
    if (absl::Status st = CudaStatus(cudaStreamSynchronize(stream), "selective_scan: synchronize");
        !st.ok()) {
      return st;
    }
    for (size_t k = 0; k < n; ++k) {
      const SelectiveScanProblem& p = batch.problems[first + k];
      if (p.shape.elements() == 0) continue;
      const Footprint& f = foot[first + k];
      std::memcpy(p.y, h + y_at[k], f.seq);
      if (o.return_last_state) std::memcpy(p.last_state, h + last_at[k], f.state);
    }
    first = end;
  }
  return absl::OkStatus();
}

}  // namespace scanserve::cuda
