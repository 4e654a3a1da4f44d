"""`s2s prepare`: a training corpus read, its vocabularies built and its pairs encoded once,
into a folder that `s2s train --train DIR` opens in milliseconds whatever the corpus's size
(memory-mapped: each process reads only the rows of its batches).

    DIR/manifest.json     format; the source files (path, size, SHA-256); the vocabulary
                          settings; counts (pairs, skipped for an empty side); the size and
                          SHA-256 of every other file; sealed by a digest of itself; written
                          last, so a folder without it is not prepared data
    DIR/vocab.src.json    the vocabularies, as a workdir holds them
    DIR/vocab.tgt.json
    DIR/train.*           the encoded pairs (`data.token_store`; `train.json` holds a SHA-256
                          per chunk of `train.tokens`)

A folder proves itself when it is opened (`prepared_checks`): a file changed after it was
written is refused, named, before the first step.

Every pair is kept whatever its length: a run's `max_src_len` / `max_tgt_len` choose among them,
so that changing them needs no new prepare.

The corpus is read twice, a chunk at a time, never whole: once to survey it for the
vocabularies (`data.survey`: counts and a bounded sample), once to encode it; memory stays flat
in the corpus's size.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import errno
import glob
import itertools
import json
import multiprocessing
import os
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from s2s_jax.data import Vocab
from s2s_jax.data.corpus import MANIFEST, corpus_chunks, corpus_files, is_prepared
from s2s_jax.data.survey import survey
from s2s_jax.data.token_store import TokenStore, token_dtype, write_chunks
from s2s_jax.errors import ConfigError, DataError, WriteError
from s2s_jax.run import config, data_files
from s2s_jax.run import workdir as wd
from s2s_jax.training.prepared_checks import (
    FORMAT,
    STORE,
    STORE_FILES,
    VOCABS,
    check_folder,
    describe_files,
    open_checked,
    seal,
)
from s2s_jax.training.vocabularies import build_vocabs, choose_kinds

PARTIAL = ".{name}.partial-"  # + the process id: a prepare's folder until it is complete
# The settings a prepared folder fixes: a run on it takes them from its manifest.
VOCAB_FIELDS = (
    "src_vocab_kind",
    "tgt_vocab_kind",
    "vocab_size",
    "src_vocab_size",
    "tgt_vocab_size",
    "src_vocab_file",
    "tgt_vocab_file",
    "joint_vocab",
    "sp_model_type",
    "vocab_min_count",
)
CHUNK_PAIRS = 20_000  # pairs a worker encodes at a time
POOL_FROM = 100_000  # fewer pairs are encoded in this process (starting workers costs more),
# unless the workers were asked for


def prepare_corpus(train_cfg: config.TrainConfig, out: str | Path, *, log=print, workers=None):
    """Reads `train_cfg.train_file`, builds the vocabularies its settings name and writes the
    folder `out` (see the module's docstring). Returns its manifest.

    Raises:
      DataError: unreadable data, or `out` exists already.
    """
    out = Path(out)
    if is_prepared(train_cfg.train_file):
        raise DataError(f"{train_cfg.train_file} is prepared data already: train on it")
    if out.exists():
        what = "prepared data already" if is_prepared(out) else "files"
        raise DataError(f"{out} holds {what}: prepare into a new folder")
    spec = train_cfg.train_file
    read = tqdm(unit="pair", desc="reading", file=sys.stderr, disable=None)
    skipped_empty = 0

    def pairs_read():
        nonlocal skipped_empty
        for chunk in corpus_chunks(spec):
            skipped_empty += len(chunk.empty)
            read.update(len(chunk.pairs))
            yield chunk.pairs

    sides = survey(pairs_read())
    read.close()
    pairs = sides[0].texts
    if not pairs:
        what = "source<TAB>target" if len(corpus_files(spec)) == 1 else "non-empty line"
        raise DataError(f"{spec} holds no {what} pairs (the train split)")
    train_cfg, notes = choose_kinds(sides, train_cfg)
    for note in notes:
        log(note)
    src_vocab, tgt_vocab = build_vocabs(sides, train_cfg, ("char", "char"))
    del sides  # the sample: up to a million texts a side
    kinds = dict(src_vocab_kind=src_vocab.kind, tgt_vocab_kind=tgt_vocab.kind)
    train_cfg = dataclasses.replace(train_cfg, **kinds)
    _remove_stale_partials(out, log)
    partial = out.with_name(f"{PARTIAL.format(name=out.name)}{os.getpid()}")
    partial.mkdir(parents=True)
    try:
        src_vocab.save(partial / wd.SRC_VOCAB)
        tgt_vocab.save(partial / wd.TGT_VOCAB)
        dtype = token_dtype(max(len(src_vocab), len(tgt_vocab)))
        chunks = _encoded_chunks(spec, pairs, partial, workers)
        store = write_chunks(partial, STORE, chunks, dtype)
        manifest = seal({
            "format": FORMAT,
            "source": data_files.describe(spec),
            "settings": {name: getattr(train_cfg, name) for name in VOCAB_FIELDS},
            "pairs": store["pairs"],
            "tokens": store["tokens"],
            "skipped_empty": skipped_empty,
            "vocab_sizes": [len(src_vocab), len(tgt_vocab)],
            "files": describe_files(partial, VOCABS + STORE_FILES),
        })  # fmt: skip
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        _publish(partial, out)
    except BaseException as e:
        shutil.rmtree(partial, ignore_errors=True)  # nothing that passes for prepared data
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            written = f" (writing {Path(e.filename).name})" if e.filename else ""
            raise WriteError(
                f"{out}: no space left on device{written}; nothing was kept: free some space "
                "and prepare again"
            ) from None
        raise
    return manifest


def _publish(partial: Path, out: Path) -> None:
    """Renames the finished folder to `out`, unless another prepare got there first."""
    try:
        os.replace(partial, out)
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            raise
        raise DataError(
            f"{out} was written by another process while this prepare ran: this one's work is "
            "discarded; train on that folder, or prepare into a new --out"
        ) from None


def _remove_stale_partials(out: Path, log) -> None:
    """Removes the partial folders of earlier prepares of `out` whose process is gone (killed
    with SIGKILL, or the machine stopped): one still running keeps its own."""
    for stale in out.parent.glob(PARTIAL.format(name=glob.escape(out.name)) + "*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
            log(f"removed {stale}, left by an earlier prepare (process {pid}) that is gone")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's
    return True


def _encoded_chunks(spec: str, pairs: int, folder: Path, workers: int | None):
    """`(src_len, tgt_len, ids)` of each chunk of the corpus's `pairs` pairs, in order; in
    worker processes (as many as cores) for a large corpus, a few chunks ahead of the writer."""
    chunks = (chunk.pairs for chunk in corpus_chunks(spec, CHUNK_PAIRS))
    small = workers is None and pairs < POOL_FROM  # asked for workers: they are used
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=pairs, unit="pair", desc="encoding", file=sys.stderr, disable=None)
    if workers == 1 or small:
        _load_vocabs(folder)
        for chunk in chunks:
            yield _encode(chunk)
            bar.update(len(chunk))
    else:
        # spawn: a fork would copy this process's JAX threads
        context = multiprocessing.get_context("spawn")
        pool = concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=context, initializer=_start_worker, initargs=(folder,)
        )
        try:
            ahead = collections.deque()  # bounded: `pool.map` would read the whole corpus
            for chunk in itertools.chain(chunks, [None]):
                if chunk is not None:
                    ahead.append((len(chunk), _submit_shielded(pool, chunk)))
                while ahead and (chunk is None or len(ahead) > 2 * workers):
                    size, encoded = ahead.popleft()
                    yield encoded.result()
                    bar.update(size)
        finally:  # a signal or an error: what is queued is not encoded for nothing
            pool.shutdown(cancel_futures=True)
    bar.close()


_VOCABS: tuple[Vocab, Vocab] | None = None  # a worker's, loaded once by `_load_vocabs`


def _submit_shielded(pool, chunk):
    """`pool.submit(_encode, chunk)` with SIGINT blocked while it may start a worker, which
    inherits the mask: Ctrl-C, sent to the whole process group, then never interrupts a worker
    as it starts (a traceback each). This process takes a Ctrl-C sent meanwhile on return."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return pool.submit(_encode, chunk)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _start_worker(folder: Path) -> None:
    """A worker leaves Ctrl-C to this process, which stops the pool."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a pending one is dropped
    _load_vocabs(folder)


def _load_vocabs(folder: Path) -> None:
    global _VOCABS
    _VOCABS = Vocab.load(folder / wd.SRC_VOCAB), Vocab.load(folder / wd.TGT_VOCAB)


def _encode(chunk) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(src_len, tgt_len, ids)` of a chunk of pairs: each pair's source ids, then its
    target's, end to end."""
    src_vocab, tgt_vocab = _VOCABS
    src_len, src_ids = src_vocab.encode_many([p[0] for p in chunk])
    tgt_len, tgt_ids = tgt_vocab.encode_many([p[1] for p in chunk])
    src_len, tgt_len = np.array(src_len, np.int32), np.array(tgt_len, np.int32)
    # Interleave (source 0, target 0, source 1, ...): a mask of the source positions places
    # all the sources' ids at once, and the targets' in the rest.
    lengths = np.stack([src_len, tgt_len], 1).reshape(-1)
    is_src = np.repeat(np.tile(np.array([True, False]), len(chunk)), lengths)
    ids = np.empty(len(is_src), np.int64)
    ids[is_src] = src_ids
    ids[~is_src] = tgt_ids
    return src_len, tgt_len, ids


def prepared_vocabularies(train_cfg: config.TrainConfig):
    """A new run's vocabularies from the prepared folder `train_cfg.train_file`, and its
    configuration with the folder's vocabulary settings: `(src_vocab, tgt_vocab, train_cfg)`.
    A setting the run names otherwise is refused (the folder fixed it)."""
    folder = Path(train_cfg.train_file)
    settings = check_folder(folder, VOCABS)["settings"]
    default = config.TrainConfig()
    for name in VOCAB_FIELDS:
        mine = getattr(train_cfg, name)
        if mine != getattr(default, name) and mine != settings[name]:
            raise ConfigError(
                f"{name}={mine!r}, but {folder} was prepared with {name}="
                f"{settings[name]!r}: drop the setting, or prepare the data again with it"
            )
    vocabs = Vocab.load(folder / wd.SRC_VOCAB), Vocab.load(folder / wd.TGT_VOCAB)
    return *vocabs, dataclasses.replace(train_cfg, **settings)


def open_store(folder: str | Path) -> TokenStore:
    """The encoded pairs of a prepared folder, memory-mapped and checked (`prepared_checks`)."""
    return open_checked(folder)


def within_limits(store: TokenStore, train_cfg: config.TrainConfig) -> tuple[TokenStore, int]:
    """The pairs within the run's length limits (the target with its `</s>`), and how many
    are not."""
    fits = (store.src_len <= train_cfg.max_src_len) & (store.tgt_len + 1 <= train_cfg.max_tgt_len)
    if fits.all():
        return store, 0  # no copy of the index arrays
    kept = np.flatnonzero(fits)
    return store.select(kept), len(store) - len(kept)
