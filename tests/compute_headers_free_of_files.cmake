cmake_minimum_required(VERSION 3.20)
# The compute headers (encodings, attention, block, encoder, feed-forward, LayerNorm,
# distance tables, caches) need Eigen and nothing else: each is preprocessed alone with only
# relpos's and Eigen's include directories, and none may reach nlohmann/json, mmap, or a
# file-side relpos header (io/, the model loader). io/config_limits.hpp is plain constants.
# Run: cmake -DCXX=... -DINCLUDE_DIR=... -DEIGEN_DIR=... -P compute_headers_free_of_files.cmake
file(GLOB_RECURSE headers RELATIVE ${INCLUDE_DIR} ${INCLUDE_DIR}/relpos/*.hpp)
set(file_side
  relpos/relpos.hpp relpos/model.hpp relpos/model_io.hpp relpos/detail/json_fields.hpp
  relpos/detail/mapped_file.hpp relpos/detail/safetensors_header.hpp relpos/training.hpp)
set(failures "")
set(checked 0)
foreach(header IN LISTS headers)
  if(header MATCHES "^relpos/io/" OR header IN_LIST file_side)
    continue()
  endif()
  execute_process(
    COMMAND ${CXX} -std=c++20 -M -I${INCLUDE_DIR} -isystem ${EIGEN_DIR} -x c++ ${INCLUDE_DIR}/${header}
    OUTPUT_VARIABLE deps ERROR_VARIABLE err RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    string(APPEND failures "${header}: does not preprocess alone:\n${err}\n")
    continue()
  endif()
  math(EXPR checked "${checked} + 1")
  string(REGEX MATCHALL "[^ \\\\\n]+" paths "${deps}")
  foreach(path IN LISTS paths)
    if(path MATCHES "nlohmann/|sys/mman\\.h|relpos/(io/|model|detail/(json_fields|mapped_file|safetensors_header))"
       AND NOT path MATCHES "relpos/io/config_limits\\.hpp$")
      string(APPEND failures "${header}: includes ${path}\n")
      break()  # the first is enough to name the path
    endif()
  endforeach()
endforeach()
# The reader does not drag the writer in: reading a model never needs to write one.
execute_process(
  COMMAND ${CXX} -std=c++20 -M -I${INCLUDE_DIR} -isystem ${EIGEN_DIR} -x c++ ${INCLUDE_DIR}/relpos/io/safetensors.hpp
  OUTPUT_VARIABLE deps RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR deps MATCHES "safetensors_writer\\.hpp")
  string(APPEND failures "relpos/io/safetensors.hpp: includes the writer (or does not preprocess)\n")
endif()
if(checked LESS 20)
  string(APPEND failures "only ${checked} compute headers found under ${INCLUDE_DIR}\n")
endif()
if(failures)
  message(FATAL_ERROR "compute headers that reach file I/O:\n${failures}")
endif()
message(STATUS "${checked} compute headers need only Eigen and relpos")
