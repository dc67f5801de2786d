# SPDX-License-Identifier: MIT
"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/ (committed).

Seeds are tiny: valid files the fuzzer can mutate towards deep code, and one file of each
known-bad kind (so the checks behind each message are reached from the start).
Run from anywhere: /usr/bin/python3 fuzz/make_corpus.py
"""

import json
import os
import shutil
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
import safetensors_py as st  # noqa: E402

CORPUS = os.path.join(HERE, "corpus")


def header_file(header, data=b"", pad=True):
    """A safetensors file from a header given as a dict or raw text, and raw data bytes."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    if pad:
        text += b" " * ((-(8 + len(text))) % 8)
    return struct.pack("<Q", len(text)) + text + data


def safetensors_seeds():
    rng = np.random.default_rng(7)
    f32 = rng.standard_normal((2, 3)).astype(np.float32)
    seeds = {
        "valid_f32": st.serialize({"a": f32}),
        "valid_dtypes": st.serialize({
            "f64": rng.standard_normal(3), "f32": f32, "f16": np.float16([1, -2, 0.5]),
            "bf16": st.Raw("BF16", [2], struct.pack("<2H", 0x3F80, 0xC000)),
            "i64": np.int64([-1, 2**40]), "i32": np.int32([7]), "i16": np.int16([-3]),
            "i8": np.int8([-128]), "u8": np.uint8([255]), "bool": np.bool_([True, False]),
            "t3": rng.standard_normal((2, 2, 2)).astype(np.float32),
            "scalar": np.float32(3.5).reshape(())}, metadata={"format": "pt"}),
        "valid_empty_tensor": st.serialize({"e": np.zeros((0, 4), np.float32)}),
        "valid_no_tensors": header_file({}),
        "misaligned_f32": header_file({"a": {"dtype": "F32", "shape": [2],
                                             "data_offsets": [0, 8]}}, b"\0" * 8, pad=False),
        "bad_short": b"\x01\x02\x03",
        "bad_header_len_2pow63": struct.pack("<Q", 2**63) + b"{}",
        "bad_header_len_past_end": struct.pack("<Q", 100) + b"{}",
        "bad_not_json": header_file(b"{not json"),
        "bad_not_object": header_file(b"[1,2]"),
        "bad_deep": header_file(b"[" * 40 + b"]" * 40),
        "bad_duplicate": header_file(b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
                                     b'"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"x"),
        "bad_unknown_dtype": header_file({"a": {"dtype": "F8", "shape": [1],
                                                "data_offsets": [0, 1]}}, b"x"),
        "bad_negative_dim": header_file({"a": {"dtype": "U8", "shape": [-1],
                                               "data_offsets": [0, 1]}}, b"x"),
        "bad_shape_overflow": header_file({"a": {"dtype": "F32", "shape": [2**32, 2**32, 2],
                                                 "data_offsets": [0, 4]}}, b"x" * 4),
        "bad_bytes_overflow": header_file({"a": {"dtype": "F64", "shape": [2**62],
                                                 "data_offsets": [0, 8]}}, b"x" * 8),
        "zero_dim_huge_others": header_file({"a": {"dtype": "F32", "shape": [2**40, 2**40, 0],
                                                   "data_offsets": [0, 0]}}),
        "zero_dim_huge_3d": header_file({"a": {"dtype": "F32", "shape": [2**62, 4, 0],
                                               "data_offsets": [0, 0]}}),
        "bad_offsets_reversed": header_file({"a": {"dtype": "U8", "shape": [1],
                                                   "data_offsets": [1, 0]}}, b"x"),
        "bad_offsets_past_end": header_file({"a": {"dtype": "U8", "shape": [1],
                                                   "data_offsets": [2**64 - 1, 2**64 - 1]}}, b"x"),
        "bad_size_mismatch": header_file({"a": {"dtype": "F32", "shape": [2],
                                                "data_offsets": [0, 4]}}, b"x" * 4),
        "bad_hole": header_file({"a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}},
                                b"xx"),
        "bad_overlap": header_file({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
                                    "b": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}},
                                   b"xx"),
        "bad_trailing": header_file({"a": {"dtype": "U8", "shape": [1],
                                           "data_offsets": [0, 1]}}, b"xy"),
        "bad_metadata": header_file({"__metadata__": {"k": 1}}),
        "bad_bool_byte": header_file({"a": {"dtype": "BOOL", "shape": [1],
                                            "data_offsets": [0, 1]}}, b"\x07"),
    }
    return seeds


def config(position, **extra):
    c = {"d_model": 4, "n_heads": 2, "n_layers": 1, "d_ff": 4, "position": position}
    c.update(extra)
    return c


POSITIONS = {
    "none": {"type": "none"},
    "rotary": {"type": "rotary", "rotary_dim": 2, "interleaved": True},
    "sinusoidal": {"type": "sinusoidal", "max_distance": 3, "keys": True, "values": True},
    "learned": {"type": "learned", "max_distance": 2},
    "absolute": {"type": "absolute", "base": 100.0},
    "additive_learned": {"type": "additive", "source": "learned", "window": 1,
                         "max_distance": 1},
    "additive_sinusoidal": {"type": "additive", "source": "sinusoidal", "window": 2},
}


def config_seeds():
    seeds = {f"valid_{name}": json.dumps(config(p)).encode() for name, p in POSITIONS.items()}
    seeds["valid_full"] = json.dumps(config(
        {"type": "rotary", "base": 500, "scaling": {"type": "yarn", "factor": 4,
                                                    "original_max_position_embeddings": 16}},
        activation="gelu", norm_first=True, layer_norm_eps=1e-6, final_norm=True, causal=True,
        vocab_size=8, output_head=True)).encode()
    seeds["valid_t5"] = json.dumps(config({"type": "t5", "num_buckets": 8,
                                           "max_distance": 16})).encode()
    seeds["valid_alibi"] = json.dumps(config({"type": "alibi", "max_bias": 8})).encode()
    seeds["valid_xl"] = json.dumps(config({"type": "xl", "max_distance": 4})).encode()
    seeds["valid_kerple"] = json.dumps(config({"type": "kerple", "form": "power"})).encode()
    # spec §7's block options: a T5-like block, a BERT-like embedding stage
    seeds["valid_t5_block"] = json.dumps(config(
        {"type": "t5"}, norm="rms", bias=False, ffn="gated", activation="gelu_tanh",
        norm_first=True, final_norm=True)).encode()
    seeds["valid_bert_embed"] = json.dumps(config(
        {"type": "none"}, vocab_size=8, embed_norm=True, pos_embed_offset=2,
        type_vocab_size=2)).encode()
    bad = {
        "bad_malformed": b'{"d_model": 4,',
        "bad_unknown_key": json.dumps(config({"type": "none"}, dropout=0.1)).encode(),
        "bad_float_dim": json.dumps(config({"type": "none"}, d_model=4.0)).encode(),
        "bad_negative_dim": json.dumps(config({"type": "none"}, d_ff=-4)).encode(),
        "bad_huge_dim": json.dumps(config({"type": "none"}, d_model=2**62)).encode(),
        "bad_n_layers_1e9": json.dumps(config({"type": "none"}, n_layers=10**9)).encode(),
        "bad_not_divisible": json.dumps(config({"type": "none"}, n_heads=3)).encode(),
        "bad_eps_zero": json.dumps(config({"type": "none"}, layer_norm_eps=0)).encode(),
        "bad_deep": b'{"position":' + b"[" * 40 + b"]" * 40 + b"}",
        "bad_position_key": json.dumps(config({"type": "rotary", "max_distance": 3})).encode(),
        "bad_head_no_vocab": json.dumps(config({"type": "none"}, output_head=True)).encode(),
        "bad_norm_kind": json.dumps(config({"type": "none"}, norm="batch")).encode(),
        "bad_types_no_vocab": json.dumps(config({"type": "none"}, type_vocab_size=2)).encode(),
    }
    seeds.update(bad)
    return seeds


def model_tensors(name, rng, vocab=None, head=False, final_norm=False):
    d, f = 4, 4
    t = {}
    r = lambda *s: (0.5 * rng.standard_normal(s)).astype(np.float32)  # noqa: E731
    p = "layers.0."
    t[p + "self_attn.in_proj_weight"] = r(3 * d, d)
    t[p + "self_attn.in_proj_bias"] = r(3 * d)
    t[p + "self_attn.out_proj.weight"] = r(d, d)
    t[p + "self_attn.out_proj.bias"] = r(d)
    t[p + "linear1.weight"], t[p + "linear1.bias"] = r(f, d), r(f)
    t[p + "linear2.weight"], t[p + "linear2.bias"] = r(d, f), r(d)
    for n in ("norm1", "norm2"):
        t[p + n + ".weight"], t[p + n + ".bias"] = 1 + r(d), r(d)
    if name == "learned":
        t[p + "self_attn.relative_key"] = r(5, 2)
        t[p + "self_attn.relative_value"] = r(5, 2)
    if name == "additive_learned":
        t["position.weight"] = r(3, d)
    if vocab:
        t["embed.weight"] = r(vocab, d)
    if head:
        t["head.weight"], t["head.bias"] = r(vocab, d), r(vocab)
    if final_norm:
        t["norm.weight"], t["norm.bias"] = 1 + r(d), r(d)
    return t


def pack(config_bytes, weights, inputs):
    return (struct.pack("<I", len(config_bytes)) + config_bytes +
            struct.pack("<I", len(weights)) + weights + inputs)


def model_seeds():
    rng = np.random.default_rng(11)
    x = lambda b, n: {"input": rng.standard_normal((b, n, 4)).astype(np.float32)}  # noqa: E731
    seeds = {}
    for name, pos in POSITIONS.items():
        c = json.dumps(config(pos)).encode()
        w = st.serialize(model_tensors(name, rng))
        seeds[f"{name}_input"] = pack(c, w, st.serialize(x(2, 3)))
        mask = np.uint8([[0, 0, 1], [1, 1, 1]])
        extra = {"padding_mask": mask}
        if name != "additive_learned" and name != "additive_sinusoidal":
            extra["position_ids"] = np.int64([[0, 2, 5], [3, 1, 0]])
        seeds[f"{name}_mask_positions"] = pack(c, w, st.serialize({**x(2, 3), **extra}))
    # ids, output head, final norm, causal, gelu, pre-norm, half-precision weights
    c = json.dumps(config({"type": "rotary"}, vocab_size=8, output_head=True, final_norm=True,
                          causal=True, activation="gelu", norm_first=True)).encode()
    t = model_tensors("none", rng, vocab=8, head=True, final_norm=True)
    w = st.serialize(t)
    ids = lambda v: {"input_ids": np.int64(v)}  # noqa: E731
    seeds["ids_head"] = pack(c, w, st.serialize(ids([[1, 2, 7], [0, 0, 3]])))
    seeds["ids_i32"] = pack(c, w, st.serialize({"input_ids": np.int32([[5, 6]])}))
    w16 = st.serialize({k: v.astype(np.float16) for k, v in t.items()})
    seeds["ids_head_f16"] = pack(c, w16, st.serialize(ids([[1, 2]])))
    seeds["bad_id_negative"] = pack(c, w, st.serialize(ids([[1, -1]])))
    seeds["bad_id_2pow40"] = pack(c, w, st.serialize(ids([[2**40]])))
    seeds["bad_both_inputs"] = pack(c, w, st.serialize({**ids([[1]]), **x(1, 1)}))
    seeds["bad_batch0"] = pack(c, w, st.serialize(ids(np.zeros((0, 3), np.int64))))
    seeds["bad_len0"] = pack(c, w, st.serialize(x(1, 0)))
    seeds["bad_negative_position"] = pack(c, w, st.serialize({**ids([[1, 2]]),
                                                               "position_ids": np.int64([[0, -1]])}))
    nan = dict(t)
    nan["layers.0.linear1.weight"] = np.full((4, 4), np.nan, np.float32)
    seeds["nan_weights"] = pack(c, st.serialize(nan), st.serialize(ids([[1, 2]])))
    missing = dict(t)
    del missing["norm.bias"]
    seeds["bad_missing_tensor"] = pack(c, st.serialize(missing), st.serialize(ids([[1]])))
    seeds["bad_config"] = pack(b'{"d_model": 4}', w, st.serialize(ids([[1]])))
    return seeds


def model_regressions():
    """Inputs that once broke the load-and-run path (fuzz/regressions/fuzz_model/)."""
    rng = np.random.default_rng(13)
    seeds = {}
    x = {"input": rng.standard_normal((1, 2, 4)).astype(np.float32)}
    far = {"position_ids": np.int64([[0, 2**40]])}
    for name in ("rotary", "sinusoidal", "absolute"):
        pos = dict(POSITIONS[name])
        pos.pop("max_distance", None)  # unclamped: the table would span the whole distance
        seeds[f"{name}_position_2pow40"] = pack(json.dumps(config(pos)).encode(),
                                                st.serialize(model_tensors(name, rng)),
                                                st.serialize({**x, **far}))
    return seeds


def api_seeds():
    """fuzz_api reads its choices with FuzzedDataProvider (integers from the end of the input,
    booleans and bytes from the front), so no layout is worth spelling out: seeds are fixed
    pseudo-random inputs of a few lengths, enough to reach every encoding and shape branch."""
    rng = np.random.default_rng(17)
    return {f"random_{n}_{i}": rng.integers(0, 256, n, dtype=np.uint8).tobytes()
            for n in (16, 64, 256, 1024) for i in range(4)}


def write(target, seeds, root=CORPUS):
    out = os.path.join(root, target)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    write("fuzz_safetensors", safetensors_seeds())
    write("fuzz_config", config_seeds())
    write("fuzz_model", model_seeds())
    write("fuzz_api", api_seeds())
    for name, data in model_regressions().items():
        os.makedirs(os.path.join(HERE, "regressions", "fuzz_model"), exist_ok=True)
        with open(os.path.join(HERE, "regressions", "fuzz_model", name), "wb") as f:
            f.write(data)
