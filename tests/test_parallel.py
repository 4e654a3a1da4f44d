"""Tests of s2s_jax.training.parallel: any split of the batch over devices or processes gives the
single-device update; checkpoints move between device counts; loop.fit end to end.

Multi-device work runs in subprocesses (tests/parallel_worker.py) with their own XLA_FLAGS, so
the fake device count never reaches the pytest process or the other tests.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import parallel_worker as worker
import pytest

from s2s_jax.errors import ConfigError
from s2s_jax.run import config, mesh
from s2s_jax.run import workdir as wd
from s2s_jax.run.checkpoint import Checkpoints
from s2s_jax.training import loop, parallel
from s2s_jax.training import state as state_lib
from s2s_jax.training.prepared_data import prepare_corpus

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("parallel_worker.py")
DIST_VARS = (mesh.ENV_COORDINATOR, mesh.ENV_NUM_PROCESSES, mesh.ENV_PROCESS_ID)


def _env(n_devices: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    # Fake CPU devices; the other two flags compile the tiny steps about 3x faster.
    env["XLA_FLAGS"] = (
        f"--xla_force_host_platform_device_count={n_devices} "
        "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
    )
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_DEFAULT_MATMUL_PRECISION"] = "highest"  # as conftest sets for this process
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _worker(*args, n_devices: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(WORKER), *map(str, args)],
        env=_env(n_devices),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait(proc: subprocess.Popen, timeout: float = 240) -> None:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    assert proc.returncode == 0, f"worker {proc.args[2:]} failed:\n{err[-3000:]}"


def _leaves(arrays, prefix: str) -> list[np.ndarray]:
    n = sum(k.startswith(prefix + "/") for k in arrays)
    return [arrays[f"{prefix}/{i}"] for i in range(n)]


def _assert_close(got: list, want: list, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    assert len(got) == len(want) > 0
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


def _numpy(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _restore_on_one_device(directory, model_cfg=None, train_cfg=None):
    """The latest state in `directory`, restored onto this process's single device."""
    if model_cfg is None:
        model_cfg, train_cfg = worker.configs()
    dp = parallel.DataParallel("none", lambda s, b: (s, {}), batch_size=worker.B)
    ckpts = Checkpoints(directory)
    try:
        restored = ckpts.restore(dp.restore_target(state_lib.abstract_state(model_cfg, train_cfg)))
    finally:
        ckpts.close()
    one_device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    assert {x.sharding for x in jax.tree.leaves(restored)} == {one_device}
    return restored


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    """Starts every subprocess at once (their compilations overlap): the 8-device worker,
    which first restores a checkpoint saved here on 1 device; the 2 processes of a
    distributed run (2 fake devices each); loop.fit on 4 devices. The fits on data read a
    folder prepared here: 44 pairs, 5 batches of 8 an epoch."""
    tmp = tmp_path_factory.mktemp("parallel")
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdefgh"), rng.integers(2, 12))) for _ in range(44)]
    (tmp / "train.tsv").write_text("".join(f"{w}\t{w[::-1]}\n" for w in words))
    (tmp / "valid.tsv").write_text("".join(f"{w}\t{w[::-1]}\n" for w in words[:8]))
    files = dict(train_file=str(tmp / "train.tsv"), valid_file=str(tmp / "valid.tsv"))
    data = config.TrainConfig(**files, src_vocab_kind="char", tgt_vocab_kind="char")
    prepare_corpus(data, tmp / "data", log=print)
    saved = worker.initial_state()
    ckpts = Checkpoints(tmp / "ckpt1")
    ckpts.save(0, saved)
    ckpts.close()
    address = f"127.0.0.1:{_free_port()}"
    procs = {
        "devices": _worker("devices", tmp / "out", tmp / "ckpt1", tmp / "ckpt4", n_devices=8),
        "fit": _worker("fit", tmp / "fit", tmp / "data", n_devices=4),
    }
    for pid in range(2):
        procs[pid] = _worker("process", tmp / "run", address, 2, pid, tmp / "data", n_devices=2)
    yield tmp, procs, saved
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture(scope="module")
def on_devices(workers):
    """The 8-device worker's arrays and facts, the directory, the state saved on 1 device."""
    tmp, procs, saved = workers
    _wait(procs["devices"])
    facts = json.loads((tmp / "out.json").read_text())
    return dict(np.load(tmp / "out.npz")), facts, tmp, saved


# ----------------------------------------------------------------------------- in-process


def test_initialize_distributed_is_a_noop_without_settings(monkeypatch):
    for name in DIST_VARS:
        monkeypatch.delenv(name, raising=False)
    assert mesh.initialize_distributed() is False
    assert not jax.distributed.is_initialized()


@pytest.mark.parametrize(
    "env",
    [
        {mesh.ENV_COORDINATOR: "127.0.0.1:1234"},
        {
            mesh.ENV_COORDINATOR: "127.0.0.1:1234",
            mesh.ENV_NUM_PROCESSES: "two",
            mesh.ENV_PROCESS_ID: "0",
        },
    ],
)
def test_initialize_distributed_rejects_incomplete_settings(monkeypatch, env):
    for name in DIST_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="JAX_NUM_PROCESSES"):
        mesh.initialize_distributed()
    assert not jax.distributed.is_initialized()


def test_modes_on_one_device():
    assert parallel.resolve_mode("auto") == "none"  # this process has one device
    with pytest.raises(ConfigError, match="parallel must be one of"):
        parallel.resolve_mode("dp")


# ------------------------------------------------------------------------ fake devices


@pytest.mark.parametrize(
    "mode,n", [("shard_map", n) for n in (1, 2, 8)] + [("pmap", n) for n in (1, 4)]
)
def test_split_over_devices_matches_one_device(on_devices, mode, n):
    arrays, facts, _, _ = on_devices
    assert facts["n_devices"] == 8
    # The same loss at every step, and the same parameters after one and after three steps.
    np.testing.assert_allclose(arrays[f"{mode}{n}/loss"], arrays["none1/loss"], rtol=1e-5)
    _assert_close(_leaves(arrays, f"{mode}{n}/step1"), _leaves(arrays, "none1/step1"))
    _assert_close(
        _leaves(arrays, f"{mode}{n}/params"), _leaves(arrays, "none1/params"), rtol=1e-4, atol=1e-5
    )
    # The parameters stay replicated over all n devices; three steps, one trace; the state
    # given to a step is donated (its buffers reused, so deleted).
    assert f"'data': {n}" in facts[f"{mode}{n}/sharding"]
    assert "spec=P()" in facts[f"{mode}{n}/sharding"]
    assert facts[f"{mode}{n}/traces"] == 1
    assert facts[f"{mode}{n}/donated"]


def test_micro_batches_on_devices_match_one_device(on_devices):
    """accumulate=2 on 4 devices (one-row micro-batches, padding rows included): the losses
    and parameters of the whole batch on one device."""
    arrays, _, _, _ = on_devices
    np.testing.assert_allclose(arrays["accumulate/loss"], arrays["none1/loss"], rtol=1e-5)
    _assert_close(
        _leaves(arrays, "accumulate/params"), _leaves(arrays, "none1/params"), rtol=1e-4, atol=1e-5
    )


def test_reference_run_learns(on_devices):
    """The reference (plain jit) itself moves: step 1 changes the parameters, the loss goes
    down; it too compiles once and donates its state."""
    arrays, facts, _, saved = on_devices
    assert facts["none1/traces"] == 1 and facts["none1/donated"]
    loss = arrays["none1/loss"]
    assert loss[-1] < loss[0]
    start = [np.asarray(x) for x in jax.tree.leaves(saved.params)]
    assert any(not np.allclose(a, b) for a, b in zip(_leaves(arrays, "none1/step1"), start))


def test_batch_that_does_not_split_is_a_config_error(on_devices):
    _, facts, _, _ = on_devices
    assert facts["auto"] == "shard_map"
    for mode in ("shard_map", "pmap"):
        message = facts[f"error/{mode}"]
        assert message is not None, f"{mode} accepted batch_size 6 on 4 devices"
        assert "batch_size 6" in message and "4 devices" in message and "multiple of 4" in message


def test_checkpoint_moves_between_one_and_four_devices(on_devices):
    arrays, facts, tmp, saved = on_devices
    # Saved here on 1 device, restored there onto 4 (replicated on all four).
    _assert_close(_leaves(arrays, "restored"), _numpy(saved), rtol=0, atol=0)
    assert "'data': 4" in facts["restored_sharding"]
    # Saved there on 4 devices after a step, restored here onto 1: that step is the
    # one-device step.
    restored = _restore_on_one_device(tmp / "ckpt4")
    _assert_close(_numpy(restored), _leaves(arrays, "saved4"), rtol=0, atol=0)
    _assert_close(_numpy(restored.params), _leaves(arrays, "none1/step1"))


# --------------------------------------------------------------------------- processes


def test_two_processes_train_together(workers, on_devices):
    """2 processes x 2 fake devices (jax.distributed on loopback, gloo collectives) train
    together, each feeding its half of every batch, and agree with the one-device run."""
    tmp, procs, _ = workers
    reference = on_devices[0]
    out = tmp / "run"
    for pid in range(2):
        _wait(procs[pid])
    for pid in range(2):
        facts = json.loads(Path(f"{out}-{pid}.json").read_text())
        assert facts == {"process_count": 2, "local": 2, "global": 4}
        arrays = dict(np.load(f"{out}-{pid}.npz"))
        for mode in ("shard_map", "pmap"):
            np.testing.assert_allclose(arrays[f"{mode}/loss"], reference["none1/loss"], rtol=1e-5)
            _assert_close(
                _leaves(arrays, f"{mode}/params"),
                _leaves(reference, "none1/params"),
                rtol=1e-4,
                atol=1e-5,
            )
    # The checkpoint both processes wrote together restores here, on one device.
    for mode in ("shard_map", "pmap"):
        restored = _restore_on_one_device(f"{out}-ckpt-{mode}")
        assert int(restored.step) == worker.STEPS
        _assert_close(
            _numpy(restored.params), _leaves(reference, "none1/params"), rtol=1e-4, atol=1e-5
        )
    # loop.fit run by both processes on one workdir, each reading its rows of the prepared
    # data, equals loop.fit on one device, step for step; resumed here by one process, it
    # goes on with the batches of the one-device run (into its second epoch).
    _wait(procs["fit"])
    together, alone = Path(f"{out}-fit"), tmp / "fit" / "prepared"
    assert (together / wd.LOCK).read_text().startswith("pid ")  # process 0 held it
    final = {"4": _restore_on_one_device(together / wd.CHECKPOINTS, *_configs(together))}
    loop.fit(together, {"train": {"steps": 8}}, progress=False, log=lambda s: None)
    for steps, path in (("8", together), ("alone", alone)):
        final[steps] = _restore_on_one_device(path / wd.CHECKPOINTS, *_configs(path))
    assert (int(final["4"].step), int(final["8"].step)) == (4, 8)
    records = {}
    for name, path in (("together", together), ("alone", alone)):
        records[name] = [json.loads(line) for line in (path / wd.METRICS).open()]
        records[name] = [(r["step"], r["split"], r["loss"]) for r in records[name]]
    got, want = (np.array([r[2] for r in records[n]]) for n in ("together", "alone"))
    assert [r[:2] for r in records["together"]] == [r[:2] for r in records["alone"]]
    assert [r[:2] for r in records["alone"]] == [(2, "train"), (4, "train"), (4, "valid"),
        (6, "train"), (8, "train"), (8, "valid")]  # fmt: skip
    np.testing.assert_allclose(got, want, rtol=1e-4)
    _assert_close(_numpy(final["8"].params), _numpy(final["alone"].params), rtol=1e-4, atol=1e-5)


def _configs(workdir: Path):
    run = wd.load(workdir)
    return run.model_cfg, run.train_cfg


# ------------------------------------------------------------------------------ fit


def test_fit_with_shard_map_on_four_devices_matches_none(workers):
    tmp, procs, _ = workers
    _wait(procs["fit"])
    tmp_path = tmp / "fit"
    final = {}
    for mode in ("none", "shard_map"):
        run = wd.load(tmp_path / mode)
        assert run.train_cfg.parallel == mode
        final[mode] = _restore_on_one_device(
            tmp_path / mode / wd.CHECKPOINTS, run.model_cfg, run.train_cfg
        )
        records = [json.loads(line) for line in (tmp_path / mode / "metrics.jsonl").open()]
        assert [(r["step"], r["split"]) for r in records] == [
            (2, "train"),
            (4, "train"),
            (4, "valid"),
        ]
    assert int(final["shard_map"].step) == 4
    _assert_close(
        _numpy(final["shard_map"].params), _numpy(final["none"].params), rtol=1e-4, atol=1e-5
    )
