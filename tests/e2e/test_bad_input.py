"""Bad input gets a clear 4xx in the caller's dialect: never a 500, never a traceback, never an echo."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any

import pytest

from helpers import GATEWAY_KEY, Gateway

OA = {"authorization": f"Bearer {GATEWAY_KEY}", "content-type": "application/json"}
AN = {"x-api-key": GATEWAY_KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"}


def post(gw: Gateway, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
    req = urllib.request.Request(f"{gw.url}{path}", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as err:
        raw = err.read()
        return err.code, json.loads(raw), dict(err.headers)


def openai_error(payload: dict[str, Any]) -> dict[str, Any]:
    assert set(payload) == {"error"}, payload
    err = payload["error"]
    assert {"message", "type", "param", "code"} <= set(err)
    assert "Traceback" not in err["message"]
    return err


def anthropic_error(payload: dict[str, Any]) -> dict[str, Any]:
    assert payload["type"] == "error", payload
    assert "Traceback" not in payload["error"]["message"]
    return payload["error"]


CASES = [
    ("malformed JSON", b'{"model": "oa", "messages": [', 400),
    ("not an object", b'["model", "oa"]', 400),
    ("messages of wrong type", json.dumps({"model": "oa", "messages": "hello"}).encode(), 400),
    ("temperature of wrong type", json.dumps({"model": "oa", "temperature": "hot",
                                              "messages": [{"role": "user", "content": "x"}]}).encode(), 400),
    ("temperature out of range", json.dumps({"model": "oa", "temperature": 7,
                                             "messages": [{"role": "user", "content": "x"}]}).encode(), 400),
    ("unknown role", json.dumps({"model": "oa", "messages": [{"role": "wizard", "content": "x"}]}).encode(), 400),
    ("no messages", json.dumps({"model": "oa", "messages": []}).encode(), 400),
    ("tool message without id", json.dumps({"model": "oa", "messages": [{"role": "tool", "content": "x"}]}).encode(), 400),
    ("nested too deeply", b'{"model": "oa", "messages": [{"role": "user", "content": "x"}], "metadata": '
     + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}", 400),
    ("invalid utf-8", b'{"model": "oa", "messages": [{"role": "user", "content": "\xff\xfe"}]}', 400),
    ("unknown model", json.dumps({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}).encode(), 404),
]


@pytest.mark.parametrize(("name", "body", "status"), CASES, ids=[c[0] for c in CASES])
def test_openai_bad_input(gateway: Gateway, name: str, body: bytes, status: int) -> None:
    code, payload, headers = post(gateway, "/v1/chat/completions", body, OA)
    assert code == status
    err = openai_error(payload)
    assert err["message"]
    assert headers.get("x-modelplex-request-id")


def test_wrong_type_names_the_parameter(gateway: Gateway) -> None:
    body = json.dumps({"model": "oa", "max_tokens": "many", "messages": [{"role": "user", "content": "x"}]}).encode()
    code, payload, _ = post(gateway, "/v1/chat/completions", body, OA)
    err = openai_error(payload)
    assert code == 400 and err["param"] == "max_tokens" and "max_tokens" in err["message"]


ANTHROPIC_CASES = [
    ("malformed JSON", b'{"model": "an"', 400),
    ("missing max_tokens", json.dumps({"model": "an", "messages": [{"role": "user", "content": "x"}]}).encode(), 400),
    ("bad block type", json.dumps({"model": "an", "max_tokens": 5, "messages": [
        {"role": "user", "content": [{"type": "hologram"}]}]}).encode(), 400),
    ("unknown model", json.dumps({"model": "nope", "max_tokens": 5,
                                  "messages": [{"role": "user", "content": "x"}]}).encode(), 404),
]


@pytest.mark.parametrize(("name", "body", "status"), ANTHROPIC_CASES, ids=[c[0] for c in ANTHROPIC_CASES])
def test_anthropic_bad_input(gateway: Gateway, name: str, body: bytes, status: int) -> None:
    code, payload, _ = post(gateway, "/v1/messages", body, AN)
    assert code == status
    err = anthropic_error(payload)
    assert err["type"] == ("not_found_error" if status == 404 else "invalid_request_error")


def test_oversized_body_is_413(gateway: Gateway) -> None:
    """A body over the limit is refused once the limit is passed, without reading the rest."""
    big = b'{"model": "oa", "messages": [{"role": "user", "content": "' + b"x" * (9 * 1024 * 1024) + b'"}]}'
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Authorization: Bearer " + GATEWAY_KEY.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            for i in range(0, len(big), 65536):
                piece = big[i : i + 65536]
                s.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
        except OSError:
            pass  # the gateway answered and closed before the whole body was sent
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    openai_error(json.loads(body))


def test_oversized_declared_length_rejected_before_reading(gateway: Gateway) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Authorization: Bearer " + GATEWAY_KEY.encode() + b"\r\nContent-Length: 999999999\r\n\r\n{")
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413")


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
@pytest.mark.parametrize("key", [None, "sk-wrong-key-12345", "Bearer"])
def test_bad_key_is_401_and_not_echoed(gateway: Gateway, dialect: str, key: str | None) -> None:
    headers = {"content-type": "application/json"}
    if dialect == "openai":
        path, body = "/v1/chat/completions", {"model": "oa", "messages": [{"role": "user", "content": "x"}]}
        if key:
            headers["authorization"] = f"Bearer {key}"
    else:
        path, body = "/v1/messages", {"model": "an", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
        headers["anthropic-version"] = "2023-06-01"
        if key:
            headers["x-api-key"] = key
    code, payload, _ = post(gateway, path, json.dumps(body).encode(), headers)
    assert code == 401
    err = openai_error(payload) if dialect == "openai" else anthropic_error(payload)
    if dialect == "anthropic":
        assert err["type"] == "authentication_error"
    if key:
        assert key not in json.dumps(payload)


def test_unknown_path_and_method(gateway: Gateway) -> None:
    code, payload, _ = post(gateway, "/v1/nothing-here", b"{}", OA)
    assert code == 404 and "error" in payload
    req = urllib.request.Request(f"{gateway.url}/v1/chat/completions", method="GET")
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=5)
    assert exc.value.code == 405


def test_gateway_survives_bad_input(gateway: Gateway) -> None:
    for _, body, _ in CASES:
        post(gateway, "/v1/chat/completions", body, OA)
    code, payload, _ = post(gateway, "/v1/chat/completions",
                            json.dumps({"model": "oa", "messages": [{"role": "user", "content": "ok?"}]}).encode(), OA)
    assert code == 200 and payload["choices"][0]["message"]["content"]
    assert "Traceback" not in gateway.log()
