"""Labelled routing rows: one reader for the routing data files and for request-log exports.

Both are JSON Lines, one object per prompt. A row needs `prompt` and either the measured quality
of both models (`q_cheap`, `q_premium`, each in [0, 1]: 1.0 correct, 0.0 wrong, or any graded
feedback score) or a single `premium_better` judgement (true when the premium answer was better;
it becomes q_cheap = 0, q_premium = 1, and false becomes a tie). `id` is optional (defaults to the
line number) and every other key (`category`, `out_len_*`, timestamps, ...) is ignored. A request
log export therefore looks like

    {"id": "req_01H...", "prompt": "...", "q_cheap": 0.0, "q_premium": 1.0}
    {"id": "req_01J...", "prompt": "...", "premium_better": false}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Row:
    id: str
    prompt: str
    q_cheap: float
    q_premium: float

    @property
    def delta(self) -> float:
        """What sending this prompt to premium instead of cheap gains in quality."""
        return self.q_premium - self.q_cheap


def _quality(obj: dict[str, Any], key: str, where: str) -> float:
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: `{key}` must be a number, got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{where}: `{key}` must lie in [0, 1], got {value!r}")
    return float(value)


def parse_row(obj: Any, where: str) -> Row:
    """One decoded JSON line as a Row; `where` (file:line) prefixes every error."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object")
    prompt = obj.get("prompt")
    if not isinstance(prompt, str):
        raise ValueError(f"{where}: `prompt` must be a string")
    row_id = str(obj.get("id", where))
    if "q_cheap" in obj or "q_premium" in obj:
        return Row(row_id, prompt, _quality(obj, "q_cheap", where), _quality(obj, "q_premium", where))
    better = obj.get("premium_better")
    if isinstance(better, bool):
        return Row(row_id, prompt, 0.0, 1.0 if better else 0.0)
    raise ValueError(f"{where}: needs `q_cheap` and `q_premium`, or a boolean `premium_better`")


def iter_rows(lines: Iterable[str], source: str) -> Iterator[Row]:
    for number, line in enumerate(lines, start=1):
        if line.strip():
            yield parse_row(json.loads(line), f"{source}:{number}")


def read_rows(path: str | Path) -> list[Row]:
    with Path(path).open(encoding="utf-8") as handle:
        return list(iter_rows(handle, str(path)))


def holdout(
    rows: list[Row], fraction: float, key: str = "modelplex-complexity"
) -> tuple[list[Row], list[Row]]:
    """Split a request log into (train, dev) by a keyed hash of the prompt text.

    Only for logs that come without a dev file; the routing data files have fixed splits and are
    never re-split. Hashing the prompt keeps repeated prompts on one side.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError("the holdout fraction must lie strictly between 0 and 1")
    train: list[Row] = []
    dev: list[Row] = []
    for row in rows:
        digest = hashlib.blake2b(row.prompt.encode("utf-8"), key=key.encode("utf-8"), digest_size=8)
        (dev if int.from_bytes(digest.digest(), "big") / 2**64 < fraction else train).append(row)
    return train, dev
