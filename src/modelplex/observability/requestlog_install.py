"""Plug the request log, the feedback endpoint and the dashboard into a gateway's Services."""

from __future__ import annotations

import math
import time
from functools import partial
from pathlib import Path

import msgspec

from modelplex.errors import InvalidRequest, ModelplexError
from modelplex.observability.requestlog import RequestLog
from modelplex.observability.requestlog_row import Feedback
from modelplex.server.dialect import bearer
from modelplex.server.http import ClientGone, Receive, Scope, Send, read_body, send_body
from modelplex.server.openai import DIALECT as OPENAI
from modelplex.services import Services

FEEDBACK_PATH = "/v1/feedback"
_MAX_FEEDBACK_BYTES = 4096
_encode = msgspec.json.Encoder().encode


class FeedbackBody(msgspec.Struct, forbid_unknown_fields=True):
    request_id: str
    score: float


def install(svc: Services) -> RequestLog:
    """The request log sink and its background tasks; `POST /v1/feedback`; the dashboard."""
    from modelplex.dashboard.install import install as install_dashboard

    settings = svc.runtime().config.request_log
    base = svc.holder.path.resolve().parent if svc.holder.path is not None else Path.cwd()
    requestlog = RequestLog(svc, settings, base)
    if settings.enabled:  # off: no row is built at all (the dashboard's live panels need the log)
        svc.sinks.append(requestlog)
    if requestlog.shipper is not None:
        svc.tasks += [requestlog.shipper.run, requestlog.fsync_loop]
        svc.closers.append(requestlog.close)
    svc.routes[("POST", FEEDBACK_PATH)] = partial(feedback, svc, requestlog)
    requestlog.dashboard = install_dashboard(svc, requestlog)
    return requestlog


async def feedback(svc: Services, requestlog: RequestLog, scope: Scope, receive: Receive, send: Send) -> None:
    """`{"request_id": "...", "score": 0.8}` with a gateway key: a caller's score of an answer,
    used by `modelplex assess` for the quality of each model per query type. Latest score wins."""
    try:
        caller = await svc.keys.authenticate(svc.runtime(), bearer(scope))
        raw = await read_body(scope, receive, _MAX_FEEDBACK_BYTES)
        try:
            body = msgspec.json.decode(raw, type=FeedbackBody)
        except msgspec.DecodeError as exc:
            raise InvalidRequest(f"Invalid feedback: {exc}") from None
        if not body.request_id or len(body.request_id) > 128:
            raise InvalidRequest("request_id must be 1 to 128 characters.", param="request_id")
        if not math.isfinite(body.score):
            raise InvalidRequest("score must be a finite number.", param="score")
    except ClientGone:
        return
    except ModelplexError as exc:
        status, payload = OPENAI.render_error(exc)
        await send_body(send, status, payload, [])
        return
    requestlog.feedback(
        Feedback(request_id=body.request_id, score=body.score, ts=time.time(), key_name=caller.key_name)
    )
    await send_body(send, 202, _encode({"status": "accepted", "request_id": body.request_id}), [])
