# SPDX-License-Identifier: MIT
"""Writes tests/data/safetensors/float_to_half.safetensors: how PyTorch rounds float32 to
float16 and to bfloat16, on the values where rounding is hard, for tests/safetensors_test.cpp (the
Eigen::half and Eigen::bfloat16 conversions the safetensors writer and reader rely on).

Tensors (all I32 [n], one entry per input value):
- input.f32_bits: the float32 bit patterns converted;
- f16_bits: torch.tensor(x, dtype=torch.float32).to(torch.float16), as its 16-bit pattern;
- bf16_bits: the same .to(torch.bfloat16).

The values: ties between two neighbours (round to nearest even, both ways) and one ulp of
float32 either side of each tie; the largest finite value, the tie above it (overflow to
inf) and just below that tie; the subnormal range of the target (smallest subnormal, the tie
below it that rounds to zero, subnormal ties, the subnormal-normal boundary); float32
subnormals; zeros, infinities, NaNs (quiet, negative, signalling, with payload), and random
values. Negative copies of every finite value are included. NaN outputs differ between
PyTorch's scalar and vector paths (float16 keeps the sign, bfloat16's vector path gives
0xFFFF), so the test only asks that a NaN stays a NaN.

Run: /usr/bin/python3 tools/make_half_rounding.py
"""

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_py as st  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data",
                   "safetensors", "float_to_half.safetensors")


def f32(bits):
    return np.array([bits], dtype=np.uint32).view(np.float32)[0]


def f32_bits(x):
    return int(np.array([x], dtype=np.float32).view(np.uint32)[0])


def around(x):
    """x and its float32 neighbours on either side."""
    b = f32_bits(x)
    return [f32(b - 1), f32(b), f32(b + 1)]


def hard_values():
    v = []
    # float16: 10 mantissa bits. Ties at 1 + (2k+1) 2^-11: even below (k even) and above (k odd)
    for k in range(4):
        v += around(np.float32(1.0 + (2 * k + 1) * 2.0**-11))
    v += around(np.float32(2048 + 1))  # tie between 2048 and 2050: even is 2048
    v += around(np.float32(2048 + 3))  # between 2050 and 2052: even is 2052
    v += around(np.float32(65504.0))  # the largest finite float16
    v += around(np.float32(65520.0))  # the tie above it: overflows to inf (even)
    v += [np.float32(65519.0), np.float32(1e5), np.float32(3.0e38)]
    # float16 subnormals: 2^-24 the smallest, 2^-25 the tie that rounds to 0
    for e in (-24, -25, -26):
        v += around(np.float32(2.0**e))
    v += around(np.float32(3 * 2.0**-25))  # subnormal tie between 1 and 2 ulp: even is 2
    v += around(np.float32(5 * 2.0**-25))  # between 2 and 3: even is 2
    v += around(np.float32(2.0**-14))  # smallest normal float16
    v += around(np.float32(2.0**-14 - 2.0**-25))  # tie between largest subnormal and 2^-14
    # bfloat16: 7 mantissa bits. Ties at 1 + (2k+1) 2^-8
    for k in range(4):
        v += around(np.float32(1.0 + (2 * k + 1) * 2.0**-8))
    v += [f32(0x7F7F7FFF), f32(0x7F7F8000), f32(0x7F7F8001), f32(0x7F7FFFFF),  # bfloat16 max,
          f32(0x7F7EFFFF), f32(0x7F7E8000)]                                  # its ties, FLT_MAX
    # float32 subnormals (bfloat16 keeps them, rounded; float16 flushes them to 0)
    v += [f32(0x00000001), f32(0x00008000), f32(0x00018000), f32(0x00007FFF),
          f32(0x007FFFFF), f32(0x00800000), f32(0x007F8000)]
    v += [np.float32(0.1), np.float32(1.0 / 3.0), np.float32(np.pi), np.float32(1.0)]
    rng = np.random.default_rng(16)
    v += list(rng.standard_normal(24).astype(np.float32) * np.float32(100.0))
    v += list(rng.integers(0, 1 << 31, 24, dtype=np.uint32).view(np.float32))  # any exponent
    finite = [x for x in v if np.isfinite(x)]
    v = finite + [-x for x in finite]
    v += [np.float32(0.0), np.float32(-0.0), np.float32(np.inf), np.float32(-np.inf)]
    v += [f32(0x7FC00000), f32(0xFFC00000), f32(0x7F800001), f32(0x7FC02000),
          f32(0xFF812345), f32(0x7FFFFFFF)]
    return np.array(v, dtype=np.float32)


def main():
    x = hard_values()
    bits = x.view(np.int32).copy()
    t = torch.from_numpy(x.copy())
    f16 = t.to(torch.float16).view(torch.int16).numpy().astype(np.int32) & 0xFFFF
    bf16 = t.to(torch.bfloat16).view(torch.int16).numpy().astype(np.int32) & 0xFFFF
    # numpy's float16 rounding is an independent implementation: it must agree off NaN
    with np.errstate(over="ignore"):  # 65520 and above overflow to inf, as wanted
        np16 = x.astype(np.float16).view(np.uint16).astype(np.int32)
    finite = ~np.isnan(x)
    assert (np16[finite] == f16[finite]).all(), "numpy and torch disagree on float16"
    # bfloat16 by hand: round to nearest even on the top 16 bits of the float32 pattern
    u = x.view(np.uint32).astype(np.uint64)
    hand = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.int32) & 0xFFFF
    assert (hand[finite] == bf16[finite]).all(), "the bfloat16 rule and torch disagree"
    st.save_file({"input.f32_bits": bits.astype(np.int32), "f16_bits": f16.astype(np.int32),
                  "bf16_bits": bf16.astype(np.int32)}, OUT)
    print(f"{OUT}: {len(x)} values")


if __name__ == "__main__":
    main()
