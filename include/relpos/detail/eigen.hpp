// SPDX-License-Identifier: MIT
// The one place relpos includes Eigen. GCC 12's -Wmaybe-uninitialized fires inside its own
// AVX-512 intrinsics header (avx512fintrin.h, `__Y`) when it inlines Eigen 3.4's 16-wide GEMM
// packing at -O2/-O3 with -mavx512f (-march=native on such a CPU, x86-64-v4): a false positive
// whose verdict follows the host CPU. Diagnostic pragmas are matched by source location, so
// silencing that one warning while the intrinsics headers are first read keeps it out of a
// user's -Werror build on any CPU, and leaves it on for every line of relpos and of the user.
// At -O2 GCC 12 reports the same `__Y` (the intrinsics' deliberate `__m512 __Y = __Y;`) as
// -Wuninitialized instead (Eigen's ptranspose, 16 floats): silenced the same way.
// GCC 12's -Wuse-after-free is the same kind: where it inlines a Matrix's resize and destructor
// into one loop (AbsoluteSinusoidal::add_to_input under Encoder::forward_ids' embedding
// stage, at -O1), it reports Eigen's own aligned_free (Memory.h) as a use of the pointer it
// freed; it is silenced the same way, for Eigen's lines only.
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#if __GNUC__ >= 12
#pragma GCC diagnostic ignored "-Wuse-after-free"
#endif
#endif

#include <Eigen/Core>
#include <unsupported/Eigen/CXX11/Tensor>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
