#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""One training step of the demo's model size in PyTorch and in relpos, one thread each
(issue #15's target: relpos's step <= 0.25x PyTorch's).

The step is the demo's (tools/train_default_models.py): the learned model's config
(examples/models/learned/config.json: d_model 32, 4 heads, 2 layers, d_ff 64, vocab 256,
output head), a batch of 16 byte strings of length 32, forward, cross-entropy, backward,
clip_grad_norm_(1.0) and AdamW. PyTorch runs tools/reference.py's RefEncoder (the model the
committed demo models were trained with) under torch.set_num_threads(1); relpos runs the same
steps with `relpos-train fit --threads 1` (TrainableModel, clip_grad_norm, AdamW), timed as the
CPU time of 220 steps minus that of 20. Prints both times (medians) and the ratio.

    /usr/bin/python3 benchmarks/compare_training.py [--build build/release] [--repetitions 5]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BATCH, LEN = 16, 32


def torch_step_seconds(repetitions, min_time):
    import torch
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from reference import RefEncoder
    torch.set_num_threads(1)
    torch.manual_seed(0)
    with open(os.path.join(ROOT, "examples", "models", "learned", "config.json")) as f:
        config = json.load(f)
    model = RefEncoder(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    ids = torch.randint(32, 127, (BATCH, LEN))
    targets = torch.full_like(ids, ord("_"))
    targets[:, 3:] = ids[:, :-3]

    def step():
        model.train()
        _, logits = model(ids)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 targets.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(5):
        step()
    medians = []
    for _ in range(repetitions):
        n, start = 0, time.process_time()
        while time.process_time() - start < min_time or n < 3:
            step()
            n += 1
        medians.append((time.process_time() - start) / n)
    return statistics.median(medians)


def relpos_step_seconds(build, repetitions):
    """relpos-train fit on the same batch shape, one thread: the CPU time of 220 steps minus
    that of 20 (loading, checking and writing cancel out), per step."""
    import resource
    import tempfile
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import numpy as np
    import safetensors_py
    exe = os.path.join(build, "examples", "relpos-train")
    rng = np.random.default_rng(0)
    ids = rng.integers(32, 127, (BATCH, LEN), dtype=np.int64)
    targets = np.full_like(ids, ord("_"))
    targets[:, 3:] = ids[:, :-3]
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "batch.safetensors")
        safetensors_py.save_file({"input_ids": ids, "targets": targets}, data)

        def cpu_seconds(steps):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run([exe, "fit", "--model", os.path.join(ROOT, "examples", "models", "learned"),
                            "--input", data, "--output", os.path.join(tmp, f"out{steps}"),
                            "--steps", str(steps), "--batch", str(BATCH), "--lr", "1e-3",
                            "--clip-norm", "1", "--threads", "1"],
                           check=True, stdout=subprocess.DEVNULL)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)

        per_step = [(cpu_seconds(220) - cpu_seconds(20)) / 200 for _ in range(repetitions)]
    return statistics.median(per_step)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default=os.path.join(ROOT, "build", "release"),
                   help="a build with examples/relpos-train")
    p.add_argument("--repetitions", type=int, default=5)
    p.add_argument("--min-time", type=float, default=0.5, help="seconds per repetition")
    p.add_argument("--json", action="store_true", help="print {torch, relpos, ratio} as JSON")
    a = p.parse_args()
    t = torch_step_seconds(a.repetitions, a.min_time)
    r = relpos_step_seconds(a.build, a.repetitions)
    if a.json:
        print(json.dumps({"torch": t, "relpos": r, "ratio": r / t}))
        return
    print(f"demo model, batch {BATCH}, len {LEN}, one thread, CPU time per training step:")
    print(f"  PyTorch {t * 1e3:.2f} ms, relpos {r * 1e3:.2f} ms, ratio {r / t:.3f} (target <= 0.25)")


if __name__ == "__main__":
    main()
