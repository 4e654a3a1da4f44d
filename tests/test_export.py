"""`s2s export` and the standalone loader: the exported translate function gives `Translator`'s
translations (greedy and beam, n-best, across batch sizes, char and word vocabularies); the
loader runs where s2s_jax cannot even be imported; a file whose parts do not belong is refused."""

import importlib.util
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import jax
import pytest

from s2s_jax import cli
from s2s_jax.data import Vocab, load_task
from s2s_jax.inference import export
from s2s_jax.inference.translate import Hypothesis, Translator
from s2s_jax.nn import model
from s2s_jax.run import config

LOADER = Path(export.__file__).with_name("standalone.py")
TINY = ["--set", "cell=lstm", "--set", "src_embed=8", "--set", "tgt_embed=8"]
TINY += ["--set", "enc_hidden=12", "--set", "dec_hidden=12", "--set", "attention=bahdanau"]
TINY += ["--set", "attn_dim=8", "--set", "batch_size=8", "--set", "eval_examples=8"]
TINY += ["--set", "warmup_steps=0", "--set", "buckets=2", "--set", "sentences_per_batch=4"]


def standalone():
    """The loader, imported from its file as a program that copied it would."""
    spec = importlib.util.spec_from_file_location("standalone", LOADER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A character-level model (copy task): trained 30 steps, through the command."""
    path = tmp_path_factory.mktemp("copy")
    argv = ["train", "--workdir", str(path), "--task", "copy", "--steps", "30", "--no-progress"]
    assert cli.main(argv + TINY) == 0
    return path


def word_translator() -> Translator:
    """A word-level model (numbers-en-fr vocabularies), freshly initialised: two layers,
    bidirectional GRU encoder, Luong attention."""
    pairs = load_task("numbers-en-fr", n_train=200, n_valid=20, n_test=20).splits["train"]
    src = Vocab.build([s for s, _ in pairs], "word")
    tgt = Vocab.build([t for _, t in pairs], "word")
    cfg = model.Seq2SeqConfig(
        src_vocab=len(src),
        tgt_vocab=len(tgt),
        src_embed=8,
        tgt_embed=8,
        enc_hidden=8,
        dec_hidden=12,
        enc_layers=2,
        bidirectional=True,
        attention="luong_general",
    )
    params = model.init(cfg, key=jax.random.key(1))
    train_cfg = config.TrainConfig(max_src_len=12, max_tgt_len=14, buckets=3)
    return Translator(params, cfg, src, tgt, train_cfg, config.DecodeConfig(sentences_per_batch=4))


TEXTS = {
    "char": ["abc", "", "jihgfedcba", "a", "bbbbbbbbbbbbbbbbbbbb", "cab", "x y", "ddd", "e"],
    "word": ["forty-two", "", "seven hundred", "one", "nine thousand nine hundred ninety-nine"],
}


@pytest.mark.parametrize("beam", [1, 3])
@pytest.mark.parametrize("kind", ["char", "word"])
def test_exported_translations_equal_the_translators(workdir, tmp_path, kind, beam):
    translator = Translator.from_workdir(workdir) if kind == "char" else word_translator()
    path = tmp_path / "model.s2s"
    path.write_bytes(export.export(translator, beam=beam, platforms=("cpu",)))
    loaded = standalone().load(path)
    texts = TEXTS[kind] * 2  # 9 or 10 inputs in batches of 4: chunks of 4, 4 and 1 or 2 rows
    for n in (1, 3, len(texts)):
        assert loaded.translate(texts[:n]) == translator.translate(texts[:n], beam=beam)
    if beam > 1:
        ours = translator.translate(texts, beam=beam, n_best=beam)
        theirs = loaded.translate(texts, n_best=beam)
        assert [[h.text for h in hyps] for hyps in ours] == [[t for t, *_ in h] for h in theirs]
        assert [x for hyps in ours for h in hyps for x in h[1:]] == pytest.approx(
            [x for hyps in theirs for _, lp, score in hyps for x in (lp, score)], abs=1e-5
        )
        assert isinstance(ours[0][0], Hypothesis)


def test_the_loader_runs_where_s2s_jax_cannot_be_imported(workdir, tmp_path, capsys):
    out = tmp_path / "copy.s2s"
    code = cli.main(["export", "--workdir", str(workdir), "--out", str(out), "--beam", "2"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["beam"] == 2 and summary["loader"] == str(LOADER)
    assert set(summary["platforms"]) == set(export.PLATFORMS)
    program = tmp_path / "program"
    program.mkdir()
    (program / "standalone.py").write_text(LOADER.read_text())
    script = (
        "import sys\n"
        "sys.modules['s2s_jax'] = None  # any import of s2s_jax now fails\n"
        "import standalone\n"
        "sys.exit(standalone.main())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", script, str(out), "--n-best", "2", "abc", "jihgfedcba", "a#b#"],
        cwd=program,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line.split("\t") for line in proc.stdout.splitlines()]
    translator = Translator.from_workdir(workdir)
    expected = translator.translate(["abc", "jihgfedcba", "a#b#"], beam=2, n_best=2)
    # An input character the vocabulary lacks: reported as `s2s translate` reports it.
    assert translator.unknown_tokens(["a#b#"]) == {"#": 2}
    assert "2 input token(s) not in the source vocabulary, read as <unk>: '#'" in proc.stderr
    # The columns of `s2s translate --n-best`: input, rank, score, log P, text.
    assert [(int(n), int(r), t) for n, r, _, _, t in lines] == [
        (n, r, h.text) for n, hyps in enumerate(expected, 1) for r, h in enumerate(hyps, 1)
    ]
    assert [float(x) for _, _, s, lp, _ in lines for x in (s, lp)] == pytest.approx(
        [x for hyps in expected for h in hyps for x in (h.score, h.log_prob)], abs=1e-4
    )


def _rewrite(path: Path, **members) -> None:
    with zipfile.ZipFile(path) as z:
        parts = {name: z.read(name) for name in z.namelist()}
    parts.update(members)
    with zipfile.ZipFile(path, "w") as z:
        for name, data in parts.items():
            z.writestr(name, data)


def test_a_file_whose_parts_do_not_belong_is_refused(workdir, tmp_path, capsys):
    loader = standalone()
    ours, other = tmp_path / "ours.s2s", tmp_path / "other.s2s"
    ours.write_bytes(export.export(Translator.from_workdir(workdir), platforms=("cpu",)))
    other.write_bytes(export.export(word_translator(), platforms=("cpu",)))
    with zipfile.ZipFile(other) as z:
        _rewrite(ours, **{export.PARAMS: z.read(export.PARAMS)})
    with pytest.raises(loader.ExportedModelError, match="do not fit its translate function"):
        loader.load(ours)

    with zipfile.ZipFile(other) as z:
        manifest = json.loads(z.read(export.MANIFEST))
    _rewrite(other, **{export.MANIFEST: json.dumps({**manifest, "version": 99})})
    with pytest.raises(loader.ExportedModelError, match="version 99; this loader reads"):
        loader.load(other)
    with pytest.raises(loader.ExportedModelError, match="not a model written by `s2s export`"):
        loader.load(io.BytesIO(b"not a zip"))

    cuda_only = tmp_path / "cuda.s2s"
    cuda_only.write_bytes(export.export(Translator.from_workdir(workdir), platforms=("cuda",)))
    with pytest.raises(loader.ExportedModelError, match="exported for cuda, not cpu"):
        loader.load(cuda_only)

    argv = ["export", "--workdir", str(workdir), "--out", str(tmp_path / "x.s2s")]
    assert cli.main([*argv, "--platforms", "cpu,quantum"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("s2s: error: cannot export for platforms cpu, quantum: choose")
    assert not (tmp_path / "x.s2s").exists()
    assert cli.main([*argv, "--workdir", str(workdir)]) == 2  # not the last one, silently
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "s2s: error: s2s export takes one --workdir: an ensemble cannot be exported"
    assert not (tmp_path / "x.s2s").exists()
