# SPDX-License-Identifier: MIT
"""Golden data of the second-wave encodings (tests/data/t5_alibi_xl_scaling/), all from tools/reference.py
in float64 with fixed seeds:

* t5_buckets.safetensors: t5_bucket_scalar (the spec's formula line by line) for every
  distance in [-1000, 1000] at (32, 128) and (64, 200), bidirectional and causal, plus
  (8, 12) as used by the attention cases.
* alibi_slopes.safetensors: alibi_slopes for 1, 6, 8, 12, 16 heads (max_bias 8) and 5 heads
  (max_bias 4).
* rotary_scaling.safetensors: (inv_freq, attention factor) of every scaling type at the
  parameters of real models (Llama-3.1, a YaRN model, Phi-3-style LongRoPE); each case's
  scaling object, base, rotary_dim and call length are in the metadata. Each case is
  also computed by hf_style_inv_freq, a second formulation in Hugging Face's shape, and
  the two must agree to rounding before anything is written.
* attention_<case>.safetensors: one RefAttention layer (the naive einsum reference of spec
  section 3) for t5, alibi, xl and scaled rotary, with padding, causal masks and explicit
  position ids (some spread wide enough to take relpos' sparse path).

    /usr/bin/python3 tools/golden_t5_alibi_xl_scaling.py [out_dir]   # default tests/data/t5_alibi_xl_scaling
"""

import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_py  # noqa: E402
from reference import (PositionParams, RefAttention, alibi_slopes, parse_config,  # noqa: E402
                       rotary_inv_freq, t5_bucket, t5_bucket_scalar)


def save(path, tensors, metadata):
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    safetensors_py.save_file(tensors, path, metadata=metadata)
    size = os.path.getsize(path)
    assert size < 200_000, f"{path}: {size} bytes, golden files must stay small"
    print(f"  {os.path.basename(path)}: {size} bytes")


def golden_t5(out_dir):
    delta = torch.arange(-1000, 1001, dtype=torch.int64)
    tensors = {"delta": delta}
    for nb, md in ((32, 128), (64, 200), (8, 12)):
        for bi in (True, False):
            b = torch.tensor([t5_bucket_scalar(int(d), nb, md, bi) for d in delta],
                             dtype=torch.int64)
            # the tensor form used for training must agree with the line-by-line one
            assert torch.equal(b, t5_bucket(delta, nb, md, bi))
            tensors[f"bucket_{nb}_{md}_{'bi' if bi else 'causal'}"] = b
    save(os.path.join(out_dir, "t5_buckets.safetensors"), tensors, {})


def golden_alibi(out_dir):
    tensors = {f"slopes_h{n}_b8": torch.tensor(alibi_slopes(n, 8.0), dtype=torch.float64)
               for n in (1, 6, 8, 12, 16)}
    tensors["slopes_h5_b4"] = torch.tensor(alibi_slopes(5, 4.0), dtype=torch.float64)
    save(os.path.join(out_dir, "alibi_slopes.safetensors"), tensors, {})


def phi3_factors(half, seed):
    """LongRoPE-style factor arrays: rising from 1 towards the low frequencies."""
    g = torch.Generator().manual_seed(seed)
    base = torch.linspace(1.0, 1.0, half) + torch.linspace(0.0, 60.0, half) ** 1.2 / 10
    return [float(v) for v in base + 0.05 * torch.rand(half, generator=g, dtype=torch.float64)]


SCALING_CASES = {
    # name: (base, rotary_dim, scaling, call length)
    "linear": (10000.0, 64, {"type": "linear", "factor": 4.0}, 50),
    "ntk": (10000.0, 64, {"type": "ntk", "factor": 8.0}, 50),
    "dynamic_short": (10000.0, 64, {"type": "dynamic", "factor": 2.0,
                                    "original_max_position_embeddings": 2048}, 100),
    "dynamic_long": (10000.0, 64, {"type": "dynamic", "factor": 2.0,
                                   "original_max_position_embeddings": 2048}, 8000),
    "yarn": (10000.0, 128, {"type": "yarn", "factor": 4.0,
                            "original_max_position_embeddings": 4096}, 50),
    "yarn_mscale": (10000.0, 64, {"type": "yarn", "factor": 40.0,
                                  "original_max_position_embeddings": 4096, "beta_fast": 32.0,
                                  "beta_slow": 1.0, "mscale": 0.707, "mscale_all_dim": 1.0,
                                  "truncate": False}, 50),
    "yarn_factor1": (10000.0, 64, {"type": "yarn", "factor": 1.0,
                                   "original_max_position_embeddings": 4096}, 50),
    "llama3": (500000.0, 128, {"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0,
                               "original_max_position_embeddings": 8192}, 50),
    "longrope_short": (10000.0, 96, {"type": "longrope", "short_factor": phi3_factors(48, 1),
                                     "long_factor": phi3_factors(48, 2),
                                     "original_max_position_embeddings": 4096,
                                     "max_position_embeddings": 131072}, 4096),
    "longrope_long": (10000.0, 96, {"type": "longrope", "short_factor": phi3_factors(48, 1),
                                    "long_factor": phi3_factors(48, 2),
                                    "original_max_position_embeddings": 4096,
                                    "max_position_embeddings": 131072}, 4097),
}


def scaled_position(base, r, scaling):
    cfg = parse_config({"d_model": r, "n_heads": 1, "n_layers": 1, "d_ff": 1,
                        "position": {"type": "rotary", "base": base, "scaling": scaling}})
    return cfg["position"]


def hf_style_inv_freq(base, r, sc, length):
    """A second, independent formulation of the scalings in the shape Hugging Face
    transformers' modeling_rope_utils.py computes them (inverse of base^(arange(0, r, 2)/r),
    YaRN as interpolation/extrapolation blended by 1 - ramp, Llama 3 by wavelength masks,
    LongRoPE's factor from max_position_embeddings / L0), used to cross-check
    reference.rotary_inv_freq: the two must agree to rounding."""
    exponent = torch.arange(0, r, 2, dtype=torch.float64) / r
    t = sc["type"]
    if t == "ntk":
        base = base * sc["factor"] ** (r / (r - 2))
    if t == "dynamic":
        l0 = sc["original_max_position_embeddings"]
        seq = max(length, l0)
        base = base * (sc["factor"] * seq / l0 - (sc["factor"] - 1)) ** (r / (r - 2))
    pos_freqs = base ** exponent
    inv = 1.0 / pos_freqs
    if t == "linear":
        return inv / sc["factor"], 1.0
    if t in ("ntk", "dynamic"):
        return inv, 1.0
    if t == "yarn":
        s, l0 = sc.get("factor"), sc["original_max_position_embeddings"]

        def mscale(scale, m=1.0):
            return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0
        if sc.get("attention_factor") is not None:
            att = sc["attention_factor"]
        elif sc.get("mscale") and sc.get("mscale_all_dim"):
            att = mscale(s, sc["mscale"]) / mscale(s, sc["mscale_all_dim"])
        else:
            att = mscale(s)

        def correction_dim(rotations):
            return (r * math.log(l0 / (rotations * 2 * math.pi))) / (2 * math.log(base))
        low = correction_dim(sc.get("beta_fast", 32.0))
        high = correction_dim(sc.get("beta_slow", 1.0))
        if sc.get("truncate", True):
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, r - 1)
        if low == high:
            high += 0.001
        ramp = torch.clamp((torch.arange(r // 2, dtype=torch.float64) - low) / (high - low), 0, 1)
        extrapolation_factor = 1 - ramp
        interpolation, extrapolation = 1.0 / (s * pos_freqs), 1.0 / pos_freqs
        return (interpolation * (1 - extrapolation_factor)
                + extrapolation * extrapolation_factor), att
    if t == "llama3":
        s, l0 = sc["factor"], sc["original_max_position_embeddings"]
        low_wavelen = l0 / sc.get("low_freq_factor", 1.0)
        high_wavelen = l0 / sc.get("high_freq_factor", 4.0)
        wavelen = 2 * math.pi / inv
        out = torch.where(wavelen > low_wavelen, inv / s, inv)
        smooth = (l0 / wavelen - sc.get("low_freq_factor", 1.0)) / (
            sc.get("high_freq_factor", 4.0) - sc.get("low_freq_factor", 1.0))
        smoothed = (1 - smooth) * out / s + smooth * out
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return torch.where(medium, smoothed, out), 1.0
    assert t == "longrope"
    l0 = sc["original_max_position_embeddings"]
    ext = torch.tensor(sc["long_factor"] if length > l0 else sc["short_factor"],
                       dtype=torch.float64)
    inv = 1.0 / (ext * pos_freqs)
    factor = sc["max_position_embeddings"] / l0
    att = sc.get("attention_factor")
    if att is None:
        att = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(l0))
    return inv, att


def golden_rotary_scaling(out_dir):
    tensors, meta = {}, {}
    for name, (base, r, scaling, length) in SCALING_CASES.items():
        inv, att = rotary_inv_freq(scaled_position(base, r, scaling), length)
        inv2, att2 = hf_style_inv_freq(base, r, scaling, length)
        assert torch.allclose(inv, inv2, rtol=1e-14, atol=0), name
        assert abs(att - att2) <= 1e-15 * att, name
        tensors[f"{name}.inv_freq"] = inv.to(torch.float64)
        tensors[f"{name}.attention_factor"] = torch.tensor([att], dtype=torch.float64)
        meta[name] = json.dumps({"base": base, "rotary_dim": r, "scaling": scaling,
                                 "length": length})
    save(os.path.join(out_dir, "rotary_scaling.safetensors"), tensors, meta)


def golden_attention(out_dir, name, position, causal=False, d=16, h=4, bsz=2, length=9,
                     pads=(0, 3), position_ids=None, seed=0, scale=0.4):
    torch.manual_seed(seed)
    torch.set_default_dtype(torch.float64)
    cfg = parse_config({"d_model": d, "n_heads": h, "n_layers": 1, "d_ff": 4, "causal": causal,
                        "position": position})
    attn, shared = RefAttention(cfg).double(), PositionParams(cfg).double()
    with torch.no_grad():
        for p in list(attn.parameters()) + list(shared.parameters()):
            p.copy_(torch.randn_like(p) * scale)
        if cfg["position"]["type"] == "kerple":
            # back inside the domain of §4: r1, r2 in [0.05, 2] (r2 <= 2 for the power form)
            for p in (shared.kerple_r1, shared.kerple_r2):
                p.copy_(0.05 + 1.95 * torch.rand_like(p))
    x = torch.randn(bsz, length, d, dtype=torch.float64)
    pad = torch.zeros(bsz, length, dtype=torch.bool)
    for b, n in enumerate(pads):
        if n:
            pad[b, length - n:] = True
    visible = (~pad)[:, None, :].expand(bsz, length, length).clone()
    if causal:
        visible &= torch.tril(torch.ones(length, length, dtype=torch.bool))
    positions = (torch.arange(length).expand(bsz, length).clone() if position_ids is None
                 else torch.tensor(position_ids, dtype=torch.int64))
    rotary = None
    if cfg["position"]["type"] == "rotary":
        rotary = rotary_inv_freq(cfg["position"], int(positions.max()) + 1)
    with torch.no_grad():
        out, _ = attn(x, visible, positions, rotary, shared)
    tensors = {f"self_attn.{k}": v for k, v in attn.state_dict().items()}
    tensors.update({f"position.{k}": v for k, v in shared.state_dict().items()})
    tensors.update(input=x, padding_mask=pad.to(torch.uint8), output=out)
    if position_ids is not None:
        tensors["position_ids"] = positions
    save(os.path.join(out_dir, f"attention_{name}.safetensors"), tensors,
         {"config": json.dumps(cfg)})
    torch.set_default_dtype(torch.float32)


def main(argv):
    out_dir = argv[1] if len(argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "t5_alibi_xl_scaling")
    os.makedirs(out_dir, exist_ok=True)
    golden_t5(out_dir)
    golden_alibi(out_dir)
    golden_rotary_scaling(out_dir)
    sparse_ids = [[0, 3, 90, 91, 400, 401, 402, 1000, 1003], [5, 4, 3, 2, 1, 0, 700, 2, 9]]
    t5 = {"type": "t5", "num_buckets": 8, "max_distance": 12}
    golden_attention(out_dir, "t5_bi", t5, length=30, seed=1)
    golden_attention(out_dir, "t5_causal", t5, causal=True, length=30, seed=2)
    golden_attention(out_dir, "t5_32_128_ids", {"type": "t5"}, position_ids=sparse_ids, seed=3)
    golden_attention(out_dir, "alibi_h6", {"type": "alibi"}, h=6, d=18, length=20, seed=4)
    golden_attention(out_dir, "alibi_causal_b4", {"type": "alibi", "max_bias": 4.0}, causal=True,
                     length=20, seed=5)
    golden_attention(out_dir, "alibi_sparse_ids", {"type": "alibi"}, position_ids=sparse_ids,
                     seed=6)
    golden_attention(out_dir, "xl", {"type": "xl"}, length=20, seed=7)
    golden_attention(out_dir, "xl_clamped_causal", {"type": "xl", "max_distance": 5},
                     causal=True, length=20, seed=8)
    golden_attention(out_dir, "xl_sparse_ids", {"type": "xl", "base": 500.0},
                     position_ids=sparse_ids, seed=9)
    for name in ("linear", "dynamic_long", "yarn", "llama3", "longrope_long"):
        base, _, scaling, _ = SCALING_CASES[name]
        r = 8
        if scaling["type"] == "longrope":
            scaling = dict(scaling, short_factor=scaling["short_factor"][:r // 2],
                           long_factor=scaling["long_factor"][:r // 2],
                           original_max_position_embeddings=16)
        if scaling["type"] in ("dynamic", "yarn", "llama3"):
            scaling = dict(scaling, original_max_position_embeddings=16)
        ids = [[3 * i for i in range(9)], [40 - 4 * i for i in range(9)]]
        # weights at 0.3 as tools/golden_attention.py: at 0.4 the longrope case's softmax is
        # so peaked that PyTorch's own float32 forward is 2.2e-5 off its float64 one
        golden_attention(out_dir, f"rotary_{name}",
                         {"type": "rotary", "base": base, "rotary_dim": r, "scaling": scaling},
                         d=24, h=2, position_ids=ids, seed=20, scale=0.3)


if __name__ == "__main__":
    main(sys.argv)
