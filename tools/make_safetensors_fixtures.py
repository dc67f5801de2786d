# SPDX-License-Identifier: MIT
"""Writes the fixtures of tests/safetensors_test.cpp into tests/data/safetensors/.

- dtypes.safetensors: one tensor of every dtype relpos reads, with the special values of
  each (F16/BF16 subnormals, inf, NaN, extremes of the integer types) and random values.
- dtypes_expected.safetensors: what PyTorch says those tensors are: for float dtypes the
  float32 bit patterns of the values (I32, bit-exact: F16 and BF16 convert to float32
  exactly; NaNs as PyTorch gives them: F16 NaNs quieted, BF16 NaNs shifted bit for bit)
  and float64 values; F64 rounded to float32 by numpy; integers widened to I64. NumPy and
  PyTorch are checked to agree on every non-NaN value.
- layout.safetensors: a small file whose bytes the C++ writer must reproduce exactly
  (sorted compact header, reference tensor order, 8-byte aligned data), with metadata.
- misaligned.safetensors: a valid file whose F32 tensor starts at an odd offset (after a
  1-byte U8 tensor), so zero-copy mapping must decline and copying must still work.

Run: /usr/bin/python3 tools/make_safetensors_fixtures.py
"""

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_py as st  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data",
                   "safetensors")

F16_SPECIALS = [
    0x0000, 0x8000,  # +0, -0
    0x0001, 0x8001,  # smallest subnormal, 2^-24, and its negative
    0x03FF, 0x0200,  # largest subnormal and a middle one
    0x0400,          # smallest normal, 2^-14
    0x3C00, 0xC000,  # 1, -2
    0x3555,          # ~1/3
    0x7BFF, 0xFBFF,  # +-65504, the largest finite
    0x7C00, 0xFC00,  # +-inf
    0x7E00, 0xFE00, 0x7C01, 0x7FFF,  # NaNs: quiet, negative, signalling, all payload bits
]
BF16_SPECIALS = [
    0x0000, 0x8000,
    0x0001, 0x8001,  # smallest subnormal, 2^-133
    0x007F,          # largest subnormal
    0x0080,          # smallest normal, 2^-126
    0x3F80, 0xC000, 0x3EAB,  # 1, -2, ~1/3
    0x7F7F, 0xFF7F,  # largest finite, ~3.39e38
    0x7F80, 0xFF80,  # +-inf
    0x7FC0, 0xFFC0, 0x7F81, 0x7FFF,  # NaNs
]


def as_i32_bits(f32):
    """float32 array -> its bit patterns as int32 (what the test compares with bit_cast)."""
    return np.ascontiguousarray(f32, dtype=np.float32).view(np.int32)


def half_reference(bits):
    """float32 values of F16 bit patterns, by torch and checked against numpy."""
    bits = np.asarray(bits, dtype=np.uint16)
    by_torch = torch.from_numpy(bits.view(np.int16).copy()).view(torch.float16).float().numpy()
    by_numpy = bits.view(np.float16).astype(np.float32)
    finite = ~np.isnan(by_numpy)
    assert np.array_equal(as_i32_bits(by_torch)[finite], as_i32_bits(by_numpy)[finite])
    assert np.array_equal(np.isnan(by_torch), np.isnan(by_numpy))
    return by_torch


def bfloat16_reference(bits):
    """float32 values of BF16 bit patterns, by torch and checked against the bit shift."""
    bits = np.asarray(bits, dtype=np.uint16)
    by_torch = torch.from_numpy(bits.view(np.int16).copy()).view(torch.bfloat16).float().numpy()
    by_shift = (bits.astype(np.uint32) << 16).view(np.float32)
    finite = ~np.isnan(by_shift)
    assert np.array_equal(as_i32_bits(by_torch)[finite], as_i32_bits(by_shift)[finite])
    assert np.array_equal(np.isnan(by_torch), np.isnan(by_shift))
    return by_torch


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20240601)

    f16_bits = np.array(F16_SPECIALS + list(rng.integers(0, 1 << 16, 46)), dtype=np.uint16)
    bf16_bits = np.array(BF16_SPECIALS + list(rng.integers(0, 1 << 16, 47)), dtype=np.uint16)
    f16_bits = f16_bits.reshape(8, 8)
    bf16_bits = bf16_bits.reshape(4, 16)

    f32 = rng.standard_normal((3, 5)).astype(np.float32)
    f32.flat[:5] = [np.inf, -np.inf, np.nan, np.float32(1e-45), np.finfo(np.float32).max]
    f64 = rng.standard_normal((2, 3, 4)) * 1e3
    # values that round differently to float32, and ones beyond its range
    f64.flat[:6] = [1.0 + 2.0 ** -30, 1e300, -1e300, 1e-300, np.nan, 0.1]

    i64 = np.array([np.iinfo(np.int64).min, -1, 0, 1, np.iinfo(np.int64).max], dtype=np.int64)
    i32 = np.array([[np.iinfo(np.int32).min, -7], [0, np.iinfo(np.int32).max]], dtype=np.int32)
    i16 = np.array([np.iinfo(np.int16).min, -1, 0, 1, np.iinfo(np.int16).max], dtype=np.int16)
    i8 = np.array([-128, -1, 0, 1, 127], dtype=np.int8)
    u8 = np.array([0, 1, 127, 128, 255], dtype=np.uint8)
    flags = np.array([[True, False, True], [False, False, True]])

    tensors = {
        "f16": st.Raw("F16", f16_bits.shape, f16_bits.astype("<u2").tobytes()),
        "bf16": torch.from_numpy(bf16_bits.view(np.int16).copy()).view(torch.bfloat16),
        "f32": torch.from_numpy(f32),
        "f64": torch.from_numpy(f64),
        "i64": i64, "i32": i32, "i16": i16, "i8": i8, "u8": u8, "bool": flags,
        "scalar": np.array(2.5, dtype=np.float32),  # shape []
        "empty": np.zeros((0, 3), dtype=np.float32),
    }
    st.save_file(tensors, os.path.join(OUT, "dtypes.safetensors"),
                 metadata={"format": "pt", "made_by": "tools/make_safetensors_fixtures.py"})

    np.seterr(invalid="ignore", over="ignore")  # NaN and beyond-range casts are the point
    f16_f32 = half_reference(f16_bits)
    bf16_f32 = bfloat16_reference(bf16_bits)
    expected = {
        "f16.f32_bits": as_i32_bits(f16_f32),
        "f16.f64": f16_f32.astype(np.float64),
        "bf16.f32_bits": as_i32_bits(bf16_f32),
        "bf16.f64": bf16_f32.astype(np.float64),
        "f32.f32_bits": as_i32_bits(f32),
        "f64.f32_bits": as_i32_bits(f64.astype(np.float32)),  # numpy's round to nearest
        "f64.f64": f64,
        "i64.i64": i64, "i32.i64": i32.astype(np.int64), "i16.i64": i16.astype(np.int64),
        "i8.i64": i8.astype(np.int64), "u8.i64": u8.astype(np.int64),
        "bool.i64": flags.astype(np.int64),
    }
    st.save_file(expected, os.path.join(OUT, "dtypes_expected.safetensors"))

    layout = {
        "encoder.weight": torch.arange(6, dtype=torch.float64).reshape(2, 3) / 8,
        "encoder.bias": torch.tensor([0.5, -1.25, 3.0], dtype=torch.float32),
        "token_ids": np.array([[3, 1], [4, 1]], dtype=np.int32),
        "half": torch.tensor([1.0, -0.5], dtype=torch.float16),
        "mask": np.array([0, 1, 1, 0], dtype=np.uint8),
        "flags": np.array([True, False, True]),
        "positions": np.array([0, 1, 2], dtype=np.int64),
    }
    st.save_file(layout, os.path.join(OUT, "layout.safetensors"),
                 metadata={"format": "pt", "note": "written by safetensors_py"})

    # U8 [1] at [0, 1), F32 [2] at [1, 9): valid tiling, the F32 data is not 4-aligned
    misaligned = st.serialize({"a_byte": np.array([7], dtype=np.uint8),
                               "b_floats": np.array([1.5, -2.0], dtype=np.float32)})
    # the writer puts the wider type first; swap the two ranges so the byte comes first
    header_len = int.from_bytes(misaligned[:8], "little")
    header = misaligned[8:8 + header_len].decode().replace(
        '"a_byte":{"data_offsets":[8,9]', '"a_byte":{"data_offsets":[0,1]').replace(
        '"b_floats":{"data_offsets":[0,8]', '"b_floats":{"data_offsets":[1,9]')
    data = misaligned[8 + header_len:]
    with open(os.path.join(OUT, "misaligned.safetensors"), "wb") as f:
        f.write(misaligned[:8] + header.encode() + data[8:9] + data[0:8])

    # every file reads back through the independent reader, tiling checked
    for name in sorted(os.listdir(OUT)):
        st.load_file(os.path.join(OUT, name))
    got = st.load_file(os.path.join(OUT, "misaligned.safetensors"))
    assert got["a_byte"].tolist() == [7] and got["b_floats"].tolist() == [1.5, -2.0]
    print("wrote", ", ".join(sorted(os.listdir(OUT))), "in", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
