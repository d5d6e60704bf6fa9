# Kernel-level benchmark of the CUDA selective scan against its memory and exp2 floors
# (issue 4's table). Built only with the CUDA backend; run it on the GPU machine.
if(SCANSERVE_HAVE_CUDA)
  add_executable(cuda_selective_scan_bench ${CMAKE_CURRENT_LIST_DIR}/cuda_selective_scan_bench.cu)
  target_link_libraries(cuda_selective_scan_bench PRIVATE scanserve_cuda)
  target_compile_options(cuda_selective_scan_bench PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr -lineinfo>)
endif()
