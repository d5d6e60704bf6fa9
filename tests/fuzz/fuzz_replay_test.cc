// Replays the request fuzzer's inputs through its harness (request_fuzz.h) in an ordinary test:
// every file in tests/fuzz/regressions (inputs that once broke a property, and hand-written
// hostile ones), and the generated seed corpus, whose valid requests must be accepted. A property
// the harness checks aborts the test binary, which ctest reports as a failure.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "request_fuzz.h"
#include "scanserve/v1/scanserve.pb.h"
#include "seed_corpus.h"
#include "support/test_support.h"

namespace scanserve::fuzz {
namespace {

absl::Status Replay(const std::string& bytes) {
  return FuzzRequest(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

bool Refused(const absl::Status& s) {
  return s.code() == absl::StatusCode::kInvalidArgument ||
         s.code() == absl::StatusCode::kResourceExhausted;
}

TEST(FuzzReplayTest, RegressionInputsReplayWithoutBreakingAProperty) {
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(SCANSERVE_FUZZ_REGRESSIONS)) {
    if (entry.is_regular_file() && entry.path().extension() != ".md") files.push_back(entry.path());
  }
  ASSERT_FALSE(files.empty()) << "no inputs in " << SCANSERVE_FUZZ_REGRESSIONS;
  for (const auto& path : files) {
    SCOPED_TRACE(path.string());
    std::ifstream in(path, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const absl::Status status = Replay(bytes);
    EXPECT_TRUE(status.ok() || Refused(status)) << status;
  }
}

TEST(FuzzReplayTest, SeedCorpusValidRequestsAreAcceptedAndRunOthersAreRefusedCleanly) {
  testing::Rng rng;
  SCANSERVE_TRACE_SEED(rng);
  const std::vector<SeedInput> corpus = SeedCorpus(rng);
  int valid = 0;
  for (const SeedInput& s : corpus) {
    SCOPED_TRACE(s.name);
    const absl::Status status = Replay(s.bytes);
    if (s.valid) {
      ++valid;
      EXPECT_TRUE(status.ok()) << status;
    } else {
      EXPECT_TRUE(status.ok() || Refused(status)) << status;
    }
  }
  EXPECT_GE(valid, 40);
  EXPECT_GE(corpus.size() - valid, 20u);
}

// Shapes a fuzzer reaches slowly: products that overflow int64, many dimensions, a selector byte
// with every bit set. Each must be refused with its field named.
TEST(FuzzReplayTest, HostileShapesAreRefusedNamingTheField) {
  struct Case {
    const char* name;
    std::vector<int64_t> shape;
    const char* field;
  };
  const Case cases[] = {
      {"product overflows int64", {int64_t{1} << 40, int64_t{1} << 40, 2}, "x.shape"},
      {"byte size overflows int64", {int64_t{1} << 31, int64_t{1} << 31, 1}, "x.shape"},
      {"negative dimension", {1, -5, 4}, "x.shape[1]"},
      {"zero dimension", {0, 1, 1}, "x.shape[0]"},
      {"int64 minimum", {INT64_MIN, 1, 1}, "x.shape[0]"},
      {"many dimensions", std::vector<int64_t>(4096, 1), "x.shape"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    v1::AssociativeScanRequest r;
    r.set_operator_(v1::ADD);
    r.mutable_x()->set_dtype(v1::FLOAT32);
    r.mutable_x()->set_layout(v1::BDL);
    for (int64_t d : c.shape) r.mutable_x()->add_shape(d);
    r.mutable_x()->set_data(std::string(16, '\0'));
    for (bool tight : {false, true}) {
      const absl::Status status =
          Replay(EncodeInput(MessageKind::kAssociativeScan, tight, r.SerializeAsString()));
      EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
      EXPECT_EQ(std::string(status.message()).rfind(std::string(c.field) + ":", 0), 0u) << status;
    }
    // Selector 0xff wraps around to linear_scan_backward under the tight limits: the same bytes
    // read as another message must be refused as well.
    const absl::Status other = Replay(std::string(1, '\xff') + r.SerializeAsString());
    EXPECT_TRUE(Refused(other)) << other;
  }
}

}  // namespace
}  // namespace scanserve::fuzz
