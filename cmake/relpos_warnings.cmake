# Strict warnings for relpos's own targets (tests, examples, benchmarks), never for the
# INTERFACE target, so consumers keep their own flags. Eigen comes in as a SYSTEM include
# through its imported target, so its own warnings under GCC 12 do not fire here.
# Sanitizer builds keep the warnings but not -Werror: GCC 12's flow warnings
# (-Wmaybe-uninitialized, -Warray-bounds) misfire on instrumented code (seen on
# std::variant copies at -O1 -fsanitize=address), and the release build already enforces them.
function(relpos_strict target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic)
  if(NOT CMAKE_CXX_FLAGS MATCHES "-fsanitize=")
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  if(RELPOS_NATIVE)
    target_compile_options(${target} PRIVATE -march=native)
  endif()
endfunction()
