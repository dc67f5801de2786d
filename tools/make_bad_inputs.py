# SPDX-License-Identifier: MIT
"""Writes tests/data/bad/: malformed inputs for relpos-encode (spec §5), one file or model
folder per mistake, each a few hundred bytes. tests/encode_cli_test.cpp runs the binary on
each and checks the exit status, the one-line message and that no output file is left.

The input files are meant for the model tests/data/models/none_ids_head (d_model 16,
vocab_size 50, output head); the model folders are a tiny `none` model (d_model 4).

    /usr/bin/python3 tools/make_bad_inputs.py
"""
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_py as st  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "bad")


def ids(*values, shape=None):
    a = np.array(values, dtype=np.int64)
    return a.reshape(shape if shape is not None else (1, len(values)))


def inputs():
    good_ids = ids(1, 2, 3, 4)
    files = {
        "ids_out_of_range": {"input_ids": ids(1, 2, 50, 4)},
        "ids_negative": {"input_ids": ids(1, -1, 3, 4)},
        "ids_float": {"input_ids": good_ids.astype(np.float32)},
        "ids_rank3": {"input_ids": good_ids.reshape(1, 4, 1)},
        "input_and_ids": {"input": np.zeros((1, 4, 16), np.float32), "input_ids": good_ids},
        "neither": {"tokens": good_ids},
        "input_wrong_width": {"input": np.zeros((1, 3, 5), np.float32)},
        "input_f16": {"input": np.zeros((1, 3, 16), np.float16)},
        "batch0": {"input_ids": np.zeros((0, 4), np.int64)},
        "len0": {"input": np.zeros((2, 0, 16), np.float32)},
        "mask_wrong_shape": {"input_ids": good_ids, "padding_mask": np.zeros((1, 3), np.uint8)},
        "mask_wrong_dtype": {"input_ids": good_ids, "padding_mask": np.zeros((1, 4), np.float32)},
        "positions_negative": {"input_ids": good_ids, "position_ids": ids(0, 1, -2, 3)},
        "positions_wrong_shape": {"input_ids": good_ids, "position_ids": ids(0, 1, 2, 3, shape=(4, 1))},
        # valid: an extra tensor is ignored, I32 ids and a BOOL mask are accepted
        "ok_extra_tensor": {"input_ids": good_ids.astype(np.int32), "note": np.ones(3, np.float32),
                            "padding_mask": np.array([[0, 0, 0, 1]], dtype=np.bool_)},
        # the same run in the usual dtypes: the outputs must be identical
        "ok_i64_u8": {"input_ids": good_ids, "padding_mask": np.array([[0, 0, 0, 1]], np.uint8)},
    }
    for name, tensors in files.items():
        st.save_file(tensors, os.path.join(ROOT, name + ".safetensors"))
    # not safetensors at all, and a valid file cut short
    with open(os.path.join(ROOT, "not_safetensors.safetensors"), "wb") as f:
        f.write(b"this is not a safetensors file\n")
    data = st.serialize({"input_ids": good_ids})
    with open(os.path.join(ROOT, "truncated.safetensors"), "wb") as f:
        f.write(data[:-5])


def tiny_weights(rng, d=4, ff=6, vocab=5):
    w = {"embed.weight": rng.standard_normal((vocab, d))}
    p = "layers.0."
    w[p + "self_attn.in_proj_weight"] = rng.standard_normal((3 * d, d))
    w[p + "self_attn.in_proj_bias"] = rng.standard_normal(3 * d)
    w[p + "self_attn.out_proj.weight"] = rng.standard_normal((d, d))
    w[p + "self_attn.out_proj.bias"] = rng.standard_normal(d)
    w[p + "linear1.weight"] = rng.standard_normal((ff, d))
    w[p + "linear1.bias"] = rng.standard_normal(ff)
    w[p + "linear2.weight"] = rng.standard_normal((d, ff))
    w[p + "linear2.bias"] = rng.standard_normal(d)
    for n in ("norm1", "norm2"):
        w[p + n + ".weight"] = np.ones(d)
        w[p + n + ".bias"] = np.zeros(d)
    return {k: v.astype(np.float32) for k, v in w.items()}


def models():
    rng = np.random.default_rng(5)
    config = {"d_model": 4, "n_heads": 2, "n_layers": 1, "d_ff": 6, "vocab_size": 5}
    good = tiny_weights(rng)

    def folder(name, cfg_text, weights):
        path = os.path.join(ROOT, "model_" + name)
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "config.json"), "w") as f:
            f.write(cfg_text)
        if weights is not None:
            st.save_file(weights, os.path.join(path, "model.safetensors"))

    text = json.dumps(config, indent=2)
    folder("ok", text, good)
    folder("unknown_key", json.dumps({**config, "dropout": 0.1}, indent=2), good)
    folder("malformed_json", text[:-3], good)
    folder("float_size", text.replace('"d_model": 4', '"d_model": 4.0'), good)
    folder("no_weights", text, None)
    folder("unused_tensor", text, {**good, "layers.0.self_attn.relative_key": np.zeros((3, 2), np.float32)})
    folder("missing_tensor", text, {k: v for k, v in good.items() if k != "layers.0.linear2.bias"})
    folder("wrong_shape", text, {**good, "layers.0.linear1.weight": good["layers.0.linear1.weight"].T.copy()})
    folder("wrong_dtype", text, {**good, "embed.weight": np.zeros((5, 4), np.int32)})
    folder("hostile_layers", text.replace('"n_layers": 1', '"n_layers": 1000000000'), good)


if __name__ == "__main__":
    shutil.rmtree(ROOT, ignore_errors=True)
    os.makedirs(ROOT)
    inputs()
    models()
    print("wrote", ROOT)
