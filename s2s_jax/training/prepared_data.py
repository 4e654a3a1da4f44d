"""`s2s prepare`: a training corpus read, its vocabularies built and its pairs encoded once,
into a folder that `s2s train --train DIR` opens in milliseconds whatever the corpus's size
(memory-mapped: each process reads only the rows of its batches).

    DIR/manifest.json     format; the source files (path, size, SHA-256); the vocabulary
                          settings; counts (pairs, skipped for an empty side); written last, so
                          a folder without it is not prepared data
    DIR/vocab.src.json    the vocabularies, as a workdir holds them
    DIR/vocab.tgt.json
    DIR/train.*           the encoded pairs (`data.token_store`)

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
import itertools
import json
import multiprocessing
import os
import shutil
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from s2s_jax.data import Vocab
from s2s_jax.data.corpus import MANIFEST, corpus_chunks, corpus_files, is_prepared
from s2s_jax.data.survey import survey
from s2s_jax.data.token_store import TokenStore, token_dtype, write_chunks
from s2s_jax.errors import ConfigError, DataError
from s2s_jax.run import config, data_files
from s2s_jax.run import workdir as wd
from s2s_jax.training.vocabularies import build_vocabs, choose_kinds

FORMAT = 1
STORE = "train"
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
POOL_FROM = 100_000  # fewer pairs are encoded in this process (starting workers costs more)


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
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    partial.mkdir(parents=True)
    try:
        src_vocab.save(partial / wd.SRC_VOCAB)
        tgt_vocab.save(partial / wd.TGT_VOCAB)
        dtype = token_dtype(max(len(src_vocab), len(tgt_vocab)))
        chunks = _encoded_chunks(spec, pairs, partial, workers)
        store = write_chunks(partial, STORE, chunks, dtype)
        manifest = {
            "format": FORMAT,
            "source": data_files.describe(spec),
            "settings": {name: getattr(train_cfg, name) for name in VOCAB_FIELDS},
            "pairs": store["pairs"],
            "tokens": store["tokens"],
            "skipped_empty": skipped_empty,
            "vocab_sizes": [len(src_vocab), len(tgt_vocab)],
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # nothing that passes for prepared data
        raise
    return manifest


def _encoded_chunks(spec: str, pairs: int, folder: Path, workers: int | None):
    """`(src_len, tgt_len, ids)` of each chunk of the corpus's `pairs` pairs, in order; in
    worker processes (as many as cores) for a large corpus, a few chunks ahead of the writer."""
    chunks = (chunk.pairs for chunk in corpus_chunks(spec, CHUNK_PAIRS))
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=pairs, unit="pair", desc="encoding", file=sys.stderr, disable=None)
    if workers == 1 or pairs < POOL_FROM:
        _load_vocabs(folder)
        for chunk in chunks:
            yield _encode(chunk)
            bar.update(len(chunk))
    else:
        # spawn: a fork would copy this process's JAX threads
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=context, initializer=_load_vocabs, initargs=(folder,)
        ) as pool:
            ahead = collections.deque()  # bounded: `pool.map` would read the whole corpus
            for chunk in itertools.chain(chunks, [None]):
                if chunk is not None:
                    ahead.append((len(chunk), pool.submit(_encode, chunk)))
                while ahead and (chunk is None or len(ahead) > 2 * workers):
                    size, encoded = ahead.popleft()
                    yield encoded.result()
                    bar.update(size)
    bar.close()


_VOCABS: tuple[Vocab, Vocab] | None = None  # a worker's, loaded once by `_load_vocabs`


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
    settings = read_manifest(folder)["settings"]
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
    """The encoded pairs of a prepared folder, memory-mapped."""
    read_manifest(folder)
    return TokenStore.open(folder, STORE)


def read_manifest(folder: str | Path) -> dict:
    """A prepared folder's manifest, of this version's format."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{folder}: not prepared data (its {MANIFEST}: {e})") from None
    if manifest.get("format") != FORMAT:
        raise DataError(
            f"{folder} was prepared in format {manifest.get('format')}; this version reads "
            f"format {FORMAT}: run s2s prepare again"
        )
    return manifest


def within_limits(store: TokenStore, train_cfg: config.TrainConfig) -> tuple[TokenStore, int]:
    """The pairs within the run's length limits (the target with its `</s>`), and how many
    are not."""
    fits = (store.src_len <= train_cfg.max_src_len) & (store.tgt_len + 1 <= train_cfg.max_tgt_len)
    if fits.all():
        return store, 0  # no copy of the index arrays
    kept = np.flatnonzero(fits)
    return store.select(kept), len(store) - len(kept)
