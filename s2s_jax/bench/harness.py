"""The timing harness: round-robin medians, compile time apart, the matmul peak, the records.

Every comparison is timed in one process, round-robin: each repetition runs every
implementation of a group once, in turn (after 0.15 s of untimed calls that let the previous
library's spinning threads go quiet), so the machine's drift (up to 2x over minutes on a
shared CPU) hits them all alike. Each group also times a reference matmul of each dtype in the
same rotation, so `frac_of_peak` compares against the peak measured at the same moment. Figures
are medians after warm-up, each call ended by `block_until_ready` (torch's CUDA calls by
`torch.cuda.synchronize`); JAX compile time is measured apart (`jit(...).lower(...).compile()`).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from typing import TypeVar

import jax
import jax.numpy as jnp

Made = TypeVar("Made")  # what an optional peer's trial returns

FIELDS = (
    "bench",
    "impl",
    "mode",
    "B",
    "T",
    "I",
    "H",
    "median_s",
    "tokens_per_s",
    "gflops_per_s",
    "frac_of_peak",
    "vs_torch",
    "dtype",  # float32, or bfloat16 for the mixed-precision cases (s2s bench --dtype bfloat16)
    "compile_s",
)


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Every size the benchmarks use; `Sizes.toy()` shrinks them for tests."""

    layer_shapes: tuple = ((64, 50, 256, 512), (32, 25, 256, 256))  # (B, T, I, H)
    train: tuple = (64, 30, 30)  # (B, S, T)
    vocab: int = 1000
    embed: int = 256
    enc_hidden: int = 256  # per direction
    dec_hidden: int = 512
    attn_dim: int = 256
    decode_batch: int = 64
    numpy_sentences: int = 4  # sentences the numpy decoder translates per repetition
    lengths: tuple = (25, 50, 100, 200, 500, 1000)  # length scaling, LSTM I=H=256
    length_batch: int = 32
    length_hidden: int = 256
    linear_lengths: tuple = (25, 100, 400, 1024, 4096)  # the linear cells, B and H as above
    matmul: int = 1024  # n of the n x n x n reference matmul

    @classmethod
    def for_backend(cls, backend: str) -> Sizes:
        """The issue's sizes, with a reference matmul the device needs time for: on a GPU a
        1024^3 one takes a few microseconds, less than launching and waiting for it."""
        return cls() if backend == "cpu" else cls(matmul=8192)

    @classmethod
    def toy(cls) -> Sizes:
        return cls(
            layer_shapes=((4, 6, 8, 16),),
            train=(4, 5, 6),
            vocab=20,
            embed=8,
            enc_hidden=8,
            dec_hidden=16,
            attn_dim=8,
            decode_batch=3,
            numpy_sentences=2,
            lengths=(5, 10),
            length_batch=2,
            length_hidden=8,
            linear_lengths=(5, 17),
            matmul=64,
        )


def compile_fn(fn: Callable, *args, **jit_kw) -> tuple[Callable, float]:
    """`jit(fn, **jit_kw)` compiled for `args`, and the compile time in seconds."""
    start = time.perf_counter()
    compiled = jax.jit(fn, **jit_kw).lower(*args).compile()
    return compiled, time.perf_counter() - start


def peak_fn(n: int, dtype: str = "float32") -> tuple[Callable[[], object], float]:
    """A reference n x n x n matmul of `dtype` (jitted, at JAX's default precision: TF32 on
    recent NVIDIA GPUs for float32) and its FLOP count."""
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    mm, _ = compile_fn(jnp.matmul, a, b)
    return (lambda: jax.block_until_ready(mm(a, b))), 2.0 * n**3


def round_robin(
    fns: dict[str, Callable[[], object]], reps: int, warmup: int = 1, settle_s: float = 0.15
) -> dict[str, float]:
    """Median seconds per call of each blocking thunk, calling them in turn `reps` times.

    Each turn first calls the thunk untimed for `settle_s` seconds (at least once): a library's
    worker threads keep spinning after its call (OpenMP's for ms, OpenBLAS's up to ~0.1 s) and
    slow down whatever runs next. Measured here without it: a jax matmul timed right after a
    torch one read 129 GFLOP/s instead of 168, and right after the numpy decoder 87.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            while True:
                fn()
                if time.perf_counter() - start >= settle_s:
                    break
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


@dataclasses.dataclass
class Case:
    """One implementation in a timing group."""

    impl: str
    mode: str
    fn: Callable[[], object]  # runs once and blocks until done
    compile_s: float | None = None
    extra: dict = dataclasses.field(default_factory=dict)  # fields added to the record


def time_group(
    bench: str,
    cases: Sequence[Case],
    *,
    shape: dict,
    tokens: int,
    flops: Callable[[str, str], float] | None,
    reps: int,
    peak_n: int,
) -> list[dict]:
    """Times `cases` round-robin with the reference matmul of each dtype among them; one record
    per case. `flops(mode, impl)` counts one call's matmul FLOPs (None: no FLOP rate)."""
    dtype = lambda c: c.extra.get("dtype", "float32")
    peaks = {d: peak_fn(peak_n, d) for d in sorted({dtype(c) for c in cases})}
    fns = {f"__peak_{d}__": fn for d, (fn, _) in peaks.items()}
    fns |= {f"{c.impl}/{c.mode}": c.fn for c in cases}
    med = round_robin(fns, reps)
    peak = {d: peak_flops / med[f"__peak_{d}__"] for d, (_, peak_flops) in peaks.items()}
    torch_time = {}  # per mode and dtype, torch's best time over its variants (threads, compile)
    for c in cases:
        if c.impl.startswith("torch"):
            t, key = med[f"{c.impl}/{c.mode}"], (c.mode, dtype(c))
            torch_time[key] = min(t, torch_time.get(key, t))
    records = []
    for c in cases:
        records.append(
            record(
                bench,
                c.impl,
                c.mode,
                shape,
                med[f"{c.impl}/{c.mode}"],
                tokens=tokens,
                flops=flops(c.mode, c.impl) if flops else None,
                peak=peak[dtype(c)],
                torch_s=torch_time.get((c.mode, dtype(c))),  # bfloat16: torch's autocast
                dtype=dtype(c),
                compile_s=c.compile_s,
                extra=c.extra,
            )
        )
    return records


def record(
    bench: str,
    impl: str,
    mode: str,
    shape: dict,
    median_s: float,
    *,
    tokens: int | None = None,
    flops: float | None = None,
    peak: float | None = None,
    torch_s: float | None = None,
    dtype: str = "float32",
    compile_s: float | None = None,
    extra: dict | None = None,
) -> dict:
    """One result (see `FIELDS`) of a call taking `median_s`: rates from its `tokens` and
    matmul `flops`, `frac_of_peak` against `peak` FLOP/s, `vs_torch` = torch's time over ours."""
    rate = flops / median_s if flops else None
    return {
        "bench": bench,
        "impl": impl,
        "mode": mode,
        **shape,
        "median_s": median_s,
        "tokens_per_s": tokens / median_s if tokens else None,
        "gflops_per_s": rate / 1e9 if rate else None,
        "frac_of_peak": rate / peak if rate and peak else None,
        "vs_torch": torch_s / median_s if torch_s else None,
        "dtype": dtype,
        "compile_s": compile_s,
        **(extra or {}),
    }


def optional_peer(name: str, trial: Callable[[], Made]) -> Made | None:
    """`trial()`, or None with a warning where it raises: a peer that may be missing or fail
    on this machine (a compiler, a CUDA-only lowering) is left out, and the bench runs on."""
    try:
        return trial()
    except Exception as e:
        lines = [line for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
        # an error raised inside a compiled call carries the whole traceback: its last line says
        warnings.warn(f"s2s bench: {name} failed, left out: {lines[-1]}", stacklevel=3)
        return None
