# Strict warnings for relpos's own targets (tests, examples, benchmarks), never for the
# INTERFACE target, so consumers keep their own flags. Eigen comes in as a SYSTEM include
# through its imported target, so its own warnings under GCC 12 do not fire here.
function(relpos_strict target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Werror)
  if(RELPOS_NATIVE)
    target_compile_options(${target} PRIVATE -march=native)
  endif()
endfunction()
