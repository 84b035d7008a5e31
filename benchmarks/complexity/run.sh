#!/bin/sh
# Reproduce benchmarks/complexity/README.md from the repository root:
#   sh benchmarks/complexity/run.sh            # evaluation tables and timing (about 2 minutes)
#   sh benchmarks/complexity/run.sh --train    # first retrain both shipped models (about 10 minutes)
set -eu
D=${ROUTING_DATA:-/work/shared/data/routing}
PY=${PYTHON:-.venv/bin/python}
M=src/modelplex/routing

if [ "${1:-}" = "--train" ]; then
    $PY -m modelplex.routing.complexity_train --train "$D/b1_train.jsonl" --dev "$D/b1_dev.jsonl" \
        --out $M/complexity_model.json --name "Llama-3.1-8B-Instruct -> GPT-4o (B1)"
    $PY -m modelplex.routing.complexity_train --train "$D/b1b_train.jsonl" --dev "$D/b1b_dev.jsonl" \
        --out $M/complexity_model_b1b.json --name "Gemini-1.5-Flash-002 -> Gemini-1.5-Pro-002 (B1b)"
fi

# Each pair's own model on its dev file, then each model on the other pair (transfer).
$PY -m modelplex.routing.complexity_eval --model b1 --data "$D/b1_dev.jsonl"
$PY -m modelplex.routing.complexity_eval --model b1b --data "$D/b1b_dev.jsonl"
$PY -m modelplex.routing.complexity_eval --model b1 --data "$D/b1b_dev.jsonl"
$PY -m modelplex.routing.complexity_eval --model b1b --data "$D/b1_dev.jsonl"
$PY benchmarks/complexity/bench_score.py --model b1 --data "$D/b1_dev.jsonl"
