# CPU backend throughput per op and shape, next to this machine's memcpy bandwidth (the floor a
# memory-bound scan is measured against).
if(TARGET scanserve_cpu)
  add_executable(cpu_backend_bench ${CMAKE_CURRENT_LIST_DIR}/cpu_backend_bench.cc)
  target_link_libraries(cpu_backend_bench PRIVATE scanserve_cpu benchmark::benchmark
                                                  Threads::Threads)
endif()
