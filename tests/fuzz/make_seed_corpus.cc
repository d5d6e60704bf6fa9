// Writes the request fuzzer's seed corpus (seed_corpus.h) into a directory, one file per seed.
//   make_seed_corpus <dir> [seed]
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "seed_corpus.h"
#include "support/test_support.h"

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: %s <dir> [seed]\n", argv[0]);
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  std::filesystem::create_directories(dir);
  // A fixed seed by default: the corpus is the same on every CI run.
  const uint64_t seed = argc == 3 ? std::strtoull(argv[2], nullptr, 10) : 1;
  scanserve::testing::Rng rng(seed);
  size_t bytes = 0;
  const auto corpus = scanserve::fuzz::SeedCorpus(rng);
  for (const auto& s : corpus) {
    std::ofstream out(dir / s.name, std::ios::binary);
    out.write(s.bytes.data(), static_cast<std::streamsize>(s.bytes.size()));
    if (!out) {
      std::fprintf(stderr, "cannot write %s\n", (dir / s.name).c_str());
      return 1;
    }
    bytes += s.bytes.size();
  }
  std::printf("wrote %zu seeds (%zu bytes) to %s\n", corpus.size(), bytes, dir.c_str());
  return 0;
}
