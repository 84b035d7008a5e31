"""The benchmark's load generator: closed-loop clients (each sends its next request when the last
one is done), half of them streaming, and a check of every answer against what the simulators
would have sent.

A request *succeeds* when the client would take it as a good answer: HTTP 200 and a clean end
(non-streamed: a finish_reason and usage; streamed: a finish_reason and `[DONE]`, no error
event). A success is *truncated* when its text is not a whole answer of the simulators. The
simulators answer deterministically (simulator/content.py): the whole answer to a prompt, or,
after a stream was cut and resumed on the fallback, the first k tokens followed by the
fallback's continuation of exactly that prefix.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from modelplex.simulator.content import answer_tokens

KEY = "sk-bench-orchestration-0001"
AUTH = {"Authorization": f"Bearer {KEY}"}
OUTPUT_TOKENS = 24  # every simulated provider in sims.yaml


@dataclass(slots=True)
class Result:
    sent: float  # time.monotonic()
    done: float
    stream: bool
    status: int  # 0: no HTTP response (connection error, client timeout)
    ok: bool  # the client takes it as a good answer
    whole: bool | None  # the answer is a whole answer of the simulators (None unless ok)
    ttft: float | None  # seconds to the first content (streams)
    deployment: str | None
    failover_ms: float | None
    attempts: int | None = None
    error: str | None = None


def whole_answer(prompt: str, text: str, n: int = OUTPUT_TOKENS) -> bool:
    full = answer_tokens(prompt, n, None)
    if text == "".join(full):
        return True
    for k in range(1, n):
        prefix = "".join(full[:k])
        if not text.startswith(prefix):
            return False
        # The fallback (Anthropic format) continues a prefill: its prompt is the user text and the
        # prefill as a message, and it generates from that prompt plus the prefill.
        cont = answer_tokens("\n".join([prompt, prefix]) + prefix, n, None)
        if text == prefix + "".join(t if t.startswith(" ") else " " + t for t in cont):
            return True
    return False


async def _read_stream(resp: aiohttp.ClientResponse, sent: float,
                       ) -> tuple[str, bool, float | None, str | None]:
    """(text, ended cleanly, ttft, error)"""
    text, finish, done, ttft, error = "", None, False, None, None
    async for raw in resp.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            done = True
            continue
        event = json.loads(payload)
        if "error" in event:
            error = str(event["error"].get("message", event["error"]))[:200]
            continue
        for choice in event.get("choices") or ():
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                if ttft is None:
                    ttft = time.monotonic() - sent
                text += piece
            finish = choice.get("finish_reason") or finish
    return text, done and finish is not None and error is None, ttft, error


async def request(session: aiohttp.ClientSession, url: str, model: str, prompt: str, stream: bool) -> Result:
    body: dict[str, Any] = {"model": model, "stream": stream,
                            "messages": [{"role": "user", "content": prompt}]}
    sent = time.monotonic()
    status, ok, whole, ttft, dep, failover, error, attempts = 0, False, None, None, None, None, None, None
    try:
        async with session.post(url, json=body, headers=AUTH) as resp:
            status = resp.status
            dep = resp.headers.get("x-modelplex-deployment")
            raw_failover = resp.headers.get("x-modelplex-failover-ms")
            failover = float(raw_failover) if raw_failover is not None else None
            attempts = int(resp.headers.get("x-modelplex-attempts", "0")) or None
            if status != 200:
                error = (await resp.text())[:200]
            elif stream:
                text, ok, ttft, error = await _read_stream(resp, sent)
                whole = whole_answer(prompt, text) if ok else None
            else:
                data = await resp.json()
                choice = data["choices"][0]
                ok = bool(choice.get("finish_reason")) and bool(data.get("usage"))
                whole = whole_answer(prompt, choice["message"]["content"] or "") if ok else None
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
        error = f"{type(exc).__name__}: {exc}"[:200]
    return Result(sent, time.monotonic(), stream, status, ok, whole, ttft, dep, failover, attempts, error)


async def closed_loop(base: str, model: str, label: str, clients: int, stop: Callable[[int], bool],
                      streaming: Callable[[int], bool], think: float = 0.0,
                      timeout: float = 60.0) -> list[Result]:
    """`clients` concurrent clients until stop(requests started) says so; client c streams when
    streaming(c) and, after each answer, thinks for an exponentially distributed time of mean
    `think` seconds. Every prompt is unique, so every answer is too."""
    url = f"{base}/v1/chat/completions"
    results: list[Result] = []
    started = 0
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as s:

        async def client(c: int) -> None:
            nonlocal started
            rng = random.Random(c)
            await asyncio.sleep(rng.uniform(0, think))  # the clients arrive spread out
            while not stop(started):
                started += 1
                prompt = f"{label} request {started} from client {c}: tell me something"
                results.append(await request(s, url, model, prompt, streaming(c)))
                if think:
                    await asyncio.sleep(rng.expovariate(1 / think))

        await asyncio.gather(*(client(c) for c in range(clients)))
    return results


async def get_json(url: str, headers: dict[str, str] | None = None) -> Any:
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers or {}) as resp:
        resp.raise_for_status()
        return await resp.json()


async def post_json(url: str, body: Any) -> None:
    async with aiohttp.ClientSession() as s, s.post(url, json=body) as resp:
        resp.raise_for_status()
