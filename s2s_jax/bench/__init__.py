"""`s2s bench`: scan-based RNNs timed against their peers on the machine it runs on.

    harness  round-robin medians, compile time apart, the matmul peak of the same moment
    peers    on JAX's device: PyTorch (`nn.LSTM`/`nn.GRU`, cuDNN on a GPU; a seq2seq model, also
             under `torch.compile`), `jax.experimental.rnn` (cuDNN), Flax, a numpy decoder
    flops    the matmul FLOP counts behind `gflops_per_s` and `frac_of_peak`
    groups   the matmul peak; LSTM and GRU layers (forward, forward+backward) for every
             `scan.run` implementation, Flax's `nn.RNN` and PyTorch; the training step users
             run (`training.step.train_step`) against the PyTorch model; batched greedy and
             beam decoding against a one-sentence-at-a-time numpy decoder
    scaling  cost against length: an LSTM layer; the linear cells (parallel and step forms)
             against our GRU/LSTM layers and PyTorch's `sru` and `mingru-pytorch`, T to 4,096
    report   the text table and the goals read off the records

`vs_torch` is torch's time over ours (>1: ours is faster), taking torch's fastest variant (on a
CPU all cores or one, see `peers.torch_cases`; `torch.compile` where it ran), so neither a busy
machine nor a weak baseline can flatter us. On a GPU torch runs there too (with CUDA), with
TF32 matmuls where JAX's default precision uses them. PyTorch and Flax are optional (the `bench`
extra); without them their records are left out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Sequence

import jax

from s2s_jax.bench import groups as g
from s2s_jax.bench import peers, scaling
from s2s_jax.bench.harness import FIELDS, Sizes
from s2s_jax.bench.report import goals, machine, table

__all__ = ["FIELDS", "GROUPS", "Sizes", "goals", "machine", "main", "run", "table"]


def run(
    quick: bool = False,
    *,
    only: str | Sequence[str] | None = None,
    sizes: Sizes | None = None,
    reps: int = 7,
    torch_threads: int | None = None,
    dtype: str = "float32",
    torch_compile: bool | None = None,
    log: Callable[[str], None] | None = None,
    on_group: Callable[[list[dict]], None] | None = None,
) -> list[dict]:
    """Runs the benchmarks and returns one record per measurement (see `FIELDS`).

    Args:
      quick: only the LSTM layer at each of `sizes.layer_shapes`.
      only: run this group or these groups (see `GROUPS`), with the matmul peak.
      sizes: the sizes to run (`Sizes.toy()` for tests); None: the issue's sizes.
      reps: timed repetitions per implementation (medians); length scaling uses half.
      torch_threads: PyTorch's intra-op threads; None: every core (`os.cpu_count()`), as XLA uses.
      dtype: "bfloat16" adds mixed-precision cases to the layer and training-step groups (ours
        `s2s_bf16`, torch's autocast `torch_autocast`), timed in the same rounds as float32.
      torch_compile: also time the PyTorch training step with its decoder under
        `torch.compile`; None: where torch runs on a GPU (on a CPU its compile takes a minute
        and gains little).
      log: called with a progress line before each group (e.g. `print` to stderr).
      on_group: called with each group's records as soon as the group is done, so that a run
        stopped midway keeps the groups it finished.
    """
    sizes = sizes or Sizes.for_backend(jax.default_backend())
    log = log or (lambda msg: None)
    torch = peers.torch_module()
    if torch is not None:
        peers.setup_torch(torch, torch_threads or os.cpu_count() or 1)
        if torch_compile is None:
            torch_compile = peers.torch_device(torch) == "cuda"
    measured_on = machine()
    log(f"machine: {json.dumps(measured_on)}")
    # Every record names its machine, so that a saved record still says where it was measured.
    stamp = {key: measured_on.get(key) for key in STAMP}
    groups = [
        ("matmul_peak", lambda: g.matmul_peak(sizes, reps, dtype)),
        ("lstm_layer", lambda: g.layer_bench("lstm", sizes, reps, dtype)),
    ]
    if not quick:
        groups += [
            ("gru_layer", lambda: g.layer_bench("gru", sizes, reps, dtype)),
            ("train_step", lambda: g.train_bench(sizes, reps, dtype, bool(torch_compile))),
            ("decode", lambda: g.decode_bench(sizes, reps)),
        ]
        # The groups against length one length at a time (each reaches `on_group` when done):
        # their longest lengths take the longest, and a run stopped there keeps the others.
        at = lambda **length: dataclasses.replace(sizes, **length)
        groups += [
            ("length_scaling", lambda T=T: scaling.length_bench(at(lengths=(T,)), reps))
            for T in sizes.lengths
        ]
        groups += [
            ("linear_scaling", lambda T=T: scaling.linear_bench(at(linear_lengths=(T,)), reps))
            for T in sizes.linear_lengths
        ]
    if only is not None:
        wanted = {only} if isinstance(only, str) else set(only)
        groups = [g for g in groups if g[0] in {"matmul_peak", *wanted}]
    records = []
    for name, bench in groups:
        log(f"bench: {name} ...")
        done = [record | stamp for record in bench()]
        records += done
        if on_group is not None:
            on_group(done)
    return records


GROUPS = ("lstm_layer", "gru_layer", "train_step", "decode", "length_scaling", "linear_scaling")
STAMP = ("device", "backend", "jax", "torch", "matmul_precision", "torch_matmul_precision")


def _groups(text: str) -> list[str]:
    """`--only`'s value: group names, comma-separated."""
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [x for x in names if x not in GROUPS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown group {', '.join(unknown) or repr(text)}: choose from {', '.join(GROUPS)}"
        )
    return names


def main(argv: list[str] | None = None) -> int:
    """`s2s bench [--quick] [--json] [--reps N] [--toy]`; returns the exit status."""
    parser = argparse.ArgumentParser(prog="s2s bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the two LSTM layer shapes")
    parser.add_argument("--json", action="store_true", help="print a JSON list of records")
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions (medians)")
    parser.add_argument(
        "--toy", action="store_true", help="tiny sizes: a smoke test, not a benchmark"
    )
    parser.add_argument(
        "--only",
        type=_groups,
        metavar="GROUP[,GROUP...]",
        help=f"run these groups (and the matmul peak): {', '.join(GROUPS)}",
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="bfloat16: also time mixed precision (model.dtype) against torch's bfloat16 "
        "autocast, beside float32 in the same run",
    )
    parser.add_argument(
        "--torch-compile",
        choices=("auto", "on", "off"),
        default="auto",
        help="time the PyTorch training step with torch.compile too (auto: on a GPU)",
    )
    parser.add_argument(
        "--jsonl",
        metavar="FILE",
        help="append each record to FILE as a JSON line as soon as its group is done (a run "
        "stopped midway keeps what it measured)",
    )
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)

    def append(records: list[dict]) -> None:
        with open(args.jsonl, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)

    start = time.perf_counter()
    records = run(
        args.quick,
        only=args.only,
        sizes=Sizes.toy() if args.toy else None,
        reps=args.reps,
        dtype=args.dtype,
        torch_compile={"auto": None, "on": True, "off": False}[args.torch_compile],
        log=log,
        on_group=append if args.jsonl else None,
    )
    log(f"total {time.perf_counter() - start:.0f} s; load average now {os.getloadavg()[0]:.2f}")
    if args.json:
        print(json.dumps(records, indent=1))
    else:
        print(table(records))
        print("\n".join(["", "goals:", *("  " + line for line in goals(records))]))
    return 0
