"""Who is calling: gateway keys from the config file, then virtual keys from the key store.

Only HMACs of keys are held anywhere. A virtual key lookup is cached for `ttl_s` (2 s), so a
revocation reaches every worker and replica within that, well inside the 5 s the product promises,
without a store query per request. Team and user records (their limits and budgets) are cached
the same way.
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from modelplex.errors import AuthenticationFailed, Unavailable
from modelplex.runtime import Caller, Runtime, key_digest
from modelplex.storage.base import KeyRecord, KeyStore, StoreUnavailable, TeamRecord, UserRecord

T = TypeVar("T")
CACHE_SIZE = 10_000
DIGESTS = 4096  # credential -> digest memo, so a known key costs a dict lookup, not an HMAC


class _Missing:
    """Not in the cache (distinct from a cached None: "no such record")."""


MISSING: Any = _Missing()


@dataclass(frozen=True, slots=True)
class _Entry(Generic[T]):
    value: T
    at: float


class TTLCache(Generic[T]):
    """A small LRU with a freshness limit per entry."""

    def __init__(self, ttl_s: float, size: int = CACHE_SIZE) -> None:
        self.ttl_s = ttl_s
        self._size = size
        self._items: OrderedDict[object, _Entry[T]] = OrderedDict()

    def get(self, key: object, now: float) -> tuple[bool, T | None]:
        entry = self._items.get(key)
        if entry is None or now - entry.at > self.ttl_s:
            return False, None
        self._items.move_to_end(key)
        return True, entry.value

    def stale(self, key: object) -> T | None:
        entry = self._items.get(key)
        return entry.value if entry is not None else None

    def put(self, key: object, value: T, now: float) -> None:
        self._items[key] = _Entry(value, now)
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()


def caller_from_record(record: KeyRecord) -> Caller:
    allowed: frozenset[str] | None = None
    if record.models is not None or record.routes is not None:
        allowed = frozenset((*(record.models or ()), *(record.routes or ())))
    tier = record.metadata.get("tier")
    return Caller(
        key_name=record.name,
        digest=record.digest,
        team=record.team,
        user=record.user,
        models=allowed,
        tier=str(tier) if tier is not None else None,
        key_id=record.id,
        rpm=record.limits.rpm,
        tpm=record.limits.tpm,
        concurrency=record.limits.concurrency,
        budgets=record.budgets,
    )


class KeyResolver:
    def __init__(self, store: KeyStore | None, ttl_s: float = 2.0, negative_ttl_s: float = 1.0) -> None:
        self.store = store
        self._keys: TTLCache[Caller | None] = TTLCache(ttl_s)
        self._misses: TTLCache[None] = TTLCache(negative_ttl_s)
        self._teams: TTLCache[TeamRecord | None] = TTLCache(ttl_s)
        self._users: TTLCache[UserRecord | None] = TTLCache(ttl_s)
        self._digests: dict[str, tuple[bytes, bytes]] = {}

    async def authenticate(self, rt: Runtime, credential: str | None) -> Caller:
        if not credential:
            raise AuthenticationFailed("Missing API key. Send it as `Authorization: Bearer <key>`.")
        memo = self._digests.get(credential)
        if memo is None or memo[0] is not rt.hmac_secret:
            memo = (rt.hmac_secret, key_digest(rt.hmac_secret, credential))
            if len(self._digests) >= DIGESTS:
                self._digests.clear()
            self._digests[credential] = memo
        digest = memo[1]
        caller = rt.keys.get(digest)
        if caller is not None and hmac.compare_digest(caller.digest, digest):
            return caller
        found = await self._virtual(digest)
        if found is None:
            raise AuthenticationFailed("Invalid API key.")
        return found

    async def _virtual(self, digest: bytes) -> Caller | None:
        if self.store is None:
            return None
        now = time.monotonic()
        hit, cached = self._keys.get(digest, now)
        if hit:
            return cached
        if self._misses.get(digest, now)[0]:
            return None
        try:
            record = await self.store.key_by_digest(digest)
        except StoreUnavailable:
            stale = self._keys.stale(digest)
            if stale is not None:
                return stale  # the store is down: a key we knew a moment ago still works
            raise Unavailable("The key store is unreachable; try again shortly.", retry_after=2) from None
        if record is None or not record.active(time.time()) or not hmac.compare_digest(record.digest, digest):
            self._misses.put(digest, None, now)
            self._keys.put(digest, None, now)
            return None
        caller = caller_from_record(record)
        self._keys.put(digest, caller, now)
        return caller

    def cached_team(self, name: str) -> TeamRecord | Any | None:
        """The team from the cache, MISSING if not cached (no store: None)."""
        if self.store is None:
            return None
        hit, cached = self._teams.get(name, time.monotonic())
        return cached if hit else MISSING

    def cached_user(self, user_id: str) -> UserRecord | Any | None:
        if self.store is None:
            return None
        hit, cached = self._users.get(user_id, time.monotonic())
        return cached if hit else MISSING

    async def team(self, name: str) -> TeamRecord | None:
        if self.store is None:
            return None
        hit, cached = self._teams.get(name, time.monotonic())
        if hit:
            return cached
        try:
            record = await self.store.team(name)
        except StoreUnavailable:
            return self._teams.stale(name)
        self._teams.put(name, record, time.monotonic())
        return record

    async def user(self, user_id: str) -> UserRecord | None:
        if self.store is None:
            return None
        hit, cached = self._users.get(user_id, time.monotonic())
        if hit:
            return cached
        try:
            record = await self.store.user(user_id)
        except StoreUnavailable:
            return self._users.stale(user_id)
        self._users.put(user_id, record, time.monotonic())
        return record

    def forget(self) -> None:
        """Drop every cached lookup (after an admin change on this worker)."""
        for cache in (self._keys, self._misses, self._teams, self._users):
            cache.clear()
