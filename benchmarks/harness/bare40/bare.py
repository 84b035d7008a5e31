"""The reference: a bare 40-line Python proxy (uvicorn + uvloop + httptools, aiohttp, orjson) that
forwards to the mock. It checks no key and does nothing else: the floor under any Python gateway."""

import os

import aiohttp
import orjson

session = None
UP = os.environ["MOCK_BASE"] + "/chat/completions"
UP_STREAM = os.environ["MOCK_STREAM_BASE"] + "/chat/completions"


async def app(scope, receive, send):
    global session
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        m = await receive()
        body += m.get("body", b"")
        if not m.get("more_body"):
            break
    req = orjson.loads(body)
    up = UP_STREAM if req.get("stream") else UP
    async with session.post(
        up, data=orjson.dumps(req), headers={"content-type": "application/json", "authorization": "Bearer x"}
    ) as r:
        data = await r.read()
    ctype = b"text/event-stream" if req.get("stream") else b"application/json"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", ctype)]})
    await send({"type": "http.response.body", "body": data})
