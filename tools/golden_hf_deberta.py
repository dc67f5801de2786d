# SPDX-License-Identifier: MIT
"""The golden Hugging Face folder of model_type deberta-v2 (spec §7; tests/data/hf/deberta_v3/,
the same layout as tools/golden_hf.py's folders, and its entry in tests/data/hf/index.json).

Its output comes from Hugging Face's own code: transformers 4.40's DebertaV2Embeddings and
DebertaV2Encoder (modeling_deberta_v2.py, imported from the transformers source with small
stubs for the package's utilities by tools/hf_source.py; nothing of it is copied here),
run in float64 on the F32-rounded weights, return_dict off. HF rounds its score scale
sqrt(d_head (1 + c2p + p2c)) in float32 (`output`); `output_float64_table` is the same forward
with that scale in float64 (the module's `torch.float` read as float64), which relpos matches
to rounding. The checkpoint is what
DebertaV2ForSequenceClassification saves: the deberta. prefix, a pooler and a classifier
outside it (skipped). DeBERTa-v3's shape: no absolute positions (position_biased_input false),
relative attention with log buckets (position_buckets 8, max_relative_positions 16, so that a
length of 20 reaches the edge rows), pos_att_type as the "p2c|c2p" string, share_att_key,
norm_rel_ebd "layer_norm", type_vocab_size 0 (v3's), gelu.

    /usr/bin/python3 tools/golden_hf_deberta.py [--out tests/data/hf] [--hf-src /work/hf_src]
"""

import argparse
import os
import sys
import types

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_deberta import import_hf_deberta  # noqa: E402
from golden_hf import update_index, write_hf_folder  # noqa: E402

NAME = "deberta_v3"
CONFIG = {"model_type": "deberta-v2", "architectures": ["DebertaV2ForSequenceClassification"],
          "vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
          "intermediate_size": 24, "max_position_embeddings": 512, "relative_attention": True,
          "position_buckets": 8, "max_relative_positions": 16, "pos_att_type": "p2c|c2p",
          "share_att_key": True, "norm_rel_ebd": "layer_norm", "position_biased_input": False,
          "pad_token_id": 0}
DESCRIPTION = ("DebertaV2ForSequenceClassification (deberta. prefix, pooler and classifier "
               "skipped), DeBERTa-v3's shape: no absolute positions, log buckets (8, max 16) "
               "reached beyond at len 20, p2c|c2p as a string, share_att_key, rel_embeddings "
               "LayerNorm (norm_rel_ebd), HF's defaults for the rest (gelu, layer_norm_eps 1e-7, "
               "type_vocab_size 0); output from HF's own DebertaV2Embeddings + DebertaV2Encoder "
               "(its scale in float32 as HF keeps it; `output_float64_table`: in float64)")
B, L, N_PADDED = 2, 20, 4


def hf_config():
    """The config object HF's modules read: DebertaV2Config's defaults, then CONFIG."""
    c = {"hidden_act": "gelu", "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
         "type_vocab_size": 0, "layer_norm_eps": 1e-7, "conv_kernel_size": 0}
    c.update(CONFIG)
    c["pos_att_type"] = [x.strip() for x in c["pos_att_type"].lower().split("|")]
    return types.SimpleNamespace(**c)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out", default=os.path.join(here, "tests", "data", "hf"))
    ap.add_argument("--hf-src", default="/work/hf_src")
    args = ap.parse_args(argv)
    hf = import_hf_deberta(args.hf_src)
    if hf is None:
        sys.exit(f"no transformers source at {args.hf_src}")

    torch.manual_seed(1919)
    cfg = hf_config()
    emb, enc = hf.DebertaV2Embeddings(cfg), hf.DebertaV2Encoder(cfg)
    state = {}
    with torch.no_grad():
        for prefix, module in (("embeddings.", emb), ("encoder.", enc)):
            for k, v in module.state_dict().items():
                if k == "position_ids":
                    continue
                # weights at the scale of trained ones, F32-rounded: the file holds F32
                scale = 1.0 if k.endswith("LayerNorm.weight") else 0.3
                base = 1.0 if k.endswith("LayerNorm.weight") else 0.0
                state[prefix + k] = (base + torch.randn_like(v) * scale).float()
        emb.double().eval()
        enc.double().eval()
        emb.load_state_dict({k[len("embeddings."):]: v.double() for k, v in state.items()
                             if k.startswith("embeddings.")}, strict=False)
        enc.load_state_dict({k[len("encoder."):]: v.double() for k, v in state.items()
                             if k.startswith("encoder.")})
        ids = torch.randint(1, cfg.vocab_size, (B, L), dtype=torch.int64)
        ids[1, L - N_PADDED:] = cfg.pad_token_id
        mask = torch.ones(B, L, dtype=torch.int64)
        mask[1, L - N_PADDED:] = 0
        torch.set_default_dtype(torch.float64)  # HF's bucket divides in the default dtype
        try:
            x = emb(ids, mask=mask)
            out = enc(x, mask, output_hidden_states=False, return_dict=False)[0]
            # the same with HF's scale sqrt(d_head·(1 + c2p + p2c)) in float64 rather than
            # float32: the module's `torch.float` read as float64
            hf.torch = types.SimpleNamespace(**{k: getattr(torch, k) for k in dir(torch)
                                                if not k.startswith("__")})
            hf.torch.float = torch.float64
            out64 = enc(x, mask, output_hidden_states=False, return_dict=False)[0]
            hf.torch = torch
        finally:
            torch.set_default_dtype(torch.float32)
    assert 0 < (out - out64).abs().max().item() < 1e-6

    stored = {"deberta." + k: v for k, v in state.items()}
    d = cfg.hidden_size
    stored["pooler.dense.weight"] = torch.randn(d, d)
    stored["pooler.dense.bias"] = torch.randn(d)
    stored["classifier.weight"] = torch.randn(3, d)
    stored["classifier.bias"] = torch.randn(3)
    io = {"input_ids": ids, "padding_mask": (1 - mask).to(torch.uint8), "output": out,
          "output_float64_table": out64}
    write_hf_folder(args.out, NAME, CONFIG, stored, io, DESCRIPTION)
    update_index(args.out, {NAME: DESCRIPTION})
    print("wrote", NAME, sorted(k for k in stored if "layer.0" in k or "layer." not in k))


if __name__ == "__main__":
    main()
