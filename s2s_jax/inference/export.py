"""`s2s export`: a trained model's whole translate path (encode, then greedy or batched beam
search with the output cap) as a `jax.export`ed function, in one file with its parameters and
vocabularies, for programs that have jax and numpy but not s2s_jax
(`s2s_jax/inference/standalone.py` loads it).

The file (format version 1) is a zip archive of:

    manifest.json   {"format": "s2s-jax-exported", "version": 1, "platforms", "beam", "alpha",
                     "max_src_len", "max_tgt_len", "src_buckets", "sentences_per_batch",
                     "src_vocab", "tgt_vocab" (as `Vocab.to_dict`), "model" (the config),
                     "checkpoint", "step", "jax"}
    translate.jax   the serialized `jax.export.Exported`: (leaves, src int32[b, s],
                    src_len int32[b]) -> (tokens int32[b, K, max_tgt_len], lengths int32[b, K],
                    log P float32[b, K]), best first; b and s symbolic, K the beam (1: greedy)
    params.npz      the parameter leaves `leaf_00000`, ... in the function's order

A program pads sources as `Translator` does (the training buckets, batches of powers of two)
and gets the same translations (tested).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from s2s_jax.errors import DataError
from s2s_jax.files import write_atomically
from s2s_jax.inference.translate import Translator
from s2s_jax.nn import decoding

FORMAT, VERSION = "s2s-jax-exported", 1
PLATFORMS = ("cpu", "cuda", "tpu")  # one file runs on each; jax lowers for all of them here
KNOWN_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")  # what jax.export can lower for
MANIFEST, FUNCTION, PARAMS = "manifest.json", "translate.jax", "params.npz"


def _check_platforms(platforms: Sequence[str]) -> None:
    if not platforms or any(p not in KNOWN_PLATFORMS for p in platforms):
        raise DataError(
            f"cannot export for platforms {', '.join(platforms) or '(none)'}: choose among "
            f"{', '.join(KNOWN_PLATFORMS)}"
        )


def translate_function(translator: Translator, *, beam: int, alpha: float):
    """The pure translate path of `translator`'s model: `(leaves, src, src_len) -> (tokens,
    lengths, log_probs)`, with the parameters as a flat list of leaves (an argument, not
    constants baked into the function)."""
    treedef = jax.tree.structure(translator.params)
    cfg, decode_cfg, max_len = (
        translator.cfg,
        translator.decode_cfg,
        translator.train_cfg.max_tgt_len,
    )

    def translate(leaves, src, src_len):
        params = jax.tree.unflatten(treedef, leaves)
        # Translator._caps, on the device: floor(ratio * length) + offset, within [1, max_len]
        cap = jnp.floor(decode_cfg.max_len_ratio * src_len.astype(jnp.float32)).astype(jnp.int32)
        cap = jnp.clip(cap + decode_cfg.max_len_offset, 1, max_len)
        common = dict(cfg=cfg, max_len=max_len, cap=cap)
        if beam == 1:
            d = decoding.greedy(params, src, src_len, **common)
            return d.tokens[:, None], d.lengths[:, None], d.scores[:, None]
        d = decoding.beam_search(params, src, src_len, beam=beam, alpha=alpha, **common)
        return d.tokens, d.lengths, d.scores

    return translate


def export(
    translator: Translator,
    *,
    beam: int | None = None,
    alpha: float | None = None,
    platforms: Sequence[str] = PLATFORMS,
) -> bytes:
    """The exported file's bytes (see the module docstring) for `translator`'s model, searching
    with `beam` and `alpha` (None: the model's decode section)."""
    return _export(translator, beam=beam, alpha=alpha, platforms=platforms)[0]


def _export(translator, *, beam, alpha, platforms) -> tuple[bytes, dict]:
    """`export`'s bytes, and the manifest they hold."""
    beam = translator.decode_cfg.beam if beam is None else beam
    alpha = translator.decode_cfg.alpha if alpha is None else alpha
    if beam < 1:
        raise DataError(f"beam must be >= 1, got {beam}")
    _check_platforms(platforms)
    leaves = [np.asarray(x) for x in jax.tree.leaves(jax.device_get(translator.params))]
    b, s = jax.export.symbolic_shape("b, s")
    fn = jax.jit(translate_function(translator, beam=beam, alpha=alpha))
    exported = jax.export.export(fn, platforms=tuple(dict.fromkeys(platforms)))(
        [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves],
        jax.ShapeDtypeStruct((b, s), jnp.int32),
        jax.ShapeDtypeStruct((b,), jnp.int32),
    )
    train_cfg = translator.train_cfg
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "platforms": list(exported.platforms),
        "beam": beam,
        "alpha": alpha,
        "max_src_len": train_cfg.max_src_len,
        "max_tgt_len": train_cfg.max_tgt_len,
        "src_buckets": list(train_cfg.src_buckets()),
        "sentences_per_batch": translator.decode_cfg.sentences_per_batch,
        "src_vocab": translator.src_vocab.to_dict(),
        "tgt_vocab": translator.tgt_vocab.to_dict(),
        "model": dataclasses.asdict(translator.cfg),
        "checkpoint": translator.loaded.get("checkpoint"),
        "step": translator.loaded.get("step"),
        **({"steps": translator.loaded["steps"]} if "steps" in translator.loaded else {}),
        "jax": jax.__version__,
    }
    params = io.BytesIO()
    np.savez(params, **{f"leaf_{i:05d}": x for i, x in enumerate(leaves)})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(MANIFEST, json.dumps(manifest, ensure_ascii=False, indent=1))
        z.writestr(FUNCTION, bytes(exported.serialize()))
        z.writestr(PARAMS, params.getvalue())
    return out.getvalue(), manifest


def export_workdir(
    workdir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    which: str = "best",
    average: int = 0,
    beam: int | None = None,
    alpha: float | None = None,
    platforms: Sequence[str] = PLATFORMS,
) -> dict:
    """`s2s export`: writes the `which` checkpoint of `workdir` (`average` N > 0: the mean of
    its N latest) to `out` (atomically); returns what was written (path, bytes, checkpoint,
    step, beam, alpha, platforms)."""
    _check_platforms(platforms)  # before loading anything
    translator = Translator.from_workdir(workdir, which=which, average=average)
    blob, manifest = _export(translator, beam=beam, alpha=alpha, platforms=platforms)
    out = Path(os.path.abspath(out))
    write_atomically(out, blob)
    keys = ("checkpoint", "step", "beam", "alpha", "platforms")
    loader = Path(__file__).with_name("standalone.py")  # the file to copy beside a program
    return {
        "file": str(out),
        "bytes": len(blob),
        **{k: manifest[k] for k in keys},
        "loader": str(loader),
    }
