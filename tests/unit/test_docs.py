"""The docs list every config key, every CLI command and every provider (datasette's test_docs idea)."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel

from modelplex.cli import main
from modelplex.config.schema import Condition, Config
from modelplex.providers.registry import load_registry

# Value types documented once where they are used, not key by key.
LEAVES = (Condition,)

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, tuple, dict, typing.Annotated):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def config_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        keys.append(path)
        for sub in _models_in(field.annotation):
            if sub not in LEAVES:
                keys.extend(config_keys(sub, f"{path}."))
    return keys


def test_every_config_key_is_documented() -> None:
    text = (DOCS / "config.md").read_text()
    documented = set(re.findall(r"`([a-z_][a-z0-9_.]*)`", text))
    missing = [k for k in config_keys() if k not in documented]
    assert not missing, f"docs/config.md does not mention: {', '.join(missing)}"


def commands(group: click.Group = main, prefix: str = "modelplex") -> list[str]:
    out = []
    for name, cmd in group.commands.items():
        full = f"{prefix} {name}"
        out.append(full)
        if isinstance(cmd, click.Group):
            out.extend(commands(cmd, full))
    return out


def test_every_command_is_documented() -> None:
    text = (DOCS / "cli.md").read_text()
    missing = [c for c in commands() if f"`{c}" not in text]
    assert not missing, f"docs/cli.md does not document: {', '.join(missing)}"


def test_every_provider_is_documented() -> None:
    text = (DOCS / "providers.md").read_text()
    missing = [p for p in load_registry() if f"`{p}`" not in text]
    assert not missing, f"docs/providers.md does not document: {', '.join(missing)}"


def test_readme_links_resolve() -> None:
    readme = (DOCS.parent / "README.md").read_text()
    for link in re.findall(r"\]\(((?:docs|benchmarks)/[^)#]+)\)", readme):
        assert (DOCS.parent / link).exists(), link
