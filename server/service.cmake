# The gRPC service: request validation, handlers, server assembly and the server binary.

# Validation and configuration: protobuf messages in, Work out; no gRPC runtime, no threads.
add_library(scanserve_validation
  ${CMAKE_CURRENT_SOURCE_DIR}/config.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/validation.cc)
target_include_directories(scanserve_validation PUBLIC ${PROJECT_SOURCE_DIR})
target_link_libraries(scanserve_validation PUBLIC scanserve_ops scanserve_proto scanserve_wire
  absl::status absl::statusor absl::time)

# Handlers and server assembly.
add_library(scanserve_service
  ${CMAKE_CURRENT_SOURCE_DIR}/auth.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/service.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/server.cc)
target_link_libraries(scanserve_service PUBLIC scanserve_validation scanserve_runtime
  scanserve_backends scanserve_proto gRPC::grpc gRPC::grpc++ gRPC::grpc++_reflection absl::strings
  absl::synchronization)
target_compile_definitions(scanserve_service PRIVATE SCANSERVE_VERSION="${PROJECT_VERSION}")

add_executable(scanserve_server ${CMAKE_CURRENT_SOURCE_DIR}/main.cc)
target_link_libraries(scanserve_server PRIVATE scanserve_service absl::flags absl::flags_parse)
