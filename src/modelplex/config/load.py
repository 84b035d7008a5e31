"""Load a config file: YAML with line numbers, `${ENV}` references, strict schema, cross-references.

Every problem is reported as `path (line N): message`, e.g. `models[1].fallbacks[0] (line 31)`.
The environment is read only through the mapping passed in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from modelplex.config.schema import Config

Loc = tuple[str | int, ...]
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

# A check over the validated Config (references, registered providers, routes, ...), yielding
# (loc, message) pairs. The caller passes the checks in; see `modelplex.config.checks`.
Check = Callable[[Config], Iterable[tuple[Loc, str]]]


@dataclass(frozen=True, slots=True)
class Problem:
    loc: Loc
    line: int | None
    message: str

    def __str__(self) -> str:
        where = format_loc(self.loc) or "(top level)"
        at = f" (line {self.line})" if self.line else ""
        return f"{where}{at}: {self.message}"


class ConfigError(Exception):
    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"invalid config {source}:\n{lines}")


def format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _line_map(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> None:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            lines[(*loc, key)] = key_node.start_mark.line + 1
            _line_map(value_node, (*loc, key), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, (*loc, i), lines)


def _line_for(loc: Loc, lines: Mapping[Loc, int]) -> int | None:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def _resolve_env(value: Any, loc: Loc, env: Mapping[str, str], missing: list[tuple[Loc, str]]) -> Any:
    if isinstance(value, dict):
        return {k: _resolve_env(v, (*loc, k), env, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_env(v, (*loc, i), env, missing) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            missing.append((loc, f"environment variable {name} is not set"))
            return ""

        return _ENV_REF.sub(sub, value)
    return value


def parse_config(text: str, source: str, env: Mapping[str, str], checks: Sequence[Check] = ()) -> Config:
    """Parse config text. Raises ConfigError listing every problem found."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(source, [Problem((), line, f"not valid YAML: {exc}")]) from None
    if node is None or not isinstance(data, dict):
        raise ConfigError(source, [Problem((), 1, "the config must be a YAML mapping")])
    lines: dict[Loc, int] = {}
    _line_map(node, (), lines)

    missing: list[tuple[Loc, str]] = []
    data = _resolve_env(data, (), env, missing)
    if missing:
        raise ConfigError(source, [Problem(loc, _line_for(loc, lines), msg) for loc, msg in missing])

    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False):
            loc = tuple(err["loc"])
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = f"unknown key {loc[-1]!r}"
            problems.append(Problem(loc, _line_for(loc, lines), msg))
        raise ConfigError(source, problems) from None

    problems = [
        Problem(loc, _line_for(loc, lines), msg)
        for check in (check_references, *checks)
        for loc, msg in check(config)
    ]
    if problems:
        raise ConfigError(source, problems)
    return config


def load_config(path: str | Path, env: Mapping[str, str], checks: Sequence[Check] = ()) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), [Problem((), None, f"cannot read: {exc.strerror}")]) from None
    return parse_config(text, str(p), env, checks)


def check_references(config: Config) -> Iterable[tuple[Loc, str]]:
    deployments = {d.name for d in config.deployments}
    seen: set[str] = set()
    for i, d in enumerate(config.deployments):
        if d.name in seen:
            yield ("deployments", i, "name"), f"duplicate deployment name {d.name!r}"
        seen.add(d.name)
    models: set[str] = set()
    for i, m in enumerate(config.models):
        if m.name in models:
            yield ("models", i, "name"), f"duplicate model name {m.name!r}"
        models.add(m.name)
    for i, m in enumerate(config.models):
        for j, dep in enumerate(m.deployments):
            if dep not in deployments:
                yield ("models", i, "deployments", j), f"unknown deployment {dep!r}"
        for j, fb in enumerate(m.fallbacks):
            if fb not in models:
                yield ("models", i, "fallbacks", j), f"unknown model {fb!r}"
            elif fb == m.name:
                yield ("models", i, "fallbacks", j), "a model cannot fall back to itself"
    key_names: set[str] = set()
    key_values: set[str] = set()
    for i, k in enumerate(config.keys):
        if k.name in key_names:
            yield ("keys", i, "name"), f"duplicate key name {k.name!r}"
        key_names.add(k.name)
        secret = k.key.get_secret_value()
        if len(secret) < 8:
            yield ("keys", i, "key"), "a gateway key must be at least 8 characters"
        if secret in key_values:
            yield ("keys", i, "key"), "the same key value is used twice"
        key_values.add(secret)
