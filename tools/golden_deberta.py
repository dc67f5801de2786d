# SPDX-License-Identifier: MIT
"""Golden data of the deberta position type (spec §7, "Position type `deberta`";
tests/data/deberta/), in float64 with fixed seeds:

* bucket.safetensors: c = clamp(S - bucket(delta), 0, 2S - 1) for every delta in
  [-1100, 1100] and far ones, at (S, M) = (256, 512), (8, 20) and (2, 3), from the spec's
  formula one scalar at a time (Python floats are doubles).
* attention_<case>.safetensors: one attention layer of the spec's score
      e_ij = (q_i.k_j + [c2p] q_i.Pk_h(c_ij) + [p2c] k_j.Pq_h(c_ij)) / sqrt(d_head (1 + c2p + p2c))
  written here with torch (gathers over a (len x len) index, the naive way), with the
  relpos model-file names: layers.0.self_attn.{in_proj_weight, in_proj_bias, out_proj.*,
  pos_key_proj.*, pos_query_proj.*}, position.rel_embeddings, position.rel_norm.*; input,
  padding_mask (1 = padded key), optional position_ids, output; metadata "config".
  Cases: c2p+p2c, c2p only, p2c only, separate projections (share_att_key false), no
  rel_norm, lengths beyond M (log buckets and the edge rows), padding, a causal mask, spread
  position ids (relpos' sparse path) and the spec's defaults S 256, M 512 (plain positions
  within ±S/2: relpos' banded path).

Self-check (run by default, --no-hf to skip): when Hugging Face transformers 4.40's source
is at /work/hf_src (or --hf-src DIR), its DisentangledSelfAttention (modeling_deberta_v2.py,
imported with tools/hf_source.py's small stubs for the package's utilities, never copied) is run in float64 on
the plain-position cases with the same weights, and its context layer must equal ours
before out_proj on the unpadded rows (HF zeroes padded query rows). HF's bucket in float64
must equal ours for every delta of bucket.safetensors' (256, 512) table. HF rounds its scale
sqrt(d_head (1 + c2p + p2c)) in float32, hence a 1e-6 relative tolerance there.

    /usr/bin/python3 tools/golden_deberta.py [out_dir] [--no-hf] [--hf-src DIR]
"""

import json
import math
import os
import sys
import types

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_source  # noqa: E402
import safetensors_py  # noqa: E402


def save(path, tensors, metadata):
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    safetensors_py.save_file(tensors, path, metadata=metadata)
    size = os.path.getsize(path)
    assert size < 200_000, f"{path}: {size} bytes, golden files must stay small"
    print(f"  {os.path.basename(path)}: {size} bytes")


def bucket(x, s, m):
    """The spec's bucket(x) in double."""
    mid = s // 2
    if abs(x) <= mid:
        return x
    b = mid + math.ceil(math.log(abs(x) / mid) / math.log((m - 1) / mid) * (mid - 1))
    return b if x > 0 else -b


def row(delta, s, m):
    return min(max(s - bucket(delta, s, m), 0), 2 * s - 1)


CHECK_VALUES = {0: 256, 1: 255, -1: 257, 128: 128, 129: 127, 300: 49, 511: 1, 512: 0, 4000: 0,
                -300: 463, -511: 511}


def golden_bucket(out_dir):
    for delta, c in CHECK_VALUES.items():
        assert row(delta, 256, 512) == c, (delta, row(delta, 256, 512), c)
    far = [1500, 4000, 65536, 10 ** 6, 10 ** 9]
    deltas = sorted([-d for d in far] + list(range(-1100, 1101)) + far)
    tensors = {"delta": torch.tensor(deltas, dtype=torch.int64)}
    for s, m in ((256, 512), (8, 20), (2, 3)):
        tensors[f"row_{s}_{m}"] = torch.tensor([row(d, s, m) for d in deltas], dtype=torch.int64)
    save(os.path.join(out_dir, "bucket.safetensors"), tensors, {})
    return deltas


def deberta_attention(w, pos, x, pad, positions, causal, eps):
    """The spec's forward of one layer, float64: returns (output, context before out_proj)."""
    s, m = pos["position_buckets"], pos["max_relative_positions"]
    c2p, p2c = pos["c2p"], pos["p2c"]
    bsz, n, d = x.shape
    h = w["n_heads"]
    dh = d // h
    rel = w["position.rel_embeddings"]
    if pos["rel_norm"]:
        rel = F.layer_norm(rel, (d,), w["position.rel_norm.weight"], w["position.rel_norm.bias"],
                           eps)
    pre = "layers.0.self_attn."
    wi, bi = w[pre + "in_proj_weight"], w[pre + "in_proj_bias"]
    qkv = x @ wi.T + bi

    def heads(t):  # [..., n, d] -> [..., h, n, dh]
        return t.view(*t.shape[:-2], t.shape[-2], h, dh).transpose(-3, -2)

    q, k, v = (heads(qkv[..., i * d:(i + 1) * d]) for i in range(3))
    if pos["share_att_key"]:
        pk = rel @ wi[d:2 * d].T + bi[d:2 * d]
        pq = rel @ wi[:d].T + bi[:d]
    else:
        pk = (rel @ w[pre + "pos_key_proj.weight"].T + w[pre + "pos_key_proj.bias"]) if c2p else None
        pq = (rel @ w[pre + "pos_query_proj.weight"].T + w[pre + "pos_query_proj.bias"]) if p2c \
            else None
    # c[b, i, j] = clamp(S - bucket(p_j - p_i), 0, 2S - 1)
    c = torch.tensor([[[row(int(positions[b, j] - positions[b, i]), s, m) for j in range(n)]
                       for i in range(n)] for b in range(bsz)], dtype=torch.int64)
    e = q @ k.transpose(-1, -2)  # [b, h, i, j]
    if c2p:
        qp = q @ heads(pk).transpose(-1, -2)  # [b, h, i, 2S]
        e = e + torch.gather(qp, -1, c[:, None].expand(bsz, h, n, n))
    if p2c:
        kp = k @ heads(pq).transpose(-1, -2)  # [b, h, j, 2S]: kp[b, h, j, c_ij]
        e = e + torch.gather(kp, -1, c.transpose(1, 2)[:, None].expand(bsz, h, n, n)).transpose(-1, -2)
    e = e / math.sqrt(dh * (1 + c2p + p2c))
    visible = (~pad)[:, None, None, :].expand(bsz, h, n, n).clone()
    if causal:
        visible &= torch.tril(torch.ones(n, n, dtype=torch.bool))
    e = e.masked_fill(~visible, float("-inf"))
    a = torch.softmax(e, -1)
    a = torch.nan_to_num(a, nan=0.0)  # a query that sees nothing gets z = 0 (spec §2)
    z = (a @ v).transpose(1, 2).reshape(bsz, n, d)
    out = z @ w[pre + "out_proj.weight"].T + w[pre + "out_proj.bias"]
    return out, z


def golden_attention(out_dir, name, position, causal=False, d=16, h=4, bsz=2, length=30,
                     pads=(0, 3), position_ids=None, seed=0, scale=0.4, eps=1e-7):
    torch.manual_seed(seed)
    pos = {"type": "deberta", "position_buckets": 256, "max_relative_positions": 512, "c2p": True,
           "p2c": True, "share_att_key": True, "rel_norm": True}
    pos.update(position)
    s = pos["position_buckets"]
    pre = "layers.0.self_attn."
    w = {pre + "in_proj_weight": torch.randn(3 * d, d), pre + "in_proj_bias": torch.randn(3 * d),
         pre + "out_proj.weight": torch.randn(d, d), pre + "out_proj.bias": torch.randn(d),
         "position.rel_embeddings": torch.randn(2 * s, d) / scale}
    if pos["rel_norm"]:
        w["position.rel_norm.weight"] = 1 + torch.randn(d) * 0.2
        w["position.rel_norm.bias"] = torch.randn(d)
    if not pos["share_att_key"]:
        for which, on in (("pos_key_proj", pos["c2p"]), ("pos_query_proj", pos["p2c"])):
            if on:
                w[f"{pre}{which}.weight"] = torch.randn(d, d)
                w[f"{pre}{which}.bias"] = torch.randn(d)
    w = {k: (v * scale).to(torch.float64) for k, v in w.items()}
    x = torch.randn(bsz, length, d, dtype=torch.float64)
    pad = torch.zeros(bsz, length, dtype=torch.bool)
    for b, n in enumerate(pads):
        if n:
            pad[b, length - n:] = True
    positions = (torch.arange(length).expand(bsz, length).clone() if position_ids is None
                 else torch.tensor(position_ids, dtype=torch.int64))
    out, z = deberta_attention(dict(w, n_heads=h), pos, x, pad, positions, causal, eps)
    cfg = {"d_model": d, "n_heads": h, "causal": causal, "layer_norm_eps": eps, "position": pos}
    tensors = dict(w)
    tensors.update(input=x, padding_mask=pad.to(torch.uint8), output=out)
    if position_ids is not None:
        tensors["position_ids"] = positions
    save(os.path.join(out_dir, f"attention_{name}.safetensors"), tensors,
         {"config": json.dumps(cfg)})
    return {"w": w, "pos": pos, "x": x, "pad": pad, "z": z, "h": h, "eps": eps, "causal": causal,
            "plain": position_ids is None}


# ---- the self-check against Hugging Face's own DisentangledSelfAttention ------------------

def import_hf_deberta(hf_src):
    """modeling_deberta_v2 from transformers' source under hf_src (tools/hf_source.py's stubs)."""
    src = os.path.join(hf_src, "transformers")
    if not os.path.exists(os.path.join(src, "models", "deberta_v2", "modeling_deberta_v2.py")):
        return None
    return hf_source.load_hf(src, [("deberta_v2", "DebertaV2")])["deberta_v2"][1]


def hf_check(hf, case, deltas):
    torch.set_default_dtype(torch.float64)  # HF's bucket divides in the default dtype
    try:
        pos, w, x, pad = case["pos"], case["w"], case["x"], case["pad"]
        d, h = x.shape[-1], case["h"]
        s, m = pos["position_buckets"], pos["max_relative_positions"]
        att_type = [t for t in ("c2p", "p2c") if pos[t]]
        cfg = types.SimpleNamespace(
            hidden_size=d, num_attention_heads=h, share_att_key=pos["share_att_key"],
            pos_att_type=att_type, relative_attention=True, position_buckets=s,
            max_relative_positions=m, max_position_embeddings=512, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0, layer_norm_eps=case["eps"])
        att = hf.DisentangledSelfAttention(cfg).double().eval()
        pre = "layers.0.self_attn."
        wi, bi = w[pre + "in_proj_weight"], w[pre + "in_proj_bias"]
        with torch.no_grad():
            for i, lin in enumerate((att.query_proj, att.key_proj, att.value_proj)):
                lin.weight.copy_(wi[i * d:(i + 1) * d])
                lin.bias.copy_(bi[i * d:(i + 1) * d])
            for which in ("pos_key_proj", "pos_query_proj"):
                if hasattr(att, which):
                    getattr(att, which).weight.copy_(w[f"{pre}{which}.weight"])
                    getattr(att, which).bias.copy_(w[f"{pre}{which}.bias"])
            rel = w["position.rel_embeddings"]
            if pos["rel_norm"]:
                ln = torch.nn.LayerNorm(d, case["eps"]).double()
                ln.weight.copy_(w["position.rel_norm.weight"])
                ln.bias.copy_(w["position.rel_norm.bias"])
                rel = ln(rel)
            n = x.shape[1]
            rel_pos = hf.build_relative_position(n, n, bucket_size=s, max_position=m)
            keep = (~pad).to(torch.int64)
            mask = keep[:, None, :, None] * keep[:, None, None, :]  # HF's get_attention_mask
            z = att(x, mask, relative_pos=rel_pos, rel_embeddings=rel)
        rows = ~pad
        err = (z[rows] - case["z"][rows]).abs().max().item()
        ref = case["z"][rows].abs().max().item()
        assert err <= 1e-6 * ref, f"HF DisentangledSelfAttention differs: {err} (max |z| {ref})"
        return err
    finally:
        torch.set_default_dtype(torch.float32)


def hf_bucket_check(hf, deltas):
    """HF's make_log_bucket_position (float64) against the spec's, δ = p_j − p_i = −(HF's i − j)."""
    torch.set_default_dtype(torch.float64)  # HF's bucket divides in the default dtype
    try:
        dt = torch.tensor(deltas, dtype=torch.int64)
        for s, m in ((256, 512), (8, 20), (16, 40)):
            hf_c = torch.clamp(hf.make_log_bucket_position(-dt, s, m).long() + s, 0, 2 * s - 1)
            ours = torch.tensor([row(d, s, m) for d in deltas])
            assert torch.equal(hf_c, ours), f"HF's bucket differs from the spec's at S {s}, M {m}"
    finally:
        torch.set_default_dtype(torch.float32)


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    use_hf = "--no-hf" not in argv
    hf_src = "/work/hf_src"
    if "--hf-src" in argv:
        hf_src = argv[argv.index("--hf-src") + 1]
        args.remove(hf_src)
    out_dir = args[0] if args else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "deberta")
    os.makedirs(out_dir, exist_ok=True)
    deltas = golden_bucket(out_dir)
    small = {"position_buckets": 8, "max_relative_positions": 20}
    sparse_ids = [[0, 3, 90, 91, 400, 401, 402, 1000, 1003, 1004, 5000, 5001],
                  [5, 4, 3, 2, 1, 0, 700, 2, 9, 64, 65, 900]]
    cases = [
        golden_attention(out_dir, "c2p_p2c", small, seed=41),
        golden_attention(out_dir, "c2p", dict(small, p2c=False), seed=42),
        golden_attention(out_dir, "p2c", dict(small, c2p=False), seed=43),
        golden_attention(out_dir, "separate_proj", dict(small, share_att_key=False), seed=44),
        golden_attention(out_dir, "separate_proj_c2p",
                         dict(small, share_att_key=False, p2c=False), seed=45),
        golden_attention(out_dir, "no_rel_norm", dict(small, rel_norm=False), seed=46),
        golden_attention(out_dir, "causal_h2", small, causal=True, h=2, seed=47),
        golden_attention(out_dir, "sparse_ids", small, position_ids=sparse_ids, length=12,
                         seed=48),
        golden_attention(out_dir, "defaults_ids", {}, position_ids=sparse_ids, length=12,
                         d=8, h=2, seed=49),
        golden_attention(out_dir, "defaults_plain", {}, length=40, d=8, h=2, seed=51),
        golden_attention(out_dir, "s16_m40", {"position_buckets": 16, "max_relative_positions": 40},
                         length=60, bsz=1, pads=(5,), seed=50),
    ]
    if use_hf:
        hf = import_hf_deberta(hf_src)
        if hf is None:
            print(f"  no transformers source at {hf_src}: HF self-check skipped")
            return
        worst = 0.0
        for case in cases:
            if case["plain"] and not case["causal"]:
                worst = max(worst, hf_check(hf, case, deltas))
        hf_bucket_check(hf, deltas)
        print(f"  HF DisentangledSelfAttention agrees: max |z - z_hf| {worst:.3g}")


if __name__ == "__main__":
    main(sys.argv)
