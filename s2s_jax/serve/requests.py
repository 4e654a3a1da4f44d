"""A `POST /translate` body, checked: the inputs and the decoding settings, or one line saying
what is wrong with them (`BadRequest`, answered with a 4xx status).

    {"inputs": ["...", ...],                        required: 1..max_inputs non-blank strings
     "beam": 5, "n_best": 2, "alpha": 0.6,          optional: beam search (beam 1: greedy)
     "min_len": 0, "no_repeat_ngram": 0,            optional: constraints on the output
     "sample": true, "seed": 0, "temperature": 1.0,
     "top_k": 0, "top_p": 1.0,                      optional: sampling instead of searching
     "align": true}                                 optional: attention alignments too
"""

from __future__ import annotations

import dataclasses
import json

from s2s_jax.errors import DataError
from s2s_jax.inference.outputs import Sampling, check_setting, shown
from s2s_jax.inference.translate import Translator

SAMPLING_FIELDS = ("seed", "temperature", "top_k", "top_p")
FIELDS = ("inputs", "beam", "n_best", "alpha", "min_len", "no_repeat_ngram", "sample", "align")
FIELDS += SAMPLING_FIELDS


class BadRequest(Exception):
    """A request the server refuses, with the HTTP status to answer and a one-line message."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class Settings:
    """How one request decodes; requests with equal settings may share a batch."""

    beam: int
    n_best: int
    alpha: float
    min_len: int = 0
    no_repeat_ngram: int = 0
    sample: Sampling | None = None
    align: bool = False

    def search(self) -> dict:
        """The keyword arguments of `Translator.hypotheses`."""
        return dict(
            beam=self.beam,
            n_best=self.n_best,
            alpha=self.alpha,
            min_len=self.min_len,
            no_repeat_ngram=self.no_repeat_ngram,
            sample=self.sample,
        )


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may ask for."""

    max_inputs: int = 64  # sentences in one request
    max_beam: int = 16  # beam width (each new width compiles a search once)
    max_body_bytes: int = 1 << 20  # a request's body, read no further (64 long inputs fit)


@dataclasses.dataclass(frozen=True)
class Request:
    """A checked request: its sentences, their token counts and its settings."""

    inputs: list[str]
    lengths: list[int]
    settings: Settings


def _setting(body: dict, name: str, default, high=None, why: str = ""):
    """A decoding setting of the request, within its usable range: the rule `Translator` and
    `s2s translate` apply (`outputs.check_setting`), answered 422 when broken."""
    try:
        return check_setting(name, body.get(name, default), high, why)
    except DataError as e:
        raise BadRequest(str(e)) from None


def _flag(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false, got {shown(value)}")
    return value


def _inputs(body: dict, translator: Translator, limits: Limits) -> tuple[list[str], list[int]]:
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(x, str) for x in inputs):
        raise BadRequest('"inputs" must be a list of strings, e.g. {"inputs": ["a sentence"]}')
    if not inputs:
        raise BadRequest('"inputs" is empty: give at least one sentence')
    if len(inputs) > limits.max_inputs:
        raise BadRequest(
            f"{len(inputs)} inputs in one request; this server takes at most "
            f"{limits.max_inputs}: split them over several requests",
            status=413,
        )
    most = translator.train_cfg.max_src_len
    lengths = []
    for i, text in enumerate(inputs):
        if not text.strip():
            raise BadRequest(f"input {i} is empty: give a sentence to translate")
        try:  # JSON's \ud800 escapes decode to lone surrogates, which no vocabulary spells
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise BadRequest(f"input {i} is not valid Unicode: {e.reason} at {e.start}") from None
        n = len(translator.src_vocab.encode(text))
        if n > most:
            raise BadRequest(
                f"input {i} has {n} tokens; this model reads at most {most} (max_src_len): "
                "split it",
                status=413,
            )
        lengths.append(n)
    return inputs, lengths


def _named(key: str) -> str:
    """A key of the request as a message names it: as it is when it looks like a name."""
    return key if key.isidentifier() and len(key) <= 40 else shown(key)


def parse(raw: bytes, translator: Translator, limits: Limits) -> Request:
    """The request in `raw` (a JSON body), checked against the model and the limits.

    Raises:
      BadRequest: malformed JSON (400), too many or over-long inputs (413), or anything else
        that cannot be decoded as asked (422), with a message naming it.
    """
    try:
        body = json.loads(raw)
    # RecursionError: nested deeper than Python's recursion limit
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        # The first line, less Python's advice to the server's owner on long integers.
        reason = (str(e).splitlines() or [type(e).__name__])[0].split("; use sys.")[0]
        raise BadRequest(f"malformed JSON: {reason}", status=400) from None
    if not isinstance(body, dict):
        raise BadRequest('expected a JSON object, e.g. {"inputs": ["a sentence"]}', status=400)
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        named = ", ".join(map(_named, unknown[:5])) + (", ..." if len(unknown) > 5 else "")
        raise BadRequest(f"unknown setting(s) {named}; known: {', '.join(FIELDS)}")
    inputs, lengths = _inputs(body, translator, limits)
    defaults = translator.decode_cfg
    sample = _flag(body, "sample")
    given = [name for name in SAMPLING_FIELDS if name in body]
    if given and not sample:
        raise BadRequest(f'{", ".join(given)} only apply with "sample": true')
    beam_default = 1 if sample else defaults.beam
    beam = _setting(body, "beam", beam_default, limits.max_beam, "this server's limit")
    settings = Settings(
        beam=beam,
        n_best=_setting(body, "n_best", 1, beam, "at most the beam"),
        alpha=_setting(body, "alpha", defaults.alpha),
        min_len=_setting(body, "min_len", 0),
        no_repeat_ngram=_setting(body, "no_repeat_ngram", 0),
        align=_flag(body, "align"),
    )
    if sample:
        if settings.beam != 1 or settings.n_best != 1 or settings.align:
            raise BadRequest("sampling draws one translation per input: no beam, n_best or align")
        vocab = len(translator.tgt_vocab)
        settings = dataclasses.replace(
            settings,
            sample=Sampling(
                seed=_setting(body, "seed", 0),
                temperature=_setting(body, "temperature", 1.0),
                top_k=_setting(body, "top_k", 0, vocab, "the target vocabulary's size"),
                top_p=_setting(body, "top_p", 1.0),
            ),
        )
    if settings.align and any(c.attention == "none" for c in translator.members):
        raise BadRequest("this model has no attention: it cannot align")
    return Request(inputs, lengths, settings)
