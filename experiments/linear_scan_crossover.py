"""Which way of running `h_t = a_t * h_{t-1} + b_t` is faster, by length: `lax.scan` of the
elementwise update ("sequential"), `lax.associative_scan` ("associative"), and the associative
scan in log space ("log"), forward and forward+backward, jitted; compile time apart; the methods
timed round-robin, the median of `--reps` runs each. `--layer` also times a whole minGRU layer
(`scan.run`): the parallel form with each method against its step form (impl "autodiff").

    python experiments/linear_scan_crossover.py --lengths 25 100 400 1600 4096 --reps 7
    python experiments/linear_scan_crossover.py --layer --lengths 25 100 400 1600 --reps 5

Results and the machine: `linear_scan_crossover.md`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from s2s_jax.nn import cells, scan
from s2s_jax.nn.scan import linear


def scan_fns(method: str, lengths, axis: int):
    """(forward, forward+backward) of one method over `(a, b)` (log: `(log a, log b)`)."""

    def fwd(a, b):
        if method == "log":
            return linear.scan_log(
                a, b, lengths, initial=jax.lax.index_in_dim(a, 0, axis, False) * 0.5, axis=axis
            )[0]
        return linear.scan(
            a,
            b,
            lengths,
            initial=jax.lax.index_in_dim(a, 0, axis, False) * 0.5,
            method=method,
            axis=axis,
        )[0]

    def loss(a, b):
        return jnp.sum(fwd(a, b) * 0.5)

    return jax.jit(fwd), jax.jit(jax.grad(loss, argnums=(0, 1)))


def layer_fns(method: str, lengths):
    """A minGRU layer over `xs: float32[B, T, H]`: forward, and the gradient of all inputs."""
    cell = cells.MINGRU

    def fwd(p, xs):
        if method == "step":
            return scan.run(cell, p, xs, lengths, impl="autodiff", projection="outside")[0]
        carry = cell.initial_carry(xs.shape[0], xs.shape[2])
        return linear.run(cell, p, xs, lengths, carry, method=method)[0]

    def loss(p, xs):
        return jnp.sum(fwd(p, xs) * 0.5)

    return jax.jit(fwd), jax.jit(jax.grad(loss, argnums=(0, 1)))


def timed(fn, args, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        out.append(time.perf_counter() - start)
    return out


def measure(fns: dict, args: dict, reps: int) -> dict:
    """Compile (timed apart), then `reps` rounds, each method once per round."""
    compile_s, runs = {}, {name: [] for name in fns}
    for name, fn in fns.items():
        start = time.perf_counter()
        jax.block_until_ready(fn(*args[name]))
        compile_s[name] = time.perf_counter() - start
    for _ in range(reps):
        for name, fn in fns.items():
            runs[name] += timed(fn, args[name], 1)
    return {name: (statistics.median(runs[name]), compile_s[name]) for name in fns}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[25, 100, 400, 1600, 4096])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--axis", type=int, default=1, help="1: batch-major [B, T, H]; 0: time-major")
    ap.add_argument("--layer", action="store_true", help="time a minGRU layer instead")
    args = ap.parse_args()
    print(f"# {jax.devices()[0].device_kind}, B={args.batch}, H={args.hidden}, axis={args.axis}")
    methods = ("step", *linear.METHODS) if args.layer else linear.METHODS
    print("T | pass | " + " | ".join(f"{m} ms" for m in methods) + " | fastest")
    for steps in args.lengths:
        k = jax.random.split(jax.random.key(steps), 3)
        B, H = args.batch, args.hidden
        lengths = jax.random.randint(k[2], (B,), steps // 2, steps + 1).at[0].set(steps)
        if args.layer:
            xs = jax.random.normal(k[0], (B, steps, H))
            p = cells.MINGRU.init(k[1], H, H)
            fns = {m: layer_fns(m, lengths) for m in methods}
            inputs = {m: (p, xs) for m in methods}
        else:
            shape = (B, steps, H) if args.axis == 1 else (steps, B, H)
            pre = jax.random.normal(k[0], shape)
            b = jax.random.normal(k[1], shape)
            a = jax.nn.sigmoid(pre)
            log_in = (jax.nn.log_sigmoid(pre), b)  # log b = b: any b > 0
            fns = {m: scan_fns(m, lengths, args.axis) for m in methods}
            inputs = {m: log_in if m == "log" else (a, b) for m in methods}
        for pass_, which in (("fwd", 0), ("fwd+bwd", 1)):
            got = measure({m: f[which] for m, f in fns.items()}, inputs, args.reps)
            best = min(got, key=lambda m: got[m][0])
            cols = " | ".join(f"{got[m][0] * 1e3:.2f} (compile {got[m][1]:.1f} s)" for m in methods)
            print(f"{steps} | {pass_} | {cols} | {best}", flush=True)


if __name__ == "__main__":
    main()
