"""KeyStore conformance: the same tests against every backend."""

from __future__ import annotations

import hashlib

import pytest

from modelplex.storage.base import (
    BudgetSpec,
    Conflict,
    KeyRecord,
    KeyStore,
    LimitSpec,
    NotFound,
    TeamRecord,
    UserRecord,
)

NOW = 1_800_000_000.0


def make_key(n: int, team: str = "research", user: str | None = None, **fields: object) -> KeyRecord:
    values: dict[str, object] = {
        "id": f"key_{n}", "name": f"key {n}", "digest": hashlib.sha256(f"secret-{n}".encode()).digest(),
        "team": team, "user": user, "created_at": NOW + n, "prefix": f"mpx-{n}"}
    values.update(fields)
    return KeyRecord(**values)  # type: ignore[arg-type]


async def test_create_and_read_back_every_field(keystore: KeyStore) -> None:
    record = make_key(
        1, user="u1", models=("gpt", "claude"), routes=("auto",), metadata={"tier": "gold", "n": [1, 2]},
        limits=LimitSpec(rpm=10, tpm=1000, concurrency=2),
        budgets=(BudgetSpec("day", 5_000_000), BudgetSpec("month", 90_000_000, hard=False)),
        expires_at=NOW + 3600)
    await keystore.create_key(record)
    assert await keystore.key_by_id("key_1") == record
    assert await keystore.key_by_digest(record.digest) == record
    assert await keystore.key_by_id("key_2") is None
    assert await keystore.key_by_digest(b"\x00" * 32) is None


async def test_optional_fields_round_trip_as_none(keystore: KeyStore) -> None:
    record = make_key(1)
    await keystore.create_key(record)
    got = await keystore.key_by_id("key_1")
    assert got == record
    assert got is not None and got.models is None and got.routes is None and got.user is None


async def test_create_conflicts_on_id_or_digest(keystore: KeyStore) -> None:
    await keystore.create_key(make_key(1))
    with pytest.raises(Conflict):
        await keystore.create_key(make_key(1, digest=b"other"))
    with pytest.raises(Conflict):
        await keystore.create_key(make_key(2, digest=make_key(1).digest))
    assert [k.id for k in await keystore.list_keys()] == ["key_1"]


async def test_list_keys_filters_by_team_and_user(keystore: KeyStore) -> None:
    await keystore.create_key(make_key(3, team="a", user="u1"))
    await keystore.create_key(make_key(1, team="a"))
    await keystore.create_key(make_key(2, team="b", user="u1"))
    assert [k.id for k in await keystore.list_keys()] == ["key_1", "key_2", "key_3"]
    assert [k.id for k in await keystore.list_keys(team="a")] == ["key_1", "key_3"]
    assert [k.id for k in await keystore.list_keys(user="u1")] == ["key_2", "key_3"]
    assert [k.id for k in await keystore.list_keys(team="a", user="u1")] == ["key_3"]
    assert await keystore.list_keys(team="nobody") == []


async def test_update_key_replaces_named_fields(keystore: KeyStore) -> None:
    await keystore.create_key(make_key(1))
    updated = await keystore.update_key("key_1", name="renamed", limits=LimitSpec(rpm=5), models=("m",),
                                        metadata={"x": 1})
    assert updated.name == "renamed" and updated.limits == LimitSpec(rpm=5) and updated.models == ("m",)
    assert await keystore.key_by_id("key_1") == updated
    assert await keystore.key_by_digest(updated.digest) == updated


async def test_update_key_refuses_id_digest_and_unknown_fields(keystore: KeyStore) -> None:
    await keystore.create_key(make_key(1))
    for change in ({"id": "key_9"}, {"digest": b"x"}, {"colour": "red"}):
        with pytest.raises(ValueError):
            await keystore.update_key("key_1", **change)
    assert await keystore.key_by_id("key_1") == make_key(1)


async def test_update_and_revoke_unknown_key_raise_not_found(keystore: KeyStore) -> None:
    with pytest.raises(NotFound):
        await keystore.update_key("key_404", name="x")
    with pytest.raises(NotFound):
        await keystore.revoke_key("key_404", NOW)


async def test_revoke_keeps_the_earlier_time(keystore: KeyStore) -> None:
    await keystore.create_key(make_key(1))
    revoked = await keystore.revoke_key("key_1", NOW + 100)
    assert revoked.revoked_at == NOW + 100
    assert (await keystore.revoke_key("key_1", NOW + 200)).revoked_at == NOW + 100
    assert (await keystore.revoke_key("key_1", NOW + 50)).revoked_at == NOW + 50
    stored = await keystore.key_by_digest(revoked.digest)
    assert stored is not None and stored.revoked_at == NOW + 50


async def test_revoked_and_expired_keys_are_found_but_inactive(keystore: KeyStore) -> None:
    await keystore.create_key(make_key(1, expires_at=NOW + 10))
    await keystore.create_key(make_key(2))
    await keystore.revoke_key("key_2", NOW + 5)
    expiring = await keystore.key_by_digest(make_key(1).digest)
    revoked = await keystore.key_by_digest(make_key(2).digest)
    assert expiring is not None and revoked is not None
    assert expiring.active(NOW + 9.9) and not expiring.active(NOW + 10)
    assert revoked.active(NOW + 4) is False  # revocation is not time-travel: it holds from now on
    assert not revoked.active(NOW + 6)


async def test_teams_put_get_list_replace(keystore: KeyStore) -> None:
    team = TeamRecord("research", {"cost_centre": 7}, LimitSpec(rpm=100), (BudgetSpec("month", 10**9),), NOW)
    await keystore.put_team(TeamRecord("zeta"))
    await keystore.put_team(team)
    assert await keystore.team("research") == team
    assert await keystore.team("nobody") is None
    assert [t.name for t in await keystore.list_teams()] == ["research", "zeta"]
    replaced = TeamRecord("research", limits=LimitSpec(tpm=5))
    await keystore.put_team(replaced)
    assert await keystore.team("research") == replaced


async def test_delete_team(keystore: KeyStore) -> None:
    await keystore.put_team(TeamRecord("research"))
    await keystore.create_key(make_key(1, team="research", expires_at=NOW + 100))
    with pytest.raises(Conflict):
        await keystore.delete_team("research", now=NOW)
    await keystore.delete_team("research", now=NOW + 100)  # the only key has expired by then
    assert await keystore.team("research") is None
    with pytest.raises(NotFound):
        await keystore.delete_team("research", now=NOW)


async def test_delete_team_blocked_until_keys_are_revoked(keystore: KeyStore) -> None:
    await keystore.put_team(TeamRecord("research"))
    await keystore.create_key(make_key(1, team="research"))
    with pytest.raises(Conflict):
        await keystore.delete_team("research")  # default `now`: the wall clock
    await keystore.revoke_key("key_1", NOW)
    await keystore.delete_team("research")
    assert await keystore.list_teams() == []


async def test_users_put_get_list_delete(keystore: KeyStore) -> None:
    alice = UserRecord("alice", "research", {"email": "a@example.org"}, LimitSpec(concurrency=1),
                       (BudgetSpec("day", 1000, hard=False),), NOW)
    await keystore.put_user(UserRecord("bob", "ops"))
    await keystore.put_user(alice)
    assert await keystore.user("alice") == alice
    assert await keystore.user("carol") is None
    assert [u.id for u in await keystore.list_users()] == ["alice", "bob"]
    assert [u.id for u in await keystore.list_users(team="ops")] == ["bob"]
    await keystore.put_user(UserRecord("alice", "ops"))
    assert [u.id for u in await keystore.list_users(team="ops")] == ["alice", "bob"]

    await keystore.create_key(make_key(1, team="ops", user="alice"))
    with pytest.raises(Conflict):
        await keystore.delete_user("alice", now=NOW)
    await keystore.revoke_key("key_1", NOW)
    await keystore.delete_user("alice", now=NOW)
    assert await keystore.user("alice") is None
    with pytest.raises(NotFound):
        await keystore.delete_user("alice", now=NOW)
