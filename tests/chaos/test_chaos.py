"""Chaos: one test per upstream fault, against a real gateway process and the simulator.

Each asserts what the client got and what the simulator saw: attempt counts, gaps between
attempts, identical bodies on retry. Every case has its own model whose primary deployment's
upstream model name scripts the fault (see simulator/behaviour.py).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from helpers import GATEWAY_KEY, Gateway, Sims, base_config, deployment

FAST = {"connect": 1, "first_token": 1.0, "idle": 1.0, "total": 5}

# case -> (primary upstream model with its fault script, extra deployment settings)
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "ra-seconds": ("ra-s+script=429:retry-after=1,ok", {}),
    "ra-none": ("ra-n+script=429,ok", {}),
    "ra-date": ("ra-d+script=429:retry-after=Wed, 21 Oct 2015 07:28:00 GMT,ok", {}),
    "ra-negative": ("ra-neg+script=429:retry-after=-5,ok", {}),
    "ra-huge": ("ra-huge+script=429:retry-after=86400,ok", {}),
    "e500-once": ("e500+script=500,ok", {}),
    "e503-always": ("e503+script=503", {}),
    "reset": ("reset+script=reset,ok", {}),
    "silent": ("silent+script=silent", {}),
    "slow-first": ("slow+script=slow:3000", {}),
    "cut": ("cut+script=cut:3+output_tokens=20", {}),
    "stall": ("stall+script=stall:3+output_tokens=20", {}),
    "malformed": ("malf+script=malformed:3+output_tokens=20", {}),
    "no-done": ("nodone+script=no_done", {}),
    "ctx-runtime": ("ctx+script=context_length", {"capabilities": {"context_window": 1000}}),
    "policy": ("policy+script=content_policy", {}),
    "policy-fb": ("policyfb+script=content_policy", {}),
    "all-down": ("down1+script=503", {}),
    "breaker": ("brk", {}),
    "disconnect": ("disc+tokens_per_s=10+output_tokens=60", {}),
    "single-ra": ("single+script=429:retry-after=1,ok", {}),
}


def chaos_config(sims: Sims) -> dict[str, Any]:
    sim = sims["openai"]
    deps, models = [], []
    for case, (upstream, extra) in CASES.items():
        deps.append(deployment(f"{case}-primary", "openai", sim, upstream, timeouts=FAST, **extra))
        backup = "down2+script=503" if case == "all-down" else f"backup-{case}"
        deps.append(
            deployment(
                f"{case}-backup",
                "openai",
                sim,
                backup,
                timeouts=FAST,
                capabilities={"context_window": 100000},
            )
        )
        model: dict[str, Any] = {"name": case, "deployments": [f"{case}-primary"]}
        if case == "ctx-runtime":
            model["context_window_fallbacks"] = [f"{case}-big"]
            models.append({"name": f"{case}-big", "deployments": [f"{case}-backup"]})
        elif case == "policy-fb":
            model["content_policy_fallbacks"] = [f"{case}-alt"]
            models.append({"name": f"{case}-alt", "deployments": [f"{case}-backup"]})
        elif case not in ("policy", "single-ra"):
            model["fallbacks"] = [f"{case}-fb"]
            models.append({"name": f"{case}-fb", "deployments": [f"{case}-backup"]})
        models.append(model)
    # Continuation: an Anthropic primary that cuts, a prefill-capable Anthropic fallback.
    an = sims["anthropic"]
    deps += [
        deployment(
            "cont-primary",
            "anthropic",
            an,
            "contp+script=cut:8+output_tokens=20",
            timeouts=FAST,
            capabilities={"prefill": True},
        ),
        deployment("cont-backup", "anthropic", an, "contb", timeouts=FAST, capabilities={"prefill": True}),
        deployment(
            "rej-primary",
            "anthropic",
            an,
            "rejp+script=cut:8+output_tokens=20",
            timeouts=FAST,
            capabilities={"prefill": True},
        ),
        deployment(
            "rej-backup",
            "anthropic",
            an,
            "rejb+reject_prefill=true",
            timeouts=FAST,
            capabilities={"prefill": True},
        ),
    ]
    models += [
        {"name": "cont", "deployments": ["cont-primary", "cont-backup"]},
        {"name": "rej", "deployments": ["rej-primary", "rej-backup"]},
        {
            "name": "ctx-upfront",
            "deployments": ["ctx-runtime-primary"],
            "context_window_fallbacks": ["ctx-runtime-big"],
        },
    ]
    cfg = base_config(deps, models)
    cfg["routing"] = {
        "retry": {"max_attempts_per_deployment": 2, "backoff_base_ms": 20, "budget_floor": 50},
        "breaker": {"consecutive_failures": 3, "open_s": 1.5, "max_open_s": 3},
    }
    cfg["routes"] = [
        {"name": "resume", "default": "cont", "continuation": True},
        {"name": "resume-rej", "default": "rej", "continuation": True},
    ]
    cfg["server"]["default_deadline_ms"] = 8000
    return cfg


@pytest.fixture(scope="module")
def gw(sims: Sims, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = Gateway(chaos_config(sims), tmp_path_factory.mktemp("chaos"))
    yield g
    g.stop()


def client(gw: Gateway, timeout: float = 20) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=timeout)


def seen(sims: Sims, prefix: str) -> list[Any]:
    return [r for r in sims["openai"].state.log + sims["anthropic"].state.log if r.model.startswith(prefix)]


def ask(gw: Gateway, model: str, **kw: Any) -> Any:
    return client(gw).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": f"chaos {model}"}], **kw
    )


def stream_text(gw: Gateway, model: str) -> tuple[str, str | None, Any]:
    text, finish = "", None
    with client(gw).chat.completions.with_streaming_response.create(
        model=model, stream=True, messages=[{"role": "user", "content": f"chaos {model}"}]
    ) as resp:
        for chunk in resp.parse():
            for c in chunk.choices:
                text += c.delta.content or ""
                finish = c.finish_reason or finish
        return text, finish, resp.headers


# --- 429 ---------------------------------------------------------------------------------------


def test_429_retry_after_seconds_falls_back_and_cools_down(gw: Gateway, sims: Sims) -> None:
    raw = ask(gw, "ra-seconds")
    assert raw.headers["x-modelplex-deployment"] == "ra-seconds-backup"
    assert float(raw.headers["x-modelplex-failover-ms"]) < 2000
    assert [r.outcome for r in seen(sims, "ra-s")] == ["429:retry-after=1"]
    # Within the cooldown the primary is not tried at all.
    assert ask(gw, "ra-seconds").headers["x-modelplex-deployment"] == "ra-seconds-backup"
    assert len(seen(sims, "ra-s")) == 1
    time.sleep(1.2)
    assert ask(gw, "ra-seconds").headers["x-modelplex-deployment"] == "ra-seconds-primary"


def test_429_on_the_only_deployment_waits_retry_after_then_retries(gw: Gateway, sims: Sims) -> None:
    raw = ask(gw, "single-ra")
    assert raw.headers["x-modelplex-deployment"] == "single-ra-primary"
    first, second = seen(sims, "single")
    assert second.at - first.at >= 0.95  # not before Retry-After
    assert first.body == second.body


@pytest.mark.parametrize("case", ["ra-none", "ra-date", "ra-negative"])
def test_429_without_usable_retry_after_falls_back(gw: Gateway, sims: Sims, case: str) -> None:
    raw = ask(gw, case)
    assert raw.headers["x-modelplex-deployment"] == f"{case}-backup"
    assert len(seen(sims, CASES[case][0].split("+")[0])) == 1


def test_429_with_huge_retry_after_moves_on_at_once(gw: Gateway, sims: Sims) -> None:
    started = time.monotonic()
    raw = ask(gw, "ra-huge")
    assert time.monotonic() - started < 2
    assert raw.headers["x-modelplex-deployment"] == "ra-huge-backup"


# --- server errors, resets, silence ------------------------------------------------------------


def test_500_once_is_retried_on_the_same_deployment(gw: Gateway, sims: Sims) -> None:
    raw = ask(gw, "e500-once")
    assert raw.headers["x-modelplex-deployment"] == "e500-once-primary"
    assert raw.headers["x-modelplex-attempts"] == "2"
    first, second = seen(sims, "e500")
    assert [first.outcome, second.outcome] == ["500", "ok"]
    assert first.body == second.body  # identical bodies on retry
    assert second.at - first.at < 0.5  # backoff, not a long wait


def test_503_persistent_retries_then_falls_back(gw: Gateway, sims: Sims) -> None:
    raw = ask(gw, "e503-always")
    assert raw.headers["x-modelplex-deployment"] == "e503-always-backup"
    assert len(seen(sims, "e503")) == 2  # max_attempts_per_deployment
    assert len(seen(sims, "backup-e503-always")) == 1


def test_reset_before_headers_is_retried(gw: Gateway, sims: Sims) -> None:
    raw = ask(gw, "reset")
    assert raw.headers["x-modelplex-deployment"] == "reset-primary"
    assert [r.outcome for r in seen(sims, "reset")] == ["reset", "ok"]


def test_silent_provider_abandoned_at_first_token_timeout_not_retried(gw: Gateway, sims: Sims) -> None:
    started = time.monotonic()
    text, finish, headers = stream_text(gw, "silent")
    elapsed = time.monotonic() - started
    assert finish == "stop" and text
    assert headers["x-modelplex-deployment"] == "silent-backup"
    assert 0.9 < elapsed < 3.0
    assert len(seen(sims, "silent")) == 1  # not retried on the same deployment
    assert float(headers["x-modelplex-failover-ms"]) < 2000


def test_slow_first_token_fails_over(gw: Gateway, sims: Sims) -> None:
    text, finish, headers = stream_text(gw, "slow-first")
    assert headers["x-modelplex-deployment"] == "slow-first-backup" and finish == "stop"


# --- streams -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["cut", "stall"])
def test_stream_failure_after_commit_ends_with_an_error_event_never_done(
    gw: Gateway, sims: Sims, case: str
) -> None:
    got: list[str] = []
    with pytest.raises(openai.APIError) as exc:
        for chunk in client(gw).chat.completions.create(
            model=case, stream=True, messages=[{"role": "user", "content": "chaos"}]
        ):
            got.extend(c.delta.content or "" for c in chunk.choices)
    assert got  # the client did get the first part...
    assert "stream" in str(exc.value.message).lower() or "fail" in str(exc.value.message).lower()
    assert len(seen(sims, CASES[case][0].split("+")[0])) == 1  # ...and no silent second attempt


def test_stream_cut_raw_bytes_have_no_done(gw: Gateway) -> None:
    body = json.dumps(
        {"model": "cut", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    ).encode()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {GATEWAY_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        raw = b""
        while not raw.endswith(b"0\r\n\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            raw += chunk
    assert b"[DONE]" not in raw
    assert b'"error"' in raw


def test_anthropic_dialect_gets_an_error_event(gw: Gateway) -> None:
    c = anthropic.Anthropic(base_url=gw.url, api_key=GATEWAY_KEY, max_retries=0)
    with (
        pytest.raises(anthropic.APIError),
        c.messages.stream(model="cut", max_tokens=100, messages=[{"role": "user", "content": "x"}]) as stream,
    ):
        for _ in stream:
            pass


def test_malformed_event_is_skipped(gw: Gateway, sims: Sims) -> None:
    text, finish, _ = stream_text(gw, "malformed")
    assert finish == "stop" and len(text.split()) == 20


def test_missing_done_is_finalised_with_usage(gw: Gateway) -> None:
    usage = None
    for chunk in client(gw).chat.completions.create(
        model="no-done",
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "x"}],
    ):
        usage = chunk.usage or usage
    assert usage is not None and usage.completion_tokens > 0


def test_continuation_resumes_on_a_prefill_fallback(gw: Gateway, sims: Sims) -> None:
    text, finish, headers = stream_text(gw, "resume")
    assert finish == "stop"
    assert headers["x-modelplex-deployment"] == "cont-primary"
    resumed = seen(sims, "contb")
    assert len(resumed) == 1
    sent = json.loads(resumed[0].body)
    assert sent["messages"][-1]["role"] == "assistant"  # the text already sent, as prefill
    prefix = sent["messages"][-1]["content"][0]["text"]
    # The whole answer, once: what came before the cut, then the fallback's continuation (12 tokens).
    assert text.startswith(prefix) and len(prefix.split()) >= 3
    assert len(text.split()) == len(prefix.split()) + 12


def test_fallback_rejecting_prefill_ends_with_the_real_error(gw: Gateway, sims: Sims) -> None:
    with pytest.raises(openai.APIError) as exc:
        for _ in client(gw).chat.completions.create(
            model="resume-rej", stream=True, messages=[{"role": "user", "content": "x"}]
        ):
            pass
    message = str(exc.value.message)
    assert "prefill" not in message.lower() and "mid-stream" in message
    assert [r.outcome for r in seen(sims, "rejb")] == ["ok"]  # it was asked, and refused (400)


# --- request-level outcomes --------------------------------------------------------------------


def test_context_length_at_runtime_goes_to_larger_model(gw: Gateway, sims: Sims) -> None:
    raw = ask(gw, "ctx-runtime")
    assert raw.headers["x-modelplex-deployment"] == "ctx-runtime-backup"
    assert len(seen(sims, "ctx")) == 1  # never retried on the same model


def test_context_length_known_up_front_needs_no_failed_attempt(gw: Gateway, sims: Sims) -> None:
    long = "word " * 6000  # ~7500 tokens estimated, over the 1000-token window
    raw = client(gw).chat.completions.with_raw_response.create(
        model="ctx-upfront", messages=[{"role": "user", "content": long}]
    )
    assert raw.headers["x-modelplex-deployment"] == "ctx-runtime-backup"
    assert raw.headers["x-modelplex-attempts"] == "1"
    assert seen(sims, "ctx+") == []


def test_content_policy_propagates_the_reason(gw: Gateway, sims: Sims) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        ask(gw, "policy")
    assert "safety system" in str(exc.value.message)
    assert exc.value.code == "content_policy_violation"
    assert len(seen(sims, "policy+")) == 1


def test_content_policy_fallback_when_configured(gw: Gateway) -> None:
    assert ask(gw, "policy-fb").headers["x-modelplex-deployment"] == "policy-fb-backup"


def test_all_providers_down_lists_every_attempt(gw: Gateway) -> None:
    with pytest.raises(openai.APIStatusError) as exc:
        ask(gw, "all-down")
    assert exc.value.status_code == 502
    message = str(exc.value.message)
    assert "all-down-primary" in message and "all-down-backup" in message
    assert message.count("503") >= 2


def test_breaker_opens_probes_and_closes(gw: Gateway, sims: Sims) -> None:
    state = sims["openai"].state
    state.models["brk"] = state.default.from_mapping({"script": ["503"]})
    for _ in range(3):  # 3 requests x 2 attempts -> the breaker opens at 3 consecutive failures
        assert ask(gw, "breaker").headers["x-modelplex-deployment"] == "breaker-backup"
    opened = len(seen(sims, "brk"))
    for _ in range(5):
        assert ask(gw, "breaker").headers["x-modelplex-deployment"] == "breaker-backup"
    assert len(seen(sims, "brk")) == opened  # open: nothing is sent to it
    state.models["brk"] = state.default.from_mapping({})  # the provider recovers
    time.sleep(1.6)
    raw = ask(gw, "breaker")  # the single half-open probe succeeds and closes the breaker
    assert raw.headers["x-modelplex-deployment"] == "breaker-primary"
    assert ask(gw, "breaker").headers["x-modelplex-deployment"] == "breaker-primary"


def test_client_disconnect_cancels_upstream_quickly(gw: Gateway, sims: Sims) -> None:
    stream = client(gw).chat.completions.create(
        model="disconnect", stream=True, messages=[{"role": "user", "content": "x"}]
    )
    next(iter(stream))
    next(iter(stream))
    closed_at = time.monotonic()
    stream.close()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        records = seen(sims, "disc")
        if records and records[0].ended is not None:
            break
        time.sleep(0.05)
    [record] = seen(sims, "disc")
    assert record.ended is not None and record.ended - closed_at < 1.0
