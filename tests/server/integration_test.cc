// The whole service over gRPC: an in-process ScanServer on 127.0.0.1 with the CPU backend, called
// through the real client. Every result is checked against the float64 references.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "reference/reference.h"
#include "requests.h"
#include "scanserve/client.h"
#include "server/server.h"
#include "server/service.h"
#include "support/test_support.h"

namespace scanserve::testing {
namespace {

using Labels = std::map<std::string, std::string>;

// ---- one request of any op, with what the test knows about it ----

struct LinearCase {
  LinearScanOptions o;
  SeqShape s;
  v1::LinearScanRequest r;
};
struct BackwardCase {
  LinearScanBackwardOptions o;
  SeqShape s;
  v1::LinearScanBackwardRequest r;
};
struct SelectiveCase {
  SelectiveScanOptions o;
  SeqShape s;
  v1::SelectiveScanRequest r;
};
struct AssociativeCase {
  AssociativeScanOptions o;
  SeqShape s;
  v1::AssociativeScanRequest r;
};
using AnyCase = std::variant<LinearCase, BackwardCase, SelectiveCase, AssociativeCase>;

AnyCase RandomCase(Rng& rng, OpKind op) {
  const SeqShape s = RandomShape(rng, 4, 24);
  switch (op) {
    case OpKind::kLinearScan: {
      const LinearScanOptions o = RandomLinearScanOptions(rng);
      return LinearCase{o, s, MakeLinearScan(rng, o, s)};
    }
    case OpKind::kLinearScanBackward: {
      const LinearScanBackwardOptions o = RandomLinearScanBackwardOptions(rng);
      return BackwardCase{o, s, MakeLinearScanBackward(rng, o, s)};
    }
    case OpKind::kSelectiveScan: {
      const SelectiveScanOptions o = RandomSelectiveScanOptions(rng, s);
      return SelectiveCase{o, s, MakeSelectiveScan(rng, o, s)};
    }
    case OpKind::kAssociativeScan:
      break;
  }
  const AssociativeScanOptions o = RandomAssociativeScanOptions(rng);
  return AssociativeCase{o, s, MakeAssociativeScan(rng, o, s)};
}

constexpr OpKind kOps[] = {OpKind::kLinearScan, OpKind::kLinearScanBackward, OpKind::kSelectiveScan,
                           OpKind::kAssociativeScan};

v1::StreamRequest ToStream(const AnyCase& c, uint64_t id) {
  v1::StreamRequest s;
  s.set_request_id(id);
  std::visit(
      [&](const auto& k) {
        using T = std::decay_t<decltype(k)>;
        if constexpr (std::is_same_v<T, LinearCase>) *s.mutable_linear_scan() = k.r;
        if constexpr (std::is_same_v<T, BackwardCase>) *s.mutable_linear_scan_backward() = k.r;
        if constexpr (std::is_same_v<T, SelectiveCase>) *s.mutable_selective_scan() = k.r;
        if constexpr (std::is_same_v<T, AssociativeCase>) *s.mutable_associative_scan() = k.r;
      },
      c);
  return s;
}

std::string Describe(const AnyCase& c) {
  return std::visit(
      [](const auto& k) {
        return SignatureKey(k.o) + " shape (" + std::to_string(k.s.batch) + ", " +
               std::to_string(k.s.dim) + ", " + std::to_string(k.s.length) + ")";
      },
      c);
}

// An output tensor's metadata checked, its data copied out.
HostTensor Output(const v1::Tensor& t, DType dtype, const WireShape& shape,
                  std::optional<Layout> layout, const char* name) {
  EXPECT_EQ(t.dtype(), wire::ToWire(dtype)) << name;
  EXPECT_EQ(WireShape(t.shape().begin(), t.shape().end()), shape) << name;
  if (layout) {
    EXPECT_EQ(t.layout(), wire::ToWire(*layout)) << name;
  }
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  EXPECT_EQ(t.data().size(), static_cast<size_t>(count) * DTypeSize(dtype)) << name;
  return ToHost(t, dtype);
}

void ExpectClose(const HostTensor& out, const std::vector<double>& ref, DType dtype,
                 const char* name) {
  EXPECT_LE(RelativeL2Error(out, ref), Tolerance(dtype)) << name;
}

// Absolute values of `count` little-endian IEEE floats of `width` bytes: the sign bits cleared.
std::vector<unsigned char> AbsCopy(const void* src, int64_t count, size_t width) {
  const auto* bytes = static_cast<const unsigned char*>(src);
  std::vector<unsigned char> v(bytes, bytes + static_cast<size_t>(count) * width);
  for (size_t i = width - 1; i < v.size(); i += width) v[i] &= 0x7f;
  return v;
}

// A request's final state is one scalar per row (per state for the selective scan), and these
// requests have few rows. Where the recurrence cancels, float32's rounding (of the order of
// L * 6e-8 times the magnitudes summed) can exceed 1e-5 of the state itself, so the error is judged
// against the larger of the state and `magnitude`, the same recurrence over absolute values (the
// scale the rounding follows): a wrong state still fails, a cancelled one does not.
void ExpectStateClose(const HostTensor& out, const std::vector<double>& ref,
                      const std::vector<double>& magnitude, DType dtype, const char* name) {
  ASSERT_EQ(out.count(), static_cast<int64_t>(ref.size()));
  ASSERT_EQ(magnitude.size(), ref.size());
  double err = 0;
  double ref_norm = 0;
  double magnitude_norm = 0;
  for (int64_t i = 0; i < out.count(); ++i) {
    const double d = out.Get(i) - ref[i];
    err += d * d;
    ref_norm += ref[i] * ref[i];
    magnitude_norm += magnitude[i] * magnitude[i];
  }
  EXPECT_LE(std::sqrt(err), Tolerance(dtype) * std::sqrt(std::max(ref_norm, magnitude_norm)))
      << name << ": relative L2 error " << RelativeL2Error(out, ref) << ", state norm "
      << std::sqrt(ref_norm) << ", magnitude norm " << std::sqrt(magnitude_norm);
}

void ExpectFinalStateClose(const LinearCase& c, const HostTensor& out,
                           const std::vector<double>& ref) {
  LinearScanProblem p = LinearScanProblemOf(c.r, c.s);
  const size_t elem = DTypeSize(c.o.dtype);
  const std::vector<unsigned char> a = AbsCopy(p.a, c.s.elements(), elem);
  const std::vector<unsigned char> x = AbsCopy(p.x, c.s.elements(), elem);
  const std::vector<unsigned char> b =
      p.b != nullptr ? AbsCopy(p.b, c.s.elements(), elem) : std::vector<unsigned char>();
  std::vector<float> h0;
  if (p.h0 != nullptr) {
    for (int64_t i = 0; i < c.s.rows(); ++i) h0.push_back(std::abs(p.h0[i]));
  }
  p.a = a.data();
  p.x = x.data();
  if (p.b != nullptr) p.b = b.data();
  if (p.h0 != nullptr) p.h0 = h0.data();
  ExpectStateClose(out, ref, ReferenceLinearScan(c.o, p).final_state, c.o.dtype, "final_state");
}

void Check(const LinearCase& c, const v1::LinearScanResponse& r) {
  const RefLinearScan ref = ReferenceLinearScan(c.o, LinearScanProblemOf(c.r, c.s));
  const WireShape seq = SeqWireShape(c.s, c.o.layout);
  ExpectClose(Output(r.y(), c.o.dtype, seq, c.o.layout, "y"), ref.y, c.o.dtype, "y");
  EXPECT_EQ(r.has_final_state(), c.o.return_final_state);
  if (c.o.return_final_state) {
    ExpectFinalStateClose(
        c, Output(r.final_state(), DType::kFloat32, {c.s.batch, c.s.dim}, {}, "final_state"),
        ref.final_state);
  }
}

// dh0 is the backward's state: one scalar per row, the reverse recurrence of dy * c through the
// gates, which cancels as the forward one does. Its magnitude is the same recurrence over |a|,
// |dy| and |c|.
void ExpectDh0Close(const BackwardCase& c, const HostTensor& out, const std::vector<double>& ref) {
  LinearScanBackwardProblem p = LinearScanBackwardProblemOf(c.r, c.s);
  const size_t elem = DTypeSize(c.o.dtype);
  const std::vector<unsigned char> a = AbsCopy(p.a, c.s.elements(), elem);
  const std::vector<unsigned char> dy = AbsCopy(p.dy, c.s.elements(), elem);
  const std::vector<unsigned char> gate =
      p.c != nullptr ? AbsCopy(p.c, c.s.elements(), elem) : std::vector<unsigned char>();
  p.a = a.data();
  p.dy = dy.data();
  if (p.c != nullptr) p.c = gate.data();
  ExpectStateClose(out, ref, ReferenceLinearScanBackward(c.o, p).dh0, c.o.dtype, "dh0");
}

void Check(const BackwardCase& c, const v1::LinearScanBackwardResponse& r) {
  const RefLinearScanBackward ref =
      ReferenceLinearScanBackward(c.o, LinearScanBackwardProblemOf(c.r, c.s));
  const WireShape seq = SeqWireShape(c.s, c.o.layout);
  const DType t = c.o.dtype;
  ExpectClose(Output(r.da(), t, seq, c.o.layout, "da"), ref.da, t, "da");
  ExpectClose(Output(r.dx(), t, seq, c.o.layout, "dx"), ref.dx, t, "dx");
  EXPECT_EQ(r.has_db(), c.o.has_b);
  EXPECT_EQ(r.has_dc(), c.o.has_c);
  EXPECT_EQ(r.has_dh0(), c.o.has_h0);
  if (c.o.has_b) ExpectClose(Output(r.db(), t, seq, c.o.layout, "db"), ref.db, t, "db");
  if (c.o.has_c) ExpectClose(Output(r.dc(), t, seq, c.o.layout, "dc"), ref.dc, t, "dc");
  if (c.o.has_h0) {
    ExpectDh0Close(c, Output(r.dh0(), DType::kFloat32, {c.s.batch, c.s.dim}, {}, "dh0"), ref.dh0);
  }
}

// The selective scan's last state, against the same recurrence over |u|, |B| and |h0| (its decays
// exp(delta A) are positive already).
void ExpectLastStateClose(const SelectiveCase& c, const HostTensor& out,
                          const std::vector<double>& ref) {
  SelectiveScanProblem p = SelectiveScanProblemOf(c.r, c.s);
  const size_t elem = DTypeSize(c.o.dtype);
  const int64_t b_count = c.o.variable_b ? c.s.batch * c.o.groups * c.o.state_dim * c.s.length
                                         : c.s.dim * c.o.state_dim;
  const std::vector<unsigned char> u = AbsCopy(p.u, c.s.elements(), elem);
  const std::vector<unsigned char> b = AbsCopy(p.B, b_count, c.o.variable_b ? elem : sizeof(float));
  std::vector<unsigned char> h0;
  if (p.h0 != nullptr) h0 = AbsCopy(p.h0, c.s.rows() * c.o.state_dim, sizeof(float));
  p.u = u.data();
  p.B = b.data();
  if (p.h0 != nullptr) p.h0 = reinterpret_cast<const float*>(h0.data());
  ExpectStateClose(out, ref, ReferenceSelectiveScan(c.o, p).last_state, c.o.dtype, "last_state");
}

void Check(const SelectiveCase& c, const v1::SelectiveScanResponse& r) {
  const RefSelectiveScan ref = ReferenceSelectiveScan(c.o, SelectiveScanProblemOf(c.r, c.s));
  ExpectClose(Output(r.y(), c.o.dtype, SeqWireShape(c.s, c.o.layout), c.o.layout, "y"), ref.y,
              c.o.dtype, "y");
  EXPECT_EQ(r.has_last_state(), c.o.return_last_state);
  if (c.o.return_last_state) {
    ExpectLastStateClose(c,
                         Output(r.last_state(), DType::kFloat32,
                                {c.s.batch, c.s.dim, c.o.state_dim}, {}, "last_state"),
                         ref.last_state);
  }
}

void Check(const AssociativeCase& c, const v1::AssociativeScanResponse& r) {
  const AssociativeScanProblem p = AssociativeScanProblemOf(c.r, c.s);
  const HostTensor y = Output(r.y(), c.o.dtype, SeqWireShape(c.s, c.o.layout), c.o.layout, "y");
  if (IsFloatingPoint(c.o.dtype)) {
    ExpectClose(y, ReferenceAssociativeScan(c.o, p), c.o.dtype, "y");
    return;
  }
  const std::vector<int64_t> ref = ReferenceAssociativeScanInt(c.o, p);
  ASSERT_EQ(y.count(), static_cast<int64_t>(ref.size()));
  int64_t mismatches = 0;
  for (int64_t i = 0; i < y.count(); ++i) mismatches += y.GetInt(i) != ref[i];
  EXPECT_EQ(mismatches, 0) << "integer associative scan must be exact";
}

void CheckStream(const AnyCase& c, const v1::StreamResponse& r) {
  SCOPED_TRACE(Describe(c));
  ASSERT_EQ(r.code(), 0) << r.message();
  std::visit(
      [&](const auto& k) {
        using T = std::decay_t<decltype(k)>;
        if constexpr (std::is_same_v<T, LinearCase>) {
          ASSERT_TRUE(r.has_linear_scan());
          Check(k, r.linear_scan());
        } else if constexpr (std::is_same_v<T, BackwardCase>) {
          ASSERT_TRUE(r.has_linear_scan_backward());
          Check(k, r.linear_scan_backward());
        } else if constexpr (std::is_same_v<T, SelectiveCase>) {
          ASSERT_TRUE(r.has_selective_scan());
          Check(k, r.selective_scan());
        } else {
          ASSERT_TRUE(r.has_associative_scan());
          Check(k, r.associative_scan());
        }
      },
      c);
}

// ---- /metrics over HTTP ----

// A TCP socket connected to 127.0.0.1:port, or -1.
int ConnectLoopback(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// GET /metrics from 127.0.0.1:port; the body, or "" when the scrape fails.
std::string ScrapeMetrics(int port) {
  const int fd = ConnectLoopback(port);
  if (fd < 0) return "";
  std::string out;
  const std::string request = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
    char buffer[65536];
    ssize_t n;
    while ((n = read(fd, buffer, sizeof(buffer))) > 0) out.append(buffer, n);
  }
  close(fd);
  const size_t body = out.find("\r\n\r\n");
  if (out.rfind("HTTP/1.", 0) != 0 || out.find(" 200 ") == std::string::npos ||
      body == std::string::npos) {
    return "";
  }
  return out.substr(body + 4);
}

// A bare HTTP/2 connection to 127.0.0.1:port: the client preface and SETTINGS sent, the server's
// SETTINGS read and acknowledged, then nothing: it makes no calls and ignores GOAWAY, as a client
// still reading its last answers would. The socket, or -1.
int OpenIdleHttp2Connection(int port) {
  const int fd = ConnectLoopback(port);
  if (fd < 0) return -1;
  const timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  // Frame header: 24-bit length, type (4: SETTINGS), flags (1: ACK), 31-bit stream id.
  const std::string preface =
      std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") + std::string("\0\0\0\x04\0\0\0\0\0", 9);
  const std::string settings_ack("\0\0\0\x04\x01\0\0\0\0", 9);
  char header[9];
  if (write(fd, preface.data(), preface.size()) != static_cast<ssize_t>(preface.size()) ||
      recv(fd, header, sizeof(header), MSG_WAITALL) != static_cast<ssize_t>(sizeof(header)) ||
      header[3] != 0x04 ||
      write(fd, settings_ack.data(), settings_ack.size()) !=
          static_cast<ssize_t>(settings_ack.size())) {
    close(fd);
    return -1;
  }
  return fd;
}

std::string SeriesKey(const std::string& name, const Labels& labels) {
  std::string key = name + "{";
  for (const auto& [k, v] : labels) key += k + "=" + v + ",";
  return key + "}";
}

// The text exposition format parsed into series key -> value (labels in sorted order).
std::map<std::string, double> ParseMetrics(const std::string& text) {
  std::map<std::string, double> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    if (space == std::string::npos) continue;
    const std::string series = line.substr(0, space);
    const double value = std::stod(line.substr(space + 1));
    Labels labels;
    const size_t brace = series.find('{');
    const std::string name = series.substr(0, brace);
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
    out[SeriesKey(name, labels)] = value;
  }
  return out;
}

class Metrics {
 public:
  explicit Metrics(std::map<std::string, double> values) : values_(std::move(values)) {}
  // The series' value; -1 when absent (every value of ours is >= 0).
  double Get(const std::string& name, const Labels& labels = {}) const {
    auto it = values_.find(SeriesKey(name, labels));
    return it == values_.end() ? -1 : it->second;
  }
  // Sum over every series of `name` whose labels include `match`.
  double Sum(const std::string& name, const Labels& match = {}) const {
    double total = 0;
    const std::string prefix = name + "{";
    for (auto it = values_.lower_bound(prefix); it != values_.end(); ++it) {
      if (it->first.rfind(prefix, 0) != 0) break;
      bool ok = true;
      for (const auto& [k, v] : match) ok &= it->first.find(k + "=" + v + ",") != std::string::npos;
      if (ok) total += it->second;
    }
    return total;
  }
  bool empty() const { return values_.empty(); }

 private:
  std::map<std::string, double> values_;
};

// ---- the fixture ----

ServerConfig TestConfig() {
  ServerConfig c;
  c.host = "127.0.0.1";
  c.port = 0;
  c.metrics_address = "127.0.0.1:0";
  c.backend.kind = "cpu";
  c.backend.cpu_threads = 2;
  c.batching.max_queue_delay = absl::Milliseconds(1);
  c.limits = MalformedCaseLimits();
  c.drain_timeout = absl::Seconds(20);
  c.shutdown_grace = absl::ZeroDuration();  // tests that need a grace set their own
  return c;
}

class IntegrationTest : public ::testing::Test {
 protected:
  void StartServer(const ServerConfig& config = TestConfig()) {
    server_ = std::make_unique<ScanServer>(config);
    absl::StatusOr<int> port = server_->Start();
    ASSERT_TRUE(port.ok()) << port.status();
    ASSERT_GT(*port, 0);
    ClientOptions options;
    options.target = "127.0.0.1:" + std::to_string(*port);
    options.default_timeout = absl::Seconds(60);
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
  }

  void TearDown() override {
    absl::Time t0 = absl::Now();
    client_.reset();
    fprintf(stderr, "client reset %s\n", absl::FormatDuration(absl::Now() - t0).c_str());
    t0 = absl::Now();
    if (server_) server_->Shutdown();
    fprintf(stderr, "shutdown %s\n", absl::FormatDuration(absl::Now() - t0).c_str());
    t0 = absl::Now();
    server_.reset();
    fprintf(stderr, "server reset %s\n", absl::FormatDuration(absl::Now() - t0).c_str());
  }

  Metrics Scrape() const {
    const std::string text = ScrapeMetrics(server_->metrics_port());
    EXPECT_FALSE(text.empty()) << "scrape of /metrics on port " << server_->metrics_port();
    return Metrics(ParseMetrics(text));
  }

  // Scrapes until `done` holds (up to 10 s): for values the server records after the client
  // already has its answer.
  Metrics ScrapeUntil(const std::function<bool(const Metrics&)>& done) const {
    const absl::Time until = absl::Now() + absl::Seconds(10);
    Metrics m = Scrape();
    while (!done(m) && absl::Now() < until) {
      absl::SleepFor(absl::Milliseconds(10));
      m = Scrape();
    }
    return m;
  }

  // Sends a case on its unary RPC, synchronously, and checks the answer.
  void CallAndCheck(const AnyCase& c) {
    SCOPED_TRACE(Describe(c));
    std::visit(
        [&](const auto& k) {
          using T = std::decay_t<decltype(k)>;
          if constexpr (std::is_same_v<T, LinearCase>) {
            auto r = client_->LinearScan(k.r);
            ASSERT_TRUE(r.ok()) << r.status();
            Check(k, *r);
          } else if constexpr (std::is_same_v<T, BackwardCase>) {
            auto r = client_->LinearScanBackward(k.r);
            ASSERT_TRUE(r.ok()) << r.status();
            Check(k, *r);
          } else if constexpr (std::is_same_v<T, SelectiveCase>) {
            auto r = client_->SelectiveScan(k.r);
            ASSERT_TRUE(r.ok()) << r.status();
            Check(k, *r);
          } else {
            auto r = client_->AssociativeScan(k.r);
            ASSERT_TRUE(r.ok()) << r.status();
            Check(k, *r);
          }
        },
        c);
  }

  // The unary call a Stream request's op corresponds to; the serialized response or the status.
  absl::StatusOr<std::string> CallUnary(const v1::StreamRequest& request,
                                        const CallOptions& call = {}) {
    auto serialize = [](const auto& r) -> absl::StatusOr<std::string> {
      if (!r.ok()) return r.status();
      return r->SerializeAsString();
    };
    switch (request.op_case()) {
      case v1::StreamRequest::kLinearScan:
        return serialize(client_->LinearScan(request.linear_scan(), call));
      case v1::StreamRequest::kLinearScanBackward:
        return serialize(client_->LinearScanBackward(request.linear_scan_backward(), call));
      case v1::StreamRequest::kSelectiveScan:
        return serialize(client_->SelectiveScan(request.selective_scan(), call));
      case v1::StreamRequest::kAssociativeScan:
        return serialize(client_->AssociativeScan(request.associative_scan(), call));
      case v1::StreamRequest::OP_NOT_SET:
        break;
    }
    return absl::InternalError("no op");
  }

  std::unique_ptr<ScanServer> server_;
  std::unique_ptr<Client> client_;
};

// Collects the responses of a Stream by request_id.
class Collector {
 public:
  std::function<void(v1::StreamResponse)> Callback() {
    return [this](v1::StreamResponse r) {
      absl::MutexLock lock(&mu_);
      const uint64_t id = r.request_id();
      duplicates_ += responses_.count(id);
      responses_[id] = std::move(r);
    };
  }
  std::map<uint64_t, v1::StreamResponse> Take() {
    absl::MutexLock lock(&mu_);
    return std::move(responses_);
  }
  int duplicates() {
    absl::MutexLock lock(&mu_);
    return duplicates_;
  }

 private:
  absl::Mutex mu_;
  std::map<uint64_t, v1::StreamResponse> responses_ ABSL_GUARDED_BY(mu_);
  int duplicates_ ABSL_GUARDED_BY(mu_) = 0;
};

// ---- the tests ----

TEST_F(IntegrationTest, EveryOpSyncMatchesReference) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  for (OpKind op : kOps) {
    for (int i = 0; i < 12; ++i) CallAndCheck(RandomCase(rng, op));
  }
}

TEST_F(IntegrationTest, EveryOpAsyncWithFuturesAndCallbacksMatchesReference) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  // Futures: all in flight at once, so they also batch.
  std::vector<LinearCase> linear;
  std::vector<BackwardCase> backward;
  std::vector<SelectiveCase> selective;
  std::vector<AssociativeCase> associative;
  for (int i = 0; i < 8; ++i) {
    linear.push_back(std::get<LinearCase>(RandomCase(rng, OpKind::kLinearScan)));
    backward.push_back(std::get<BackwardCase>(RandomCase(rng, OpKind::kLinearScanBackward)));
    selective.push_back(std::get<SelectiveCase>(RandomCase(rng, OpKind::kSelectiveScan)));
    associative.push_back(std::get<AssociativeCase>(RandomCase(rng, OpKind::kAssociativeScan)));
  }
  std::vector<std::future<absl::StatusOr<v1::LinearScanResponse>>> lf;
  std::vector<std::future<absl::StatusOr<v1::LinearScanBackwardResponse>>> bf;
  std::vector<std::future<absl::StatusOr<v1::SelectiveScanResponse>>> sf;
  std::vector<std::future<absl::StatusOr<v1::AssociativeScanResponse>>> af;
  for (int i = 0; i < 8; ++i) {
    lf.push_back(client_->LinearScanAsync(linear[i].r));
    bf.push_back(client_->LinearScanBackwardAsync(backward[i].r));
    sf.push_back(client_->SelectiveScanAsync(selective[i].r));
    af.push_back(client_->AssociativeScanAsync(associative[i].r));
  }
  for (int i = 0; i < 8; ++i) {
    auto l = lf[i].get();
    ASSERT_TRUE(l.ok()) << l.status();
    Check(linear[i], *l);
    auto b = bf[i].get();
    ASSERT_TRUE(b.ok()) << b.status();
    Check(backward[i], *b);
    auto s = sf[i].get();
    ASSERT_TRUE(s.ok()) << s.status();
    Check(selective[i], *s);
    auto a = af[i].get();
    ASSERT_TRUE(a.ok()) << a.status();
    Check(associative[i], *a);
  }

  // Callbacks: the results are checked on the test thread once all arrived.
  std::promise<absl::StatusOr<v1::LinearScanResponse>> l;
  std::promise<absl::StatusOr<v1::LinearScanBackwardResponse>> b;
  std::promise<absl::StatusOr<v1::SelectiveScanResponse>> s;
  std::promise<absl::StatusOr<v1::AssociativeScanResponse>> a;
  client_->LinearScanAsync(std::make_shared<const v1::LinearScanRequest>(linear[0].r),
                           [&](absl::StatusOr<v1::LinearScanResponse> r) { l.set_value(r); });
  client_->LinearScanBackwardAsync(
      std::make_shared<const v1::LinearScanBackwardRequest>(backward[0].r),
      [&](absl::StatusOr<v1::LinearScanBackwardResponse> r) { b.set_value(r); });
  client_->SelectiveScanAsync(std::make_shared<const v1::SelectiveScanRequest>(selective[0].r),
                              [&](absl::StatusOr<v1::SelectiveScanResponse> r) { s.set_value(r); });
  client_->AssociativeScanAsync(
      std::make_shared<const v1::AssociativeScanRequest>(associative[0].r),
      [&](absl::StatusOr<v1::AssociativeScanResponse> r) { a.set_value(r); });
  auto lr = l.get_future().get();
  ASSERT_TRUE(lr.ok()) << lr.status();
  Check(linear[0], *lr);
  auto br = b.get_future().get();
  ASSERT_TRUE(br.ok()) << br.status();
  Check(backward[0], *br);
  auto sr = s.get_future().get();
  ASSERT_TRUE(sr.ok()) << sr.status();
  Check(selective[0], *sr);
  auto ar = a.get_future().get();
  ASSERT_TRUE(ar.ok()) << ar.status();
  Check(associative[0], *ar);
}

TEST_F(IntegrationTest, StreamAnswersThousandInterleavedRequestsById) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  constexpr int kRequests = 1000;
  std::vector<AnyCase> cases;
  cases.reserve(kRequests);
  for (int i = 0; i < kRequests; ++i) cases.push_back(RandomCase(rng, kOps[rng.Int(0, 3)]));
  // Ids that are neither dense nor ordered, so answers can only be matched by id.
  std::vector<uint64_t> ids(kRequests);
  for (int i = 0; i < kRequests; ++i) ids[i] = (uint64_t{0x9e3779b97f4a7c15} * (i + 1)) ^ 0xabcd;

  Collector collector;
  std::unique_ptr<Stream> stream = client_->OpenStream(collector.Callback());
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(stream->Send(ToStream(cases[i], ids[i])).ok());
  }
  ASSERT_TRUE(stream->Finish().ok());
  std::map<uint64_t, v1::StreamResponse> responses = collector.Take();
  EXPECT_EQ(collector.duplicates(), 0);
  ASSERT_EQ(responses.size(), static_cast<size_t>(kRequests));
  for (int i = 0; i < kRequests; ++i) {
    auto it = responses.find(ids[i]);
    ASSERT_NE(it, responses.end()) << "no answer for request " << i;
    CheckStream(cases[i], it->second);
  }
}

TEST_F(IntegrationTest, StreamWithTightInFlightBoundPausesAndResumesReading) {
  ServerConfig config = TestConfig();
  config.stream_max_in_flight = 2;
  ASSERT_NO_FATAL_FAILURE(StartServer(config));
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  constexpr int kRequests = 200;
  std::vector<AnyCase> cases;
  for (int i = 0; i < kRequests; ++i) cases.push_back(RandomCase(rng, kOps[i % 4]));
  Collector collector;
  std::unique_ptr<Stream> stream = client_->OpenStream(collector.Callback());
  for (int i = 0; i < kRequests; ++i) ASSERT_TRUE(stream->Send(ToStream(cases[i], i)).ok());
  ASSERT_TRUE(stream->Finish().ok());
  std::map<uint64_t, v1::StreamResponse> responses = collector.Take();
  ASSERT_EQ(responses.size(), static_cast<size_t>(kRequests));
  for (int i = 0; i < kRequests; ++i) CheckStream(cases[i], responses[i]);
}

TEST_F(IntegrationTest, MalformedRequestsGetTheirStatusOnUnaryAndStream) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  const std::vector<MalformedCase> cases = MalformedCases(rng);
  ASSERT_GE(cases.size(), 20u);
  for (const MalformedCase& c : cases) {
    if (c.stream_only) continue;
    SCOPED_TRACE(c.name);
    absl::StatusOr<std::string> r = CallUnary(c.request);
    EXPECT_EQ(r.status().code(), c.code) << r.status();
    EXPECT_EQ(r.status().message(), c.message);
  }

  // All of them on one Stream, then a valid request: errors answer their request and the stream
  // goes on.
  Collector collector;
  std::unique_ptr<Stream> stream = client_->OpenStream(collector.Callback());
  for (const MalformedCase& c : cases) ASSERT_TRUE(stream->Send(c.request).ok());
  const AnyCase valid = RandomCase(rng, OpKind::kSelectiveScan);
  constexpr uint64_t kValidId = 1000000;
  ASSERT_TRUE(stream->Send(ToStream(valid, kValidId)).ok());
  ASSERT_TRUE(stream->Finish().ok());
  std::map<uint64_t, v1::StreamResponse> responses = collector.Take();
  ASSERT_EQ(responses.size(), cases.size() + 1);
  for (const MalformedCase& c : cases) {
    SCOPED_TRACE(c.name);
    const v1::StreamResponse& r = responses[c.request.request_id()];
    EXPECT_EQ(r.code(), static_cast<int>(c.code));
    EXPECT_EQ(r.message(), c.message);
    EXPECT_EQ(r.result_case(), v1::StreamResponse::RESULT_NOT_SET);
  }
  CheckStream(valid, responses[kValidId]);
}

TEST_F(IntegrationTest, DeadlinePassingWhileQueuedDropsTheRequestUnrun) {
  ServerConfig config = TestConfig();
  config.batching.max_queue_delay = absl::Seconds(30);  // nothing runs by delay in this test
  ASSERT_NO_FATAL_FAILURE(StartServer(config));
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  const AnyCase c = RandomCase(rng, OpKind::kLinearScan);
  CallOptions call;
  call.timeout = absl::Milliseconds(300);
  absl::StatusOr<v1::LinearScanResponse> r = client_->LinearScan(std::get<LinearCase>(c).r, call);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  // The server saw the same: dropped from the queue at its deadline, no batch ever ran.
  const Labels deadline{{"op", "linear_scan"}, {"code", "DEADLINE_EXCEEDED"}};
  const Metrics m = ScrapeUntil(
      [&](const Metrics& m) { return m.Get("scanserve_requests_total", deadline) >= 1; });
  EXPECT_EQ(m.Get("scanserve_requests_total", deadline), 1);
  EXPECT_EQ(m.Sum("scanserve_requests_total"), 1);
  EXPECT_EQ(m.Get("scanserve_queue_depth"), 0);
  EXPECT_EQ(server_->batches_executed(), 0);
}

TEST_F(IntegrationTest, FullQueueAnswersResourceExhaustedAtOnce) {
  ServerConfig config = TestConfig();
  config.batching.max_queue_delay = absl::Seconds(30);
  config.batching.max_queued_requests = 2;
  ASSERT_NO_FATAL_FAILURE(StartServer(config));
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  std::vector<AssociativeCase> queued;
  std::vector<std::future<absl::StatusOr<v1::AssociativeScanResponse>>> futures;
  for (int i = 0; i < 2; ++i) {
    queued.push_back(std::get<AssociativeCase>(RandomCase(rng, OpKind::kAssociativeScan)));
    futures.push_back(client_->AssociativeScanAsync(queued.back().r));
  }
  Metrics m = ScrapeUntil([](const Metrics& m) { return m.Get("scanserve_queue_depth") == 2; });
  ASSERT_EQ(m.Get("scanserve_queue_depth"), 2);
  const AnyCase extra = RandomCase(rng, OpKind::kSelectiveScan);
  absl::StatusOr<v1::SelectiveScanResponse> r =
      client_->SelectiveScan(std::get<SelectiveCase>(extra).r);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
  EXPECT_NE(r.status().message().find("max_queued_requests"), std::string::npos)
      << r.status().message();
  // Draining runs what was queued.
  server_->Shutdown();
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<v1::AssociativeScanResponse> done = futures[i].get();
    ASSERT_TRUE(done.ok()) << done.status();
    Check(queued[i], *done);
  }
}

TEST_F(IntegrationTest, CancelledStreamCancelsEveryQueuedJob) {
  ServerConfig config = TestConfig();
  config.batching.max_queue_delay = absl::Seconds(30);
  ASSERT_NO_FATAL_FAILURE(StartServer(config));
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  Collector collector;
  std::unique_ptr<Stream> stream = client_->OpenStream(collector.Callback());
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(stream->Send(ToStream(RandomCase(rng, OpKind::kSelectiveScan), i)).ok());
  }
  Metrics m = ScrapeUntil([](const Metrics& m) { return m.Get("scanserve_queue_depth") == 5; });
  ASSERT_EQ(m.Get("scanserve_queue_depth"), 5);
  stream->Cancel();
  EXPECT_EQ(stream->Finish().code(), absl::StatusCode::kCancelled);
  const Labels cancelled{{"op", "selective_scan"}, {"code", "CANCELLED"}};
  m = ScrapeUntil(
      [&](const Metrics& m) { return m.Get("scanserve_requests_total", cancelled) == 5; });
  EXPECT_EQ(m.Get("scanserve_requests_total", cancelled), 5);
  EXPECT_EQ(m.Get("scanserve_queue_depth"), 0);
  EXPECT_EQ(server_->batches_executed(), 0);
  EXPECT_TRUE(collector.Take().empty());
}

TEST_F(IntegrationTest, HealthTurnsNotServingWhileDrainingAndQueuedWorkFinishes) {
  ServerConfig config = TestConfig();
  config.shutdown_grace = absl::Seconds(2);
  config.batching.max_queue_delay = absl::Seconds(30);  // only the drain can run the queued job
  ASSERT_NO_FATAL_FAILURE(StartServer(config));
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  EXPECT_EQ(client_->Health().value_or(HealthStatus::kUnknown), HealthStatus::kServing);
  EXPECT_EQ(client_->Health(kScanServiceName).value_or(HealthStatus::kUnknown),
            HealthStatus::kServing);

  const LinearCase queued = std::get<LinearCase>(RandomCase(rng, OpKind::kLinearScan));
  auto future = client_->LinearScanAsync(queued.r);
  Metrics m = ScrapeUntil([](const Metrics& m) { return m.Get("scanserve_queue_depth") == 1; });
  ASSERT_EQ(m.Get("scanserve_queue_depth"), 1);

  std::thread shutdown([&] { server_->Shutdown(); });
  absl::StatusOr<HealthStatus> health;
  const absl::Time until = absl::Now() + absl::Seconds(2);
  do {
    health = client_->Health();
  } while (health.ok() && *health == HealthStatus::kServing && absl::Now() < until);
  EXPECT_EQ(health.value_or(HealthStatus::kUnknown), HealthStatus::kNotServing);
  EXPECT_EQ(client_->Health(kScanServiceName).value_or(HealthStatus::kUnknown),
            HealthStatus::kNotServing);
  shutdown.join();

  absl::StatusOr<v1::LinearScanResponse> r = future.get();
  ASSERT_TRUE(r.ok()) << r.status();
  Check(queued, *r);
  // Stopped: nothing answers any more.
  CallOptions call;
  call.timeout = absl::Seconds(2);
  EXPECT_FALSE(client_->Health("", call).ok());
}

// gRPC's shutdown returns only once every client connection is closed (or drain_timeout passes),
// so the process cannot exit while a client is still reading its last answers: exiting then would
// reset the connection and lose them.
TEST_F(IntegrationTest, ShutdownWaitsForClientsToCloseTheirConnections) {
  ServerConfig config = TestConfig();
  config.drain_timeout = absl::Seconds(60);
  ASSERT_NO_FATAL_FAILURE(StartServer(config));
  client_.reset();  // only the bare connection stays open
  const int fd = OpenIdleHttp2Connection(server_->port());
  ASSERT_GE(fd, 0) << "could not open an HTTP/2 connection to the server";
  absl::Notification stopped;
  std::thread shutdown([&] {
    server_->Shutdown();
    stopped.Notify();
  });
  EXPECT_FALSE(stopped.WaitForNotificationWithTimeout(absl::Seconds(1)))
      << "shutdown returned while a client connection was still open";
  close(fd);
  EXPECT_TRUE(stopped.WaitForNotificationWithTimeout(absl::Seconds(10)))
      << "shutdown still waiting 10 s after the last connection closed";
  shutdown.join();
}

TEST_F(IntegrationTest, ServerInfoDescribesTheServer) {
  ServerConfig config = TestConfig();
  config.batching.max_batch_requests = 33;
  config.batching.max_queue_delay = absl::Microseconds(1234);
  ASSERT_NO_FATAL_FAILURE(StartServer(config));
  absl::StatusOr<v1::ServerInfoResponse> info = client_->ServerInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->version(), ServerVersion());
  EXPECT_FALSE(info->version().empty());
  EXPECT_EQ(info->backend(), "cpu");
  ASSERT_GE(info->devices_size(), 1);
  EXPECT_FALSE(info->devices(0).name().empty());
  EXPECT_EQ(info->limits().max_elements_per_request(), config.limits.max_elements_per_request);
  EXPECT_EQ(info->limits().max_message_bytes(), config.limits.max_message_bytes);
  EXPECT_EQ(info->limits().max_state_dim(), config.limits.max_state_dim);
  EXPECT_EQ(info->limits().max_queued_bytes(), config.batching.max_queued_bytes);
  EXPECT_EQ(info->limits().max_queued_requests(), config.batching.max_queued_requests);
  EXPECT_EQ(info->batching().max_batch_requests(), 33);
  EXPECT_EQ(info->batching().max_batch_rows(), config.batching.max_batch_rows);
  EXPECT_EQ(info->batching().max_batch_elements(), config.batching.max_batch_elements);
  EXPECT_EQ(info->batching().max_queue_delay_microseconds(), 1234);
  EXPECT_EQ(std::vector<std::string>(info->operations().begin(), info->operations().end()),
            (std::vector<std::string>{"linear_scan", "linear_scan_backward", "selective_scan",
                                      "associative_scan"}));
}

TEST_F(IntegrationTest, EchoReturnsItsPayload) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  v1::EchoRequest request;
  std::string payload(4099, '\0');
  for (char& ch : payload) ch = static_cast<char>(rng.Int(0, 255));
  request.set_payload(payload);
  absl::StatusOr<v1::EchoResponse> r = client_->Echo(request);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->payload(), payload);
}

TEST_F(IntegrationTest, MetricsCountKnownCallsExactly) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  double received = 0, sent = 0;
  auto ok_call = [&](const AnyCase& c) {
    const v1::StreamRequest s = ToStream(c, 0);
    received +=
        static_cast<double>(std::visit([](const auto& k) { return k.r.ByteSizeLong(); }, c));
    absl::StatusOr<std::string> r = CallUnary(s);
    ASSERT_TRUE(r.ok()) << r.status();
    sent += static_cast<double>(r->size());
  };
  for (int i = 0; i < 3; ++i) ok_call(RandomCase(rng, OpKind::kLinearScan));
  for (int i = 0; i < 2; ++i) ok_call(RandomCase(rng, OpKind::kSelectiveScan));
  ok_call(RandomCase(rng, OpKind::kLinearScanBackward));

  const std::vector<MalformedCase> malformed = MalformedCases(rng);
  auto find = [&](const std::string& name) {
    return *std::find_if(malformed.begin(), malformed.end(),
                         [&](const MalformedCase& c) { return c.name == name; });
  };
  for (const char* name : {"linear x missing", "associative past max_elements_per_request"}) {
    const MalformedCase c = find(name);
    // The unary call sends the op's own message, not the StreamRequest around it.
    received += static_cast<double>(c.request.has_linear_scan()
                                        ? c.request.linear_scan().ByteSizeLong()
                                        : c.request.associative_scan().ByteSizeLong());
    EXPECT_EQ(CallUnary(c.request).status().code(), c.code);
  }

  v1::EchoRequest echo;
  echo.set_payload("0123456789");
  absl::StatusOr<v1::EchoResponse> echoed = client_->Echo(echo);
  ASSERT_TRUE(echoed.ok());
  received += static_cast<double>(echo.ByteSizeLong());
  sent += static_cast<double>(echoed->ByteSizeLong());

  // Stream: two valid associative scans and one request with no op.
  Collector collector;
  std::unique_ptr<Stream> stream = client_->OpenStream(collector.Callback());
  std::vector<v1::StreamRequest> stream_requests = {
      ToStream(RandomCase(rng, OpKind::kAssociativeScan), 1),
      ToStream(RandomCase(rng, OpKind::kAssociativeScan), 2),
      find("stream request without an op").request};
  for (const v1::StreamRequest& s : stream_requests) {
    received += static_cast<double>(s.ByteSizeLong());
    ASSERT_TRUE(stream->Send(s).ok());
  }
  ASSERT_TRUE(stream->Finish().ok());
  for (const auto& [id, r] : collector.Take()) sent += static_cast<double>(r.ByteSizeLong());

  const Metrics m = Scrape();
  auto requests = [&](const char* op, const char* code) {
    return m.Get("scanserve_requests_total", {{"op", op}, {"code", code}});
  };
  EXPECT_EQ(requests("linear_scan", "OK"), 3);
  EXPECT_EQ(requests("linear_scan", "INVALID_ARGUMENT"), 1);
  EXPECT_EQ(requests("selective_scan", "OK"), 2);
  EXPECT_EQ(requests("linear_scan_backward", "OK"), 1);
  EXPECT_EQ(requests("associative_scan", "RESOURCE_EXHAUSTED"), 1);
  EXPECT_EQ(requests("associative_scan", "OK"), 2);
  EXPECT_EQ(m.Sum("scanserve_requests_total"), 10);  // nothing else was counted
  EXPECT_EQ(m.Get("scanserve_request_duration_seconds_count", {{"op", "linear_scan"}}), 4);
  EXPECT_EQ(m.Sum("scanserve_request_duration_seconds_count"), 10);
  EXPECT_EQ(m.Get("scanserve_received_bytes_total"), received);
  EXPECT_EQ(m.Get("scanserve_sent_bytes_total"), sent);
  // Eight requests ran, in as many batches as the executor counted.
  EXPECT_EQ(m.Sum("scanserve_batch_requests_sum"), 8);
  EXPECT_EQ(m.Sum("scanserve_batch_requests_count"),
            static_cast<double>(server_->batches_executed()));
  EXPECT_EQ(m.Sum("scanserve_queue_wait_seconds_count"), 8);
  EXPECT_EQ(m.Get("scanserve_queue_depth"), 0);
  EXPECT_EQ(m.Get("scanserve_backend_info", {{"backend", "cpu"}}), 1);
}

TEST_F(IntegrationTest, ResultsAreBitIdenticalAloneAndInsideBatches) {
  ServerConfig config = TestConfig();
  config.batching.max_queue_delay = absl::Milliseconds(50);
  ASSERT_NO_FATAL_FAILURE(StartServer(config));
  Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  constexpr int kConcurrent = 24;
  for (OpKind op : kOps) {
    SCOPED_TRACE(std::string(OpName(op)));
    // Requests of one signature with different shapes and inputs; the target goes alone first.
    std::vector<v1::StreamRequest> requests;
    const AnyCase first = RandomCase(rng, op);
    for (int i = 0; i < kConcurrent; ++i) {
      AnyCase c = first;
      std::visit(
          [&](auto& k) {
            using T = std::decay_t<decltype(k)>;
            int64_t dim = rng.Int(1, 4);
            if constexpr (std::is_same_v<T, SelectiveCase>) dim = k.o.groups * rng.Int(1, 2);
            k.s = SeqShape{rng.Int(1, 2), dim, rng.Int(1, 40)};
            if constexpr (std::is_same_v<T, LinearCase>) k.r = MakeLinearScan(rng, k.o, k.s);
            if constexpr (std::is_same_v<T, BackwardCase>) {
              k.r = MakeLinearScanBackward(rng, k.o, k.s);
            }
            if constexpr (std::is_same_v<T, SelectiveCase>) k.r = MakeSelectiveScan(rng, k.o, k.s);
            if constexpr (std::is_same_v<T, AssociativeCase>) {
              k.r = MakeAssociativeScan(rng, k.o, k.s);
            }
          },
          c);
      requests.push_back(ToStream(c, i));
    }
    const int target = static_cast<int>(rng.Int(0, kConcurrent - 1));
    absl::StatusOr<std::string> alone = CallUnary(requests[target]);
    ASSERT_TRUE(alone.ok()) << alone.status();

    const int64_t batches_before = server_->batches_executed();
    std::vector<std::future<absl::StatusOr<std::string>>> futures;
    for (int i = 0; i < kConcurrent; ++i) {
      futures.push_back(
          std::async(std::launch::async, [this, &requests, i] { return CallUnary(requests[i]); }));
    }
    std::vector<absl::StatusOr<std::string>> batched;
    for (auto& f : futures) batched.push_back(f.get());
    for (const auto& b : batched) ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_TRUE(*batched[target] == *alone) << "request " << target << " differs inside a batch";
    // They did share batches.
    EXPECT_LT(server_->batches_executed() - batches_before, kConcurrent);
  }
}

}  // namespace
}  // namespace scanserve::testing
