"""The secret under which gateway keys are stored as HMACs.

It must be the same in every worker and replica, or a key created on one is unknown to another.
Configured as `server.key_hmac_secret`; on one machine with the SQLite store it can instead be
generated once and kept beside the database file (created exclusively, so concurrent workers agree).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from modelplex.config.schema import Config


def secret_path(config: Config) -> Path:
    return Path(config.storage.sqlite_path + ".key-secret")


def resolve_hmac_secret(config: Config) -> bytes | None:
    """The configured secret, or the one kept beside the SQLite file; None: a per-process secret
    (only config-file keys exist, nothing is stored)."""
    if config.server.key_hmac_secret is not None:
        return config.server.key_hmac_secret.get_secret_value().encode("utf-8")
    if config.storage.backend != "sqlite" or config.storage.postgres_dsn:
        return None
    path = secret_path(config)
    if path.parent != Path() and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    value = path.read_text().strip()
    if not value:
        raise RuntimeError(
            f"{path} is empty; delete it to generate a new key secret (existing keys stop working)"
        )
    return value.encode("utf-8")
