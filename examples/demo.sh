#!/usr/bin/env bash
# ./dev demo: the example encoder on its embedded default model, then the length-generalization
# table over every example model, and the pictures. Run from the repository root.
set -euo pipefail
JOBS=${JOBS:-$(nproc)}
cmake --preset release >/dev/null
cmake --build --preset release -j "$JOBS" --target relpos-encode relpos-demo >/dev/null
bin=build/release/examples
out=build/release/demo
mkdir -p "$out"

text=${1:-"relative positions carry to longer inputs"}
echo "== relpos-encode on the embedded default model (rotary, trained to echo the byte 3 back) =="
"$bin/relpos-encode" --text "$text"
echo
echo "== every example model at lengths beyond its training (<= 32) =="
"$bin/relpos-demo" --out "$out" --text "$text"
