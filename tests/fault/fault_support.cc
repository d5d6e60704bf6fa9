#include "fault_support.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "absl/time/clock.h"
#include "reference/reference.h"
#include "requests.h"

namespace scanserve::testing {

RequestPool::RequestPool(Rng& rng, int count, int64_t max_dim, int64_t max_len) {
  for (int i = 0; i < count; ++i) {
    const SeqShape s = RandomShape(rng, max_dim, max_len);
    const LinearScanOptions o = RandomLinearScanOptions(rng);
    requests_.push_back(MakeLinearScan(rng, o, s));
    const RefLinearScan ref = ReferenceLinearScan(o, LinearScanProblemOf(requests_.back(), s));
    options_.push_back(o);
    shapes_.push_back(s);
    y_.push_back(ref.y);
    final_state_.push_back(ref.final_state);
  }
}

v1::StreamRequest RequestPool::stream_request(int i, uint64_t id) const {
  v1::StreamRequest r;
  r.set_request_id(id);
  *r.mutable_linear_scan() = requests_[i];
  return r;
}

std::string RequestPool::Mismatch(int i, const v1::LinearScanResponse& response) const {
  const LinearScanOptions& o = options_[i];
  const SeqShape& s = shapes_[i];
  const WireShape want = SeqWireShape(s, o.layout);
  if (WireShape(response.y().shape().begin(), response.y().shape().end()) != want) {
    return "y has the wrong shape";
  }
  if (response.y().data().size() != y_[i].size() * DTypeSize(o.dtype)) return "y has wrong size";
  const double error = RelativeL2Error(ToHost(response.y(), o.dtype), y_[i]);
  if (!(error <= Tolerance(o.dtype))) return "y relative error " + std::to_string(error);
  if (o.return_final_state) {
    if (response.final_state().data().size() != final_state_[i].size() * 4) {
      return "final_state has the wrong size";
    }
    const double e =
        RelativeL2Error(ToHost(response.final_state(), DType::kFloat32), final_state_[i]);
    if (!(e <= Tolerance(o.dtype))) return "final_state relative error " + std::to_string(e);
  }
  return "";
}

std::map<std::string, double> ScrapeMetrics(int port) {
  std::map<std::string, double> out;
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return out;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string text;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
      char buffer[65536];
      ssize_t n;
      while ((n = read(fd, buffer, sizeof(buffer))) > 0) text.append(buffer, n);
    }
  }
  close(fd);
  const size_t body = text.find("\r\n\r\n");
  if (text.find(" 200 ") == std::string::npos || body == std::string::npos) return out;
  size_t pos = body + 4;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    if (space == std::string::npos) continue;
    const std::string series = line.substr(0, space);
    std::map<std::string, std::string> labels;
    const size_t brace = series.find('{');
    std::string key = series.substr(0, brace) + "{";
    if (brace != std::string::npos) {
      size_t i = brace + 1;
      while (i < series.size() && series[i] != '}') {
        const size_t eq = series.find('=', i);
        const size_t open = series.find('"', eq);
        const size_t close = series.find('"', open + 1);
        labels[series.substr(i, eq - i)] = series.substr(open + 1, close - open - 1);
        i = close + 1;
        if (i < series.size() && series[i] == ',') ++i;
      }
    }
    for (const auto& [k, v] : labels) key += k + "=" + v + ",";
    out[key + "}"] = std::strtod(line.c_str() + space + 1, nullptr);
  }
  return out;
}

double Metric(const std::map<std::string, double>& metrics, const std::string& name,
              const std::map<std::string, std::string>& labels) {
  std::string key = name + "{";
  for (const auto& [k, v] : labels) key += k + "=" + v + ",";
  auto it = metrics.find(key + "}");
  return it == metrics.end() ? -1 : it->second;
}

double MetricSum(const std::map<std::string, double>& metrics, const std::string& name) {
  double total = 0;
  const std::string prefix = name + "{";
  for (auto it = metrics.lower_bound(prefix); it != metrics.end(); ++it) {
    if (it->first.rfind(prefix, 0) != 0) break;
    total += it->second;
  }
  return total;
}

std::map<std::string, double> ScrapeUntil(
    int port, const std::function<bool(const std::map<std::string, double>&)>& done,
    absl::Duration timeout) {
  const absl::Time until = absl::Now() + timeout;
  std::map<std::string, double> m = ScrapeMetrics(port);
  while (!done(m) && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(20));
    m = ScrapeMetrics(port);
  }
  return m;
}

double EnvNumber(const char* name, double fallback) {
  const char* v = std::getenv(name);
  return v == nullptr || *v == '\0' ? fallback : std::strtod(v, nullptr);
}

}  // namespace scanserve::testing
