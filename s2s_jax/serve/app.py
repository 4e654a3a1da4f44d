"""The HTTP layer of `s2s serve` (Starlette): it parses, hands requests to the `Batcher` and
answers; it decodes nothing itself.

    POST /translate   {"inputs": [...], settings...} -> {"outputs": [...], "scores": [...],
                      "log_probs": [...], "n_best": [[...]] (n_best > 1),
                      "alignments": [...] (align)}
    GET  /health      200 {"status": "ok"} once the model is loaded and warm, 503 before
    GET  /info        the model, checkpoint, vocabularies, devices, settings and counters

Every error is a JSON object `{"error": "one line"}` with a 4xx (the request: 400 malformed
JSON, 413 too large, 422 anything else) or 5xx (the server: 503 with Retry-After while warming
up, when the queue is full or when the server is stopping, 500 when decoding the request's
batch failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from s2s_jax.serve.batcher import Batcher, QueueFull, Result
from s2s_jax.serve.requests import BadRequest, Limits, parse

RETRY_AFTER = "1"  # seconds: a batch or two
POLL = 0.1  # seconds: how soon a body still arriving notices that the server is stopping


class Stopping(Exception):
    """The server began to stop while a request's body was still arriving."""


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    # backslashreplace: a lone surrogate quoted from a request cannot be encoded as UTF-8
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def _number(x: float) -> float | None:
    """JSON has no infinities (an impossible hypothesis scores -inf): null instead."""
    return x if math.isfinite(x) else None


def _answer(results: list[Result], n_best: int) -> dict:
    best = [r.hypotheses[0] for r in results]
    out = {
        "outputs": [h.text for h in best],
        "scores": [_number(h.score) for h in best],
        "log_probs": [_number(h.log_prob) for h in best],
    }
    if n_best > 1:
        out["n_best"] = [
            [
                {"text": h.text, "log_prob": _number(h.log_prob), "score": _number(h.score)}
                for h in r.hypotheses
            ]
            for r in results
        ]
    if results and results[0].alignment is not None:
        out["alignments"] = [
            {
                "source": a.source,
                "target": a.target,
                "weights": a.weights.astype(float).round(6).tolist(),
                "pairs": a.pairs(),
            }
            for a in (r.alignment for r in results)
        ]
    return out


async def _receive(request: Request, stopping: Callable[[], bool]) -> dict:
    """The next ASGI message of `request`; `Stopping` once the server stops while it waits."""
    receiving = asyncio.ensure_future(request.receive())
    try:
        while not (await asyncio.wait({receiving}, timeout=POLL))[0]:
            if stopping():
                raise Stopping
    finally:  # stopping, or this request's task cancelled: nothing is left waiting
        if not receiving.done():
            receiving.cancel()
    return receiving.result()


async def _body(request: Request, limit: int, stopping: Callable[[], bool]) -> bytes:
    """The request's body as it arrives, refused (413) past `limit` bytes: at once when its
    Content-Length says so, else as soon as it grows past. A client stalled in the middle of
    its body would hold up a stop for ever: it gets `Stopping` instead."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BadRequest(
            f"the body has {int(declared)} bytes; this server reads at most {limit} "
            "(--max-body-bytes): split the inputs over several requests",
            status=413,
        )
    chunks, size = [], 0
    while True:
        message = await _receive(request, stopping)
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > limit:
            raise BadRequest(
                f"the body has over {limit} bytes; this server reads at most {limit} "
                "(--max-body-bytes): split the inputs over several requests",
                status=413,
            )
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _until_disconnect(request: Request) -> None:
    """Returns when the client has gone (the body has been read: the next message is that)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def build_app(
    batcher: Batcher,
    limits: Limits,
    *,
    info: Callable[[], dict],
    ready: Callable[[], bool],
    stopping: Callable[[], bool] = bool,
    lifespan=None,
) -> Starlette:
    """The application over a started `batcher`; `info()` gives /info's body, `ready()` whether
    the model is warm, `stopping()` whether the server has begun to stop."""
    translator = batcher.translator

    async def translate(request: Request) -> Response:
        if not ready():
            return _error(503, "the model is warming up", **{"Retry-After": RETRY_AFTER})
        try:
            raw = await _body(request, limits.max_body_bytes, stopping)
            parsed = parse(raw, translator, limits)
        except BadRequest as e:
            return _error(e.status, str(e))
        except ClientDisconnect:
            return Response(status_code=499)  # nobody to answer
        except Stopping:
            return _error(503, "the server is stopping", Connection="close")
        try:
            future = batcher.submit(parsed)
        except QueueFull as e:
            return _error(503, f"busy: {e}; retry later", **{"Retry-After": RETRY_AFTER})
        answer = asyncio.wrap_future(future)
        gone = asyncio.ensure_future(_until_disconnect(request))
        try:
            await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not answer.done():  # the client disconnected: free its place in the queue
            batcher.cancel(future)
            with contextlib.suppress(asyncio.CancelledError):
                await answer
            return Response(status_code=499)
        try:
            results = answer.result()
        except Exception as e:  # noqa: BLE001 (this batch failed; the server goes on)
            message = str(e).splitlines()[0] if str(e) else type(e).__name__
            return _error(500, f"decoding failed: {message}")
        return JSONResponse(_answer(results, parsed.settings.n_best))

    async def health(request: Request) -> Response:
        if not ready():
            return JSONResponse({"status": "warming up"}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def info_(request: Request) -> Response:
        return JSONResponse(info())

    async def not_allowed(request: Request, exc) -> Response:
        return _error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")

    routes = [
        Route("/translate", translate, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/info", info_, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={404: not_allowed, 405: not_allowed},
        lifespan=lifespan,
    )
