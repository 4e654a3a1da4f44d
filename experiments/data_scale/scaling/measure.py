"""What the data path costs as a corpus grows: for each size, the launch of `s2s train` to the
end of its first step and its peak memory, from the text (the TSV read and encoded at every
start) and from prepared data (`s2s prepare` once, then memory-mapped); the prepare's rate and
peak memory; and the rate at which batches are gathered from the prepared store.

    python experiments/data_scale/scaling/measure.py --data data/scale --out results.jsonl \
        --sizes 100000 1000000 10000000 --text-up-to 1000000

Corpora come from `experiments/data_scale/corpus.py` (written into --data when missing). Every
`s2s` runs with the compilation cache off (`S2S_COMPILE_CACHE=off`), so that each launch
compiles the same step whatever the corpus: the differences are the data's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import corpus  # noqa: E402  (experiments/data_scale/corpus.py)

SETTINGS = [  # word vocabularies, the default model: about 4M parameters
    "--set", "src_vocab_kind=word", "--set", "tgt_vocab_kind=word", "--set", "vocab_size=8000",
    "--set", "max_src_len=64", "--set", "max_tgt_len=64",
]  # fmt: skip
TRAIN = ["--steps", "1000", "--set", "log_every=1", "--set", "batch_size=64", "--no-progress"]


def watch(args: list[str], until: str | None, env: dict) -> dict:
    """Runs `args`; returns its seconds to the first stderr line holding `until` (then kills
    it) or to its exit, and the peak resident memory of it and its children (sampled)."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
    peak, done = [0], threading.Event()

    def sample():
        top = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                rss = top.memory_info().rss + sum(
                    c.memory_info().rss for c in top.children(recursive=True)
                )
                peak[0] = max(peak[0], rss)
            except psutil.Error:
                pass
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    seconds, tail = None, []
    for raw in proc.stderr:
        line = raw.decode("utf-8", "replace")
        tail = (tail + [line])[-5:]
        if until and until in line:
            seconds = time.perf_counter() - started
            proc.kill()
            break
    rc = proc.wait()
    done.set()
    sampler.join()
    if (until and seconds is None) or (not until and rc != 0):
        raise SystemExit(f"{' '.join(args)} failed:\n{''.join(tail)}")
    seconds = seconds or time.perf_counter() - started
    return {"seconds": round(seconds, 2), "peak_rss_gb": round(peak[0] / 2**30, 3)}


def launches(args: list[str], run: Path, env: dict, repeats: int) -> dict:
    """`watch` of a new run in `run` to its first step, `repeats` times: the median, and each."""
    tries = []
    for _ in range(repeats):
        subprocess.run(["rm", "-rf", str(run)], check=True)
        tries.append(watch([*args, "--workdir", str(run)], "step 1/", env))
    median = lambda key: sorted(t[key] for t in tries)[len(tries) // 2]
    return {"seconds": median("seconds"), "peak_rss_gb": median("peak_rss_gb"), "tries": tries}


def batch_rate(folder: Path, batches: int = 300) -> float:
    """Pairs a second that `train_batches` gathers and pads from the prepared store (B=256)."""
    from s2s_jax.data.batching import bucket_lengths, train_batches
    from s2s_jax.data.token_store import TokenStore

    store = TokenStore.open(folder, "train")
    buckets = bucket_lengths(64, 4)
    it = train_batches(store, batch_size=256, seed=0, src_buckets=buckets, tgt_buckets=buckets)
    next(it)  # the epoch's plan: part of the launch, measured there
    started = time.perf_counter()
    for _ in range(batches):
        next(it)
    return 256 * batches / (time.perf_counter() - started)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="where the corpora are (or go)")
    parser.add_argument("--out", required=True, help="a JSONL file, one record per size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument(
        "--text-up-to", type=int, default=1_000_000, help="train from the text up to this size"
    )
    parser.add_argument("--repeats", type=int, default=3, help="launches of each, the median")
    parser.add_argument(
        "--keep-prepared", action="store_true", help="reuse prepared folders (launches only)"
    )
    parser.add_argument("--prepare-only", action="store_true", help="measure s2s prepare alone")
    args = parser.parse_args(argv)
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, S2S_COMPILE_CACHE="off", JAX_PLATFORMS="cpu")
    valid = data / "valid.tsv"
    if not valid.exists():
        corpus.write(str(valid), 1000, seed=1)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    for size in args.sizes:
        tsv = data / f"{size}.tsv"
        if not tsv.exists():
            corpus.write(str(tsv), size)
        record = {"pairs": size, "machine": machine, "load_before": os.getloadavg()[0]}
        s2s = [sys.executable, "-m", "s2s_jax.cli"]
        if size <= args.text_up_to and not args.prepare_only:
            text = [*s2s, "train", "--train", str(tsv), "--valid", str(valid), *SETTINGS, *TRAIN]
            record["text"] = launches(text, data / f"run-text-{size}", env, args.repeats)
        prepared = data / f"prepared-{size}"
        if not args.keep_prepared or not prepared.exists():
            subprocess.run(["rm", "-rf", str(prepared)], check=True)
            prep = [*s2s, "prepare", "--train", str(tsv), "--out", str(prepared), *SETTINGS]
            record["prepare"] = watch(prep, None, env)
            record["prepare"]["pairs_per_s"] = round(size / record["prepare"]["seconds"])
        if args.prepare_only:
            prepared_size = sum(f.stat().st_size for f in prepared.iterdir())
            record["prepare"]["folder_gb"] = round(prepared_size / 1e9, 3)
        if not args.prepare_only:
            train = [*s2s, "train", "--data", str(prepared), "--valid", str(valid), *TRAIN]
            record["prepared"] = launches(train, data / f"run-prepared-{size}", env, args.repeats)
            record["batch_pairs_per_s"] = round(batch_rate(prepared))
        record["load_after"] = os.getloadavg()[0]
        print(json.dumps(record), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
