# SPDX-License-Identifier: MIT
"""Export golden model folders for the C++ encoder tests (spec/model-format.md §1, §5).

Each folder tests/data/models/<name>/ holds
  config.json        the hyper-parameters (§1; defaults left out where the table gives them)
  model.safetensors  the weights, F32 (written by tools/safetensors_py.py)
  io.safetensors     `input` (F32 [batch, len, d_model]) or `input_ids` (I64 [batch, len]),
                     optional `padding_mask` (U8) and `position_ids` (I64), and the expected
                     `output` (F64 [batch, len, d_model]) and `logits` (F64, with an output
                     head); the metadata entry "description" says what the case covers.

The expected numbers are computed in float64 from the F32-rounded weights and inputs, so a
C++ float path can be compared within ~1e-5 and a double path much tighter. They come from
  (a) torch.nn.TransformerEncoder itself (its state dict saved as-is, position type none);
  (b) tools/reference.py's RefEncoder for every position type and option.
tests/data/models/index.json lists every case: its description, position type and wave
(2 = the spec's second wave: t5, alibi, xl, rotary scaling; 3 = the third: kerple).

    /usr/bin/python3 tools/export_models.py [--out tests/data/models]
"""

import argparse
import json
import os
import shutil
import sys
import zlib

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_py  # noqa: E402
from reference import RefEncoder  # noqa: E402

SMALL = {"d_model": 16, "n_heads": 2, "n_layers": 2, "d_ff": 32}


def _seed(name):
    """A fixed seed per case, so adding a case does not change the others."""
    return zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF


def _perturb(module):
    """Make every bias and norm parameter non-trivial: zero biases and unit LayerNorm
    weights would hide a missing or misplaced term."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("bias", "in_proj_bias") or ".norm" in name or name.startswith("norm"):
                p.add_(0.2 * torch.randn_like(p))


def _round_to_f32(module):
    """Round every parameter to float32 and back, so float64 math uses the stored weights."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.float().double())


def _inputs(cfg, batch, length, mask_rows, position_ids, mask_list=None):
    """(model input, io tensors): random F32 vectors or token ids; padding mask with the
    last `n` keys of row b padded for each (b, n) in mask_rows, or `mask_list` as given."""
    io = {}
    if cfg.get("vocab_size"):
        ids = torch.randint(0, cfg["vocab_size"], (batch, length), dtype=torch.int64)
        io["input_ids"] = ids
        x = ids
    else:
        x32 = torch.randn(batch, length, cfg["d_model"]).float()
        io["input"] = x32
        x = x32.double()
    mask = None
    if mask_list is not None:
        mask = torch.tensor(mask_list, dtype=torch.uint8)
        io["padding_mask"] = mask
    elif mask_rows:
        mask = torch.zeros(batch, length, dtype=torch.uint8)
        for b, n in mask_rows:
            if n > 0:
                mask[b, length - n:] = 1
        io["padding_mask"] = mask
    pos = None
    if position_ids is not None:
        pos = torch.tensor(position_ids, dtype=torch.int64)
        io["position_ids"] = pos
    return x, mask, pos, io


def _write(out_dir, name, config, weights, io, description):
    folder = os.path.join(out_dir, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    safetensors_py.save_file({k: v.detach().float() for k, v in weights.items()},
                             os.path.join(folder, "model.safetensors"))
    safetensors_py.save_file(io, os.path.join(folder, "io.safetensors"),
                             metadata={"description": description})
    # read back: the files hold what we meant
    back = safetensors_py.load_file(os.path.join(folder, "model.safetensors"))
    assert set(back) == set(weights), name
    for k, v in weights.items():
        assert (torch.from_numpy(back[k]).double() == v.double()).all(), (name, k)


def export_torch_encoder(out_dir, name, norm_first, activation, final_norm, eps):
    """Case (a): a real torch.nn.TransformerEncoder, state dict saved as-is, type none."""
    torch.manual_seed(_seed(name))
    d, h, ff, n = 16, 2, 32, 2
    layer = torch.nn.TransformerEncoderLayer(d, h, ff, dropout=0.0, activation=activation,
                                             batch_first=True, norm_first=norm_first,
                                             layer_norm_eps=eps)
    enc = torch.nn.TransformerEncoder(
        layer, n, norm=torch.nn.LayerNorm(d, eps=eps) if final_norm else None,
        enable_nested_tensor=False).double()
    _perturb(enc)
    _round_to_f32(enc)
    enc.train()  # dropout is 0; train mode keeps torch on its plain (non-fused) path
    config = {"d_model": d, "n_heads": h, "n_layers": n, "d_ff": ff, "activation": activation,
              "norm_first": norm_first, "layer_norm_eps": eps, "final_norm": final_norm,
              "position": {"type": "none"}}
    x, mask, _, io = _inputs(config, 2, 7, [(1, 3)], None)
    with torch.no_grad():
        want = enc(x, src_key_padding_mask=mask.bool())
        ref = RefEncoder(config).double()
        ref.load_state_dict(enc.state_dict(), strict=True)
        got, _ = ref(x, padding_mask=mask)
    err = (want - got).abs().max().item()
    assert err < 1e-12, f"{name}: reference and torch differ by {err}"
    io["output"] = want
    _write(out_dir, name, config, enc.state_dict(), io,
           f"torch.nn.TransformerEncoder (norm_first={norm_first}, {activation}, "
           f"final_norm={final_norm}, eps={eps}), state dict as-is, batch 2 len 7, "
           "row 1 has its last 3 keys padded; expected output from torch itself")
    return err


def export_reference(out_dir, name, config, description, batch=2, length=7,
                     mask_rows=((1, 2),), position_ids=None, mask=None):
    """Case (b): tools/reference.py's RefEncoder with random weights. Returns the largest
    difference between a float32 run of the same model and the float64 expected output
    (what a float path can hope for)."""
    torch.manual_seed(_seed(name))
    model = RefEncoder(config).double()
    _perturb(model)
    _round_to_f32(model)
    x, mask, pos, io = _inputs(config, batch, length, list(mask_rows), position_ids, mask)
    with torch.no_grad():
        out, logits = model(x, padding_mask=mask, position_ids=pos)
        out32, _ = model.float()(x.float() if x.is_floating_point() else x,
                                 padding_mask=mask, position_ids=pos)
        model.double()
    assert torch.isfinite(out).all(), name
    f32_err = (out32.double() - out).abs().max().item()
    io["output"] = out
    if logits is not None:
        io["logits"] = logits
    _write(out_dir, name, config, model.state_dict(), io, description)
    return f32_err


def cases():
    """(name, config, description, keyword arguments of export_reference)."""
    def cfg(position, **top):
        return dict(SMALL, **top, position=position)

    left_pad = [[0, 0, 0, 0, 1, 2, 3], [5, 6, 7, 8, 9, 10, 11]]
    packed = [[0, 1, 2, 0, 1, 2, 3], [9, 3, 0, 4, 4, 1, 12]]
    out = [
        # first wave ------------------------------------------------------------------
        ("sinusoidal_keys", cfg({"type": "sinusoidal"}),
         "relative sinusoid on keys, unclamped", {}),
        ("sinusoidal_keys_values", cfg({"type": "sinusoidal", "keys": True, "values": True,
                                        "base": 100.0}, norm_first=True, final_norm=True),
         "relative sinusoid on keys and values, base 100, pre-norm, final norm", {}),
        ("sinusoidal_values_clamped", cfg({"type": "sinusoidal", "keys": False,
                                           "values": True, "max_distance": 2}),
         "relative sinusoid on values only, clamped at K=2", {}),
        ("sinusoidal_clamped", cfg({"type": "sinusoidal", "max_distance": 3},
                                   activation="gelu"),
         "relative sinusoid on keys, clamped at K=3, gelu", {}),
        ("learned_keys", cfg({"type": "learned", "max_distance": 3, "values": False}),
         "Shaw learned keys only, K=3", {}),
        ("learned_values", cfg({"type": "learned", "max_distance": 3, "keys": False}),
         "Shaw learned values only, K=3", {}),
        ("learned_both", cfg({"type": "learned", "max_distance": 4}, norm_first=True,
                             activation="gelu", layer_norm_eps=1e-6),
         "Shaw learned keys and values, K=4, pre-norm gelu, eps 1e-6", {}),
        ("learned_k0", cfg({"type": "learned", "max_distance": 0}),
         "Shaw learned with K=0: one row for every distance", {}),
        ("learned_len1", cfg({"type": "learned", "max_distance": 2}),
         "length 1 (a single token attends to itself), no mask",
         {"length": 1, "mask_rows": ()}),
        ("learned_long_clamped", cfg({"type": "learned", "max_distance": 16}),
         "length 300 with clamping at K=16, row 1 padded from 260",
         {"length": 300, "mask_rows": ((1, 40),)}),
        ("rotary_half", cfg({"type": "rotary"}), "rotary, GPT-NeoX half pairing, full d_head",
         {}),
        ("rotary_interleaved", cfg({"type": "rotary", "interleaved": True, "base": 500.0}),
         "rotary, GPT-J interleaved pairing, base 500", {}),
        ("rotary_partial", cfg({"type": "rotary", "rotary_dim": 4}, n_heads=1, d_model=16),
         "rotary on 4 of 16 components (half pairing), one head", {}),
        ("rotary_partial_interleaved", cfg({"type": "rotary", "rotary_dim": 6,
                                            "interleaved": True}, d_model=24, n_heads=2),
         "rotary on 6 of 12 components, interleaved", {}),
        ("rotary_len64", cfg({"type": "rotary"}, norm_first=True, final_norm=True),
         "rotary at length 64, pre-norm with final norm",
         {"length": 64, "mask_rows": ((0, 10),)}),
        ("rotary_causal", cfg({"type": "rotary"}, causal=True),
         "rotary, causal, row 1 padded", {}),
        ("rotary_position_ids", cfg({"type": "rotary"}),
         "rotary with explicit position ids (left padding and an offset)",
         {"position_ids": left_pad, "mask_rows": ()}),
        ("rotary_causal_left_padded", cfg({"type": "rotary"}, causal=True),
         "rotary, causal, left padding with position ids: queries before the first real "
         "token of row 0 see no key (z = 0, attention output = out_proj bias)",
         {"position_ids": left_pad, "mask": [[1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]]}),
        ("sinusoidal_fully_padded_row", cfg({"type": "sinusoidal", "values": True}),
         "row 1 fully padded: every query of it sees no key (never NaN)",
         {"mask_rows": ((0, 1), (1, 7))}),
        ("absolute", cfg({"type": "absolute"}), "absolute sinusoid added to the input", {}),
        ("absolute_position_ids", cfg({"type": "absolute", "base": 1000.0}, causal=True),
         "absolute sinusoid, base 1000, explicit non-monotonic position ids, causal",
         {"position_ids": packed}),
        ("additive_sinusoidal", cfg({"type": "additive", "source": "sinusoidal",
                                     "window": 2}),
         "additive sum of sinusoids over a window of 2, unclamped", {}),
        ("additive_sinusoidal_clamped", cfg({"type": "additive", "source": "sinusoidal",
                                             "window": 3, "max_distance": 1, "base": 50.0}),
         "additive sinusoid, window 3, clamped at 1, base 50", {}),
        ("additive_learned", cfg({"type": "additive", "source": "learned", "window": 3,
                                  "max_distance": 2}),
         "additive learned rows (position.weight), window 3, K=2", {}),
        ("none_ids_head", cfg({"type": "none"}, vocab_size=50, output_head=True,
                              final_norm=True),
         "token ids through embed.weight, final norm, output head (logits)", {}),
        ("sinusoidal_position_ids", cfg({"type": "sinusoidal", "max_distance": 5,
                                         "values": True}),
         "relative sinusoid with non-monotonic explicit position ids (packed rows)",
         {"position_ids": packed}),
        ("learned_ids_head_position_ids", cfg({"type": "learned", "max_distance": 3},
                                              vocab_size=40, output_head=True, causal=True),
         "token ids, output head, causal, learned K=3, explicit position ids",
         {"position_ids": left_pad}),
        # second wave -----------------------------------------------------------------
        ("t5_bidirectional", cfg({"type": "t5", "num_buckets": 8, "max_distance": 6}),
         "T5 buckets, bidirectional, 8 buckets, max_distance 6", {}),
        ("t5_causal", cfg({"type": "t5"}, causal=True),
         "T5 buckets, causal (bidirectional defaults to false), 32/128", {}),
        ("t5_long", cfg({"type": "t5", "num_buckets": 16, "max_distance": 64}),
         "T5 buckets at length 300 (distances past max_distance)",
         {"batch": 1, "length": 300, "mask_rows": ()}),
        ("t5_position_ids", cfg({"type": "t5", "bidirectional": True}, causal=True),
         "T5 bidirectional buckets in a causal model, explicit position ids",
         {"position_ids": packed}),
        ("alibi", cfg({"type": "alibi"}, n_heads=4),
         "ALiBi, 4 heads, max_bias 8", {}),
        ("alibi_3heads", cfg({"type": "alibi", "max_bias": 4.0}, d_model=24, n_heads=3,
                             causal=True),
         "ALiBi, 3 heads (not a power of two), max_bias 4, causal", {}),
        ("xl", cfg({"type": "xl"}), "Transformer-XL, unclamped", {}),
        ("xl_clamped", cfg({"type": "xl", "max_distance": 3, "base": 100.0},
                           norm_first=True),
         "Transformer-XL clamped at 3, base 100, pre-norm, explicit position ids",
         {"position_ids": packed}),
        ("rotary_linear", cfg({"type": "rotary", "scaling": {"type": "linear",
                                                             "factor": 4.0}}),
         "rotary, linear scaling 4", {}),
        ("rotary_ntk", cfg({"type": "rotary", "scaling": {"type": "ntk", "factor": 8.0}}),
         "rotary, NTK-aware scaling 8", {}),
        ("rotary_dynamic", cfg({"type": "rotary", "scaling": {
            "type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 4}}),
         "rotary, dynamic NTK scaling 2 with L0 4 < len 7", {}),
        ("rotary_dynamic_position_ids", cfg({"type": "rotary", "scaling": {
            "type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 8}}),
         "rotary, dynamic scaling: call length 12 from the largest position id 11 > L0 8",
         {"position_ids": left_pad}),
        ("rotary_yarn", cfg({"type": "rotary", "rotary_dim": 8, "scaling": {
            "type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}}),
         "rotary, YaRN factor 4, L0 64, default betas and attention factor", {}),
        ("rotary_yarn_mscale", cfg({"type": "rotary", "base": 500.0, "interleaved": True,
                                    "scaling": {
                                        "type": "yarn", "factor": 8.0,
                                        "original_max_position_embeddings": 32,
                                        "beta_fast": 16.0, "beta_slow": 2.0, "mscale": 1.0,
                                        "mscale_all_dim": 0.5, "truncate": False}}),
         "rotary interleaved, YaRN with mscale/mscale_all_dim, untruncated", {}),
        ("rotary_yarn_attention_factor", cfg({"type": "rotary", "scaling": {
            "type": "yarn", "factor": 2.0, "original_max_position_embeddings": 16,
            "attention_factor": 0.8}}),
         "rotary, YaRN with an explicit attention_factor 0.8", {}),
        ("rotary_llama3", cfg({"type": "rotary", "base": 10000.0, "scaling": {
            "type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}),
         "rotary, llama3 scaling 8, L0 64 (all three frequency bands)", {}),
        ("rotary_longrope_short", cfg({"type": "rotary", "scaling": {
            "type": "longrope", "short_factor": [1.0, 1.5, 2.0, 3.0],
            "long_factor": [2.0, 4.0, 8.0, 16.0], "original_max_position_embeddings": 16,
            "max_position_embeddings": 64}}),
         "rotary, LongRoPE with len 7 <= L0 16: short factors, derived attention factor",
         {}),
        ("rotary_longrope_long", cfg({"type": "rotary", "scaling": {
            "type": "longrope", "short_factor": [1.0, 1.5, 2.0, 3.0],
            "long_factor": [2.0, 4.0, 8.0, 16.0], "original_max_position_embeddings": 4,
            "max_position_embeddings": 4, "attention_factor": 1.25}}),
         "rotary, LongRoPE with len 7 > L0 4: long factors, explicit attention factor", {}),
        # third wave -----------------------------------------------------------------
        ("kerple_log", cfg({"type": "kerple", "form": "log"}, n_heads=4),
         "KERPLE log kernel, 4 heads, r1 and r2 shared by both layers", {}),
        ("kerple_power_causal", cfg({"type": "kerple", "form": "power"}, causal=True,
                                    norm_first=True),
         "KERPLE power kernel, causal, pre-norm, explicit position ids",
         {"position_ids": packed}),
    ]
    return out


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(here, "..", "tests", "data", "models"))
    args = parser.parse_args(argv)
    out_dir = os.path.normpath(args.out)
    if os.path.isdir(out_dir):
        for entry in os.listdir(out_dir):  # only folders this script writes
            path = os.path.join(out_dir, entry)
            if os.path.isfile(os.path.join(path, "io.safetensors")):
                shutil.rmtree(path)
    os.makedirs(out_dir, exist_ok=True)

    index = {}
    for name, nf, act, fn, eps in (("torch_post_relu", False, "relu", False, 1e-5),
                                   ("torch_pre_gelu_final", True, "gelu", True, 1e-6)):
        err = export_torch_encoder(out_dir, name, nf, act, fn, eps)
        index[name] = {"description": safetensors_py.load_metadata(
            os.path.join(out_dir, name, "io.safetensors"))["description"],
            "position": "none", "wave": 1}
        print(f"{name}: reference vs torch {err:.1e}")
    worst = 0.0
    for name, config, description, kw in cases():
        f32_err = export_reference(out_dir, name, config, description, **kw)
        ptype = config["position"]["type"]
        second = ptype in ("t5", "alibi", "xl") or "scaling" in config["position"]
        index[name] = {"description": description, "position": ptype,
                       "wave": 3 if ptype == "kerple" else 2 if second else 1}
        worst = max(worst, f32_err)
        print(f"{name}: float32 run differs by {f32_err:.1e}; {description}")
    with open(os.path.join(out_dir, "index.json"), "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(out_dir)
                for f in fs)
    print(f"{len(index)} models, {total / 1e6:.2f} MB in {out_dir}; "
          f"worst float32-vs-float64 difference {worst:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
