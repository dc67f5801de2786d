# SPDX-License-Identifier: MIT
"""Golden data of the kerple position type (spec §4, third wave; tests/data/kerple/), from
tools/reference.py in float64 with fixed seeds:

* attention_<case>.safetensors: one RefAttention layer (the naive einsum reference of spec
  section 3, kerple's bias gathered per (query, key) pair) in both forms, with padding,
  a causal mask, explicit position ids spread wide enough to take relpos' sparse path, and a
  non-power-of-two head count; `position.kerple_r1` / `kerple_r2` are drawn inside their
  domain.
* bias.safetensors: b_h(δ) of both forms for every δ in [-64, 64] and far ones up to ±10^6,
  at the parameters of attention_log and attention_power, written from the formula one
  scalar at a time.

    /usr/bin/python3 tools/golden_kerple.py [out_dir]   # default tests/data/kerple
"""

import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_py  # noqa: E402
from golden_t5_alibi_xl_scaling import golden_attention, save  # noqa: E402


def golden_bias(out_dir):
    """The bias of each form per distance, from the attention files' own r1 and r2."""
    far = [100, 1000, 4096, 123457, 1000000]
    deltas = sorted([-d for d in far] + list(range(-64, 65)) + far)
    tensors = {"delta": torch.tensor(deltas, dtype=torch.int64)}
    for form in ("log", "power"):
        f = safetensors_py.load_file(os.path.join(out_dir, f"attention_{form}.safetensors"))
        r1, r2 = f["position.kerple_r1"].tolist(), f["position.kerple_r2"].tolist()
        rows = []
        for h in range(len(r1)):
            if form == "log":
                rows.append([-r1[h] * math.log(1 + r2[h] * abs(d)) for d in deltas])
            else:
                rows.append([-r1[h] * abs(d) ** r2[h] for d in deltas])
        tensors[f"{form}.r1"] = torch.tensor(r1, dtype=torch.float64)
        tensors[f"{form}.r2"] = torch.tensor(r2, dtype=torch.float64)
        tensors[f"{form}.bias"] = torch.tensor(rows, dtype=torch.float64)  # [n_heads, len(deltas)]
    save(os.path.join(out_dir, "bias.safetensors"), tensors, {})


def main(argv):
    out_dir = argv[1] if len(argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "kerple")
    os.makedirs(out_dir, exist_ok=True)
    sparse_ids = [[0, 3, 90, 91, 400, 401, 402, 1000, 1003], [5, 4, 3, 2, 1, 0, 700, 2, 9]]
    log, power = {"type": "kerple", "form": "log"}, {"type": "kerple", "form": "power"}
    golden_attention(out_dir, "log", log, length=20, seed=31)
    golden_attention(out_dir, "power", power, length=20, seed=32)
    golden_attention(out_dir, "log_causal_h6", log, causal=True, h=6, d=18, length=20, seed=33)
    golden_attention(out_dir, "power_causal", power, causal=True, length=20, seed=34)
    golden_attention(out_dir, "log_sparse_ids", log, position_ids=sparse_ids, seed=35)
    golden_attention(out_dir, "power_sparse_ids", power, position_ids=sparse_ids, seed=36)
    golden_bias(out_dir)


if __name__ == "__main__":
    main(sys.argv)
