"""A new run's vocabularies, from its training pairs surveyed once (`data.survey`): the kind
of each side chosen from the text where the run names none, then built (or read from the files
the run names)."""

from __future__ import annotations

import dataclasses

from s2s_jax.data import Vocab
from s2s_jax.data.survey import SideText
from s2s_jax.data.vocab import vocab_from_file
from s2s_jax.data.vocab_kind import suggest_kind
from s2s_jax.errors import ConfigError
from s2s_jax.run import config


def build_vocabs(
    sides: tuple[SideText, SideText], train_cfg: config.TrainConfig, kinds: tuple[str, str]
) -> tuple[Vocab, Vocab]:
    """Vocabularies from the training split's `sides`: one per side, or with `joint_vocab` one
    of both sides' texts (the same object twice); of the run's kinds, else of `kinds`."""
    kinds = (train_cfg.src_vocab_kind or kinds[0], train_cfg.tgt_vocab_kind or kinds[1])

    def build(side: SideText, kind: str, size: int, file: str = "") -> Vocab:
        if file:
            return vocab_from_file(file)
        if kind == "sentencepiece":
            return Vocab.build(
                side.sample, kind, sp_vocab_size=size, sp_model_type=train_cfg.sp_model_type
            )
        return Vocab.from_counts(
            kind, side.counts, max_size=size, min_count=train_cfg.vocab_min_count
        )

    if train_cfg.joint_vocab:
        if kinds[0] != kinds[1] and not train_cfg.src_vocab_file:
            raise ConfigError(
                f"joint_vocab needs one vocabulary kind on both sides, not {kinds[0]} (source) "
                f"and {kinds[1]} (target): set src_vocab_kind and tgt_vocab_kind alike"
            )
        both = sides[0] + sides[1]
        vocab = build(both, kinds[0], train_cfg.vocab_size, train_cfg.src_vocab_file)
        return vocab, vocab
    sizes = (train_cfg.src_vocab_size, train_cfg.tgt_vocab_size)
    files = (train_cfg.src_vocab_file, train_cfg.tgt_vocab_file)
    return tuple(
        build(sides[i], kinds[i], sizes[i] or train_cfg.vocab_size, files[i]) for i in (0, 1)
    )


def choose_kinds(
    sides: tuple[SideText, SideText], train_cfg: config.TrainConfig
) -> tuple[config.TrainConfig, list]:
    """A corpus's vocabulary kinds where the run names none, chosen from its training text
    (`vocab_kind.suggest_kind` on each side's sample; with `joint_vocab`, on both sides'),
    recorded in the returned configuration, with a line saying what was chosen and why."""
    if not train_cfg.train_file:
        return train_cfg, []  # a built-in task knows its kinds
    samples = {"src": sides[0].sample, "tgt": sides[1].sample}
    if train_cfg.joint_vocab:
        samples = {"src": samples["src"] + samples["tgt"]}
    chosen = {}
    for side, texts in samples.items():
        named = getattr(train_cfg, f"{side}_vocab_kind") or getattr(train_cfg, f"{side}_vocab_file")
        if not named:
            chosen[side] = suggest_kind(texts)
    if train_cfg.joint_vocab and "src" in chosen:
        chosen["tgt"] = chosen["src"]
    if not chosen:
        return train_cfg, []
    names = {"src": "source", "tgt": "target"}
    what = "; ".join(f"{names[s]} {c.kind} ({c.reason})" for s, c in chosen.items())
    note = f"vocabularies chosen from the training text: {what}; set src_vocab_kind / "
    note += "tgt_vocab_kind (char, word, sentencepiece) to choose otherwise"
    fields = {f"{side}_vocab_kind": choice.kind for side, choice in chosen.items()}
    return dataclasses.replace(train_cfg, **fields), [note]
