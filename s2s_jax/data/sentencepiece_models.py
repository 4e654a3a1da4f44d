"""Sentencepiece models as vocabularies use them: trained in memory on a bounded sample of a
corpus, with the specials at ids 0-3, and read for what their settings allow (encoding a text
word by word)."""

from __future__ import annotations

import io
import re

from s2s_jax.errors import DataError
from s2s_jax.tokens import BOS, EOS, PAD, SPECIALS, UNK

SP_MODEL_TYPES = ("unigram", "bpe")


SP_SAMPLE = 1_000_000  # sentences sentencepiece learns from at most (drawn from larger corpora)


def train_sentencepiece(
    texts: list[str], vocab_size: int, model_type: str
) -> tuple[tuple[str, ...], bytes]:
    """Trains sentencepiece in memory; returns (pieces, serialized model).

    Specials are placed at ids 0..3 by the trainer itself, so no remapping is needed. A corpus too
    small for `vocab_size` makes sentencepiece fail and name the largest feasible size (or the
    smallest, for a too-small size); we retry with that size.
    """
    import sentencepiece as spm

    if model_type not in SP_MODEL_TYPES:
        raise DataError(
            f"unknown sentencepiece model type {model_type!r}; "
            f"use one of: {', '.join(SP_MODEL_TYPES)}"
        )
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise DataError("no text to train sentencepiece on; give non-empty training texts")
    size = max(vocab_size, len(SPECIALS) + 1)
    for _ in range(4):
        buf = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(texts),
                model_writer=buf,
                vocab_size=size,
                model_type=model_type,
                pad_id=PAD,
                bos_id=BOS,
                eos_id=EOS,
                unk_id=UNK,
                pad_piece=SPECIALS[PAD],
                bos_piece=SPECIALS[BOS],
                eos_piece=SPECIALS[EOS],
                unk_piece=SPECIALS[UNK],
                character_coverage=1.0,
                input_sentence_size=SP_SAMPLE,  # a bounded sample of a large corpus
                shuffle_input_sentence=True,
                normalization_rule_name="identity",  # keeps decode(encode(x)) == x.
                num_threads=1,
                minloglevel=2,
            )
        except RuntimeError as e:
            msg = str(e)
            m = re.search(r"set it to a value <= (\d+)", msg) or re.search(r"\d+ vs (\d+)", msg)
            if m is None or int(m.group(1)) == size:
                raise DataError(f"sentencepiece training failed: {msg}") from e
            size = int(m.group(1))
            continue
        model = buf.getvalue()
        sp = spm.SentencePieceProcessor(model_proto=model)
        return tuple(sp.id_to_piece(i) for i in range(sp.get_piece_size())), model
    raise DataError(f"sentencepiece found no feasible vocabulary size near {vocab_size}")


def pieces_within_words(model: bytes) -> bool:
    """Whether a sentencepiece model encodes a text as the concatenation of its space-separated
    words, each encoded alone, so that `encode_many` may encode each distinct word once: no
    piece crosses a space (`split_by_whitespace`), a space starts a word's first piece (as a
    dummy prefix on the text's first word), runs of spaces count as one, and the normaliser
    maps no other character to a space (identity). The models `Vocab.build` trains are so."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto.FromString(model)
    trainer, normalizer = proto.trainer_spec, proto.normalizer_spec
    return (
        trainer.split_by_whitespace
        and not trainer.treat_whitespace_as_suffix
        and normalizer.add_dummy_prefix
        and normalizer.remove_extra_whitespaces
        and normalizer.name == "identity"
    )


# Trainer options that only steer how the training text was read (which sentences, how many,
# from where, on how many threads). Two models that differ in nothing else encode every text
# alike: the pieces and scores they learned are part of the comparison.
_READING_OPTIONS = (
    "input",
    "input_format",
    "model_prefix",
    "input_sentence_size",
    "shuffle_input_sentence",
    "num_threads",
    "seed_sentencepiece_size",
    "mining_sentence_size",
    "training_sentence_size",
)


def encode_alike(a: bytes, b: bytes) -> bool:
    """Whether two serialized sentencepiece models encode every text alike: the same pieces
    with the same scores and types, the same normaliser and the same encoding options; how
    each read its training text (a sample's size, shuffling, threads) may differ."""
    from sentencepiece import sentencepiece_model_pb2

    def encoding_part(model: bytes) -> bytes:
        proto = sentencepiece_model_pb2.ModelProto.FromString(model)
        known = proto.trainer_spec.DESCRIPTOR.fields_by_name
        for name in _READING_OPTIONS:
            if name in known:
                proto.trainer_spec.ClearField(name)
        return proto.SerializeToString(deterministic=True)

    return a == b or encoding_part(a) == encoding_part(b)
