"""Translate with a model that `s2s export` wrote, without s2s_jax: copy this one file.

    python standalone.py model.s2s "forty-two" "seventy-one"     # or one input per stdin line
    python standalone.py model.s2s --n-best 2 "forty-two"  # input, rank, score, log P, text

    from standalone import load
    model = load("model.s2s")
    model.translate(["forty-two"])               # ['quarante-deux']
    model.translate(["forty-two"], n_best=2)     # [[('quarante-deux', -0.02, -0.017), ...]]

Needs jax and numpy (and flatbuffers, which `jax.export` needs to read the function);
sentencepiece only for a model with a sentencepiece vocabulary. It imports nothing from
s2s_jax: the tokenisers below repeat `s2s_jax.data.vocab`'s char and word rules, and the
batching repeats `Translator`'s (sources padded to the training buckets, batches to powers of
two), so the translations equal `Translator`'s.
"""

from __future__ import annotations

import argparse
import base64
import collections
import io
import json
import re
import sys
import zipfile

import jax
import numpy as np

FORMAT, VERSIONS = "s2s-jax-exported", (1,)
PAD, BOS, EOS, UNK = 0, 1, 2, 3
WORD_PREFIX = "\u2581"
_WORD_RE = re.compile(r"\w+|[^\w\s]")


class ExportedModelError(Exception):
    """The file is not a model this loader can run; the message says why."""


class _Vocab:
    def __init__(self, d: dict):
        self.kind, self.tokens = d["kind"], list(d["tokens"])
        self._index = {t: i for i, t in enumerate(self.tokens)}
        self._sp = None
        if self.kind == "sentencepiece":
            try:
                import sentencepiece
            except ImportError:
                raise ExportedModelError(
                    "this model's vocabulary is sentencepiece: pip install sentencepiece"
                ) from None
            self._sp = sentencepiece.SentencePieceProcessor(
                model_proto=base64.b64decode(d["sp_model"])
            )

    def tokenize(self, text: str) -> list[str]:
        if self.kind == "char":
            return list(text)
        tokens = []  # word: a word's first piece carries the word-boundary mark
        for word in text.split():
            first, *rest = _WORD_RE.findall(word)
            tokens += [WORD_PREFIX + first, *rest]
        return tokens

    def encode(self, text: str) -> list[int]:
        if self._sp is not None:
            return self._sp.encode(text, out_type=int)
        return [self._index.get(t, UNK) for t in self.tokenize(text)]

    def unknown(self, texts) -> collections.Counter:
        """The tokens of `texts` this vocabulary lacks (read as <unk>), counted."""
        if self._sp is not None:  # sentencepiece spells any text
            return collections.Counter()
        return collections.Counter(
            t for text in texts for t in self.tokenize(text) if t not in self._index
        )

    def decode(self, ids) -> str:
        pieces = []
        for i in map(int, ids):
            if i == EOS:
                break
            if i in (PAD, BOS):
                continue
            if i == UNK or not 0 <= i < len(self.tokens):
                pieces.append(WORD_PREFIX + "<unk>" if self.kind == "word" else "<unk>")
            else:
                pieces.append(self.tokens[i])
        text = "".join(pieces)
        return text if self.kind == "char" else text.replace(WORD_PREFIX, " ").strip()


class ExportedModel:
    """A loaded model: `translate(texts, n_best=1)`. `manifest` holds what `s2s export` wrote."""

    def __init__(self, manifest: dict, function, leaves: list):
        self.manifest = manifest
        self._function, self._leaves = function, leaves
        self._src, self._tgt = _Vocab(manifest["src_vocab"]), _Vocab(manifest["tgt_vocab"])

    def unknown_tokens(self, texts) -> collections.Counter:
        """The input tokens of `texts` the source vocabulary lacks (read as <unk>), counted."""
        return self._src.unknown(texts)

    def translate(self, texts, n_best: int = 1) -> list:
        """One string per text; with n_best > 1, per text a list of (text, log P, score), best
        first, as `s2s translate --n-best` gives them (score: log P over GNMT's length penalty,
        the beam's ranking key). An empty text gives an empty translation."""
        m = self.manifest
        if not 1 <= n_best <= m["beam"]:
            raise ValueError(f"n_best must be in 1..{m['beam']} (the exported beam)")
        ids = [self._src.encode(t) for t in texts]
        for i, s in enumerate(ids):
            if len(s) > m["max_src_len"]:
                raise ValueError(
                    f"input {i + 1} has {len(s)} tokens; this model reads at most "
                    f"{m['max_src_len']}: split it"
                )
        pending, size = [], m["sentences_per_batch"]
        for start in range(0, len(ids), size):
            chunk = ids[start : start + size]
            rows = min(size, 1 << (len(chunk) - 1).bit_length())
            width = next(b for b in m["src_buckets"] if b >= max(max(map(len, chunk)), 1))
            src = np.zeros((rows, width), np.int32)
            src_len = np.zeros((rows,), np.int32)
            for r, s in enumerate(chunk):
                src[r, : len(s)], src_len[r] = s, len(s)
            pending.append(self._function.call(self._leaves, src, src_len))
        out = []
        for start, (tokens, lengths, log_probs) in zip(
            range(0, len(ids), size), jax.device_get(pending)
        ):
            # s2s_jax's search_rules.length_penalty, in numpy: ((5 + |y|) / 6) ** alpha
            scores = log_probs / ((5.0 + lengths) / 6.0) ** m["alpha"]
            for r in range(min(size, len(ids) - start)):
                if not ids[start + r]:  # nothing to translate
                    hyps = [("", 0.0, 0.0)] * n_best
                else:
                    hyps = [
                        (
                            self._tgt.decode(tokens[r, k]),
                            float(log_probs[r, k]),
                            float(scores[r, k]),
                        )
                        for k in range(n_best)
                    ]
                out.append(hyps[0][0] if n_best == 1 else hyps)
        return out


def load(path) -> ExportedModel:
    """Reads a file that `s2s export` wrote; `ExportedModelError` says what is wrong with it."""
    try:
        with zipfile.ZipFile(path) as z:
            manifest = json.loads(z.read("manifest.json"))
            serialized = z.read("translate.jax")
            with np.load(io.BytesIO(z.read("params.npz"))) as npz:
                leaves = [npz[name] for name in sorted(npz.files)]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise ExportedModelError(f"{path}: not a model written by `s2s export` ({e})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") not in VERSIONS:
        raise ExportedModelError(
            f"{path}: format {manifest.get('format')!r} version {manifest.get('version')!r}; "
            f"this loader reads {FORMAT} versions {', '.join(map(str, VERSIONS))}"
        )
    function = jax.export.deserialize(bytearray(serialized))
    expected = function.in_avals[: len(function.in_avals) - 2]  # then src and src_len
    if len(leaves) != len(expected) or any(
        x.shape != a.shape or x.dtype != a.dtype for x, a in zip(leaves, expected)
    ):
        raise ExportedModelError(
            f"{path}: its parameters do not fit its translate function (another model's?): "
            f"{len(leaves)} arrays for {len(expected)} parameters, or their shapes differ"
        )
    platform = jax.default_backend()
    if platform not in function.platforms:
        raise ExportedModelError(
            f"{path} was exported for {', '.join(function.platforms)}, not {platform}"
        )
    return ExportedModel(manifest, function, leaves)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a file written by `s2s export`")
    parser.add_argument("--n-best", type=int, default=1, help="hypotheses per input")
    parser.add_argument("text", nargs="*", help="inputs (none: each line of standard input)")
    args = parser.parse_intermixed_args(argv)
    try:
        model = load(args.model)
        texts = args.text or [line.rstrip("\r\n") for line in sys.stdin]
        out = model.translate(texts, n_best=args.n_best)
    except (ExportedModelError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    unknown = model.unknown_tokens(texts)
    if unknown:  # as `s2s translate` reports them
        shown = ", ".join(repr(t) for t, _ in unknown.most_common(5))
        print(
            f"{sum(unknown.values())} input token(s) not in the source vocabulary, read as "
            f"<unk>: {shown}{', ...' if len(unknown) > 5 else ''}",
            file=sys.stderr,
        )
    for number, result in enumerate(out, 1):
        if args.n_best == 1:
            print(result)
        else:
            for rank, (text, log_prob, score) in enumerate(result, 1):
                print(f"{number}\t{rank}\t{score:.4f}\t{log_prob:.4f}\t{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
