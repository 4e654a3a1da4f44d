"""The report: records as a text table, and the goals read off them."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Sequence

import jax

from s2s_jax.bench import peers
from s2s_jax.bench.harness import FIELDS


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
    # Every record's fields, with the extra ones some groups add before the compile time.
    cols = [*FIELDS[:-1], "vs_numpy", "peak_bytes", FIELDS[-1]]
    rows = [cols] + [[_fmt(r.get(c)) for c in cols] for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in rows)


def goals(records: Sequence[dict]) -> list[str]:
    """The goals read off `records` (our default `s2s` against its reference), one line
    each; groups that did not run are left out."""

    def find(bench, mode=None):
        return [
            r
            for r in records
            if r["bench"] == bench and r["impl"] == "s2s" and (mode is None or r["mode"] == mode)
        ]

    def torch_name(r) -> str:  # the torch variant `vs_torch` compares with: the fastest
        theirs = [
            x
            for x in records
            if x["impl"].startswith("torch")
            and all(x.get(k) == r.get(k) for k in ("bench", "mode", "dtype", "B", "T", "I", "H"))
        ]
        return min(theirs, key=lambda x: x["median_s"])["impl"] if theirs else "torch"

    pct = lambda x: "-" if x is None else f"{100 * x:.0f}%"
    ratio = lambda x: "-" if x is None else f"{x:.2f}x"
    lines = []
    for bench in ("lstm_layer", "gru_layer"):
        for r in find(bench, "fwd_bwd")[:1]:  # the first (the main) shape
            lines.append(
                f"{bench} fwd+bwd B={r['B']} T={r['T']} I={r['I']} H={r['H']}: "
                f"{ratio(r['vs_torch'])} {torch_name(r)}, {pct(r['frac_of_peak'])} of peak "
                "(goal: 1.0x, 75%)"
            )
    for r in find("train_step"):
        lines.append(
            f"train_step: {ratio(r['vs_torch'])} {torch_name(r)}, "
            f"{pct(r['frac_of_peak'])} of peak "
            "(goal: 2x, 50%)"
        )
        half = [x for x in records if x["bench"] == "train_step" and x["impl"] == "s2s_bf16"]
        for h in half:
            lines.append(
                f"train_step bfloat16: {ratio(r['median_s'] / h['median_s'])} our float32 step, "
                f"{ratio(h['vs_torch'])} torch autocast (goal on a GPU: 1.5x float32)"
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
    lines += _linear_goals(records)
    return lines


def _linear_goals(records: Sequence[dict]) -> list[str]:
    """Each linear cell's parallel form at the length nearest 1,024: forward+backward against
    our sequential GRU layer and the fastest PyTorch linear recurrence of the same length."""
    scaling = [r for r in records if r["bench"] == "linear_scaling" and r["mode"] == "fwd_bwd"]
    if not scaling:
        return []
    T = min({r["T"] for r in scaling}, key=lambda t: abs(t - 1024))
    at = {r["impl"]: r["median_s"] for r in scaling if r["T"] == T}
    theirs = {impl: s for impl, s in at.items() if impl.startswith("torch")}
    fastest = min(theirs, key=theirs.get) if theirs else None
    lines = []
    for cell in ("sru", "mingru", "minlstm"):
        if cell not in at or "gru" not in at:
            continue
        line = f"linear_scaling {cell} fwd+bwd T={T}: {at['gru'] / at[cell]:.2f}x our GRU layer"
        if fastest:
            line += f", {theirs[fastest] / at[cell]:.2f}x {fastest}"
        lines.append(line + " (goal on a GPU at T=1024: 5x the GRU, faster than the peers)")
    return lines


def _cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(*, with_torch: bool = True) -> dict:
    """What the numbers were measured on; `with_torch=False` leaves out (and does not import)
    PyTorch, for results that have no PyTorch peer."""
    fields = {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "matmul_precision": jax.config.jax_default_matmul_precision or "default",
        "load_avg_1m": os.getloadavg()[0],
    }
    if not with_torch:
        return fields
    torch = peers.torch_module()
    return {
        **fields,
        "torch": torch.__version__ if torch else None,
        "torch_device": peers.torch_device(torch) if torch else None,
        "torch_threads": torch.get_num_threads() if torch else None,
        "torch_matmul_precision": torch.get_float32_matmul_precision() if torch else None,
    }
