"""Time the complexity scorer on one core: CPU microseconds per prompt (process time, so other
load on the machine inflates it little), and the model load time.

.venv/bin/python benchmarks/complexity/bench_score.py [--model b1|b1b|PATH] [--data FILE]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from modelplex.routing.complexity import ComplexityModel
from modelplex.routing.complexity_data import read_rows

DATA = Path("/work/shared/data/routing/b1_dev.jsonl")


def per_prompt_us(model: ComplexityModel, prompts: list[str], repeats: int) -> list[float]:
    runs = []
    for _ in range(repeats):
        start = time.process_time()
        for prompt in prompts:
            model.score(prompt)
        runs.append((time.process_time() - start) / len(prompts) * 1e6)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="b1")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    start = time.process_time()
    model = ComplexityModel.load(args.model)
    print(f"load: {(time.process_time() - start) * 1e3:.0f} ms")
    prompts = [row.prompt for row in read_rows(args.data)]
    near_500 = [p for p in prompts if 450 <= len(p) <= 550]
    long = [p for p in prompts if len(p) >= 2000]
    for label, sample in [("450-550 chars", near_500), ("all", prompts), (">= 2000 chars", long)]:
        runs = per_prompt_us(model, sample, args.repeats)
        chars = statistics.median(len(p) for p in sample)
        print(
            f"{label:>14}: n={len(sample):5d} median {chars:5.0f} chars  "
            f"best {min(runs):6.0f} us/prompt  median {statistics.median(runs):6.0f} us/prompt"
        )


if __name__ == "__main__":
    main()
