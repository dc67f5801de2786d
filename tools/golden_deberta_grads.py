# SPDX-License-Identifier: MIT
"""Golden gradients of the deberta position type (spec §6 on §7's `deberta`;
tests/data/deberta/grads_<case>.safetensors), from PyTorch autograd in float64 through
tools/golden_deberta.py's forward of one attention layer (the spec's score, written with
torch gathers over a (len x len) index; that script checks it against Hugging Face's
DisentangledSelfAttention), with fixed seeds.

Each file holds the layer's tensors under the relpos model-file names
(layers.0.self_attn.{in_proj_weight, in_proj_bias, out_proj.*, pos_key_proj.*,
pos_query_proj.*}, position.rel_embeddings, position.rel_norm.*), input, padding_mask
(1 = padded key), optional position_ids, dout (the loss is sum(dout * output)), output, and
grad.<name> for every tensor and grad.input; metadata "config" as golden_deberta.py's.
Cases: c2p + p2c with shared projections and rel_norm, padding, lengths beyond M (log buckets
and the edge rows); separate projections without rel_norm under a causal mask; separate
projections with rel_norm and spread position ids; p2c only, shared; c2p only, separate.
No query row sees no key (autograd through golden_deberta's nan_to_num would give NaN there).

    /usr/bin/python3 tools/golden_deberta_grads.py [out_dir]
"""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import golden_deberta  # noqa: E402


def golden_grads(out_dir, name, position, causal=False, d=8, h=2, bsz=2, length=24,
                 pads=(0, 3), position_ids=None, seed=0, scale=0.5, eps=1e-5):
    torch.manual_seed(seed)
    pos = {"type": "deberta", "position_buckets": 8, "max_relative_positions": 20, "c2p": True,
           "p2c": True, "share_att_key": True, "rel_norm": True}
    pos.update(position)
    s = pos["position_buckets"]
    pre = "layers.0.self_attn."
    w = {pre + "in_proj_weight": torch.randn(3 * d, d), pre + "in_proj_bias": torch.randn(3 * d),
         pre + "out_proj.weight": torch.randn(d, d), pre + "out_proj.bias": torch.randn(d),
         "position.rel_embeddings": torch.randn(2 * s, d) / scale}
    if pos["rel_norm"]:
        w["position.rel_norm.weight"] = (1 + torch.randn(d) * 0.2) / scale
        w["position.rel_norm.bias"] = torch.randn(d)
    if not pos["share_att_key"]:
        for which, on in (("pos_key_proj", pos["c2p"]), ("pos_query_proj", pos["p2c"])):
            if on:
                w[f"{pre}{which}.weight"] = torch.randn(d, d)
                w[f"{pre}{which}.bias"] = torch.randn(d)
    w = {k: (v * scale).to(torch.float64).requires_grad_() for k, v in w.items()}
    x = torch.randn(bsz, length, d, dtype=torch.float64).requires_grad_()
    dout = torch.randn(bsz, length, d, dtype=torch.float64)
    pad = torch.zeros(bsz, length, dtype=torch.bool)
    for b, n in enumerate(pads):
        if n:
            pad[b, length - n:] = True
    positions = (torch.arange(length).expand(bsz, length).clone() if position_ids is None
                 else torch.tensor(position_ids, dtype=torch.int64))
    out, _ = golden_deberta.deberta_attention(dict(w, n_heads=h), pos, x, pad, positions, causal,
                                              eps)
    (out * dout).sum().backward()
    for k, v in w.items():
        assert torch.isfinite(v.grad).all(), f"{name}: {k}'s gradient is not finite"
    tensors = {k: v.detach() for k, v in w.items()}
    tensors.update({f"grad.{k}": v.grad for k, v in w.items()})
    tensors.update(input=x.detach(), padding_mask=pad.to(torch.uint8), dout=dout,
                   output=out.detach(), **{"grad.input": x.grad})
    if position_ids is not None:
        tensors["position_ids"] = positions
    cfg = {"d_model": d, "n_heads": h, "causal": causal, "layer_norm_eps": eps, "position": pos}
    golden_deberta.save(os.path.join(out_dir, f"grads_{name}.safetensors"), tensors,
                        {"config": json.dumps(cfg)})


def main(argv):
    out_dir = argv[1] if len(argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "deberta")
    os.makedirs(out_dir, exist_ok=True)
    ids = [[0, 3, 4, 5, 40, 41, 42, 90, 2, 1, 7, 30],
           [5, 4, 3, 2, 1, 0, 70, 2, 9, 64, 65, 11]]
    golden_grads(out_dir, "shared_rel_norm", {}, seed=61)
    golden_grads(out_dir, "separate_causal", {"share_att_key": False, "rel_norm": False},
                 causal=True, pads=(2, 0), seed=62)
    golden_grads(out_dir, "separate_ids", {"share_att_key": False}, position_ids=ids, length=12,
                 seed=63)
    golden_grads(out_dir, "p2c", {"c2p": False}, h=4, seed=64)
    golden_grads(out_dir, "c2p_separate", {"p2c": False, "share_att_key": False}, seed=65)


if __name__ == "__main__":
    main(sys.argv)
