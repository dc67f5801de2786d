# Strict warnings for relpos's own targets (tests, examples, benchmarks), never for the
# INTERFACE target, so consumers keep their own flags. Eigen comes in as a SYSTEM include
# through its imported target, and include/relpos/detail/eigen.hpp silences the one GCC 12
# false positive that its AVX-512 intrinsics raise when inlined into our code.
#
# -Werror is opt-in (RELPOS_WERROR, which CI turns on): the project's code is kept
# warning-free by CI on g++ and clang++ and on two instruction sets (x86-64-v2, x86-64-v4),
# but a newcomer's `./dev test` with another compiler version or CPU must not fail on a new
# diagnostic that says nothing about their build being wrong.
# Sanitizer builds keep the warnings but never -Werror: GCC 12's flow warnings
# (-Wmaybe-uninitialized, -Warray-bounds) misfire on instrumented code (seen on
# std::variant copies at -O1 -fsanitize=address).
option(RELPOS_WERROR "Treat warnings in relpos's own targets as errors (CI turns it on)" OFF)
function(relpos_strict target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic)
  if(RELPOS_WERROR AND NOT CMAKE_CXX_FLAGS MATCHES "-fsanitize=")
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  if(RELPOS_NATIVE)
    target_compile_options(${target} PRIVATE -march=native)
  endif()
endfunction()

# GCC 12 does not carry `#pragma GCC diagnostic` state through a precompiled header, so the
# silencing in include/relpos/detail/eigen.hpp is lost in a program that reads Eigen from a PCH,
# and the AVX-512 false positive it covers comes back (seen: compiled_model.cpp under
# -march=x86-64-v4 -Werror). Targets built for AVX-512 by GCC therefore compile without the
# PCH; everywhere else the PCH stays (its saving is measured in README "Compile time").
include(CheckCXXSourceCompiles)
set(CMAKE_REQUIRED_FLAGS ${CMAKE_CXX_FLAGS})
if(RELPOS_NATIVE)
  string(APPEND CMAKE_REQUIRED_FLAGS " -march=native")
endif()
check_cxx_source_compiles("
#ifndef __AVX512F__
#error no AVX-512
#endif
int main() { return 0; }" RELPOS_TARGET_HAS_AVX512)
unset(CMAKE_REQUIRED_FLAGS)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND RELPOS_TARGET_HAS_AVX512)
  set(RELPOS_USE_PCH OFF)
else()
  set(RELPOS_USE_PCH ON)
endif()
