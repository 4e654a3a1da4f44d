"""A prepared folder checked against its manifest, so that data changed after `s2s prepare`
wrote it is refused, with the file and what differs named, before a step trains on it.

The manifest is sealed (the SHA-256 of its own content, `seal`) and holds the size and SHA-256
of every other file but the token file, whose `train.json` holds a digest per 4 MiB chunk
(`data.integrity`). Opening a folder checks what is cheap (`check_folder`: the seal, those
files, the vocabularies against the counts and kinds; the token store's index in
`TokenStore.open`); each token chunk is checked the first time a batch reads it, in the
prefetch thread. `verify_folder` (`s2s prepare --verify`) checks everything at once.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from s2s_jax.data import Vocab
from s2s_jax.data.corpus import MANIFEST
from s2s_jax.data.integrity import file_sha256
from s2s_jax.data.token_store import TokenStore
from s2s_jax.data.vocab import SRC_VOCAB, TGT_VOCAB
from s2s_jax.errors import DataError

FORMAT = 2
STORE = "train"
VOCABS = (SRC_VOCAB, TGT_VOCAB)
STORE_FILES = tuple(f"{STORE}.{suffix}" for suffix in ("json", "offsets.npy", "src_len.npy",
                                                       "tgt_len.npy"))  # fmt: skip
VERIFY_PAIRS = 1 << 20  # pairs whose ids `verify_folder` checks at a time
AGAIN = "prepare the data again (s2s prepare)"


def seal(manifest: dict) -> dict:
    """The manifest with its `sha256`: the digest of the rest of it."""
    body = {k: v for k, v in manifest.items() if k != "sha256"}
    text = json.dumps(body, sort_keys=True, ensure_ascii=False).encode()
    return {**body, "sha256": hashlib.sha256(text).hexdigest()}


def describe_files(folder: Path, names) -> dict:
    """`{name: {"bytes": ..., "sha256": ...}}` of the files `names` in `folder`."""
    return {
        name: {"bytes": (folder / name).stat().st_size, "sha256": file_sha256(folder / name)}
        for name in names
    }


def read_manifest(folder: str | Path) -> dict:
    """A prepared folder's manifest, of this version's format and as `s2s prepare` wrote it."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{folder}: not prepared data (its {MANIFEST}: {e})") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{folder}: not prepared data (its {MANIFEST} is not a JSON object)")
    if manifest.get("format") != FORMAT:
        found = manifest.get("format")
        raise DataError(
            f"{folder} was prepared in format {found}; this version reads format {FORMAT}: {AGAIN}"
        )
    if seal(manifest).get("sha256") != manifest.get("sha256"):
        raise DataError(f"{path} was edited after s2s prepare wrote it (its seal differs): {AGAIN}")
    files, sizes = manifest.get("files"), manifest.get("vocab_sizes")
    if not (
        isinstance(files, dict)
        and set(VOCABS + STORE_FILES) <= set(files)
        and isinstance(manifest.get("settings"), dict)
        and isinstance(sizes, list)
        and len(sizes) == 2
        and all(isinstance(n, int) and n > 0 for n in sizes)
    ):
        raise DataError(f"{path}: not a manifest this version wrote (fields missing): {AGAIN}")
    return manifest


def check_folder(folder: str | Path, names=VOCABS + STORE_FILES) -> dict:
    """Checks the sealed manifest and the files `names` (sizes, then SHA-256) against it, and
    the vocabularies against its counts and kinds. Returns the manifest."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    files = manifest["files"]
    for name in names:
        path, want = folder / name, files[name]
        try:
            size = path.stat().st_size
        except OSError as e:
            raise DataError(f"{path}: {e.strerror}; {AGAIN}") from None
        if size != want["bytes"]:
            raise DataError(
                f"{path} holds {size:,} bytes, not the {want['bytes']:,} of its {MANIFEST}: it "
                f"was changed or swapped after s2s prepare wrote it; {AGAIN}"
            )
        if file_sha256(path) != want["sha256"]:
            raise DataError(
                f"{path}: its SHA-256 is not the one of its {MANIFEST}: it was changed or "
                f"swapped after s2s prepare wrote it; {AGAIN}"
            )
    if set(VOCABS) <= set(names):
        _check_vocabs(folder, manifest)
    return manifest


def _check_vocabs(folder: Path, manifest: dict) -> None:
    """The vocabularies have the sizes and kinds the manifest records."""
    for side, name, size in zip(("src", "tgt"), VOCABS, manifest["vocab_sizes"]):
        vocab = Vocab.load(folder / name)
        kind = manifest["settings"][f"{side}_vocab_kind"]
        if len(vocab) != size or vocab.kind != kind:
            raise DataError(
                f"{folder / name} is a {vocab.kind} vocabulary of {len(vocab)} tokens, but its "
                f"{MANIFEST} records a {kind} one of {size}: {AGAIN}"
            )


def open_checked(folder: str | Path) -> TokenStore:
    """The encoded pairs of a prepared folder, memory-mapped, after `check_folder`; their token
    chunks checked as batches first read them."""
    return _open(folder)[0]


def _open(folder: str | Path) -> tuple[TokenStore, dict]:
    """`open_checked`'s store, and the manifest it was checked against."""
    manifest = check_folder(folder)
    store = TokenStore.open(folder, STORE, id_limit=max(manifest["vocab_sizes"]))
    if len(store) != manifest["pairs"] or len(store.tokens) != manifest["tokens"]:
        raise DataError(
            f"{folder}: its store holds {len(store):,} pairs and {len(store.tokens):,} ids, "
            f"its {MANIFEST} says {manifest['pairs']:,} and {manifest['tokens']:,}: {AGAIN}"
        )
    return store, manifest


def verify_folder(folder: str | Path) -> dict:
    """Checks a prepared folder in full: `open_checked`, every token chunk, and every pair's
    ids against its side's vocabulary. Returns what was checked."""
    store, manifest = _open(folder)
    store.check.check_all()
    limits = manifest["vocab_sizes"]
    for begin in range(0, len(store), VERIFY_PAIRS):
        end = min(begin + VERIFY_PAIRS, len(store))
        src_len, tgt_len = store.src_len[begin:end], store.tgt_len[begin:end]
        first, last = int(store.offsets[begin]), int(store.offsets[end - 1])
        ids = store.tokens[first : last + int(src_len[-1]) + int(tgt_len[-1])]
        sides = np.repeat(np.tile([0, 1], end - begin), np.stack([src_len, tgt_len], 1).ravel())
        for side, name in enumerate(("source", "target")):
            bad = np.flatnonzero((sides == side) & (ids >= limits[side]))
            if len(bad):
                starts = store.offsets[begin:end] - first
                row = begin + int(np.searchsorted(starts, bad[0], "right")) - 1
                raise DataError(
                    f"{Path(folder) / STORE}.tokens: pair {row} holds {name} id "
                    f"{int(ids[bad[0]])}, past the {name} vocabulary's {limits[side]}: {AGAIN}"
                )
    return {"verified": str(folder), "pairs": len(store), "tokens": len(store.tokens),
            "files": len(manifest["files"]) + 2}  # fmt: skip
