"""Load on `s2s serve`: throughput and latency at 1, 4, 16 and 64 concurrent clients, greedy and
beam 5, beside the same sentences through `Translator.translate` one at a time, in one run.

    python experiments/serve/load.py --workdir runs/numbers --out experiments/serve/results

It also times `Translator.translate` on batches of 1 to 64 sentences in-process: the ceiling of
what batching can gain on this machine before any HTTP cost.

Bounded: a fixed number of one-sentence requests per setting, a time limit per setting, and
only 127.0.0.1. Every answer is compared with `Translator.translate` of that sentence alone
(counted as wrong otherwise), and every request is accounted for (lost: no answer). Writes
`load.json` (the machine named) and `load.png` (throughput and p99 latency against
concurrency).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

CONCURRENCY = (1, 4, 16, 64)
MODES = {"greedy": 1, "beam5": 5}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def call(conn: http.client.HTTPConnection, sentence: str, beam: int) -> tuple[int, str]:
    body = json.dumps({"inputs": [sentence], "beam": beam})
    conn.request("POST", "/translate", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    data = json.loads(response.read())
    return response.status, (data.get("outputs") or [""])[0]


def load(port: int, sentences, expected, beam: int, clients: int, requests: int, limit: float):
    """`requests` one-sentence requests from `clients` threads (each with its own keep-alive
    connection), stopping early at `limit` seconds."""
    latencies, wrong, failed, lock = [], 0, 0, threading.Lock()
    next_index = iter(range(requests))
    deadline = time.monotonic() + limit

    def client():
        nonlocal wrong, failed
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while time.monotonic() < deadline:
            with lock:
                i = next(next_index, None)
            if i is None:
                break
            sentence = sentences[i % len(sentences)]
            started = time.perf_counter()
            try:
                status, text = call(conn, sentence, beam)
            except OSError:
                status, text = 0, ""
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            seconds = time.perf_counter() - started
            with lock:
                if status != 200:
                    failed += 1
                else:
                    latencies.append(seconds)
                    wrong += text != expected[sentence]
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": len(latencies) + failed,
        "answered": len(latencies),
        "failed": failed,
        "wrong": wrong,
        "seconds": round(wall, 3),
        "sentences_per_s": round(len(latencies) / wall, 2),
        "p50_ms": round(1000 * percentile(latencies, 50), 2),
        "p99_ms": round(1000 * percentile(latencies, 99), 2),
    }


def one_at_a_time(translator, sentences, beam: int) -> dict:
    """The same sentences through `Translator.translate`, one call each, in this process."""
    translator.translate(sentences[:1], beam=beam)  # compiled before timing
    latencies, outputs = [], {}
    started = time.perf_counter()
    for s in sentences:
        t0 = time.perf_counter()
        outputs[s] = translator.translate([s], beam=beam)[0]
        latencies.append(time.perf_counter() - t0)
    wall = time.perf_counter() - started
    return outputs, {
        "sentences": len(sentences),
        "sentences_per_s": round(len(sentences) / wall, 2),
        "p50_ms": round(1000 * statistics.median(latencies), 2),
        "p99_ms": round(1000 * percentile(latencies, 99), 2),
    }


def in_process_batches(translator, sentences, beam: int) -> dict:
    """`Translator.translate` on batches of 1, 4, 16 and 64 sentences in this process: the
    most any server could gain from batching on this machine, with no HTTP at all."""
    out = {}
    for size in CONCURRENCY:
        chunks = [sentences[i : i + size] for i in range(0, len(sentences), size)]
        translator.translate(chunks[0], beam=beam)  # compiled before timing
        started = time.perf_counter()
        for chunk in chunks:
            translator.translate(chunk, beam=beam)
        out[str(size)] = round(len(sentences) / (time.perf_counter() - started), 2)
    return out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    import jax

    return {
        "host": platform.node(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "devices": [str(d) for d in jax.devices()],
        "jax": jax.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for mode, runs in results["server"].items():
        xs = [r["clients"] for r in runs]
        (line,) = left.plot(xs, [r["sentences_per_s"] for r in runs], "o-", label=f"server {mode}")
        base = results["one_at_a_time"][mode]["sentences_per_s"]
        left.axhline(base, color=line.get_color(), ls=":", label=f"one at a time {mode}")
        batches = results["in_process_batches"][mode]
        left.plot(
            xs,
            [batches[str(x)] for x in xs],
            "--",
            color=line.get_color(),
            alpha=0.6,
            label=f"in-process batches of N, {mode}",
        )
        right.plot(xs, [r["p99_ms"] for r in runs], "o-", color=line.get_color(), label=mode)
    left.set_yscale("log")
    for ax, label in ((left, "sentences / s"), (right, "p99 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(CONCURRENCY, [str(c) for c in CONCURRENCY])
        ax.set_xlabel("concurrent clients (in-process: sentences a call)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"s2s serve, {results['machine']['cpu']}, {results['machine']['devices'][0]}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="a trained run (numbers-en-fr)")
    parser.add_argument("--out", default="experiments/serve/results", help="where to write")
    parser.add_argument("--requests", type=int, default=256, help="requests per setting")
    parser.add_argument("--limit", type=float, default=120, help="seconds per setting at most")
    parser.add_argument("--sentences", type=int, default=256, help="distinct test sentences")
    parser.add_argument(
        "--serve", default="", help="more `s2s serve` options, e.g. '--max-wait-ms 1'"
    )
    args = parser.parse_args(argv)

    from s2s_jax import Translator, compile_cache
    from s2s_jax.data import load_task

    compile_cache.enable()
    translator = Translator.from_workdir(args.workdir)
    sentences = [s for s, _ in load_task("numbers-en-fr").splits["test"][: args.sentences]]
    results = {
        "machine": machine(),
        "workdir": args.workdir,
        "serve_options": args.serve,
        "one_at_a_time": {},
        "server": {},
    }
    expected = {}
    for mode, beam in MODES.items():
        expected[mode], results["one_at_a_time"][mode] = one_at_a_time(translator, sentences, beam)
        print(mode, "one at a time:", results["one_at_a_time"][mode], flush=True)
        batches = in_process_batches(translator, sentences, beam)
        results.setdefault("in_process_batches", {})[mode] = batches
        print(mode, "in-process batches of N, sentences/s:", batches, flush=True)

    port = free_port()
    s2s = shutil.which("s2s", path=str(Path(sys.executable).parent)) or "s2s"
    argv = [s2s, "serve", "--workdir", args.workdir, "--port", str(port), "--warm-beams", "5"]
    argv += args.serve.split()
    server = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start: {server.stderr.read()}")
            time.sleep(0.5)
        for mode, beam in MODES.items():
            # The idle server's latency: one request at a time, after a few to settle.
            idle = load(port, sentences, expected[mode], beam, 1, 32, args.limit)
            results.setdefault("idle", {})[mode] = idle
            runs = []
            for clients in CONCURRENCY:
                run = load(
                    port, sentences, expected[mode], beam, clients, args.requests, args.limit
                )
                runs.append(run)
                print(mode, run, flush=True)
            results["server"][mode] = runs
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/info")
        info = json.loads(conn.getresponse().read())
        results["server_info"] = {k: info[k] for k in ("loaded", "settings", "warmup_seconds")}
        results["server_info"]["compilations_after_warmup"] = info["compilations_after_warmup"]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    results["server_exit_status"] = server.returncode

    for mode in MODES:
        at16 = next(r for r in results["server"][mode] if r["clients"] == 16)
        base = results["one_at_a_time"][mode]
        results.setdefault("goals", {})[mode] = {
            "throughput_x_at_16": round(at16["sentences_per_s"] / base["sentences_per_s"], 2),
            "p99_at_16_over_idle_p50": round(at16["p99_ms"] / results["idle"][mode]["p50_ms"], 2),
            "lost_or_wrong_at_64": sum(
                r["failed"] + r["wrong"] + (args.requests - r["requests"])
                for r in results["server"][mode]
                if r["clients"] == 64
            ),
        }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "load.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out / "load.png")
    print(json.dumps(results["goals"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
