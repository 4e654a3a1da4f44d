"""Digests: a SHA-256 per leaf of every saved step, written before the step and recomputed on
every restore (orbax stores no checksum of its own), so that a damaged step is found instead
of trained on; and the comparison of a restore target with what a checkpoint holds.

    DIR/digests/<which>-<step>.json   the digest of step <step> of latest/ or best/
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from s2s_jax.errors import CheckpointError
from s2s_jax.run.checkpoint.damage import Damaged
from s2s_jax.run.checkpoint.json_files import load_json, save_json


def _key_name(entry: Any) -> str:
    """A pytree key entry as orbax names it on disk: dict key, sequence index or field."""
    for attr in ("key", "idx", "name"):  # DictKey/FlattenedIndexKey, SequenceKey, GetAttrKey
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _local(leaf: Any) -> Any:
    """One local copy of a replicated global array (the leaf itself otherwise)."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        return leaf.addressable_data(0)
    return leaf


def digest(state: Any) -> dict[str, str]:
    """SHA-256 of every leaf (dtype, shape and bytes), keyed by its path."""
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    host = jax.device_get([_local(leaf) for _, leaf in flat])  # one transfer for the tree
    out = {}
    for (keypath, _), leaf in zip(flat, host):
        value = np.ascontiguousarray(np.asarray(leaf))
        h = hashlib.sha256(f"{value.dtype.str}{value.shape}".encode())
        h.update(value.tobytes())
        out["/".join(_key_name(k) for k in keypath)] = h.hexdigest()
    return out


def _describe(shape: tuple[int, ...], dtype: Any) -> str:
    dtype_text = f" {np.dtype(dtype).name}" if dtype is not None else ""
    return f"shape {tuple(shape)}{dtype_text}"


def first_mismatch(target: Any, stored: Any, *, partial: bool = False) -> str | None:
    """Compares a target pytree with a checkpoint's tree metadata (with `partial`, only the
    target's leaves must be there).

    Returns:
        A phrase naming the first leaf whose path, shape or dtype differs, or None.
    """
    want = {
        tuple(_key_name(k) for k in keypath): (tuple(np.shape(leaf)), getattr(leaf, "dtype", None))
        # Python scalars have no dtype: the stored one is restored.
        for keypath, leaf in jax.tree_util.tree_flatten_with_path(target)[0]
    }
    have = {
        tuple(str(k) for k in path): (tuple(meta.shape), meta.dtype)
        for path, meta in ocp.tree.to_flat_dict(stored).items()
        if hasattr(meta, "shape")
    }
    for path, (shape, dtype) in want.items():
        name = "/".join(path)
        if path not in have:
            return f"leaf '{name}' ({_describe(shape, dtype)}) is missing from the checkpoint"
        got_shape, got_dtype = have[path]
        if shape != got_shape or (dtype is not None and np.dtype(dtype) != np.dtype(got_dtype)):
            return (
                f"leaf '{name}' has {_describe(got_shape, got_dtype)} in the checkpoint"
                f" but {_describe(shape, dtype)} is expected"
            )
    for path, (shape, dtype) in have.items():
        if path not in want and not partial:
            name = "/".join(path)
            return f"the checkpoint has a leaf '{name}' ({_describe(shape, dtype)}) not expected"
    return None


class DigestFiles:
    """The digest files of a checkpoint directory (`directory/digests/`)."""

    def __init__(self, directory: Path, *, required: bool, log: Callable[[str], None]):
        """`required`: every step must have its digest (the directory was written by this
        version); otherwise steps without one (older versions) load unverified."""
        self._dir, self._required, self._log = directory / "digests", required, log

    def file(self, which: str, step: int) -> Path:
        return self._dir / f"{which}-{step}.json"

    def write(self, which: str, step: int, sums: dict | None) -> None:
        """Writes a step's digest (`sums` is None on every process but 0, which writes)."""
        if sums is not None:
            save_json(self.file(which, step), sums)

    def remove_stale(self, which: str, kept: Iterable[int]) -> None:
        """Deletes the digests of `which`'s steps that are no longer kept (process 0)."""
        if jax.process_index() != 0:
            return
        kept = set(kept)
        for path in self._dir.glob(f"{which}-*.json"):
            step = path.stem.partition("-")[2]
            if step.isdigit() and int(step) not in kept:
                path.unlink(missing_ok=True)

    def verify(self, which: str, path: Path, step: int, state: Any) -> None:
        """Raises `Damaged` unless the restored `state` of step `step` (saved at `path`)
        matches its digest. A step without one loads unverified only when the directory
        predates digests."""
        digest_file = self.file(which, step)
        if not digest_file.exists():
            older = [
                int(p.stem.partition("-")[2])
                for p in digest_file.parent.glob(f"{which}-*")
                if p.stem.partition("-")[2].isdigit()
            ]
            if self._required or (older and min(older) < step):
                raise Damaged(f"checkpoint at {path} cannot be verified: {digest_file} is missing")
            self._log(
                f"checkpoint at {path} has no checksum (saved by an earlier version of "
                "s2s-jax): loaded unverified"
            )
            return
        try:
            want = load_json(digest_file)
        except CheckpointError as e:
            raise Damaged(f"checkpoint at {path} cannot be verified: {e}") from None
        for name, value in digest(state).items():
            if want.get(name) != value:
                raise Damaged(
                    f"checkpoint at {path} is damaged: leaf '{name}' differs from "
                    "what was saved (checksum mismatch)"
                )
