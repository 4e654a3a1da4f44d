"""`s2s serve`: a `Translator` behind HTTP, warmed up before it answers, stopped gracefully.

Start-up loads the model, starts listening (GET /health answers 503 "warming up") and compiles
the search for every padded source length and batch size the batcher can form, greedy, at the
run's beam width and at those asked for (`--warm-beams`), before /health answers 200: no
request waits for those compilations. Requests with other settings (beam widths, `min_len`,
sampling parameters) compile once per shape on first use. SIGTERM or SIGINT stops taking
connections, finishes the requests in flight, and exits with status 0; a second SIGINT stops
at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence

import jax
import uvicorn

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


def serve(
    translator: Translator,
    cfg: ServeConfig,
    *,
    workdirs: Sequence[str] = (),
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> int:
    """Serves `translator` until SIGTERM or SIGINT; returns the exit status (0)."""
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
        log(f"s2s serve: ready on http://{cfg.host}:{cfg.port} ({seconds} s warm-up)")

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
        batcher.stop()  # the requests in flight are answered by now

    app = build_app(
        batcher,
        Limits(max_inputs=cfg.max_inputs, max_beam=cfg.max_beam),
        info=lambda: _server_info(translator, workdirs, cfg, counters),
        ready=lambda: state["ready"],
        lifespan=lifespan,
    )
    log(f"s2s serve: loaded {translator.loaded}; warming up, listening on {cfg.host}:{cfg.port}")
    server = _Server(
        uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning", lifespan="on"),
        batcher,
    )
    server.run()
    if not server.started or state.get("failed"):
        return 1
    log("s2s serve: stopped")
    return 0
