#include "seed_corpus.h"

#include <cstdint>
#include <string>
#include <vector>

#include "request_fuzz.h"
#include "requests.h"

namespace scanserve::fuzz {
namespace {

// Past this a seed only slows the fuzzer down (libFuzzer's -max_len follows the largest seed).
constexpr size_t kMaxSeedBytes = 16 << 10;

}  // namespace

std::vector<SeedInput> SeedCorpus(testing::Rng& rng) {
  std::vector<SeedInput> out;
  auto add = [&](const std::string& name, MessageKind kind, bool tight,
                 const google::protobuf::Message& message, bool valid) {
    std::string bytes = EncodeInput(kind, tight, message.SerializeAsString());
    if (bytes.size() > kMaxSeedBytes) return;
    out.push_back({name + "-" + std::to_string(out.size()), std::move(bytes), valid});
  };
  constexpr int kPerOp = 12;
  for (int i = 0; i < kPerOp; ++i) {
    // Default limits: every request here is valid. Shapes stay small so seeds stay small.
    const SeqShape s = testing::RandomShape(rng, 4, 16);
    // Even i: the unary message; odd i: the same op inside a StreamRequest.
    const bool stream = i % 2 == 1;
    v1::StreamRequest sr;
    sr.set_request_id(static_cast<uint64_t>(i));

    *sr.mutable_linear_scan() =
        testing::MakeLinearScan(rng, testing::RandomLinearScanOptions(rng), s);
    if (stream) {
      add("valid-stream-linear_scan", MessageKind::kStream, false, sr, true);
    } else {
      add("valid-linear_scan", MessageKind::kLinearScan, false, sr.linear_scan(), true);
    }
    *sr.mutable_linear_scan_backward() =
        testing::MakeLinearScanBackward(rng, testing::RandomLinearScanBackwardOptions(rng), s);
    if (stream) {
      add("valid-stream-linear_scan_backward", MessageKind::kStream, false, sr, true);
    } else {
      add("valid-linear_scan_backward", MessageKind::kLinearScanBackward, false,
          sr.linear_scan_backward(), true);
    }
    *sr.mutable_selective_scan() =
        testing::MakeSelectiveScan(rng, testing::RandomSelectiveScanOptions(rng, s), s);
    if (stream) {
      add("valid-stream-selective_scan", MessageKind::kStream, false, sr, true);
    } else {
      add("valid-selective_scan", MessageKind::kSelectiveScan, false, sr.selective_scan(), true);
    }
    *sr.mutable_associative_scan() =
        testing::MakeAssociativeScan(rng, testing::RandomAssociativeScanOptions(rng), s);
    if (stream) {
      add("valid-stream-associative_scan", MessageKind::kStream, false, sr, true);
    } else {
      add("valid-associative_scan", MessageKind::kAssociativeScan, false, sr.associative_scan(),
          true);
    }
    // The same Stream request under the tight limits: valid or refused by a limit, so the fuzzer
    // starts next to the limit checks.
    add("tight-stream", MessageKind::kStream, true, sr, false);
  }
  for (const testing::MalformedCase& c : testing::MalformedCases(rng)) {
    std::string name = "malformed";
    for (char ch : c.name) name += (ch == ' ' || ch == '/' || ch == '\'') ? '_' : ch;
    add(name, MessageKind::kStream, false, c.request, false);
  }
  return out;
}

}  // namespace scanserve::fuzz
