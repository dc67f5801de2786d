# SPDX-License-Identifier: MIT
"""Golden data for attention, the block and the encoder stack (tests/data/attention/).

Two independent references, both in float64 with fixed seeds:

* position type `none`: PyTorch's own modules (torch.nn.MultiheadAttention,
  TransformerEncoderLayer, TransformerEncoder, batch_first). They run in train mode with
  dropout 0 so torch stays on its plain-math path (the eval-mode fast path turns padded
  rows into zeros with nested tensors, which is not the contract of spec section 2).
  Every parameter is randomized: torch zero-inits biases, which would hide bias bugs.
* every other position type: tools/reference.py's RefEncoder (the naive einsum reference of
  the spec), through the whole stack.

Each file holds the module's state dict under its spec names, the inputs (`input` or
`input_ids`, optional `padding_mask` U8 and `position_ids` I64), the expected `output` (and
`logits`), with the config as JSON in the metadata key "config".

    /usr/bin/python3 tools/golden_attention.py [out_dir]   # default tests/data/attention
"""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_py  # noqa: E402
from reference import RefEncoder  # noqa: E402


def randomize(module, scale=0.3):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * scale)


def save(path, tensors, config):
    tensors = {k: (v.contiguous() if isinstance(v, torch.Tensor) else v) for k, v in tensors.items()}
    safetensors_py.save_file(tensors, path, metadata={"config": json.dumps(config)})
    size = os.path.getsize(path)
    assert size < 200_000, f"{path}: {size} bytes, golden files must stay small"
    print(f"  {os.path.basename(path)}: {size} bytes")


def padding(batch, length, pads):
    """[batch, len] bool mask: item b has its last pads[b] tokens padded (right padding)."""
    m = torch.zeros(batch, length, dtype=torch.bool)
    for b, n in enumerate(pads):
        if n:
            m[b, length - n:] = True
    return m


def causal_mask(length):
    """torch's float mask for src_mask: -inf above the diagonal (key j > query i)."""
    return torch.triu(torch.full((length, length), float("-inf"), dtype=torch.float64), 1)


def golden_mha(out_dir):
    """torch.nn.MultiheadAttention alone: plain, padded, padded + causal."""
    torch.manual_seed(10)
    d, h, bsz, length = 16, 4, 3, 7
    mha = torch.nn.MultiheadAttention(d, h, dropout=0.0, batch_first=True).double()
    randomize(mha)
    mha.train()
    x = torch.randn(bsz, length, d, dtype=torch.float64)
    pad = padding(bsz, length, [0, 2, 5])
    with torch.no_grad():
        out, _ = mha(x, x, x, need_weights=False)
        out_pad, _ = mha(x, x, x, key_padding_mask=pad, need_weights=False)
        out_causal, _ = mha(x, x, x, key_padding_mask=pad, attn_mask=causal_mask(length),
                            need_weights=False)
    tensors = {f"self_attn.{k}": v for k, v in mha.state_dict().items()}
    tensors.update(input=x, padding_mask=pad.to(torch.uint8), output=out,
                   output_padded=out_pad, output_padded_causal=out_causal)
    save(os.path.join(out_dir, "none_mha.safetensors"), tensors,
         {"d_model": d, "n_heads": h})


def golden_layer(out_dir, name, norm_first, activation, eps):
    """One torch.nn.TransformerEncoderLayer, padded batch, without and with a causal mask."""
    torch.manual_seed(11)
    d, h, ff, bsz, length = 16, 4, 32, 2, 9
    layer = torch.nn.TransformerEncoderLayer(d, h, ff, dropout=0.0, activation=activation,
                                             layer_norm_eps=eps, batch_first=True,
                                             norm_first=norm_first).double()
    randomize(layer)
    layer.train()
    x = torch.randn(bsz, length, d, dtype=torch.float64)
    pad = padding(bsz, length, [0, 3])
    with torch.no_grad():
        out = layer(x, src_key_padding_mask=pad)
        out_causal = layer(x, src_mask=causal_mask(length), src_key_padding_mask=pad)
        # the parts alone, for feed_forward_test and layer_norm_test
        act = torch.nn.functional.relu if activation == "relu" else torch.nn.functional.gelu
        ffn = layer.linear2(act(layer.linear1(x)))
        norm1 = layer.norm1(x)
    tensors = dict(layer.state_dict())
    tensors.update(input=x, padding_mask=pad.to(torch.uint8), output=out,
                   output_causal=out_causal, ffn_output=ffn, norm1_output=norm1)
    save(os.path.join(out_dir, f"none_block_{name}.safetensors"), tensors,
         {"d_model": d, "n_heads": h, "d_ff": ff, "activation": activation,
          "norm_first": norm_first, "layer_norm_eps": eps})


def golden_encoder(out_dir, name, cfg, pads, with_vocab, seed):
    """torch.nn.TransformerEncoder (+ an Embedding in front and a Linear head, named as the
    spec's embed.* and head.*, when with_vocab)."""
    torch.manual_seed(seed)
    d, h, ff, n = cfg["d_model"], cfg["n_heads"], cfg["d_ff"], cfg["n_layers"]
    eps = cfg["layer_norm_eps"]
    layer = torch.nn.TransformerEncoderLayer(d, h, ff, dropout=0.0,
                                             activation=cfg["activation"], layer_norm_eps=eps,
                                             batch_first=True, norm_first=cfg["norm_first"])
    enc = torch.nn.TransformerEncoder(
        layer, n, norm=torch.nn.LayerNorm(d, eps=eps) if cfg["final_norm"] else None,
        enable_nested_tensor=False).double()
    randomize(enc)
    enc.train()
    bsz, length = len(pads), 8
    pad = padding(bsz, length, pads)
    mask = causal_mask(length) if cfg["causal"] else None
    tensors = dict(enc.state_dict())
    with torch.no_grad():
        if with_vocab:
            vocab = cfg["vocab_size"]
            embed = torch.nn.Embedding(vocab, d).double()
            head = torch.nn.Linear(d, vocab).double()
            randomize(embed, 1.0)
            randomize(head)
            ids = torch.randint(0, vocab, (bsz, length))
            out = enc(embed(ids), mask=mask, src_key_padding_mask=pad)
            logits = head(out)
            tensors.update({"embed.weight": embed.weight, "head.weight": head.weight,
                            "head.bias": head.bias, "input_ids": ids, "logits": logits})
        else:
            x = torch.randn(bsz, length, d, dtype=torch.float64)
            out = enc(x, mask=mask, src_key_padding_mask=pad)
            tensors["input"] = x
    tensors.update(padding_mask=pad.to(torch.uint8), output=out)
    save(os.path.join(out_dir, f"none_encoder_{name}.safetensors"), tensors, cfg)


def golden_reference(out_dir, name, position, length, batch=2, pads=None, n_layers=2,
                     d_model=16, n_heads=2, causal=False, position_ids=None, seed=20,
                     norm_first=False):
    """The whole stack with a position type, from reference.py's RefEncoder."""
    torch.manual_seed(seed)
    cfg = {"d_model": d_model, "n_heads": n_heads, "n_layers": n_layers, "d_ff": 2 * d_model,
           "activation": "gelu" if norm_first else "relu", "norm_first": norm_first,
           "final_norm": norm_first, "causal": causal, "position": position}
    model = RefEncoder(cfg).double()
    randomize(model)
    x = torch.randn(batch, length, d_model, dtype=torch.float64)
    tensors = dict(model.state_dict())
    pad = None if pads is None else padding(batch, length, pads)
    with torch.no_grad():
        out, _ = model(x, padding_mask=pad, position_ids=position_ids)
    tensors.update(input=x, output=out)
    if pad is not None:
        tensors["padding_mask"] = pad.to(torch.uint8)
    if position_ids is not None:
        tensors["position_ids"] = position_ids.to(torch.int64)
    save(os.path.join(out_dir, f"{name}.safetensors"), tensors, cfg)


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "attention")
    os.makedirs(out_dir, exist_ok=True)
    torch.set_default_dtype(torch.float64)
    print("golden attention data ->", os.path.abspath(out_dir))

    # ---- none: torch's own modules ----
    golden_mha(out_dir)
    golden_layer(out_dir, "post_relu", False, "relu", 1e-5)
    golden_layer(out_dir, "pre_gelu", True, "gelu", 1e-6)
    base = {"d_model": 16, "n_heads": 4, "n_layers": 2, "d_ff": 32, "layer_norm_eps": 1e-5}
    golden_encoder(out_dir, "post_relu", dict(base, activation="relu", norm_first=False,
                                              final_norm=False, causal=False),
                   [0, 3], False, 12)
    golden_encoder(out_dir, "pre_gelu_final_causal",
                   dict(base, activation="gelu", norm_first=True, final_norm=True, causal=True,
                        layer_norm_eps=1e-6), [2, 0, 5], False, 13)
    golden_encoder(out_dir, "vocab_head", dict(base, activation="gelu", norm_first=False,
                                               final_norm=True, causal=False, vocab_size=11,
                                               output_head=True), [0, 1], True, 14)

    # ---- every position type through the stack: reference.py ----
    sin = {"type": "sinusoidal"}
    cases = [
        ("sinusoidal_keys_len7", dict(sin), 7, dict(pads=[0, 2])),
        ("sinusoidal_keys_values_clamped_len7",
         dict(sin, values=True, max_distance=3), 7, dict(causal=True, pads=[1, 0])),
        ("sinusoidal_keys_values_len64", dict(sin, values=True), 64, dict(batch=1)),
        ("sinusoidal_values_only_len7", dict(sin, keys=False, values=True), 7, {}),
        ("sinusoidal_keys_clamped_len300", dict(sin, max_distance=32), 300,
         dict(batch=1, n_layers=1)),
        ("sinusoidal_keys_values_position_ids_len7", dict(sin, values=True), 7,
         dict(position_ids=torch.tensor([[0, 1, 2, 0, 1, 2, 3], [5, 6, 7, 8, 9, 10, 11]]))),
        ("learned_keys_len7", {"type": "learned", "max_distance": 4, "values": False}, 7,
         dict(pads=[0, 3])),
        ("learned_values_len7", {"type": "learned", "max_distance": 4, "keys": False}, 7, {}),
        ("learned_both_len1", {"type": "learned", "max_distance": 2}, 1, {}),
        ("learned_both_len64", {"type": "learned", "max_distance": 8}, 64,
         dict(batch=1, norm_first=True)),
        ("learned_both_clamped_len300", {"type": "learned", "max_distance": 16}, 300,
         dict(batch=1, n_layers=1, causal=True)),
        ("rotary_half_len7", {"type": "rotary"}, 7, dict(pads=[0, 2])),
        ("rotary_interleaved_partial_len64",
         {"type": "rotary", "interleaved": True, "rotary_dim": 4}, 64, dict(batch=1)),
        ("rotary_half_partial_position_ids_len7", {"type": "rotary", "rotary_dim": 4}, 7,
         dict(position_ids=torch.tensor([[3, 4, 5, 6, 7, 8, 9], [0, 0, 0, 1, 2, 3, 4]]))),
        ("rotary_half_len1", {"type": "rotary"}, 1, {}),
        ("absolute_len7", {"type": "absolute"}, 7, dict(pads=[0, 1])),
        ("absolute_len64", {"type": "absolute"}, 64, dict(batch=1, norm_first=True)),
        ("additive_sinusoidal_len7", {"type": "additive", "source": "sinusoidal", "window": 2},
         7, {}),
        ("additive_learned_len64",
         {"type": "additive", "source": "learned", "window": 3, "max_distance": 2}, 64,
         dict(batch=1)),
    ]
    for i, (name, position, length, kw) in enumerate(cases):
        golden_reference(out_dir, name, position, length, seed=30 + i, **kw)


if __name__ == "__main__":
    main()
