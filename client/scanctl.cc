// scanctl: the command-line client of scanserve. See Usage() below or `scanctl --help`.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/scanctl_bench.h"
#include "client/scanctl_requests.h"
#include "client/scanctl_verify.h"
#include "google/protobuf/util/json_util.h"
#include "scanserve/client.h"
#include "scanserve/cpu_backend.h"

// Connection.
ABSL_FLAG(std::string, target, "localhost:50051",
          "Server address: host:port, or a gRPC URI such as dns:///scanserve:50051");
ABSL_FLAG(int64_t, deadline_ms, 30000, "Deadline of each call in milliseconds; 0 = none");
ABSL_FLAG(std::string, token, "",
          "Bearer token: every call carries 'authorization: Bearer <token>' (visible in the "
          "process list; prefer --token_file)");
ABSL_FLAG(std::string, token_file, "",
          "File whose first token (blank lines and '#' comments skipped) is the bearer token");
ABSL_FLAG(bool, tls, false,
          "Connect with TLS, trusting the system's CA certificates (implied by --tls_ca, "
          "--tls_cert, --tls_key)");
ABSL_FLAG(std::string, tls_ca, "", "TLS: PEM CA certificates that sign the server's certificate");
ABSL_FLAG(std::string, tls_cert, "",
          "TLS: PEM client certificate, for servers that verify clients (with --tls_key)");
ABSL_FLAG(std::string, tls_key, "", "TLS: PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_server_name, "",
          "TLS: name the server's certificate must carry when it differs from --target's host");
ABSL_FLAG(std::string, load_balancing, "",
          "gRPC load-balancing policy: round_robin or pick_first (gRPC's default)");
ABSL_FLAG(
    bool, wait, false,
    "health: wait for the server to come up (until --deadline_ms) instead of failing at once");
ABSL_FLAG(bool, json, false, "info, bench: print one JSON object on stdout");

// The request: run and bench.
ABSL_FLAG(std::string, op, "linear_scan",
          "linear_scan, linear_scan_backward, selective_scan, associative_scan; bench also: echo");
ABSL_FLAG(std::vector<std::string>, shape, std::vector<std::string>({"1", "64", "1024"}),
          "B,D,L: batch, dim and length, whatever the layout");
ABSL_FLAG(std::string, dtype, "float32",
          "float32, float16, bfloat16 (int32, int64: "
          "associative_scan)");
ABSL_FLAG(std::string, layout, "BDL", "BDL (length contiguous) or BLD (dim contiguous)");
ABSL_FLAG(std::vector<std::string>, with, {},
          "Optional tensors to send: b,c,h0 (linear ops), h (linear_scan_backward's forward "
          "states), D,z,delta_bias,h0 (selective_scan)");
ABSL_FLAG(bool, reverse, false, "linear ops, associative_scan: scan from the end");
ABSL_FLAG(bool, return_final_state, false, "linear_scan: also return the final state");
ABSL_FLAG(int64_t, state_dim, 16, "selective_scan: N, 1..256");
ABSL_FLAG(int64_t, groups, 1, "selective_scan: groups G of variable B/C; must divide D");
ABSL_FLAG(std::vector<std::string>, fixed, {},
          "selective_scan: send B and/or C fixed, (D, N) float32, instead of per step: B,C");
ABSL_FLAG(bool, delta_softplus, false, "selective_scan: dt = softplus(delta + delta_bias)");
ABSL_FLAG(bool, return_last_state, false, "selective_scan: also return the last state");
ABSL_FLAG(std::string, operator, "add", "associative_scan: add, mul, max, min, logaddexp");
ABSL_FLAG(bool, exclusive, false, "associative_scan: exclusive scan");
ABSL_FLAG(std::string, seed, "", "Seed of the random inputs; empty = a fresh one (printed)");
ABSL_FLAG(std::string, in, "",
          "run: read the request from this file (a binary scanserve.v1.StreamRequest, as "
          "--save_request writes); the op flags are then ignored");
ABSL_FLAG(std::string, in_dir, "",
          "run: read the tensors from DIR/<field>.bin (raw little-endian elements in the dtype "
          "and shape the flags give; e.g. numpy's arr.tofile)");
ABSL_FLAG(std::string, save_request, "", "run: write the request sent to this file");
ABSL_FLAG(std::string, out, "",
          "run: write the response to this file (a binary scanserve.v1.StreamResponse)");
ABSL_FLAG(std::string, out_dir, "",
          "run: write each output tensor to DIR/<name>.bin (raw little-endian) and list them in "
          "DIR/manifest.txt as 'name dtype layout d0,d1,...'");
ABSL_FLAG(bool, verify, false,
          "run: recompute locally on the CPU backend and check ops.md's accuracy target "
          "(exit 1 on failure)");
ABSL_FLAG(bool, stream, false, "run: send the request on the Stream RPC instead of its unary RPC");

// bench.
ABSL_FLAG(int32_t, concurrency, 1, "bench: requests kept in flight (closed loop)");
ABSL_FLAG(int64_t, requests, 0, "bench: requests to send; 0 = run for --duration");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(10), "bench: how long to run without --requests");
ABSL_FLAG(int64_t, warmup_requests, 0,
          "bench: requests answered first and left out of the figures");
ABSL_FLAG(int64_t, payload_bytes, 1 << 20, "bench --op=echo: payload size in bytes");
ABSL_FLAG(int32_t, distinct_inputs, 4, "bench: distinct random requests cycled through");
ABSL_FLAG(bool, progress, true, "bench: live progress line on stderr");

namespace scanserve::scanctl {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;  // verification failed, or health is not SERVING
constexpr int kExitError = 2;   // the call failed
constexpr int kExitUsage = 3;

const char kUsage[] = R"(scanctl: the scanserve command-line client.

Usage: scanctl <command> [flags]

Commands:
  health   grpc.health.v1 check; exit 0 when SERVING, 1 otherwise (--wait: wait for the server)
  info     the server's version, backend, devices, limits and batching settings (--json)
  run      one request on random inputs (--seed), a tensor directory (--in_dir) or a request
           file (--in); prints the outputs, --verify checks them against the local CPU backend,
           --out / --out_dir save them
  bench    closed-loop load: --concurrency callers, --requests or --duration; prints throughput,
           latency percentiles and errors by status (--json for scripts)

Connection flags (every command): --target, --deadline_ms, --load_balancing; TLS with --tls (system
CAs) or --tls_ca=ca.pem, mutual TLS adding --tls_cert=client.pem --tls_key=client.key,
--tls_server_name when the certificate's name differs from --target; a bearer token with
--token_file=FILE (or --token=TOKEN).

Examples:
  scanctl health --target=localhost:50051
  scanctl info --target=scanserve.example:50051 --tls_ca=ca.pem --token_file=token.txt
  scanctl run --op=linear_scan --shape=4,256,4096 --dtype=bfloat16 --with=b,c,h0 --verify
  scanctl run --op=selective_scan --shape=2,64,2048 --state_dim=16 --groups=2 --delta_softplus \
      --with=D,z,delta_bias --verify
  scanctl run --op=associative_scan --dtype=int32 --operator=add --exclusive --verify
  scanctl bench --op=linear_scan --shape=1,64,1024 --concurrency=16 --duration=10s
  scanctl bench --op=echo --payload_bytes=262144 --concurrency=16 --requests=5000 --json

Exit status: 0 success, 1 verification failed or not SERVING, 2 the call failed, 3 bad usage.
)";

absl::StatusOr<std::unique_ptr<Client>> MakeClient() {
  ClientOptions options;
  options.target = absl::GetFlag(FLAGS_target);
  options.bearer_token = absl::GetFlag(FLAGS_token);
  const std::string token_file = absl::GetFlag(FLAGS_token_file);
  if (!token_file.empty()) {
    if (!options.bearer_token.empty()) {
      return absl::InvalidArgumentError("--token, --token_file: give one, not both");
    }
    absl::StatusOr<std::string> token = ReadBearerTokenFile(token_file);
    if (!token.ok()) return token.status();
    options.bearer_token = *std::move(token);
  }
  options.tls.root_certs_file = absl::GetFlag(FLAGS_tls_ca);
  options.tls.cert_chain_file = absl::GetFlag(FLAGS_tls_cert);
  options.tls.private_key_file = absl::GetFlag(FLAGS_tls_key);
  options.tls.server_name = absl::GetFlag(FLAGS_tls_server_name);
  options.tls.enabled = absl::GetFlag(FLAGS_tls) || !options.tls.root_certs_file.empty() ||
                        !options.tls.cert_chain_file.empty() ||
                        !options.tls.private_key_file.empty() || !options.tls.server_name.empty();
  options.load_balancing = absl::GetFlag(FLAGS_load_balancing);
  const int64_t deadline_ms = absl::GetFlag(FLAGS_deadline_ms);
  options.default_timeout =
      deadline_ms > 0 ? absl::Milliseconds(deadline_ms) : absl::InfiniteDuration();
  // The server enforces its own message limit and says so; the CLI does not add a second one.
  options.max_send_message_bytes = -1;
  options.max_receive_message_bytes = -1;
  return Client::Create(options);
}

absl::StatusOr<RequestSpec> SpecFromFlags() {
  RequestSpec spec;
  absl::StatusOr<OpKind> op = ParseOp(absl::GetFlag(FLAGS_op));
  if (!op.ok()) return op.status();
  spec.op = *op;
  const std::vector<std::string> shape = absl::GetFlag(FLAGS_shape);
  if (shape.size() != 3 || !absl::SimpleAtoi(shape[0], &spec.batch) ||
      !absl::SimpleAtoi(shape[1], &spec.dim) || !absl::SimpleAtoi(shape[2], &spec.length)) {
    return absl::InvalidArgumentError(absl::StrCat("--shape: must be three integers B,D,L, got '",
                                                   absl::StrJoin(shape, ","), "'"));
  }
  absl::StatusOr<DType> dtype = ParseDType(absl::GetFlag(FLAGS_dtype));
  if (!dtype.ok()) return dtype.status();
  spec.dtype = *dtype;
  absl::StatusOr<Layout> layout = ParseLayout(absl::GetFlag(FLAGS_layout));
  if (!layout.ok()) return layout.status();
  spec.layout = *layout;
  for (const std::string& name : absl::GetFlag(FLAGS_with)) spec.with.insert(name);
  spec.reverse = absl::GetFlag(FLAGS_reverse);
  spec.return_final_state = absl::GetFlag(FLAGS_return_final_state);
  spec.state_dim = absl::GetFlag(FLAGS_state_dim);
  spec.groups = absl::GetFlag(FLAGS_groups);
  for (const std::string& name : absl::GetFlag(FLAGS_fixed)) {
    if (name == "B") {
      spec.fixed_b = true;
    } else if (name == "C") {
      spec.fixed_c = true;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("--fixed: lists B and/or C, got '", name, "'"));
    }
  }
  spec.delta_softplus = absl::GetFlag(FLAGS_delta_softplus);
  spec.return_last_state = absl::GetFlag(FLAGS_return_last_state);
  absl::StatusOr<ScanOperator> scan_operator = ParseOperator(absl::GetFlag(FLAGS_operator));
  if (!scan_operator.ok()) return scan_operator.status();
  spec.scan_operator = *scan_operator;
  spec.exclusive = absl::GetFlag(FLAGS_exclusive);
  if (absl::Status status = CheckSpec(spec); !status.ok()) return status;
  return spec;
}

absl::StatusOr<uint64_t> SeedFromFlags() {
  const std::string text = absl::GetFlag(FLAGS_seed);
  if (text.empty()) return (uint64_t{std::random_device{}()} << 32) | std::random_device{}();
  uint64_t seed = 0;
  if (!absl::SimpleAtoi(text, &seed)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--seed: must be an unsigned integer, got '", text, "'"));
  }
  return seed;
}

std::string FormatBytes(int64_t bytes) {
  if (bytes >= (int64_t{1} << 20)) return absl::StrCat(bytes / (1 << 20), " MiB");
  if (bytes >= (1 << 10)) return absl::StrCat(bytes / (1 << 10), " KiB");
  return absl::StrCat(bytes, " B");
}

std::string FormatSeconds(double seconds) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.3f", seconds * 1e3);
  return absl::StrCat(buffer, " ms");
}

std::string FormatTensor(const v1::Tensor& t) {
  std::string out = absl::StrCat(v1::DType_Name(t.dtype()), " ", v1::Layout_Name(t.layout()), " (",
                                 absl::StrJoin(t.shape(), ", "), ")");
  absl::StatusOr<std::vector<float>> values = TensorToFloats(t);
  if (!values.ok()) return absl::StrCat(out, "  malformed: ", values.status().message());
  absl::StrAppend(&out, "  first values:");
  for (size_t i = 0; i < values->size() && i < 6; ++i) {
    char buffer[32];
    std::snprintf(buffer, sizeof(buffer), " %.6g", (*values)[i]);
    absl::StrAppend(&out, buffer);
  }
  if (values->size() > 6) absl::StrAppend(&out, " ...");
  return out;
}

// Sends `request` on its unary RPC and returns the answer in the Stream RPC's envelope.
absl::StatusOr<v1::StreamResponse> CallUnary(const Client& client,
                                             const v1::StreamRequest& request) {
  v1::StreamResponse response;
  switch (request.op_case()) {
    case v1::StreamRequest::kLinearScan: {
      auto r = client.LinearScan(request.linear_scan());
      if (!r.ok()) return r.status();
      *response.mutable_linear_scan() = *std::move(r);
      break;
    }
    case v1::StreamRequest::kLinearScanBackward: {
      auto r = client.LinearScanBackward(request.linear_scan_backward());
      if (!r.ok()) return r.status();
      *response.mutable_linear_scan_backward() = *std::move(r);
      break;
    }
    case v1::StreamRequest::kSelectiveScan: {
      auto r = client.SelectiveScan(request.selective_scan());
      if (!r.ok()) return r.status();
      *response.mutable_selective_scan() = *std::move(r);
      break;
    }
    case v1::StreamRequest::kAssociativeScan: {
      auto r = client.AssociativeScan(request.associative_scan());
      if (!r.ok()) return r.status();
      *response.mutable_associative_scan() = *std::move(r);
      break;
    }
    default:
      return absl::InvalidArgumentError("request: carries no operation");
  }
  return response;
}

// Sends `request` as the only request of a Stream call.
absl::StatusOr<v1::StreamResponse> CallStream(const Client& client, v1::StreamRequest request) {
  std::promise<v1::StreamResponse> answer;
  bool answered = false;
  std::unique_ptr<Stream> stream = client.OpenStream([&](v1::StreamResponse r) {
    if (!answered) answer.set_value(std::move(r));
    answered = true;
  });
  request.set_request_id(1);
  if (absl::Status status = stream->Send(std::move(request)); !status.ok()) return status;
  absl::Status status = stream->Finish();
  if (!status.ok()) return status;
  if (!answered) return absl::InternalError("stream: ended without answering the request");
  v1::StreamResponse response = answer.get_future().get();
  if (response.request_id() != 1) {
    return absl::InternalError(
        absl::StrCat("stream: answer carries request_id ", response.request_id(), ", sent 1"));
  }
  if (absl::Status s = StreamResponseStatus(response); !s.ok()) return s;
  return response;
}

absl::Status WriteOutDir(const v1::StreamResponse& response, const std::string& dir) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) return absl::PermissionDeniedError(absl::StrCat(dir, ": ", error.message()));
  std::ofstream manifest(dir + "/manifest.txt", std::ios::trunc);
  for (const auto& [name, tensor] : OutputTensors(response)) {
    std::ofstream out(absl::StrCat(dir, "/", name, ".bin"), std::ios::binary | std::ios::trunc);
    out.write(tensor->data().data(), static_cast<std::streamsize>(tensor->data().size()));
    if (!out) return absl::DataLossError(absl::StrCat(dir, "/", name, ".bin: write failed"));
    absl::StatusOr<DType> dtype = FromProto(tensor->dtype());
    manifest << name << " " << (dtype.ok() ? std::string(DTypeName(*dtype)) : "?") << " "
             << v1::Layout_Name(tensor->layout()) << " " << absl::StrJoin(tensor->shape(), ",")
             << "\n";
  }
  if (!manifest) return absl::DataLossError(absl::StrCat(dir, "/manifest.txt: write failed"));
  return absl::OkStatus();
}

int Health() {
  absl::StatusOr<std::unique_ptr<Client>> client = MakeClient();
  if (!client.ok()) {
    std::cerr << client.status() << "\n";
    return kExitUsage;
  }
  CallOptions call;
  call.wait_for_ready = absl::GetFlag(FLAGS_wait);
  absl::StatusOr<HealthStatus> status = (*client)->Health("", call);
  if (!status.ok()) {
    std::cerr << "health: " << status.status() << "\n";
    return kExitError;
  }
  std::cout << HealthStatusName(*status) << "\n";
  return *status == HealthStatus::kServing ? kExitOk : kExitFailed;
}

int Info() {
  absl::StatusOr<std::unique_ptr<Client>> client = MakeClient();
  if (!client.ok()) {
    std::cerr << client.status() << "\n";
    return kExitUsage;
  }
  absl::StatusOr<v1::ServerInfoResponse> info = (*client)->ServerInfo();
  if (!info.ok()) {
    std::cerr << "info: " << info.status() << "\n";
    return kExitError;
  }
  if (absl::GetFlag(FLAGS_json)) {
    std::string json;
    google::protobuf::util::JsonPrintOptions options;
    options.always_print_primitive_fields = true;
    options.preserve_proto_field_names = true;
    if (!google::protobuf::util::MessageToJsonString(*info, &json, options).ok()) {
      std::cerr << "info: cannot print the answer as JSON\n";
      return kExitError;
    }
    std::cout << json << "\n";
    return kExitOk;
  }
  const v1::Limits& l = info->limits();
  const v1::BatchingSettings& b = info->batching();
  std::cout << "scanserve " << info->version() << " at " << absl::GetFlag(FLAGS_target) << "\n"
            << "  backend     " << info->backend() << "\n"
            << "  operations  " << absl::StrJoin(info->operations(), ", ") << "\n";
  for (const v1::DeviceInfo& d : info->devices()) {
    std::cout << "  device " << d.index() << "    " << d.name();
    if (d.memory_total_bytes() > 0) {
      std::cout << ", memory " << FormatBytes(d.memory_used_bytes()) << " used of "
                << FormatBytes(d.memory_total_bytes());
    }
    std::cout << ", " << d.batches_executed() << " batches run\n";
  }
  std::cout << "  limits      " << l.max_elements_per_request() << " elements per request, "
            << FormatBytes(l.max_message_bytes()) << " per message, "
            << FormatBytes(l.max_queued_bytes()) << " and " << l.max_queued_requests()
            << " requests queued, state dim up to " << l.max_state_dim() << "\n"
            << "  batching    up to " << b.max_batch_requests() << " requests, "
            << b.max_batch_rows() << " rows, " << b.max_batch_elements()
            << " elements per batch; queue delay up to " << b.max_queue_delay_microseconds()
            << " us\n";
  return kExitOk;
}

int Run() {
  // The request.
  v1::StreamRequest request;
  std::string origin;
  if (!absl::GetFlag(FLAGS_in).empty()) {
    absl::StatusOr<v1::StreamRequest> read = ReadRequestFile(absl::GetFlag(FLAGS_in));
    if (!read.ok()) {
      std::cerr << read.status() << "\n";
      return kExitUsage;
    }
    request = *std::move(read);
    origin = absl::StrCat("from ", absl::GetFlag(FLAGS_in));
  } else {
    absl::StatusOr<RequestSpec> spec = SpecFromFlags();
    if (!spec.ok()) {
      std::cerr << spec.status().message() << "\n";
      return kExitUsage;
    }
    absl::StatusOr<v1::StreamRequest> built;
    if (!absl::GetFlag(FLAGS_in_dir).empty()) {
      built = RequestFromDirectory(*spec, absl::GetFlag(FLAGS_in_dir));
      origin = absl::StrCat("from ", absl::GetFlag(FLAGS_in_dir), "/");
    } else {
      absl::StatusOr<uint64_t> seed = SeedFromFlags();
      if (!seed.ok()) {
        std::cerr << seed.status().message() << "\n";
        return kExitUsage;
      }
      built = RandomRequest(*spec, *seed);
      origin = absl::StrCat("random, --seed=", *seed);
    }
    if (!built.ok()) {
      std::cerr << built.status().message() << "\n";
      return kExitUsage;
    }
    request = *std::move(built);
  }
  std::cout << "request   " << Describe(request) << "\n          " << origin << ", "
            << FormatBytes(PayloadBytes(request)) << "\n";
  if (const std::string path = absl::GetFlag(FLAGS_save_request); !path.empty()) {
    if (absl::Status s = WriteMessageFile(request, path); !s.ok()) {
      std::cerr << s.message() << "\n";
      return kExitUsage;
    }
  }

  // The call.
  absl::StatusOr<std::unique_ptr<Client>> client = MakeClient();
  if (!client.ok()) {
    std::cerr << client.status() << "\n";
    return kExitUsage;
  }
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<v1::StreamResponse> response =
      absl::GetFlag(FLAGS_stream) ? CallStream(**client, request) : CallUnary(**client, request);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!response.ok()) {
    std::cout << "response  " << absl::StatusCodeToString(response.status().code()) << " after "
              << FormatSeconds(seconds) << ": " << response.status().message() << "\n";
    return kExitError;
  }
  std::cout << "response  OK in " << FormatSeconds(seconds)
            << (absl::GetFlag(FLAGS_stream) ? " (Stream RPC)" : "") << "\n";
  for (const auto& [name, tensor] : OutputTensors(*response)) {
    std::cout << "  " << name << std::string(name.size() < 12 ? 12 - name.size() : 1, ' ')
              << FormatTensor(*tensor) << "\n";
  }
  if (const std::string path = absl::GetFlag(FLAGS_out); !path.empty()) {
    if (absl::Status s = WriteMessageFile(*response, path); !s.ok()) {
      std::cerr << s.message() << "\n";
      return kExitError;
    }
  }
  if (const std::string dir = absl::GetFlag(FLAGS_out_dir); !dir.empty()) {
    if (absl::Status s = WriteOutDir(*response, dir); !s.ok()) {
      std::cerr << s.message() << "\n";
      return kExitError;
    }
  }
  if (!absl::GetFlag(FLAGS_verify)) return kExitOk;

  // The check.
  std::unique_ptr<Backend> backend = MakeCpuBackend(0);
  absl::StatusOr<v1::StreamResponse> want = ComputeLocally(request, *backend);
  if (!want.ok()) {
    std::cout << "verify    cannot compute locally: " << want.status() << "\nFAIL\n";
    return kExitFailed;
  }
  const DType dtype = RequestDType(request).value();
  const VerifyReport report = Compare(*response, *want, dtype);
  for (const OutputCheck& check : report.outputs) {
    char line[160];
    if (!check.problem.empty()) {
      std::snprintf(line, sizeof(line), "verify    %-12s %s", check.name.c_str(),
                    check.problem.c_str());
    } else if (!IsFloatingPoint(dtype)) {
      std::snprintf(line, sizeof(line),
                    "verify    %-12s %lld of the elements differ (exact "
                    "match required)  %s",
                    check.name.c_str(), static_cast<long long>(check.mismatches),
                    check.ok ? "ok" : "FAIL");
    } else {
      std::snprintf(line, sizeof(line), "verify    %-12s rel L2 %.3e %s %.0e  max abs %.3e  %s",
                    check.name.c_str(), check.rel_l2, check.ok ? "<=" : ">", check.tolerance,
                    check.max_abs, check.ok ? "ok" : "FAIL");
    }
    std::cout << line << "\n";
  }
  std::cout << (report.ok ? "PASS" : "FAIL") << "\n";
  return report.ok ? kExitOk : kExitFailed;
}

int Bench() {
  const std::string op = absl::GetFlag(FLAGS_op);
  const int concurrency = absl::GetFlag(FLAGS_concurrency);
  const int distinct = absl::GetFlag(FLAGS_distinct_inputs);
  if (concurrency < 1 || distinct < 1) {
    std::cerr << "--concurrency, --distinct_inputs: must be at least 1\n";
    return kExitUsage;
  }
  if (absl::GetFlag(FLAGS_requests) < 0 || absl::GetFlag(FLAGS_warmup_requests) < 0 ||
      (absl::GetFlag(FLAGS_requests) == 0 &&
       absl::GetFlag(FLAGS_duration) <= absl::ZeroDuration())) {
    std::cerr << "--requests, --warmup_requests: must not be negative; without --requests, "
                 "--duration must be positive\n";
    return kExitUsage;
  }
  absl::StatusOr<uint64_t> seed = SeedFromFlags();
  if (!seed.ok()) {
    std::cerr << seed.status().message() << "\n";
    return kExitUsage;
  }
  std::vector<BenchRequest> requests;
  std::string title;
  std::map<std::string, std::string> fields;
  fields["target"] = JsonQuote(absl::GetFlag(FLAGS_target));
  fields["op"] = JsonQuote(op);
  if (op == "echo") {
    const int64_t bytes = absl::GetFlag(FLAGS_payload_bytes);
    if (bytes < 0) {
      std::cerr << "--payload_bytes: must not be negative\n";
      return kExitUsage;
    }
    std::mt19937_64 rng(*seed);
    for (int i = 0; i < distinct; ++i) {
      auto echo = std::make_shared<v1::EchoRequest>();
      std::string payload(static_cast<size_t>(bytes), '\0');
      for (char& c : payload) c = static_cast<char>(rng());
      echo->set_payload(std::move(payload));
      requests.push_back({nullptr, echo, static_cast<int64_t>(echo->ByteSizeLong())});
    }
    title = absl::StrCat("echo ", FormatBytes(bytes));
    fields["payload_bytes"] = absl::StrCat(bytes);
  } else {
    absl::StatusOr<RequestSpec> spec = SpecFromFlags();
    if (!spec.ok()) {
      std::cerr << spec.status().message() << "\n";
      return kExitUsage;
    }
    for (int i = 0; i < distinct; ++i) {
      absl::StatusOr<v1::StreamRequest> r = RandomRequest(*spec, *seed + static_cast<uint64_t>(i));
      if (!r.ok()) {
        std::cerr << r.status().message() << "\n";
        return kExitUsage;
      }
      auto shared = std::make_shared<const v1::StreamRequest>(*std::move(r));
      requests.push_back({shared, nullptr, PayloadBytes(*shared)});
    }
    title = Describe(*requests.front().scan);
    fields["dtype"] = JsonQuote(std::string(DTypeName(spec->dtype)));
    fields["layout"] = JsonQuote(std::string(LayoutName(spec->layout)));
    fields["shape"] = absl::StrCat("[", spec->batch, ",", spec->dim, ",", spec->length, "]");
    fields["request"] = JsonQuote(title);
  }

  absl::StatusOr<std::unique_ptr<Client>> client = MakeClient();
  if (!client.ok()) {
    std::cerr << client.status() << "\n";
    return kExitUsage;
  }
  BenchConfig config;
  config.concurrency = concurrency;
  config.requests = absl::GetFlag(FLAGS_requests);
  config.duration = absl::GetFlag(FLAGS_duration);
  config.warmup_requests = absl::GetFlag(FLAGS_warmup_requests);
  const bool progress = absl::GetFlag(FLAGS_progress);
  if (progress) {
    config.on_progress = [](const BenchProgress& p) {
      std::fprintf(stderr, "\r%8.1f s  %10lld done  %9.1f req/s  %5lld in flight  %lld errors   ",
                   absl::ToDoubleSeconds(p.elapsed), static_cast<long long>(p.completed),
                   p.recent_rps, static_cast<long long>(p.in_flight),
                   static_cast<long long>(p.errors));
      std::fflush(stderr);
    };
  }
  const BenchResult result = RunBench(**client, requests, config);
  if (progress) std::fprintf(stderr, "\r%80s\r", "");
  if (absl::GetFlag(FLAGS_json)) {
    std::cout << FormatJson(result, fields, concurrency) << "\n";
  } else {
    std::cout << FormatReport(result, title, concurrency);
  }
  return result.ok == result.completed && result.completed > 0 ? kExitOk : kExitError;
}

}  // namespace
}  // namespace scanserve::scanctl

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(scanserve::scanctl::kUsage);
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2) {
    std::cerr << scanserve::scanctl::kUsage;
    return scanserve::scanctl::kExitUsage;
  }
  const std::string command = args[1];
  if (command == "health") return scanserve::scanctl::Health();
  if (command == "info") return scanserve::scanctl::Info();
  if (command == "run") return scanserve::scanctl::Run();
  if (command == "bench") return scanserve::scanctl::Bench();
  std::cerr << "unknown command '" << command << "'\n\n" << scanserve::scanctl::kUsage;
  return scanserve::scanctl::kExitUsage;
}
