"""Training throughput of the Multi30k configurations side by side, in one run: each config
trains the same number of steps on the same data, one after another, through `s2s train`; its
log gives non-padding target tokens a second. Only the steps from `--from-step` on count (the
first ones compile and warm up), no evaluation runs in between.

    M=path/to/multi30k/data/task1
    python experiments/multi30k/throughput.py --data $M --steps 500 \\
        --out experiments/multi30k/results/en-de/throughput_cpu.json \\
        conditional parallel_encoder parallel

Prints a table (median tokens/s of the logged windows, its ratio to the first config, seconds
from launch to the first step) and writes every figure as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOG_EVERY = 50


def train(config: str, data: Path, pair: tuple[str, str], steps: int, workdir: Path) -> dict:
    """Runs `s2s train` for `steps` steps without evaluations; its train records and times."""
    src, tgt = pair
    raw = data / "raw"
    files = lambda split: f"{raw / f'{split}.{src}.gz'},{raw / f'{split}.{tgt}.gz'}"
    argv = [
        sys.executable, "-m", "s2s_jax.cli", "train", "--config", str(HERE / f"{config}.toml"),
        "--workdir", str(workdir),
        "--train", files("train"), "--valid", files("val"), "--steps", str(steps),
        "--no-progress", "--set", f"eval_every={steps + 1}", "--set", f"log_every={LOG_EVERY}",
        "--set", f"warmup_steps={min(400, steps // 2)}", "--set", "eval_examples=64",
    ]  # fmt: skip
    started = time.time()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    records = [
        json.loads(line)
        for line in (workdir / "metrics.jsonl").read_text().splitlines()
        if '"split": "train"' in line
    ]
    return {"argv": argv, "launched": started, "ended": time.time(), "records": records}


def summarise(run: dict, from_step: int) -> dict:
    rates = [r["tokens_per_s"] for r in run["records"] if r["step"] > from_step]
    return {
        "tokens_per_s_median": statistics.median(rates),
        "tokens_per_s_windows": rates,
        "steps_per_s_median": statistics.median(
            r["steps_per_s"] for r in run["records"] if r["step"] > from_step
        ),
        "launch_to_first_log_s": run["records"][0]["time"] - run["launched"],
        "wall_s": run["ended"] - run["launched"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("configs", nargs="+", help="names of experiments/multi30k/*.toml")
    p.add_argument("--data", type=Path, required=True, help="multi30k/data/task1")
    p.add_argument("--pair", default="en-de")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--from-step", type=int, default=200, help="windows after this step count")
    p.add_argument("--out", type=Path, help="JSON of every figure")
    args = p.parse_args(argv)
    if args.steps < args.from_step + 2 * LOG_EVERY:
        p.error(f"--steps must be at least --from-step + {2 * LOG_EVERY}")
    pair = tuple(args.pair.split("-"))
    missing = [f"{split}.{lang}.gz" for split in ("train", "val") for lang in pair]
    missing = [name for name in missing if not (args.data / "raw" / name).is_file()]
    if missing:
        p.error(f"--data {args.data}: no raw/{', raw/'.join(missing)} (give multi30k/data/task1)")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for config in args.configs:
            try:
                run = train(config, args.data, pair, args.steps, Path(tmp) / config)
            except subprocess.CalledProcessError as e:  # s2s has said why on stderr
                print(f"{config}: s2s train exited {e.returncode}", file=sys.stderr)
                return 2
            results[config] = {**summarise(run, args.from_step), "argv": run["argv"]}
            print(f"{config}: {results[config]['tokens_per_s_median']:,.0f} tokens/s", flush=True)
    base = results[args.configs[0]]["tokens_per_s_median"]
    print(f"\n| config | target tokens/s (median) | x {args.configs[0]} | launch to first log |")
    print("|---|---:|---:|---:|")
    for config, r in results.items():
        rate = r["tokens_per_s_median"]
        print(
            f"| {config} | {rate:,.0f} | {rate / base:.2f} | {r['launch_to_first_log_s']:.0f} s |"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        import jax

        machine = {"platform": platform.platform(), "device": jax.devices()[0].device_kind}
        meta = {"steps": args.steps, "from_step": args.from_step, "pair": args.pair, **machine}
        args.out.write_text(json.dumps({"settings": meta, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
