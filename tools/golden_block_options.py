# SPDX-License-Identifier: MIT
"""Golden model folders for the block options of spec §7 (docs/model-format.md §7, first table).

Each folder tests/data/block_options/<name>/ holds, as tools/export_models.py's do,
  config.json        the hyper-parameters, with §7's keys
  model.safetensors  the weights, F32
  io.safetensors     `input_ids` (I64 [batch, len]) or `input` (F32 [batch, len, d_model]),
                     `padding_mask` (U8), optional `position_ids` and `token_type_ids` (I64),
                     and the expected `output` (F64 [batch, len, d_model]); the metadata entry
                     "description" says what the case covers.
and tests/data/block_options/index.json lists the cases.

The forward here is written from the spec's formulas with torch ops, in float64 from the
F32-rounded weights, independently of tools/reference.py's encoder (which has none of these
options); only the t5 bucket and the rotary rotation are taken from reference.py, whose
self-test checks them against the spec. The building blocks come from torch where torch has
them: torch.nn.functional.layer_norm, gelu(approximate="tanh"), relu, softmax. RMSNorm is
T5's T5LayerNorm: x * rsqrt(mean(x^2) + eps) * w.

    /usr/bin/python3 tools/golden_block_options.py [--out tests/data/block_options]
"""

import argparse
import json
import math
import os
import sys
import zlib

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_py  # noqa: E402
from reference import apply_rotary, t5_bucket  # noqa: E402


def _seed(name):
    return zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF


def _f32(t):
    """Round to float32 and back: the file stores F32, the math runs in float64."""
    return t.float().double()


def make_weights(cfg, pos_rows):
    """Random weights for every tensor the config implies (spec §1 and §7), F32-rounded."""
    d, f, n_layers = cfg["d_model"], cfg["d_ff"], cfg["n_layers"]
    bias = cfg.get("bias", True)
    rms = cfg.get("norm", "layer") == "rms"
    gated = cfg.get("ffn", "plain") == "gated"
    w = {}

    def rnd(*shape, scale=0.3):
        return _f32(torch.randn(*shape, dtype=torch.float64) * scale)

    def norm(prefix):
        w[prefix + ".weight"] = _f32(1 + 0.2 * torch.randn(d, dtype=torch.float64))
        if not rms:
            w[prefix + ".bias"] = rnd(d, scale=0.2)

    if cfg.get("vocab_size"):
        w["embed.weight"] = rnd(cfg["vocab_size"], d, scale=1.0)
    if "pos_embed_offset" in cfg:
        w["pos_embed.weight"] = rnd(pos_rows, d, scale=0.5)
    if "type_vocab_size" in cfg:
        w["type_embed.weight"] = rnd(cfg["type_vocab_size"], d, scale=0.5)
    if cfg.get("embed_norm"):
        w["embed_norm.weight"] = _f32(1 + 0.2 * torch.randn(d, dtype=torch.float64))
        w["embed_norm.bias"] = rnd(d, scale=0.2)
    pos = cfg["position"]
    if pos["type"] == "t5":
        w["position.relative_attention_bias"] = rnd(pos["num_buckets"], cfg["n_heads"], scale=0.5)
    for n in range(n_layers):
        p = f"layers.{n}."
        w[p + "self_attn.in_proj_weight"] = rnd(3 * d, d)
        w[p + "self_attn.out_proj.weight"] = rnd(d, d)
        w[p + "linear1.weight"] = rnd(f, d)
        w[p + "linear2.weight"] = rnd(d, f)
        if gated:
            w[p + "linear3.weight"] = rnd(f, d)
        if bias:
            w[p + "self_attn.in_proj_bias"] = rnd(3 * d, scale=0.2)
            w[p + "self_attn.out_proj.bias"] = rnd(d, scale=0.2)
            w[p + "linear1.bias"] = rnd(f, scale=0.2)
            w[p + "linear2.bias"] = rnd(d, scale=0.2)
            if gated:
                w[p + "linear3.bias"] = rnd(f, scale=0.2)
        norm(p + "norm1")
        norm(p + "norm2")
    if cfg.get("final_norm"):
        norm("norm")
    return w


def forward(cfg, w, x, mask, positions, types):
    """The encoder of spec §1–§4 with §7's options. x: ids [B, L] (int64) or activations
    [B, L, d] (float64); mask [B, L] (1 = padded key); positions [B, L]; types [B, L] or
    None. Returns [B, L, d] in float64."""
    d, h = cfg["d_model"], cfg["n_heads"]
    dh = d // h
    eps = cfg.get("layer_norm_eps", 1e-5)
    bias = cfg.get("bias", True)
    rms = cfg.get("norm", "layer") == "rms"
    gated = cfg.get("ffn", "plain") == "gated"
    act = {"relu": F.relu, "gelu": F.gelu,
           "gelu_tanh": lambda t: F.gelu(t, approximate="tanh")}[cfg.get("activation", "relu")]
    pos = cfg["position"]

    def norm(prefix, t):
        if rms:  # T5LayerNorm: no mean, no bias
            return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + eps) * w[prefix + ".weight"]
        return F.layer_norm(t, (d,), w[prefix + ".weight"], w[prefix + ".bias"], eps)

    def lin(t, prefix, wname="weight", bname="bias"):
        out = t @ w[prefix + wname].T
        return out + w[prefix + bname] if bias else out

    B, L = positions.shape
    if x.dtype == torch.int64:
        # the embedding stage (spec §7): embed (+ pos_embed) (+ type_embed), then embed_norm
        hcur = w["embed.weight"][x]
        if "pos_embed_offset" in cfg:
            hcur = hcur + w["pos_embed.weight"][positions + cfg["pos_embed_offset"]]
        if "type_vocab_size" in cfg:
            t = types if types is not None else torch.zeros_like(x)
            hcur = hcur + w["type_embed.weight"][t]
        if cfg.get("embed_norm"):
            hcur = F.layer_norm(hcur, (d,), w["embed_norm.weight"], w["embed_norm.bias"], eps)
    else:
        hcur = x.clone()
    if pos["type"] == "absolute":  # the input hook, after the embedding stage
        base = pos.get("base", 10000.0)
        m = torch.arange(d // 2, dtype=torch.float64)
        omega = base ** (-2 * m / d)
        ang = positions.double()[..., None] * omega
        pe = torch.zeros(B, L, d, dtype=torch.float64)
        pe[..., 0::2] = torch.sin(ang)
        pe[..., 1::2] = torch.cos(ang)
        hcur = hcur + pe

    # score bias [B, H, L, L] from relative distances δ = p_j − p_i, and the key mask
    delta = positions[:, None, :] - positions[:, :, None]  # [B, L(i), L(j)]
    score_bias = torch.zeros(B, h, L, L, dtype=torch.float64)
    if pos["type"] == "t5":
        bidir = pos.get("bidirectional", not cfg.get("causal", False))
        buckets = t5_bucket(delta, pos["num_buckets"], pos["max_distance"], bidir)
        score_bias = w["position.relative_attention_bias"][buckets].permute(0, 3, 1, 2)
    score_bias = score_bias.masked_fill(mask.bool()[:, None, None, :], float("-inf"))

    def attn(n, t):
        p = f"layers.{n}.self_attn."
        qkv = t @ w[p + "in_proj_weight"].T
        if bias:
            qkv = qkv + w[p + "in_proj_bias"]
        q, k, v = (qkv[..., i * d:(i + 1) * d].reshape(B, L, h, dh).transpose(1, 2)
                   for i in range(3))
        if pos["type"] == "rotary":
            r = pos.get("rotary_dim", dh)
            m = torch.arange(r // 2, dtype=torch.float64)
            inv = pos.get("base", 10000.0) ** (-2 * m / r)
            il = pos.get("interleaved", False)
            q = apply_rotary(q, positions, inv, 1.0, r, il)
            k = apply_rotary(k, positions, inv, 1.0, r, il)
        e = q @ k.transpose(-1, -2) / math.sqrt(dh) + score_bias
        a = torch.softmax(e, dim=-1)
        z = (a @ v).transpose(1, 2).reshape(B, L, d)
        return lin(z, p + "out_proj.")

    def ffn(n, t):
        p = f"layers.{n}."
        hid = act(lin(t, p + "linear1."))
        if gated:  # linear2(act(linear1 x) ⊙ linear3 x)
            hid = hid * lin(t, p + "linear3.")
        return lin(hid, p + "linear2.")

    for n in range(cfg["n_layers"]):
        p = f"layers.{n}."
        if cfg.get("norm_first", False):
            hcur = hcur + attn(n, norm(p + "norm1", hcur))
            hcur = hcur + ffn(n, norm(p + "norm2", hcur))
        else:
            hcur = norm(p + "norm1", hcur + attn(n, hcur))
            hcur = norm(p + "norm2", hcur + ffn(n, hcur))
    if cfg.get("final_norm"):
        hcur = norm("norm", hcur)
    return hcur


T5_BLOCK = {"norm": "rms", "bias": False, "ffn": "gated", "activation": "gelu_tanh",
            "norm_first": True, "final_norm": True, "layer_norm_eps": 1e-6}
BERT_EMBED = {"norm_first": False, "embed_norm": True, "pos_embed_offset": 2,
              "type_vocab_size": 2, "activation": "gelu", "layer_norm_eps": 1e-12}
SIZES = {"d_model": 16, "n_heads": 2, "n_layers": 2, "d_ff": 24}

# name -> (config, description, uses ids, explicit position ids, token types)
CASES = {
    "t5_block_t5": (
        {**SIZES, **T5_BLOCK, "vocab_size": 23,
         "position": {"type": "t5", "num_buckets": 8, "max_distance": 16}},
        "T5-like: rms norms, no biases, gated gelu_tanh FFN, pre-norm, final rms norm; t5 "
        "buckets (8, max_distance 16); input_ids, batch 2 len 13, row 1 has 4 padded keys",
        True, False, False),
    "t5_block_rotary_input": (
        {**SIZES, **T5_BLOCK, "vocab_size": 23, "embed_norm": True,
         "position": {"type": "rotary"}},
        "the T5-like block with rotary (half pairing) on a float `input`: the embedding "
        "stage (embed_norm) is skipped; batch 2 len 13, row 1 has 4 padded keys",
        False, False, False),
    "bert_embed_t5": (
        {**SIZES, **BERT_EMBED, "vocab_size": 29,
         "position": {"type": "t5", "num_buckets": 8, "max_distance": 16}},
        "MPNet/BERT-like: post-norm, embed_norm, pos_embed_offset 2, 2 token types, gelu, "
        "t5 buckets; input_ids with token_type_ids, batch 2 len 13, row 1 padded by 4",
        True, False, True),
    "bert_embed_rotary_gated_ids": (
        {**SIZES, **BERT_EMBED, "vocab_size": 29, "ffn": "gated",
         "position": {"type": "rotary", "interleaved": True}},
        "RoFormer-like: post-norm, embed_norm, pos_embed_offset 2, token types, rotary "
        "interleaved, gated FFN with biases (linear3.bias); explicit position_ids (left "
        "padding of row 1 by 3, positions from 0 at its first token), token_type_ids",
        True, True, True),
    "bert_embed_absolute_rms": (
        {**SIZES, **BERT_EMBED, "vocab_size": 29, "norm": "rms", "activation": "relu",
         "position": {"type": "absolute"}},
        "the embedding stage then the absolute input hook (sinusoid added after embed_norm), "
        "rms norms with biases elsewhere; token types default to 0 (no token_type_ids)",
        True, False, False),
}


def export(out_dir, name):
    cfg, description, use_ids, explicit_pos, use_types = CASES[name]
    torch.manual_seed(_seed(name))
    B, L = 2, 13
    pos_rows = L + 2 + 3  # P: room for offset 2, plus rows no token reaches
    w = make_weights(cfg, pos_rows)
    io = {}
    mask = torch.zeros(B, L, dtype=torch.uint8)
    if explicit_pos:
        # row 1 left-padded by 3: its tokens start at position 0 after the padding
        positions = torch.stack([torch.arange(L), (torch.arange(L) - 3).clamp(min=0)])
        mask[1, :3] = 1
        io["position_ids"] = positions.clone()
    else:
        positions = torch.arange(L).expand(B, L).clone()
        mask[1, L - 4:] = 1
    io["padding_mask"] = mask
    types = None
    if use_ids:
        x = torch.randint(0, cfg["vocab_size"], (B, L), dtype=torch.int64)
        io["input_ids"] = x
        if use_types:
            types = torch.randint(0, cfg["type_vocab_size"], (B, L), dtype=torch.int64)
            io["token_type_ids"] = types
    else:
        x = _f32(torch.randn(B, L, cfg["d_model"], dtype=torch.float64))
        io["input"] = x.float()
    with torch.no_grad():
        out = forward(cfg, w, x, mask, positions, types)
    io["output"] = out
    folder = os.path.join(out_dir, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    safetensors_py.save_file({k: v.float() for k, v in w.items()},
                             os.path.join(folder, "model.safetensors"))
    safetensors_py.save_file(io, os.path.join(folder, "io.safetensors"),
                             metadata={"description": description})
    return description


def selftest():
    """The hand-written pieces against torch's own modules where torch has them."""
    torch.manual_seed(0)
    x = torch.randn(3, 5, 16, dtype=torch.float64)
    # post-norm, plain FFN with biases, relu, no positions: torch.nn.TransformerEncoderLayer
    cfg = {**SIZES, "n_layers": 1, "activation": "relu", "position": {"type": "none"}}
    layer = torch.nn.TransformerEncoderLayer(16, 2, 24, dropout=0.0, batch_first=True,
                                             dtype=torch.float64)
    layer.train()
    sd = layer.state_dict()
    w = {"layers.0." + k: v for k, v in sd.items()}
    mask = torch.zeros(3, 5, dtype=torch.uint8)
    mask[1, 3:] = 1
    pos = torch.arange(5).expand(3, 5)
    with torch.no_grad():
        want = layer(x, src_key_padding_mask=mask.bool())
        got = forward(cfg, w, x, mask, pos, None)
    err = (want - got).abs().max().item()
    assert err < 1e-12, f"selftest: forward vs TransformerEncoderLayer: {err}"
    # gelu_tanh is the spec's formula
    t = torch.linspace(-6, 6, 101, dtype=torch.float64)
    spec = 0.5 * t * (1 + torch.tanh(math.sqrt(2 / math.pi) * (t + 0.044715 * t ** 3)))
    assert (F.gelu(t, approximate="tanh") - spec).abs().max().item() < 1e-15
    return err


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out", default=os.path.join(here, "tests", "data", "block_options"))
    args = ap.parse_args(argv)
    print(f"selftest: forward matches torch.nn.TransformerEncoderLayer within {selftest():.1e}")
    os.makedirs(args.out, exist_ok=True)
    index = {}
    for name in CASES:
        index[name] = {"description": export(args.out, name)}
        print("wrote", name)
    with open(os.path.join(args.out, "index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
