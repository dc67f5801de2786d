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
