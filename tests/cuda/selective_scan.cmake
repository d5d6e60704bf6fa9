# The CUDA selective scan's tests (label cuda: they skip with a reason when no GPU is usable).
# Included from tests/cuda/CMakeLists.txt.
scanserve_test(cuda_selective_scan_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/selective_scan_test.cc
  LIBS scanserve_cuda scanserve_test_support
  LABELS cuda
  TIMEOUT 600)
