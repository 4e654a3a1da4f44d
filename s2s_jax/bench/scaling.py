"""The benchmark groups against sequence length: an LSTM layer's time and memory as T grows
(`length_scaling`), and the linear cells' parallel and step forms beside our GRU/LSTM layers
and the PyTorch linear recurrences (`linear_scaling`)."""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp

from s2s_jax.bench import peers
from s2s_jax.bench.flops import layer_flops
from s2s_jax.bench.harness import Case, Sizes, compile_fn, time_group
from s2s_jax.nn import cells, scan
from s2s_jax.nn.scan import linear

# ----------------------------------------------------------------------------------------------
# Cost against sequence length.


def length_bench(sizes: Sizes, reps: int) -> list[dict]:
    """`length_scaling` records: an LSTM layer's forward+backward against T: ours (the fused
    layer), with `remat`, and the plain scan without and with `remat` (`jax.checkpoint`).
    `peak_bytes` = arguments + outputs + temporaries of XLA's buffer assignment
    (`memory_analysis()`; an upper bound of the peak, the temporaries alone in `temp_bytes`);
    `s_per_token` = median_s / (B * T)."""
    B, H = sizes.length_batch, sizes.length_hidden
    cell = cells.LSTM
    params = cell.init(jax.random.key(0), H, H)
    impls = {  # keyword arguments of `scan.run`
        "s2s": {"impl": "fused"},
        "s2s_remat": {"impl": "fused", "remat": True},
        "s2s_plain": {"impl": "autodiff"},
        "s2s_plain_remat": {"impl": "autodiff", "projection": "inside", "remat": True},
    }

    def cases_at(T: int) -> list[Case]:
        xs = jax.random.normal(jax.random.key(1), (B, T, H), jnp.float32)
        cases = []
        for impl, kw in impls.items():
            loss = lambda p, xs, kw=kw: jnp.sum(scan.run(cell, p, xs, **kw)[0])
            grad = jax.grad(loss, argnums=(0, 1))
            compiled, secs = compile_fn(grad, params, xs)
            mem = compiled.memory_analysis()  # XLA's buffer assignment, known before running
            temp = int(mem.temp_size_in_bytes)
            peak = temp + int(mem.argument_size_in_bytes) + int(mem.output_size_in_bytes)
            run_once = lambda c=compiled, xs=xs: jax.block_until_ready(c(params, xs))
            cases.append(
                Case(impl, "fwd_bwd", run_once, secs, {"peak_bytes": peak, "temp_bytes": temp})
            )
        return cases

    flops = lambda T: lambda mode, impl: layer_flops("lstm", B, T, H, H, mode)
    return _per_length("length_scaling", sizes.lengths, cases_at, sizes, reps, flops)


def _per_length(bench, lengths, cases_at, sizes: Sizes, reps: int, flops=None) -> list[dict]:
    """`bench` records of `cases_at(T)` for each T of `lengths` (a group each, at B and H of
    `sizes.length_batch`, `.length_hidden`; half the repetitions), with `s_per_token` =
    median_s / (B * T). `flops(T)`: the group's FLOP counter, or None."""
    B, H = sizes.length_batch, sizes.length_hidden
    records = []
    for T in lengths:
        group = time_group(
            bench,
            cases_at(T),
            shape=dict(B=B, T=T, I=H, H=H),
            tokens=B * T,
            flops=flops(T) if flops else None,
            reps=max(1, reps // 2),
            peak_n=sizes.matmul,
        )
        for r in group:
            r["s_per_token"] = r["median_s"] / (B * T)
        records += group
    return records


# ----------------------------------------------------------------------------------------------
# The linear cells against length: their parallel form, its two scans, their step form, our
# sequential LSTM and GRU layers, and the PyTorch linear recurrences.

LINEAR_BENCH_CELLS = ("sru", "mingru", "minlstm", "gru", "lstm")


def _linear_cases(B: int, T: int, H: int, names: tuple[str, ...]) -> list[Case]:
    xs = jax.random.normal(jax.random.key(1), (B, T, H), jnp.float32)
    cases = []
    for name in names:
        cell = cells.get_cell(name)
        params = cell.init(jax.random.key(0), H, H)
        if cell.linear is None:  # our sequential layers as the model runs them
            variants = {name: lambda p, xs, c=cell: scan.run(c, p, xs, impl="fused")[0]}
        else:
            variants = {
                name: lambda p, xs, c=cell: scan.run(c, p, xs, impl="parallel")[0],
                f"{name}_steps": lambda p, xs, c=cell: scan.run(c, p, xs, impl="autodiff")[0],
            }
            methods = ["sequential", "associative"] + (
                ["log"] if cell.linear.log_coefficients else []
            )
            for method in methods:
                variants[f"{name}_{method}"] = lambda p, xs, c=cell, m=method: linear.run(
                    c, p, xs, None, c.initial_carry(xs.shape[0], H, xs.dtype), method=m
                )[0]
        for impl, fwd in variants.items():
            loss = lambda p, xs, fwd=fwd: jnp.sum(fwd(p, xs))
            for mode, f in {"fwd": fwd, "fwd_bwd": jax.grad(loss, argnums=(0, 1))}.items():
                compiled, secs = compile_fn(f, params, xs)
                run = lambda c=compiled, p=params: jax.block_until_ready(c(p, xs))
                cases.append(Case(impl, mode, run, secs, {"cell": name}))
    torch = peers.torch_module()
    if torch is not None:
        device = peers.torch_device(torch)
        for impl, (layer, batch_first) in peers.torch_linear_layers(torch, H).items():
            shape = (B, T, H) if batch_first else (T, B, H)
            xt = torch.randn(*shape, device=device, requires_grad=True)

            def output(layer=layer, xt=xt):
                with warnings.catch_warnings():  # sru on a CPU: "grad_enabled=True. Are you sure?"
                    warnings.simplefilter("ignore")
                    return layer(xt)

            first = lambda out: out[0] if isinstance(out, tuple) else out

            def fwd(output=output):
                with torch.no_grad():
                    output()

            def fwd_bwd(layer=layer, xt=xt, output=output):
                for p in [*layer.parameters(), xt]:
                    p.grad = None
                first(output()).sum().backward()

            made = peers.torch_cases(torch, {"fwd": fwd, "fwd_bwd": fwd_bwd}, impl=impl)
            cases += [dataclasses.replace(c, extra={"cell": impl[len("torch_") :]}) for c in made]
    return cases


def linear_bench(
    sizes: Sizes, reps: int, cells: tuple[str, ...] = LINEAR_BENCH_CELLS
) -> list[dict]:
    """`linear_scaling` records: one layer (I = H) of each linear cell forward and
    forward+backward against T, in its parallel form (`impl` the cell's name: the scan
    `linear.choose` picks; `_sequential`, `_associative`, `_log`: each scan forced), its step
    form (`_steps`, as decoding and `impl="autodiff"` run it), our fused GRU and LSTM layers,
    and PyTorch's `sru` and `mingru-pytorch` where installed. `cell` names the recurrence,
    `s_per_token` = median_s / (B * T). `cells`: which of ours to time (the PyTorch peers
    are timed whichever)."""
    B, H = sizes.length_batch, sizes.length_hidden
    cases_at = lambda T: _linear_cases(B, T, H, cells)
    return _per_length("linear_scaling", sizes.linear_lengths, cases_at, sizes, reps)
