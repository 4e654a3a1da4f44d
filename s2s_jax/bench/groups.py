"""The benchmark groups: one RNN layer (ours, its variants, Flax, torch), the training step users
run against a PyTorch model, batched decoding against a numpy decoder, cost against length."""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from s2s_jax.bench import peers
from s2s_jax.bench.flops import forward_flops, layer_flops, train_flops
from s2s_jax.bench.harness import (
    Case,
    Sizes,
    compile_fn,
    optional_peer,
    peak_fn,
    record,
    round_robin,
    time_group,
)
from s2s_jax.data import Batch
from s2s_jax.nn import cells, decoding, model, scan
from s2s_jax.run.config import TrainConfig
from s2s_jax.training.state import init_state
from s2s_jax.training.step import train_step

Array = jax.Array


def matmul_peak(sizes: Sizes, reps: int, dtype: str = "float32") -> list[dict]:
    """The matmul rate of jax and torch on their devices, float32 (and bfloat16), the
    reference for `frac_of_peak`."""
    n = sizes.matmul
    dtypes = ["float32"] + (["bfloat16"] if dtype == "bfloat16" else [])
    fns, flops = {}, 2.0 * n**3
    for d in dtypes:
        fns[f"jax/{d}"], _ = peak_fn(n, d)
    torch = peers.torch_module()
    if torch is not None:
        device = peers.torch_device(torch)
        for d in dtypes:
            kw = dict(device=device, dtype=getattr(torch, d))
            a, b = torch.randn(n, n, **kw), torch.randn(n, n, **kw)
            fns[f"torch/{d}"] = peers.torch_blocking(torch, lambda a=a, b=b: torch.mm(a, b))
    med = round_robin(fns, reps)
    records, shape = [], dict(B=n, T=None, I=n, H=n)
    for name, t in med.items():
        impl, d = name.split("/")
        fastest = min(v for k, v in med.items() if k.endswith(d))
        records.append(
            record(
                "matmul_peak",
                impl,
                "matmul",
                shape,
                t,
                flops=flops,
                peak=flops / fastest,
                torch_s=med.get(f"torch/{d}"),
                dtype=d,
            )
        )
    return records


# ----------------------------------------------------------------------------------------------
# One RNN layer: ours, its variants, Flax, torch.


BF16 = {"dtype": "bfloat16"}  # a record's `dtype` (the others are float32)


def _half(tree):
    return jax.tree.map(lambda x: x.astype(jnp.bfloat16), tree)


def _layer_cases(kind: str, B: int, T: int, I: int, H: int, dtype: str) -> list[Case]:
    cell = cells.get_cell(kind)
    params = cell.init(jax.random.key(0), I, H)
    xs = jax.random.normal(jax.random.key(1), (B, T, I), jnp.float32)
    variants = {  # keyword arguments of `scan.run`
        "s2s": {"impl": "fused"},  # the encoder's default (`model.scan_implementations`)
        "s2s_outside": {"impl": "fused", "projection": "outside"},
        "s2s_hoisted": {"impl": "hoisted"},
        "s2s_plain": {"impl": "autodiff"},  # lax.scan autodiff: the reference
        "s2s_plain_outside": {"impl": "autodiff", "projection": "outside"},
        "s2s_plain_unroll4": {"impl": "autodiff", "unroll": 4},
    }
    cases = []

    def make(impl, fwd, p, xs=xs, extra=None) -> list[Case]:
        loss = lambda p, xs: jnp.sum(fwd(p, xs), dtype=jnp.float32)
        made = []
        for mode, f in {"fwd": fwd, "fwd_bwd": jax.grad(loss, argnums=(0, 1))}.items():
            compiled, secs = compile_fn(f, p, xs)
            run = lambda c=compiled: jax.block_until_ready(c(p, xs))
            made.append(Case(impl, mode, run, secs, extra or {}))
        return made

    for impl, kw in variants.items():
        cases += make(impl, lambda p, xs, kw=kw: scan.run(cell, p, xs, **kw)[0], params)
    if dtype == "bfloat16":  # the default implementation on bfloat16 weights and inputs
        fwd = lambda p, xs: scan.run(cell, p, xs, **variants["s2s"])[0]
        cases += make("s2s_bf16", fwd, _half(params), _half(xs), BF16)
    flax_rnn = peers.flax_layer(kind, H)
    if flax_rnn is not None:
        cases += make("flax", flax_rnn.apply, flax_rnn.init(jax.random.key(0), xs))
    cudnn = peers.jax_cudnn_lstm(I, H) if kind == "lstm" else None
    if cudnn is not None:

        def cudnn_trial():
            made = make("jax_cudnn", *cudnn)
            for case in made:
                case.fn()  # cuDNN's errors may wait for the first execution
            return made

        cases += optional_peer("jax.experimental.rnn", cudnn_trial) or []
    torch = peers.torch_module()
    if torch is not None:
        device = peers.torch_device(torch)
        layer = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(I, H).to(device)
        # time-major: torch's native layout
        xt = torch.randn(T, B, I, device=device, requires_grad=True)

        def fwd():
            with torch.no_grad():
                layer(xt)

        def fwd_bwd():
            for p in [*layer.parameters(), xt]:
                p.grad = None
            layer(xt)[0].sum().backward()

        cases += peers.torch_cases(torch, {"fwd": fwd, "fwd_bwd": fwd_bwd})
        if dtype == "bfloat16":
            cases += _autocast_cases(torch, {"fwd": fwd, "fwd_bwd": fwd_bwd})
    return cases


def _autocast_cases(torch, mode_fns: dict) -> list[Case]:
    """`torch_autocast` cases: each of `mode_fns` under torch's bfloat16 autocast, tried once
    first. oneDNN has no bfloat16 RNN kernel for CPUs without bfloat16 instructions; there
    torch raises, and the bench leaves its autocast out with a warning and runs on."""

    def trial():
        made = [
            Case("torch_autocast", mode, peers.torch_autocast(torch, fn), extra=BF16)
            for mode, fn in mode_fns.items()
        ]
        for case in made:
            case.fn()
        return made

    return optional_peer("torch's bfloat16 autocast", trial) or []


def layer_bench(kind: str, sizes: Sizes, reps: int, dtype: str = "float32") -> list[dict]:
    """`{kind}_layer` records: forward and forward+backward of one layer at each shape (and in
    bfloat16 too, ours and torch's autocast, with `dtype="bfloat16"`)."""
    records = []
    for B, T, I, H in sizes.layer_shapes:
        records += time_group(
            f"{kind}_layer",
            _layer_cases(kind, B, T, I, H, dtype),
            shape=dict(B=B, T=T, I=I, H=H),
            tokens=B * T,
            flops=lambda mode, impl, shape=(B, T, I, H): layer_flops(kind, *shape, mode),
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


TRIAL_CALLS = 3  # an optional peer's calls inside its guard: compile, CUDA-graph warm-up, record


def _torch_compiled_cases(torch, cfg, src: np.ndarray, tgt: np.ndarray) -> list[Case]:
    """The PyTorch model with its decoder under `torch.compile` ("torch_compile"; compile_s:
    its first `TRIAL_CALLS` calls, compiling and recording included), or none, with a
    warning, where torch cannot compile or run it (a missing compiler, an unsupported op)."""
    net = peers.torch_compile_decoder(torch, peers.torch_seq2seq(torch, cfg))
    step = peers.torch_train_step(torch, net, src, tgt, CLIP_NORM)
    blocking = peers.torch_blocking(torch, step)

    def trial() -> float:
        start = time.perf_counter()
        for _ in range(TRIAL_CALLS):
            blocking()
        return time.perf_counter() - start

    secs = optional_peer("torch.compile", trial)
    if secs is None:
        return []
    cases = peers.torch_cases(torch, {"fwd_bwd_adam": step}, impl="torch_compile")
    return [dataclasses.replace(c, compile_s=secs) for c in cases]


def train_bench(
    sizes: Sizes, reps: int, dtype: str = "float32", torch_compile: bool = False
) -> list[dict]:
    """`train_step` records: the library's step (`s2s`: the default, hand-written backward
    passes; `s2s_plain`: `fused=False`, plain `lax.scan` autodiff) and the PyTorch model; with
    `dtype="bfloat16"` also `s2s_bf16` (mixed precision) and torch under bfloat16 autocast;
    with `torch_compile`, also the PyTorch model with its decoder compiled."""
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
    variants = [("s2s", cfg), ("s2s_plain", cfg.replace(fused=False))]
    if dtype == "bfloat16":
        variants.append(("s2s_bf16", cfg.replace(dtype="bfloat16")))
    for impl, impl_cfg in variants:
        body = functools.partial(train_step, model_cfg=impl_cfg, train_cfg=train_cfg)
        holder = [init_state(impl_cfg, train_cfg)]
        step, secs = compile_fn(body, holder[0], batch, donate_argnums=0)

        def run_step(step=step, holder=holder):
            holder[0], metrics = step(holder[0], batch)
            jax.block_until_ready(metrics["loss"])

        extra = BF16 if impl_cfg.dtype == "bfloat16" else {}
        cases.append(Case(impl, "fwd_bwd_adam", run_step, secs, extra))
    torch = peers.torch_module()
    if torch is not None:
        src_np, tgt_np = np.asarray(src), np.asarray(tgt)
        torch_step = peers.torch_train_step(
            torch, peers.torch_seq2seq(torch, cfg), src_np, tgt_np, CLIP_NORM
        )
        cases += peers.torch_cases(torch, {"fwd_bwd_adam": torch_step})
        if dtype == "bfloat16":
            cases += _autocast_cases(torch, {"fwd_bwd_adam": torch_step})
        if torch_compile:
            cases += _torch_compiled_cases(torch, cfg, src_np, tgt_np)
    return time_group(
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
        compiled, secs = compile_fn(search, params, src, src_len)
        run_once = lambda c=compiled: jax.block_until_ready(c(params, src, src_len))
        cases.append(Case("s2s", mode, run_once, secs))
    n_np = sizes.numpy_sentences
    src_np = np.asarray(src)

    def numpy_run():
        for b in range(n_np):
            peers.numpy_greedy(params, src_np[b], cfg=cfg, max_len=T)

    cases.append(Case("numpy", "greedy", numpy_run))
    # Random weights never emit </s>: every sentence runs all T steps, ours and numpy's.
    sentences = {"numpy/greedy": n_np, "s2s/greedy": B, f"s2s/beam{beam}": B}
    rows = {"numpy/greedy": n_np, "s2s/greedy": B, f"s2s/beam{beam}": B * beam}

    def flops(mode: str, impl: str) -> float:
        key = f"{impl}/{mode}"
        return forward_flops(cfg, sentences[key], S, T, rows=rows[key])

    records = time_group(
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
