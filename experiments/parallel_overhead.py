"""Step time of data-parallel training against the (fake) device count: none vs shard_map vs pmap.

    python experiments/parallel_overhead.py            # prints a markdown table and JSON
    python experiments/parallel_overhead.py --steps 30 --batch 64
    python experiments/parallel_overhead.py --real --batch 256   # on a GPU / TPU host

Each device count runs in its own subprocess with
`XLA_FLAGS=--xla_force_host_platform_device_count=N`. Fake CPU devices share the machine's
cores, so on a small CPU this measures the cost of splitting a step (collectives, smaller
per-device matmuls, dispatch), not a speed-up; on N real accelerators the per-device work
shrinks N-fold. Results and their reading: experiments/parallel_overhead.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = dict(
    src_vocab=32,
    tgt_vocab=32,
    cell="gru",
    bidirectional=True,
    attention="bahdanau",
    src_embed=64,
    tgt_embed=64,
    enc_hidden=128,
    dec_hidden=128,
    attn_dim=128,
)


def measure(steps: int, batch: int, length: int, rounds: int = 5) -> dict:
    """In this process (its device count fixed by XLA_FLAGS): median step seconds per mode."""
    import functools

    import jax
    import numpy as np

    from s2s_jax.data import Batch
    from s2s_jax.nn import model
    from s2s_jax.run import config
    from s2s_jax.training import parallel, step
    from s2s_jax.training.state import init_state

    model_cfg = model.Seq2SeqConfig(**MODEL)
    train_cfg = config.TrainConfig(batch_size=batch, warmup_steps=0)
    rng = np.random.default_rng(0)
    lengths = rng.integers(length // 2, length + 1, (2, batch)).astype(np.int32)
    ids = rng.integers(4, 32, (2, batch, length))
    mask = np.arange(length) < lengths[..., None]
    data = Batch(
        np.where(mask[0], ids[0], 0).astype(np.int32),
        lengths[0],
        np.where(mask[1], ids[1], 0).astype(np.int32),
        lengths[1],
    )
    state0 = jax.jit(init_state, static_argnums=(0, 1))(model_cfg, train_cfg)
    body = functools.partial(step.train_step, model_cfg=model_cfg, train_cfg=train_cfg)
    runs = {}
    for mode in ("none", "shard_map", "pmap"):
        dp = parallel.DataParallel(mode, body, batch_size=batch)
        state = dp.replicate(jax.tree.map(np.asarray, state0))
        sharded = dp.shard_batch(data)  # host-to-device copy excluded: the loop overlaps it
        for _ in range(2):  # compile and warm up
            state, metrics = dp.step(state, sharded)
        jax.block_until_ready(metrics)
        runs[mode] = [dp, state, sharded, []]
    # Modes interleaved in rounds, so a change of machine load hits them all alike.
    for _ in range(rounds):
        for run in runs.values():
            dp, state, sharded, times = run
            for _ in range(steps // rounds):
                start = time.perf_counter()
                state, metrics = dp.step(state, sharded)
                jax.block_until_ready(metrics)
                times.append(time.perf_counter() - start)
            run[1] = state
    out = {"devices": jax.device_count()}
    for mode, (_, _, _, times) in runs.items():
        out[mode] = {
            "median_ms": 1e3 * float(np.median(times)),
            "p10_ms": 1e3 * float(np.percentile(times, 10)),
            "p90_ms": 1e3 * float(np.percentile(times, 90)),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per mode")
    parser.add_argument("--batch", type=int, default=64, help="global batch size")
    parser.add_argument("--length", type=int, default=24, help="source and target length")
    parser.add_argument(
        "--real",
        action="store_true",
        help="measure once on this host's real devices (GPUs, TPU cores)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.steps, args.batch, args.length)))
        return
    rows = [measure(args.steps, args.batch, args.length)] if args.real else []
    for n in [] if args.real else args.devices:
        env = dict(
            os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}", JAX_PLATFORMS="cpu"
        )
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                "--steps",
                str(args.steps),
                "--batch",
                str(args.batch),
                "--length",
                str(args.length),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{n} devices done", file=sys.stderr)
    print(
        f"batch {args.batch}, length {args.length}, {args.steps} timed steps, "
        f"{os.cpu_count()} CPU cores\n"
    )
    print(
        "| devices | none ms (p10-p90) | shard_map ms | pmap ms | shard_map / none | pmap / none |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        cell = lambda m: f"{r[m]['median_ms']:.0f} ({r[m]['p10_ms']:.0f}-{r[m]['p90_ms']:.0f})"
        ratio = lambda m: f"{r[m]['median_ms'] / r['none']['median_ms']:.2f}"
        print(
            f"| {r['devices']} | {cell('none')} | {cell('shard_map')} | {cell('pmap')} "
            f"| {ratio('shard_map')} | {ratio('pmap')} |"
        )
    print("\n" + json.dumps(rows))


if __name__ == "__main__":
    main()
