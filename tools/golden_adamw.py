# SPDX-License-Identifier: MIT
"""Golden AdamW and gradient clipping from PyTorch (spec section 6) for tests/optimizer_test.cpp.

Three parameters of different shapes (a matrix, a vector, a 1-element tensor) take four steps
of torch.optim.AdamW with lr 0.05, betas (0.8, 0.95), eps 1e-6 and weight decay 0.1 (not the
defaults, so a default wired in by mistake shows), from gradients drawn per step. The first
gradients of the vector are exact zeros, the case where Adam's step is 0/(0 + eps). Written per
dtype (float64 and float32, the float32 run is torch's own float32 arithmetic):

* adamw_<dtype>.safetensors: `init.NAME`, `grad.<t>.NAME` for steps t = 0..3 and
  `value.<t>.NAME` (the parameter after step t).
* clip_<dtype>.safetensors: the same run with torch.nn.utils.clip_grad_norm_(params, 0.5)
  before every step (the first step's norm is above 0.5, the third's below: the gradients are
  scaled down by 1/8 there), plus `norm.<t>` [1], the norm clip_grad_norm_ returned.

    /usr/bin/python3 tools/golden_adamw.py [out_dir]   # default tests/data/optimizer
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_py  # noqa: E402

SHAPES = {"layers.0.linear1.weight": (3, 4), "norm.bias": (5,), "position.kerple_r1": (1,)}
STEPS = 4
OPTIONS = dict(lr=0.05, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)
CLIP = 0.5


def draw(dtype):
    g = torch.Generator().manual_seed(7)
    init = {n: torch.randn(s, generator=g, dtype=torch.float64) for n, s in SHAPES.items()}
    grads = []
    for t in range(STEPS):
        # the third step's gradients are small, so clipping leaves them as they are
        scale = 0.01 if t == 2 else 1.0
        step = {n: scale * torch.randn(s, generator=g, dtype=torch.float64)
                for n, s in SHAPES.items()}
        if t == 0:
            step["norm.bias"].zero_()
        grads.append(step)
    return ({n: v.to(dtype) for n, v in init.items()},
            [{n: v.to(dtype) for n, v in s.items()} for s in grads])


def run(dtype, clip):
    init, grads = draw(dtype)
    params = {n: torch.nn.Parameter(v.clone()) for n, v in init.items()}
    opt = torch.optim.AdamW(list(params.values()), **OPTIONS)
    out = {f"init.{n}": v for n, v in init.items()}
    for t, step in enumerate(grads):
        for n, p in params.items():
            p.grad = step[n].clone()
            out[f"grad.{t}.{n}"] = step[n]
        if clip:
            norm = torch.nn.utils.clip_grad_norm_(list(params.values()), CLIP)
            out[f"norm.{t}"] = norm.reshape(1).to(torch.float64)
        opt.step()
        for n, p in params.items():
            out[f"value.{t}.{n}"] = p.detach().clone()
    return out


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "optimizer")
    os.makedirs(out_dir, exist_ok=True)
    for dtype, tag in ((torch.float64, "float64"), (torch.float32, "float32")):
        for clip, stem in ((False, "adamw"), (True, "clip")):
            path = os.path.join(out_dir, f"{stem}_{tag}.safetensors")
            safetensors_py.save_file({k: v.contiguous() for k, v in run(dtype, clip).items()},
                                     path)
            print("wrote", path)


if __name__ == "__main__":
    main()
