// The seed corpus of the request fuzzer: valid requests of every op and option set, as unary
// messages and inside StreamRequest, under both limit sets, plus the service tests' malformed
// requests (tests/server/requests.h). Seeds are small so the fuzzer mutates quickly.
//
// Ownership: returned by value. Thread-safety: pure given the Rng.
#ifndef SCANSERVE_TESTS_FUZZ_SEED_CORPUS_H_
#define SCANSERVE_TESTS_FUZZ_SEED_CORPUS_H_

#include <string>
#include <vector>

#include "support/test_support.h"

namespace scanserve::fuzz {

struct SeedInput {
  std::string name;   // a file name: "<kind>-<op>-<index>", unique within the corpus
  std::string bytes;  // in request_fuzz.h's input format
  // A valid request under the limits byte 0 selects: FuzzRequest must return OK for it.
  bool valid = false;
};

std::vector<SeedInput> SeedCorpus(testing::Rng& rng);

}  // namespace scanserve::fuzz

#endif  // SCANSERVE_TESTS_FUZZ_SEED_CORPUS_H_
