"""The BLEU that the WMT shared tasks (Multi30k's among them) published: text lowercased,
punctuation-normalised and tokenised by the Moses scripts' rules, then scored with no further
tokenisation (multi-bleu, or sacreBLEU `--tokenize none`).

The Moses rules come from `sacremoses`, the Python port of the Perl scripts, used as the shared
tasks ran them: `normalize-punctuation.perl -l L | lowercase.perl | tokenizer.perl -l L`, with
XML escaping (`qu'un` -> `qu&apos; un`) and without aggressive hyphen splitting
(`saftig-grünes` stays one token). On Multi30k this reproduces the distributed
`*.lc.norm.tok.*` files from the raw ones line for line (every line of both test sets in German,
English and French but one French line), so references may be the tokenised files or the raw
ones prepared here.

The score is comparable with papers only; sacreBLEU's own (detokenised, cased, 13a) is the one
to compare systems with today.
"""

from __future__ import annotations

from collections.abc import Sequence

from s2s_jax.errors import DataError
from s2s_jax.inference.metrics import reference_streams

SCHEME = "moses-norm-lc-tok"  # named in the signature


def moses_tokenize(lines: Sequence[str], lang: str) -> list[str]:
    """Each line normalised, lowercased and tokenised as the shared tasks' references were."""
    try:
        from sacremoses import MosesPunctNormalizer, MosesTokenizer
    except ImportError:  # a core dependency: missing only from a partial install
        raise DataError("the tokenised BLEU needs sacremoses: pip install sacremoses") from None
    normalizer, tokenizer = MosesPunctNormalizer(lang=lang), MosesTokenizer(lang=lang)
    return [
        tokenizer.tokenize(
            normalizer.normalize(line).lower(),
            escape=True,
            aggressive_dash_splits=False,
            return_str=True,
        )
        for line in lines
    ]


def tokenized_bleu(
    hyps: Sequence[str], refs: Sequence[Sequence[str]], lang: str, *, refs_tokenized: bool = False
) -> tuple[float, str]:
    """BLEU-4 of raw hypotheses against references, the shared tasks' way.

    Args:
      hyps: one detokenised hypothesis per pair, as the model writes it.
      refs: each pair's references (at least one each).
      lang: the target language's code, for the Moses rules ("de", "fr", "en", ...).
      refs_tokenized: the references are already prepared (the `.lc.norm.tok` files).

    Returns:
      (BLEU in [0, 100], sacreBLEU's signature with the preparation named).
    """
    import sacrebleu

    if len(refs) != len(hyps) or not all(refs):
        raise DataError(f"{len(hyps)} hypotheses but {len(refs)} pairs of references")
    if not refs_tokenized:
        refs = [moses_tokenize(r, lang) for r in refs]
    bleu = sacrebleu.metrics.BLEU(tokenize="none", force=True)
    score = bleu.corpus_score(moses_tokenize(hyps, lang), reference_streams(refs)).score
    return score, f"{bleu.get_signature()}|prep:{SCHEME}.{lang}"
