# SPDX-License-Identifier: MIT
"""The independent PyTorch reference of relpos' model, written straight from the contract.

This is the implementation the C++ library is tested against, so it is deliberately naive:
every relative term is gathered per (query, key) pair into a [batch, len, len, ...] tensor
and contracted with an einsum whose indices read like the formula. Nothing is cached or
fused. Section numbers below refer to /work/shared/spec/model-format.md (docs/ in the repo):

  §1  config.json keys and defaults, tensor names and shapes (`RefEncoder.state_dict()`
      has exactly those names, so a `torch.nn.TransformerEncoder(batch_first=True)` state
      dict loads as-is with position type `none`).
  §2  the block (post-norm / pre-norm), key padding mask, positions p_i, the causal mask
      by index, "a query with no visible key gives z = 0".
  §3  the score  e_ij = (q_i.k_j + q_i.aK(c) + xl terms) / sqrt(d_head) + b_h(delta),
      delta = p_j - p_i, c = clamp(delta, -K, K), z_i = sum_j a_ij (v_j + aV(c)).
  §4  the position types: none, absolute (Vaswani et al. 2017), sinusoidal (relative),
      learned (Shaw et al. 2018), rotary (Su et al. 2021), additive; second wave: t5
      (Raffel et al. 2020), alibi (Press et al. 2022), xl (Dai et al. 2019) and the rotary
      `scaling` variants (linear, ntk, dynamic, yarn, llama3, longrope); third wave:
      kerple (Chi et al. 2022, log and power forms).

Use:
    model = RefEncoder(config).double()
    out, logits = model(x_or_ids, padding_mask=None, position_ids=None)
    out, logits, attn = model(x, return_attention=True)   # attn: per layer [B, H, L, L]

    /usr/bin/python3 tools/reference.py --selftest
"""

import argparse
import copy
import math
import sys

import torch
import torch.nn.functional as F

_REQUIRED = object()  # marks a key without default in the tables below

# §1: top-level keys and their defaults.
TOP_DEFAULTS = {
    "d_model": _REQUIRED,
    "n_heads": _REQUIRED,
    "n_layers": _REQUIRED,
    "d_ff": _REQUIRED,
    "activation": "relu",
    "norm_first": False,
    "layer_norm_eps": 1e-5,
    "final_norm": False,
    "causal": False,
    "vocab_size": None,
    "output_head": False,
    "position": {"type": "none"},
}

# §4: keys of each position type and their defaults (None = absent / null).
POSITION_DEFAULTS = {
    "none": {},
    "absolute": {"base": 10000.0},
    "sinusoidal": {"base": 10000.0, "max_distance": None, "keys": True, "values": False},
    "learned": {"max_distance": _REQUIRED, "keys": True, "values": True},
    "rotary": {"base": 10000.0, "rotary_dim": None, "interleaved": False, "scaling": None},
    "additive": {"source": _REQUIRED, "window": _REQUIRED, "max_distance": None,
                 "base": 10000.0},
    "t5": {"num_buckets": 32, "max_distance": 128, "bidirectional": None},
    "alibi": {"max_bias": 8.0},
    "xl": {"base": 10000.0, "max_distance": None},
    "kerple": {"form": _REQUIRED},
}

# §4 second wave: keys of each rotary scaling type and their defaults.
SCALING_DEFAULTS = {
    "linear": {"factor": _REQUIRED},
    "ntk": {"factor": _REQUIRED},
    "dynamic": {"factor": _REQUIRED, "original_max_position_embeddings": _REQUIRED},
    "yarn": {"factor": _REQUIRED, "original_max_position_embeddings": _REQUIRED,
             "beta_fast": 32.0, "beta_slow": 1.0, "mscale": None, "mscale_all_dim": None,
             "attention_factor": None, "truncate": True},
    "llama3": {"factor": _REQUIRED, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192},
    "longrope": {"short_factor": _REQUIRED, "long_factor": _REQUIRED,
                 "original_max_position_embeddings": _REQUIRED,
                 "max_position_embeddings": _REQUIRED, "attention_factor": None},
}


def _fill(given, defaults, where):
    """`given` with defaults filled in; unknown or missing required keys raise ValueError."""
    if not isinstance(given, dict):
        raise ValueError(f"{where}: expected an object")
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}")
    out = {}
    for key, default in defaults.items():
        if key in given:
            out[key] = given[key]
        elif default is _REQUIRED:
            raise ValueError(f"{where}: missing key '{key}'")
        else:
            out[key] = copy.deepcopy(default)
    return out


def parse_config(config):
    """The config of §1 with every default filled in (a new dict). Checks what the
    reference needs to be unambiguous; the C++ loader is the strict validator."""
    cfg = _fill(config, TOP_DEFAULTS, "config")
    for key in ("d_model", "n_heads", "n_layers", "d_ff"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ValueError(f"{key}: expected an integer >= 1, got {cfg[key]!r}")
    if cfg["d_model"] % cfg["n_heads"]:
        raise ValueError("d_model must be divisible by n_heads")
    if cfg["activation"] not in ("relu", "gelu"):
        raise ValueError(f"activation: expected relu or gelu, got {cfg['activation']!r}")
    if cfg["output_head"] and cfg["vocab_size"] is None:
        raise ValueError("output_head needs vocab_size")
    pos = cfg["position"]
    if not isinstance(pos, dict) or pos.get("type") not in POSITION_DEFAULTS:
        raise ValueError(f"position.type: unknown {pos!r}")
    ptype = pos["type"]
    rest = {k: v for k, v in pos.items() if k != "type"}
    pos = _fill(rest, POSITION_DEFAULTS[ptype], f"position ({ptype})")
    pos["type"] = ptype
    d_head = cfg["d_model"] // cfg["n_heads"]
    if ptype == "sinusoidal" and d_head % 2:
        raise ValueError("sinusoidal: d_head must be even")
    if ptype == "rotary":
        if pos["rotary_dim"] is None:
            pos["rotary_dim"] = d_head
        r = pos["rotary_dim"]
        if r % 2 or r > d_head or r < 2:
            raise ValueError(f"rotary_dim: expected even, 2..d_head, got {r}")
        if pos["scaling"] is not None:
            sc = pos["scaling"]
            if not isinstance(sc, dict) or sc.get("type") not in SCALING_DEFAULTS:
                raise ValueError(f"position.scaling.type: unknown {sc!r}")
            stype = sc["type"]
            sc = _fill({k: v for k, v in sc.items() if k != "type"},
                       SCALING_DEFAULTS[stype], f"position.scaling ({stype})")
            sc["type"] = stype
            if stype in ("ntk", "dynamic") and r == 2:
                raise ValueError(f"scaling {stype}: needs rotary_dim > 2 (exponent r/(r-2))")
            if stype == "longrope":
                for key in ("short_factor", "long_factor"):
                    if len(sc[key]) != r // 2:
                        raise ValueError(f"scaling.{key}: expected {r // 2} numbers")
            pos["scaling"] = sc
    if ptype == "additive":
        if pos["source"] not in ("sinusoidal", "learned"):
            raise ValueError(f"additive.source: unknown {pos['source']!r}")
        if pos["source"] == "learned" and pos["max_distance"] is None:
            raise ValueError("additive with learned source needs max_distance")
        if pos["source"] == "sinusoidal" and cfg["d_model"] % 2:
            raise ValueError("additive sinusoidal: d_model must be even")
    if ptype == "t5":
        if pos["bidirectional"] is None:
            pos["bidirectional"] = not cfg["causal"]
        b_half = pos["num_buckets"] // 2 if pos["bidirectional"] else pos["num_buckets"]
        if pos["max_distance"] <= b_half // 2:
            raise ValueError("t5: max_distance must be greater than the exact-bucket count")
    if ptype == "kerple" and pos["form"] not in ("log", "power"):
        raise ValueError(f"kerple.form: expected log or power, got {pos['form']!r}")
    cfg["position"] = pos
    return cfg


# ---------------------------------------------------------------------------------------
# Position functions (§4). Each takes integer tensors of any shape and returns floats.
# ---------------------------------------------------------------------------------------

def interleaved_sinusoid(p, dim, base, dtype):
    """s(p)[2m] = sin(p*w_m), s(p)[2m+1] = cos(p*w_m), w_m = base^(-2m/dim) (§4 absolute and
    sinusoidal: sin and cos interleaved). p: any shape -> [..., dim]."""
    out = torch.zeros(*p.shape, dim, dtype=dtype)
    pf = p.to(dtype)
    for t in range(dim):
        m = t // 2
        omega = base ** (-2.0 * m / dim)
        out[..., t] = torch.sin(pf * omega) if t % 2 == 0 else torch.cos(pf * omega)
    return out


def xl_sinusoid(delta, dim, base, dtype):
    """R(D) = [sin(D*w_0..), cos(D*w_0..)] with halves concatenated, w_k = base^(-2k/dim)
    (§4 xl, as in Transformer-XL). delta: any shape -> [..., dim]."""
    half = dim // 2
    omega = torch.tensor([base ** (-2.0 * k / dim) for k in range(half)], dtype=dtype)
    angle = delta.to(dtype)[..., None] * omega
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)


def t5_bucket_scalar(d, num_buckets, max_distance, bidirectional):
    """T5's relative position bucket of one distance d = p_j - p_i, line by line from §4 t5
    (Raffel et al. 2020)."""
    if bidirectional:
        nb = num_buckets // 2
        off = nb if d > 0 else 0
        n = abs(d)
    else:
        nb, off, n = num_buckets, 0, max(-d, 0)
    exact = nb // 2
    if n < exact:
        return off + n
    big = exact + int(math.log(n / exact) / math.log(max_distance / exact) * (nb - exact))
    return off + min(big, nb - 1)


def t5_bucket(delta, num_buckets, max_distance, bidirectional):
    """t5_bucket_scalar over an integer tensor of distances (same float64 formula, as tensor
    ops so that training is not a Python loop; the self-test compares the two)."""
    if bidirectional:
        nb = num_buckets // 2
        off = (delta > 0).long() * nb
        n = delta.abs()
    else:
        nb, off, n = num_buckets, torch.zeros_like(delta), (-delta).clamp(min=0)
    exact = nb // 2
    safe_n = n.to(torch.float64).clamp(min=exact)  # the log is taken only where n >= exact
    big = exact + torch.trunc(torch.log(safe_n / exact) / math.log(max_distance / exact)
                              * (nb - exact)).long()
    return off + torch.where(n < exact, n, big.clamp(max=nb - 1))


def alibi_slopes(n_heads, max_bias):
    """ALiBi head slopes m_h (§4 alibi, Press et al. 2022), a list of n_heads floats."""
    def power_of_two(n):
        return [2.0 ** (-max_bias * (h + 1) / n) for h in range(n)]
    if n_heads & (n_heads - 1) == 0:
        return power_of_two(n_heads)
    c = 2 ** int(math.floor(math.log2(n_heads)))
    extra = [2.0 ** (-max_bias * (2 * k + 1) / (2 * c)) for k in range(n_heads - c)]
    return power_of_two(c) + extra


def rotary_inv_freq(pos_cfg, length):
    """(inv_freq [r/2] as float64, attention factor) for a call whose largest position + 1 is
    `length` (§4 rotary and its scaling variants)."""
    r, base = pos_cfg["rotary_dim"], float(pos_cfg["base"])
    m = torch.arange(r // 2, dtype=torch.float64)

    def omega_for(b):
        return b ** (-2.0 * m / r)

    omega = omega_for(base)
    sc = pos_cfg["scaling"]
    if sc is None:
        return omega, 1.0
    stype = sc["type"]
    if stype == "linear":
        return omega / sc["factor"], 1.0
    if stype == "ntk":
        return omega_for(base * sc["factor"] ** (r / (r - 2))), 1.0
    if stype == "dynamic":
        s, l0 = sc["factor"], sc["original_max_position_embeddings"]
        lp = max(length, l0)
        return omega_for(base * (s * lp / l0 - (s - 1)) ** (r / (r - 2))), 1.0
    if stype == "yarn":
        s, l0 = sc["factor"], sc["original_max_position_embeddings"]

        def corr(rho):
            return r * math.log(l0 / (2 * math.pi * rho)) / (2 * math.log(base))
        lo, hi = corr(sc["beta_fast"]), corr(sc["beta_slow"])
        if sc["truncate"]:
            lo, hi = math.floor(lo), math.ceil(hi)
        lo, hi = max(lo, 0), min(hi, r - 1)
        if hi == lo:
            hi += 0.001
        ramp = ((m - lo) / (hi - lo)).clamp(0.0, 1.0)
        inv = omega * (1 - ramp) + (omega / s) * ramp

        def g(s_, a):
            return 1.0 if s_ <= 1 else 0.1 * a * math.log(s_) + 1.0
        if sc["attention_factor"] is not None:
            att = sc["attention_factor"]
        elif sc["mscale"] is not None and sc["mscale_all_dim"] is not None:
            att = g(s, sc["mscale"]) / g(s, sc["mscale_all_dim"])
        else:
            att = g(s, 1.0)
        return inv, float(att)
    if stype == "llama3":
        s, l0 = sc["factor"], sc["original_max_position_embeddings"]
        lff, hff = sc["low_freq_factor"], sc["high_freq_factor"]
        inv = torch.empty_like(omega)
        for i in range(r // 2):
            w = float(omega[i])
            lam = 2 * math.pi / w
            if lam < l0 / hff:
                inv[i] = w
            elif lam > l0 / lff:
                inv[i] = w / s
            else:
                sigma = (l0 / lam - lff) / (hff - lff)
                inv[i] = (1 - sigma) * w / s + sigma * w
        return inv, 1.0
    if stype == "longrope":
        l0, lmax = sc["original_max_position_embeddings"], sc["max_position_embeddings"]
        f = sc["long_factor"] if length > l0 else sc["short_factor"]
        inv = omega / torch.tensor(f, dtype=torch.float64)
        if sc["attention_factor"] is not None:
            att = sc["attention_factor"]
        elif lmax > l0:
            att = math.sqrt(1 + math.log(lmax / l0) / math.log(l0))
        else:
            att = 1.0
        return inv, float(att)
    raise ValueError(f"unknown scaling {stype}")


def apply_rotary(x, positions, inv_freq, attention_factor, rotary_dim, interleaved):
    """Rotate each pair (a, b) of x to (a cos - b sin, a sin + b cos), angle p * inv_freq_m
    (§4 rotary). x: [B, H, L, d_head]; positions: [B, L]. Components >= rotary_dim pass
    through; cos and sin are multiplied by the attention factor (HF convention)."""
    r = rotary_dim
    # theta: [B, 1, L, r/2]
    theta = positions.to(torch.float64)[:, None, :, None] * inv_freq
    cos = (torch.cos(theta) * attention_factor).to(x.dtype)
    sin = (torch.sin(theta) * attention_factor).to(x.dtype)
    out = x.clone()
    if interleaved:  # GPT-J / RoFormer: (x[2m], x[2m+1])
        a, b = x[..., 0:r:2], x[..., 1:r:2]
        out[..., 0:r:2] = a * cos - b * sin
        out[..., 1:r:2] = a * sin + b * cos
    else:  # GPT-NeoX / LLaMA: (x[m], x[m + r/2])
        a, b = x[..., : r // 2], x[..., r // 2: r]
        out[..., : r // 2] = a * cos - b * sin
        out[..., r // 2: r] = a * sin + b * cos
    return out


# ---------------------------------------------------------------------------------------
# Modules. Attribute names make state_dict() match the tensor table of §1.
# ---------------------------------------------------------------------------------------

class PositionParams(torch.nn.Module):
    """Tensors under `position.` (§1): `weight` (additive learned), `relative_attention_bias`
    (t5), `r_w_bias` and `r_r_bias` (xl). Empty for the other types."""

    def __init__(self, cfg):
        super().__init__()
        pos, d_model, n_heads = cfg["position"], cfg["d_model"], cfg["n_heads"]
        d_head = d_model // n_heads
        if pos["type"] == "additive" and pos["source"] == "learned":
            k = pos["max_distance"]
            self.weight = torch.nn.Parameter(0.1 * torch.randn(2 * k + 1, d_model))
        if pos["type"] == "t5":
            self.relative_attention_bias = torch.nn.Parameter(
                0.5 * torch.randn(pos["num_buckets"], n_heads))
        if pos["type"] == "xl":
            self.r_w_bias = torch.nn.Parameter(0.1 * torch.randn(n_heads, d_head))
            self.r_r_bias = torch.nn.Parameter(0.1 * torch.randn(n_heads, d_head))
        if pos["type"] == "kerple":
            # inside the domain of §4 (r1, r2 > 0, r2 <= 2 in the power form)
            self.kerple_r1 = torch.nn.Parameter(0.1 + 1.9 * torch.rand(n_heads))
            self.kerple_r2 = torch.nn.Parameter(0.1 + 1.9 * torch.rand(n_heads))


class RefAttention(torch.nn.Module):
    """Multi-head self-attention with the relative terms of §3 (names as torch's
    MultiheadAttention: in_proj_weight rows are q, then k, then v)."""

    def __init__(self, cfg):
        super().__init__()
        d, pos = cfg["d_model"], cfg["position"]
        self.cfg = cfg
        self.n_heads, self.d_head = cfg["n_heads"], d // cfg["n_heads"]
        self.in_proj_weight = torch.nn.Parameter(torch.empty(3 * d, d))
        self.in_proj_bias = torch.nn.Parameter(torch.zeros(3 * d))
        self.out_proj = torch.nn.Linear(d, d)
        torch.nn.init.xavier_uniform_(self.in_proj_weight)
        torch.nn.init.zeros_(self.out_proj.bias)
        if pos["type"] == "learned":
            rows = 2 * pos["max_distance"] + 1
            if pos["keys"]:
                self.relative_key = torch.nn.Parameter(0.1 * torch.randn(rows, self.d_head))
            if pos["values"]:
                self.relative_value = torch.nn.Parameter(0.1 * torch.randn(rows, self.d_head))
        if pos["type"] == "xl":
            self.r_net = torch.nn.Linear(d, d, bias=False)

    def _clamp(self, delta):
        k = self.cfg["position"].get("max_distance")
        return delta if k is None else delta.clamp(-k, k)

    def _key_value_tables(self, delta, dtype):
        """(aK, aV) gathered per pair: [B, L, L, d_head] each, or None (§3, §4)."""
        pos = self.cfg["position"]
        if pos["type"] == "sinusoidal":
            s = interleaved_sinusoid(self._clamp(delta), self.d_head, pos["base"], dtype)
            return (s if pos["keys"] else None), (s if pos["values"] else None)
        if pos["type"] == "learned":
            c = self._clamp(delta) + pos["max_distance"]
            a_k = self.relative_key[c] if pos["keys"] else None
            a_v = self.relative_value[c] if pos["values"] else None
            return a_k, a_v
        return None, None

    def _bias(self, delta, shared, dtype):
        """b_h(delta) added after the scaling: [B, H, L, L], or None (§4 t5, alibi, kerple)."""
        pos = self.cfg["position"]
        if pos["type"] == "t5":
            bucket = t5_bucket(delta, pos["num_buckets"], pos["max_distance"],
                               pos["bidirectional"])
            return shared.relative_attention_bias[bucket].permute(0, 3, 1, 2)  # [B,H,L,L]
        if pos["type"] == "alibi":
            slopes = torch.tensor(alibi_slopes(self.n_heads, pos["max_bias"]), dtype=dtype)
            return -slopes[None, :, None, None] * delta.abs().to(dtype)[:, None]
        if pos["type"] == "kerple":
            # Chi et al. 2022, symmetric in delta: -r1 ln(1 + r2 |delta|) or -r1 |delta|^r2
            r1 = shared.kerple_r1[None, :, None, None]
            r2 = shared.kerple_r2[None, :, None, None]
            dist = delta.abs().to(dtype)[:, None]  # [B, 1, L, L]
            if pos["form"] == "log":
                return -r1 * torch.log(1 + r2 * dist)
            return -r1 * dist ** r2
        return None

    def forward(self, x, visible, positions, rotary, shared):
        """x: [B, L, d_model]; visible: [B, L(i), L(j)] bool, key j visible to query i;
        positions: [B, L] int; rotary: (inv_freq, factor) or None. -> (out, weights)."""
        bsz, length, d = x.shape
        h, dh = self.n_heads, self.d_head
        pos = self.cfg["position"]
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # [B, L, 3d]
        q, k, v = qkv.split(d, dim=-1)
        # [B, L, d] -> [B, H, L, d_head]
        q, k, v = (t.reshape(bsz, length, h, dh).transpose(1, 2) for t in (q, k, v))
        if rotary is not None:
            inv_freq, factor = rotary
            q = apply_rotary(q, positions, inv_freq, factor, pos["rotary_dim"],
                             pos["interleaved"])
            k = apply_rotary(k, positions, inv_freq, factor, pos["rotary_dim"],
                             pos["interleaved"])

        # delta[b, i, j] = p_j - p_i: key minus query (§3)
        delta = positions[:, None, :] - positions[:, :, None]
        a_k, a_v = self._key_value_tables(delta, x.dtype)

        scores = torch.einsum("bhid,bhjd->bhij", q, k)
        if a_k is not None:
            scores = scores + torch.einsum("bhid,bijd->bhij", q, a_k)
        if pos["type"] == "xl":
            # Delta = p_i - p_j (query minus key, as in Transformer-XL), clamped.
            rel = xl_sinusoid(self._clamp(-delta), d, pos["base"], x.dtype)  # [B,L,L,d]
            r = self.r_net(rel).reshape(bsz, length, length, h, dh)  # [B,L,L,H,dh]
            u, vv = shared.r_w_bias, shared.r_r_bias  # [H, dh]
            content_bias = torch.einsum("hd,bhjd->bhj", u, k)[:, :, None, :]
            position_term = torch.einsum("bhid,bijhd->bhij", q + vv[None, :, None, :], r)
            scores = scores + content_bias + position_term
        scores = scores / math.sqrt(dh)
        bias = self._bias(delta, shared, x.dtype)
        if bias is not None:
            scores = scores + bias

        # softmax over visible keys; a row with none visible gets all-zero weights (§2)
        vis = visible[:, None, :, :]  # [B, 1, L, L]
        any_visible = vis.any(dim=-1, keepdim=True)
        masked = scores.masked_fill(~vis, float("-inf"))
        masked = torch.where(any_visible, masked, torch.zeros_like(masked))
        weights = torch.softmax(masked, dim=-1) * any_visible.to(x.dtype)

        z = torch.einsum("bhij,bhjd->bhid", weights, v)
        if a_v is not None:
            z = z + torch.einsum("bhij,bijd->bhid", weights, a_v)
        z = z.transpose(1, 2).reshape(bsz, length, d)  # heads concatenated
        return self.out_proj(z), weights


class RefLayer(torch.nn.Module):
    """One encoder block (§2), names as torch.nn.TransformerEncoderLayer."""

    def __init__(self, cfg):
        super().__init__()
        d, eps = cfg["d_model"], cfg["layer_norm_eps"]
        self.cfg = cfg
        self.self_attn = RefAttention(cfg)
        self.linear1 = torch.nn.Linear(d, cfg["d_ff"])
        self.linear2 = torch.nn.Linear(cfg["d_ff"], d)
        self.norm1 = torch.nn.LayerNorm(d, eps=eps)
        self.norm2 = torch.nn.LayerNorm(d, eps=eps)

    def ffn(self, x):
        h = self.linear1(x)
        h = F.relu(h) if self.cfg["activation"] == "relu" else F.gelu(h)  # exact (erf) gelu
        return self.linear2(h)

    def forward(self, x, visible, positions, rotary, shared):
        if self.cfg["norm_first"]:
            a, w = self.self_attn(self.norm1(x), visible, positions, rotary, shared)
            x = x + a
            x = x + self.ffn(self.norm2(x))
        else:
            a, w = self.self_attn(x, visible, positions, rotary, shared)
            x = self.norm1(x + a)
            x = self.norm2(x + self.ffn(x))
        return x, w


class RefEncoder(torch.nn.Module):
    """The whole model of §1-4: optional embedding, first-layer additive encodings, N blocks,
    optional final norm and output head. Build from a config dict (config.json)."""

    def __init__(self, config):
        super().__init__()
        cfg = parse_config(config)
        self.config = config
        self.cfg = cfg
        d = cfg["d_model"]
        if cfg["vocab_size"] is not None:
            self.embed = torch.nn.Embedding(cfg["vocab_size"], d)
        self.layers = torch.nn.ModuleList(RefLayer(cfg) for _ in range(cfg["n_layers"]))
        self.position = PositionParams(cfg)
        if cfg["final_norm"]:
            self.norm = torch.nn.LayerNorm(d, eps=cfg["layer_norm_eps"])
        if cfg["output_head"]:
            self.head = torch.nn.Linear(d, cfg["vocab_size"])

    def _first_layer_input(self, x, positions, explicit_positions):
        """Add the absolute (§4 absolute) or additive (§4 additive) encoding to x."""
        pos = self.cfg["position"]
        bsz, length, d = x.shape
        if pos["type"] == "absolute":
            x = x + interleaved_sinusoid(positions, d, pos["base"], x.dtype)
        if pos["type"] == "additive":
            if explicit_positions:
                raise ValueError("additive is defined over indices: position_ids not allowed")
            idx = torch.arange(length)
            rel = idx[None, :] - idx[:, None]  # [i, j] = j - i
            in_window = (rel.abs() <= pos["window"]).to(x.dtype)  # N(i)
            k = pos["max_distance"]
            c = rel if k is None else rel.clamp(-k, k)
            if pos["source"] == "sinusoidal":
                r = interleaved_sinusoid(c, d, pos["base"], x.dtype)  # [L, L, d]
            else:
                r = self.position.weight[c + k]
            x = x + torch.einsum("ij,ijd->id", in_window, r)[None]
        return x

    def forward(self, x_or_ids, padding_mask=None, position_ids=None, return_attention=False):
        """x_or_ids: float [B, L, d_model] or integer ids [B, L]; padding_mask: [B, L], true /
        non-zero = padded key; position_ids: [B, L] (default 0..L-1).
        Returns (output [B, L, d_model], logits or None[, list of per-layer weights
        [B, H, L, L]])."""
        cfg = self.cfg
        if x_or_ids.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
            if cfg["vocab_size"] is None:
                raise ValueError("token ids need vocab_size")
            x = self.embed(x_or_ids.long())  # no sqrt(d_model) scaling (§1)
        else:
            x = x_or_ids
        bsz, length, _ = x.shape
        explicit = position_ids is not None
        if explicit:
            positions = position_ids.long()
        else:
            positions = torch.arange(length)[None].expand(bsz, length)

        visible = torch.ones(bsz, length, length, dtype=torch.bool)
        if padding_mask is not None:
            visible = visible & (padding_mask == 0)[:, None, :]
        if cfg["causal"]:  # by index, whatever the positions (§2)
            visible = visible & torch.ones(length, length, dtype=torch.bool).tril()[None]

        rotary = None
        if cfg["position"]["type"] == "rotary":
            # the call length: the largest position in the whole batch + 1 (§4 scaling)
            call_len = int(positions.max()) + 1
            rotary = rotary_inv_freq(cfg["position"], call_len)

        x = self._first_layer_input(x, positions, explicit)
        all_weights = []
        for layer in self.layers:
            x, w = layer(x, visible, positions, rotary, self.position)
            all_weights.append(w)
        if cfg["final_norm"]:
            x = self.norm(x)
        logits = self.head(x) if cfg["output_head"] else None
        if return_attention:
            return x, logits, all_weights
        return x, logits


# ---------------------------------------------------------------------------------------
# Self-test
# ---------------------------------------------------------------------------------------

def _check(name, ok, detail=""):
    print(f"  {'ok  ' if ok else 'FAIL'} {name} {detail}")
    if not ok:
        _check.failed += 1


_check.failed = 0


def _torch_encoder_matches(norm_first, activation, final_norm):
    d, h, ff, n = 16, 2, 24, 2
    torch.manual_seed(1)
    layer = torch.nn.TransformerEncoderLayer(d, h, ff, dropout=0.0, activation=activation,
                                             batch_first=True, norm_first=norm_first,
                                             layer_norm_eps=1e-6)
    enc = torch.nn.TransformerEncoder(layer, n, norm=torch.nn.LayerNorm(d, eps=1e-6)
                                      if final_norm else None,
                                      enable_nested_tensor=False).double()
    # randomize every parameter (torch zero-inits biases, which would hide bias bugs)
    with torch.no_grad():
        for p in enc.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    enc.train()  # dropout is 0; train mode keeps torch off its fused fast path
    cfg = {"d_model": d, "n_heads": h, "n_layers": n, "d_ff": ff, "activation": activation,
           "norm_first": norm_first, "layer_norm_eps": 1e-6, "final_norm": final_norm}
    ref = RefEncoder(cfg).double()
    ref.load_state_dict(enc.state_dict(), strict=True)
    x = torch.randn(2, 7, d, dtype=torch.float64)
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[1, 4:] = True
    with torch.no_grad():
        for m in (None, mask):
            want = enc(x, src_key_padding_mask=m)
            got, _ = ref(x, padding_mask=m)
            err = (want - got).abs().max().item()
            _check(f"torch TransformerEncoder norm_first={norm_first} {activation} "
                   f"final_norm={final_norm} mask={m is not None}", err < 1e-12,
                   f"max err {err:.2e}")


def _loop_attention(attn, x, positions):
    """One attention call computed by plain Python loops over (h, i, j) from §3, for the
    sinusoidal and learned types (no mask): an index-by-index check of the einsums."""
    pos = attn.cfg["position"]
    bsz, length, d = x.shape
    h, dh = attn.n_heads, attn.d_head
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)
    out = torch.zeros(bsz, length, d, dtype=x.dtype)
    k_max = pos.get("max_distance")
    for b in range(bsz):
        z = torch.zeros(length, d, dtype=x.dtype)
        for hh in range(h):
            sl = slice(hh * dh, (hh + 1) * dh)
            q = qkv[b, :, sl]
            k = qkv[b, :, d + hh * dh: d + (hh + 1) * dh]
            v = qkv[b, :, 2 * d + hh * dh: 2 * d + (hh + 1) * dh]
            for i in range(length):
                e = []
                vals = []
                for j in range(length):
                    c = int(positions[b, j] - positions[b, i])
                    if k_max is not None:
                        c = max(-k_max, min(k_max, c))
                    if pos["type"] == "sinusoidal":
                        s = torch.tensor([math.sin(c * pos["base"] ** (-2 * (t // 2) / dh))
                                          if t % 2 == 0 else
                                          math.cos(c * pos["base"] ** (-2 * (t // 2) / dh))
                                          for t in range(dh)], dtype=x.dtype)
                        ak = s if pos["keys"] else torch.zeros(dh, dtype=x.dtype)
                        av = s if pos["values"] else torch.zeros(dh, dtype=x.dtype)
                    else:
                        ak = attn.relative_key[c + k_max] if pos["keys"] else 0 * q[0]
                        av = attn.relative_value[c + k_max] if pos["values"] else 0 * q[0]
                    e.append(float((q[i] @ k[j] + q[i] @ ak) / math.sqrt(dh)))
                    vals.append(v[j] + av)
                alpha = torch.softmax(torch.tensor(e, dtype=x.dtype), 0)
                z[i, sl] = sum(a * vv for a, vv in zip(alpha, vals))
        out[b] = attn.out_proj(z)
    return out


def selftest():
    """Checks against torch.nn.TransformerEncoder and properties that must hold."""
    torch.set_default_dtype(torch.float64)
    print("reference.py self-test")
    for nf, act, fn in ((False, "relu", False), (True, "gelu", True), (False, "gelu", True)):
        _torch_encoder_matches(nf, act, fn)

    # the gathered einsums agree with a loop over (h, i, j) of §3
    torch.manual_seed(2)
    x = torch.randn(2, 6, 16)
    positions = torch.tensor([[0, 1, 2, 3, 4, 5], [3, 1, 4, 1, 5, 9]])
    for pcfg in ({"type": "sinusoidal", "keys": True, "values": True, "max_distance": 3},
                 {"type": "sinusoidal"},
                 {"type": "learned", "max_distance": 2, "keys": True, "values": True},
                 {"type": "learned", "max_distance": 4, "keys": False}):
        m = RefEncoder({"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 8,
                        "position": pcfg})
        attn = m.layers[0].self_attn
        with torch.no_grad():
            vis = torch.ones(2, 6, 6, dtype=torch.bool)
            got, _ = attn(x, vis, positions, None, m.position)
            want = _loop_attention(attn, x, positions)
        err = (got - want).abs().max().item()
        _check(f"loop attention {pcfg}", err < 1e-12, f"max err {err:.2e}")

    # kerple: the einsum-shaped bias against the formula of §4, one scalar at a time
    for form in ("log", "power"):
        m = RefEncoder({"d_model": 8, "n_heads": 2, "n_layers": 1, "d_ff": 4,
                        "position": {"type": "kerple", "form": form}})
        delta = torch.tensor([[[0, 3, -7], [-3, 0, 11], [7, -11, 0]]])
        bias = m.layers[0].self_attn._bias(delta, m.position, torch.float64)
        r1, r2 = m.position.kerple_r1.tolist(), m.position.kerple_r2.tolist()
        worst = 0.0
        for h in range(2):
            for i in range(3):
                for j in range(3):
                    a = abs(int(delta[0, i, j]))
                    want = (-r1[h] * math.log(1 + r2[h] * a) if form == "log"
                            else -r1[h] * a ** r2[h])
                    worst = max(worst, abs(float(bias[0, h, i, j]) - want))
        _check(f"kerple {form} bias", worst < 1e-14, f"max err {worst:.2e}")

    # t5 buckets: the check values of §4
    bi = {-200: 15, -64: 14, -16: 10, -8: 8, -7: 7, -1: 1, 0: 0, 1: 17, 8: 24, 16: 26,
          64: 30, 128: 31}
    ca = {-200: 31, -64: 26, -32: 21, -16: 16, -9: 9, -1: 1, 0: 0, 5: 0}
    for table, bidir in ((bi, True), (ca, False)):
        d_ = torch.tensor(list(table))
        got = t5_bucket(d_, 32, 128, bidir).tolist()
        scalar = [t5_bucket_scalar(int(v), 32, 128, bidir) for v in table]
        _check(f"t5 buckets bidirectional={bidir}",
               got == list(table.values()) == scalar, str(got))
    span = torch.arange(-400, 401)
    for nb, md, bidir in ((32, 128, True), (32, 128, False), (8, 6, True), (16, 64, True),
                          (2, 3, False), (4, 5, True), (10, 1000, False)):
        got = t5_bucket(span, nb, md, bidir).tolist()
        want = [t5_bucket_scalar(int(v), nb, md, bidir) for v in span]
        _check(f"t5 buckets tensor == scalar ({nb}, {md}, {bidir})", got == want)

    # alibi slopes: 8 heads -> 2^-1 .. 2^-8; 6 heads -> 4-head rule then odd halves
    _check("alibi slopes 8 heads", alibi_slopes(8, 8) == [2.0 ** -(h + 1) for h in range(8)])
    _check("alibi slopes 6 heads", alibi_slopes(6, 8) ==
           [2.0 ** -2, 2.0 ** -4, 2.0 ** -6, 2.0 ** -8, 2.0 ** -1, 2.0 ** -3])

    base_cfg = {"d_model": 16, "n_heads": 2, "n_layers": 2, "d_ff": 24}

    # rotary: q.k after rotation depends only on p_j - p_i
    torch.manual_seed(3)
    for interleaved, rdim in ((False, 8), (True, 8), (False, 4)):
        q = torch.randn(1, 1, 5, 8)
        k = torch.randn(1, 1, 5, 8)
        cfg = {"rotary_dim": rdim, "base": 10000.0, "scaling": None}
        inv, fac = rotary_inv_freq(cfg, 100)
        p0 = torch.arange(5)[None]
        s0 = apply_rotary(q, p0, inv, fac, rdim, interleaved) @ \
            apply_rotary(k, p0, inv, fac, rdim, interleaved).transpose(-1, -2)
        s1 = apply_rotary(q, p0 + 37, inv, fac, rdim, interleaved) @ \
            apply_rotary(k, p0 + 37, inv, fac, rdim, interleaved).transpose(-1, -2)
        err = (s0 - s1).abs().max().item()
        _check(f"rotary scores depend only on j - i (interleaved={interleaved}, r={rdim})",
               err < 1e-10, f"max err {err:.2e}")
        # position 0 is the identity
        same = apply_rotary(q, torch.zeros(1, 5, dtype=torch.long), inv, fac, rdim,
                            interleaved)
        _check("rotary at p=0 is the identity", torch.equal(same, q))

    # rotary layouts against complex multiplication: interleaved rotates x[2m] + i x[2m+1]
    # by e^(i theta_m); half rotates x[m] + i x[m + r/2]
    q = torch.randn(1, 1, 5, 8)
    p = torch.tensor([[0, 3, 1, 7, 100]])
    inv, fac = rotary_inv_freq({"rotary_dim": 8, "base": 100.0, "scaling": None}, 101)
    phase = torch.polar(torch.ones(5, 4), p[0, :, None].double() * inv)
    for interleaved in (True, False):
        got = apply_rotary(q, p, inv, fac, 8, interleaved)[0, 0]
        if interleaved:
            zc = torch.complex(q[0, 0, :, 0::2], q[0, 0, :, 1::2]) * phase
            want = torch.stack([zc.real, zc.imag], dim=-1).reshape(5, 8)
        else:
            zc = torch.complex(q[0, 0, :, :4], q[0, 0, :, 4:]) * phase
            want = torch.cat([zc.real, zc.imag], dim=-1)
        err = (got - want).abs().max().item()
        _check(f"rotary interleaved={interleaved} equals complex rotation", err < 1e-12,
               f"max err {err:.2e}")

    # scalings that must reduce to plain rotary: factor 1 (linear, ntk, dynamic at a
    # length <= L0, llama3), longrope with all-one factors and Lmax == L0
    plain, _ = rotary_inv_freq({"rotary_dim": 8, "base": 500.0, "scaling": None}, 10)
    for sc in ({"type": "linear", "factor": 1.0}, {"type": "ntk", "factor": 1.0},
               {"type": "dynamic", "factor": 3.0, "original_max_position_embeddings": 16},
               {"type": "llama3", "factor": 1.0, "original_max_position_embeddings": 64},
               {"type": "longrope", "short_factor": [1.0] * 4, "long_factor": [2.0] * 4,
                "original_max_position_embeddings": 16, "max_position_embeddings": 16}):
        cfg = parse_config(dict(base_cfg, position={"type": "rotary", "base": 500.0,
                                                    "rotary_dim": 8, "scaling": sc}))
        inv, fac = rotary_inv_freq(cfg["position"], 10)
        err = (inv - plain).abs().max().item()
        _check(f"scaling {sc['type']} reduces to plain rotary", err < 1e-15 and fac == 1.0,
               f"max err {err:.2e}, factor {fac}")
    # yarn: the fastest frequencies are kept, the slowest divided by the factor
    cfg = parse_config(dict(base_cfg, position={"type": "rotary", "rotary_dim": 8, "scaling": {
        "type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}}))
    inv, fac = rotary_inv_freq(cfg["position"], 10)
    plain, _ = rotary_inv_freq({"rotary_dim": 8, "base": 10000.0, "scaling": None}, 10)
    _check("yarn keeps the fastest, divides the slowest frequency",
           float(inv[0]) == float(plain[0]) and abs(float(inv[-1] * 4 - plain[-1])) < 1e-18
           and abs(fac - (0.1 * math.log(4.0) + 1)) < 1e-15, f"{inv.tolist()} {fac}")

    # relative types: shifting every position by a constant changes nothing
    for pcfg in ({"type": "sinusoidal", "values": True}, {"type": "learned", "max_distance": 3},
                 {"type": "rotary"}, {"type": "rotary", "interleaved": True, "rotary_dim": 4},
                 {"type": "t5"}, {"type": "alibi"}, {"type": "xl", "max_distance": 5}):
        torch.manual_seed(4)
        m = RefEncoder(dict(base_cfg, position=pcfg))
        x = torch.randn(2, 7, 16)
        p = torch.arange(7)[None].expand(2, 7)
        with torch.no_grad():
            a, _ = m(x, position_ids=p)
            b, _ = m(x, position_ids=p + 11)
            c, _ = m(x)
        err = max((a - b).abs().max().item(), (a - c).abs().max().item())
        _check(f"translation invariance {pcfg}", err < 1e-10, f"max err {err:.2e}")

    # causal: output at i does not depend on tokens after i; padding: a fully padded batch
    # row gives the out_proj bias as attention output (no NaN)
    torch.manual_seed(5)
    m = RefEncoder(dict(base_cfg, causal=True, position={"type": "rotary"}))
    x = torch.randn(1, 7, 16)
    y = x.clone()
    y[0, 4:] += 1.0
    with torch.no_grad():
        a, _ = m(x)
        b, _ = m(y)
    _check("causal: prefix unchanged", (a[0, :4] - b[0, :4]).abs().max().item() < 1e-12)
    m = RefEncoder(dict(base_cfg, position={"type": "learned", "max_distance": 2}))
    with torch.no_grad():
        attn = m.layers[0].self_attn
        vis = torch.zeros(1, 7, 7, dtype=torch.bool)
        out, w = attn(x, vis, torch.arange(7)[None], None, m.position)
        _check("no visible key: output = out_proj bias, weights 0",
               torch.allclose(out, attn.out_proj.bias.expand_as(out), atol=0, rtol=0)
               and float(w.abs().sum()) == 0.0)
        full_mask = torch.ones(1, 7, dtype=torch.bool)
        o, _ = m(x, padding_mask=full_mask)
        _check("fully padded input is finite", bool(torch.isfinite(o).all()))

    # state_dict names: exactly those of §1
    m = RefEncoder({"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 8, "vocab_size": 11,
                    "output_head": True, "final_norm": True,
                    "position": {"type": "xl"}})
    names = sorted(m.state_dict())
    _check("xl state_dict names", names == sorted(
        ["embed.weight", "head.bias", "head.weight", "norm.bias", "norm.weight",
         "position.r_r_bias", "position.r_w_bias", "layers.0.self_attn.r_net.weight",
         "layers.0.self_attn.in_proj_weight", "layers.0.self_attn.in_proj_bias",
         "layers.0.self_attn.out_proj.weight", "layers.0.self_attn.out_proj.bias",
         "layers.0.linear1.weight", "layers.0.linear1.bias", "layers.0.linear2.weight",
         "layers.0.linear2.bias", "layers.0.norm1.weight", "layers.0.norm1.bias",
         "layers.0.norm2.weight", "layers.0.norm2.bias"]), str(names))

    if _check.failed:
        print(f"{_check.failed} check(s) FAILED")
        return 1
    print("all checks passed")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--selftest", action="store_true", help="run the self-checks")
    args = parser.parse_args(argv)
    if args.selftest:
        return selftest()
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
