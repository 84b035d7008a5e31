"""Prompt features for the complexity router, in pure Python so that they run on the request path.

A prompt becomes a sparse vector: a few named shape features (length, digit and math-symbol
density, option count, numeric options, ...) followed by hashed word n-grams of the question and of
the answer options. The hash is CRC-32, so a feature's index is the same in every process.
Training and scoring share this one function; a model file records the FeatureSpec it was fit with.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any

# A multiple-choice option line: "A. text" ... "J. text".
_OPTION = re.compile(r"^\s*\(?([A-J])[.)]\s+(.*)$")
_TOKEN = re.compile(r"[a-z]+|\d+(?:[.,]\d+)*|[^\sa-z\d]")
_DIGIT = re.compile(r"\d")
_DIGITS = dict.fromkeys(map(ord, "0123456789"))
_MATH = dict.fromkeys(map(ord, "=+*/^\\$%<>∫∑√πθλμσΔ±×÷≤≥"))
_UPPER = dict.fromkeys(map(ord, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
_SEED_WORD, _SEED_BIGRAM, _SEED_OPTION = (zlib.crc32(p) for p in (b"w ", b"b ", b"o "))
_LATEX = re.compile(r"\\[a-z]+|\$|\^\{|_\{")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")

DENSE_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_question_chars",
    "log_mean_option_chars",
    "log_max_option_chars",
    "options",
    "lines",
    "digit_share_question",
    "digit_share_options",
    "numeric_options",
    "short_options",
    "math_share_question",
    "latex",
    "log_numbers_question",
    "question_mark",
    "upper_share",
)
N_DENSE = len(DENSE_NAMES)
MAX_CHARS = 6000  # every prompt in the routing data is shorter, so training never clips


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    hash_bits: int = 16
    bigrams: bool = True  # question word bigrams besides unigrams
    option_tokens: bool = True  # option unigrams, hashed apart from question ones

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> FeatureSpec:
        return cls(**obj)


def split_prompt(text: str) -> tuple[str, list[str]]:
    """(question, options): trailing `A. ...` lines are options, the rest is the question."""
    lines = text.strip().split("\n")
    options: list[str] = []
    while lines:
        match = _OPTION.match(lines[-1])
        if match is None:
            break
        options.append(match.group(2))
        lines.pop()
    options.reverse()
    return "\n".join(lines), options


def tokens(text: str) -> list[str]:
    """Lower-cased words, numbers collapsed to `#`, and single symbol characters."""
    return ["#" if tok[0].isdigit() else tok for tok in _TOKEN.findall(text.lower())]


def _share(count: int, total: int) -> float:
    return count / total if total else 0.0


def _count(text: str, deleting: dict[int, None]) -> int:
    """How many characters of `text` are in a class, via one C-speed str.translate."""
    return len(text) - len(text.translate(deleting))


def dense_features(text: str, question: str, options: list[str], length: int) -> list[float]:
    option_chars = [len(o) for o in options]
    option_text = "".join(options)
    return [
        math.log1p(length) / 8.0,
        math.log1p(len(question)) / 8.0,
        math.log1p(sum(option_chars) / len(options)) / 6.0 if options else 0.0,
        math.log1p(max(option_chars)) / 6.0 if options else 0.0,
        len(options) / 10.0,
        min(text.count("\n"), 40) / 20.0,
        10.0 * _share(_count(question, _DIGITS), len(question)),
        5.0 * _share(_count(option_text, _DIGITS), len(option_text)),
        _share(sum(1 for o in options if _DIGIT.search(o)), len(options)),
        _share(sum(1 for o in options if len(o.split()) <= 3), len(options)),
        20.0 * _share(_count(question, _MATH), len(question)),
        1.0 if _LATEX.search(text) else 0.0,
        math.log1p(len(_NUMBER.findall(question))) / 3.0,
        1.0 if "?" in question else 0.0,
        10.0 * _share(_count(question, _UPPER), len(question)),
    ]


def _add(buckets: set[int], out: dict[int, float]) -> None:
    """Binary features for `buckets`, scaled to unit L2 norm so long prompts do not dominate."""
    if buckets:
        value = 1.0 / math.sqrt(len(buckets))
        for bucket in buckets:
            out[N_DENSE + bucket] = out.get(N_DENSE + bucket, 0.0) + value


def word_buckets(words: list[str], mask: int, bigrams: bool) -> set[int]:
    """Hash buckets of the words and word pairs; CRC-32 chaining avoids building key strings."""
    encoded = [w.encode("utf-8") for w in words]
    out = {zlib.crc32(w, _SEED_WORD) & mask for w in encoded}
    if bigrams:
        # crc32(b" " + second, crc32(first, seed)) is the CRC of "b first second".
        out.update(zlib.crc32(b" " + b, zlib.crc32(a, _SEED_BIGRAM)) & mask for a, b in pairwise(encoded))
    return out


def featurize(text: str, spec: FeatureSpec) -> dict[int, float]:
    """The sparse feature vector of one prompt: index -> value.

    A prompt over MAX_CHARS is read as its head and tail (where multiple-choice options sit), so
    the cost per request is bounded; only the length feature sees the whole text.
    """
    length = len(text)
    if length > MAX_CHARS:
        text = text[: MAX_CHARS // 2] + "\n" + text[-(MAX_CHARS // 2) :]
    question, options = split_prompt(text)
    out = {i: v for i, v in enumerate(dense_features(text, question, options, length)) if v}
    mask = (1 << spec.hash_bits) - 1
    _add(word_buckets(tokens(question), mask, spec.bigrams), out)
    if spec.option_tokens and options:
        option_words = {w.encode("utf-8") for o in options for w in tokens(o)}
        _add({zlib.crc32(w, _SEED_OPTION) & mask for w in option_words}, out)
    return out
