"""An ensemble's members on one vocabulary: each run's parameters re-indexed to the first's
token numbering (`model.reindex_vocab`), or refused with what differs."""

from __future__ import annotations

import jax.numpy as jnp

from s2s_jax.errors import DataError
from s2s_jax.nn import model


def on_first_vocabularies(member, first, path, first_path) -> dict:
    """The parameters of `member` (a `Translator` of one run, loaded from `path`) re-indexed to
    the vocabularies of `first` (loaded from `first_path`), which must hold the same tokens, of
    the same kind (a sentencepiece model: one that encodes alike, `Vocab.encodes_like`)."""
    orders = {}
    for side, name in (("src", "source"), ("tgt", "target")):
        mine, theirs = getattr(first, f"{side}_vocab"), getattr(member, f"{side}_vocab")
        if mine.encodes_like(theirs):
            continue
        if mine.kind != theirs.kind or mine.kind == "sentencepiece":
            raise DataError(
                f"{path} has another {name} vocabulary than {first_path} ({theirs.kind} vs "
                f"{mine.kind}{', another model' if mine.kind == theirs.kind else ''}): an "
                "ensemble averages the probabilities of the same tokens"
            )
        differ = sorted(set(mine.tokens) ^ set(theirs.tokens))
        if differ:
            raise DataError(
                f"{path} has another {name} vocabulary than {first_path}: {len(differ)} "
                f"token(s) in only one of them ({', '.join(map(repr, differ[:5]))}): an ensemble "
                "averages the probabilities of the same tokens, so train its runs on the same "
                "data with the same vocabulary settings"
            )
        index = {t: i for i, t in enumerate(theirs.tokens)}
        orders[f"{side}_order"] = jnp.asarray([index[t] for t in mine.tokens], jnp.int32)
    return model.reindex_vocab(member.params, **orders)
