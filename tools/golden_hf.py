# SPDX-License-Identifier: MIT
"""Golden Hugging Face checkpoint folders for spec §7 (docs/model-format.md, "Hugging Face
checkpoints"): the BERT family (bert absolute and relative_key, roberta, xlm-roberta),
RoFormer, ESM-2 and MPNet.

Each folder tests/data/hf/<name>/ holds what `save_pretrained` writes, with Hugging Face's
tensor names and config.json keys (keys equal to the config class's defaults left out, as
`save_pretrained` does):
  config.json                       model_type and the family's keys
  model.safetensors                 the weights, F32 (or, sharded, model.safetensors.index.json
                                    whose "weight_map" names each tensor's shard, and the shards)
  io.safetensors                    `input_ids` (I64 [batch, len]), `padding_mask` (U8, 1 =
                                    padded, right padding), optional `token_type_ids` (I64),
                                    and the expected `output` (F64 [batch, len, hidden]): the
                                    last hidden state; metadata "description" says what the
                                    case covers.
and tests/data/hf/index.json lists the cases.

The expected outputs come from Hugging Face's own code: transformers 4.40's BertModel,
RobertaModel, XLMRobertaModel, RoFormerModel, EsmModel and MPNetModel (modeling_<family>.py and
configuration_<family>.py, imported unchanged from the source tree --hf-src by
tools/hf_source.py, which stubs the package's utilities; nothing of it is copied here), each
built from the case's config.json keys (the config class supplies HF's defaults), without
pooler, model.double(), eval mode, loaded with the case's F32-rounded weights by
load_state_dict and run with its attention_mask and token_type_ids (return_dict off: the last
hidden state). `output` is that forward as HF runs it (RoFormer's sin table and ESM's inv_freq
buffers float32, as HF stores them); `output_float64_table` is the same HF forward with that
table / those buffers set to their float64 values.

A forward written by hand after the same files (BertEmbeddings, BertSelfAttention with
relative_key, RoFormer's sinusoidal table and rotation, EsmEmbeddings' token_dropout, EsmLayer's
pre-norm, RotaryEmbedding, MPNet's relative_position_bucket and shared relative_attention_bias,
BertSelfOutput, BertIntermediate, BertOutput, get_extended_attention_mask, RoBERTa's
create_position_ids_from_input_ids) cross-checks every expected output: they must agree within
1e-12 (measured: bit-identical except ESM, 1.8e-15, whose gelu is erf-written). It uses HF's
conventions, not relpos's: the relative_key table is indexed by i - j + max_position_embeddings
- 1, positions of RoBERTa count from pad_token_id, the mask adds finfo.min rather than -inf; its
self-test compares it with torch.nn.TransformerEncoderLayer. Some tensors exist only to be
skipped: pooler, task heads, `position_ids` buffers (I64), the absolute table of a relative_key
model.

    /usr/bin/python3 tools/golden_hf.py [--out tests/data/hf] [--hf-src /work/hf_src/transformers]
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
from hf_source import load_hf  # noqa: E402

# BertConfig's / RobertaConfig's defaults in transformers 4.40 (what an absent key means)
DEFAULTS = {
    "bert": {"hidden_act": "gelu", "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
             "type_vocab_size": 2, "pad_token_id": 0, "position_embedding_type": "absolute"},
    "roberta": {"hidden_act": "gelu", "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
                "type_vocab_size": 2, "pad_token_id": 1, "position_embedding_type": "absolute"},
}
DEFAULTS["xlm-roberta"] = DEFAULTS["roberta"]
DEFAULTS["roformer"] = {"hidden_act": "gelu", "layer_norm_eps": 1e-12,
                        "max_position_embeddings": 1536, "type_vocab_size": 2, "pad_token_id": 0,
                        "position_embedding_type": "rotary"}
DEFAULTS["esm"] = {"hidden_act": "gelu", "layer_norm_eps": 1e-12, "max_position_embeddings": 1026,
                   "type_vocab_size": 0, "pad_token_id": None, "position_embedding_type": "absolute",
                   "token_dropout": False, "emb_layer_norm_before": False}
DEFAULTS["mpnet"] = {"hidden_act": "gelu", "layer_norm_eps": 1e-12, "max_position_embeddings": 514,
                     "type_vocab_size": 0, "pad_token_id": 1, "position_embedding_type": "mpnet",
                     "relative_attention_num_buckets": 32}
PREFIX = {"bert": "bert.", "roberta": "roberta.", "xlm-roberta": "roberta.",
          "roformer": "roformer.", "esm": "esm.", "mpnet": "mpnet."}
LEN = {"mpnet_base": 40}  # long enough for MPNet's logarithmic buckets (distances >= 8)

B, L = 2, 9
N_PADDED = 3  # row 1's last tokens are padding

# name -> (config.json, task prefix?, sharded?, old gamma/beta names?, description)
CASES = {
    "bert_absolute": (
        {"model_type": "bert", "architectures": ["BertModel"], "vocab_size": 40,
         "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
         "intermediate_size": 32, "max_position_embeddings": 20},
        False, False, True,
        "BertModel, absolute positions, gelu, HF's defaults for absent keys (layer_norm_eps "
        "1e-12, type_vocab_size 2); the embedding LayerNorm under its old names gamma/beta; "
        "pooler and the position_ids buffer skipped"),
    "bert_relative_key_sharded": (
        {"model_type": "bert", "architectures": ["BertForSequenceClassification"],
         "vocab_size": 37, "hidden_size": 24, "num_hidden_layers": 2, "num_attention_heads": 3,
         "intermediate_size": 40, "max_position_embeddings": 12, "hidden_act": "gelu_new",
         "position_embedding_type": "relative_key", "layer_norm_eps": 1e-5,
         "type_vocab_size": 3},
        True, True, False,
        "BertForSequenceClassification (bert. prefix, classifier head skipped), relative_key "
        "(distance_embedding per layer; the absolute table skipped), gelu_new, token types, "
        "sharded over two files by model.safetensors.index.json"),
    "roberta_masked_lm": (
        {"model_type": "roberta", "architectures": ["RobertaForMaskedLM"], "vocab_size": 41,
         "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 48, "max_position_embeddings": L + 2, "type_vocab_size": 1,
         "hidden_act": "relu", "bos_token_id": 0, "eos_token_id": 2},
        True, False, False,
        "RobertaForMaskedLM (roberta. prefix, lm_head skipped), positions from pad_token_id + 1 "
        "(default pad 1), max_position_embeddings exactly len + 2, relu"),
    "xlm_roberta": (
        {"model_type": "xlm-roberta", "architectures": ["XLMRobertaModel"], "vocab_size": 33,
         "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 24, "max_position_embeddings": 16, "type_vocab_size": 1,
         "pad_token_id": 3},
        False, False, False,
        "XLMRobertaModel, pad_token_id 3 so positions start at 4, gelu by default"),
    "roformer_masked_lm": (
        {"model_type": "roformer", "architectures": ["RoFormerForMaskedLM"], "vocab_size": 35,
         "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
         "intermediate_size": 40, "max_position_embeddings": 16},
        True, False, False,
        "RoFormerForMaskedLM (roformer. prefix, cls head skipped), rotary on pairs (2m, 2m+1) "
        "of each head from HF's float32 sin table (encoder.embed_positions.weight, skipped), "
        "token types; `output_float64_table` is the same forward with the table in float64"),
    "esm2_masked_lm": (
        {"model_type": "esm", "architectures": ["EsmForMaskedLM"], "vocab_size": 33,
         "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 40, "max_position_embeddings": 30, "pad_token_id": 1,
         "mask_token_id": 32, "position_embedding_type": "rotary", "token_dropout": True,
         "emb_layer_norm_before": False, "hidden_act": "gelu"},
        True, False, False,
        "EsmForMaskedLM (esm. prefix, lm_head skipped; contact_head, rotary inv_freq buffers and "
        "the unused absolute table skipped), pre-norm, final emb_layer_norm_after, rotary "
        "rotate_half with HF's float32 inverse frequencies (`output_float64_table`: float64 "
        "ones), token_dropout's 0.88 (no mask token in the input)"),
    "mpnet_base": (
        {"model_type": "mpnet", "architectures": ["MPNetModel"], "vocab_size": 45,
         "hidden_size": 24, "num_hidden_layers": 2, "num_attention_heads": 3,
         "intermediate_size": 32, "max_position_embeddings": 50},
        False, False, False,
        "MPNetModel, len 40: t5 buckets (32, max_distance 128, bidirectional) from "
        "encoder.relative_attention_bias shared by the layers, positions from padding id 1 "
        "(offset 2), pooler skipped"),
}


def _seed(name):
    return zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF


def _f32(t):
    """Round to float32 and back: the file stores F32, the math runs in float64."""
    return t.float().double()


def _weight_makers(w, d):
    """rnd, norm, linear: random F32-rounded tensors, the latter two stored into w under a prefix
    (the draws' order is the callers', so the files stay the same)."""

    def rnd(*shape, scale=0.3):
        return _f32(torch.randn(*shape, dtype=torch.float64) * scale)

    def norm(prefix):
        w[prefix + ".weight"] = _f32(1 + 0.2 * torch.randn(d, dtype=torch.float64))
        w[prefix + ".bias"] = rnd(d, scale=0.1)

    def linear(prefix, out_f, in_f):
        w[prefix + ".weight"] = rnd(out_f, in_f, scale=1 / math.sqrt(in_f))
        w[prefix + ".bias"] = rnd(out_f, scale=0.1)

    return rnd, norm, linear


def full_config(cfg):
    return {**DEFAULTS[cfg["model_type"]], **cfg}


def make_weights(c):
    """The base model's tensors under HF's names (BertModel.state_dict()), F32-rounded."""
    d, f, V = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    P, T = c["max_position_embeddings"], c["type_vocab_size"]
    dh = d // c["num_attention_heads"]
    w = {}
    rnd, norm, linear = _weight_makers(w, d)

    w["embeddings.word_embeddings.weight"] = rnd(V, d)
    if c["model_type"] != "roformer":
        w["embeddings.position_embeddings.weight"] = rnd(P, d)
    w["embeddings.token_type_embeddings.weight"] = rnd(T, d)
    norm("embeddings.LayerNorm")
    for n in range(c["num_hidden_layers"]):
        p = f"encoder.layer.{n}."
        for part in ("query", "key", "value"):
            linear(p + "attention.self." + part, d, d)
        if c["position_embedding_type"] == "relative_key":
            w[p + "attention.self.distance_embedding.weight"] = rnd(2 * P - 1, dh, scale=0.5)
        linear(p + "attention.output.dense", d, d)
        norm(p + "attention.output.LayerNorm")
        linear(p + "intermediate.dense", f, d)
        linear(p + "output.dense", d, f)
        norm(p + "output.LayerNorm")
    if c["model_type"] != "roformer":  # RoFormerModel has no pooler
        linear("pooler.dense", d, d)
    return w


def roformer_sin_table(n_pos, dim, float32=True):
    """RoFormerSinusoidalPositionalEmbedding._init_weight: [sin | cos] of pos / 10000^(2(j//2)/dim),
    computed in float64 and stored as a float32 parameter (float32=True)."""
    j = torch.arange(dim, dtype=torch.float64)
    enc = torch.arange(n_pos, dtype=torch.float64)[:, None] / torch.pow(10000.0, 2 * (j // 2) / dim)
    out = torch.empty(n_pos, dim, dtype=torch.float64)
    out[:, : dim // 2] = torch.sin(enc[:, 0::2])
    out[:, dim // 2:] = torch.cos(enc[:, 1::2])
    return _f32(out) if float32 else out


def roformer_rotate(sinusoidal_pos, x):
    """apply_rotary_position_embeddings for one of q, k: [B, H, L, dh] with table [L, dh]."""
    sin, cos = sinusoidal_pos.chunk(2, dim=-1)
    sin_pos = torch.stack([sin, sin], dim=-1).reshape_as(sinusoidal_pos)
    cos_pos = torch.stack([cos, cos], dim=-1).reshape_as(sinusoidal_pos)
    rotate_half = torch.stack([-x[..., 1::2], x[..., ::2]], dim=-1).reshape_as(x)
    return x * cos_pos + rotate_half * sin_pos


def make_weights_esm(c):
    """EsmModel.state_dict()'s tensors (rotary ESM-2), F32-rounded; inv_freq buffers added at export."""
    d, f, V, P = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["max_position_embeddings"]
    w = {}
    rnd, norm, linear = _weight_makers(w, d)

    w["embeddings.word_embeddings.weight"] = rnd(V, d)
    w["embeddings.position_embeddings.weight"] = rnd(P, d)  # created, unused with rotary
    for n in range(c["num_hidden_layers"]):
        p = f"encoder.layer.{n}."
        for part in ("query", "key", "value"):
            linear(p + "attention.self." + part, d, d)
        linear(p + "attention.output.dense", d, d)
        norm(p + "attention.LayerNorm")
        linear(p + "intermediate.dense", f, d)
        linear(p + "output.dense", d, f)
        norm(p + "LayerNorm")
    norm("encoder.emb_layer_norm_after")
    w["contact_head.regression.weight"] = rnd(1, c["num_hidden_layers"] * c["num_attention_heads"])
    w["contact_head.regression.bias"] = rnd(1)
    return w


def esm_inv_freq(dim, float32=True):
    """RotaryEmbedding.inv_freq: a float32 buffer, 1 / 10000^(2m/dim)."""
    if float32:
        return (1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))).double()
    return 1.0 / (10000.0 ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))


def esm_forward(c, w, ids, attention_mask, float32_freq=True):
    """EsmModel's last hidden state (eval mode), float64, after modeling_esm.py."""
    d, H = c["hidden_size"], c["num_attention_heads"]
    dh = d // H
    eps = c["layer_norm_eps"]
    Bn, Ln = ids.shape

    def ln(prefix, x):
        return F.layer_norm(x, (d,), w[prefix + ".weight"], w[prefix + ".bias"], eps)

    def lin(prefix, x):
        return x @ w[prefix + ".weight"].T + w[prefix + ".bias"]

    x = w["embeddings.word_embeddings.weight"][ids]
    if c["token_dropout"]:  # EsmEmbeddings
        is_mask = ids == c["mask_token_id"]
        x = x.masked_fill(is_mask.unsqueeze(-1), 0.0)
        mask_ratio_train = 0.15 * 0.8
        src_lengths = attention_mask.sum(-1)
        observed = is_mask.sum(-1).float() / src_lengths
        x = x * (1 - mask_ratio_train) / (1 - observed)[:, None, None]
    x = x * attention_mask.unsqueeze(-1)
    ext = (1.0 - attention_mask[:, None, None, :].double()) * torch.finfo(torch.float64).min
    # RotaryEmbedding: t·inv_freq, cat(freqs, freqs), rotate_half
    freqs = torch.outer(torch.arange(Ln, dtype=torch.float64), esm_inv_freq(dh, float32_freq))
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()

    def rotate_half(t):
        t1, t2 = t.chunk(2, dim=-1)
        return torch.cat((-t2, t1), dim=-1)

    for n in range(c["num_hidden_layers"]):
        p = f"encoder.layer.{n}."

        def heads(t):
            return t.view(Bn, Ln, H, dh).permute(0, 2, 1, 3)

        h = ln(p + "attention.LayerNorm", x)
        q = heads(lin(p + "attention.self.query", h)) * dh ** -0.5
        k = heads(lin(p + "attention.self.key", h))
        v = heads(lin(p + "attention.self.value", h))
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        probs = torch.softmax(q @ k.transpose(-1, -2) + ext, dim=-1)
        ctx = (probs @ v).permute(0, 2, 1, 3).reshape(Bn, Ln, d)
        a = lin(p + "attention.output.dense", ctx) + x
        i = F.gelu(lin(p + "intermediate.dense", ln(p + "LayerNorm", a)))
        x = lin(p + "output.dense", i) + a
    return ln("encoder.emb_layer_norm_after", x)


def make_weights_mpnet(c):
    """MPNetModel.state_dict()'s tensors, F32-rounded."""
    d, f, V, P = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["max_position_embeddings"]
    w = {}
    rnd, norm, linear = _weight_makers(w, d)

    w["embeddings.word_embeddings.weight"] = rnd(V, d)
    w["embeddings.position_embeddings.weight"] = rnd(P, d)
    norm("embeddings.LayerNorm")
    w["encoder.relative_attention_bias.weight"] = rnd(32, c["num_attention_heads"], scale=1.0)
    for n in range(c["num_hidden_layers"]):
        p = f"encoder.layer.{n}."
        for part in ("q", "k", "v", "o"):
            linear(p + "attention.attn." + part, d, d)
        norm(p + "attention.LayerNorm")
        linear(p + "intermediate.dense", f, d)
        linear(p + "output.dense", d, f)
        norm(p + "output.LayerNorm")
    linear("pooler.dense", d, d)
    return w


def mpnet_bucket(relative_position, num_buckets=32, max_distance=128):
    """MPNetEncoder.relative_position_bucket, as written there (float32 log)."""
    ret = 0
    n = -relative_position
    num_buckets //= 2
    ret += (n < 0).to(torch.long) * num_buckets
    n = torch.abs(n)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    val_if_large = max_exact + (torch.log(n.float() / max_exact) / math.log(max_distance / max_exact)
                                * (num_buckets - max_exact)).to(torch.long)
    val_if_large = torch.min(val_if_large, torch.full_like(val_if_large, num_buckets - 1))
    ret += torch.where(is_small, n, val_if_large)
    return ret


def mpnet_forward(c, w, ids, attention_mask):
    """MPNetModel's last hidden state (eval mode), float64, after modeling_mpnet.py."""
    d, H = c["hidden_size"], c["num_attention_heads"]
    dh = d // H
    eps = c["layer_norm_eps"]
    Bn, Ln = ids.shape

    def ln(prefix, x):
        return F.layer_norm(x, (d,), w[prefix + ".weight"], w[prefix + ".bias"], eps)

    def lin(prefix, x):
        return x @ w[prefix + ".weight"].T + w[prefix + ".bias"]

    m = ids.ne(1).long()  # MPNetEmbeddings: padding_idx 1
    pos = torch.cumsum(m, dim=1) * m + 1
    x = ln("embeddings.LayerNorm", w["embeddings.word_embeddings.weight"][ids] +
           w["embeddings.position_embeddings.weight"][pos])
    ext = (1.0 - attention_mask[:, None, None, :].double()) * torch.finfo(torch.float64).min
    rel = torch.arange(Ln)[None, :] - torch.arange(Ln)[:, None]  # memory - context
    bias = w["encoder.relative_attention_bias.weight"][mpnet_bucket(rel)]  # [L, L, H]
    bias = bias.permute(2, 0, 1).unsqueeze(0)
    for n in range(c["num_hidden_layers"]):
        p = f"encoder.layer.{n}."

        def heads(t):
            return t.view(Bn, Ln, H, dh).permute(0, 2, 1, 3)

        q = heads(lin(p + "attention.attn.q", x))
        k = heads(lin(p + "attention.attn.k", x))
        v = heads(lin(p + "attention.attn.v", x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh) + bias + ext
        ctx = (torch.softmax(scores, dim=-1) @ v).permute(0, 2, 1, 3).reshape(Bn, Ln, d)
        a = ln(p + "attention.LayerNorm", lin(p + "attention.attn.o", ctx) + x)
        i = act(c["hidden_act"], lin(p + "intermediate.dense", a))
        x = ln(p + "output.LayerNorm", lin(p + "output.dense", i) + a)
    return x


def act(name, x):
    if name == "gelu":
        return F.gelu(x)
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        # NewGELUActivation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    if name == "relu":
        return F.relu(x)
    raise ValueError(name)


def hf_forward(c, w, ids, types, attention_mask, float32_table=True):
    """BertModel / RobertaModel / RoFormerModel's last hidden state (eval mode), float64."""
    d, H = c["hidden_size"], c["num_attention_heads"]
    dh = d // H
    eps = c["layer_norm_eps"]
    Bn, Ln = ids.shape
    roberta = c["model_type"] in ("roberta", "xlm-roberta")
    relative = c["position_embedding_type"] == "relative_key"
    roformer = c["model_type"] == "roformer"

    def ln(prefix, x):
        return F.layer_norm(x, (d,), w[prefix + ".weight"], w[prefix + ".bias"], eps)

    def lin(prefix, x):
        return x @ w[prefix + ".weight"].T + w[prefix + ".bias"]

    # BertEmbeddings / RobertaEmbeddings
    x = w["embeddings.word_embeddings.weight"][ids]
    x = x + w["embeddings.token_type_embeddings.weight"][types]
    if not relative and not roformer:
        if roberta:  # create_position_ids_from_input_ids
            pad = c["pad_token_id"]
            m = ids.ne(pad).long()
            pos = torch.cumsum(m, dim=1) * m + pad
        else:
            pos = torch.arange(Ln).expand(Bn, Ln)
        x = x + w["embeddings.position_embeddings.weight"][pos]
    x = ln("embeddings.LayerNorm", x)
    # get_extended_attention_mask: (1 - mask) * finfo.min, added to the scores
    ext = (1.0 - attention_mask[:, None, None, :].double()) * torch.finfo(torch.float64).min
    P = c["max_position_embeddings"]
    for n in range(c["num_hidden_layers"]):
        p = f"encoder.layer.{n}."

        def heads(t):
            return t.view(Bn, Ln, H, dh).permute(0, 2, 1, 3)

        q = heads(lin(p + "attention.self.query", x))
        k = heads(lin(p + "attention.self.key", x))
        v = heads(lin(p + "attention.self.value", x))
        if roformer:  # RoFormerSelfAttention: q and k rotated, positions 0..L-1
            table = roformer_sin_table(P, dh, float32_table)[:Ln]
            q, k = roformer_rotate(table, q), roformer_rotate(table, k)
        scores = q @ k.transpose(-1, -2)
        if relative:  # BertSelfAttention, position_embedding_type == "relative_key"
            l_ = torch.arange(Ln).view(-1, 1)
            r_ = torch.arange(Ln).view(1, -1)
            distance = l_ - r_
            table = w[p + "attention.self.distance_embedding.weight"]
            pe = table[distance + P - 1]  # [L, L, dh]
            scores = scores + torch.einsum("bhld,lrd->bhlr", q, pe)
        scores = scores / math.sqrt(dh) + ext
        probs = torch.softmax(scores, dim=-1)
        ctx = (probs @ v).permute(0, 2, 1, 3).reshape(Bn, Ln, d)
        a = ln(p + "attention.output.LayerNorm", lin(p + "attention.output.dense", ctx) + x)
        i = act(c["hidden_act"], lin(p + "intermediate.dense", a))
        x = ln(p + "output.LayerNorm", lin(p + "output.dense", i) + a)
    return x


# model_type -> (the source tree's models/ folder, class prefix)
HF_FAMILY = {"bert": ("bert", "Bert"), "roberta": ("roberta", "Roberta"),
             "xlm-roberta": ("xlm_roberta", "XLMRoberta"), "roformer": ("roformer", "RoFormer"),
             "esm": ("esm", "Esm"), "mpnet": ("mpnet", "MPNet")}


def hf_model_forward(mods, cfg, w, ids, types, attention_mask, float64_table=False):
    """The last hidden state from Hugging Face's own <Family>Model (transformers' modeling file,
    loaded by hf_source.load_hf): built from config.json's keys (the config class supplies
    HF's defaults for the absent ones), model.double(), eval mode, the F32-rounded weights by
    load_state_dict, return_dict off. float64_table: RoFormer's sin table / ESM's inv_freq
    buffers replaced by their float64 values (HF keeps them in float32)."""
    fam, cls = HF_FAMILY[cfg["model_type"]]
    config_cls, modeling = mods[fam]
    config = config_cls(**{k: v for k, v in cfg.items() if k != "model_type"})
    model_cls = getattr(modeling, cls + "Model")
    with torch.random.fork_rng():  # HF's init draws: keep the script's later draws unchanged
        model = model_cls(config) if fam == "roformer" else model_cls(config,
                                                                      add_pooling_layer=False)
    model.double().eval()
    c = full_config(cfg)
    dh = c["hidden_size"] // c["num_attention_heads"]
    state = {k: v for k, v in w.items() if not k.startswith("pooler.")}
    if fam == "roformer":  # a parameter HF fills at init: the F32 table the file stores
        state["encoder.embed_positions.weight"] = roformer_sin_table(
            c["max_position_embeddings"], dh, float32=not float64_table)
    if fam == "esm":  # persistent buffers, F32 as the file stores them
        for n in range(c["num_hidden_layers"]):
            state[f"encoder.layer.{n}.attention.self.rotary_embeddings.inv_freq"] = \
                esm_inv_freq(dh, float32=not float64_table)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # only the non-persistent buffers (position_ids, token_type_ids) are not in the file
    assert not unexpected and all(k.startswith("embeddings.") and k.endswith("_ids")
                                  for k in missing), (missing, unexpected)
    kwargs = {"attention_mask": attention_mask, "return_dict": False}
    if fam not in ("esm", "mpnet"):  # EsmModel and MPNetModel take no token types
        kwargs["token_type_ids"] = types
    with torch.no_grad():
        return model(ids, **kwargs)[0]


def write_hf_folder(out_dir, name, cfg, stored, io, description, sharded=False):
    """out_dir/name/ as save_pretrained writes it: config.json, the F32 weights `stored` in
    model.safetensors (or, sharded, two shards and model.safetensors.index.json whose
    weight_map names each tensor's shard), and io.safetensors with the inputs and expected
    outputs `io`, its metadata "description" saying what the case covers."""
    folder = os.path.join(out_dir, name)
    os.makedirs(folder, exist_ok=True)
    for old in os.listdir(folder):
        os.remove(os.path.join(folder, old))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    if sharded:
        names = sorted(stored)
        half = len(names) // 2
        shards = {"model-00001-of-00002.safetensors": names[:half],
                  "model-00002-of-00002.safetensors": names[half:]}
        weight_map, total = {}, 0
        for shard, members in shards.items():
            safetensors_py.save_file({k: stored[k] for k in members}, os.path.join(folder, shard),
                                     metadata={"format": "pt"})
            for k in members:
                weight_map[k] = shard
                total += stored[k].numel() * stored[k].element_size()
        with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
            f.write("\n")
    else:
        safetensors_py.save_file(stored, os.path.join(folder, "model.safetensors"),
                                 metadata={"format": "pt"})
    safetensors_py.save_file(io, os.path.join(folder, "io.safetensors"),
                             metadata={"description": description})


def update_index(out_dir, descriptions):
    """Sets out_dir/index.json's entries {name: {"description": ...}} for `descriptions`,
    keeping the cases the other scripts (golden_hf_t5.py, golden_hf_deberta.py) listed."""
    index_path = os.path.join(out_dir, "index.json")
    index = {}
    if os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f)
    for name, description in descriptions.items():
        index[name] = {"description": description}
    with open(index_path, "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")


def export(out_dir, name, mods):
    cfg, prefixed, sharded, old_names, description = CASES[name]
    c = full_config(cfg)
    torch.manual_seed(_seed(name))
    esm = c["model_type"] == "esm"
    mpnet = c["model_type"] == "mpnet"
    w = make_weights_esm(c) if esm else make_weights_mpnet(c) if mpnet else make_weights(c)
    B, L = globals()["B"], LEN.get(name, globals()["L"])
    pad = c["pad_token_id"]
    # ids avoid the pad id on unpadded tokens (RoBERTa's positions count non-pad tokens)
    ids = torch.randint(0, c["vocab_size"] - 1, (B, L), dtype=torch.int64)
    ids = ids + (ids >= pad).long()
    if esm:  # no mask token: token_dropout's scale is then exactly 0.88
        ids[ids == c["mask_token_id"]] = 4
    ids[1, L - N_PADDED:] = pad
    attention_mask = torch.ones(B, L, dtype=torch.int64)
    attention_mask[1, L - N_PADDED:] = 0
    io = {"input_ids": ids, "padding_mask": (1 - attention_mask).to(torch.uint8)}
    if c["type_vocab_size"] > 1:
        types = torch.randint(0, c["type_vocab_size"], (B, L), dtype=torch.int64)
        io["token_type_ids"] = types
    else:
        types = torch.zeros(B, L, dtype=torch.int64)
    # the expected outputs come from HF's own model; the hand-written forward cross-checks them
    keys = ["output"]
    if esm or c["model_type"] == "roformer":
        keys.append("output_float64_table")
    errs = {}
    for key in keys:
        table64 = key == "output_float64_table"
        io[key] = hf_model_forward(mods, cfg, w, ids, types, attention_mask, table64)
        with torch.no_grad():
            if mpnet:
                hand = mpnet_forward(c, w, ids, attention_mask)
            elif esm:
                hand = esm_forward(c, w, ids, attention_mask, not table64)
            else:
                hand = hf_forward(c, w, ids, types, attention_mask, not table64)
        errs[key] = (io[key] - hand).abs().max().item()
        assert errs[key] < 1e-12, f"{name} {key}: HF's model vs the hand-written one: {errs[key]}"
    print(name, " ".join(f"{k}: |HF - hand-written| max {v:.1e}" for k, v in errs.items()))

    # the file: base names, or the task model's (prefix + head tensors); old LayerNorm names
    stored = {}
    for k, v in w.items():
        if old_names and k.startswith("embeddings.LayerNorm."):
            k = k.replace(".weight", ".gamma").replace(".bias", ".beta")
        stored[k] = v.float()
    if c["model_type"] == "roformer":
        dh = c["hidden_size"] // c["num_attention_heads"]
        stored["encoder.embed_positions.weight"] = roformer_sin_table(
            c["max_position_embeddings"], dh).float()
    else:
        stored["embeddings.position_ids"] = torch.arange(c["max_position_embeddings"]).view(1, -1)
    if esm:  # the persistent RotaryEmbedding buffers
        dh = c["hidden_size"] // c["num_attention_heads"]
        for n in range(c["num_hidden_layers"]):
            stored[f"encoder.layer.{n}.attention.self.rotary_embeddings.inv_freq"] = \
                esm_inv_freq(dh).float()
    if prefixed:
        stored = {PREFIX[c["model_type"]] + k: v for k, v in stored.items()}
        d = c["hidden_size"]
        if c["model_type"] == "bert":  # BertForSequenceClassification
            stored["classifier.weight"] = torch.randn(2, d)
            stored["classifier.bias"] = torch.randn(2)
        elif esm:  # EsmForMaskedLM: lm_head.*
            stored["lm_head.dense.weight"] = torch.randn(d, d)
            stored["lm_head.bias"] = torch.randn(c["vocab_size"])
        elif c["model_type"] == "roformer":  # RoFormerForMaskedLM: cls.predictions.*
            stored["cls.predictions.transform.dense.weight"] = torch.randn(d, d)
            stored["cls.predictions.bias"] = torch.randn(c["vocab_size"])
        else:  # RobertaForMaskedLM: lm_head.*, its decoder tied to the word embeddings
            stored["lm_head.dense.weight"] = torch.randn(d, d)
            stored["lm_head.dense.bias"] = torch.randn(d)
            stored["lm_head.layer_norm.weight"] = torch.randn(d)
            stored["lm_head.layer_norm.bias"] = torch.randn(d)
            stored["lm_head.bias"] = torch.randn(c["vocab_size"])
            # a task model does not carry the pooler
            del stored["roberta.pooler.dense.weight"], stored["roberta.pooler.dense.bias"]

    write_hf_folder(out_dir, name, cfg, stored, io, description, sharded)
    return description


def selftest():
    """The hand-written attention against torch's MultiheadAttention (absolute, no positions),
    and the relative_key gather against a loop over i, j."""
    torch.manual_seed(0)
    c = full_config({"model_type": "bert", "vocab_size": 11, "hidden_size": 8,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 12,
                     "max_position_embeddings": 6})
    w = make_weights(c)
    ids = torch.randint(0, 11, (2, 5))
    types = torch.zeros(2, 5, dtype=torch.int64)
    mask = torch.ones(2, 5, dtype=torch.int64)
    mask[1, 3:] = 0
    got = hf_forward(c, w, ids, types, mask)
    # the same layer from torch's TransformerEncoderLayer (post-norm, gelu)
    emb = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][
        torch.arange(5)] + w["embeddings.token_type_embeddings.weight"][types]
    emb = F.layer_norm(emb, (8,), w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"],
                       1e-12)
    layer = torch.nn.TransformerEncoderLayer(8, 2, 12, dropout=0.0, activation="gelu",
                                             batch_first=True, layer_norm_eps=1e-12,
                                             dtype=torch.float64)
    p = "encoder.layer.0."
    sd = {
        "self_attn.in_proj_weight": torch.cat([w[p + f"attention.self.{s}.weight"]
                                               for s in ("query", "key", "value")]),
        "self_attn.in_proj_bias": torch.cat([w[p + f"attention.self.{s}.bias"]
                                             for s in ("query", "key", "value")]),
        "self_attn.out_proj.weight": w[p + "attention.output.dense.weight"],
        "self_attn.out_proj.bias": w[p + "attention.output.dense.bias"],
        "linear1.weight": w[p + "intermediate.dense.weight"],
        "linear1.bias": w[p + "intermediate.dense.bias"],
        "linear2.weight": w[p + "output.dense.weight"],
        "linear2.bias": w[p + "output.dense.bias"],
        "norm1.weight": w[p + "attention.output.LayerNorm.weight"],
        "norm1.bias": w[p + "attention.output.LayerNorm.bias"],
        "norm2.weight": w[p + "output.LayerNorm.weight"],
        "norm2.bias": w[p + "output.LayerNorm.bias"],
    }
    layer.load_state_dict(sd)
    layer.train()  # the fast path of eval() zeroes padded rows; train() with dropout 0 does not
    with torch.no_grad():
        want = layer(emb, src_key_padding_mask=mask.eq(0))
    keep = mask.bool()
    err = (want - got)[keep].abs().max().item()
    assert err < 1e-12, f"selftest: forward vs TransformerEncoderLayer: {err}"
    # relative_key: the einsum against the loop of BertSelfAttention's formula
    q = torch.randn(1, 1, 4, 3, dtype=torch.float64)
    D = torch.randn(2 * 6 - 1, 3, dtype=torch.float64)
    dist = torch.arange(4).view(-1, 1) - torch.arange(4).view(1, -1)
    fast = torch.einsum("bhld,lrd->bhlr", q, D[dist + 5])
    for i in range(4):
        for j in range(4):
            assert abs(fast[0, 0, i, j] - q[0, 0, i] @ D[i - j + 5]) < 1e-14
    # RoFormer's rotation is spec §4's interleaved rotary: pair (2m, 2m+1), angle p·10000^(-2m/dh)
    x = torch.randn(1, 1, 5, 4, dtype=torch.float64)
    y = roformer_rotate(roformer_sin_table(5, 4, float32=False), x)
    for p_ in range(5):
        for m in range(2):
            th = p_ * 10000.0 ** (-2 * m / 4)
            a, b = x[0, 0, p_, 2 * m], x[0, 0, p_, 2 * m + 1]
            assert abs(y[0, 0, p_, 2 * m] - (a * math.cos(th) - b * math.sin(th))) < 1e-14
            assert abs(y[0, 0, p_, 2 * m + 1] - (a * math.sin(th) + b * math.cos(th))) < 1e-14
    return err


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out", default=os.path.join(here, "tests", "data", "hf"))
    ap.add_argument("--hf-src", default="/work/hf_src/transformers",
                    help="transformers' source tree (the package directory), 4.40")
    args = ap.parse_args(argv)
    src = os.path.abspath(args.hf_src)
    if not os.path.exists(os.path.join(src, "models", "bert", "modeling_bert.py")):
        sys.exit(f"no transformers source at {src}")
    mods = load_hf(src, [HF_FAMILY[t] for t in ("bert", "roberta", "xlm-roberta", "roformer",
                                                  "esm", "mpnet")])
    print(f"selftest: forward matches torch.nn.TransformerEncoderLayer within {selftest():.1e}")
    os.makedirs(args.out, exist_ok=True)
    descriptions = {}
    for name in CASES:
        descriptions[name] = export(args.out, name, mods)
        print("wrote", name)
    update_index(args.out, descriptions)


if __name__ == "__main__":
    main()
