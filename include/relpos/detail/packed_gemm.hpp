// SPDX-License-Identifier: MIT
// relpos's own single-precision GEMM for x86 with AVX-512 or AVX2 + FMA, used by detail/gemm.hpp
// in place of Eigen's when the translation unit is compiled for one of them. Eigen 3.4's kernel
// reached 114-150 GFLOP/s on an AVX-512 Zen 5 core where OpenBLAS reached 167-187 (issue 18);
// this one reaches 175-190 at the layer's shapes, and a layer is bound by its products.
//
// The method is Goto & van de Geijn (2008), "Anatomy of high-performance matrix
// multiplication", as BLIS arranges it: C (m × n) += A (m × k) · B (k × n) is cut into
// blocks of kc terms; B's block is packed into slivers of NR columns (kc × NR, row after row),
// A's into slivers of MR rows (kc × MR, column after column), both zero-padded at the edges,
// and a micro-kernel keeps an MR × NR tile of C in registers while it walks the kc terms: one
// broadcast of A and two vector loads of B per MR·NR/W fused multiply-adds.
// Packing makes every operand layout one kernel: A(i, p) and B(p, j) are read through a row
// and a column stride, so a·bᵀ, a·b and aᵀ·b differ only in the strides.
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

#include <relpos/core.hpp>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#define RELPOS_DETAIL_PACKED_GEMM 1
#include <immintrin.h>
#else
#define RELPOS_DETAIL_PACKED_GEMM 0
#endif

#if RELPOS_DETAIL_PACKED_GEMM

namespace relpos::detail {

/// The vector unit the kernel is compiled for: W floats per register and MR, the rows of the
/// register tile (2·MR accumulators of W floats, plus two of B and the broadcast, must fit
/// the register file: 32 registers with AVX-512, 16 with AVX2).
struct PackedGemmIsa {
#if defined(__AVX512F__)
  using V = __m512;
  static constexpr Index W = 16, MR = 12;
  static V load(const float* p) {
    return _mm512_loadu_ps(p);
  }
  static void store(float* p, V v) {
    _mm512_storeu_ps(p, v);
  }
  static V broadcast(float x) {
    return _mm512_set1_ps(x);
  }
  static V fma(V a, V b, V c) {
    return _mm512_fmadd_ps(a, b, c);
  }
  static V add(V a, V b) {
    return _mm512_add_ps(a, b);
  }
  static V zero() {
    return _mm512_setzero_ps();
  }
#else
  using V = __m256;
  static constexpr Index W = 8, MR = 6;
  static V load(const float* p) {
    return _mm256_loadu_ps(p);
  }
  static void store(float* p, V v) {
    _mm256_storeu_ps(p, v);
  }
  static V broadcast(float x) {
    return _mm256_set1_ps(x);
  }
  static V fma(V a, V b, V c) {
    return _mm256_fmadd_ps(a, b, c);
  }
  static V add(V a, V b) {
    return _mm256_add_ps(a, b);
  }
  static V zero() {
    return _mm256_setzero_ps();
  }
#endif
  static constexpr Index NR = 2 * W;  // columns of the register tile: two vectors
  // Cache blocking: A's packed block (MC × KC, 216 KiB) stays in L2 and each sliver of B
  // (KC × NR, 48 KiB with AVX-512) in L1 while the kernel walks A's slivers; B's packed block
  // (KC × NC, 3 MiB) is reused from L3 by every block of A.
  static constexpr Index KC = 384, MC = 12 * MR, NC = 2048;
};

/// An operand read through strides: element (r, c) at data[r·row_stride + c·col_stride].
struct StridedOperand {
  const float* data;
  Index row_stride, col_stride;
  const float* at(Index r, Index c) const { return data + r * row_stride + c * col_stride; }
};

// The MR × NR tile of C at c (row stride ldc) = (or +=, when add) the packed A sliver
// (kc × MR) times the packed B sliver (kc × NR). The loops over the tile are unrolled, so the
// 2·MR accumulators live in registers.
inline void packed_gemm_tile(Index kc, const float* __restrict a, const float* __restrict b,
                             float* c, Index ldc, bool add) {
  using I = PackedGemmIsa;
  constexpr Index MR = I::MR, W = I::W;
  typename I::V c0[MR], c1[MR];
#pragma GCC unroll 16
  for (Index i = 0; i < MR; ++i) {
    c0[i] = c1[i] = I::zero();
    // C's tile is read and written once, after the terms: fetching its lines now overlaps the
    // misses with the multiply-adds (backward's products add into tall strided C blocks)
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + I::NR - 1), _MM_HINT_T0);
  }
  for (Index p = 0; p < kc; ++p, a += MR, b += I::NR) {
    const typename I::V b0 = I::load(b), b1 = I::load(b + W);
#pragma GCC unroll 16
    for (Index i = 0; i < MR; ++i) {
      const typename I::V ai = I::broadcast(a[i]);
      c0[i] = I::fma(ai, b0, c0[i]);
      c1[i] = I::fma(ai, b1, c1[i]);
    }
  }
#pragma GCC unroll 16
  for (Index i = 0; i < MR; ++i) {
    float* row = c + i * ldc;
    I::store(row, add ? I::add(I::load(row), c0[i]) : c0[i]);
    I::store(row + W, add ? I::add(I::load(row + W), c1[i]) : c1[i]);
  }
}

// out[p·ld + i] = src[i·stride + p] for i < rows, p < kc: the transposing copy that packing a
// row-major A, or the bᵀ of a·bᵀ, makes. Scalar, it cost a third of the products' time at
// len 8192 (a load and a strided store per float); in blocks of 4 rows × 8 terms it takes one
// load per 8 floats and one store per 4. rows is a multiple of 2 and at least 4: MR = 6
// covers rows [0, 4) and [2, 6), the shared rows written twice with the same values.
inline void pack_transposed(const float* src, Index stride, Index rows, Index kc, float* out,
                            Index ld) {
  Index p = 0;
  for (; p + 8 <= kc; p += 8) {
    for (Index i = 0; i < rows; i += 4) {
      if (i + 4 > rows) i = rows - 4;
      const float* s = src + i * stride + p;
      const __m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + stride),
                   r2 = _mm256_loadu_ps(s + 2 * stride), r3 = _mm256_loadu_ps(s + 3 * stride);
      // rows (r0 r1) and (r2 r3) interleaved, then whole columns: column t and t + 4 share
      // a register, one in each 128-bit half
      const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1),
                   t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
      const __m256 c04 = _mm256_shuffle_ps(t0, t2, 0x44), c15 = _mm256_shuffle_ps(t0, t2, 0xEE),
                   c26 = _mm256_shuffle_ps(t1, t3, 0x44), c37 = _mm256_shuffle_ps(t1, t3, 0xEE);
      float* d = out + p * ld + i;
      _mm_storeu_ps(d, _mm256_castps256_ps128(c04));
      _mm_storeu_ps(d + ld, _mm256_castps256_ps128(c15));
      _mm_storeu_ps(d + 2 * ld, _mm256_castps256_ps128(c26));
      _mm_storeu_ps(d + 3 * ld, _mm256_castps256_ps128(c37));
      _mm_storeu_ps(d + 4 * ld, _mm256_extractf128_ps(c04, 1));
      _mm_storeu_ps(d + 5 * ld, _mm256_extractf128_ps(c15, 1));
      _mm_storeu_ps(d + 6 * ld, _mm256_extractf128_ps(c26, 1));
      _mm_storeu_ps(d + 7 * ld, _mm256_extractf128_ps(c37, 1));
    }
  }
  for (; p < kc; ++p)
    for (Index i = 0; i < rows; ++i) out[p * ld + i] = src[i * stride + p];
}

// Rows [i0, i0 + rows) × terms [p0, p0 + kc) of A into slivers of MR rows, each kc × MR
// (term after term), the rows past `rows` zero.
inline void pack_a(const StridedOperand& a, Index i0, Index rows, Index p0, Index kc, float* out) {
  constexpr Index MR = PackedGemmIsa::MR;
  for (Index s = 0; s < rows; s += MR, out += MR * kc) {
    const Index h = std::min(MR, rows - s);
    if (a.col_stride == 1 && h == MR) {  // a row-major A, a whole sliver: by 4 × 8 blocks
      pack_transposed(a.at(i0 + s, p0), a.row_stride, MR, kc, out, MR);
    } else if (a.col_stride == 1) {  // a row-major A: each row's terms are contiguous
      for (Index i = 0; i < h; ++i) {
        const float* src = a.at(i0 + s + i, p0);
        for (Index p = 0; p < kc; ++p) out[p * MR + i] = src[p];
      }
    } else {  // a transposed A (aᵀ·b): each term's rows are contiguous when row_stride is 1
      for (Index p = 0; p < kc; ++p) {
        const float* src = a.at(i0 + s, p0 + p);
        for (Index i = 0; i < h; ++i) out[p * MR + i] = src[i * a.row_stride];
      }
    }
    for (Index i = h; i < MR; ++i)
      for (Index p = 0; p < kc; ++p) out[p * MR + i] = 0;
  }
}

// Terms [p0, p0 + kc) × columns [j0, j0 + cols) of B into slivers of NR columns, each kc × NR
// (term after term), the columns past `cols` zero.
inline void pack_b(const StridedOperand& b, Index p0, Index kc, Index j0, Index cols, float* out) {
  constexpr Index NR = PackedGemmIsa::NR;
  for (Index s = 0; s < cols; s += NR, out += NR * kc) {
    const Index w = std::min(NR, cols - s);
    if (b.col_stride == 1) {  // a row-major B (a·b): each term's columns are contiguous
      for (Index p = 0; p < kc; ++p) {
        const float* src = b.at(p0 + p, j0 + s);
        std::copy_n(src, w, out + p * NR);
        std::fill(out + p * NR + w, out + (p + 1) * NR, 0.0f);
      }
    } else if (b.row_stride == 1 && w == NR) {  // B = bᵀ of a row-major b (a·bᵀ), whole
      pack_transposed(b.at(p0, j0 + s), b.col_stride, NR, kc, out, NR);
    } else {  // B = bᵀ of a row-major b (a·bᵀ): each column's terms are contiguous
      for (Index j = 0; j < w; ++j) {
        const float* src = b.at(p0, j0 + s + j);
        for (Index p = 0; p < kc; ++p) out[p * NR + j] = src[p * b.row_stride];
      }
      for (Index j = w; j < NR; ++j)
        for (Index p = 0; p < kc; ++p) out[p * NR + j] = 0;
    }
  }
}

/// The packed blocks of the calling thread for products too large for the stack, made at their
/// full size (3.2 MiB with AVX-512) by its first such product and kept: a thread allocates once,
/// whatever shapes it meets later.
struct PackedGemmBuffers {
  std::vector<float> a, b;
};
inline PackedGemmBuffers& packed_gemm_buffers() {
  using I = PackedGemmIsa;
  thread_local PackedGemmBuffers buffers{
      std::vector<float>(static_cast<std::size_t>(I::KC * I::MC)),
      std::vector<float>(static_cast<std::size_t>(I::KC * I::NC))};
  return buffers;
}

// packed_gemm over given packing buffers and block sizes: a_block holds mc_block × KC (or k),
// b_block KC (or k) × nc_block; mc_block and nc_block are whole slivers.
inline void packed_gemm_blocks(Index m, Index n, Index k, const StridedOperand& a,
                               const StridedOperand& b, float* c, Index ldc, bool accumulate,
                               float* a_block, Index mc_block, float* b_block, Index nc_block) {
  using I = PackedGemmIsa;
  constexpr Index MR = I::MR, NR = I::NR;
  alignas(64) float edge[MR * NR];  // a tile that overhangs C's last rows or columns
  for (Index jc = 0; jc < n; jc += nc_block) {
    const Index nc = std::min(nc_block, n - jc);
    for (Index pc = 0; pc < k; pc += I::KC) {
      const Index kc = std::min(I::KC, k - pc);
      const bool add = accumulate || pc > 0;
      pack_b(b, pc, kc, jc, nc, b_block);
      for (Index ic = 0; ic < m; ic += mc_block) {
        const Index mc = std::min(mc_block, m - ic);
        pack_a(a, ic, mc, pc, kc, a_block);
        for (Index j0 = 0; j0 < nc; j0 += NR) {
          const Index w = std::min(NR, nc - j0);
          const float* b_sliver = b_block + j0 * kc;
          for (Index i0 = 0; i0 < mc; i0 += MR) {
            const Index h = std::min(MR, mc - i0);
            const float* a_sliver = a_block + i0 * kc;
            float* tile = c + (ic + i0) * ldc + jc + j0;
            if (h == MR && w == NR) {
              packed_gemm_tile(kc, a_sliver, b_sliver, tile, ldc, add);
              continue;
            }
            packed_gemm_tile(kc, a_sliver, b_sliver, edge, NR, false);
            for (Index i = 0; i < h; ++i) {
              for (Index j = 0; j < w; ++j) {
                tile[i * ldc + j] = add ? tile[i * ldc + j] + edge[i * NR + j] : edge[i * NR + j];
              }
            }
          }
        }
      }
    }
  }
}

/// C (m × n, row-major, row stride ldc) = A·B, or += A·B when accumulate; A (m × k) and
/// B (k × n) through their strides. The sum over k runs in blocks of KC terms, the same for
/// every shape and block size, so an element's bits depend only on its operands' values.
///
/// Where the packed blocks live: a product whose blocks fit in 128 KiB (Eigen's own limit for
/// its packing) packs on the stack, with B's block as wide as it can be beside one sliver of A
/// and A's block filling the rest; so do the attention tiles' products, which then pack A at
/// most four times over. Only larger products (the projections, the feed-forward) use the
/// thread's kept heap blocks. A thread pool's worker that meets its first tile product in a
/// warm forward therefore allocates nothing.
inline void packed_gemm(Index m, Index n, Index k, const StridedOperand& a, const StridedOperand& b,
                        float* c, Index ldc, bool accumulate) {
  using I = PackedGemmIsa;
  static_assert(I::MC % I::MR == 0 && I::NC % I::NR == 0, "blocks of whole slivers");
  static_assert(I::MR % 2 == 0 && I::MR >= 4, "pack_transposed takes whole slivers");
  const auto round_up = [](Index v, Index to) { return (v + to - 1) / to * to; };
  const auto round_down = [](Index v, Index to) { return v / to * to; };
  constexpr Index kStackFloats = 32768;
  const Index kc = std::min(I::KC, k);
  const Index nc_stack =
      std::min(round_up(n, I::NR), round_down((kStackFloats - kc * I::MR) / kc, I::NR));
  if (nc_stack >= I::NR && n <= 4 * nc_stack) {
    const Index mc_stack = std::min(
        {round_up(m, I::MR), I::MC, round_down((kStackFloats - kc * nc_stack) / kc, I::MR)});
    alignas(64) float stack[kStackFloats];
    packed_gemm_blocks(m, n, k, a, b, c, ldc, accumulate, stack, mc_stack, stack + kc * mc_stack,
                       nc_stack);
    return;
  }
  PackedGemmBuffers& buffers = packed_gemm_buffers();
  packed_gemm_blocks(m, n, k, a, b, c, ldc, accumulate, buffers.a.data(), I::MC, buffers.b.data(),
                     I::NC);
}

}  // namespace relpos::detail

#endif  // RELPOS_DETAIL_PACKED_GEMM
