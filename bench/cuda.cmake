# Kernel-level benchmark of the CUDA row scans (linear, backward, associative) against the
# measured copy-bandwidth floor (issue 7's table). Built only with the CUDA backend; run it on
# the GPU machine (scripts/gpu_run.sh).
if(SCANSERVE_HAVE_CUDA)
  add_executable(cuda_scan_bench ${CMAKE_CURRENT_LIST_DIR}/cuda_scan_bench.cu)
  target_link_libraries(cuda_scan_bench PRIVATE scanserve_cuda)
  target_compile_options(cuda_scan_bench PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr -lineinfo -Xcompiler=-Wall,-Wextra>)
endif()
