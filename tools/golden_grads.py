# SPDX-License-Identifier: MIT
"""Golden gradients from PyTorch autograd for the non-attention modules and the losses of
spec section 6 (tests/data/grads/), in float64 with fixed seeds and every parameter random
(torch zero-inits biases and one-inits LayerNorm, which would hide bugs there).

Each module file holds the parameters under their spec names, a batch `input`
[batch, len, d_model], an output gradient `dout` (the loss is sum(output * dout), so autograd's
gradients are exactly what backward(dout) must give), the forward `output`, and
`grad.<name>` for every parameter plus `grad.input`:

* layer_norm.safetensors: torch.nn.LayerNorm(d_model), tensors `norm.weight` / `norm.bias`
  (the final norm's names; layers.{n}.norm1 / norm2 are the same module).
* feed_forward_relu.safetensors, feed_forward_gelu.safetensors: linear2(act(linear1(x))) with
  F.relu and F.gelu (exact, erf), as torch.nn.TransformerEncoderLayer's feed-forward.

* attention_none.safetensors, attention_none_causal.safetensors: one layer of
  tools/reference.py's RefAttention (spec section 3, position type none) over 3 items with right
  padding of 0, 3 and all 7 tokens (every row of the last item sees no key: its weights are 0,
  spec section 2), without and with the causal mask; tensors `self_attn.*`, `padding_mask` U8.
* attention_rotary.safetensors, attention_rotary_yarn_interleaved_causal.safetensors: the same
  with position type rotary (d_model 12, 2 heads of 6, rotary_dim 4 so two components pass
  through): the half pairing unscaled, and the interleaved pairing with base 100 and yarn
  scaling (factor 4, L0 4: an attention factor 1.139 multiplying cos and sin) under the causal
  mask. The call length is 7 (plain positions).
* attention_t5.safetensors, attention_t5_causal.safetensors, attention_alibi.safetensors
  (BIAS_CASES): the same with the score biases, d_model 8; t5 with 8 buckets and
  max_distance 5 (distances up to 6 at length 7, so buckets are shared and the last ones clamp),
  bidirectional, then causal (one-sided buckets); `position.relative_attention_bias` and its
  gradient. alibi (max_bias 4) has no tensor of its own.
* attention_learned*.safetensors, attention_sinusoidal*.safetensors (RELATIVE_CASES): the
  relative key and value terms, d_model 8; learned (K 2 or 3) keys and values, keys only and
  values only, at plain positions and at explicit ids (`position_ids` I64 [3, 7], unsorted with
  gaps), with and without the causal mask: `self_attn.relative_key` / `relative_value` and
  their gradients (each layer has its own tables); sinusoidal (base 100) keys and values,
  clamped to K 3 and unclamped at explicit ids under the causal mask (no tensor of its own).
* encoder_*.safetensors (ENCODER_CASES): a 2-layer tools/reference.py RefEncoder (d_model 8,
  2 heads, d_ff 12) on float `input` [2, 6, 8] with the second item padded by 2, tensors under
  their model-file names: none post-norm; rotary (rotary_dim 2) pre-norm with the final norm,
  gelu and the causal mask; absolute post-norm with the final norm; additive (learned source,
  window 2, max_distance 3, so `position.weight` gets a gradient) pre-norm with gelu; t5 (6
  buckets, max_distance 4) post-norm: `position.relative_attention_bias`, shared by both layers,
  gets the sum of their gradients; learned (max_distance 2) pre-norm causal: each layer's own
  `layers.{n}.self_attn.relative_key` / `relative_value` and their gradients; sinusoidal
  (max_distance 3, keys and values, base 100) post-norm with the final norm.
* attention_xl*.safetensors, attention_kerple*.safetensors (XL_KERPLE_CASES): one layer as
  above (d_model 8, 2 heads of 4) with Transformer-XL's terms (base 100): unclamped at plain
  positions, then clamped to K 3 at RELATIVE_IDS under the causal mask; `self_attn.r_net.weight`
  (the layer's own), `position.r_w_bias` / `position.r_r_bias` (u, v) and their gradients. KERPLE
  in the log form at plain positions and in the power form at RELATIVE_IDS, causal:
  `position.kerple_r1` / `position.kerple_r2` and their gradients (r1, r2 drawn inside the
  domain, r2 in (0.2, 1.8)).
* encoder_xl_pre_causal.safetensors, encoder_kerple_power_post_final.safetensors,
  encoder_kerple_log_pre.safetensors (XL_KERPLE_ENCODER_CASES): two layers as ENCODER_CASES;
  xl (max_distance 3) pre-norm causal: each layer's `layers.{n}.self_attn.r_net.weight` and the
  sums over both layers of u's and v's gradients; kerple power post-norm with the final norm and
  log pre-norm: r1's and r2's gradients summed over the layers.

The loss files:

* cross_entropy.safetensors: F.cross_entropy(logits, targets, ignore_index=-100,
  reduction="mean") over `logits` [batch, len, vocab] drawn wide (scale 30, so a naive
  exp() would overflow in float) and `targets` I64 with -100 in the middle and at an end;
  `loss` [1] and `grad.logits`.
* mse.safetensors: F.mse_loss(output, target) (mean over every element); `loss`, `grad.output`.
* tail_ce.safetensors: the encoder's non-attention path end to end, token ids -> embed.weight ->
  final norm -> head -> cross-entropy, with repeated ids and an ignored target; `loss` and the
  gradients of `embed.weight`, `norm.*`, `head.*` under their spec names.

The block options of spec section 7 (OPTION_MODULE_CASES, OPTION_ENCODER_CASES):

* rms_norm.safetensors: T5's RMSNorm x * rsqrt(mean(x^2) + eps) * w (eps 1e-6), `norm.weight`
  only (no bias tensor).
* feed_forward_<case>.safetensors: plain or gated (linear2(act(linear1 x) * linear3 x)), with
  or without biases, activations relu, gelu and gelu_tanh (F.gelu(approximate="tanh")).
* encoder_opt_*.safetensors: 2 layers (d_model 8, 2 heads, d_ff 12) of
  tools/golden_block_options.py's forward (spec §1-§4 with §7's options, written from the
  formulas, independent of reference.py's encoder), loss sum(output * dout), gradients of every
  tensor under its model-file name. t5_block: rms norms, no biases, gated gelu_tanh, pre-norm,
  final rms norm, t5 buckets, on a float `input` (second item padded by 2). rms_post_rotary:
  post-norm rms, no biases, plain gelu_tanh, rotary. The embedding stage on `input_ids`:
  bert_embed_absolute: embed_norm, pos_embed_offset 2 (P = 10: rows no token reaches get
  zero), 2 token types (`token_type_ids` given), post-norm LayerNorm, gated exact gelu with
  biases (linear3.bias), absolute sinusoid after embed_norm; embed_t5_ids: embed_norm,
  pos_embed_offset 1 with explicit `position_ids` that repeat (so rows get sums of several
  tokens), token types absent from the input (all 0), relu, t5 buckets.

    /usr/bin/python3 tools/golden_grads.py [out_dir]   # default tests/data/grads
    /usr/bin/python3 tools/golden_grads.py --options [out_dir]   # only section 7's files
"""

import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import golden_block_options  # noqa: E402  (spec §7's forward, written from the formulas)
import safetensors_py  # noqa: E402
from reference import (PositionParams, RefAttention, RefEncoder, parse_config,  # noqa: E402
                       rotary_inv_freq)

DT = torch.float64


def save(path, tensors):
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    safetensors_py.save_file(tensors, path)
    size = os.path.getsize(path)
    assert size < 50_000, f"{path}: {size} bytes, golden files must stay small"
    print(f"  {os.path.basename(path)}: {size} bytes")


def module_case(path, module, names, x):
    """Forward and autograd backward of `module` on x with a random output gradient."""
    x = x.clone().requires_grad_(True)
    out = module(x)
    dout = torch.randn_like(out)
    (out * dout).sum().backward()
    tensors = {"input": x, "dout": dout, "output": out, "grad.input": x.grad}
    for spec_name, p in zip(names, module.parameters()):
        tensors[spec_name] = p
        tensors["grad." + spec_name] = p.grad
    save(path, tensors)


class FeedForward(torch.nn.Module):
    def __init__(self, d_model, d_ff, act):
        super().__init__()
        self.linear1 = torch.nn.Linear(d_model, d_ff, dtype=DT)
        self.linear2 = torch.nn.Linear(d_ff, d_model, dtype=DT)
        self.act = act

    def forward(self, x):
        return self.linear2(self.act(self.linear1(x)))


def randomize(module, scale=0.5):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * scale)


def golden_modules(out_dir):
    batch, length, d, d_ff = 2, 5, 8, 12
    torch.manual_seed(150)
    norm = torch.nn.LayerNorm(d, eps=1e-5, dtype=DT)
    randomize(norm)
    x = torch.randn(batch, length, d, dtype=DT) * 2 + 0.5
    module_case(os.path.join(out_dir, "layer_norm.safetensors"), norm,
                ["norm.weight", "norm.bias"], x)
    for name, act in (("relu", F.relu), ("gelu", F.gelu)):
        torch.manual_seed(151)
        ffn = FeedForward(d, d_ff, act)
        randomize(ffn)
        x = torch.randn(batch, length, d, dtype=DT)
        module_case(os.path.join(out_dir, f"feed_forward_{name}.safetensors"), ffn,
                    ["linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"], x)


def in_domain(shared):
    """KERPLE's r1, r2 back inside spec section 4's domain after randomize (> 0, r2 <= 2)."""
    with torch.no_grad():
        for name in ("kerple_r1", "kerple_r2"):
            if hasattr(shared, name):
                p = getattr(shared, name)
                p.copy_(0.2 + 1.6 * torch.rand_like(p))


def golden_attention(out_dir, causal, position=None, name=None, d=8, seed=155, ids=None):
    """One layer of RefAttention over 3 items with right padding of 0, 3 and all 7 tokens;
    `position` a §4 position object (default none); `ids` explicit position ids [3][7] (saved as
    `position_ids` I64), else plain positions."""
    torch.manual_seed(seed)
    torch.set_default_dtype(DT)
    h, bsz, length, pads = 2, 3, 7, (0, 3, 7)
    cfg = parse_config({"d_model": d, "n_heads": h, "n_layers": 1, "d_ff": 4, "causal": causal,
                        "position": position or {"type": "none"}})
    attn = RefAttention(cfg)
    randomize(attn)
    shared = PositionParams(cfg)  # t5's table, xl's u and v, kerple's r1 and r2
    randomize(shared)
    in_domain(shared)
    x = torch.randn(bsz, length, d, dtype=DT).requires_grad_(True)
    pad = torch.zeros(bsz, length, dtype=torch.bool)
    for b, n in enumerate(pads):
        pad[b, length - n:] = n > 0
    visible = (~pad)[:, None, :].expand(bsz, length, length).clone()
    if causal:
        visible &= torch.tril(torch.ones(length, length, dtype=torch.bool))
    positions = torch.arange(length).expand(bsz, length).clone()
    if ids is not None:
        positions = torch.tensor(ids, dtype=torch.int64)
    rotary = None
    if cfg["position"]["type"] == "rotary":
        rotary = rotary_inv_freq(cfg["position"], length)  # call length: largest position + 1
    out, _ = attn(x, visible, positions, rotary, shared)
    dout = torch.randn_like(out)
    (out * dout).sum().backward()
    tensors = {"input": x, "dout": dout, "output": out, "grad.input": x.grad,
               "padding_mask": pad.to(torch.uint8)}
    if ids is not None:
        tensors["position_ids"] = positions
    for pname, p in attn.named_parameters():
        tensors[f"self_attn.{pname}"] = p
        tensors[f"grad.self_attn.{pname}"] = p.grad
    for pname, p in shared.named_parameters():
        tensors[f"position.{pname}"] = p
        tensors[f"grad.position.{pname}"] = p.grad
    torch.set_default_dtype(torch.float32)
    name = name or ("attention_none" + ("_causal" if causal else ""))
    save(os.path.join(out_dir, f"{name}.safetensors"), tensors)


def golden_losses(out_dir):
    torch.manual_seed(152)
    batch, length, vocab = 3, 4, 7
    logits = (torch.randn(batch, length, vocab, dtype=DT) * 30).requires_grad_(True)
    targets = torch.randint(0, vocab, (batch, length))
    targets[1, 2] = -100  # in the middle
    targets[2, 3] = -100  # at the end
    loss = F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1), ignore_index=-100,
                           reduction="mean")
    loss.backward()
    save(os.path.join(out_dir, "cross_entropy.safetensors"),
         {"logits": logits, "targets": targets, "loss": loss.reshape(1),
          "grad.logits": logits.grad})

    torch.manual_seed(153)
    output = torch.randn(2, 4, 8, dtype=DT).requires_grad_(True)
    target = torch.randn(2, 4, 8, dtype=DT)
    loss = F.mse_loss(output, target)
    loss.backward()
    save(os.path.join(out_dir, "mse.safetensors"),
         {"output": output, "target": target, "loss": loss.reshape(1),
          "grad.output": output.grad})


def golden_tail(out_dir):
    torch.manual_seed(154)
    batch, length, d, vocab = 2, 6, 8, 11
    embed = torch.nn.Embedding(vocab, d, dtype=DT)
    norm = torch.nn.LayerNorm(d, dtype=DT)
    head = torch.nn.Linear(d, vocab, dtype=DT)
    for m in (embed, norm, head):
        randomize(m)
    ids = torch.tensor([[3, 1, 3, 7, 0, 3], [10, 1, 5, 5, 2, 9]])  # repeats; 4, 6, 8 unused
    targets = torch.tensor([[1, 3, 7, -100, 3, 0], [2, 10, 5, 5, 9, 4]])
    hidden = norm(embed(ids))
    logits = head(hidden)
    loss = F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1), ignore_index=-100)
    loss.backward()
    tensors = {"input_ids": ids, "targets": targets, "loss": loss.reshape(1), "logits": logits}
    for prefix, m in (("embed", embed), ("norm", norm), ("head", head)):
        for name, p in m.named_parameters():
            tensors[f"{prefix}.{name}"] = p
            tensors[f"grad.{prefix}.{name}"] = p.grad
    save(os.path.join(out_dir, "tail_ce.safetensors"), tensors)


ENCODER_CASES = (
    ("encoder_none_post", {"norm_first": False, "position": {"type": "none"}}),
    ("encoder_rotary_pre_final_causal",
     {"norm_first": True, "final_norm": True, "causal": True, "activation": "gelu",
      "position": {"type": "rotary", "rotary_dim": 2}}),
    ("encoder_absolute_post_final", {"norm_first": False, "final_norm": True,
                                     "position": {"type": "absolute"}}),
    ("encoder_additive_pre", {"norm_first": True, "activation": "gelu",
                              "position": {"type": "additive", "source": "learned",
                                           "window": 2, "max_distance": 3}}),
    ("encoder_t5_post", {"norm_first": False,
                         "position": {"type": "t5", "num_buckets": 6, "max_distance": 4}}),
    ("encoder_learned_pre_causal",
     {"norm_first": True, "causal": True,
      "position": {"type": "learned", "max_distance": 2}}),
    ("encoder_sinusoidal_post_final",
     {"norm_first": False, "final_norm": True,
      "position": {"type": "sinusoidal", "max_distance": 3, "values": True, "base": 100.0}}),
)


def golden_encoder(out_dir, name, extra, seed):
    """A 2-layer RefEncoder (d_model 8, 2 heads, d_ff 12) on float input [2, 6, 8], the second
    item padded by 2; every parameter random; loss sum(output * dout)."""
    torch.manual_seed(seed)
    torch.set_default_dtype(DT)
    config = {"d_model": 8, "n_heads": 2, "n_layers": 2, "d_ff": 12, **extra}
    enc = RefEncoder(config)
    randomize(enc)
    for m in enc.modules():
        in_domain(m)
    bsz, length = 2, 6
    x = torch.randn(bsz, length, 8, dtype=DT).requires_grad_(True)
    pad = torch.zeros(bsz, length, dtype=torch.bool)
    pad[1, length - 2:] = True
    out, _ = enc(x, padding_mask=pad)
    dout = torch.randn_like(out)
    (out * dout).sum().backward()
    tensors = {"input": x, "dout": dout, "output": out, "grad.input": x.grad,
               "padding_mask": pad.to(torch.uint8)}
    for pname, p in enc.named_parameters():
        tensors[pname] = p
        tensors["grad." + pname] = p.grad
    torch.set_default_dtype(torch.float32)
    save(os.path.join(out_dir, f"{name}.safetensors"), tensors)


BIAS_CASES = (
    ("attention_t5", False, {"type": "t5", "num_buckets": 8, "max_distance": 5}),
    ("attention_t5_causal", True, {"type": "t5", "num_buckets": 8, "max_distance": 5}),
    ("attention_alibi", False, {"type": "alibi", "max_bias": 4.0}),
)


ROTARY_CASES = (
    ("attention_rotary", False, {"type": "rotary", "rotary_dim": 4}),
    ("attention_rotary_yarn_interleaved_causal", True,
     {"type": "rotary", "rotary_dim": 4, "interleaved": True, "base": 100.0,
      "scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4}}),
)


# Explicit ids for RELATIVE_CASES: not sorted, with gaps and repeats (the indexed skew), one
# row left-padded in spirit (starting at 5).
RELATIVE_IDS = ([3, 0, 9, 2, 4, 1, 6], [5, 6, 7, 8, 9, 10, 11], [0, 2, 4, 6, 8, 10, 12])

# The relative key and value terms (d_model 8, 2 heads of 4): learned with K = 2 (distances up
# to 6 at length 7: most pairs clamp) keys and values, keys only, then values only at explicit
# ids under the causal mask; sinusoidal keys and values clamped to K = 3 and unclamped (base
# 100, so the rows vary fast), the unclamped one at explicit ids and causal.
RELATIVE_CASES = (
    ("attention_learned", False, {"type": "learned", "max_distance": 2}, None),
    ("attention_learned_keys_ids_causal", True,
     {"type": "learned", "max_distance": 2, "values": False}, RELATIVE_IDS),
    ("attention_learned_values_ids", False,
     {"type": "learned", "max_distance": 3, "keys": False}, RELATIVE_IDS),
    ("attention_learned_ids_causal", True, {"type": "learned", "max_distance": 2},
     RELATIVE_IDS),
    ("attention_sinusoidal_clamped", False,
     {"type": "sinusoidal", "max_distance": 3, "values": True, "base": 100.0}, None),
    ("attention_sinusoidal_ids_causal", True,
     {"type": "sinusoidal", "values": True, "base": 100.0}, RELATIVE_IDS),
)


# Transformer-XL's terms and KERPLE's bias (d_model 8, 2 heads of 4).
XL_KERPLE_CASES = (
    ("attention_xl", False, {"type": "xl", "base": 100.0}, None),
    ("attention_xl_clamped_ids_causal", True, {"type": "xl", "max_distance": 3, "base": 100.0},
     RELATIVE_IDS),
    ("attention_kerple_log", False, {"type": "kerple", "form": "log"}, None),
    ("attention_kerple_power_ids_causal", True, {"type": "kerple", "form": "power"},
     RELATIVE_IDS),
)

XL_KERPLE_ENCODER_CASES = (
    ("encoder_xl_pre_causal", {"norm_first": True, "causal": True,
                               "position": {"type": "xl", "max_distance": 3}}),
    ("encoder_kerple_power_post_final", {"norm_first": False, "final_norm": True,
                                         "position": {"type": "kerple", "form": "power"}}),
    ("encoder_kerple_log_pre", {"norm_first": True, "activation": "gelu",
                                "position": {"type": "kerple", "form": "log"}}),
)


class RMSNorm(torch.nn.Module):
    """T5's T5LayerNorm (spec section 7 `norm: "rms"`): x * rsqrt(mean(x^2) + eps) * w."""

    def __init__(self, d, eps):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(d, dtype=DT))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class OptionFeedForward(torch.nn.Module):
    """Spec section 7's feed-forward: linear2(act(linear1 x) [* linear3 x]), biases optional."""

    def __init__(self, d_model, d_ff, act, gated, bias):
        super().__init__()
        self.linear1 = torch.nn.Linear(d_model, d_ff, bias=bias, dtype=DT)
        self.linear2 = torch.nn.Linear(d_ff, d_model, bias=bias, dtype=DT)
        self.linear3 = torch.nn.Linear(d_model, d_ff, bias=bias, dtype=DT) if gated else None
        self.act = act

    def forward(self, x):
        h = self.act(self.linear1(x))
        if self.linear3 is not None:
            h = h * self.linear3(x)
        return self.linear2(h)


ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu,
               "gelu_tanh": lambda t: F.gelu(t, approximate="tanh")}

# name -> (activation, gated, bias)
OPTION_MODULE_CASES = {
    "feed_forward_gated_gelu_tanh_nobias": ("gelu_tanh", True, False),
    "feed_forward_gated_relu": ("relu", True, True),
    "feed_forward_gated_gelu": ("gelu", True, True),
    "feed_forward_gelu_tanh": ("gelu_tanh", False, True),
    "feed_forward_relu_nobias": ("relu", False, False),
}


def golden_option_modules(out_dir):
    batch, length, d, d_ff = 2, 5, 8, 12
    torch.manual_seed(180)
    norm = RMSNorm(d, 1e-6)
    randomize(norm)
    with torch.no_grad():
        norm.weight.add_(1.0)  # near the identity, as trained ones
    x = torch.randn(batch, length, d, dtype=DT) * 2 + 0.5
    module_case(os.path.join(out_dir, "rms_norm.safetensors"), norm, ["norm.weight"], x)
    for seed, (name, (act, gated, bias)) in enumerate(OPTION_MODULE_CASES.items(), start=181):
        torch.manual_seed(seed)
        ffn = OptionFeedForward(d, d_ff, ACTIVATIONS[act], gated, bias)
        randomize(ffn)
        x = torch.randn(batch, length, d, dtype=DT)
        names = [n for n, _ in ffn.named_parameters()]
        module_case(os.path.join(out_dir, f"{name}.safetensors"), ffn, names, x)


OPT_SIZES = {"d_model": 8, "n_heads": 2, "n_layers": 2, "d_ff": 12}
# name -> (config, uses ids, explicit position ids, token types given)
OPTION_ENCODER_CASES = {
    "encoder_opt_t5_block": (
        {**OPT_SIZES, "norm": "rms", "bias": False, "ffn": "gated", "activation": "gelu_tanh",
         "norm_first": True, "final_norm": True, "layer_norm_eps": 1e-6,
         "position": {"type": "t5", "num_buckets": 6, "max_distance": 4}},
        False, False, False),
    "encoder_opt_rms_post_rotary": (
        {**OPT_SIZES, "norm": "rms", "bias": False, "activation": "gelu_tanh",
         "norm_first": False, "position": {"type": "rotary"}},
        False, False, False),
    "encoder_opt_bert_embed_absolute": (
        {**OPT_SIZES, "vocab_size": 11, "embed_norm": True, "pos_embed_offset": 2,
         "type_vocab_size": 2, "ffn": "gated", "activation": "gelu", "norm_first": False,
         "position": {"type": "absolute"}},
        True, False, True),
    "encoder_opt_embed_t5_ids": (
        {**OPT_SIZES, "vocab_size": 11, "embed_norm": True, "pos_embed_offset": 1,
         "type_vocab_size": 3, "activation": "relu", "norm_first": True, "final_norm": True,
         "position": {"type": "t5", "num_buckets": 6, "max_distance": 4}},
        True, True, False),
}


def golden_option_encoder(out_dir, name, seed):
    """tools/golden_block_options.py's forward with autograd: batch 2, len 6; item 1 padded by
    2 on the right (plain positions) or, with explicit ids, positions that repeat."""
    cfg, use_ids, explicit_pos, use_types = OPTION_ENCODER_CASES[name]
    torch.manual_seed(seed)
    bsz, length = 2, 6
    pos_rows = length + cfg.get("pos_embed_offset", 0) + 2  # two rows no token reaches
    w = golden_block_options.make_weights(cfg, pos_rows)
    w = {k: v.clone().requires_grad_(True) for k, v in w.items()}
    mask = torch.zeros(bsz, length, dtype=torch.uint8)
    mask[1, length - 2:] = 1
    tensors = {"padding_mask": mask}
    if explicit_pos:
        positions = torch.tensor([[0, 1, 1, 2, 5, 3], [4, 0, 0, 2, 2, 1]])
        tensors["position_ids"] = positions
    else:
        positions = torch.arange(length).expand(bsz, length).clone()
    types = None
    if use_ids:
        x = torch.tensor([[3, 1, 3, 7, 0, 3], [10, 1, 5, 5, 2, 9]])
        tensors["input_ids"] = x
        if use_types:
            types = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0]])
            tensors["token_type_ids"] = types
    else:
        x = torch.randn(bsz, length, cfg["d_model"], dtype=DT).requires_grad_(True)
        tensors["input"] = x
    out = golden_block_options.forward(cfg, w, x, mask, positions, types)
    dout = torch.randn_like(out)
    (out * dout).sum().backward()
    tensors.update({"dout": dout, "output": out})
    if not use_ids:
        tensors["grad.input"] = x.grad
    for pname, p in w.items():
        tensors[pname] = p
        tensors["grad." + pname] = p.grad
    save(os.path.join(out_dir, f"{name}.safetensors"), tensors)


def golden_options(out_dir):
    golden_option_modules(out_dir)
    for seed, name in enumerate(OPTION_ENCODER_CASES, start=190):
        golden_option_encoder(out_dir, name, seed)


def main():
    args = sys.argv[1:]
    options_only = "--options" in args
    args = [a for a in args if a != "--options"]
    out_dir = args[0] if args else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "grads")
    os.makedirs(out_dir, exist_ok=True)
    if options_only:
        golden_options(out_dir)
        return
    golden_options(out_dir)
    golden_modules(out_dir)
    golden_losses(out_dir)
    golden_tail(out_dir)
    golden_attention(out_dir, causal=False)
    golden_attention(out_dir, causal=True)
    # rotary (ROTARY_CASES): d_model 12, 2 heads of 6, partial rotation of 4
    for name, causal, position in ROTARY_CASES:
        golden_attention(out_dir, causal, position, name, d=12, seed=156)
    for name, causal, position in BIAS_CASES:
        golden_attention(out_dir, causal, position, name, d=8, seed=157)
    for seed, (name, causal, position, ids) in enumerate(RELATIVE_CASES, start=170):
        golden_attention(out_dir, causal, position, name, d=8, seed=seed, ids=ids)
    for seed, (name, extra) in enumerate(ENCODER_CASES, start=160):
        golden_encoder(out_dir, name, extra, seed)
    for seed, (name, causal, position, ids) in enumerate(XL_KERPLE_CASES, start=200):
        golden_attention(out_dir, causal, position, name, d=8, seed=seed, ids=ids)
    for seed, (name, extra) in enumerate(XL_KERPLE_ENCODER_CASES, start=210):
        golden_encoder(out_dir, name, extra, seed)


if __name__ == "__main__":
    main()
