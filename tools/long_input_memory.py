# SPDX-License-Identifier: MIT
"""Issue 14's "done when" at full width: relpos-encode runs a 65536-token input through a
one-layer model of every position type (d_model 512, 8 heads, d_ff 2048, post-norm, random
weights in the format of docs/model-format.md §1), and this script records each run's peak
resident memory (the whole process, `/usr/bin/time -f %M`) against the target of 512 MiB.

    /usr/bin/python3 tools/long_input_memory.py [--encode build/release/examples/relpos-encode]
        [--len 65536] [--threads 1] [--out /tmp/relpos_long] [--types none,t5,...]

It writes the model folders and one input file (`input`, F32 [1, len, 512]: 128 MiB at 65536)
under --out, runs `relpos-encode --model DIR --input FILE --threads N` (the summary, no
--output: the output file would add its own copy of the activations to the figure) and prints
a markdown table. The float64 check of sampled output rows at a smaller width is the ctest
tests/long_sequence_test.cpp; this script is the full-width memory figure. Needs numpy only.
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_py  # noqa: E402

D_MODEL, N_HEADS, D_FF = 512, 8, 2048
D_HEAD = D_MODEL // N_HEADS
TARGET_MIB = 512

# position type -> config.json `position` (issue 14's list: learned K 64 keys + values,
# sinusoidal unclamped, t5 (32, 128), alibi, xl unclamped, kerple log, deberta's defaults)
POSITIONS = {
    "none": {"type": "none"},
    "absolute": {"type": "absolute"},
    "learned": {"type": "learned", "max_distance": 64, "keys": True, "values": True},
    "sinusoidal": {"type": "sinusoidal"},
    "rotary": {"type": "rotary"},
    "t5": {"type": "t5"},
    "alibi": {"type": "alibi"},
    "xl": {"type": "xl"},
    "kerple": {"type": "kerple", "form": "log"},
    "deberta": {"type": "deberta"},
}


def weights(ptype, rng):
    """Every tensor of a one-layer model of `ptype` (spec §1's table), float32, at the scale of
    trained weights (1/sqrt(fan_in)), norms near 1, biases small."""
    d, s = D_MODEL, 1.0 / np.sqrt(D_MODEL)
    normal = lambda shape, scale: (rng.standard_normal(shape) * scale).astype(np.float32)
    w = {
        "layers.0.self_attn.in_proj_weight": normal((3 * d, d), s),
        "layers.0.self_attn.in_proj_bias": normal((3 * d,), 0.02),
        "layers.0.self_attn.out_proj.weight": normal((d, d), s),
        "layers.0.self_attn.out_proj.bias": normal((d,), 0.02),
        "layers.0.linear1.weight": normal((D_FF, d), s),
        "layers.0.linear1.bias": normal((D_FF,), 0.02),
        "layers.0.linear2.weight": normal((d, D_FF), 1.0 / np.sqrt(D_FF)),
        "layers.0.linear2.bias": normal((d,), 0.02),
    }
    for n in ("norm1", "norm2"):
        w[f"layers.0.{n}.weight"] = (1 + normal((d,), 0.1)).astype(np.float32)
        w[f"layers.0.{n}.bias"] = normal((d,), 0.1)
    if ptype == "learned":
        w["layers.0.self_attn.relative_key"] = normal((2 * 64 + 1, D_HEAD), 0.1)
        w["layers.0.self_attn.relative_value"] = normal((2 * 64 + 1, D_HEAD), 0.1)
    elif ptype == "t5":
        w["position.relative_attention_bias"] = normal((32, N_HEADS), 0.5)
    elif ptype == "xl":
        w["layers.0.self_attn.r_net.weight"] = normal((d, d), s)
        w["position.r_w_bias"] = normal((N_HEADS, D_HEAD), 0.1)
        w["position.r_r_bias"] = normal((N_HEADS, D_HEAD), 0.1)
    elif ptype == "kerple":
        w["position.kerple_r1"] = rng.uniform(0.1, 2.0, N_HEADS).astype(np.float32)
        w["position.kerple_r2"] = rng.uniform(0.1, 2.0, N_HEADS).astype(np.float32)
    elif ptype == "deberta":
        w["position.rel_embeddings"] = normal((2 * 256, d), 1.0)
        w["position.rel_norm.weight"] = (1 + normal((d,), 0.1)).astype(np.float32)
        w["position.rel_norm.bias"] = normal((d,), 0.1)
    return w


def write_model(folder, ptype, seed):
    os.makedirs(folder, exist_ok=True)
    config = {"d_model": D_MODEL, "n_heads": N_HEADS, "n_layers": 1, "d_ff": D_FF,
              "position": POSITIONS[ptype]}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    safetensors_py.save_file(weights(ptype, np.random.default_rng(seed)),
                             os.path.join(folder, "model.safetensors"))


def peak_kib(command):
    """(peak RSS in KiB, seconds of wall time as relpos-encode prints it, stderr tail)."""
    r = subprocess.run(["/usr/bin/time", "-f", "%M KB"] + command, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    lines = r.stderr.strip().splitlines()
    if r.returncode != 0 or not lines or not lines[-1].endswith(" KB"):
        raise SystemExit(f"{' '.join(command)} failed ({r.returncode}):\n{r.stderr}{r.stdout}")
    return int(lines[-1].split()[0]), r.stdout


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encode", default="build/release/examples/relpos-encode")
    p.add_argument("--len", type=int, default=65536)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="/tmp/relpos_long")
    p.add_argument("--types", default=",".join(POSITIONS))
    a = p.parse_args()
    types = a.types.split(",")
    for t in types:
        if t not in POSITIONS:
            raise SystemExit(f"--types: unknown position type {t!r} (known: {', '.join(POSITIONS)})")
    os.makedirs(a.out, exist_ok=True)
    input_path = os.path.join(a.out, f"input_{a.len}.safetensors")
    if not os.path.exists(input_path):
        x = np.random.default_rng(1).standard_normal((1, a.len, D_MODEL)).astype(np.float32)
        safetensors_py.save_file({"input": x}, input_path)
    print(f"relpos-encode, one layer (d_model {D_MODEL}, {N_HEADS} heads, d_ff {D_FF}), len {a.len}, "
          f"threads {a.threads}: whole-process peak RSS (target <= {TARGET_MIB} MiB)\n")
    print("| position type | peak RSS (MiB) | target | relpos-encode's summary |\n|---|---|---|---|")
    for i, t in enumerate(types):
        folder = os.path.join(a.out, t)
        write_model(folder, t, 100 + i)
        kib, summary = peak_kib([a.encode, "--model", folder, "--input", input_path,
                                 "--threads", str(a.threads)])
        mib = kib / 1024
        verdict = "met" if mib <= TARGET_MIB else "missed"
        print(f"| {t} | {mib:.0f} | {verdict} | {' '.join(summary.split())} |", flush=True)


if __name__ == "__main__":
    main()
