"""Ledger conformance: idempotent by request id, totals by team, key and time."""

from __future__ import annotations

from modelplex.storage.base import Ledger, LedgerEntry

NOW = 1_800_000_000.0


def entry(n: int, cost: int, team: str | None = "a", key: str | None = "k1", at: float = NOW,
          **fields: object) -> LedgerEntry:
    values: dict[str, object] = {
        "request_id": f"req-{n}", "at": at, "key_id": key, "team": team, "user": None, "route": "auto",
        "model": "gpt", "deployment": "openai-gpt", "cost_micro": cost, "currency": "USD",
        "report_cost_micro": cost * 2}
    values.update(fields)
    return LedgerEntry(**values)  # type: ignore[arg-type]


async def test_empty(ledger: Ledger) -> None:
    assert await ledger.count() == 0
    assert await ledger.total() == 0
    await ledger.record([])
    assert await ledger.count() == 0


async def test_record_is_idempotent_by_request_id(ledger: Ledger) -> None:
    await ledger.record([entry(1, 10), entry(2, 20)])
    await ledger.record([entry(1, 10), entry(2, 999), entry(3, 30)])  # a resent batch, one new row
    await ledger.record([entry(3, 30), entry(3, 30)])
    assert await ledger.count() == 3
    assert await ledger.total() == 2 * (10 + 20 + 30)  # the first write of req-2 stands


async def test_totals_filter_by_team_key_and_time(ledger: Ledger) -> None:
    await ledger.record([
        entry(1, 1, team="a", key="k1", at=NOW),
        entry(2, 10, team="a", key="k2", at=NOW + 10),
        entry(3, 100, team="b", key="k3", at=NOW + 20),
        entry(4, 1000, team=None, key=None, at=NOW + 30, user="u", estimated=True, unpriced=True),
    ])
    assert await ledger.total() == 2 * 1111
    assert await ledger.total(team="a") == 2 * 11
    assert await ledger.total(key_id="k2") == 2 * 10
    assert await ledger.total(team="a", key_id="k3") == 0
    assert await ledger.total(since=NOW + 10) == 2 * 1110
    assert await ledger.total(team="a", since=NOW + 5) == 2 * 10
    assert await ledger.total(since=NOW + 31) == 0


async def test_large_batch(ledger: Ledger) -> None:
    await ledger.record([entry(n, n, at=NOW + n) for n in range(2000)])
    assert await ledger.count() == 2000
    assert await ledger.total() == 2 * sum(range(2000))
