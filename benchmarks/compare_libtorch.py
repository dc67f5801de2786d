#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Runs bench_block (relpos and libtorch in one process, one thread each) and prints the
relpos / libtorch time ratio per sequence length and encoding, from the medians of
--repetitions runs (CPU time per forward; below 1.0 relpos is faster).

  benchmarks/compare_libtorch.py [--build build/bench] [--repetitions 5] [--torch-blas openblas]

libtorch's BLAS: Debian's libtorch links libblas.so.3, which is the reference BLAS unless
the system's alternative says otherwise. --torch-blas openblas (the default, when
libopenblas0-pthread is installed) puts OpenBLAS first on LD_LIBRARY_PATH for this run only,
so libtorch multiplies with OpenBLAS; --torch-blas system keeps whatever libblas.so.3 is.
The table's header says which library the process mapped. Standard library only.
"""
import argparse
import json
import os
import subprocess
import sys

OPENBLAS_DIR = "/usr/lib/x86_64-linux-gnu/openblas-pthread"
ENCODINGS = ["None", "Sinusoidal", "Learned", "Rotary"]
UNIT = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def run_benchmark(binary, bench_filter, repetitions, env_extra=None, min_time=None):
    """Runs a Google Benchmark binary; returns ({name: median seconds}, {name: counters}, context).
    The raw JSON is kept beside the binary as <binary>.json."""
    env = dict(os.environ)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(env_extra or {})
    cmd = [binary, "--benchmark_format=json", f"--benchmark_filter={bench_filter}"]
    if min_time is not None:
        cmd.append(f"--benchmark_min_time={min_time}")
    if repetitions > 1:
        # repetitions of all series in random order, so a change of machine load during the
        # run spreads over every series instead of biasing the ratios between them
        cmd += [f"--benchmark_repetitions={repetitions}", "--benchmark_report_aggregates_only=true",
                "--benchmark_enable_random_interleaving=true"]
    out = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE).stdout
    with open(binary + ".json", "wb") as f:
        f.write(out)
    data = json.loads(out)
    times, counters = {}, {}
    for b in data["benchmarks"]:
        if repetitions > 1 and b.get("aggregate_name") != "median":
            continue
        name = b.get("run_name", b["name"])
        times[name] = b["cpu_time"] * UNIT[b.get("time_unit", "ns")]
        counters[name] = {k: v for k, v in b.items() if isinstance(v, (int, float))}
    return times, counters, data["context"]


def torch_env(choice):
    if choice == "openblas":
        if not os.path.isdir(OPENBLAS_DIR):
            sys.exit(f"--torch-blas openblas: {OPENBLAS_DIR} not found (apt-get install libopenblas0-pthread)")
        return {"LD_LIBRARY_PATH": OPENBLAS_DIR + ":" + os.environ.get("LD_LIBRARY_PATH", "")}
    return {}


def default_torch_blas():
    return "openblas" if os.path.isdir(OPENBLAS_DIR) else "system"


def libtorch_lines(times, ctx, repetitions, lengths=(128, 512, 1024, 2048)):
    """The markdown table of relpos / libtorch ratios from bench_block's medians."""
    if not any(k.startswith("BM_Torch") for k in times):
        return ["libtorch was not found when this build was configured: no side-by-side run."]
    lines = [f"libtorch BLAS: {ctx.get('blas_library', '?')}; relpos threads: "
             f"{ctx.get('relpos_threads', '?')}; medians of {repetitions} (CPU time per forward)", "",
             "| len | libtorch layer (ms) | " + " | ".join(f"relpos {e.lower()} / libtorch" for e in ENCODINGS)
             + " | libtorch MHA (ms) | relpos attention none / libtorch MHA |",
             "|" + "---|" * (len(ENCODINGS) + 4)]
    for n in lengths:
        t = times.get(f"BM_Torch<relpos_bench::TorchOp::block>/len:{n}")
        ta = times.get(f"BM_Torch<relpos_bench::TorchOp::attention>/len:{n}")
        if t is None or ta is None:
            continue
        cells = [f"{times[f'BM_Block<{e}>/len:{n}'] / t:.2f}" for e in ENCODINGS]
        att = times.get(f"BM_Attention<None>/len:{n}")
        lines.append(f"| {n} | {t * 1e3:.1f} | " + " | ".join(cells) +
                     f" | {ta * 1e3:.1f} | {att / ta:.2f} |")
    return lines


def run_block(binary, repetitions, torch_blas, bench_filter="(BM_Block|BM_Attention<|BM_Torch)",
              min_time=None):
    extra = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    extra.update(torch_env(torch_blas))
    return run_benchmark(binary, bench_filter, repetitions, extra, min_time)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default="build/bench", help="the CMake build directory")
    p.add_argument("--repetitions", type=int, default=5)
    p.add_argument("--torch-blas", choices=["openblas", "system"], default=default_torch_blas())
    a = p.parse_args()
    binary = os.path.join(a.build, "benchmarks", "bench_block")
    times, _, ctx = run_block(binary, a.repetitions, a.torch_blas)
    print("\n".join(libtorch_lines(times, ctx, a.repetitions)))


if __name__ == "__main__":
    main()
