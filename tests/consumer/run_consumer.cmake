# Runs the consumer project in MODE (find_package: install relpos into a prefix first).
# RELPOS_BLAS: the relpos build's option, empty when off (add_subdirectory passes it on).
file(REMOVE_RECURSE ${WORK_DIR})
set(args)
if(MODE STREQUAL "find_package")
  execute_process(COMMAND ${CMAKE_COMMAND} --install ${RELPOS_BINARY_DIR} --prefix ${WORK_DIR}/prefix
                  RESULT_VARIABLE rc)
  if(rc)
    message(FATAL_ERROR "cmake --install failed: ${rc}")
  endif()
  list(APPEND args -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix)
else()
  list(APPEND args -DRELPOS_SOURCE_DIR=${RELPOS_SOURCE_DIR} -DRELPOS_BLAS=${RELPOS_BLAS})
endif()
if(CXX_COMPILER)  # the compiler of the build that runs the test (g++ or clang++)
  list(APPEND args -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
endif()
# RELPOS_BLAS: the option relpos was built with; the consumer checks it got the CBLAS route
list(APPEND args -DRELPOS_CONSUMER_EXPECT_BLAS=${RELPOS_BLAS})
execute_process(COMMAND ${CMAKE_COMMAND} -S ${RELPOS_SOURCE_DIR}/tests/consumer -B ${WORK_DIR}/build
                        -G ${GENERATOR} -DCMAKE_BUILD_TYPE=Release -DRELPOS_CONSUMER_MODE=${MODE} ${args}
                RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "configuring the consumer (${MODE}) failed: ${rc}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK_DIR}/build RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "building the consumer (${MODE}) failed: ${rc}")
endif()
execute_process(COMMAND ${WORK_DIR}/build/consumer RESULT_VARIABLE rc OUTPUT_VARIABLE out)
message(STATUS "consumer says: ${out}")
if(rc)
  message(FATAL_ERROR "the consumer (${MODE}) exited with ${rc}")
endif()
