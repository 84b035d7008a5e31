"""Play a Lambda runtime: in a fresh process, call `modelplex.serverless.handler` once per event of
a JSON file and print one JSON line per invocation (the response, its duration, the cold starts so
far, and the request ids the request log held right when the invocation returned).

    MODELPLEX_CONFIG=gw.yaml python lambda_invoke.py events.json [requests.db]
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
import types
from pathlib import Path


def logged_ids(db: Path | None) -> list[str]:
    if db is None or not db.exists():
        return []
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT request_id FROM request_log")]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def main() -> None:
    from modelplex.serverless import handler

    events = json.loads(Path(sys.argv[1]).read_text())
    db = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    for i, event in enumerate(events):
        context = types.SimpleNamespace(function_name="modelplex", function_version="$LATEST",
                                        aws_request_id=f"invocation-{i}", memory_limit_in_mb=1024)
        started = time.monotonic()
        response = handler(event, context)
        seconds = time.monotonic() - started
        print(json.dumps({"response": response, "seconds": seconds, "cold_starts": handler.cold_starts,
                          "logged": logged_ids(db)}), flush=True)
    handler.close()


if __name__ == "__main__":
    main()
