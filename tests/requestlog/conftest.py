"""PostgreSQL for the request-log tests: a real server (127.0.0.1:5432, database `test`, user
`postgres`; MODELPLEX_TEST_POSTGRES_DSN overrides), one schema per test, dropped afterwards."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from rl_servers import POSTGRES_DSN, unavailable


async def _admin(sql: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncio.wait_for(asyncpg.connect(POSTGRES_DSN), 5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def pg_schema() -> Iterator[str]:
    schema = f"mpx_rl_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_admin(f'CREATE SCHEMA "{schema}"'))
    except (OSError, TimeoutError, Exception) as exc:  # noqa: BLE001
        unavailable(f"PostgreSQL unreachable at {POSTGRES_DSN}: {exc}")
    yield schema
    asyncio.run(_admin(f'DROP SCHEMA "{schema}" CASCADE'))
