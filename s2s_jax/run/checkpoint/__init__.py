"""Checkpoints of a run: the orbax store (`store.Checkpoints`), per-step digests verified on
every restore (`digests`), damaged steps skipped and moved aside (`damage`), and the JSON
files beside them (`json_files`)."""

from s2s_jax.run.checkpoint.digests import digest
from s2s_jax.run.checkpoint.json_files import load_json, save_json
from s2s_jax.run.checkpoint.store import Checkpoints

__all__ = ["Checkpoints", "digest", "load_json", "save_json"]
