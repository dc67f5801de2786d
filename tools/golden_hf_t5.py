# SPDX-License-Identifier: MIT
"""Golden Hugging Face T5 / mT5 checkpoint folders for spec §7 (docs/model-format.md, "Hugging
Face checkpoints", rows t5 and mt5), computed by Hugging Face's own modeling code.

transformers is not installable here, but its source (4.40) can be read from a directory
(--hf-src, default /work/hf_src/transformers; e.g. `git archive` of a repository that vendors
it). This script loads that tree's own files, unchanged and not copied:
    models/t5/configuration_t5.py, models/t5/modeling_t5.py,
    models/mt5/configuration_mt5.py, models/mt5/modeling_mt5.py,
    activations.py, utils/model_parallel_utils.py, models/deprecated/_archive_maps.py
under a stand-in `transformers` package whose other modules (which need huggingface_hub,
safetensors, tokenizers, packaging) are small stubs (tools/hf_source.py): logging, docstring
decorators, PretrainedConfig (keys become attributes, attribute_map aliases),
PreTrainedModel (no weight initialisation: every parameter is set below;
get_extended_attention_mask as ModuleUtilsMixin's for an encoder, (1 − mask) · finfo.min;
get_head_mask without head masks), output classes, packaging.version.parse. Only HF's code
computes the forward: the encoder stack (T5Stack) of T5EncoderModel /
MT5ForConditionalGeneration in float64 (model.double()), eval mode, on F32-rounded random
weights.

Each folder tests/data/hf/<name>/ holds what `save_pretrained` writes (config.json,
model.safetensors or model.safetensors.index.json with shards) and io.safetensors:
`input_ids` (I64 [batch, len]), `padding_mask` (U8, 1 = padded, right padding), `output`
(F64 [batch, len, d_model]): HF's last hidden state, which keeps T5LayerNorm's variance and
the softmax in float32 as HF does; `output_float64_norm_softmax`: the same HF forward with
those two in float64 (T5LayerNorm.forward replaced by its float64 formula, Tensor.float()
the identity on float64 tensors while it runs), which relpos (double) must match to rounding.
tests/data/hf/index.json gains the cases (the other cases come from tools/golden_hf.py).

    /usr/bin/python3 tools/golden_hf_t5.py [--hf-src DIR] [--out tests/data/hf]
"""

import argparse
import contextlib
import os
import sys
import zlib

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_hf import update_index, write_hf_folder  # noqa: E402
from hf_source import load_hf  # noqa: E402

B = 2
N_PADDED = 5  # row 1's last tokens are padding

# name -> (HF class, config.json as save_pretrained writes it, len, stored, sharded, description)
#   stored: "tied" keeps encoder.embed_tokens.weight beside shared.weight (as older files do);
#   "save_pretrained" drops the tied copies as save_pretrained does (lm_head stays when untied)
CASES = {
    "t5_encoder": (
        "T5EncoderModel",
        {"model_type": "t5", "architectures": ["T5EncoderModel"], "vocab_size": 50,
         "d_model": 32, "d_kv": 16, "num_heads": 2, "d_ff": 48, "num_layers": 2,
         "relative_attention_num_buckets": 16, "relative_attention_max_distance": 20,
         "feed_forward_proj": "relu"},
        40, "tied", False,
        "T5EncoderModel (HF's modeling_t5.py in float64): relu, plain FFN (wi, wo), d_kv 16 (a "
        "power of 4: the folded sqrt(d_kv) is exact), 16 buckets with max_distance 20 at len 40 "
        "(log buckets and the clamp), layer_norm_epsilon by default; shared.weight with its tied "
        "copy encoder.embed_tokens.weight; an old-style config without dense_act_fn"),
    "mt5_conditional_generation_sharded": (
        "MT5ForConditionalGeneration",
        {"model_type": "mt5", "architectures": ["MT5ForConditionalGeneration"],
         "vocab_size": 60, "d_model": 24, "d_kv": 8, "num_heads": 3, "d_ff": 40,
         "num_layers": 2, "num_decoder_layers": 1, "relative_attention_num_buckets": 32,
         "relative_attention_max_distance": 128, "layer_norm_epsilon": 1e-5,
         "feed_forward_proj": "gated-gelu", "dense_act_fn": "gelu_new", "is_gated_act": True,
         "tie_word_embeddings": False, "is_encoder_decoder": True, "decoder_start_token_id": 0,
         "pad_token_id": 0, "eos_token_id": 1},
        24, "save_pretrained", True,
        "MT5ForConditionalGeneration (HF's modeling_mt5.py in float64): gated-gelu (wi_0 "
        "activated by gelu_new, wi_1 linear), untied lm_head and the decoder skipped, d_kv 8 "
        "(not a power of 4: sqrt(8) folded into the query rows is rounded), 32 buckets at len 24, "
        "layer_norm_epsilon 1e-5, sharded over two files"),
}


def _seed(name):
    return zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF


@contextlib.contextmanager
def float64_norm_softmax(modeling):
    """HF's forward with T5LayerNorm's variance and the attention softmax in float64: the
    norm's forward replaced by the same formula without the float32 cast, and Tensor.float()
    (which T5Attention calls before its softmax) the identity on float64 tensors."""
    norm_cls = modeling.T5LayerNorm if hasattr(modeling, "T5LayerNorm") else modeling.MT5LayerNorm
    old_forward, old_float = norm_cls.forward, torch.Tensor.float

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) +
                                              self.variance_epsilon))

    def float_(self, *a, **k):
        return self if self.dtype == torch.float64 else old_float(self, *a, **k)

    norm_cls.forward, torch.Tensor.float = forward, float_
    try:
        yield
    finally:
        norm_cls.forward, torch.Tensor.float = old_forward, old_float


def set_weights(model, d_kv):
    """Every parameter random, rounded to float32 (the file stores F32), in float64."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                v = 1 + 0.2 * torch.randn(p.shape, dtype=torch.float64)
            elif "relative_attention_bias" in name:
                v = 0.5 * torch.randn(p.shape, dtype=torch.float64)
            elif name in ("shared.weight", "lm_head.weight"):
                v = torch.randn(p.shape, dtype=torch.float64)
            else:  # a Linear [out, in]; q as T5's initialisation, (d_model · d_kv)^-1/2
                v = torch.randn(p.shape, dtype=torch.float64) / p.shape[1] ** 0.5
                if name.endswith(".q.weight"):
                    v = v / d_kv ** 0.5
            p.copy_(v.float().double())
    return model.double().eval()


def export(mods, out_dir, name):
    cls_name, cfg, L, stored_as, sharded, description = CASES[name]
    fam = cfg["model_type"]
    config_cls, modeling = mods[fam]
    config = config_cls(**{k: v for k, v in cfg.items() if k not in ("model_type", "architectures")})
    torch.manual_seed(_seed(name))
    model = getattr(modeling, cls_name)(config)
    assert model.encoder.embed_tokens is model.shared  # T5Stack reads the shared table
    set_weights(model, cfg["d_kv"])

    ids = torch.randint(2, cfg["vocab_size"], (B, L), dtype=torch.int64)
    mask = torch.ones(B, L, dtype=torch.int64)
    ids[1, L - N_PADDED:] = config.pad_token_id
    mask[1, L - N_PADDED:] = 0
    io = {"input_ids": ids, "padding_mask": (1 - mask).to(torch.uint8)}
    with torch.no_grad():
        io["output"] = model.encoder(input_ids=ids, attention_mask=mask, return_dict=False)[0]
        with float64_norm_softmax(modeling):
            io["output_float64_norm_softmax"] = model.encoder(
                input_ids=ids, attention_mask=mask, return_dict=False)[0]
    assert io["output"].dtype == torch.float64

    sd = model.state_dict()
    if stored_as == "save_pretrained":  # tied copies dropped (_tied_weights_keys)
        for k in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            sd.pop(k, None)
        assert "lm_head.weight" in sd and any(k.startswith("decoder.") for k in sd)
    else:
        assert "encoder.embed_tokens.weight" in sd and "shared.weight" in sd
    stored = {k: v.float().contiguous() for k, v in sd.items()}

    write_hf_folder(out_dir, name, cfg, stored, io, description, sharded)
    diff = (io["output"] - io["output_float64_norm_softmax"])[mask.bool()].abs().max().item()
    print(f"wrote {name}: HF's float32 variance and softmax move the output by {diff:.1e}")
    return description


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--hf-src", default="/work/hf_src/transformers",
                    help="transformers 4.40's package directory (the one holding models/)")
    ap.add_argument("--out", default=os.path.join(here, "tests", "data", "hf"))
    args = ap.parse_args(argv)
    mods = load_hf(os.path.abspath(args.hf_src), [("t5", "T5"), ("mt5", "MT5")])
    os.makedirs(args.out, exist_ok=True)
    update_index(args.out, {name: export(mods, args.out, name) for name in CASES})


if __name__ == "__main__":
    main()
