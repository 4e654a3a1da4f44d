"""The scan-RNN benchmark harness behind `s2s bench`.

Every comparison is timed in one process, round-robin: each repetition runs every
implementation of a group once, in turn (after 0.15 s of untimed calls that let the previous
library's spinning threads go quiet), so the machine's drift (up to 2x over minutes on a
shared CPU) hits them all alike. Each group also times a reference matmul in the same rotation,
so `frac_of_peak` compares against the peak measured at the same moment. Figures are medians
after warm-up, each call ended by `block_until_ready`; JAX compile time is measured apart
(`jit(...).lower(...).compile()`).

Groups: the matmul peak; LSTM and GRU layers (forward, forward+backward) for our runner and
its variants, Flax's `nn.RNN` and PyTorch's `nn.LSTM`/`nn.GRU`; a whole training step against an
equivalent PyTorch model; batched greedy and beam decoding against a one-sentence-at-a-time numpy
greedy decoder; and cost against sequence length. PyTorch is optional (`vs_torch` is then None).

`vs_torch` is torch's time over ours (>1: ours is faster), taking torch's faster thread setting
(all cores or one; see `_torch_cases`), so a busy machine cannot flatter us.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from s2s_jax.data import Batch
from s2s_jax.nn import cells, decoding, fused, model, rnn
from s2s_jax.training.config import TrainConfig
from s2s_jax.training.state import init_state
from s2s_jax.training.step import train_step

Array = jax.Array
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
    matmul: int = 1024  # n of the n x n x n reference matmul

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
            matmul=64,
        )


# ----------------------------------------------------------------------------------------------
# Timing.


def _torch():
    """The torch module, or None when it is not installed (the optional `bench` extra)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def _torch_cases(torch, mode_fns: dict[str, Callable[[], object]]) -> list[Case]:
    """Cases "torch" (intra-op threads as set by `run`: every core) and "torch_1thread": on a
    shared machine, OpenMP's barriers make 2 threads slower than 1 when another process holds a
    core, and the comparison takes torch's faster setting."""
    cores = torch.get_num_threads()

    def one_thread(fn):
        def call():
            torch.set_num_threads(1)
            try:
                fn()
            finally:
                torch.set_num_threads(cores)

        return call

    cases = [Case("torch", mode, fn) for mode, fn in mode_fns.items()]
    if cores > 1:
        cases += [Case("torch_1thread", mode, one_thread(fn)) for mode, fn in mode_fns.items()]
    return cases


def _compile(fn: Callable, *args, **jit_kw) -> tuple[Callable, float]:
    """`jit(fn, **jit_kw)` compiled for `args`, and the compile time in seconds."""
    start = time.perf_counter()
    compiled = jax.jit(fn, **jit_kw).lower(*args).compile()
    return compiled, time.perf_counter() - start


def _peak_fn(n: int) -> tuple[Callable[[], object], float]:
    """A reference n x n x n fp32 matmul (jitted) and its FLOP count."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    mm, _ = _compile(jnp.matmul, a, b)
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


def _time_group(
    bench: str,
    cases: Sequence[Case],
    *,
    shape: dict,
    tokens: int,
    flops: Callable[[str, str], float] | None,
    reps: int,
    peak_n: int,
) -> list[dict]:
    """Times `cases` round-robin with the reference matmul; one record per case. `flops(mode,
    impl)` counts one call's matmul FLOPs (None: no FLOP rate)."""
    peak_fn, peak_flops = _peak_fn(peak_n)
    fns = {"__peak__": peak_fn} | {f"{c.impl}/{c.mode}": c.fn for c in cases}
    med = round_robin(fns, reps)
    peak = peak_flops / med["__peak__"]
    torch_time = {}  # per mode, torch's best time over its thread settings
    for c in cases:
        if c.impl.startswith("torch"):
            t = med[f"{c.impl}/{c.mode}"]
            torch_time[c.mode] = min(t, torch_time.get(c.mode, t))
    records = []
    for c in cases:
        t = med[f"{c.impl}/{c.mode}"]
        gflops = flops(c.mode, c.impl) / t / 1e9 if flops else None
        ref = torch_time.get(c.mode)
        records.append(
            {
                "bench": bench,
                "impl": c.impl,
                "mode": c.mode,
                **shape,
                "median_s": t,
                "tokens_per_s": tokens / t,
                "gflops_per_s": gflops,
                "frac_of_peak": gflops * 1e9 / peak if gflops else None,
                "vs_torch": ref / t if ref else None,
                "compile_s": c.compile_s,
                **c.extra,
            }
        )
    return records


def matmul_peak(sizes: Sizes, reps: int) -> list[dict]:
    """The fp32 matmul rate of jax (and torch), the reference for `frac_of_peak`."""
    n = sizes.matmul
    jax_fn, flops = _peak_fn(n)
    fns = {"jax": jax_fn}
    torch = _torch()
    if torch is not None:
        a, b = torch.randn(n, n), torch.randn(n, n)
        fns["torch"] = lambda: torch.mm(a, b)
    med = round_robin(fns, reps)
    best = min(med.values())
    return [
        {
            "bench": "matmul_peak",
            "impl": impl,
            "mode": "matmul",
            "B": n,
            "T": None,
            "I": n,
            "H": n,
            "median_s": t,
            "tokens_per_s": None,
            "gflops_per_s": flops / t / 1e9,
            "frac_of_peak": best / t,
            "vs_torch": med["torch"] / t if "torch" in med else None,
            "compile_s": None,
        }
        for impl, t in med.items()
    ]


# ----------------------------------------------------------------------------------------------
# One RNN layer: ours, its variants, Flax, torch.


def _layer_cases(kind: str, B: int, T: int, I: int, H: int) -> list[Case]:
    cell = cells.get_cell(kind)
    params = cell.init(jax.random.key(0), I, H)
    xs = jax.random.normal(jax.random.key(1), (B, T, I), jnp.float32)
    variants = {
        "s2s": (fused.run, {}),  # the encoder's default (`Seq2SeqConfig.fused`)
        "s2s_outside": (fused.run, {"projection": "outside"}),
        "s2s_plain": (rnn.run, {}),  # lax.scan autodiff: the oracle
        "s2s_plain_outside": (rnn.run, {"projection": "outside"}),
        "s2s_plain_unroll4": (rnn.run, {"unroll": 4}),
    }
    cases = []

    def add(impl, fwd, p):
        loss = lambda p, xs: jnp.sum(fwd(p, xs))
        modes = {"fwd": fwd, "fwd_bwd": jax.grad(loss, argnums=(0, 1))}
        for mode, f in modes.items():
            compiled, secs = _compile(f, p, xs)
            cases.append(Case(impl, mode, lambda c=compiled: jax.block_until_ready(c(p, xs)), secs))

    for impl, (runner, kw) in variants.items():
        add(impl, lambda p, xs, r=runner, kw=kw: r(cell, p, xs, **kw)[0], params)
    try:  # a peer from the optional `bench` extra, like torch
        from flax import linen as nn
    except ImportError:
        nn = None
    if nn is not None:
        flax_cell = nn.OptimizedLSTMCell(H) if kind == "lstm" else nn.GRUCell(H)
        flax_rnn = nn.RNN(flax_cell)
        add("flax", flax_rnn.apply, flax_rnn.init(jax.random.key(0), xs))
    torch = _torch()
    if torch is not None:
        layer = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(I, H)
        xt = torch.randn(T, B, I, requires_grad=True)  # time-major: torch's native layout

        def fwd():
            with torch.no_grad():
                layer(xt)

        def fwd_bwd():
            for p in [*layer.parameters(), xt]:
                p.grad = None
            layer(xt)[0].sum().backward()

        cases += _torch_cases(torch, {"fwd": fwd, "fwd_bwd": fwd_bwd})
    return cases


def layer_bench(kind: str, sizes: Sizes, reps: int) -> list[dict]:
    """`{kind}_layer` records: forward and forward+backward of one layer at each shape."""
    gates = {"lstm": 4, "gru": 3}[kind]
    records = []
    for B, T, I, H in sizes.layer_shapes:
        fwd_flops = 2.0 * B * T * (I + H) * gates * H
        records += _time_group(
            f"{kind}_layer",
            _layer_cases(kind, B, T, I, H),
            shape=dict(B=B, T=T, I=I, H=H),
            tokens=B * T,
            flops=lambda mode, impl, f=fwd_flops: f * (3 if mode == "fwd_bwd" else 1),
            reps=reps,
            peak_n=sizes.matmul,
        )
    return records


# ----------------------------------------------------------------------------------------------
# The training step users run (`training.step.train_step`: loss, gradients clipped by global
# norm, Adam, norms, non-finite guard) on a bidirectional LSTM encoder, LSTM decoder with
# additive attention; the PyTorch peer clips its gradients at the same norm.


CLIP_NORM = 1.0  # TrainConfig's default, and the PyTorch peer's


def train_config(sizes: Sizes) -> model.Seq2SeqConfig:
    return model.Seq2SeqConfig(
        src_vocab=sizes.vocab,
        tgt_vocab=sizes.vocab,
        cell="lstm",
        src_embed=sizes.embed,
        tgt_embed=sizes.embed,
        enc_hidden=sizes.enc_hidden,
        dec_hidden=sizes.dec_hidden,
        bidirectional=True,
        attention="bahdanau",
        attn_dim=sizes.attn_dim,
        context="init",
    )


def _torch_seq2seq(torch, cfg: model.Seq2SeqConfig):
    """The same model in PyTorch, written the usual way (time-major, `LSTMCell` loop)."""
    nn = torch.nn

    class Seq2Seq(nn.Module):
        def __init__(self):
            super().__init__()
            E, He, Hd = cfg.src_embed, cfg.enc_hidden, cfg.dec_hidden
            A, V = cfg.attn_dim, cfg.tgt_vocab
            self.src_embed, self.tgt_embed = nn.Embedding(V, E), nn.Embedding(V, E)
            self.encoder = nn.LSTM(E, He, bidirectional=True)
            self.bridge_h, self.bridge_c = nn.Linear(2 * He, Hd), nn.Linear(2 * He, Hd)
            self.key, self.query = nn.Linear(2 * He, A), nn.Linear(Hd, A, bias=False)
            self.v = nn.Linear(A, 1, bias=False)
            self.cell = nn.LSTMCell(E + 2 * He, Hd)
            self.readout, self.out = nn.Linear(Hd + 2 * He + E, Hd), nn.Linear(Hd, V)

        def forward(self, src, tgt_in):  # int64[S, B], int64[T, B]
            ann, (h_n, _) = self.encoder(self.src_embed(src))
            c = torch.cat([h_n[0], h_n[1]], dim=-1)
            h, cell = torch.tanh(self.bridge_h(c)), torch.tanh(self.bridge_c(c))
            keys, emb = self.key(ann), self.tgt_embed(tgt_in)
            readouts = []
            for t in range(tgt_in.shape[0]):
                weights = torch.softmax(self.v(torch.tanh(keys + self.query(h))), dim=0)
                ctx = (weights * ann).sum(0)
                h, cell = self.cell(torch.cat([emb[t], ctx], dim=-1), (h, cell))
                readouts.append(torch.tanh(self.readout(torch.cat([h, ctx, emb[t]], dim=-1))))
            return self.out(torch.stack(readouts))

    return Seq2Seq()


def forward_flops(cfg: model.Seq2SeqConfig, B: int, S: int, T: int, rows: int = 0) -> float:
    """Matmul FLOPs of encoding B sentences of length S and T decoder steps of `rows` rows
    (default B; B * beam for beam search), counting the attention's projections."""
    E, He, Hd, A, V = cfg.src_embed, cfg.enc_hidden, cfg.dec_hidden, cfg.attn_dim, cfg.tgt_vocab
    R = rows or B
    enc = 2 * (2 * B * S * (E + He) * 4 * He)
    keys = 2 * B * S * 2 * He * A
    per_step = (
        2 * R * Hd * A
        + 2 * R * S * A
        + 2 * 2 * R * S * 2 * He  # query, scores, context
        + 2 * R * (E + 2 * He + Hd) * 4 * Hd  # decoder cell
        + 2 * R * (Hd + 2 * He + E) * Hd
        + 2 * R * Hd * V
    )  # readout, output
    return enc + keys + T * per_step


def train_flops(cfg: model.Seq2SeqConfig, B: int, S: int, T: int) -> float:
    """Matmul FLOPs of one training step: the forward pass, and twice that backward."""
    return 3.0 * forward_flops(cfg, B, S, T)


def train_bench(sizes: Sizes, reps: int) -> list[dict]:
    """`train_step` records: the library's step (`s2s`: the default, hand-written backward
    passes; `s2s_plain`: `fused=False`, plain `lax.scan` autodiff) and the PyTorch model."""
    B, S, T = sizes.train
    cfg = train_config(sizes)
    train_cfg = TrainConfig(
        batch_size=B, learning_rate=1e-3, warmup_steps=0, schedule="constant", clip_norm=CLIP_NORM
    )
    rng = np.random.default_rng(0)
    src = jnp.asarray(rng.integers(4, cfg.src_vocab, (B, S)), jnp.int32)
    tgt = jnp.asarray(rng.integers(4, cfg.tgt_vocab, (B, T)), jnp.int32)
    batch = Batch(src, jnp.full((B,), S, jnp.int32), tgt, jnp.full((B,), T, jnp.int32))
    cases = []
    for impl, impl_cfg in (("s2s", cfg), ("s2s_plain", cfg.replace(fused=False))):
        body = functools.partial(train_step, model_cfg=impl_cfg, train_cfg=train_cfg)
        holder = [init_state(impl_cfg, train_cfg)]
        step, secs = _compile(body, holder[0], batch, donate_argnums=0)

        def run_step(step=step, holder=holder):
            holder[0], metrics = step(holder[0], batch)
            jax.block_until_ready(metrics["loss"])

        cases.append(Case(impl, "fwd_bwd_adam", run_step, secs))
    torch = _torch()
    if torch is not None:
        net = _torch_seq2seq(torch, cfg)
        topt = torch.optim.Adam(net.parameters(), lr=1e-3)
        src_t = torch.as_tensor(np.asarray(src).T.copy(), dtype=torch.long)
        tgt_t = torch.as_tensor(np.asarray(tgt).T.copy(), dtype=torch.long)
        tgt_in = torch.cat([torch.ones_like(tgt_t[:1]), tgt_t[:-1]])

        def torch_step():
            topt.zero_grad(set_to_none=True)
            logits = net(src_t, tgt_in)
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), tgt_t.reshape(-1)
            )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), CLIP_NORM)
            topt.step()

        cases += _torch_cases(torch, {"fwd_bwd_adam": torch_step})
    return _time_group(
        "train_step",
        cases,
        shape=dict(B=B, T=T, I=cfg.src_embed, H=cfg.dec_hidden),
        tokens=B * T,
        flops=lambda mode, impl: train_flops(cfg, B, S, T),
        reps=reps,
        peak_n=sizes.matmul,
    )


# ----------------------------------------------------------------------------------------------
# Decoding: batched greedy and beam search against a one-sentence-at-a-time numpy decoder.


def _np_lstm(p: dict, xs: np.ndarray, h: np.ndarray, c: np.ndarray, reverse: bool = False):
    """One LSTM over one sentence `xs: [S, I]` in numpy; outputs [S, H] and the final (h, c)."""
    hidden = h.shape[-1]
    xp = xs @ p["w_ih"] + p["b_ih"] + p["b_hh"]
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))
    outs = np.zeros((len(xs), hidden), np.float32)
    for t in reversed(range(len(xs))) if reverse else range(len(xs)):
        g = xp[t] + h @ p["w_hh"]
        i, f, gg, o = np.split(g, 4)
        c = sig(f) * c + sig(i) * np.tanh(gg)
        h = sig(o) * np.tanh(c)
        outs[t] = h
    return outs, h, c


def numpy_greedy(
    params: dict, src: np.ndarray, *, cfg: model.Seq2SeqConfig, max_len: int
) -> list[int]:
    """Greedy decoding of ONE unpadded sentence `src: int[S]` in numpy (the way `g2p-en`
    decodes), for the `train_config` architecture. Returns `y_1 .. y_n </s>`; like
    `decoding.greedy`, <pad> and <s> are never chosen and </s> is forced at `max_len`."""
    p = jax.tree.map(np.asarray, params)
    x = p["src_embed"][src]
    zeros = np.zeros(cfg.enc_hidden, np.float32)
    for layer in p["encoder"]:
        out_f, h_f, _ = _np_lstm(layer["fwd"], x, zeros, zeros)
        out_b, h_b, _ = _np_lstm(layer["bwd"], x, zeros, zeros, reverse=True)
        x = np.concatenate([out_f, out_b], axis=-1)
    context = np.concatenate([h_f, h_b])
    att, dec = p["attention"], p["decoder"][0]
    keys = x @ att["w_key"] + att["b"]
    h, c = (np.tanh(context @ b["w"] + b["b"]) for b in p["bridge"][0])
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))
    y, out = model.BOS, []
    for t in range(max_len):
        emb = p["tgt_embed"][y]
        scores = np.tanh(keys + h @ att["w_query"]) @ att["v"]
        w = np.exp(scores - scores.max())
        ctx = (w / w.sum()) @ x
        g = np.concatenate([emb, ctx]) @ dec["w_ih"] + dec["b_ih"] + h @ dec["w_hh"] + dec["b_hh"]
        i, f, gg, o = np.split(g, 4)
        c = sig(f) * c + sig(i) * np.tanh(gg)
        h = sig(o) * np.tanh(c)
        readout = np.tanh(np.concatenate([h, ctx, emb]) @ p["readout"]["w"] + p["readout"]["b"])
        logits = readout @ p["output"]["w"] + p["output"]["b"]
        logits[[model.PAD, model.BOS]] = -np.inf
        y = model.EOS if t == max_len - 1 else int(np.argmax(logits))
        out.append(y)
        if y == model.EOS:
            break
    return out


def decode_bench(sizes: Sizes, reps: int, *, beam: int = 5) -> list[dict]:
    """`decode` records: sentences per second of batched greedy and beam search, and of the
    numpy decoder translating one sentence at a time (`vs_numpy`: ours over numpy's)."""
    B, S, T = sizes.decode_batch, sizes.train[1], sizes.train[2]
    cfg = train_config(sizes)
    params = model.init(cfg, key=jax.random.key(0))
    rng = np.random.default_rng(1)
    src = jnp.asarray(rng.integers(4, cfg.src_vocab, (B, S)), jnp.int32)
    src_len = jnp.full((B,), S, jnp.int32)
    searches = {
        "greedy": lambda p, s, n: decoding.greedy(p, s, n, cfg=cfg, max_len=T).tokens,
        f"beam{beam}": lambda p, s, n: (
            decoding.beam_search(p, s, n, cfg=cfg, max_len=T, beam=beam).tokens
        ),
    }
    cases = []
    for mode, search in searches.items():
        compiled, secs = _compile(search, params, src, src_len)
        run_once = lambda c=compiled: jax.block_until_ready(c(params, src, src_len))
        cases.append(Case("s2s", mode, run_once, secs))
    n_np = sizes.numpy_sentences
    src_np = np.asarray(src)

    def numpy_run():
        for b in range(n_np):
            numpy_greedy(params, src_np[b], cfg=cfg, max_len=T)

    cases.append(Case("numpy", "greedy", numpy_run))
    # Random weights never emit </s>: every sentence runs all T steps, ours and numpy's.
    sentences = {"numpy/greedy": n_np, "s2s/greedy": B, f"s2s/beam{beam}": B}
    rows = {"numpy/greedy": n_np, "s2s/greedy": B, f"s2s/beam{beam}": B * beam}

    def flops(mode: str, impl: str) -> float:
        key = f"{impl}/{mode}"
        return forward_flops(cfg, sentences[key], S, T, rows=rows[key])

    records = _time_group(
        "decode",
        cases,
        shape=dict(B=B, T=T, I=cfg.src_embed, H=cfg.dec_hidden),
        tokens=0,
        flops=flops,
        reps=reps,
        peak_n=sizes.matmul,
    )
    for r in records:
        n = sentences[f"{r['impl']}/{r['mode']}"]
        r["tokens_per_s"] = n * T / r["median_s"]
        r["sentences_per_s"] = n / r["median_s"]
    numpy_rate = next(r["sentences_per_s"] for r in records if r["impl"] == "numpy")
    for r in records:
        r["vs_numpy"] = r["sentences_per_s"] / numpy_rate
    return records


# ----------------------------------------------------------------------------------------------
# Cost against sequence length.


def remat_run(cell: cells.Cell, params: dict, xs: Array) -> Array:
    """`rnn.run` (projection inside) with the scan body under `jax.checkpoint`: the backward
    pass recomputes each step's gates instead of storing them."""
    return rnn.run(cell, params, xs, projection="inside", remat=True)[0]


def length_bench(sizes: Sizes, reps: int) -> list[dict]:
    """`length_scaling` records: an LSTM layer's forward+backward against T: ours (the fused
    layer), the plain scan, and the plain scan with rematerialisation. `peak_bytes` =
    arguments + outputs + temporaries of XLA's buffer assignment (`memory_analysis()`; an
    upper bound of the peak, the temporaries alone in `temp_bytes`); `s_per_token` =
    median_s / (B * T)."""
    B, H = sizes.length_batch, sizes.length_hidden
    cell = cells.LSTM
    params = cell.init(jax.random.key(0), H, H)
    impls = {
        "s2s": lambda p, xs: fused.run(cell, p, xs)[0],
        "s2s_plain": lambda p, xs: rnn.run(cell, p, xs)[0],
        "s2s_plain_remat": lambda p, xs: remat_run(cell, p, xs),
    }
    records = []
    for T in sizes.lengths:
        xs = jax.random.normal(jax.random.key(1), (B, T, H), jnp.float32)
        cases = []
        for impl, fwd in impls.items():
            grad = jax.grad(lambda p, xs, f=fwd: jnp.sum(f(p, xs)), argnums=(0, 1))
            compiled, secs = _compile(grad, params, xs)
            mem = compiled.memory_analysis()  # XLA's buffer assignment, known before running
            temp = int(mem.temp_size_in_bytes)
            peak = temp + int(mem.argument_size_in_bytes) + int(mem.output_size_in_bytes)
            run_once = lambda c=compiled, xs=xs: jax.block_until_ready(c(params, xs))
            cases.append(
                Case(impl, "fwd_bwd", run_once, secs, {"peak_bytes": peak, "temp_bytes": temp})
            )
        flops = 3 * 2.0 * B * T * 2 * H * 4 * H
        group = _time_group(
            "length_scaling",
            cases,
            shape=dict(B=B, T=T, I=H, H=H),
            tokens=B * T,
            flops=lambda mode, impl, f=flops: f,
            reps=max(1, reps // 2),
            peak_n=sizes.matmul,
        )
        for r in group:
            r["s_per_token"] = r["median_s"] / (B * T)
        records += group
    return records


# ----------------------------------------------------------------------------------------------
# Entry points.


def run(
    quick: bool = False,
    *,
    only: str | None = None,
    sizes: Sizes | None = None,
    reps: int = 7,
    torch_threads: int | None = None,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Runs the benchmarks and returns one record per measurement (see `FIELDS`).

    Args:
      quick: only the LSTM layer at each of `sizes.layer_shapes`.
      only: run this one group (see `GROUPS`), with the matmul peak it is compared with.
      sizes: the sizes to run (`Sizes.toy()` for tests); None: the issue's sizes.
      reps: timed repetitions per implementation (medians); length scaling uses half.
      torch_threads: PyTorch's intra-op threads; None: every core (`os.cpu_count()`), as XLA uses.
      log: called with a progress line before each group (e.g. `print` to stderr).
    """
    sizes = sizes or Sizes()
    log = log or (lambda msg: None)
    torch = _torch()
    if torch is not None:
        torch.set_num_threads(torch_threads or os.cpu_count() or 1)
    groups = [
        ("matmul_peak", lambda: matmul_peak(sizes, reps)),
        ("lstm_layer", lambda: layer_bench("lstm", sizes, reps)),
    ]
    if not quick:
        groups += [
            ("gru_layer", lambda: layer_bench("gru", sizes, reps)),
            ("train_step", lambda: train_bench(sizes, reps)),
            ("decode", lambda: decode_bench(sizes, reps)),
            ("length_scaling", lambda: length_bench(sizes, reps)),
        ]
    if only is not None:
        groups = [g for g in groups if g[0] in ("matmul_peak", only)]
    records = []
    for name, bench in groups:
        log(f"bench: {name} ...")
        records += bench()
    return records


def machine() -> dict:
    """What the numbers were measured on."""
    torch = _torch()
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "torch": torch.__version__ if torch else None,
        "torch_threads": torch.get_num_threads() if torch else None,
        "load_avg_1m": os.getloadavg()[0],
    }


def _fmt(value, digits=3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isfinite(value) and abs(value) >= 1e4:
            return f"{value:.3g}"
        return f"{value:.{digits}g}"
    return str(value)


def table(records: Sequence[dict]) -> str:
    """Records as an aligned text table."""
    cols = [
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
        "vs_numpy",
        "peak_bytes",
        "compile_s",
    ]
    rows = [cols] + [[_fmt(r.get(c)) for c in cols] for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in rows)


def goals(records: Sequence[dict]) -> list[str]:
    """Issue 5's goals read off `records` (our default `s2s` against its reference), one line
    each; groups that did not run are left out."""

    def find(bench, mode=None):
        return [
            r
            for r in records
            if r["bench"] == bench and r["impl"] == "s2s" and (mode is None or r["mode"] == mode)
        ]

    pct = lambda x: "-" if x is None else f"{100 * x:.0f}%"
    ratio = lambda x: "-" if x is None else f"{x:.2f}x"
    lines = []
    for bench in ("lstm_layer", "gru_layer"):
        for r in find(bench, "fwd_bwd")[:1]:  # the first (the main) shape
            lines.append(
                f"{bench} fwd+bwd B={r['B']} T={r['T']} I={r['I']} H={r['H']}: "
                f"{ratio(r['vs_torch'])} torch, {pct(r['frac_of_peak'])} of peak "
                "(goal: 1.0x, 75%)"
            )
    for r in find("train_step"):
        lines.append(
            f"train_step: {ratio(r['vs_torch'])} torch, {pct(r['frac_of_peak'])} of peak "
            "(goal: 2x, 50%)"
        )
    for r in find("decode"):
        if r["mode"].startswith("beam"):
            lines.append(
                f"decode {r['mode']}: {ratio(r['vs_numpy'])} the numpy greedy decoder's "
                "sentences/s (goal: 20x)"
            )
    scaling = sorted(find("length_scaling"), key=lambda r: r["T"])
    per_token = {r["T"]: r["median_s"] / (r["B"] * r["T"]) for r in scaling}
    base = min((t for t in per_token if t >= 50), default=None)
    if base is not None and max(per_token) > base:
        top = max(per_token)
        compile_s = [r["compile_s"] for r in scaling]
        lines.append(
            f"time per token T={base} -> T={top}: "
            f"{100 * (per_token[top] / per_token[base] - 1):+.0f}%; compile "
            f"{min(compile_s):.2f}-{max(compile_s):.2f} s over T={min(per_token)}..{top} "
            "(goal: within 20%, compile independent of T)"
        )
    return lines


GROUPS = ("lstm_layer", "gru_layer", "train_step", "decode", "length_scaling")


def main(argv: list[str] | None = None) -> int:
    """`s2s bench [--quick] [--json] [--reps N] [--toy]`; returns the exit status."""
    parser = argparse.ArgumentParser(prog="s2s bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the two LSTM layer shapes")
    parser.add_argument("--json", action="store_true", help="print a JSON list of records")
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions (medians)")
    parser.add_argument(
        "--toy", action="store_true", help="tiny sizes: a smoke test, not a benchmark"
    )
    parser.add_argument("--only", choices=GROUPS, help="run one group (and the matmul peak)")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    log(f"machine: {json.dumps(machine())}")
    start = time.perf_counter()
    records = run(
        args.quick,
        only=args.only,
        sizes=Sizes.toy() if args.toy else None,
        reps=args.reps,
        log=log,
    )
    log(f"total {time.perf_counter() - start:.0f} s; load average now {os.getloadavg()[0]:.2f}")
    if args.json:
        print(json.dumps(records, indent=1))
    else:
        print(table(records))
        print("\n".join(["", "goals (issue 5):", *("  " + line for line in goals(records))]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
