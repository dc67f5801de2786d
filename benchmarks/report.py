#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Runs every benchmark binary once (with --repetitions, medians of CPU time) and prints, as
markdown, the machine, each performance target of the project as a ratio of two figures
measured in the same run, the per-length block table, and the relpos / libtorch table.

  benchmarks/report.py [--build build/bench] [--repetitions 5] [--torch-blas openblas]

Nothing here asserts: a ratio past its target is printed with "missed". Standard library only.
"""
import argparse
import json
import os
import platform
import subprocess

from compare_libtorch import (ENCODINGS, default_torch_blas, libtorch_lines, run_benchmark,
                              run_block, summary_lines)

LENGTHS = (128, 512, 1024, 2048)
# issue 14: the added peak RSS (MiB) of a layer forward at len 8192 in the (len × len) code
# the tiled kernel replaced, as README.md records it (bench_memory's names)
LEN_LEN_FORWARD_MIB_8192 = {"None": 403, "Learned": 407, "Sinusoidal": 921, "Rotary": 405,
                            "relpos_bench::T5": 403, "relpos_bench::Alibi": 403, "relpos_bench::Xl": 950}
# bench_memory's len-65536 runs (RELPOS_BENCH_LONG), by Kind::name
LONG_ENCODINGS = ("none", "learned", "sinusoidal", "rotary", "t5", "alibi", "xl", "kerple", "deberta")


def machine():
    model = "?"
    try:
        for line in subprocess.run(["lscpu"], stdout=subprocess.PIPE, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    load = os.getloadavg()[0]
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, load {load:.2f} at start"


def verdict(ratio, limit, at_most=True):
    ok = ratio <= limit if at_most else ratio >= limit
    return "met" if ok else "missed"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default="build/bench")
    p.add_argument("--repetitions", type=int, default=5)
    p.add_argument("--min-time", type=float, default=0.2, help="seconds per repetition")
    p.add_argument("--torch-blas", choices=["openblas", "system"], default=default_torch_blas())
    a = p.parse_args()
    bench = lambda name: os.path.join(a.build, "benchmarks", name)
    reps = a.repetitions

    print(f"Machine: {machine()}\n")
    enc, _, _ = run_benchmark(bench("bench_encodings"), ".", reps, min_time=a.min_time)
    blk, blk_counters, ctx = run_block(bench("bench_block"), reps, a.torch_blas, ".", a.min_time)
    # libtorch's best configuration (compare_libtorch.TORCH_CONFIGS): the layer without encoding
    # beside libtorch's layer, in a second process
    best, _, best_ctx = run_block(bench("bench_block"), reps, a.torch_blas,
                                  "(BM_Block<None>|BM_Torch<relpos_bench::TorchOp::block>)/len:", a.min_time,
                                  config="best")
    _, mem, _ = run_benchmark(bench("bench_memory"), ".", 1)
    grad, grad_counters, _ = run_benchmark(bench("bench_grad"), ".", reps, min_time=a.min_time)

    gflops = lambda name: blk_counters[name]["GFLOP/s"]
    rows = []  # (target, measured, ratio, limit, verdict)
    r = gflops("BM_Block<None>/len:512") / gflops("BM_EigenGemm/len:512")
    rows.append(("block none, len 512: GFLOP/s / Eigen GEMM GFLOP/s", f"{gflops('BM_Block<None>/len:512'):.1f} / "
                 f"{gflops('BM_EigenGemm/len:512'):.1f}", r, ">= 0.85", verdict(r, 0.85, False)))
    torch_block = blk.get("BM_Torch<relpos_bench::TorchOp::block>/len:512")
    if torch_block:
        r = blk["BM_Block<None>/len:512"] / torch_block
        rows.append(("block none, len 512: relpos time / libtorch time",
                     f"{blk['BM_Block<None>/len:512'] * 1e3:.1f} / {torch_block * 1e3:.1f} ms", r, "<= 1.0",
                     verdict(r, 1.0)))
    # issue 18: the layer against libtorch's best configuration; the targets depend on the GEMM
    # this build routes relpos's products to (RELPOS_BLAS: a CBLAS; else, with no dependency,
    # relpos's packed kernel on AVX2 / AVX-512 builds or Eigen's own: the pure-Eigen targets)
    gemm = ctx.get("relpos_gemm", "eigen")
    for n, limit in ((512, 0.9), (2048, 0.8)) if gemm == "cblas" else ((512, 1.1), (2048, 0.9)):
        t = best.get(f"BM_Torch<relpos_bench::TorchOp::block>/len:{n}")
        if t:
            r = best[f"BM_Block<None>/len:{n}"] / t
            rows.append((f"layer none / libtorch best configuration, len {n} (relpos GEMM: {gemm})",
                         f"{best[f'BM_Block<None>/len:{n}'] * 1e3:.1f} / {t * 1e3:.1f} ms", r, f"<= {limit}",
                         verdict(r, limit)))
    for n in (512, 2048):
        for e, limit in (("Learned", 1.15), ("Sinusoidal", 2.0)):
            r = blk[f"BM_Block<{e}>/len:{n}"] / blk[f"BM_Block<None>/len:{n}"]
            rows.append((f"block {e.lower()} / block none, len {n}",
                         f"{blk[f'BM_Block<{e}>/len:{n}'] * 1e3:.1f} / {blk[f'BM_Block<None>/len:{n}'] * 1e3:.1f} ms",
                         r, f"<= {limit}", verdict(r, limit)))
    # issue 18, no regression: t5 and alibi relative to none as measured before it (README), with
    # the ±15 % this shared machine moves a ratio between runs
    for e, n, today in (("T5", 2048, 1.09), ("Alibi", 2048, 0.99)):
        key = f"BM_Block<relpos_bench::{e}>/len:{n}"
        if key in blk:
            r, limit = blk[key] / blk[f"BM_Block<None>/len:{n}"], round(today * 1.15, 2)
            rows.append((f"block {e.lower()} / block none, len {n}",
                         f"{blk[key] * 1e3:.1f} / {blk[f'BM_Block<None>/len:{n}'] * 1e3:.1f} ms", r,
                         f"<= {limit} (was {today})", verdict(r, limit)))
    # issue 16: kerple (a logarithm per distance and head, gathered like alibi) beside none
    for n in (512, 2048):
        key = f"BM_Block<relpos_bench::Kerple>/len:{n}"
        if key in blk:
            r = blk[key] / blk[f"BM_Block<None>/len:{n}"]
            rows.append((f"block kerple / block none, len {n}",
                         f"{blk[key] * 1e3:.1f} / {blk[f'BM_Block<None>/len:{n}'] * 1e3:.1f} ms", r,
                         "<= 1.1", verdict(r, 1.1)))
    # issue 19: spec §7's block options beside the plain block at len 512. The gated FFN does
    # 3/2 of the plain FFN's products (linear3 is linear1's size), so 1.5 is the FLOP ratio; in
    # the whole block it is 1.29 (+ 5 %: 1.35). rms norm and bias false should cost nothing
    # (read against 1.05, to show a regression).
    ffn, gated = blk.get("BM_FeedForward<Option::plain>/len:512"), blk.get("BM_FeedForward<Option::gated>/len:512")
    if ffn and gated:
        rows.append(("gated FFN / plain FFN, len 512", f"{gated * 1e3:.1f} / {ffn * 1e3:.1f} ms", gated / ffn,
                     "<= 1.5", verdict(gated / ffn, 1.5)))
    # gelu's erf pass beside relu's max: both are one pass over (len, d_ff), so an activation
    # should not show in the FFN's time (read against 1.1)
    gelu = blk.get("BM_FeedForward<Option::gelu>/len:512")
    if ffn and gelu:
        rows.append(("gelu FFN / relu FFN, len 512", f"{gelu * 1e3:.1f} / {ffn * 1e3:.1f} ms", gelu / ffn,
                     "<= 1.1", verdict(gelu / ffn, 1.1)))
    plain = blk["BM_Block<None>/len:512"]
    for option, what, limit in (("gated", "gated FFN", 1.35), ("rms", "rms norm", 1.05),
                                ("no_bias", "bias false", 1.05)):
        key = f"BM_BlockOption<Option::{option}>/len:512"
        if key in blk:
            rows.append((f"block with {what} / plain block, len 512", f"{blk[key] * 1e3:.1f} / {plain * 1e3:.1f} ms",
                         blk[key] / plain, f"<= {limit}", verdict(blk[key] / plain, limit)))
    # issue 19: the deberta layer (c2p + p2c, spec §7's defaults: S 256, M 512, share_att_key,
    # rel_norm) beside the layer without encoding
    key = "BM_Block<relpos_bench::Deberta>/len:512"
    if key in blk:
        rows.append(("block deberta (c2p + p2c) / block none, len 512",
                     f"{blk[key] * 1e3:.1f} / {plain * 1e3:.1f} ms", blk[key] / plain, "<= 1.3",
                     verdict(blk[key] / plain, 1.3)))
    for n in (2048, 8192):
        for name, what in (("BM_RotaryApply", "half pairing"),
                           ("BM_RotaryApplyConfig/interleaved", "interleaved"),
                           ("BM_RotaryApplyConfig/partial_r32", "partial r = 32 of 64")):
            key = f"{name}/len:{n}"
            if key not in enc:
                continue
            r = enc[key] / enc[f"BM_RotaryMemcpy/len:{n}"]
            rows.append((f"rotary apply ({what}) / memcpy of the same bytes, len {n}",
                         f"{enc[key] * 1e3:.2f} / {enc[f'BM_RotaryMemcpy/len:{n}'] * 1e3:.2f} ms",
                         r, "<= 1.5", verdict(r, 1.5)))
    naive, eff = blk["BM_AttentionNaive<Learned>/len:1024"], blk["BM_Attention<Learned>/len:1024"]
    r = naive / eff
    rows.append(("naive / efficient attention time, learned, len 1024", f"{naive * 1e3:.0f} / {eff * 1e3:.1f} ms",
                 r, ">= 2", verdict(r, 2.0, False)))
    mn = mem["BM_PeakRss<Learned, Op::naive>/len:1024/iterations:1/real_time"]
    me = mem["BM_PeakRss<Learned, Op::attention>/len:1024/iterations:1/real_time"]
    for key, what in (("forward_MiB", "memory one forward added"), ("peak_MiB", "process peak RSS")):
        r = mn[key] / me[key]
        rows.append((f"naive / efficient {what}, len 1024", f"{mn[key]:.1f} / {me[key]:.1f} MiB", r, ">= 3",
                     verdict(r, 3.0, False)))
    # issue 14: what a layer forward adds at len 8192, against the (len × len) code it replaced
    # (README.md, "Streaming attention against the (len × len) code": that code is gone, its
    # figures were measured beside the tiled kernel), target 1/8; and the whole process at 65536
    # (bench_memory with RELPOS_BENCH_LONG set), target 512 MiB per encoding
    for e, before in LEN_LEN_FORWARD_MIB_8192.items():
        m = mem.get(f"BM_PeakRss<{e}, Op::block>/len:8192/iterations:1/real_time")
        if m:
            r = m["forward_MiB"] / before
            rows.append((f"added peak RSS of a layer forward, len 8192, {e.split('::')[-1].lower()}: "
                         "tiled / (len × len) code", f"{m['forward_MiB']:.0f} / {before} MiB", r, "<= 0.125",
                         verdict(r, 0.125)))
    for e in LONG_ENCODINGS:
        m = mem.get(f"BM_PeakRss<{e}, Op::block>/len:65536/iterations:1/real_time")
        if m:
            rows.append((f"whole process peak RSS, one layer, len 65536, {e}", f"{m['peak_MiB']:.0f} MiB",
                         m["peak_MiB"] / 512, "<= 1 (512 MiB)", verdict(m["peak_MiB"], 512)))
    if not any(f"BM_PeakRss<{e}, Op::block>/len:65536/iterations:1/real_time" in mem for e in LONG_ENCODINGS):
        rows.append(("whole process peak RSS, one layer, len 65536", "not run (set RELPOS_BENCH_LONG=1, "
                     "or tools/long_input_memory.py)", float("nan"), "<= 1 (512 MiB)", "not run"))
    allocs = max(blk_counters[f"BM_Block<{e}>/len:{n}"]["allocs"] for e in ENCODINGS for n in LENGTHS)
    rows.append(("heap allocations in a warm block forward (max over encodings and lengths)",
                 f"{allocs:g}", allocs, "0", "met" if allocs == 0 else "missed"))
    # issue 15: training one layer (bench_grad)
    fwd, bwd = grad["BM_Forward<None>/len:512"], grad["BM_Backward<None>/len:512"]
    rows.append(("layer backward / forward, none, len 512", f"{bwd * 1e3:.1f} / {fwd * 1e3:.1f} ms", bwd / fwd,
                 "<= 2.5", verdict(bwd / fwd, 2.5)))
    for n in (512, 2048):
        lb, nb = grad[f"BM_Backward<Learned>/len:{n}"], grad[f"BM_Backward<None>/len:{n}"]
        rows.append((f"layer backward learned (K 64, k+v) / none, len {n}", f"{lb * 1e3:.1f} / {nb * 1e3:.1f} ms",
                     lb / nb, "<= 1.2", verdict(lb / nb, 1.2)))
    step, torch_step = grad["BM_Step<None>/len:512"], grad.get("BM_TorchStep/len:512")
    if torch_step:
        rows.append(("layer training step (forward, backward, AdamW) / libtorch's, len 512",
                     f"{step * 1e3:.1f} / {torch_step * 1e3:.1f} ms", step / torch_step, "<= 1.0",
                     verdict(step / torch_step, 1.0)))
    # the demo's training step against PyTorch's (a script that needs torch and a release build's
    # relpos-train: ./dev test makes one)
    try:
        out = subprocess.run(["/usr/bin/python3", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                               "compare_training.py"),
                              "--build", os.path.join(os.path.dirname(a.build), "release"),
                              "--repetitions", str(reps), "--json"],
                             check=True, stdout=subprocess.PIPE, text=True).stdout
        demo = json.loads(out)
        rows.append(("training step, demo model (batch 16, len 32) / PyTorch's",
                     f"{demo['relpos'] * 1e3:.2f} / {demo['torch'] * 1e3:.2f} ms", demo["ratio"], "<= 0.25",
                     verdict(demo["ratio"], 0.25)))
    except (OSError, subprocess.CalledProcessError, ValueError) as e:
        print(f"(demo training step vs PyTorch not measured: {e})")
    ms = mem.get("BM_PeakRss<None, Op::step>/len:4096/iterations:1/real_time")
    mf = mem.get("BM_PeakRss<None, Op::block>/len:4096/iterations:1/real_time")
    if ms and mf:
        rows.append(("memory a training step adds / a forward adds, one layer, len 4096",
                     f"{ms['forward_MiB']:.0f} / {mf['forward_MiB']:.0f} MiB (peaks {ms['peak_MiB']:.0f} / "
                     f"{mf['peak_MiB']:.0f})", ms["forward_MiB"] / mf["forward_MiB"], "reported", "met"))
    step_allocs = grad_counters["BM_Step<None>/len:512"]["allocs"]
    rows.append(("heap allocations in a warm training step (layer, len 512)", f"{step_allocs:g}", step_allocs,
                 "0", "met" if step_allocs == 0 else "missed"))
    w0, wmax = enc["BM_Additive/window:0/len:2048"], enc["BM_Additive/window:2047/len:2048"]
    rows.append(("additive, len 2048: window 2047 / window 0", f"{wmax * 1e3:.2f} / {w0 * 1e3:.2f} ms",
                 wmax / w0, "flat (about 1)", "met" if wmax / w0 <= 1.5 else "missed"))

    print(f"Targets (one thread, float32, medians of {reps}; relpos threads {ctx.get('relpos_threads')}):\n")
    print("| target | measured | ratio | target ratio | |\n|---|---|---|---|---|")
    for t, m, r, lim, v in rows:
        print(f"| {t} | {m} | {r:.2f} | {lim} | {v} |")

    print("\nBlock forward (d_model 512, 8 heads, d_ff 2048, batch 1), ms per forward and GFLOP/s:\n")
    print("| len | Eigen GEMM GFLOP/s | " + " | ".join(f"{e.lower()}" for e in ENCODINGS) + " |")
    print("|---|---|" + "---|" * len(ENCODINGS))
    for n in LENGTHS:
        cells = [f"{blk[f'BM_Block<{e}>/len:{n}'] * 1e3:.1f} ms ({gflops(f'BM_Block<{e}>/len:{n}'):.0f})"
                 for e in ENCODINGS]
        print(f"| {n} | {gflops(f'BM_EigenGemm/len:{n}'):.1f} | " + " | ".join(cells) + " |")

    print("\nEncodings: time as a multiple of a memcpy of the same bytes (tables: (2M-1, 64) floats; "
          "rotary: (len, 512) floats, in place):\n")
    print("| M or len | sinusoidal table | learned K=64 view | rotary cos/sin table | rotary apply |")
    print("|---|---|---|---|---|")
    for m in (512, 2048, 8192):
        t = enc[f"BM_TableMemcpy/max_len:{m}"]
        cells = [f"{enc[f'BM_TableBuild<{k}>/max_len:{m}'] / t:.1f}"
                 for k in ("SinusoidalTable", "LearnedView", "RotaryTable")]
        rot = enc[f"BM_RotaryApply/len:{m}"] / enc[f"BM_RotaryMemcpy/len:{m}"]
        print(f"| {m} | " + " | ".join(cells) + f" | {rot:.2f} |")

    print("\nPeak memory of one block forward, fresh process per encoding and length (MiB: the "
          "process's peak RSS, and what the forward added):\n")
    print("| encoding | len 2048 peak | len 2048 added | len 8192 peak | len 8192 added | len 65536 peak |")
    print("|---|---|---|---|---|---|")
    kinds = [(e, e) for e in ENCODINGS] + [(f"relpos_bench::{e}", e) for e in ("T5", "Alibi", "Xl", "Kerple",
                                                                              "Deberta")]
    for key, e in kinds:
        cells = []
        for n, fields in ((2048, ("peak_MiB", "forward_MiB")), (8192, ("peak_MiB", "forward_MiB"))):
            m = mem.get(f"BM_PeakRss<{key}, Op::block>/len:{n}/iterations:1/real_time")
            cells += [f"{m[f]:.1f}" if m else "-" for f in fields]
        m = mem.get(f"BM_PeakRss<{e.lower()}, Op::block>/len:65536/iterations:1/real_time")
        cells.append(f"{m['peak_MiB']:.0f}" if m else "-")
        print(f"| {e.lower()} | " + " | ".join(cells) + " |")

    print("\nrelpos / libtorch, same process, one thread each:\n")
    print("\n".join(libtorch_lines(blk, ctx, reps, LENGTHS)))
    print("\nrelpos layer (no encoding) / libtorch layer, in libtorch's default and best configurations:\n")
    print("\n".join(summary_lines({"default": blk, "best": best}, LENGTHS)))


if __name__ == "__main__":
    main()
