# The C++ client library (include/scanserve/client.h) and the scanctl command-line tool.

add_library(scanserve_client
  ${CMAKE_CURRENT_LIST_DIR}/client.cc
  ${CMAKE_CURRENT_LIST_DIR}/client_tensor.cc)
target_include_directories(scanserve_client PUBLIC ${CMAKE_CURRENT_LIST_DIR}/include)
target_link_libraries(scanserve_client PUBLIC scanserve_proto scanserve_wire scanserve_ops gRPC::grpc++
  absl::any_invocable absl::span absl::status absl::statusor absl::strings absl::synchronization
  absl::time)

# scanctl's parts as a library, so tests reach them: request building, local verification, the
# load generator.
add_library(scanctl_lib
  ${CMAKE_CURRENT_LIST_DIR}/scanctl_requests.cc
  ${CMAKE_CURRENT_LIST_DIR}/scanctl_verify.cc
  ${CMAKE_CURRENT_LIST_DIR}/scanctl_bench.cc)
target_include_directories(scanctl_lib PUBLIC ${PROJECT_SOURCE_DIR})
target_link_libraries(scanctl_lib PUBLIC scanserve_client scanserve_ops)

# --verify recomputes on the CPU backend, so scanctl needs it.
if(TARGET scanserve_cpu)
  add_executable(scanctl ${CMAKE_CURRENT_LIST_DIR}/scanctl.cc)
  target_link_libraries(scanctl PRIVATE scanctl_lib scanserve_cpu absl::flags absl::flags_parse
    absl::flags_usage)
else()
  message(STATUS "scanctl: not built, the CPU backend (scanserve_cpu) is missing")
endif()
