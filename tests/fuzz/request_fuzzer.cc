// libFuzzer entry point of the request harness (request_fuzz.h). Built only with SCANSERVE_FUZZ.
#include <cstddef>
#include <cstdint>

#include "request_fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The status is the server's answer; only a broken property (an abort inside) is a finding.
  (void)scanserve::fuzz::FuzzRequest(data, size);
  return 0;
}
