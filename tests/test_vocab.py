"""Vocabularies: tokenizers, round trips, specials, storage."""

import base64
import json

import pytest

from s2s_jax.data.vocab import EOS, PAD, SPECIALS, UNK, Vocab
from s2s_jax.errors import ConfigError, DataError

FRENCH = ["trois cent quarante-deux", "quarante-deux ans", "deux cents", "mille trois"]


def test_word_tokenizer_marks_word_starts():
    v = Vocab.build(FRENCH, "word")
    assert v.tokenize("quarante-deux ans") == ["▁quarante", "-", "deux", "▁ans"]
    assert v.tokenize("K AH Z") == ["▁K", "▁AH", "▁Z"]
    assert v.tokenize("l'an, 42!") == ["▁l", "'", "an", ",", "▁42", "!"]


def test_word_round_trip_normalises_whitespace():
    v = Vocab.build(FRENCH + ["l'an, 42!"], "word")
    for text in FRENCH + ["l'an, 42!"]:
        assert v.decode(v.encode(text)) == text
    assert v.decode(v.encode("  trois   cent\tans ")) == "trois cent ans"


def test_char_round_trip_keeps_spaces():
    v = Vocab.build(["ab c", "ba"], "char")
    assert v.tokenize("a b") == ["a", " ", "b"]
    assert v.decode(v.encode(" ab  c ")) == " ab  c "


def test_order_specials_then_frequency_then_string():
    v = Vocab.build(["bca", "cb", "c"], "char")  # counts: c=3, b=2, a=1
    assert v.tokens == SPECIALS + ("c", "b", "a")
    v = Vocab.build(["ba"], "char")  # tie: by string
    assert v.tokens == SPECIALS + ("a", "b")
    assert len(v) == 6


def test_min_count_and_max_size():
    texts = ["aaab", "bc"]  # a=3, b=2, c=1
    assert Vocab.build(texts, "char", min_count=2).tokens == SPECIALS + ("a", "b")
    assert Vocab.build(texts, "char", max_size=5).tokens == SPECIALS + ("a",)
    with pytest.raises(DataError, match="max_size"):
        Vocab.build(texts, "char", max_size=3)


def test_unknown_tokens_map_to_unk_and_render():
    v = Vocab.build(["abc"], "char")
    ids = v.encode("axc")
    assert ids == [v.tokens.index("a"), UNK, v.tokens.index("c")]
    assert v.decode(ids) == "a<unk>c"
    w = Vocab.build(["trois cent"], "word")
    assert w.encode("trois mille") == [w.tokens.index("▁trois"), UNK]
    assert w.decode(w.encode("trois mille")) == "trois <unk>"


def test_decode_stops_at_eos_and_skips_pad_bos():
    v = Vocab.build(["ab"], "char")
    a, b = v.encode("ab")
    assert v.decode([1, a, PAD, b, EOS, a, a]) == "ab"
    assert v.decode([EOS, a]) == ""


def test_unknown_kind_lists_valid_kinds():
    with pytest.raises(DataError, match="char, word, sentencepiece"):
        Vocab.build(["a"], "bytes")


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_round_trip_with_capped_size(tmp_path, model_type):
    texts = [f"the quick brown fox number {i} jumps over the lazy dog" for i in range(60)]
    # 5000 is far more than this corpus supports: the size is capped instead of failing.
    v = Vocab.build(texts, "sentencepiece", sp_vocab_size=5000, sp_model_type=model_type)
    assert v.tokens[:4] == SPECIALS
    assert 4 < len(v) < 5000
    for text in texts[:5] + ["the lazy fox"]:
        ids = v.encode(text)
        assert all(4 <= i < len(v) for i in ids)
        assert v.decode(ids + [EOS, ids[0]]) == text
    assert UNK in v.encode("the Zebra")  # "Z" never seen
    path = tmp_path / "vocab.json"
    v.save(path)
    w = Vocab.load(path)
    assert w == v and w.encode("the lazy dog") == v.encode("the lazy dog")


def test_sentencepiece_is_deterministic():
    texts = [f"alpha beta gamma {i} delta" for i in range(40)]
    assert Vocab.build(texts, "sentencepiece", sp_vocab_size=40) == Vocab.build(
        texts, "sentencepiece", sp_vocab_size=40
    )


def sentencepiece_variant(vocab: Vocab, change) -> Vocab:
    """`vocab` with its sentencepiece model's proto edited by `change(proto)`."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto.FromString(
        base64.b64decode(vocab.to_dict()["sp_model"])
    )
    change(proto)
    return Vocab("sentencepiece", vocab.tokens, proto.SerializeToString())


def test_sentencepiece_models_read_otherwise_encode_alike():
    """Models that differ only in how their training text was read (a sample size, shuffling,
    threads) encode alike; a score, the normaliser or the algorithm make another model."""
    texts = [f"the {w} fox number {i} jumps" for i in range(50) for w in ("quick", "slow")]
    v = Vocab.build(texts, "sentencepiece", sp_vocab_size=40)

    def read_otherwise(proto):
        proto.trainer_spec.input_sentence_size = 7
        proto.trainer_spec.shuffle_input_sentence = False
        proto.trainer_spec.num_threads = 4

    def rescore(proto):
        proto.pieces[10].score -= 1.0

    def renormalise(proto):
        proto.normalizer_spec.remove_extra_whitespaces = False

    def bpe(proto):
        proto.trainer_spec.model_type = proto.trainer_spec.BPE

    alike = sentencepiece_variant(v, read_otherwise)
    assert alike != v and alike.fingerprint() != v.fingerprint()
    assert v.encodes_like(alike) and alike.encodes_like(v) and v.encodes_like(v)
    assert [alike.encode(t) for t in texts[:9]] == [v.encode(t) for t in texts[:9]]
    for change in (rescore, renormalise, bpe):
        assert not v.encodes_like(sentencepiece_variant(v, change)), change.__name__
    word = Vocab.build(texts, "word")
    assert not v.encodes_like(word) and not word.encodes_like(v)
    assert word.encodes_like(Vocab.build(texts, "word"))


@pytest.mark.parametrize("kind", ["char", "word"])
def test_save_load_equal(tmp_path, kind):
    v = Vocab.build(FRENCH, kind)
    path = tmp_path / "v.json"
    v.save(path)
    assert Vocab.load(path) == v
    assert Vocab.from_dict(json.loads(json.dumps(v.to_dict()))) == v


def test_load_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(DataError, match="nope.json"):
        Vocab.load(missing)
    garbled = tmp_path / "garbled.json"
    garbled.write_text("{not json")
    with pytest.raises(DataError, match="garbled.json"):
        Vocab.load(garbled)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"tokens": ["a"]}))
    with pytest.raises(DataError, match="other.json"):
        Vocab.load(other)


def test_build_vocabs_sizes_kinds_and_a_joint_vocabulary():
    """`build_vocabs` on a run's surveyed pairs and settings: per-side sizes, a minimum count,
    sentencepiece's BPE, and one vocabulary of both sides' texts."""
    from sentencepiece import sentencepiece_model_pb2

    from s2s_jax.data.survey import survey_pairs
    from s2s_jax.run.config import TrainConfig
    from s2s_jax.training import vocabularies

    pairs = [("the cat sat", "le chat assis"), ("a dog sat", "un chien assis")] * 40
    pairs += [("rare", "mot")]
    sides = survey_pairs(pairs)

    def build(train_cfg):
        return vocabularies.build_vocabs(sides, train_cfg, ("word", "word"))

    src, tgt = build(TrainConfig(src_vocab_size=6, tgt_vocab_size=9))
    assert len(src) == 6 and len(tgt) == 9  # the 4 specials, then the most frequent words
    src, tgt = build(TrainConfig(vocab_min_count=2))
    assert "▁rare" not in src.tokens and "▁mot" not in tgt.tokens and "▁sat" in src.tokens
    joint = TrainConfig(joint_vocab=True, src_vocab_kind="char", tgt_vocab_kind="char")
    src, tgt = build(joint)
    assert src is tgt and set("thecatsdogleinuhmr") <= set(src.tokens)
    with pytest.raises(ConfigError, match="one vocabulary kind on both sides"):
        build(TrainConfig(joint_vocab=True, src_vocab_kind="char"))
    with pytest.raises(ConfigError, match="separate ones"):
        TrainConfig(joint_vocab=True, src_vocab_size=10)
    sp = TrainConfig(src_vocab_kind="sentencepiece", sp_model_type="bpe", vocab_size=30)
    src, _ = build(sp)
    model = base64.b64decode(src.to_dict()["sp_model"])
    proto = sentencepiece_model_pb2.ModelProto.FromString(model)
    assert proto.trainer_spec.model_type == sentencepiece_model_pb2.TrainerSpec.BPE


def test_encode_many_is_encode_end_to_end():
    """The batch encoder gives each text's `encode`, laid end to end, for every kind (unknown
    words, punctuation and characters included); sentencepiece's, which encodes each distinct
    word once, for both model types, whatever the spaces (runs, ends, tabs, no-break)."""
    texts = ["the cat sat.", "a dog, the cat!", "zebra", "", "cat cat", "  the  cat ", " "]
    texts += ["cat\tsat", "the\u00a0cat", "12 345 Männer", "☃☃ ☃"]
    for kind, sp_type in (("char", ""), ("word", ""), ("sentencepiece", "unigram"),
                          ("sentencepiece", "bpe")):  # fmt: skip
        built = texts[:2] * 20 + ["12 34 Männer"] * 5
        vocab = Vocab.build(built, kind, sp_vocab_size=30, sp_model_type=sp_type or "unigram")
        assert vocab._sp_by_word == (kind == "sentencepiece")
        for _ in range(2):  # the word cache filled, then read
            lengths, ids = vocab.encode_many(texts)
            assert lengths == [len(vocab.encode(t)) for t in texts], kind
            assert ids == [i for t in texts for i in vocab.encode(t)], kind


def test_vocabularies_from_piece_counts_equal_counting_every_token():
    """Char and word vocabularies built from the counts of space-separated pieces (one pass,
    added chunk by chunk) equal those counted token by token over the texts (double spaces,
    tabs, punctuation and non-ASCII letters included)."""
    import collections

    from s2s_jax.data.vocab import PieceCounts, _word_tokens

    texts = ["the  cat\tsat.", "a dog, the cat!", "héllo wörld", " x ", "", "cat cat"] * 3
    counts = PieceCounts()
    for i in range(0, len(texts), 4):
        counts.add(texts[i : i + 4])
    for kind, tokenize in (("char", list), ("word", _word_tokens)):
        direct = collections.Counter(t for text in texts for t in tokenize(text))
        assert counts.tokens(kind) == direct, kind
        ranked = sorted(direct, key=lambda t: (-direct[t], t))
        vocab = Vocab.from_counts(kind, counts, max_size=12)
        assert (
            vocab.tokens
            == SPECIALS + tuple(ranked[:8])
            == Vocab.build(texts, kind, max_size=12).tokens
        )
