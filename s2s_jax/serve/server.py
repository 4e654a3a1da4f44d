"""`s2s serve`: a `Translator` behind HTTP, warmed up before it answers, stopped gracefully.

Start-up takes the port first (`listen`: a port in use is said at once, before the model
loads), loads the model, starts answering (GET /health answers 503 "warming up") and compiles
the search for every padded source length and batch size the batcher can form, greedy, at the
run's beam width and at those asked for (`--warm-beams`), before /health answers 200: no
request waits for those compilations. Requests with other settings (beam widths, `min_len`,
sampling parameters) compile once per shape on first use. SIGTERM or SIGINT stops taking
connections, finishes the requests in flight (a body still arriving is answered 503 at once),
and exits with status 0; whatever is still unanswered after `stop_timeout` seconds is
abandoned. A second SIGINT stops at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence

import jax
import uvicorn

from s2s_jax.errors import S2SError
from s2s_jax.inference.outputs import MAX_BEAM
from s2s_jax.inference.translate import Translator
from s2s_jax.serve.app import build_app
from s2s_jax.serve.batcher import Batcher
from s2s_jax.serve.requests import Limits

COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/backend_compile_duration",
)


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """How the server batches and what it accepts."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_batch: int = 0  # sentences decoded together; 0: the run's decode.sentences_per_batch
    max_wait_ms: float = 5.0  # how long the oldest queued sentence waits for its batch to fill
    max_queue: int = 1024  # sentences queued at most; more get 503 with Retry-After
    max_inputs: int = 64  # sentences in one request
    max_beam: int = 16
    # Beam widths compiled at start-up for every shape, besides greedy and the run's decode.beam.
    warm_beams: tuple[int, ...] = ()
    warmup: bool = True
    max_body_bytes: int = 1 << 20  # a request's body; larger ones get 413 unread
    stop_timeout: float = 30.0  # seconds a stop waits for the requests in flight

    def __post_init__(self):
        """`S2SError` naming the first setting out of its range."""
        ranges = {  # (low, high): beyond, a mistake (a day's wait, an int32 overflow)
            "port": (0, 65535),
            "max_batch": (0, 1 << 16),
            "max_wait_ms": (0, 60_000),
            "max_queue": (1, 1 << 30),
            "max_inputs": (1, 1 << 16),
            "max_beam": (1, MAX_BEAM),
            "max_body_bytes": (1, 1 << 30),
            "stop_timeout": (0, 3600),
        }
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            # Written so that NaN fails the comparison.
            if not (isinstance(value, (int, float)) and low <= value <= high):
                flag = name if name == "max_beam" else "--" + name.replace("_", "-")
                raise S2SError(f"{flag} must be in {low}..{high}, got {value}")
        for beam in self.warm_beams:
            if not (isinstance(beam, int) and 1 <= beam <= self.max_beam):
                raise S2SError(
                    f"--warm-beams takes beam widths in 1..{self.max_beam} (the largest a "
                    f"request may ask for), got {beam}"
                )


class _Compilations:
    """Counts JAX's compilations (traces and backend compiles) from the moment it is made."""

    def __init__(self):
        self.count = 0
        self.active = False
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event: str, duration: float, **kwargs) -> None:
        if self.active and event in COMPILE_EVENTS:
            self.count += 1


def _server_info(translator: Translator, workdirs, cfg: ServeConfig, state: dict) -> dict:
    import importlib.metadata

    vocab = lambda v: {"kind": v.kind, "size": len(v)}
    models = [dataclasses.asdict(c) for c in translator.members]
    return {
        "workdirs": [os.path.abspath(w) for w in workdirs],
        "loaded": translator.loaded,
        "model": models[0] if len(models) == 1 else models,
        "vocabularies": {
            "source": vocab(translator.src_vocab),
            "target": vocab(translator.tgt_vocab),
        },
        "lengths": {
            "max_src_len": translator.train_cfg.max_src_len,
            "max_tgt_len": translator.train_cfg.max_tgt_len,
            "src_buckets": list(translator.train_cfg.src_buckets()),
        },
        "decode": dataclasses.asdict(translator.decode_cfg),
        "settings": dataclasses.asdict(cfg),
        "devices": [str(d) for d in jax.local_devices()],
        "backend": jax.default_backend(),
        "versions": {
            name: importlib.metadata.version(name) for name in ("s2s-jax", "jax", "jaxlib")
        },
        **state(),
    }


class _Server(uvicorn.Server):
    """uvicorn's server, except that a stop by SIGTERM or SIGINT exits with status 0 once the
    requests in flight are answered (uvicorn would re-raise the signal afterwards), and that
    the batcher then stops waiting for batches to fill."""

    def __init__(self, config: uvicorn.Config, batcher: Batcher):
        super().__init__(config)
        self.batcher = batcher

    def handle_exit(self, sig, frame) -> None:
        self.batcher.drain()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port, or `S2SError` in one line (a port in use, an unknown
    host). Taken before the model loads and warms up, so that a second server on a port in use
    stops at once rather than after its warm-up."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as e:
        raise S2SError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    try:
        # As uvicorn does: a port a stopped server left in TIME_WAIT may be taken again at
        # once; one that a server listens on still may not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise S2SError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def serve(
    translator: Translator,
    cfg: ServeConfig,
    *,
    workdirs: Sequence[str] = (),
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
    sock: socket.socket | None = None,
) -> int:
    """Serves `translator` until SIGTERM or SIGINT; returns the exit status (0). `sock`: the
    socket `listen` took (default: taken here, from `cfg.host` and `cfg.port`)."""
    sock = sock or listen(cfg.host, cfg.port)
    port = sock.getsockname()[1]  # --port 0: the one the system chose
    max_batch = cfg.max_batch or translator.decode_cfg.sentences_per_batch
    batcher = Batcher(
        translator, max_batch=max_batch, max_wait=cfg.max_wait_ms / 1000, max_queue=cfg.max_queue
    )
    compiles = _Compilations()
    state = {"ready": False, "warmup_seconds": None}
    beams = sorted({1, translator.decode_cfg.beam, *cfg.warm_beams})

    def prepare():
        started = time.perf_counter()
        try:
            if cfg.warmup:
                translator.warm_up(max_batch, beams, until=lambda: server.should_exit)
        except Exception as e:  # noqa: BLE001 (said in one line; the server then stops)
            state["failed"] = f"warming up failed: {str(e).splitlines()[0] if str(e) else e!r}"
            log(f"s2s serve: error: {state['failed']}")
            server.should_exit = True
            return
        if server.should_exit:  # stopped while warming up
            return
        state["warmup_seconds"] = round(time.perf_counter() - started, 2)
        compiles.active = True  # from here on, a compilation is a request's
        batcher.start()
        state["ready"] = True
        seconds = state["warmup_seconds"]
        log(f"s2s serve: ready on http://{cfg.host}:{port} ({seconds} s warm-up)")

    def counters() -> dict:
        return {
            "ready": state["ready"],
            "warmup_seconds": state["warmup_seconds"],
            "warm_beams": beams,
            "compilations_after_warmup": compiles.count,
            "queued": batcher.queued(),
            "batches": batcher.batches,
            "sentences": batcher.sentences,
        }

    @contextlib.asynccontextmanager
    async def lifespan(app):
        warming = threading.Thread(target=prepare, name="s2s-warmup")
        warming.start()
        yield
        warming.join()  # a stop while warming up waits for the compilation in flight
        batcher.stop(cfg.stop_timeout)  # the requests in flight are answered by now

    limits = Limits(
        max_inputs=cfg.max_inputs,
        # A request without a beam gets the run's: it may not be refused.
        max_beam=max(cfg.max_beam, translator.decode_cfg.beam),
        max_body_bytes=cfg.max_body_bytes,
    )
    app = build_app(
        batcher,
        limits,
        info=lambda: _server_info(translator, workdirs, cfg, counters),
        ready=lambda: state["ready"],
        stopping=lambda: server.should_exit,
        lifespan=lifespan,
    )
    log(f"s2s serve: loaded {translator.loaded}; warming up, listening on {cfg.host}:{port}")
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        # What is still unanswered then (a client that does not read its answer) is dropped.
        timeout_graceful_shutdown=cfg.stop_timeout,
    )
    server = _Server(config, batcher)
    server.run(sockets=[sock])
    if not server.started or state.get("failed"):
        return 1
    log("s2s serve: stopped")
    return 0
