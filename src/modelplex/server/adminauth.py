"""The admin credential: `/admin`, `/dashboard` and `/metrics` take `server.admin_key`, not gateway keys."""

from __future__ import annotations

import hmac

from modelplex.runtime import Runtime
from modelplex.server.dialect import bearer
from modelplex.server.http import Scope


def admin_authorized(rt: Runtime, scope: Scope) -> bool:
    """True when the request carries the configured admin key (constant-time comparison).
    Without an admin key configured, nothing is authorized."""
    expected = rt.config.server.admin_key
    given = bearer(scope)
    if expected is None or given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.get_secret_value().encode("utf-8"))
