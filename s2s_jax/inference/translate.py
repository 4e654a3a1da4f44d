"""Strings in, strings out: a trained model with its vocabularies, the lengths it was trained
for (`TrainConfig`) and how it decodes (`DecodeConfig`, the workdir's decode section).

A `Translator` holds one model or an ensemble (`from_workdirs`: several runs on the same
vocabularies, their probabilities averaged at every step, `nn.ensemble`). Sentences are batched
into a few padded shapes (the training buckets, and batch sizes that are powers of two), so the
jitted decoders compile once per shape and are reused across calls and across `Translator`s.
With several devices, each batch's sentences are split across them (sentences are decoded
independently, so the results are the same as on one device).
"""

from __future__ import annotations

import itertools
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from s2s_jax.data import UNK, Vocab, pad_batch
from s2s_jax.errors import DataError
from s2s_jax.inference.ensemble_vocab import on_first_vocabularies
from s2s_jax.inference.outputs import Alignment, Hypothesis, Sampling, check_search
from s2s_jax.nn import decoding, ensemble, model
from s2s_jax.run import config
from s2s_jax.run import workdir as wd
from s2s_jax.run.mesh import AXIS, data_mesh

_LIMITS = ("cfg", "max_len", "min_len", "no_repeat_ngram", "with_attention")  # static
_greedy = jax.jit(decoding.greedy, static_argnames=_LIMITS)
_beam = jax.jit(decoding.beam_search, static_argnames=(*_LIMITS, "beam", "alpha"))
_sample = jax.jit(decoding.sample, static_argnames=(*_LIMITS, "temperature", "top_k", "top_p"))
_log_prob = jax.jit(model.log_prob, static_argnames=("cfg",))
_ensemble_log_prob = jax.jit(ensemble.log_prob, static_argnames=("cfg",))


_to_stderr = lambda message: print(message, file=sys.stderr)


class Translator:
    """Translates and scores with one model or an ensemble. Build with `from_workdir`,
    `from_workdirs` or from parts."""

    def __init__(
        self,
        params,
        cfg: decoding.Config,
        src_vocab: Vocab,
        tgt_vocab: Vocab,
        train_cfg: config.TrainConfig = config.TrainConfig(),
        decode_cfg: config.DecodeConfig = config.DecodeConfig(),
        *,
        devices: Sequence[jax.Device] | None = None,
    ):
        """`params`, `cfg`: a model's parameter pytree and config, or an ensemble's (a tuple of
        each, the members sharing `src_vocab` and `tgt_vocab`).
        `train_cfg`: the lengths the model was trained for (`max_src_len`, `max_tgt_len`,
        `buckets`, `bucket_multiple`: longer inputs are refused, outputs capped);
        `decode_cfg`: the defaults of `translate` and the output cap; `devices`: where decoding
        runs, sentences split across them (default: this process's devices; results do not
        depend on the choice, nor on the padded lengths)."""
        self.cfg, self.train_cfg, self.decode_cfg = cfg, train_cfg, decode_cfg
        self.loaded: dict = {}  # from_workdir: the checkpoint and step the parameters are
        devices = list(devices if devices is not None else jax.local_devices())
        self._mesh = data_mesh(devices) if len(devices) > 1 else None
        self.params = jax.device_put(params, self._sharding(P())) if self._mesh else params
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab
        self._src_buckets, self._tgt_buckets = train_cfg.src_buckets(), train_cfg.tgt_buckets()

    @classmethod
    def from_workdir(
        cls,
        path: str | Path,
        *,
        which: str = "best",
        average: int = 0,
        log: Callable[[str], None] = _to_stderr,
        run: wd.Run | None = None,
    ) -> Translator:
        """Loads the `which` ("best", "latest" or a kept step's number) checkpoint of a
        training workdir (a relative path is taken from the current directory), verified: a
        damaged step is skipped for
        the newest intact one, and `log` says so. `average` N > 0: the mean of the parameters
        of the run's N latest checkpoints instead (`workdir.restore_params`). `run`: the
        workdir opened by `wd.load`, when the caller has opened it already."""
        run = run or wd.load(wd.resolve(path))
        params, loaded = wd.restore_params(run, which=which, average=average, log=log)
        translator = cls(
            params, run.model_cfg, run.src_vocab, run.tgt_vocab, run.train_cfg, run.decode_cfg
        )
        translator.loaded = loaded
        return translator

    @classmethod
    def from_workdirs(
        cls,
        paths: Sequence[str | Path],
        *,
        which: str = "best",
        average: int = 0,
        log: Callable[[str], None] = _to_stderr,
    ) -> Translator:
        """An ensemble of the runs in `paths` (one path: that model alone), each loaded as
        `from_workdir` does. The runs must share both vocabularies' tokens (numbered alike or
        not: each member is re-indexed to the first's); the lengths and the decode section are
        the first run's. `loaded` then holds `members`, each run's own `loaded`
        with its `workdir`."""
        if not paths:
            raise DataError("give at least one workdir")
        if len(paths) == 1:
            return cls.from_workdir(paths[0], which=which, average=average, log=log)
        members = [cls.from_workdir(p, which=which, average=average, log=log) for p in paths]
        first = members[0]
        translator = cls(
            tuple(on_first_vocabularies(m, first, p, paths[0]) for p, m in zip(paths, members)),
            tuple(m.cfg for m in members),
            first.src_vocab,
            first.tgt_vocab,
            first.train_cfg,
            first.decode_cfg,
        )
        translator.loaded = {
            "members": [{"workdir": str(wd.resolve(p)), **m.loaded} for p, m in zip(paths, members)]
        }
        return translator

    @property
    def members(self) -> tuple[model.Seq2SeqConfig, ...]:
        """The configs of the models that vote: one, or the ensemble's."""
        return self.cfg if isinstance(self.cfg, tuple) else (self.cfg,)

    def _encode_sources(self, texts: Sequence[str], crop: bool = False) -> list[list[int]]:
        most = self.train_cfg.max_src_len
        ids = [self.src_vocab.encode(t)[: most if crop else None] for t in texts]
        for i, s in enumerate(ids):
            if len(s) > most:
                raise DataError(
                    f"input {i + 1} has {len(s)} tokens; this model reads at most "
                    f"{self.train_cfg.max_src_len} (max_src_len): split it"
                )
        return ids

    def _sharding(self, spec: P) -> NamedSharding:
        return NamedSharding(self._mesh, spec)

    def _place(self, *arrays):
        """Batch arrays on the device(s): rows split across the mesh."""
        if self._mesh is None:
            return tuple(jnp.asarray(a) for a in arrays)
        return tuple(jax.device_put(a, self._sharding(P(AXIS))) for a in arrays)

    def _chunks(self, n: int):
        """(start, stop, padded batch size) covering n items with few distinct batch sizes
        (powers of two, and multiples of the device count)."""
        b = self.decode_cfg.sentences_per_batch
        n_dev = self._mesh.size if self._mesh else 1
        for start in range(0, n, b):
            rows = min(b, n - start)
            padded = min(b, 1 << (rows - 1).bit_length())
            yield start, start + rows, -(-padded // n_dev) * n_dev

    def _batch(self, examples, rows: int):
        return pad_batch(
            examples, batch_size=rows, src_buckets=self._src_buckets, tgt_buckets=self._tgt_buckets
        )

    def _caps(self, src_len: np.ndarray) -> np.ndarray:
        d = self.decode_cfg
        cap = np.floor(d.max_len_ratio * src_len) + d.max_len_offset
        return np.clip(cap, 1, self.train_cfg.max_tgt_len).astype(np.int32)

    # ------------------------------------------------------------------------------ public API

    def translate(
        self,
        texts: Sequence[str],
        *,
        beam: int | None = None,
        n_best: int = 1,
        alpha: float | None = None,
        min_len: int = 0,
        no_repeat_ngram: int = 0,
        sample: Sampling | None = None,
        crop: bool = False,
    ) -> list:
        """Translates `texts`.

        Args:
          texts: source sentences (a list, not one string); an empty one gives an empty
            translation.
          beam: 1 for greedy search, K > 1 for beam search of width K (None: `decode_cfg.beam`).
          n_best: hypotheses per sentence (<= beam).
          alpha: beam search length normalisation (None: `decode_cfg.alpha`).
          min_len: no translation ends before this many tokens (unless its cap comes first).
          no_repeat_ngram: N > 0: no translation holds the same N tokens twice.
          sample: draw each translation (`Sampling`: seed, temperature, top-k, top-p) instead
            of searching for the most likely one; not with a beam.
          crop: read only the first `max_src_len` tokens of a longer input (else refused).

        Returns:
          With n_best == 1, one string per input; otherwise, per input, a list of n_best
          `Hypothesis(text, log_prob, score)`, best first (by `score`).
        """
        hyps = self.hypotheses(
            texts,
            beam=beam,
            n_best=n_best,
            alpha=alpha,
            min_len=min_len,
            no_repeat_ngram=no_repeat_ngram,
            sample=sample,
            crop=crop,
        )
        return [h[0].text for h in hyps] if n_best == 1 else hyps

    def hypotheses(
        self,
        texts: Sequence[str],
        *,
        beam: int | None = None,
        n_best: int = 1,
        alpha: float | None = None,
        min_len: int = 0,
        no_repeat_ngram: int = 0,
        sample: Sampling | None = None,
        crop: bool = False,
    ) -> list[list[Hypothesis]]:
        """As `translate`, always as n_best `Hypothesis(text, log_prob, score)` per input, best
        first (for n_best == 1 too: the translation with its scores)."""
        beam = (1 if sample else self.decode_cfg.beam) if beam is None else beam
        alpha = self.decode_cfg.alpha if alpha is None else alpha
        vocab = len(self.tgt_vocab)
        check_search(texts, beam, n_best, sample, min_len, no_repeat_ngram, alpha, vocab)
        ids = self._encode_sources(texts, crop)
        limits = dict(min_len=min_len, no_repeat_ngram=no_repeat_ngram)
        pending = self._search(ids, beam=beam, alpha=alpha, sample=sample, **limits)
        out: list = [None] * len(texts)
        for rows, toks, lengths, scores, _ in jax.device_get(pending):
            ranked = np.asarray(scores / decoding.length_penalty(lengths, alpha))  # on the host
            for r, i in enumerate(rows):
                out[i] = [
                    Hypothesis(
                        self.tgt_vocab.decode(toks[r, j]),
                        float(scores[r, j]),
                        float(ranked[r, j]),
                    )
                    for j in range(n_best)
                ]
        for i, s in enumerate(ids):
            if not s:  # nothing to translate
                out[i] = [Hypothesis("", 0.0, 0.0)] * n_best
        return out

    def warm_up(
        self, max_rows: int, beams: Sequence[int] = (1,), *, until: Callable[[], bool] = bool
    ) -> None:
        """Compiles the search (at the decode section's alpha) for every padded source length
        and every batch size that decoding up to `max_rows` sentences at once forms, for each
        beam width in `beams`: later calls of those shapes wait for no compilation. Stops
        between two compilations once `until()` is true."""
        sizes = sorted({min(max_rows, 1 << k) for k in range(max_rows.bit_length() + 1)})
        for length in self._src_buckets:
            for rows, beam in itertools.product(sizes, beams):
                if until():
                    return
                pending = self._search(
                    [[UNK] * length] * rows,
                    beam=beam,
                    alpha=self.decode_cfg.alpha,
                    sample=None,
                    min_len=0,
                    no_repeat_ngram=0,
                )
                jax.block_until_ready(pending)

    def _search(self, ids, *, beam, alpha, sample, min_len, no_repeat_ngram, attention=False):
        """Dispatches the search over every chunk of `ids` and returns, per chunk, (the
        indices in `ids` of its rows, tokens [R, K, L], lengths [R, K], scores [R, K], attention
        [R, K, L, S] or None) still on the device: the caller copies them back once.

        The sentences are decoded in order of length: a batch decodes until its longest
        sentence ends, so sentences of like lengths together take fewer steps, and their sources
        less padding. Decoding does not depend on a sentence's batch (sampling aside: its draws
        follow the batch), so the order changes no translation."""
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        pending = []
        for chunk, (start, stop, rows) in enumerate(self._chunks(len(ids))):
            indices = order[start:stop]
            b = self._batch([(ids[i], []) for i in indices], rows)
            src, src_len, cap = self._place(b.src, b.src_len, self._caps(b.src_len))
            common = dict(
                cfg=self.cfg,
                max_len=self.train_cfg.max_tgt_len,
                cap=cap,
                min_len=min_len,
                no_repeat_ngram=no_repeat_ngram,
                with_attention=attention,
            )
            if sample is not None:
                key = jax.random.fold_in(jax.random.key(sample.seed), chunk)
                d = _sample(
                    self.params,
                    src,
                    src_len,
                    key=key,
                    temperature=sample.temperature,
                    top_k=sample.top_k,
                    top_p=sample.top_p,
                    **common,
                )
            elif beam == 1:
                d = _greedy(self.params, src, src_len, **common)
            else:
                d = _beam(self.params, src, src_len, beam=beam, alpha=alpha, **common)
            if sample is not None or beam == 1:  # one hypothesis: give it a beam axis
                d = jax.tree.map(lambda x: x[:, None], d)
            pending.append((indices, d.tokens, d.lengths, d.scores, d.attention))
        return pending

    def align(
        self,
        texts: Sequence[str],
        *,
        beam: int | None = None,
        alpha: float | None = None,
        min_len: int = 0,
        no_repeat_ngram: int = 0,
        crop: bool = False,
    ) -> list[Alignment]:
        """Translates `texts` as `translate` does (the best hypothesis) and returns, for each,
        the attention weights of every token written over the source's tokens. The model must
        have attention."""
        if any(c.attention == "none" for c in self.members):
            raise DataError("this model has no attention (attention='none'): nothing to align")
        reverse = {c.reverse_source for c in self.members}
        if len(reverse) > 1:  # their weights would not be over the same positions
            raise DataError(
                "the ensemble's members read the source in different orders (reverse_source): "
                "their attention weights cannot be averaged"
            )
        beam = self.decode_cfg.beam if beam is None else beam
        alpha = self.decode_cfg.alpha if alpha is None else alpha
        check_search(texts, beam, 1, None, min_len, no_repeat_ngram, alpha, len(self.tgt_vocab))
        ids = self._encode_sources(texts, crop)
        pending = self._search(
            ids,
            beam=beam,
            alpha=alpha,
            sample=None,
            min_len=min_len,
            no_repeat_ngram=no_repeat_ngram,
            attention=True,
        )
        out: list = [None] * len(texts)
        for rows, toks, lengths, _, attn in jax.device_get(pending):
            for r, i in enumerate(rows):
                n, m = len(ids[i]), int(lengths[r, 0]) if ids[i] else 0
                weights = np.asarray(attn[r, 0, :m, :n], np.float32)
                if reverse == {True}:  # the encoder read the source backwards
                    weights = weights[:, ::-1]
                out[i] = Alignment(
                    self.tgt_vocab.decode(toks[r, 0]) if n else "",
                    self.src_vocab.tokenize(texts[i])[:n],
                    [self.tgt_vocab.tokens[int(i)] for i in toks[r, 0, :m]],
                    weights,
                )
        return out

    def unknown_tokens(self, texts: Sequence[str]) -> Counter:
        """The tokens of `texts` that the source vocabulary lacks (read as `<unk>`), counted."""
        if self.src_vocab.kind == "sentencepiece":  # sentencepiece spells any text
            return Counter()
        known = set(self.src_vocab.tokens)
        return Counter(t for text in texts for t in self.src_vocab.tokenize(text) if t not in known)

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """`log P(target | source)` of each (source, target) pair (natural log, </s> included)."""
        ids = self._encode_sources([s for s, _ in pairs])
        tgts = [self.tgt_vocab.encode(t) for _, t in pairs]
        for i, t in enumerate(tgts):
            if len(t) + 1 > self.train_cfg.max_tgt_len:
                raise DataError(
                    f"target {i + 1} has {len(t)} tokens; this model writes at most "
                    f"{self.train_cfg.max_tgt_len - 1} (max_tgt_len - 1)"
                )
        pending = []
        for start, stop, rows in self._chunks(len(pairs)):
            b = self._batch(list(zip(ids[start:stop], tgts[start:stop])), rows)
            score = _ensemble_log_prob if isinstance(self.cfg, tuple) else _log_prob
            pending.append((stop - start, score(self.params, *self._place(*b), cfg=self.cfg)))
        return [float(x) for n, lp in jax.device_get(pending) for x in lp[:n]]
