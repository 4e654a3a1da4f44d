"""A prepared folder under damage and `s2s prepare` at its edges, through the real `s2s`
command from the user's directory with relative paths.

Every damage of the table is refused by `s2s prepare --verify` and by `s2s train` before its
first step, in one line that names the file; damage that only a batch reads stops the run with
its last checkpoint kept; a killed, interrupted, raced or starved prepare leaves nothing that
passes for data.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import test_faults
from test_faults import S2S, TINY, assert_one_line, on_small_filesystem, s2s

from s2s_jax.data import integrity
from s2s_jax.run import config
from s2s_jax.run import workdir as wd
from s2s_jax.training import prepared_data

env = test_faults.env
TRAIN = ["train", "--config", "tiny.toml", "--valid", "data/valid.tsv", "--no-progress"]


def words(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list("abcdefg"), size=rng.integers(2, 9))) for _ in range(n)]


def write_pairs(path: Path, sources: list[str]) -> None:
    """Each word and its reversal in capitals: the two sides' vocabularies differ."""
    path.write_text("".join(f"{w}\t{w[::-1].upper()}\n" for w in sources))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A user's directory: a prepared folder `prep` (its token file in 64-byte chunks, so that
    each batch reads a few of many) and another, `other`, of other pairs."""
    root = tmp_path_factory.mktemp("prepared")
    (root / "data").mkdir()
    write_pairs(root / "data" / "train.tsv", words(300, 0))
    write_pairs(root / "data" / "other.tsv", words(250, 1))
    write_pairs(root / "data" / "valid.tsv", words(20, 2))
    (root / "tiny.toml").write_text(TINY)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(integrity, "CHUNK_BYTES", 64)
        for name in ("train", "other"):
            train_cfg = config.TrainConfig(
                task=config.TSV_TASK,
                train_file=str(root / "data" / f"{name}.tsv"),
                valid_file=str(root / "data" / "valid.tsv"),
            )
            out = root / "data" / ("prep" if name == "train" else "other")
            prepared_data.prepare_corpus(train_cfg, out, log=lambda line: None)
    return root


def tokens(folder: Path) -> np.memmap:
    meta = json.loads((folder / "train.json").read_text())
    return np.memmap(folder / "train.tokens", meta["dtype"], "r+")


def edit_json(path: Path, edit) -> None:
    value = json.loads(path.read_text())
    edit(value)
    path.write_text(json.dumps(value) + "\n")


def set_index(folder: Path, field: str, change) -> None:
    path = folder / f"train.{field}.npy"
    array = np.load(path)
    np.save(path, change(array))


def swap_in(names):
    def damage(folder: Path) -> None:
        for name in names:
            shutil.copy(folder.parent / "other" / name, folder / name)

    return damage


def swap_vocabularies(folder: Path) -> None:
    src, tgt = folder / "vocab.src.json", folder / "vocab.tgt.json"
    text = src.read_text()
    src.write_text(tgt.read_text())
    tgt.write_text(text)


ALL_BUT_MANIFEST = ("vocab.src.json", "vocab.tgt.json", "train.json", "train.tokens") + tuple(
    f"train.{f}.npy" for f in ("offsets", "src_len", "tgt_len")
)
SEALED = "manifest.json was edited after s2s prepare wrote it"
TOKENS_DIFFER = "differ from what was written (SHA-256 of chunk"  # the chunk a batch reads first
# (what is done to the folder, what the one-line refusal says)
DAMAGES = {
    "ids past the vocabulary, one a chunk": (
        lambda f: tokens(f).__setitem__(slice(1, None, 32), 60_000),  # 32 ids: 64 bytes
        TOKENS_DIFFER,
    ),
    "half the ids replaced by other valid ids": (
        lambda f: tokens(f).__setitem__(slice(0, None, 2), 5),
        TOKENS_DIFFER,
    ),
    "the token file zeroed": (lambda f: tokens(f).__setitem__(slice(None), 0), TOKENS_DIFFER),
    "the token file cut short": (
        lambda f: os.truncate(f / "train.tokens", 100),
        "train.tokens holds 100 bytes, but train.json says",
    ),
    "the token file gone": (
        lambda f: (f / "train.tokens").unlink(),
        "train.tokens: cannot read it",
    ),
    "the manifest's pair count": (
        lambda f: edit_json(f / "manifest.json", lambda m: m.update(pairs=m["pairs"] - 1)),
        SEALED,
    ),
    "the manifest's token count": (
        lambda f: edit_json(f / "manifest.json", lambda m: m.update(tokens=m["tokens"] + 9)),
        SEALED,
    ),
    "the manifest's vocabulary sizes": (
        lambda f: edit_json(f / "manifest.json", lambda m: m.update(vocab_sizes=[9, 9])),
        SEALED,
    ),
    "the manifest's vocabulary kind": (
        lambda f: edit_json(
            f / "manifest.json", lambda m: m["settings"].update(src_vocab_kind="word")
        ),
        SEALED,
    ),
    "the manifest unreadable": (
        lambda f: (f / "manifest.json").write_text('{"format": 2,'),
        "not prepared data (its manifest.json",
    ),
    "the store's dtype": (
        lambda f: edit_json(f / "train.json", lambda m: m.update(dtype="uint32")),
        "train.json: its SHA-256 is not the one of its manifest.json",
    ),
    "the index's dtype": (
        lambda f: set_index(f, "src_len", lambda a: a.astype(np.int64)),
        "train.src_len.npy holds 2,528 bytes, not the 1,328 of its manifest.json",
    ),
    "every source length 60": (
        lambda f: set_index(f, "src_len", lambda a: np.full_like(a, 60)),
        "train.src_len.npy: its SHA-256 is not the one of its manifest.json",
    ),
    "offsets past the end": (
        lambda f: set_index(f, "offsets", lambda a: np.where(np.arange(len(a)) % 7, a, 10**9)),
        "train.offsets.npy: its SHA-256 is not the one of its manifest.json",
    ),
    "the vocabularies swapped": (
        swap_vocabularies,
        "vocab.src.json: its SHA-256 is not the one of its manifest.json",
    ),
    "another folder's manifest": (
        swap_in(["manifest.json"]),
        "damaged/vocab.src.json: its SHA-256 is not the one of its manifest.json",
    ),
    "every file but the manifest from another folder": (
        swap_in(ALL_BUT_MANIFEST),
        "damaged/vocab.src.json: its SHA-256 is not the one of its manifest.json",
    ),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_prepared_folder_is_refused_before_the_first_step(project, env, damage):
    """`s2s prepare --verify` and `s2s train --data` each refuse it in one line; the run
    writes no checkpoint."""
    do, message = DAMAGES[damage]
    folder = project / "data" / "damaged"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(project / "data" / "prep", folder)
    do(folder)
    assert_one_line(s2s("prepare", "--verify", "data/damaged", cwd=project, env=env), 2, message)
    workdir = project / "runs" / "damaged"
    shutil.rmtree(workdir, ignore_errors=True)
    refusal = s2s(*TRAIN, "--data", "data/damaged", "--workdir", "runs/damaged", cwd=project,
                  env=env)  # fmt: skip
    assert_one_line(refusal, 2, message)
    assert not [p for p in workdir.rglob("*") if p.name.isdigit()]  # no step saved


def test_the_intact_folder_verifies_and_trains(project, env):
    """The same folder undamaged: verified in full, trained on."""
    rc, out, err = s2s("prepare", "--verify", "data/prep", cwd=project, env=env)
    assert rc == 0 and json.loads(out)["pairs"] == 300, err
    assert err == ""


def test_damage_a_batch_reads_later_stops_the_run_keeping_its_checkpoint(project, env):
    """A run on the folder saves step 4; a chunk in the middle of the token file is then
    changed in place (the same path, the manifest untouched). Resumed, the run trains on the
    chunks it has checked and stops with one line naming those bytes when a batch first reads
    them (within an epoch: 38 steps), its checkpoints up to then kept."""
    folder = project / "data" / "late"
    shutil.copytree(project / "data" / "prep", folder)
    run = [*TRAIN, "--data", "data/late", "--workdir", "runs/late"]
    rc, _, err = s2s(*run, "--steps", "4", cwd=project, env=env)
    assert rc == 0, err
    ids = tokens(folder)
    middle = len(ids) // 2
    ids[middle : middle + 8] = ids[middle + 8 : middle + 16][::-1].copy()
    ids.flush()
    chunk = middle * ids.itemsize // 64
    line = assert_one_line(s2s(*run, "--steps", "60", cwd=project, env=env), 2, "train.tokens")
    assert f"bytes {chunk * 64:,} to {chunk * 64 + 64:,} differ from what was written" in line
    ckpts = wd.checkpoints(project / "runs" / "late")
    try:
        assert 4 <= ckpts.latest_step() < 60
    finally:
        ckpts.close()


# --------------------------------------------------------------------- s2s prepare's edges


@pytest.fixture(scope="module")
def big(project):
    """60,000 pairs: a prepare that takes a few seconds, in 3 chunks."""
    write_pairs(project / "data" / "big.tsv", words(60_000, 3))
    return "data/big.tsv"


def partials(root: Path, name: str) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(f".{name}.partial-"))


def test_ctrl_c_stops_a_prepare_in_workers_with_one_line(project, env, big):
    """Ctrl-C reaches the whole process group (the command and its encoding workers): one
    line, exit 130, no traceback from any worker, no folder left."""
    proc = subprocess.Popen(
        [S2S, "prepare", "--train", big, "--out", "data/cut", "--workers", "2"],
        cwd=project,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not partials(project / "data", "cut") and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # the workers are starting or encoding
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert [line for line in err.splitlines() if line.startswith("s2s:")] == [
        "s2s: interrupted by SIGINT"
    ], err
    assert not (project / "data" / "cut").exists() and not partials(project / "data", "cut")


def test_a_killed_prepares_leftover_is_cleared_by_the_next(project, env):
    """kill -9 leaves `.NAME.partial-PID`; the next prepare of that name removes it (its
    process is gone) and says so, and keeps a live process's."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    data = project / "data"
    stale, live = data / f".again.partial-{gone.pid}", data / f".again.partial-{os.getpid()}"
    for folder in (stale, live):
        folder.mkdir()
        (folder / "train.tokens").write_bytes(b"\0" * 10)
    rc, _, err = s2s("prepare", "--train", "data/train.tsv", "--out", "data/again", cwd=project,
                     env=env)  # fmt: skip
    assert rc == 0, err
    assert (
        f"removed data/{stale.name}, left by an earlier prepare" in err
        and not stale.exists()
        and live.exists()
    ), err
    shutil.rmtree(live)


def test_two_prepares_into_one_folder(project, env, big):
    """One prepare finishes while another of the same `--out` runs (held with SIGSTOP once it
    has begun writing): the later says the folder was written meanwhile (exit 2, one line) and
    leaves the first one's folder as it was."""
    slow = subprocess.Popen(
        [S2S, "prepare", "--train", big, "--out", "data/raced"],
        cwd=project,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not partials(project / "data", "raced") and time.monotonic() < deadline:
        time.sleep(0.01)
    slow.send_signal(signal.SIGSTOP)
    try:
        rc, _, err = s2s("prepare", "--train", "data/train.tsv", "--out", "data/raced",
                         cwd=project, env=env)  # fmt: skip
        assert rc == 0, err
    finally:
        slow.send_signal(signal.SIGCONT)
    out, err = slow.communicate(timeout=300)
    assert_one_line((slow.returncode, out, err), 2, "data/raced was written by another process")
    rc, out, err = s2s("prepare", "--verify", "data/raced", cwd=project, env=env)
    assert rc == 0 and json.loads(out)["pairs"] == 300, err
    assert not partials(project / "data", "raced")


FULL_DISK = """
set -e
mount -t tmpfs -o size=256k tmpfs "$1" || exit 99
cd "$2"
"$3" prepare --train data/big.tsv --out "$1/prep" 2>"$1.err" && echo 0 >"$1.rc" || echo $? >"$1.rc"
ls -A "$1" >"$1.files"
"""


def test_a_full_disk_names_the_file(project, env, big, tmp_path):
    """On a 256 KB tmpfs (in a user and mount namespace): one line naming the file and "no
    space left on device", exit 1, nothing left on the filesystem."""
    mount = on_small_filesystem(FULL_DISK, tmp_path, project, env, timeout=300)
    read = lambda suffix: Path(f"{mount}{suffix}").read_text()  # noqa: E731
    assert read(".rc").strip() == "1", read(".err")
    assert_one_line((1, "", read(".err")), 1, "no space left on device (writing train.tokens)")
    assert read(".files").split() == []
