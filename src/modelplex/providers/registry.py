"""The provider registry: adapters by name, loaded through the `modelplex.providers` entry points.

Built-in adapters are declared in modelplex's own pyproject under the same group a third-party
package uses, so there is one door in. An entry point names an adapter or a tuple of adapters.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from importlib.metadata import entry_points
from typing import Any

from modelplex.providers.base import Adapter

GROUP = "modelplex.providers"


class UnknownProvider(KeyError):
    pass


class Registry(Mapping[str, Adapter]):
    def __init__(self, adapters: Iterable[Adapter]) -> None:
        self._by_name: dict[str, Adapter] = {}
        for adapter in adapters:
            if adapter.name in self._by_name:
                raise ValueError(f"two providers named {adapter.name!r}")
            self._by_name[adapter.name] = adapter

    def __getitem__(self, name: str) -> Adapter:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownProvider(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._by_name))

    def __len__(self) -> int:
        return len(self._by_name)


def _flatten(obj: Any) -> Iterator[Adapter]:
    if isinstance(obj, tuple | list):
        for item in obj:
            yield from _flatten(item)
    else:
        yield obj


def load_registry() -> Registry:
    adapters: list[Adapter] = []
    for ep in entry_points(group=GROUP):
        adapters.extend(_flatten(ep.load()))
    return Registry(adapters)
