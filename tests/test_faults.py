"""Fault injection through the real `s2s` command, as a user runs it: relative paths, another
current directory, kill -9 / SIGINT / SIGTERM at compile, steps and saves, damaged files, a
full disk, two trainers at once, bad input.

Every case asserts what the README's "Reliability" section promises: nothing lost (a resumed
run ends bit-identical to an uninterrupted one, from the last verified step), nothing
overwritten by a refused command, and one clear `s2s:` line with a non-zero exit (2 for user
errors), never a traceback.

The commands share the session's compilation cache (conftest), as a user's commands share theirs.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import queue
import re
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from test_checkpoint import flip_bytes

from s2s_jax.run import workdir as wd
from s2s_jax.run.checkpoint import Checkpoints
from s2s_jax.training import state

S2S = shutil.which("s2s", path=str(Path(sys.executable).parent)) or shutil.which("s2s")
pytestmark = pytest.mark.skipif(S2S is None, reason="the s2s command is not installed")

TINY = """
[model]
cell = "gru"
src_embed = 8
tgt_embed = 8
enc_hidden = 12
dec_hidden = 12
attn_dim = 8
dropout = 0.1
[train]
batch_size = 8
steps = 12
eval_every = 4
log_every = 2
eval_examples = 8
max_src_len = 12
max_tgt_len = 12
buckets = 1
"""
TRAIN = [
    "train",
    "--config",
    "tiny.toml",
    "--train",
    "data/train.tsv",
    "--valid",
    "data/valid.tsv",
    "--no-progress",
]


# ------------------------------------------------------------------------------- harness


@pytest.fixture(scope="module")
def env():
    return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A user's directory: an experiment file and TSV data, all addressed relatively."""
    root = tmp_path_factory.mktemp("project")
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdef"), size=rng.integers(1, 7))) for _ in range(240)]
    (root / "data").mkdir()
    for name, part in (("train", words[:200]), ("valid", words[200:])):
        (root / "data" / f"{name}.tsv").write_text("".join(f"{w}\t{w[::-1]}\n" for w in part))
    (root / "tiny.toml").write_text(TINY)
    (root / "runs").mkdir()
    return root


def s2s(*args, cwd, env, stdin: bytes | None = None, timeout: float = 300):
    proc = subprocess.run(
        [S2S, *map(str, args)], cwd=cwd, env=env, input=stdin, capture_output=True, timeout=timeout
    )
    return (
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )


def assert_one_line(result, code: int, match: str) -> str:
    """Exit status `code`, no traceback, one `s2s:` line on stderr that contains `match`."""
    rc, out, err = result
    assert rc == code, (rc, out, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("s2s:")]
    assert len(lines) == 1 and match in lines[0], err
    return lines[0]


def on_small_filesystem(script: str, tmp_path, project, env, *, timeout: float) -> Path:
    """Runs the bash `script` with `$1` a fresh mount point, `$2` the project and `$3` the s2s
    command, in a user and mount namespace (no root needed: the script mounts a small tmpfs on
    `$1` and exits 99 if it cannot); skips the test where that is impossible. Returns `$1`."""
    if not shutil.which("unshare"):
        pytest.skip("no unshare to mount a small filesystem")
    mount = tmp_path / "mnt"
    mount.mkdir()
    proc = subprocess.run(
        ["unshare", "-rm", "bash", "-c", script, "sh", str(mount), str(project), S2S],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode == 99 or "unshare" in proc.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    return mount


class Running:
    """`s2s` in the background, its output lines collected as they come."""

    def __init__(self, *args, cwd, env):
        self.proc = subprocess.Popen(
            [S2S, *map(str, args)],
            cwd=cwd,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: queue.Queue = queue.Queue()
        self.seen = {"stdout": [], "stderr": []}
        for name in self.seen:
            threading.Thread(target=self._read, args=(name,), daemon=True).start()

    def _read(self, name):
        for line in getattr(self.proc, name):
            self.seen[name].append(line)
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = 240) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                assert self.proc.poll() is None, f"exited {self.proc.returncode}: {self.seen}"
                continue
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r} in {timeout}s: {self.seen}")

    def finish(self, timeout: float = 240):
        rc = self.proc.wait(timeout=timeout)
        time.sleep(0.1)  # the reader threads drain the pipes
        return rc, "".join(self.seen["stdout"]), "".join(self.seen["stderr"])


def saved_state(workdir: Path, step: int | None = None):
    """A workdir's latest (or given) checkpoint, as numpy arrays."""
    run = wd.load(workdir)
    ckpts = Checkpoints(workdir / wd.CHECKPOINTS)
    try:
        restored = ckpts.restore(state.abstract_state(run.model_cfg, run.train_cfg), step=step)
    finally:
        ckpts.close()
    return jax.tree.map(np.asarray, restored)


def assert_same_state(workdir: Path, reference: Path) -> None:
    """Bit-identical parameters, optimizer state, step, key and data position."""
    got, want = saved_state(workdir), saved_state(reference)
    assert int(got.step) == int(want.step)
    jax.tree.map(np.testing.assert_array_equal, got, want)


def tree_hash(path: Path) -> dict[str, str]:
    """Every file under `path` with its SHA-256 (to prove a refused command wrote nothing)."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def metric_records(workdir: Path) -> list[tuple[int, str]]:
    lines = (workdir / wd.METRICS).read_text().splitlines()
    return [(r["step"], r["split"]) for r in map(json.loads, lines)]


@pytest.fixture(scope="module")
def straight(project, env):
    """The reference: TINY trained without interruption, by the README's command shape."""
    result = s2s("train", *TRAIN[1:], "--workdir", "runs/straight", cwd=project, env=env)
    assert result[0] == 0, result
    return project / "runs" / "straight"


def copy_of(straight: Path, name: str) -> Path:
    target = straight.parent / name
    shutil.copytree(straight, target)
    return target


# ------------------------------------------------------------------- the user's own path


def test_relative_workdirs_from_other_directories(project, straight, env):
    """The README's commands with relative paths, run from the project, from runs/ and from a
    sibling directory; and the Python API likewise."""
    assert sorted(os.listdir(straight / "checkpoints" / "latest")) == ["12", "8"]
    outputs = set()
    for cwd, workdir in (
        (project, "runs/straight"),
        (project / "runs", "straight"),
        (project / "runs", "./straight"),
        (project / "data", "../runs/straight"),
    ):
        rc, out, err = s2s("translate", "--workdir", workdir, "abc", "fed", cwd=cwd, env=env)
        assert rc == 0 and len(out.splitlines()) == 2 and "Traceback" not in err, err
        outputs.add(out)
    assert len(outputs) == 1
    rc, out, err = s2s(
        "score", "--workdir", "straight", cwd=project / "runs", env=env, stdin=b"abc\tcba\n"
    )
    assert rc == 0 and float(out) < 0, err
    rc, out, err = s2s(
        "eval",
        "--workdir",
        "straight",
        "--split",
        "valid",
        "--limit",
        "4",
        cwd=project / "runs",
        env=env,
    )
    assert rc == 0 and "exact_match" in json.loads(out), err
    api = (
        "from s2s_jax.inference.translate import Translator; "
        "print(Translator.from_workdir('straight').translate(['abc', 'fed']))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", api],
        cwd=project / "runs",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert ast.literal_eval(proc.stdout) == outputs.pop().splitlines()


# ---------------------------------------------------------------------- kills and signals


@pytest.mark.parametrize("when", ["compile", "steps"])
def test_sigkill_then_the_same_command_resumes_exactly(project, straight, env, when):
    workdir = f"runs/kill9-{when}"
    run = Running(*TRAIN, "--workdir", workdir, cwd=project, env=env)
    # at "training": the first step is compiling; at "step 4": the next steps are running
    run.wait_for(r"^training .* parameters" if when == "compile" else r"^step 4 \(saved\)")
    run.proc.kill()
    assert run.finish()[0] == -signal.SIGKILL
    result = s2s(*TRAIN, "--workdir", workdir, cwd=project, env=env)
    assert result[0] == 0, result
    assert_same_state(project / workdir, straight)
    records = metric_records(project / workdir)
    assert len(records) == len(set(records))  # steps logged again are logged once


# Runs `s2s` (its `main`) with a hook inside orbax's write of one step: the data of that step
# are on disk in a temporary directory, not yet renamed into place.
MID_SAVE = textwrap.dedent("""
    import os, signal, sys
    import orbax.checkpoint as ocp
    from s2s_jax import cli
    from s2s_jax.run import checkpoint
    action, at_step = sys.argv[1], int(sys.argv[2])
    save, write = checkpoint.Checkpoints.save, ocp.handlers.CompositeCheckpointHandler.save
    state = {"step": None}
    def save_step(self, step, *args, **kw):
        state["step"] = step
        save(self, step, *args, **kw)
    def write_then_act(self, *args, **kw):
        write(self, *args, **kw)
        if state["step"] == at_step:
            state["step"] = None
            for _ in range({"kill": 1, "term": 1, "term-twice": 2}[action]):
                sig = signal.SIGKILL if action == "kill" else signal.SIGTERM
                os.kill(os.getpid(), sig)
    checkpoint.Checkpoints.save = save_step
    ocp.handlers.CompositeCheckpointHandler.save = write_then_act
    sys.exit(cli.main(sys.argv[3:]))
""")


@pytest.mark.parametrize(
    "action, rc, latest", [("kill", -signal.SIGKILL, 4), ("term", 143, 8), ("term-twice", 143, 4)]
)
def test_a_signal_during_a_save(project, straight, env, action, rc, latest):
    """SIGKILL mid-save loses that save only; one SIGTERM lets it finish, then stops; a
    second one abandons it. In each case the same command then resumes exactly."""
    workdir = project / "runs" / f"mid-save-{action}"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            MID_SAVE,
            action,
            "8",
            *TRAIN,
            "--workdir",
            workdir.relative_to(project),
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == rc, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    if action != "kill":
        line = assert_one_line((proc.returncode, proc.stdout, proc.stderr), rc, "SIGTERM")
        assert line == (
            "s2s: SIGTERM at step 8: step 8 is saved; run the same command to resume"
            if action == "term"
            else "s2s: interrupted by SIGTERM"
        )
    ckpts = wd.checkpoints(workdir)
    assert ckpts.latest_step() == latest
    ckpts.close()
    unfinished = list((workdir / "checkpoints" / "latest").glob("8.orbax-checkpoint-tmp*"))
    assert bool(unfinished) == (action != "term")  # abandoned saves stay unfinished
    result = s2s(*TRAIN, "--workdir", workdir.relative_to(project), cwd=project, env=env)
    assert result[0] == 0, result
    assert not list((workdir / "checkpoints" / "latest").glob("*tmp*"))
    assert_same_state(workdir, straight)


def tensorboard_events(workdir: Path) -> list:
    """Every event in the workdir's TensorBoard files (TFRecord framing, read by hand)."""
    from tensorboardX.proto.event_pb2 import Event

    events = []
    for path in sorted((workdir / wd.TENSORBOARD).iterdir()):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            events.append(Event.FromString(data[at + 12 : at + 12 + length]))
            at += 12 + length + 4  # length, its crc, the record, its crc
    return events


def test_tensorboard_shows_decoded_validation_samples(project, straight, env):
    """At each evaluation, the first validation pairs with the model's output as a text table;
    the last one equals what `s2s translate` writes with the same checkpoint and beam."""
    tables = {
        e.step: e.summary.value[0].tensor.string_val[0].decode()
        for e in tensorboard_events(straight)
        if e.summary.value and e.summary.value[0].tag == "valid/samples/text_summary"
    }
    assert sorted(tables) == [4, 8, 12]  # eval_every = 4
    header, rule, *lines = tables[12].splitlines()
    assert (header, rule) == ("| source | reference | hypothesis |", "|---|---|---|")
    rows = [[c.strip().strip("`") for c in line.strip("|").split("|")] for line in lines]
    pairs = [ln.split("\t") for ln in (project / "data" / "valid.tsv").read_text().splitlines()]
    assert [row[:2] for row in rows] == pairs[:5]
    rc, out, err = s2s(
        "translate",
        "--workdir",
        "runs/straight",
        "--checkpoint",
        "latest",
        "--beam",
        "1",  # eval_beam's default
        *(source for source, _ in pairs[:5]),
        cwd=project,
        env=env,
    )
    assert rc == 0, err
    assert [row[2] for row in rows] == out.splitlines()


def test_the_metrics_of_a_tsv_run_are_a_setting(project, env):
    """Character error rates for TSV data (`--set metrics=wer,per`), the best checkpoint by
    one of them, and `s2s eval` reporting them."""
    workdir = "runs/error-rates"
    args = [*TRAIN, "--workdir", workdir, "--steps", "8", "--set", "metrics=wer,per"]
    rc, out, err = s2s(*args, "--set", "best_metric=per", cwd=project, env=env)
    assert rc == 0, err
    valid = [json.loads(line) for line in (project / workdir / wd.METRICS).read_text().splitlines()]
    valid = [r for r in valid if r["split"] == "valid"]
    assert [r["step"] for r in valid] == [4, 8] and all(
        {"wer", "per", "loss"} <= set(r) for r in valid
    )
    assert not any("bleu" in r for r in valid)
    # eval on the 8 pairs that training evaluated (eval_examples), greedy as training was: the
    # best step's figures again
    eval_args = ["eval", "--workdir", workdir, "--split", "valid", "--limit", "8", "--beam", "1"]
    rc, out, err = s2s(*eval_args, cwd=project, env=env)
    result = json.loads(out)
    assert rc == 0 and "exact_match" not in result, err
    best = min(valid, key=lambda r: (r["per"], -r["step"]))  # minimised; a tie: the later step
    assert f"step {best['step']}, the best by per" in err
    assert (result["wer"], result["per"]) == pytest.approx((best["wer"], best["per"]))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("when", ["compile", "steps"])
def test_sigint_and_sigterm_save_the_current_step(project, straight, env, sig, when):
    """The step in flight is finished and saved, the exit line says which (a signal before
    the first step just stops); the same command resumes exactly; each step is logged once,
    in metrics.jsonl and in TensorBoard (which is told to forget the steps logged again)."""
    workdir = f"runs/signal-{sig.name}-{when}"
    run = Running(*TRAIN, "--workdir", workdir, cwd=project, env=env)
    run.wait_for(r"^training .* parameters" if when == "compile" else r"^step 4 \(saved\)")
    run.proc.send_signal(sig)
    result = run.finish()
    line = assert_one_line(result, 128 + sig, sig.name)
    saved = re.search(r"at step (\d+): step \1 is saved", line)
    ckpts = wd.checkpoints(project / workdir)
    assert ckpts.latest_step() == (int(saved.group(1)) if saved else None), line
    ckpts.close()
    # Only a signal before the first step (while it compiles) has nothing to save.
    assert saved or (when == "compile" and "before the first step: nothing to save" in line)
    result = s2s(*TRAIN, "--workdir", workdir, cwd=project, env=env)
    assert result[0] == 0, result
    assert_same_state(project / workdir, straight)
    records = metric_records(project / workdir)
    assert len(records) == len(set(records))
    events = tensorboard_events(project / workdir)
    assert {e.step for e in events if e.summary.value} == {s for s, _ in records}
    if saved and int(saved.group(1)) % 2 == 0:  # steps after it had been logged: purged
        assert any(e.session_log.status == e.session_log.START for e in events)


def test_two_trainers_on_one_workdir(project, straight, env):
    """The second is refused while the first holds the workdir; a first one killed by
    SIGKILL leaves no stale lock behind."""
    workdir = "runs/two"
    first = Running(*TRAIN, "--workdir", workdir, cwd=project, env=env)
    first.wait_for(r"^step 4 \(saved\)")
    first.proc.send_signal(signal.SIGSTOP)  # holds the lock, mid-run, for as long as we like
    before = tree_hash(project / workdir)
    second = s2s(*TRAIN, "--workdir", workdir, cwd=project, env=env)
    assert_one_line(second, 2, "is being trained by pid")
    assert tree_hash(project / workdir) == before
    first.proc.kill()
    assert first.finish()[0] == -signal.SIGKILL
    result = s2s(*TRAIN, "--workdir", workdir, cwd=project, env=env)
    assert result[0] == 0, result
    assert_same_state(project / workdir, straight)


# -------------------------------------------------------------------------- damaged files


def translate_abc(workdir: Path, env, *options):
    """`s2s translate abc` on a workdir, run from the directory that holds it; greedy, which
    writes a few characters even with a model of 12 steps (beam search, a corpus run's default,
    prefers the empty output there)."""
    translate = ["translate", "--workdir", workdir.name, "--beam", "1", *options, "abc"]
    return s2s(*translate, cwd=workdir.parent, env=env)


DAMAGE = {
    "flipped": lambda step: [flip_bytes(f) for f in (step / "default" / "d").iterdir()],
    "truncated": lambda step: [
        os.truncate(f, f.stat().st_size // 3) for f in (step / "default" / "d").iterdir()
    ],
    "data-deleted": lambda step: shutil.rmtree(step / "default" / "d"),
    "metadata-deleted": lambda step: (step / "default" / "_METADATA").unlink(),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_latest_step_falls_back_to_the_intact_one(project, straight, env, damage):
    workdir = copy_of(straight, f"damaged-{damage}")
    DAMAGE[damage](workdir / "checkpoints" / "latest" / "12")
    rc, out, err = translate_abc(workdir, env, "--checkpoint", "latest")
    assert rc == 0 and out.strip() and "Traceback" not in err, err
    assert "latest/12" in err and "using latest step 8" in err, err
    if damage == "flipped":  # the same command resumes from step 8 and ends where it should
        result = s2s(*TRAIN, "--workdir", f"runs/{workdir.name}", cwd=project, env=env)
        assert result[0] == 0 and "resuming" in result[2] and "at step 8" in result[2], result
        assert list((workdir / "checkpoints" / "damaged").iterdir())
        assert_same_state(workdir, straight)


def test_a_damaged_best_blocks_nothing(project, straight, env):
    workdir = copy_of(straight, "damaged-best")
    (best,) = (workdir / "checkpoints" / "best").iterdir()
    (best / "metrics" / "metrics").write_text("{")
    rc, out, err = translate_abc(workdir, env)  # --checkpoint best, the default
    assert rc == 0 and out.strip() and "Traceback" not in err, err
    assert "best checkpoint" in err and "damaged" in err and "using the latest" in err, err
    rc, out, err = translate_abc(workdir, env, "--checkpoint", "latest")
    assert rc == 0 and out.strip() and err == f"{workdir}: step 12, the latest\n", err
    rc, out, err = s2s(
        "eval",
        "--workdir",
        workdir.name,
        "--split",
        "valid",
        "--limit",
        "4",
        cwd=workdir.parent,
        env=env,
    )
    assert rc == 0 and "exact_match" in json.loads(out), err
    result = s2s(*TRAIN, "--workdir", f"runs/{workdir.name}", "--steps", "16", cwd=project, env=env)
    assert result[0] == 0 and "moved it to" in result[2], result
    assert (workdir / "checkpoints" / "best" / "16").exists()


# Started with the interpreter (sitecustomize on PYTHONPATH): every intact checkpoint read
# returns half a second late, as from a slow disk, so that a restore that fails at one read
# leaves orbax's other reads pending; each one abandoned so is counted in ABANDONED.
SLOW_READS = """
import asyncio
import os

from orbax.checkpoint._src.serialization import serialization

_read = serialization._read_shard


async def _slow(*args, _open=open, _marker=os.environ["ABANDONED"], **kwargs):
    out = await _read(*args, **kwargs)
    try:
        await asyncio.sleep(0.5)
    except GeneratorExit:
        with _open(_marker, "a") as f:
            f.write("x")
        raise
    return out


serialization._read_shard = _slow
"""


def test_eval_past_a_damaged_step_names_it_in_one_line(project, straight, env, tmp_path):
    """A restore that fails at one read leaves orbax's other reads pending, and closing each
    one raised again: "Exception ignored in: <coroutine object ...>" and a 60-line TensorStore
    spec per read. stderr holds the damaged step (with tensorstore's reason), the fallback and
    what was loaded, nothing else."""
    workdir = copy_of(straight, "damaged-slow-disk")
    step = workdir / "checkpoints" / "latest" / "12"
    for f in (step / "default" / "ocdbt.process_0" / "d").iterdir():  # the arrays' data
        os.truncate(f, f.stat().st_size // 3)
    (tmp_path / "sitecustomize.py").write_text(SLOW_READS)
    abandoned = tmp_path / "abandoned"
    path = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    slow = dict(env, PYTHONPATH=path, ABANDONED=str(abandoned))
    evaluate = ["eval", "--workdir", workdir.name, "--checkpoint", "latest", "--split", "valid"]
    rc, out, err = s2s(*evaluate, "--limit", "4", "--beam", "1", cwd=workdir.parent, env=slow)
    assert rc == 0 and "exact_match" in json.loads(out), err
    assert abandoned.exists(), "no read was left pending: the case is not exercised"
    lines = err.splitlines()
    assert len(lines) == 3, err
    damaged, fallback, loaded = lines
    assert f"{workdir}/checkpoints/latest/12 is damaged: " in damaged, err
    assert "Error reading" in damaged and damaged.endswith("trying an older one"), err
    assert fallback.startswith("using latest step 8, the newest intact checkpoint"), err
    assert loaded == f"{workdir}: step 8, the latest", err


@pytest.mark.parametrize(
    "tamper, match",
    [
        ("swap", "differs from the vocabulary this model was trained with"),
        ("shorten", "tokens but the model was built with"),
    ],
)
def test_a_vocabulary_that_does_not_belong_is_refused(project, straight, env, tamper, match):
    workdir = copy_of(straight, f"vocab-{tamper}")
    name = wd.SRC_VOCAB if tamper == "swap" else wd.TGT_VOCAB
    vocab = json.loads((workdir / name).read_text())
    if tamper == "swap":
        vocab["tokens"][4], vocab["tokens"][5] = vocab["tokens"][5], vocab["tokens"][4]
    else:
        vocab["tokens"].pop()
    (workdir / name).write_text(json.dumps(vocab))
    before = tree_hash(workdir)
    assert_one_line(translate_abc(workdir, env), 2, match)
    assert_one_line(
        s2s(*TRAIN, "--workdir", f"runs/{workdir.name}", cwd=project, env=env), 2, match
    )
    assert tree_hash(workdir) == before


# --------------------------------------------------------------------------------- a full disk


FULL_DISK = textwrap.dedent("""
    set -u
    mount -t tmpfs -o size=6m tmpfs "$1" || exit 99
    cd "$2"
    cp -r runs/straight "$1/w" && rm -r "$1/w/checkpoints/latest/12"
    free=$(df -k --output=avail "$1" | tail -1)
    dd if=/dev/zero of="$1/fill" bs=1k count=$((free - 60)) 2>/dev/null
    "$3" train --config tiny.toml --train data/train.tsv --valid data/valid.tsv \\
        --no-progress --workdir "$1/w" 2>resume.err; echo "resume $?" >resume.rc
    dd if=/dev/zero of="$1/fill2" bs=4k 2>/dev/null
    "$3" train --config tiny.toml --train data/train.tsv --valid data/valid.tsv \\
        --no-progress --workdir "$1/new" 2>fresh.err; echo "fresh $?" >fresh.rc
    ls -A "$1/new" >fresh.files
    rm "$1/fill" "$1/fill2"
    "$3" train --config tiny.toml --train data/train.tsv --valid data/valid.tsv \\
        --no-progress --workdir "$1/w" 2>again.err; echo "again $?" >again.rc
    cp -r "$1/w" runs/after-full-disk
""")


def test_a_full_disk_stops_training_with_one_line_and_loses_nothing(
    project, straight, env, tmp_path
):
    """On a 6 MB tmpfs (in a user and mount namespace, so no root is needed), filled up."""
    on_small_filesystem(FULL_DISK, tmp_path, project, env, timeout=600)
    read = lambda name: (project / name).read_text()  # noqa: E731
    assert read("resume.rc").split() == ["resume", "1"], read("resume.err")
    assert_one_line((1, "", read("resume.err")), 1, "saving step 12")
    assert "No space left on device" in read("resume.err")
    assert read("fresh.rc").split() == ["fresh", "1"], read("fresh.err")
    assert_one_line((1, "", read("fresh.err")), 1, "No space left on device")
    assert "config.json" not in read("fresh.files").split()  # nothing half-written
    assert not [f for f in read("fresh.files").split() if ".tmp" in f]
    assert read("again.rc").split() == ["again", "0"], read("again.err")
    assert_same_state(project / "runs" / "after-full-disk", straight)


# ------------------------------------------------------------------ refusals change nothing


def test_a_failed_first_run_leaves_nothing_to_poison_the_next(project, env):
    """An empty training file is refused before anything is written; once fixed, the same
    command trains on the real data."""
    data = project / "poison"
    data.mkdir()
    (data / "train.tsv").write_text("\n  \n")
    args = [
        "train",
        "--config",
        "tiny.toml",
        "--train",
        "poison/train.tsv",
        "--valid",
        "data/valid.tsv",
        "--no-progress",
        "--workdir",
        "runs/poison",
        "--steps",
        "4",
    ]
    assert_one_line(s2s(*args, cwd=project, env=env), 2, "holds no source<TAB>target pairs")
    assert not (project / "runs" / "poison").exists()  # not even a lock file
    shutil.copy(project / "data" / "train.tsv", data / "train.tsv")
    rc, out, err = s2s(*args, cwd=project, env=env)
    assert rc == 0, err
    # The start line names the run's data and the devices it trains on.
    assert f"pairs from {data / 'train.tsv'}, on 1 cpu device (cpu); workdir" in err
    assert len(wd.load(project / "runs" / "poison").src_vocab) == 4 + len("abcdef")


def test_refused_commands_write_nothing(project, straight, env):
    workdir = copy_of(straight, "refusals")
    before = tree_hash(workdir)
    rel = f"runs/{workdir.name}"
    assert_one_line(
        s2s(
            "train",
            "--task",
            "numbers-en-fr",
            "--workdir",
            rel,
            "--steps",
            "80",
            cwd=project,
            env=env,
        ),
        2,
        "train.task='tsv', not 'numbers-en-fr'",
    )
    assert_one_line(
        s2s(*TRAIN, "--workdir", rel, "--set", "enc_hidden=32", cwd=project, env=env),
        2,
        "model.enc_hidden=12, not 32",
    )
    assert_one_line(
        s2s(*TRAIN, "--workdir", rel, "--set", "learning_rate=nan", cwd=project, env=env),
        2,
        "learning_rate must be a number >= 0",
    )
    assert tree_hash(workdir) == before


def test_checkpoints_without_their_config_are_not_overwritten(project, straight, env):
    workdir = copy_of(straight, "no-config")
    (workdir / wd.CONFIG).unlink()
    before = tree_hash(workdir)
    assert_one_line(
        s2s(*TRAIN, "--workdir", f"runs/{workdir.name}", cwd=project, env=env),
        2,
        "holds checkpoints but no config.json",
    )
    assert tree_hash(workdir) == before


def test_the_advice_after_a_non_finite_loss_can_be_followed(project, env):
    args = [
        *TRAIN,
        "--workdir",
        "runs/diverged",
        "--set",
        "learning_rate=1e38",
        "--set",
        "clip_norm=0",
        "--set",
        "schedule=constant",
        "--set",
        "warmup_steps=1",
        "--set",
        "eval_every=1",
        "--set",
        "log_every=1",
        "--set",
        "dropout=0",
    ]
    line = assert_one_line(
        s2s(*args, cwd=project, env=env), 2, "last good checkpoint (step 1) is kept"
    )
    advice = re.search(r"`s2s (train [^`]+)`", line).group(1).split()
    assert advice[-1] == "learning_rate=5e+37"
    # Taken literally it is accepted (and, the rate still being absurd, diverges again).
    taken = s2s(*advice, "--no-progress", cwd=project, env=env)
    assert "train.learning_rate changes from 1e+38 to 5e+37 at step 1" in taken[2], taken
    assert_one_line(taken, 2, "non-finite")
    fixed = s2s(
        *advice[:-1], "learning_rate=0.001", "--no-progress", "--steps", "3", cwd=project, env=env
    )
    assert fixed[0] == 0, fixed
    changes = json.loads((project / "runs" / "diverged" / wd.CONFIG).read_text())["changes"]
    assert changes == [
        {"step": 1, "field": "train.learning_rate", "old": 1e38, "new": 5e37},
        {"step": 1, "field": "train.learning_rate", "old": 5e37, "new": 0.001},
    ]


@pytest.mark.parametrize(
    "args, match",
    [
        (["--set", "learning_rate=-1"], "learning_rate must be a number >= 0"),
        (["--set", "label_smoothing=2.0"], "label_smoothing must be in [0, 1)"),
        (["--set", "clip_norm=-1"], "clip_norm must be a number >= 0"),
        (["--steps", "-5"], "warmup_steps, save_every and batch_tokens must be >= 0"),
        (["--valid", "poison-empty.tsv"], "holds no source<TAB>target pairs"),
        (["--set", "metrics=wer,meteor"], "metrics='wer,meteor': give distinct names"),
        (["--set", "best_metric=wer"], "best_metric='wer' is not computed for task train.tsv"),
    ],
)
def test_bad_training_options_are_refused_before_anything_is_written(project, env, args, match):
    (project / "poison-empty.tsv").write_text("")
    workdir = project / "runs" / "bad-options"
    assert_one_line(
        s2s(*TRAIN, "--workdir", "runs/bad-options", *args, cwd=project, env=env), 2, match
    )
    assert not workdir.exists()


@pytest.mark.parametrize(
    "setting, match",
    [
        ("dropout=1.5", "dropout must be in [0, 1)"),
        ("batch_size=0", "batch_size must be >= 1"),
        ("weight_decay=nan", "weight_decay must be a number >= 0"),
        ("max_len_ratio=inf", "max_len_ratio must be a number >= 0"),
        ("max_len_offset=-1", "max_len_offset must be a number >= 0"),
        ("steps=many", "invalid literal for int()"),
        ("optimizer=sgd", "optimizer must be one of"),
        ("eval_every=0", "eval_every must be >= 1"),
        ("bucket_multiple=0", "bucket_multiple must be >= 1"),
    ],
)
def test_every_bad_setting_is_one_line_before_jax_starts_work(
    project, monkeypatch, capsys, setting, match
):
    """In-process (the same `main` the `s2s` script calls), relative paths, fast."""
    from s2s_jax import cli

    monkeypatch.chdir(project)
    code = cli.main([*TRAIN, "--workdir", "runs/bad-settings", "--set", setting])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("s2s:")]
    assert len(lines) == 1 and match in lines[0], err
    assert not (project / "runs" / "bad-settings").exists()


def test_bad_inference_input(project, straight, env):
    runs = project / "runs"
    for command in ("translate", "score"):
        assert_one_line(
            s2s(
                command,
                "--workdir",
                "straight",
                cwd=runs,
                env=env,
                stdin=b"abc\tcba\n\xff\xfe\tx\n",
            ),
            2,
            "stdin:2: not UTF-8",
        )
    rc, _, err = s2s("eval", "--workdir", "straight", "--limit", "-1", cwd=runs, env=env)
    assert rc == 2 and "must be >= 1" in err and "Traceback" not in err
    assert_one_line(
        s2s("translate", "--workdir", "nowhere", "abc", cwd=runs, env=env),
        2,
        "no such workdir: " + str(runs / "nowhere") + " does not exist",
    )
    # A folder inside a workdir (its checkpoints, say) names the workdir.
    assert_one_line(
        s2s("translate", "--workdir", "straight/checkpoints", "abc", cwd=runs, env=env),
        2,
        f"is inside the workdir {runs / 'straight'}: give --workdir {runs / 'straight'}",
    )
