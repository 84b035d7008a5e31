"""Config section for the request log (`request_log:`): where rows go, how they are spooled and
shipped, how long they are kept, and whether prompt and output text is stored.

Relative paths are resolved against the directory of the config file. Changes to this section
take effect at the next start (a reload keeps the running log as it is).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from modelplex.config.base import Strict


class RequestLog(Strict):
    enabled: bool = True
    store: Literal["sqlite", "postgres"] = "sqlite"
    sqlite_path: str = "modelplex-requests.db"
    postgres_dsn: SecretStr | None = None  # postgresql://user:pass@host:5432/db
    postgres_schema: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # Each worker process appends to its own spool under this directory before its response
    # completes; a background task ships the spool to the store.
    spool_dir: str = "modelplex-spool"
    dead_letter_path: str = "modelplex-requests.dead.jsonl"  # rows the store rejected
    fsync_interval_ms: int = Field(200, ge=1)  # spool bytes reach the disk within this window
    segment_bytes: int = Field(8 * 1024 * 1024, ge=4096)  # spool file size before a new one starts
    batch_rows: int = Field(500, ge=1, le=10_000)
    ship_interval_ms: int = Field(250, ge=10)  # how often an idle shipper looks for new rows
    retry_max_s: float = Field(5.0, gt=0)  # longest backoff while the store is down
    retention_days: float | None = Field(30.0, gt=0)  # None: keep rows forever
    # Prompt and output text are stored only when this is true, each passed through `redact`.
    store_prompts: bool = False
    # "package.module:function" taking (text, kind) with kind "prompt" | "output" and returning
    # the text to store, or None to store nothing. Default with store_prompts: the built-in
    # masking of e-mail addresses, API-key-like tokens and long digit runs.
    redact: str | None = "modelplex.observability.requestlog_row:redact_common"
    max_text_chars: int = Field(20_000, ge=0)  # longer text is cut

    @model_validator(mode="after")
    def _store_needs_dsn(self) -> RequestLog:
        if self.store == "postgres" and self.postgres_dsn is None:
            raise ValueError("request_log.store is postgres: set request_log.postgres_dsn")
        return self
