"""A run's data known by content: each file's size and SHA-256, recorded in config.json when
the run starts, so that a resumed run may read the same data from a new place and a changed
file is noticed rather than trained on silently.

    {"train": [{"file": "/data/train.en", "bytes": 1234, "sha256": "..."}, ...], "valid": ...}
"""

from __future__ import annotations

import hashlib
import os

from s2s_jax.data.corpus import MANIFEST, corpus_files
from s2s_jax.run.config import TrainConfig

SPLIT_FIELDS = {"train": "train_file", "valid": "valid_file", "test": "test_file"}
CHUNK = 1 << 20


def describe(spec: str) -> list[dict]:
    """Each file of a corpus (`corpus_files`): its path, size and SHA-256 (read in chunks)."""
    out = []
    for path in corpus_files(spec):
        digest = hashlib.sha256()
        with open(_content(path), "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        size = os.path.getsize(_content(path))
        out.append({"file": path, "bytes": size, "sha256": digest.hexdigest()})
    return out


def _content(path: str) -> str:
    """The file that stands for a corpus file's content: itself, or for a prepared folder its
    manifest, which holds the SHA-256 of every file in it (the token file's per chunk, in
    `train.json`), each checked against the file when the folder is opened or first read."""
    return os.path.join(path, MANIFEST) if os.path.isdir(path) else path


def describe_run(train_cfg: TrainConfig) -> dict:
    """`describe` of each split a run names files for ({} for a built-in task)."""
    return {
        split: describe(getattr(train_cfg, field))
        for split, field in SPLIT_FIELDS.items()
        if getattr(train_cfg, field)
    }


def differ(described: list[dict], recorded: list[dict]) -> bool:
    """Whether two descriptions (`describe`) name other bytes (the paths may differ)."""
    key = lambda files: [(f["bytes"], f["sha256"]) for f in files]
    return key(described) != key(recorded)


def same_content(spec: str, recorded: list[dict]) -> bool:
    """Whether the files of `spec` hold what `recorded` describes (sizes first: cheap)."""
    files = corpus_files(spec)
    if len(files) != len(recorded):
        return False
    if any(
        not os.path.isfile(_content(f)) or os.path.getsize(_content(f)) != r["bytes"]
        for f, r in zip(files, recorded)
    ):
        return False
    return not differ(describe(spec), recorded)


def missing(spec: str) -> list[str]:
    """The files of `spec` that are not there."""
    return [f for f in corpus_files(spec) if not os.path.isfile(_content(f))]
