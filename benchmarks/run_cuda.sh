#!/bin/sh
# The three speed benchmarks on a CUDA device (each skips with a message when CUDA is absent).
set -e
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
$PY -m pytest -q tests/test_fused_terms.py -p no:randomly -rs
$PY benchmarks/step_overhead.py --device cuda --threads 1 --rounds 7
$PY benchmarks/scaling.py --device cuda --rounds 5
$PY benchmarks/search_time.py --device cuda --repeats 1
