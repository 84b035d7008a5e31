"""Counters in Redis, shared by every worker and replica. Each operation is one Lua script call
(EVALSHA; see redis_scripts.py for the keys and the logic): atomic on the server.

Round trips are shared: the calls that concurrent requests make in one turn of the event loop go
out together in one pipeline (`_Batch`), each caller getting its own replies. A request still
waits for one round trip per step, but under load the client's per-round-trip work (a connection
from the pool, a write, a timed read) is paid once per batch instead of once per request.

Timeouts are short and nothing is retried (a take or reserve that timed out may have run, so a
retry could charge twice); any Redis failure raises `StoreUnavailable` and the caller applies its
fail-open or fail-closed policy.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

from modelplex.storage import redis_scripts
from modelplex.storage.base import (
    BudgetDecision,
    BudgetRule,
    BudgetState,
    RateDecision,
    RateRule,
    StoreUnavailable,
    admit_in_turn,
)
from modelplex.storage.counting import (
    PeriodKeys,
    budget_counters,
    budget_lifetime,
    rate_counter,
    reservation_lifetime,
)

DEFAULT_PREFIX = "mpx:"
DEFAULT_TIMEOUT_S = 0.25


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


Call = tuple[AsyncScript, Sequence[str], Sequence[Any]]


class _Batch:
    """The calls of one event-loop turn, and who waits for which slice of the replies."""

    __slots__ = ("calls", "waiters")

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.waiters: list[tuple[asyncio.Future[list[Any]], int, int]] = []


class RedisCounters:
    def __init__(self, client: Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._redis = client
        self._prefix = prefix
        self._period_keys = PeriodKeys()
        # register_script computes each SHA once; EVALSHA loads the script only if the server
        # does not know it yet (first call, or after a restart).
        self._take = client.register_script(redis_scripts.TAKE)
        self._acquire = client.register_script(redis_scripts.ACQUIRE)
        self._release_lease = client.register_script(redis_scripts.RELEASE_LEASE)
        self._reserve = client.register_script(redis_scripts.RESERVE)
        self._finish = client.register_script(redis_scripts.FINISH)
        self._state = client.register_script(redis_scripts.STATE)
        self._batch: _Batch | None = None
        self._sending: set[asyncio.Task[None]] = set()

    @classmethod
    async def open(
        cls,
        url: str,
        prefix: str = DEFAULT_PREFIX,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        connect_timeout_s: float | None = None,
        max_connections: int = 64,
        pool_timeout_s: float = 1.0,
    ) -> RedisCounters:
        """Does not connect: a gateway starts while Redis is down and degrades per its policy.
        Calls beyond `max_connections` in flight wait up to `pool_timeout_s` for a connection."""
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=pool_timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s if connect_timeout_s is None else connect_timeout_s,
            retry=Retry(NoBackoff(), 0),
            decode_responses=False,
        )
        return cls(Redis.from_pool(pool), prefix)

    async def _run(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return (await self._pipeline([(script, keys, args)]))[0]

    # rate windows

    async def take(self, rules: list[RateRule], amounts: list[int], now: float) -> RateDecision:
        return self._take_decision(rules, amounts, now, await self._charge(rules, amounts, now, check=True))

    def _take_decision(
        self, rules: list[RateRule], amounts: list[int], now: float, reply: Any
    ) -> RateDecision:
        rejected: int = reply[0]
        totals: list[int] = reply[2:]
        if rejected:
            rule, amount = rules[rejected - 1], amounts[rejected - 1]
            wait = math.inf if amount > rule.limit else max(0.0, reply[1] + rule.window_s + 1 - now)
            left = tuple(max(0, r.limit - t) for r, t in zip(rules, totals, strict=True))
            return RateDecision(False, rule, wait, left)
        return RateDecision(
            True,
            remaining=tuple(max(0, r.limit - t - a) for r, t, a in zip(rules, totals, amounts, strict=True)),
        )

    async def add(self, rules: list[RateRule], amounts: list[int], now: float) -> None:
        await self._charge(rules, amounts, now, check=False)

    def _charge_call(
        self, rules: list[RateRule], amounts: list[int], now: float, check: bool
    ) -> tuple[list[str], list[Any]]:
        keys = [f"{self._prefix}w:{rate_counter(r)}" for r in rules]
        args: list[Any] = [math.floor(now), 1 if check else 0]
        for rule, amount in zip(rules, amounts, strict=True):
            args += (rule.limit, rule.window_s, amount)
        return keys, args

    async def _charge(self, rules: list[RateRule], amounts: list[int], now: float, check: bool) -> Any:
        keys, args = self._charge_call(rules, amounts, now, check)
        return await self._run(self._take, keys, args)

    # concurrency leases

    async def acquire(
        self, scopes: list[tuple[str, int]], lease: str, now: float, ttl_s: float
    ) -> str | None:
        keys = [f"{self._prefix}c:{scope}" for scope, _ in scopes]
        args: list[Any] = [lease, repr(now), repr(now + ttl_s), _ms(ttl_s)]
        args += (limit for _, limit in scopes)
        full: int = await self._run(self._acquire, keys, args)
        return scopes[full - 1][0] if full else None

    async def release_lease(self, scopes: list[str], lease: str) -> None:
        await self._run(self._release_lease, [f"{self._prefix}c:{s}" for s in scopes], [lease])

    # budgets

    async def reserve(
        self, rules: list[BudgetRule], amount_micro: int, reservation: str, now: float, ttl_s: float
    ) -> BudgetDecision:
        keys, args = self._reserve_call(rules, amount_micro, reservation, now, ttl_s)
        return self._reserve_decision(rules, now, await self._run(self._reserve, keys, args))

    def _reserve_call(
        self, rules: list[BudgetRule], amount_micro: int, reservation: str, now: float, ttl_s: float
    ) -> tuple[list[str], list[Any]]:
        if amount_micro < 0:
            raise ValueError("a reservation is never negative")
        names, of_rule = budget_counters(rules, now, self._period_keys)
        lifetimes = [-1] * len(names)
        for rule, i in zip(rules, of_rule, strict=True):
            life = budget_lifetime(rule.period, now, ttl_s)
            if life is not None:
                lifetimes[i] = max(lifetimes[i], _ms(life))
        keys = [key for name in names for key in self._budget_keys(name)]
        keys.append(f"{self._prefix}r:{reservation}")
        life = reservation_lifetime(ttl_s)
        args: list[Any] = [
            reservation,
            repr(now),
            amount_micro,
            repr(now + ttl_s),
            _ms(life),
            json.dumps(names),
            repr(now + life),
            *lifetimes,
        ]
        for rule, i in zip(rules, of_rule, strict=True):
            args += (i + 1, rule.cap_micro, 1 if rule.hard else 0)
        return keys, args

    def _reserve_decision(self, rules: list[BudgetRule], now: float, reply: list[int]) -> BudgetDecision:
        names, of_rule = budget_counters(rules, now, self._period_keys)
        n = len(names)
        spent, reserved = reply[2 : 2 + n], reply[2 + n :]
        return BudgetDecision(
            allowed=reply[0] == 1,
            rejected=rules[reply[1] - 1] if reply[1] else None,
            spent_micro=tuple(spent[i] for i in of_rule),
            reserved_micro=tuple(reserved[i] for i in of_rule),
        )

    async def settle(self, reservation: str, actual_micro: int, now: float) -> None:
        await self._run(
            self._finish,
            [f"{self._prefix}r:{reservation}"],
            [self._prefix, reservation, 1, actual_micro, repr(now)],
        )

    async def release(self, reservation: str) -> None:
        await self._run(
            self._finish, [f"{self._prefix}r:{reservation}"], [self._prefix, reservation, 0, 0, 0]
        )

    async def budget_state(self, rule: BudgetRule, now: float) -> BudgetState:
        names, _ = budget_counters([rule], now, self._period_keys)
        spent, reserved = await self._run(self._state, self._budget_keys(names[0]), [repr(now)])
        return BudgetState(int(spent), int(reserved))

    async def admit_many(
        self,
        rules: list[RateRule],
        amounts: list[int],
        budgets: list[BudgetRule],
        amount_micro: int,
        reservation: str,
        now: float,
        ttl_s: float,
    ) -> tuple[RateDecision, BudgetDecision | None]:
        """The take and the reservation in one round trip (a pipeline of two EVALSHAs)."""
        if not rules or not budgets:
            return await admit_in_turn(self, rules, amounts, budgets, amount_micro, reservation, now, ttl_s)
        take_keys, take_args = self._charge_call(rules, amounts, now, check=True)
        reserve_keys, reserve_args = self._reserve_call(budgets, amount_micro, reservation, now, ttl_s)
        replies = await self._pipeline(
            [(self._take, take_keys, take_args), (self._reserve, reserve_keys, reserve_args)]
        )
        decision = self._take_decision(rules, amounts, now, replies[0])
        budget = self._reserve_decision(budgets, now, replies[1])
        if not decision.allowed:
            if budget.allowed:
                await self.release(reservation)
            return decision, None
        return decision, budget

    async def finish(
        self,
        leases: list[str],
        lease: str,
        rules: list[RateRule],
        amounts: list[int],
        reservation: str | None,
        actual_micro: int,
        now: float,
    ) -> None:
        """Lease release, TPM corrections and the settlement in one round trip."""
        calls: list[Call] = []
        if leases:
            calls.append((self._release_lease, [f"{self._prefix}c:{s}" for s in leases], [lease]))
        if rules:
            calls.append((self._take, *self._charge_call(rules, amounts, now, check=False)))
        if reservation is not None:
            args = (
                [self._prefix, reservation, 1, actual_micro, repr(now)]
                if actual_micro > 0
                else [self._prefix, reservation, 0, 0, 0]
            )
            calls.append((self._finish, [f"{self._prefix}r:{reservation}"], args))
        if calls:
            await self._pipeline(calls)

    async def _pipeline(self, calls: list[Call]) -> list[Any]:
        """EVALSHA each call, in order, in the pipeline of this loop turn; their replies.
        Raises StoreUnavailable when Redis fails or a script errs."""
        loop = asyncio.get_running_loop()
        batch = self._batch
        if batch is None:
            batch = self._batch = _Batch()
            loop.call_soon(self._send, batch)
        future: asyncio.Future[list[Any]] = loop.create_future()
        batch.waiters.append((future, len(batch.calls), len(calls)))
        batch.calls.extend(calls)
        replies = await future
        for i, reply in enumerate(replies):
            # The server lost its scripts (a restart, SCRIPT FLUSH): that call did not run, the
            # others did. Run it alone; this loads the script. Re-running the whole list would
            # charge the calls that ran twice.
            if isinstance(reply, NoScriptError):
                script, keys, args = calls[i]
                try:
                    replies[i] = await script(keys=keys, args=args)
                except (RedisError, OSError, TimeoutError) as exc:
                    raise StoreUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc
        return replies

    def _send(self, batch: _Batch) -> None:
        self._batch = None  # calls from now on go into the next batch
        task = asyncio.ensure_future(self._execute(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _execute(self, batch: _Batch) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for script, keys, args in batch.calls:
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                replies: list[Any] = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError, TimeoutError) as exc:
            for future, _, _ in batch.waiters:
                if not future.done():
                    future.set_exception(StoreUnavailable(f"redis: {type(exc).__name__}: {exc}"))
            return
        except BaseException:  # cancelled at shutdown: nobody waits for an answer that cannot come
            for future, _, _ in batch.waiters:
                future.cancel()
            raise
        for future, start, count in batch.waiters:
            if future.done():  # its request was cancelled meanwhile
                continue
            mine = replies[start : start + count]
            failed = next(
                (r for r in mine if isinstance(r, Exception) and not isinstance(r, NoScriptError)), None
            )
            if failed is not None:
                future.set_exception(StoreUnavailable(f"redis: {type(failed).__name__}: {failed}"))
            else:
                future.set_result(mine)

    def _budget_keys(self, name: str) -> tuple[str, str, str]:
        p = self._prefix
        return f"{p}b:{name}", f"{p}h:{name}", f"{p}q:{name}"

    async def close(self) -> None:
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
        await self._redis.aclose()
