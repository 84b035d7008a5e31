"""The shipped price catalog: list prices per (provider, model), read from package data, never fetched.

`catalog.yaml` is parsed strictly into an immutable `Catalog` (unknown keys, missing fields and
prices finer than a micro-unit are errors with a path such as `entries[3].prices.input`). Load it
once at start-up and pass it in. A deployment's own configured price wins over the catalog; a
model priced by neither is unpriced (None), never free.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from itertools import pairwise
from types import MappingProxyType

import yaml

from modelplex.config.schema import Deployment
from modelplex.metering.cost import MicroPrice, to_micro
from modelplex.metering.prices import micro_price

CATALOG_RESOURCE = "catalog.yaml"
SCHEMA_VERSION = 1
PRICE_KINDS = ("input", "output", "cached_input", "cache_write", "reasoning")

_TOP_KEYS = frozenset({"version", "entries"})
_ENTRY_KEYS = frozenset(
    {"provider", "model", "aliases", "currency", "effective_from", "source", "prices", "notes"}
)
_REQUIRED_ENTRY_KEYS = ("provider", "model", "currency", "effective_from", "source", "prices")
_PROVIDER = re.compile(r"[a-z][a-z0-9_]*")
_MODEL_ID = re.compile(r"\S+")
_CURRENCY = re.compile(r"[A-Z]{3}")


class CatalogError(ValueError):
    """The catalog data is malformed at `path` (e.g. `entries[3].prices.input`)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One model's list price from `effective_from` on, with where it was read."""

    provider: str
    model: str
    aliases: tuple[str, ...]
    price: MicroPrice
    effective_from: dt.date
    source: str
    notes: str = ""


@dataclass(frozen=True)
class Catalog:
    """Price history per (provider, model id or alias)."""

    entries: tuple[CatalogEntry, ...]
    # (provider, id) -> every entry of the model that id names, oldest effective_from first
    _history: Mapping[tuple[str, str], tuple[CatalogEntry, ...]] = field(repr=False, compare=False)

    @classmethod
    def of(cls, entries: tuple[CatalogEntry, ...]) -> Catalog:
        """Index entries; ids (model or alias) must name one model per provider, once per date."""
        by_model: dict[tuple[str, str], list[CatalogEntry]] = {}
        owner: dict[tuple[str, str], str] = {}
        for entry in entries:
            by_model.setdefault((entry.provider, entry.model), []).append(entry)
            for model_id in (entry.model, *entry.aliases):
                claimed = owner.setdefault((entry.provider, model_id), entry.model)
                if claimed != entry.model:
                    raise CatalogError(
                        f"{entry.provider}/{model_id}", f"names both {claimed!r} and {entry.model!r}"
                    )
        history: dict[tuple[str, str], tuple[CatalogEntry, ...]] = {}
        for (provider, model), group in by_model.items():
            group.sort(key=lambda e: e.effective_from)
            for earlier, later in pairwise(group):
                if earlier.effective_from == later.effective_from:
                    raise CatalogError(
                        f"{provider}/{model}", f"two entries effective from {later.effective_from}"
                    )
            frozen = tuple(group)
            for model_id in {model, *(a for e in group for a in e.aliases)}:
                history[(provider, model_id)] = frozen
        return cls(entries=entries, _history=MappingProxyType(history))

    def lookup(self, provider: str, model: str, at: dt.date | None = None) -> CatalogEntry | None:
        """The entry in force on day `at` (UTC today by default): the newest one whose
        effective_from is not after it. None if the id is unknown or no price had begun yet."""
        day = at if at is not None else dt.datetime.now(dt.UTC).date()
        current: CatalogEntry | None = None
        for entry in self._history.get((provider, model), ()):
            if entry.effective_from > day:
                break
            current = entry
        return current

    def price(self, provider: str, model: str, at: dt.date | None = None) -> MicroPrice | None:
        entry = self.lookup(provider, model, at)
        return entry.price if entry is not None else None

    def __len__(self) -> int:
        return len(self.entries)


def resolve_price(deployment: Deployment, catalog: Catalog, at: dt.date | None = None) -> MicroPrice | None:
    """The price a deployment is metered at: its own config `price` if set, else the catalog's
    price for its provider and model on day `at`. None means unpriced."""
    if deployment.price is not None:
        return micro_price(deployment.price)
    return catalog.price(deployment.provider, deployment.model, at)


def load_catalog() -> Catalog:
    """Read and validate the catalog shipped in the package."""
    resource = resources.files("modelplex.metering").joinpath(CATALOG_RESOURCE)
    text = resource.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(CATALOG_RESOURCE, f"not valid YAML: {exc}") from None
    return parse_catalog(data)


def parse_catalog(data: object) -> Catalog:
    """Validate parsed YAML (`{version: 1, entries: [...]}`) into a Catalog."""
    top = _mapping(data, "", _TOP_KEYS, required=("version", "entries"))
    if type(top["version"]) is not int or top["version"] != SCHEMA_VERSION:
        raise CatalogError("version", f"must be {SCHEMA_VERSION}")
    raw_entries = top["entries"]
    if not isinstance(raw_entries, list) or not raw_entries:
        raise CatalogError("entries", "must be a non-empty list")
    return Catalog.of(tuple(_entry(raw, f"entries[{i}]") for i, raw in enumerate(raw_entries)))


def _entry(raw: object, path: str) -> CatalogEntry:
    fields = _mapping(raw, path, _ENTRY_KEYS, required=_REQUIRED_ENTRY_KEYS)
    provider = _text(fields["provider"], f"{path}.provider", _PROVIDER)
    model = _text(fields["model"], f"{path}.model", _MODEL_ID)
    aliases = _aliases(fields.get("aliases", []), f"{path}.aliases", model)
    currency = _text(fields["currency"], f"{path}.currency", _CURRENCY)
    source = _text(fields["source"], f"{path}.source", _MODEL_ID)
    if not source.startswith("https://"):
        raise CatalogError(f"{path}.source", "must be an https:// URL")
    notes = fields.get("notes", "")
    if not isinstance(notes, str):
        raise CatalogError(f"{path}.notes", "must be a string")
    return CatalogEntry(
        provider=provider,
        model=model,
        aliases=aliases,
        price=_prices(fields["prices"], f"{path}.prices", currency),
        effective_from=_date(fields["effective_from"], f"{path}.effective_from"),
        source=source,
        notes=notes.strip(),
    )


def _prices(raw: object, path: str, currency: str) -> MicroPrice:
    """Micro-units per 1M tokens. Unbilled kinds default as most providers bill them: cache reads
    and writes at the input price, reasoning at the output price (as config prices do)."""
    given = _mapping(raw, path, frozenset(PRICE_KINDS), required=("input", "output"))
    micro = {kind: _amount(value, f"{path}.{kind}") for kind, value in given.items()}
    return MicroPrice(
        input=micro["input"],
        output=micro["output"],
        cached_input=micro.get("cached_input", micro["input"]),
        cache_write=micro.get("cache_write", micro["input"]),
        reasoning=micro.get("reasoning", micro["output"]),
        currency=currency,
    )


def _amount(value: object, path: str) -> int:
    # bool is an int; a price of `true` is a typo, not one dollar
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise CatalogError(path, "must be a number")
    try:
        micro = to_micro(value)
    except ValueError as exc:
        raise CatalogError(path, str(exc)) from None
    if micro < 0:
        raise CatalogError(path, "must not be negative")
    return micro


def _date(value: object, path: str) -> dt.date:
    # YAML reads an unquoted ISO date as a date; a timestamp (datetime) is too precise to mean a day
    if isinstance(value, dt.datetime):
        raise CatalogError(path, "must be a date (YYYY-MM-DD), not a timestamp")
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise CatalogError(path, "must be an ISO date (YYYY-MM-DD)")


def _aliases(value: object, path: str, model: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise CatalogError(path, "must be a list")
    aliases = tuple(_text(item, f"{path}[{i}]", _MODEL_ID) for i, item in enumerate(value))
    if model in aliases:
        raise CatalogError(path, f"repeats the model id {model!r}")
    if len(set(aliases)) != len(aliases):
        raise CatalogError(path, "has duplicates")
    return aliases


def _text(value: object, path: str, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise CatalogError(path, f"must be a string matching {pattern.pattern}")
    return value


def _mapping(
    value: object, path: str, allowed: frozenset[str], required: tuple[str, ...]
) -> dict[str, object]:
    if not isinstance(value, dict):
        raise CatalogError(path or "catalog", "must be a mapping")
    prefix = f"{path}." if path else ""
    for key in value:
        if key not in allowed:
            raise CatalogError(f"{prefix}{key}", "unknown key")
    for key in required:
        if key not in value:
            raise CatalogError(f"{prefix}{key}", "missing")
    return {str(k): v for k, v in value.items()}
