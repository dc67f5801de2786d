#!/usr/bin/env python3
"""Golden attention weights for relpos::Model::attention_weights (the demo's heatmaps).

Runs tools/reference.py's RefEncoder in float64 on the default rotary example model
(examples/models/rotary) for one short text and stores every layer's weights
[layer, head, len, len] with the token ids, in tests/data/demo/rotary_attention.safetensors.
Run: /usr/bin/python3 tools/golden_attention_weights.py
"""
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reference  # noqa: E402
import safetensors_py  # noqa: E402

ROOT = os.path.dirname(HERE)
TEXT = "relative positions!"


def main():
    folder = os.path.join(ROOT, "examples", "models", "rotary")
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    model = reference.RefEncoder(config).double()
    weights = safetensors_py.load_file(os.path.join(folder, "model.safetensors"))
    model.load_state_dict({k: torch.from_numpy(v).double() for k, v in weights.items()})
    model.eval()
    ids = torch.tensor([list(TEXT.encode("utf-8"))], dtype=torch.int64)
    with torch.no_grad():
        _, _, attn = model(ids, return_attention=True)
    stacked = torch.stack([a[0] for a in attn])  # [layer, head, len, len]
    out = os.path.join(ROOT, "tests", "data", "demo")
    os.makedirs(out, exist_ok=True)
    safetensors_py.save_file({"input_ids": ids, "weights": stacked},
                             os.path.join(out, "rotary_attention.safetensors"))
    print("wrote", list(stacked.shape))


if __name__ == "__main__":
    main()
