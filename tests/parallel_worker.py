"""Subprocess side of tests/test_parallel.py: runs with fake CPU devices (XLA_FLAGS set by the
caller), so the device count never leaks into the pytest process.

    python tests/parallel_worker.py devices OUT CKPT_IN CKPT_OUT   # 8 devices: splits, errors
    python tests/parallel_worker.py process OUT ADDRESS N_PROC PID DATA  # one of a 2-process run
    python tests/parallel_worker.py fit ROOT DATA    # loop.fit: none vs shard_map; on DATA alone

Results go to OUT as an .npz of named arrays (flattened pytrees) and a .json of small facts.
"""

from __future__ import annotations

import json
import sys

import numpy as np

B, S, T, STEPS = 8, 8, 8, 3  # global batch, source and target padded lengths, steps per run

# Every dropout on, in every run here: each row draws its masks from its index in the global
# batch, so the splits must still give the one-device model.
DROPOUTS = {
    "dropout": 0.3,
    "annotation_dropout": 0.2,
    "src_word_dropout": 0.1,
    "tgt_word_dropout": 0.1,
}

FIT_CONFIG = {
    "model": {
        "cell": "gru",
        "bidirectional": False,
        "attention": "bahdanau",
        "attn_dim": 8,
        "enc_layers": 2,
        "src_embed": 8,
        "tgt_embed": 8,
        "enc_hidden": 16,
        "dec_hidden": 16,
        **DROPOUTS,
    },
    "train": {
        "steps": 4,
        "eval_every": 4,
        "batch_size": 8,
        "task": "copy",
        "max_src_len": 24,
        "max_tgt_len": 24,
        "buckets": 1,
        "eval_examples": 8,
        "log_every": 2,
    },
}


def prepared_config(data: str, parallel: str, steps: int) -> dict:
    """FIT_CONFIG (every dropout on) on the prepared folder `data` (its valid.tsv beside it):
    the runs on it compare across device layouts."""
    train = {k: v for k, v in FIT_CONFIG["train"].items() if k != "task"}
    train.update(train_file=data, valid_file=f"{data}/../valid.tsv", steps=steps)
    return {"model": FIT_CONFIG["model"], "train": {**train, "parallel": parallel}}


def configs():
    from s2s_jax.nn import model
    from s2s_jax.run import config

    model_cfg = model.Seq2SeqConfig(
        src_vocab=12,
        tgt_vocab=12,
        cell="gru",
        src_embed=8,
        tgt_embed=8,
        enc_hidden=8,
        dec_hidden=8,
        enc_layers=2,
        attention="bahdanau",
        attn_dim=8,
        **DROPOUTS,
    )
    train_cfg = config.TrainConfig(
        batch_size=B, warmup_steps=0, schedule="constant", learning_rate=1e-2, seed=3
    )
    return model_cfg, train_cfg


def batches(n: int = STEPS):
    """Deterministic global batches with varied lengths, the last row of each empty padding."""
    from s2s_jax.data import Batch

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        src_len = rng.integers(1, S + 1, B).astype(np.int32)
        tgt_len = rng.integers(1, T + 1, B).astype(np.int32)
        src_len[-1] = tgt_len[-1] = 0
        src = np.where(np.arange(S) < src_len[:, None], rng.integers(4, 12, (B, S)), 0)
        tgt = np.where(np.arange(T) < tgt_len[:, None], rng.integers(4, 12, (B, T)), 0)
        out.append(Batch(src.astype(np.int32), src_len, tgt.astype(np.int32), tgt_len))
    return out


def initial_state():
    import jax

    from s2s_jax.training.state import init_state

    return jax.jit(init_state, static_argnums=(0, 1))(*configs())  # one compile, not per op


def counted_body(counter: list, accumulate: int = 1):
    """train_step with the model configs bound; appends to `counter` each time it is traced."""
    import dataclasses

    from s2s_jax.training import step

    model_cfg, train_cfg = configs()
    train_cfg = dataclasses.replace(train_cfg, accumulate=accumulate)

    def body(state, batch, *, axis_name=None):
        counter.append(1)
        return step.train_step(
            state, batch, model_cfg=model_cfg, train_cfg=train_cfg, axis_name=axis_name
        )

    return body


def flat(prefix: str, tree) -> dict[str, np.ndarray]:
    import jax

    return {f"{prefix}/{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(tree))}


def run(dp, state, steps):
    """`steps` updates; the loss of each and the final (fetched) state."""
    losses = []
    for batch in steps:
        state, metrics = dp.step(state, dp.shard_batch(batch))
        losses.append(float(dp.fetch(metrics)["loss"]))
    return losses, state


def devices_main(out: str, ckpt_in: str, ckpt_out: str) -> None:
    """Every (mode, device count) against plain jit; errors; checkpoints across layouts."""
    import jax

    from s2s_jax.errors import ConfigError
    from s2s_jax.run.checkpoint import Checkpoints
    from s2s_jax.training import parallel

    arrays, facts = {}, {"n_devices": jax.device_count(), "auto": parallel.resolve_mode("auto")}
    data = batches()
    # Each mode on one device and on several; between them, every count of 1, 2, 4 and 8.
    for mode, counts in (("none", [1]), ("shard_map", [1, 2, 8]), ("pmap", [1, 4])):
        for n in counts:
            traces = []
            dp = parallel.DataParallel(
                mode, counted_body(traces), batch_size=B, devices=jax.devices()[:n]
            )
            state = dp.replicate(initial_state())
            given = jax.tree.leaves(state)
            losses, state = run(dp, state, data[:1])
            facts[f"{mode}{n}/donated"] = all(x.is_deleted() for x in given)
            arrays.update(flat(f"{mode}{n}/step1", dp.fetch(state.params)))
            more, state = run(dp, state, data[1:])
            arrays.update(flat(f"{mode}{n}/params", dp.fetch(state.params)))
            arrays[f"{mode}{n}/loss"] = np.array(losses + more)
            facts[f"{mode}{n}/traces"] = len(traces)
            facts[f"{mode}{n}/sharding"] = str(jax.tree.leaves(state.params)[0].sharding)

    # Gradient accumulation within the split: 4 devices, each running its 2 rows as 2
    # micro-batches of one row.
    dp = parallel.DataParallel(
        "shard_map", counted_body([], 2), batch_size=B, micro_batches=2, devices=jax.devices()[:4]
    )
    losses, state = run(dp, dp.replicate(initial_state()), data)
    arrays.update(flat("accumulate/params", dp.fetch(state.params)))
    arrays["accumulate/loss"] = np.array(losses)

    for mode in ("shard_map", "pmap"):
        try:
            parallel.DataParallel(mode, counted_body([]), batch_size=6, devices=jax.devices()[:4])
            facts[f"error/{mode}"] = None
        except ConfigError as e:
            facts[f"error/{mode}"] = str(e)

    # A single-device checkpoint (saved by the pytest process) restored onto 4 devices, one
    # step taken there, saved again for the pytest process to restore onto its one device.
    dp = parallel.DataParallel(
        "shard_map", counted_body([]), batch_size=B, devices=jax.devices()[:4]
    )
    ckpts = Checkpoints(ckpt_in)
    state = ckpts.restore(dp.restore_target(initial_state()))
    ckpts.close()
    facts["restored_sharding"] = str(jax.tree.leaves(state.opt_state)[0].sharding)
    arrays.update(flat("restored", dp.fetch(state)))
    _, state = run(dp, dp.replicate(state), data[:1])
    arrays.update(flat("saved4", dp.fetch(state)))
    ckpts = Checkpoints(ckpt_out)
    ckpts.save(1, dp.checkpoint_view(state))
    ckpts.close()

    np.savez(out + ".npz", **arrays)
    with open(out + ".json", "w") as f:
        json.dump(facts, f)


def process_main(out: str, address: str, n_proc: int, pid: int, data: str) -> None:
    """One process of a multi-process run: shard_map and pmap, STEPS steps each, then a
    checkpoint written together by every process; then loop.fit together on one workdir
    (process 0 locks it and writes its files) for 4 steps on the prepared folder `data`,
    each process reading its rows."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # cross-process on CPU
    from s2s_jax.run import mesh
    from s2s_jax.training import parallel

    assert mesh.initialize_distributed(address, n_proc, pid)
    from s2s_jax.run.checkpoint import Checkpoints

    arrays, facts = (
        {},
        {
            "process_count": jax.process_count(),
            "local": jax.local_device_count(),
            "global": jax.device_count(),
        },
    )
    for mode in ("shard_map", "pmap"):
        dp = parallel.DataParallel(mode, counted_body([]), batch_size=B)
        losses, state = run(dp, dp.replicate(initial_state()), batches())
        arrays[f"{mode}/loss"] = np.array(losses)
        arrays.update(flat(f"{mode}/params", dp.fetch(state.params)))
        ckpts = Checkpoints(f"{out}-ckpt-{mode}")
        ckpts.save(STEPS, dp.checkpoint_view(state))
        ckpts.close()
    from s2s_jax.training import loop

    loop.fit(f"{out}-fit", prepared_config(data, "shard_map", 4), progress=False, log=print)
    np.savez(f"{out}-{pid}.npz", **arrays)
    with open(f"{out}-{pid}.json", "w") as f:
        json.dump(facts, f)


def fit_main(root: str, data: str) -> None:
    """loop.fit on the fake devices, with parallel none and shard_map; then 8 steps on one
    device on the prepared folder `data`."""
    from s2s_jax.training import loop

    for mode in ("none", "shard_map"):
        cfg = {"model": FIT_CONFIG["model"], "train": {**FIT_CONFIG["train"], "parallel": mode}}
        loop.fit(f"{root}/{mode}", cfg, progress=False, log=lambda s: None)
    loop.fit(f"{root}/prepared", prepared_config(data, "none", 8), progress=False, log=print)


if __name__ == "__main__":
    from s2s_jax import compile_cache

    compile_cache.enable()  # the session's cache (conftest): workers share their compilations
    command, *args = sys.argv[1:]
    if command == "devices":
        devices_main(*args)
    elif command == "process":
        process_main(args[0], args[1], int(args[2]), int(args[3]), args[4])
    elif command == "fit":
        fit_main(*args)
    else:
        raise SystemExit(f"unknown command {command!r}")
