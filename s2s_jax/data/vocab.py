"""Vocabularies: text <-> token ids, for characters, words or sentencepiece pieces.

Ids 0..3 are always the specials `<pad>`, `<s>`, `</s>`, `<unk>`. A vocabulary is immutable and
serialises to JSON (a sentencepiece model travels inside it as base64), so a checkpoint that
stores it is self-contained.

Tokenizer kinds:

* ``"char"``: every character is a token, spaces included.
* ``"word"``: reversible words: `\\w+` runs and single punctuation marks; the first token of each
  whitespace-separated word carries the prefix "▁" (as in sentencepiece), so
  "quarante-deux ans" -> ["▁quarante", "-", "deux", "▁ans"], and decoding restores the text
  exactly up to whitespace normalisation (runs of whitespace become one space, ends stripped).
* ``"sentencepiece"``: a unigram or BPE model trained on the given texts.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import functools
import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence

from s2s_jax.data.sentencepiece_models import (
    encode_alike,
    pieces_within_words,
    train_sentencepiece,
)
from s2s_jax.errors import DataError
from s2s_jax.files import write_atomically
from s2s_jax.tokens import BOS, EOS, PAD, SPECIALS, UNK  # noqa: F401 (re-exported by data)

KINDS = ("char", "word", "sentencepiece")
# Each side's vocabulary file, in a workdir and in a prepared folder alike.
SRC_VOCAB, TGT_VOCAB = "vocab.src.json", "vocab.tgt.json"
WORD_PREFIX = "▁"  # U+2581, sentencepiece's word-boundary mark.

_WORD_RE = re.compile(r"\w+|[^\w\s]")
_FORMAT = "s2s-jax-vocab"


@functools.lru_cache(maxsize=1 << 17)  # a corpus repeats its words: split each one once
def _word_pieces(word: str) -> tuple[str, ...]:
    first, *rest = _WORD_RE.findall(word)
    return (WORD_PREFIX + first, *rest)


def _word_tokens(text: str) -> list[str]:
    return [piece for word in text.split() for piece in _word_pieces(word)]


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise DataError(f"unknown vocabulary kind {kind!r}; use one of: {', '.join(KINDS)}")


@dataclasses.dataclass
class PieceCounts:
    """How often each space-separated piece of some texts occurs, and how many spaces separate
    them: the char and the word counts both follow from these, so one pass over a corpus
    serves whichever kind is chosen after it, and a corpus's counts add chunk by chunk."""

    pieces: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    spaces: int = 0

    def add(self, texts: Sequence[str]) -> None:
        if texts:
            pieces = " ".join(texts).split(" ")  # split in C: a Python loop costs 10x
            self.pieces.update(pieces)
            self.spaces += len(pieces) - len(texts)  # the joins' spaces are not the texts'

    def __add__(self, other: PieceCounts) -> PieceCounts:
        return PieceCounts(self.pieces + other.pieces, self.spaces + other.spaces)

    def tokens(self, kind: str) -> collections.Counter:
        """The counts of the tokens of a `kind` ("char" or "word") vocabulary."""
        tokens = collections.Counter()
        tokenize = list if kind == "char" else _word_tokens
        for piece, n in self.pieces.items():
            for token in tokenize(piece):
                tokens[token] += n
        if kind == "char" and self.spaces:
            tokens[" "] += self.spaces
        return tokens


class Vocab:
    """A token <-> id mapping with its tokenizer.

    Build one with `Vocab.build`, or restore one with `Vocab.load` / `Vocab.from_dict`.

    Attributes:
      kind: one of `KINDS`.
      tokens: the token of each id; `tokens[:4] == SPECIALS`.
    """

    def __init__(self, kind: str, tokens: Sequence[str], sp_model: bytes | None = None):
        """Prefer `Vocab.build`; this constructor only checks and indexes."""
        _check_kind(kind)
        tokens = tuple(tokens)
        if tokens[:4] != SPECIALS:
            raise DataError(f"vocabulary must start with {SPECIALS}, got {tokens[:4]}; rebuild it")
        if len(set(tokens)) != len(tokens):
            raise DataError("vocabulary has duplicate tokens; rebuild it")
        if (kind == "sentencepiece") != (sp_model is not None):
            raise DataError("a sentencepiece vocabulary (and only one) needs its model bytes")
        self.kind = kind
        self.tokens = tokens
        self._index = {t: i for i, t in enumerate(tokens)}
        self._word_ids: dict[str, list[int]] = {}  # encode_many's: each word's ids, once
        self._sp_model = sp_model
        self._sp = None
        self._sp_by_word = False
        if sp_model is not None:
            import sentencepiece as spm

            self._sp = spm.SentencePieceProcessor(model_proto=sp_model)
            self._sp_by_word = pieces_within_words(sp_model)
            pieces = tuple(self._sp.id_to_piece(i) for i in range(self._sp.get_piece_size()))
            if pieces != tokens:
                raise DataError("sentencepiece model and token list disagree; rebuild the vocab")

    # ----------------------------------------------------------------------------- building

    @classmethod
    def build(
        cls,
        texts: Iterable[str],
        kind: str,
        *,
        max_size: int | None = None,
        min_count: int = 1,
        sp_vocab_size: int = 1000,
        sp_model_type: str = "unigram",
    ) -> Vocab:
        """Builds a vocabulary from training texts.

        Token order is deterministic: the specials, then tokens by decreasing count, ties broken
        by the token string.

        Args:
          texts: the training texts (one side of the pairs).
          kind: "char", "word" or "sentencepiece".
          max_size: cap on the total size, specials included (char/word only); None = no cap.
          min_count: drop tokens seen fewer times (char/word only).
          sp_vocab_size: target size of a sentencepiece vocabulary, specials included. Capped to
            what the corpus supports (sentencepiece refuses sizes a small corpus cannot fill).
          sp_model_type: "unigram" or "bpe".

        Returns:
          The vocabulary.
        """
        _check_kind(kind)
        texts = list(texts)
        if kind == "sentencepiece":
            return cls("sentencepiece", *train_sentencepiece(texts, sp_vocab_size, sp_model_type))
        counts = PieceCounts()
        counts.add(texts)
        return cls.from_counts(kind, counts, max_size=max_size, min_count=min_count)

    @classmethod
    def from_counts(
        cls, kind: str, counts: PieceCounts, *, max_size: int | None = None, min_count: int = 1
    ) -> Vocab:
        """A char or word vocabulary from its texts' `PieceCounts` (see `build`)."""
        if kind not in ("char", "word"):
            raise DataError(f"a {kind} vocabulary is not built from counts; build it from texts")
        if max_size is not None and max_size < len(SPECIALS):
            raise DataError(f"max_size={max_size} leaves no room for the 4 specials; use >= 4")
        tokens = counts.tokens(kind)
        for special in SPECIALS:  # a literal "<s>" in a char/word text can't collide, but be safe.
            tokens.pop(special, None)
        ranked = sorted(
            (t for t, c in tokens.items() if c >= min_count), key=lambda t: (-tokens[t], t)
        )
        if max_size is not None:
            ranked = ranked[: max_size - len(SPECIALS)]
        return cls(kind, SPECIALS + tuple(ranked))

    # ----------------------------------------------------------------------------- mapping

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocab):
            return NotImplemented
        return (self.kind, self.tokens, self._sp_model) == (
            other.kind,
            other.tokens,
            other._sp_model,
        )

    def encodes_like(self, other: Vocab) -> bool:
        """Whether `other` turns every text into the same ids: equal, or sentencepiece models
        that differ only in how they read their training text (`encode_alike`)."""
        if self == other:
            return True
        return (
            self.kind == other.kind == "sentencepiece"
            and self.tokens == other.tokens
            and encode_alike(self._sp_model, other._sp_model)
        )

    def __hash__(self) -> int:
        return hash((self.kind, self.tokens))

    def __repr__(self) -> str:
        return f"Vocab(kind={self.kind!r}, size={len(self)})"

    def tokenize(self, text: str) -> list[str]:
        """Splits a text into tokens (which may be out of vocabulary)."""
        if self.kind == "char":
            return list(text)
        if self.kind == "word":
            return _word_tokens(text)
        return self._sp.encode(text, out_type=str)

    def encode(self, text: str) -> list[int]:
        """Text -> ids, without `<s>`/`</s>`; unknown tokens map to `UNK` (3)."""
        if self._sp is not None:
            return self._sp.encode(text, out_type=int)
        return [self._index.get(t, UNK) for t in self.tokenize(text)]

    def encode_many(self, texts: Sequence[str]) -> tuple[list[int], list[int]]:
        """`encode` of each text, laid end to end: `(lengths, ids)`. Faster than one call a
        text: a word vocabulary, and a sentencepiece model whose pieces stay within words
        (`sentencepiece_models.pieces_within_words`), encode each distinct word once; another
        sentencepiece model encodes the batch in one call."""
        if self._sp is not None and not self._sp_by_word:
            encoded = self._sp.encode(list(texts), out_type=int)
            return [len(e) for e in encoded], [i for e in encoded for i in e]
        lengths, ids = [], []
        if self.kind == "char":
            index = self._index
            for text in texts:
                ids += [index.get(c, UNK) for c in text]
                lengths.append(len(text))
            return lengths, ids
        words = self._word_ids
        if len(words) > 1 << 20:  # an open vocabulary of words: bound the memory it takes
            words.clear()
        if self._sp:  # split as sentencepiece splits: at spaces ("" between two is no piece)
            separator, encode_word = " ", functools.partial(self._sp.encode, out_type=int)
        else:
            separator = None
            encode_word = lambda w: [self._index.get(t, UNK) for t in _word_pieces(w)]  # noqa: E731
        for text in texts:
            start = len(ids)
            for word in text.split(separator):
                known = words.get(word)
                if known is None:
                    known = words[word] = encode_word(word)
                ids += known
            lengths.append(len(ids) - start)
        return lengths, ids

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text.

        Stops at the first `</s>`, skips `<pad>` and `<s>`; `<unk>` renders as "<unk>" (as a
        word of its own in a word-level vocabulary). Out-of-range ids render as `<unk>` too.
        """
        pieces = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i in (PAD, BOS):
                continue
            if i == UNK or not 0 <= i < len(self.tokens):
                pieces.append(WORD_PREFIX + "<unk>" if self.kind == "word" else "<unk>")
            else:
                pieces.append(self.tokens[i])
        text = "".join(pieces)
        if self.kind == "char":
            return text
        return text.replace(WORD_PREFIX, " ").strip()

    # ----------------------------------------------------------------------------- storage

    def to_dict(self) -> dict:
        """A JSON-able description from which `from_dict` rebuilds an equal vocabulary."""
        d = {"format": _FORMAT, "version": 1, "kind": self.kind, "tokens": list(self.tokens)}
        if self._sp_model is not None:
            d["sp_model"] = base64.b64encode(self._sp_model).decode("ascii")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Vocab:
        """Inverse of `to_dict`; raises `DataError` on anything else."""
        if not isinstance(d, dict) or d.get("format") != _FORMAT:
            raise DataError("not an s2s-jax vocabulary (missing format tag); rebuild it")
        try:
            sp = base64.b64decode(d["sp_model"]) if d.get("sp_model") is not None else None
            return cls(d["kind"], d["tokens"], sp)
        except (KeyError, TypeError, ValueError) as e:  # DataError is not a ValueError.
            raise DataError(f"corrupt vocabulary ({type(e).__name__}: {e}); rebuild it") from e

    def fingerprint(self) -> str:
        """SHA-256 of the vocabulary's content: equal vocabularies, equal fingerprints."""
        text = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def save(self, path: str | os.PathLike) -> None:
        """Writes the vocabulary as a JSON file (atomically: temp file, then rename).

        Raises:
          WriteError: the file cannot be written (e.g. the disk is full); `path` is unchanged.
        """
        write_atomically(path, json.dumps(self.to_dict(), ensure_ascii=False))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocab:
        """Reads a vocabulary written by `save`; `DataError` naming the file if it can't."""
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except FileNotFoundError:
            raise DataError(f"no such vocabulary file: {path}; check the path") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(
                f"{path}: not a readable vocabulary file ({e}); delete it to rebuild"
            ) from e
        try:
            return cls.from_dict(d)
        except DataError as e:
            raise DataError(f"{path}: {e}") from e


def vocab_from_file(path: str | os.PathLike) -> Vocab:
    """An existing vocabulary: a JSON file that `Vocab.save` wrote (another workdir's
    `vocab.src.json`, say), or a sentencepiece `.model` whose first four pieces are the
    specials at ids 0-3 (`spm_train --pad_id=0 --bos_id=1 --eos_id=2 --unk_id=3
    --pad_piece=<pad> --bos_piece=<s> --eos_piece=</s> --unk_piece=<unk>`).

    Raises:
      DataError: a missing file, or one that is neither, or a model with other specials.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"cannot read the vocabulary file {path}: {e.strerror or e}") from None
    if data.lstrip()[:1] == b"{":
        return Vocab.load(path)
    import sentencepiece as spm

    try:
        sp = spm.SentencePieceProcessor(model_proto=data)
    except Exception:  # sentencepiece raises RuntimeError or its own parse errors
        raise DataError(
            f"{path} is neither a vocabulary JSON (vocab.src.json of a workdir) nor a "
            "sentencepiece model"
        ) from None
    pieces = tuple(sp.id_to_piece(i) for i in range(sp.get_piece_size()))
    if pieces[:4] != SPECIALS:
        raise DataError(
            f"{path}: the sentencepiece model's first pieces are {list(pieces[:4])}, not "
            f"{list(SPECIALS)}: train it with --pad_id=0 --bos_id=1 --eos_id=2 --unk_id=3 "
            "--pad_piece=<pad> --bos_piece=<s> --eos_piece=</s> --unk_piece=<unk>"
        )
    return Vocab("sentencepiece", pieces, data)
