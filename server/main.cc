// scanserve_server: reads flags into a ServerConfig, starts the server and shuts it down
// gracefully on SIGTERM or SIGINT (exit status 0). SIGHUP rereads --auth_token_file. A setting
// or file the server cannot use (certificate, key, token file) fails the start with exit status 1.
#include <pthread.h>
#include <signal.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/config.h"
#include "server/server.h"

namespace {
const scanserve::ServerConfig kDefaults;
}  // namespace

ABSL_FLAG(std::string, host, kDefaults.host, "gRPC listen address (0.0.0.0: every interface).");
ABSL_FLAG(int, port, kDefaults.port, "gRPC port; 0 picks a free one (logged at start).");
ABSL_FLAG(std::string, tls_cert_file, "",
          "PEM certificate chain of the gRPC port; with --tls_key_file turns TLS on.");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key of --tls_cert_file.");
ABSL_FLAG(std::string, tls_client_ca_file, "",
          "PEM CA certificates; set, clients must present a certificate they signed (mutual TLS).");
ABSL_FLAG(std::string, auth_token_file, "",
          "File of accepted bearer tokens, one per line ('#' comments, blank lines ignored); set, "
          "calls other than health and reflection need 'authorization: Bearer <token>'. SIGHUP "
          "rereads it.");
ABSL_FLAG(int, max_concurrent_streams, kDefaults.max_concurrent_streams,
          "Calls one client connection may have open at once; more wait in the client.");
ABSL_FLAG(std::string, metrics_address, kDefaults.metrics_address,
          "host:port of the Prometheus /metrics endpoint; 127.0.0.1:9090 serves this machine "
          "only; empty disables it.");
ABSL_FLAG(std::string, backend, kDefaults.backend.kind,
          "Compute backend: auto (cuda when a GPU is usable, else cpu), cpu or cuda.");
ABSL_FLAG(int, cpu_threads, kDefaults.backend.cpu_threads,
          "CPU backend thread pool size; 0 = one per hardware thread.");
ABSL_FLAG(int, cuda_streams_per_device, kDefaults.backend.cuda_streams_per_device,
          "CUDA backend: streams (batches in flight) per GPU.");
ABSL_FLAG(int64_t, cuda_pool_bytes_per_stream, kDefaults.backend.cuda_pool_bytes_per_stream,
          "CUDA backend: staging and device buffer bytes reserved per stream.");
ABSL_FLAG(int64_t, max_batch_requests, kDefaults.batching.max_batch_requests,
          "A batch closes at this many requests (1 disables batching).");
ABSL_FLAG(int64_t, max_batch_rows, kDefaults.batching.max_batch_rows,
          "A batch closes at this many rows (batch * dim summed over its requests).");
ABSL_FLAG(int64_t, max_batch_elements, kDefaults.batching.max_batch_elements,
          "A batch closes at this many sequence elements.");
ABSL_FLAG(int64_t, max_queue_delay_us,
          absl::ToInt64Microseconds(kDefaults.batching.max_queue_delay),
          "A batch closes when its oldest request has waited this long (microseconds).");
ABSL_FLAG(int64_t, max_queued_requests, kDefaults.batching.max_queued_requests,
          "Requests queued in total before new ones get RESOURCE_EXHAUSTED.");
ABSL_FLAG(int64_t, max_queued_bytes, kDefaults.batching.max_queued_bytes,
          "Bytes (inputs plus outputs) queued in total before new requests get "
          "RESOURCE_EXHAUSTED.");
ABSL_FLAG(int64_t, max_elements_per_request, kDefaults.limits.max_elements_per_request,
          "Elements of all tensors of one request and its results; more is RESOURCE_EXHAUSTED.");
ABSL_FLAG(int64_t, max_message_bytes, kDefaults.limits.max_message_bytes,
          "Largest gRPC message received or sent.");
ABSL_FLAG(int64_t, max_state_dim, kDefaults.limits.max_state_dim,
          "Largest selective_scan state size N accepted (at most 256).");
ABSL_FLAG(int64_t, stream_max_in_flight, kDefaults.stream_max_in_flight,
          "Requests one Stream call may have unanswered before the server stops reading it.");
ABSL_FLAG(absl::Duration, shutdown_grace, kDefaults.shutdown_grace,
          "On SIGTERM: how long health reports NOT_SERVING while calls are still accepted.");
ABSL_FLAG(absl::Duration, drain_timeout, kDefaults.drain_timeout,
          "On SIGTERM, after the grace: how long open calls may take before they are cancelled.");

namespace {

scanserve::ServerConfig ConfigFromFlags() {
  scanserve::ServerConfig c;
  c.host = absl::GetFlag(FLAGS_host);
  c.port = absl::GetFlag(FLAGS_port);
  c.metrics_address = absl::GetFlag(FLAGS_metrics_address);
  c.tls.cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  c.tls.key_file = absl::GetFlag(FLAGS_tls_key_file);
  c.tls.client_ca_file = absl::GetFlag(FLAGS_tls_client_ca_file);
  c.auth_token_file = absl::GetFlag(FLAGS_auth_token_file);
  c.max_concurrent_streams = absl::GetFlag(FLAGS_max_concurrent_streams);
  c.backend.kind = absl::GetFlag(FLAGS_backend);
  c.backend.cpu_threads = absl::GetFlag(FLAGS_cpu_threads);
  c.backend.cuda_streams_per_device = absl::GetFlag(FLAGS_cuda_streams_per_device);
  c.backend.cuda_pool_bytes_per_stream = absl::GetFlag(FLAGS_cuda_pool_bytes_per_stream);
  c.batching.max_batch_requests = absl::GetFlag(FLAGS_max_batch_requests);
  c.batching.max_batch_rows = absl::GetFlag(FLAGS_max_batch_rows);
  c.batching.max_batch_elements = absl::GetFlag(FLAGS_max_batch_elements);
  c.batching.max_queue_delay = absl::Microseconds(absl::GetFlag(FLAGS_max_queue_delay_us));
  c.batching.max_queued_requests = absl::GetFlag(FLAGS_max_queued_requests);
  c.batching.max_queued_bytes = absl::GetFlag(FLAGS_max_queued_bytes);
  c.limits.max_elements_per_request = absl::GetFlag(FLAGS_max_elements_per_request);
  c.limits.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  c.limits.max_state_dim = absl::GetFlag(FLAGS_max_state_dim);
  c.stream_max_in_flight = absl::GetFlag(FLAGS_stream_max_in_flight);
  c.shutdown_grace = absl::GetFlag(FLAGS_shutdown_grace);
  c.drain_timeout = absl::GetFlag(FLAGS_drain_timeout);
  return c;
}

void Log(const std::string& line) {
  std::cerr << absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone())
            << " scanserve: " << line << std::endl;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Serves the scan operations of scanserve.v1.ScanService over gRPC.\n"
      "  scanserve_server [--port=50051] [--backend=auto|cpu|cuda] [--metrics_address=...]\n"
      "                   [--tls_cert_file=... --tls_key_file=... [--tls_client_ca_file=...]]\n"
      "                   [--auth_token_file=...]");
  absl::ParseCommandLine(argc, argv);

  // Blocked before any thread starts, so every thread inherits the mask and the signals are only
  // ever taken by sigwait below: no signal handler runs, so reloading and shutting down are
  // ordinary code rather than async-signal-safe code.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const scanserve::ServerConfig config = ConfigFromFlags();
  scanserve::ScanServer server(config);
  absl::StatusOr<int> port = server.Start();
  if (!port.ok()) {
    Log("failed to start: " + port.status().ToString());
    return 1;
  }
  Log("listening for gRPC on " + config.host + ":" + std::to_string(*port));
  Log("backend " + server.backend_name() + (config.backend.kind == "auto" ? " (auto)" : ""));
  // The bound port, which differs from the configured one when that asks for a free port (0).
  const std::string metrics_host =
      config.metrics_address.substr(0, config.metrics_address.rfind(':'));
  Log(config.metrics_address.empty() ? std::string("metrics disabled")
                                     : "metrics on http://" + metrics_host + ":" +
                                           std::to_string(server.metrics_port()) + "/metrics");
  Log("batching: max " + std::to_string(config.batching.max_batch_requests) +
      " requests, max queue delay " + absl::FormatDuration(config.batching.max_queue_delay));
  Log(!config.tls.enabled()               ? std::string("transport: plaintext")
      : config.tls.client_ca_file.empty() ? "transport: TLS"
                                          : "transport: mutual TLS (client certificates verified)");
  Log(config.auth_token_file.empty()
          ? std::string("authentication: none")
          : "authentication: bearer tokens (" + std::to_string(server.token_count()) + " from " +
                config.auth_token_file + "; SIGHUP rereads it)");

  int received = 0;
  while (true) {
    if (sigwait(&signals, &received) != 0) continue;
    if (received != SIGHUP) break;
    if (config.auth_token_file.empty()) {
      Log("received SIGHUP: no --auth_token_file, nothing to reload");
      continue;
    }
    const absl::Status reloaded = server.ReloadTokens();
    Log(reloaded.ok() ? "received SIGHUP: reloaded " + std::to_string(server.token_count()) +
                            " tokens from " + config.auth_token_file
                      : "received SIGHUP: token reload failed: " + reloaded.ToString());
  }
  Log(std::string("received ") + (received == SIGINT ? "SIGINT" : "SIGTERM") +
      ": draining (health NOT_SERVING)");
  const absl::Time start = absl::Now();
  server.Shutdown();
  Log("stopped after " + absl::FormatDuration(absl::Now() - start));
  return 0;
}
