# SPDX-License-Identifier: MIT
"""Golden values of the position encodings (spec section 4), for tests/*_test.cpp.

Written straight from /work/shared/spec/model-format.md section 4 in PyTorch float64,
with naive loops over (i, j) and no caching, independent of the C++ code. Writes
tests/data/encodings/{sinusoidal,learned,rotary,absolute,additive}.safetensors; the
parameters of each case are in the tensor's name and in the comments here (the C++ tests
use the same ones).

    /usr/bin/python3 tools/golden_encodings.py
"""

import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_py import save_file  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "encodings")
F64 = torch.float64


def sinusoid(c, d, base):
    """s(c)[2m] = sin(c*w_m), s(c)[2m+1] = cos(c*w_m), w_m = base^(-2m/d) (spec 4)."""
    out = torch.zeros(d, dtype=F64)
    for m in range(d // 2):
        w = base ** (-2.0 * m / d)
        angle = torch.tensor(float(c) * w, dtype=F64)
        out[2 * m] = torch.sin(angle)
        out[2 * m + 1] = torch.cos(angle)
    return out


def clamp(delta, k):
    return delta if k is None else max(-k, min(k, delta))


def relative_view(length, row_of):
    """t[i, j] = row_of(j - i): distance is key minus query (spec 3)."""
    rows = [[row_of(j - i) for j in range(length)] for i in range(length)]
    return torch.stack([torch.stack(r) for r in rows]) if length else torch.zeros(0, 0, 0)


def rotary(x, positions, d_head, r, base, interleaved):
    """Spec 4 rotary on every head of x (len, n_heads*d_head), pair by pair."""
    out = x.clone()
    n_heads = x.shape[1] // d_head
    for i, p in enumerate(positions):
        for h in range(n_heads):
            col = h * d_head
            for m in range(r // 2):
                theta = torch.tensor(float(p) * base ** (-2.0 * m / r), dtype=F64)
                ia, ib = (col + 2 * m, col + 2 * m + 1) if interleaved else (col + m, col + m + r // 2)
                a, b = x[i, ia], x[i, ib]
                out[i, ia] = a * torch.cos(theta) - b * torch.sin(theta)
                out[i, ib] = a * torch.sin(theta) + b * torch.cos(theta)
    return out


def additive(x, window, row_of):
    """x_i + sum over j in N(i) = {j : |j - i| <= window, 0 <= j < len} of row_of(j - i)."""
    out = x.clone()
    length = x.shape[0]
    for i in range(length):
        for j in range(length):
            if abs(j - i) <= window:
                out[i] += row_of(j - i)
    return out


def sinusoidal_cases():
    t = {}
    # raw rows, c = -20..20 (d 8, base 10000) and c = -7..7 (d 6, base 100)
    t["table_d8"] = torch.stack([sinusoid(c, 8, 10000.0) for c in range(-20, 21)])
    t["table_d6_base100"] = torch.stack([sinusoid(c, 6, 100.0) for c in range(-7, 8)])
    # views (len, len, d): unclamped len 5, clamped K 3 at len 7 (len - 1 > K), K 0, len 1
    t["view_len5_d4"] = relative_view(5, lambda c: sinusoid(c, 4, 10000.0))
    t["view_len7_d4_K3"] = relative_view(7, lambda c: sinusoid(clamp(c, 3), 4, 10000.0))
    t["view_len6_d4_K0"] = relative_view(6, lambda c: sinusoid(clamp(c, 0), 4, 10000.0))
    t["view_len1_d4"] = relative_view(1, lambda c: sinusoid(c, 4, 10000.0))
    # far distances (d 4, base 10000): float rows must match to 1e-6
    far = [1000000 - 3, 1000000 - 2, 1000000 - 1, 1000000, -1000000, -999999]
    t["far_distances"] = torch.tensor(far, dtype=torch.int64)
    t["far_d4"] = torch.stack([sinusoid(c, 4, 10000.0) for c in far])
    # d 64: beyond what the C++ cache keeps (2^25 scalars), computed per request
    t["far_d64"] = torch.stack([sinusoid(c, 64, 10000.0) for c in far])
    return t


def learned_cases():
    g = torch.Generator().manual_seed(3)
    k, d = 3, 5  # K 3, d_head 5 (odd is fine: learned rows have no pairs)
    t = {}
    key = torch.randn(2 * k + 1, d, generator=g, dtype=F64)
    value = torch.randn(2 * k + 1, d, generator=g, dtype=F64)
    t["relative_key"], t["relative_value"] = key, value
    for length in (9, 3, 1):  # len - 1 > K (edge rows repeat), < K, and a single token
        t[f"key_view_len{length}"] = relative_view(length, lambda c: key[clamp(c, k) + k])
        t[f"value_view_len{length}"] = relative_view(length, lambda c: value[clamp(c, k) + k])
    return t


def rotary_cases():
    g = torch.Generator().manual_seed(5)
    t = {}
    x = torch.randn(7, 16, generator=g, dtype=F64)  # len 7, 2 heads of d_head 8
    t["x"] = x
    plain = list(range(7))
    for layout, inter in (("half", False), ("interleaved", True)):
        t[f"{layout}_r8"] = rotary(x, plain, 8, 8, 10000.0, inter)
        t[f"{layout}_r4"] = rotary(x, plain, 8, 4, 10000.0, inter)  # partial
        t[f"{layout}_r6_base500"] = rotary(x, plain, 8, 6, 500.0, inter)
    ids = [5, 0, 3, 3, 100, 17, 2]
    t["ids"] = torch.tensor(ids, dtype=torch.int64)
    t["half_r8_ids"] = rotary(x, ids, 8, 8, 10000.0, False)
    t["interleaved_r4_ids"] = rotary(x, ids, 8, 4, 10000.0, True)
    t["half_r8_offset10"] = rotary(x, [p + 10 for p in plain], 8, 8, 10000.0, False)
    # odd d_head 5 with partial rotary r 4, len 3, one head
    x_odd = torch.randn(3, 5, generator=g, dtype=F64)
    t["x_odd"] = x_odd
    t["odd_half_r4"] = rotary(x_odd, [0, 1, 2], 5, 4, 10000.0, False)
    t["odd_interleaved_r4"] = rotary(x_odd, [0, 1, 2], 5, 4, 10000.0, True)
    # len 1 at position 5 (offset 5), one head of 8
    x1 = torch.randn(1, 8, generator=g, dtype=F64)
    t["x1"] = x1
    t["x1_half_r8_offset5"] = rotary(x1, [5], 8, 8, 10000.0, False)
    # far positions on unit pairs (a, b) = (1, 0): the outputs are cos and sin themselves
    far = [999997, 999998, 999999, 1000000]
    t["far_ids"] = torch.tensor(far, dtype=torch.int64)
    unit_half = torch.zeros(4, 8, dtype=F64)
    unit_half[:, :4] = 1.0
    unit_inter = torch.zeros(4, 8, dtype=F64)
    unit_inter[:, 0::2] = 1.0
    t["far_unit_half"], t["far_unit_interleaved"] = unit_half, unit_inter
    t["far_half_r8"] = rotary(unit_half, far, 8, 8, 10000.0, False)
    t["far_interleaved_r8"] = rotary(unit_inter, far, 8, 8, 10000.0, True)
    # d_head 64: positions ~10^6 are beyond what the C++ cache keeps (2^25 scalars)
    unit64 = torch.zeros(4, 64, dtype=F64)
    unit64[:, :32] = 1.0
    t["far_unit_half_r64"] = unit64
    t["far_half_r64"] = rotary(unit64, far, 64, 64, 10000.0, False)
    return t


def absolute_cases():
    g = torch.Generator().manual_seed(7)
    t = {}
    x = torch.randn(7, 6, generator=g, dtype=F64)  # len 7, d_model 6
    t["x"] = x

    def add_pe(inp, positions, d, base=10000.0):
        return inp + torch.stack([sinusoid(p, d, base) for p in positions])

    t["plain"] = add_pe(x, range(7), 6)
    t["plain_base100"] = add_pe(x, range(7), 6, 100.0)
    ids = [4, 4, 0, 9, 1, 30, 2]
    t["ids"] = torch.tensor(ids, dtype=torch.int64)
    t["with_ids"] = add_pe(x, ids, 6)
    t["offset3"] = add_pe(x, [p + 3 for p in range(7)], 6)
    x1 = torch.randn(1, 6, generator=g, dtype=F64)
    t["x1"], t["len1"] = x1, add_pe(x1, [0], 6)
    far = [999999, 1000000]
    t["far_ids"] = torch.tensor(far, dtype=torch.int64)
    t["far_pe_d8"] = add_pe(torch.zeros(2, 8, dtype=F64), far, 8)
    t["far_pe_d64"] = add_pe(torch.zeros(2, 64, dtype=F64), far, 64)  # beyond the C++ cache
    return t


def additive_cases():
    g = torch.Generator().manual_seed(11)
    t = {}
    x = torch.randn(9, 6, generator=g, dtype=F64)  # len 9, d_model 6
    t["x"] = x
    for w in (0, 2, 20):
        t[f"sin_w{w}"] = additive(x, w, lambda c: sinusoid(c, 6, 10000.0))
    t["sin_w3_K1"] = additive(x, 3, lambda c: sinusoid(clamp(c, 1), 6, 10000.0))
    t["sin_w2_base100"] = additive(x, 2, lambda c: sinusoid(c, 6, 100.0))
    weight = torch.randn(5, 6, generator=g, dtype=F64)  # position.weight, K 2
    t["weight"] = weight
    t["learned_w3_K2"] = additive(x, 3, lambda c: weight[clamp(c, 2) + 2])
    t["learned_w1_K2"] = additive(x, 1, lambda c: weight[clamp(c, 2) + 2])
    t["learned_w3_K2_len8"] = additive(x[:8], 3, lambda c: weight[clamp(c, 2) + 2])
    x1 = torch.randn(1, 6, generator=g, dtype=F64)
    t["x1"], t["len1_sin_w2"] = x1, additive(x1, 2, lambda c: sinusoid(c, 6, 10000.0))
    return t


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, make in (("sinusoidal", sinusoidal_cases), ("learned", learned_cases),
                       ("rotary", rotary_cases), ("absolute", absolute_cases),
                       ("additive", additive_cases)):
        path = os.path.join(OUT, name + ".safetensors")
        save_file(make(), path, metadata={"generator": "tools/golden_encodings.py"})
        print(f"{path}: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
