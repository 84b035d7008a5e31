"""The router command of the routing evaluation: `{"id", "prompt"}` lines in, `{"id", "score"}` out.

    python -m modelplex.routing.complexity_score [--model PATH|b1|b1b] < prompts.jsonl > scores.jsonl

A score depends only on its prompt (not on ids, order or batch), so the output is deterministic.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import TextIO

from modelplex.routing.complexity import ComplexityModel


def score_lines(model: ComplexityModel, lines: Iterable[str]) -> Iterator[str]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        obj = json.loads(line)
        if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) or "id" not in obj:
            raise ValueError(f"stdin:{number}: expected an object with `id` and a string `prompt`")
        yield json.dumps({"id": obj["id"], "score": model.score(obj["prompt"])}, ensure_ascii=False)


def main(argv: Sequence[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="model JSON file, or b1 / b1b for a shipped one (default b1)")
    args = parser.parse_args(argv)
    model = ComplexityModel.load(args.model)
    out = stdout if stdout is not None else sys.stdout
    for line in score_lines(model, stdin if stdin is not None else sys.stdin):
        out.write(line + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
