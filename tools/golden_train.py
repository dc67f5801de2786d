# SPDX-License-Identifier: MIT
"""Golden losses and gradients of whole models (spec section 6) from PyTorch autograd, in
float64, for tests/train_test.cpp (tests/data/train/).

Each case takes a committed model folder of tests/data/models (tools/export_models.py; its F32
weights are exact in float64) into tools/reference.py's RefEncoder, draws a training batch with a
fixed seed, and writes two files:

* tests/data/train/<case>/input.safetensors: what `relpos-train grad --input` reads (spec
  section 5 and 6): `input` (F32) or `input_ids` (I64), optional `padding_mask` (U8) and
  `position_ids` (I64), and `targets` (I64 [batch, len], with -100 ignored positions: the
  cross-entropy of the logits) or `target` (F32 [batch, len, d_model]: the mean squared error
  of the output).
* tests/data/train/<case>/expected.safetensors: `loss` (F64 [1]), `grad.NAME` (F64) for every
  tensor of the model file (zeros where autograd gives None: the head under MSE) and
  `grad.input` when the input is `input`.

Cases (CASES): learned with the output head, causal, explicit position ids and targets with
-100; none with the final norm and the head; t5, rotary (padded), rotary at explicit ids,
absolute, additive (learned source: position.weight), alibi, sinusoidal keys+values, xl
(r_net.weight per layer, u and v shared) and kerple (power form, causal: r1, r2 shared) with a
float `input` and an MSE `target`, each with a padded row.

The fit golden (FIT_CASES): a few steps of torch.optim.AdamW (betas 0.9, 0.999, eps 1e-8,
weight decay W) with clip_grad_norm_, step t on rows (t*B + i) mod rows, in float64; written
as tests/data/train/fit_<case>/{input,expected}.safetensors with `loss.<t>` per step and the
trained tensors under their names.

Run with Debian's python3-torch: /usr/bin/python3 tools/golden_train.py
"""
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_py  # noqa: E402
from reference import RefEncoder  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "tests", "data", "models")
OUT = os.path.join(ROOT, "tests", "data", "train")
DT = torch.float64

# name -> (model folder, batch, len, extra): extra may give "position_ids", "pad" [(row, n)]
CASES = {
    "learned_head_ce": ("learned_ids_head_position_ids", 3, 6,
                        {"pad": [(1, 2)], "position_ids": [[0, 1, 2, 3, 4, 5], [4, 5, 6, 7, 8, 9],
                                                           [0, 2, 4, 6, 8, 10]],
                         "ignore": [(0, 0), (1, 4), (1, 5), (2, 3)]}),
    "none_head_ce": ("none_ids_head", 2, 5, {"pad": [(0, 1)], "ignore": [(1, 0)]}),
    "t5_mse": ("t5_bidirectional", 2, 6, {"pad": [(1, 2)]}),
    "rotary_mse": ("rotary_half", 2, 6, {"pad": [(0, 3)]}),
    "rotary_ids_mse": ("rotary_position_ids", 2, 5,
                       {"pad": [(1, 1)], "position_ids": [[3, 0, 7, 2, 4], [5, 6, 7, 8, 9]]}),
    "absolute_mse": ("absolute", 2, 6, {"pad": [(1, 2)]}),
    "additive_learned_mse": ("additive_learned", 2, 6, {"pad": [(1, 1)]}),
    "alibi_mse": ("alibi", 2, 5, {"pad": [(1, 2)]}),
    "sinusoidal_kv_mse": ("sinusoidal_keys_values", 2, 6, {"pad": [(0, 2)]}),
    # appended, so the cases above keep their seeds
    "xl_mse": ("xl", 2, 6, {"pad": [(1, 2)]}),
    "kerple_power_mse": ("kerple_power_causal", 2, 6, {"pad": [(0, 1)]}),
}


def load_model(folder):
    with open(os.path.join(MODELS, folder, "config.json")) as f:
        config = json.load(f)
    model = RefEncoder(config).double()
    weights = safetensors_py.load_file(os.path.join(MODELS, folder, "model.safetensors"))
    model.load_state_dict({k: torch.from_numpy(v).double() for k, v in weights.items()},
                          strict=True)
    return config, model, list(weights)


def draw_batch(config, batch, length, extra, seed):
    """The input file's tensors (as stored) and the float64 tensors the model runs on."""
    g = torch.Generator().manual_seed(seed)
    io = {}
    if config.get("vocab_size"):
        ids = torch.randint(0, config["vocab_size"], (batch, length), generator=g)
        io["input_ids"] = ids
        x = ids
    else:
        x32 = torch.randn(batch, length, config["d_model"], generator=g).float()
        io["input"] = x32
        x = x32.double()
    mask = None
    if extra.get("pad"):
        mask = torch.zeros(batch, length, dtype=torch.uint8)
        for b, n in extra["pad"]:
            mask[b, length - n:] = 1
        io["padding_mask"] = mask
    pos = None
    if extra.get("position_ids"):
        pos = torch.tensor(extra["position_ids"], dtype=torch.int64)
        io["position_ids"] = pos
    if config.get("output_head"):
        targets = torch.randint(0, config["vocab_size"], (batch, length), generator=g)
        for b, i in extra.get("ignore", []):
            targets[b, i] = -100
        io["targets"] = targets
    else:
        io["target"] = torch.randn(batch, length, config["d_model"], generator=g).float()
    return io, x, mask, pos


def loss_of(model, io, x, mask, pos):
    out, logits = model(x, padding_mask=mask, position_ids=pos)
    if "targets" in io:
        v = logits.shape[-1]
        return F.cross_entropy(logits.reshape(-1, v), io["targets"].reshape(-1),
                               ignore_index=-100, reduction="mean")
    return F.mse_loss(out, io["target"].double())


def save(path, tensors, metadata=None):
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    safetensors_py.save_file(tensors, path, metadata=metadata)
    size = os.path.getsize(path)
    assert size < 60_000, f"{path}: {size} bytes, golden files must stay small"
    print(f"  {os.path.relpath(path, ROOT)}: {size} bytes")


def golden_grad(name, folder, batch, length, extra, seed):
    config, model, names = load_model(folder)
    io, x, mask, pos = draw_batch(config, batch, length, extra, seed)
    if not x.is_floating_point():
        xin = x
    else:
        xin = x.clone().requires_grad_(True)
    loss = loss_of(model, io, xin, mask, pos)
    loss.backward()
    params = dict(model.named_parameters())
    assert set(params) == set(names), (name, set(params) ^ set(names))
    expected = {"loss": loss.detach().reshape(1)}
    for n in names:
        p = params[n]
        expected["grad." + n] = p.grad if p.grad is not None else torch.zeros_like(p)
    if xin.is_floating_point():
        expected["grad.input"] = xin.grad
    os.makedirs(os.path.join(OUT, name), exist_ok=True)
    meta = {"model": folder}
    save(os.path.join(OUT, name, "input.safetensors"), io, meta)
    save(os.path.join(OUT, name, "expected.safetensors"), expected, meta)


# name -> (model folder, rows, len, extra, steps, batch, lr, weight_decay, clip_norm)
FIT_CASES = {
    "fit_learned_head": ("learned_ids_head_position_ids", 5, 6, {"pad": [(1, 2)],
                         "ignore": [(0, 0), (3, 5)]}, 4, 2, 0.01, 0.01, 0.5),
    "fit_rotary_mse": ("rotary_half", 3, 5, {"pad": [(2, 1)]}, 3, 2, 0.003, 0.1, None),
}


def golden_fit(name, folder, rows, length, extra, steps, bsz, lr, wd, clip, seed):
    config, model, names = load_model(folder)
    io, x, mask, pos = draw_batch(config, rows, length, extra, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=wd)
    expected = {}
    for t in range(steps):
        idx = torch.tensor([(t * bsz + i) % rows for i in range(bsz)])
        sub = {k: v[idx] for k, v in io.items()}
        opt.zero_grad()
        loss = loss_of(model, sub, x[idx], None if mask is None else mask[idx],
                       None if pos is None else pos[idx])
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        expected[f"loss.{t}"] = loss.detach().reshape(1)
    for n, p in model.named_parameters():
        expected[n] = p.detach().clone()
    os.makedirs(os.path.join(OUT, name), exist_ok=True)
    meta = {"model": folder, "steps": str(steps), "batch": str(bsz), "lr": repr(lr),
            "weight_decay": repr(wd), "clip_norm": "" if clip is None else repr(clip)}
    save(os.path.join(OUT, name, "input.safetensors"), io, meta)
    save(os.path.join(OUT, name, "expected.safetensors"), expected, meta)


def main():
    torch.set_default_dtype(DT)
    for k, (name, (folder, batch, length, extra)) in enumerate(CASES.items()):
        golden_grad(name, folder, batch, length, extra, seed=1500 + k)
    for k, (name, case) in enumerate(FIT_CASES.items()):
        golden_fit(name, *case, seed=1600 + k)


if __name__ == "__main__":
    main()
