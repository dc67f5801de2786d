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
The table's header says which library the process mapped.

libtorch runs two ways, each in its own run of bench_block (relpos beside it in both, so each
ratio is measured in one process):
  default  the environment as this script got it;
  best     libtorch's best configuration on this machine: OPENBLAS_CORETYPE and
           OPENBLAS_L2_SIZE unset (OpenBLAS picks its own kernels, e.g. AVX-512, instead of
           a pinned core), and glibc malloc tuned by GLIBC_TUNABLES (BEST_TUNABLES: huge
           pages, no mmap / trim of the large buffers libtorch allocates per forward).
Users who tune their machine see the second row, so both are printed. Standard library only.
"""
import argparse
import json
import os
import subprocess
import sys

OPENBLAS_DIR = "/usr/lib/x86_64-linux-gnu/openblas-pthread"
ENCODINGS = ["None", "Sinusoidal", "Learned", "Rotary"]
UNIT = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}


BEST_TUNABLES = ("glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=33554432:"
                 "glibc.malloc.trim_threshold=4294967296:glibc.malloc.top_pad=268435456")
# libtorch's configurations: variables set, and variables removed, for the run
TORCH_CONFIGS = {
    "default": ({}, ()),
    "best": ({"GLIBC_TUNABLES": BEST_TUNABLES}, ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")),
}


def run_benchmark(binary, bench_filter, repetitions, env_extra=None, min_time=None, env_unset=(),
                  json_suffix=""):
    """Runs a Google Benchmark binary; returns ({name: median seconds}, {name: counters}, context).
    The raw JSON is kept beside the binary as <binary><json_suffix>.json."""
    env = dict(os.environ)
    for name in env_unset:
        env.pop(name, None)
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
    with open(binary + json_suffix + ".json", "wb") as f:
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


def describe_config(config):
    """One line saying what a libtorch configuration set and removed."""
    set_vars, unset_vars = TORCH_CONFIGS[config]
    if not set_vars and not unset_vars:
        kept = ", ".join(f"{k}={os.environ[k]}" for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                                        "GLIBC_TUNABLES") if k in os.environ)
        return f"libtorch {config} configuration: the environment as given ({kept or 'none of OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE, GLIBC_TUNABLES set'})"
    return (f"libtorch {config} configuration: " + ", ".join(f"{k}={v}" for k, v in set_vars.items())
            + "; unset " + ", ".join(unset_vars))


def libtorch_lines(times, ctx, repetitions, lengths=(128, 512, 1024, 2048), config="default"):
    """The markdown table of relpos / libtorch ratios from bench_block's medians."""
    if not any(k.startswith("BM_Torch") for k in times):
        return ["libtorch was not found when this build was configured: no side-by-side run."]
    lines = [describe_config(config) + ".", "",
             f"libtorch BLAS: {ctx.get('blas_library', '?')}; relpos threads: "
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
              min_time=None, config="default"):
    """bench_block with libtorch in configuration `config` (TORCH_CONFIGS)."""
    set_vars, unset_vars = TORCH_CONFIGS[config]
    extra = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    extra.update(torch_env(torch_blas))
    extra.update(set_vars)
    suffix = "" if config == "default" else "." + config
    return run_benchmark(binary, bench_filter, repetitions, extra, min_time, unset_vars, suffix)


def summary_lines(by_config, lengths=(128, 512, 1024, 2048)):
    """relpos layer (no encoding) / libtorch layer, one row per libtorch configuration."""
    lines = ["| libtorch configuration | " + " | ".join(f"len {n}" for n in lengths) + " |",
             "|---|" + "---|" * len(lengths)]
    for config, times in by_config.items():
        cells = []
        for n in lengths:
            t = times.get(f"BM_Torch<relpos_bench::TorchOp::block>/len:{n}")
            r = times.get(f"BM_Block<None>/len:{n}")
            cells.append(f"{r / t:.2f} ({r * 1e3:.1f} / {t * 1e3:.1f} ms)" if t and r else "-")
        lines.append(f"| {config} | " + " | ".join(cells) + " |")
    return lines


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default="build/bench", help="the CMake build directory")
    p.add_argument("--repetitions", type=int, default=5)
    p.add_argument("--torch-blas", choices=["openblas", "system"], default=default_torch_blas())
    p.add_argument("--configs", default="default,best", help="libtorch configurations to run")
    a = p.parse_args()
    binary = os.path.join(a.build, "benchmarks", "bench_block")
    by_config = {}
    for config in a.configs.split(","):
        times, _, ctx = run_block(binary, a.repetitions, a.torch_blas, config=config)
        by_config[config] = times
        print("\n".join(libtorch_lines(times, ctx, a.repetitions, config=config)) + "\n")
    print("relpos layer (no encoding) / libtorch layer, each ratio measured in one process:\n")
    print("\n".join(summary_lines(by_config)))


if __name__ == "__main__":
    main()
