"""The command line end to end: the experiment smoke variants, translate/score/eval, errors."""

import argparse
import importlib.metadata
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tomllib

import pytest

from s2s_jax import cli
from s2s_jax.data import load_task

EXPERIMENTS = pathlib.Path(__file__).parent.parent / "experiments"


def run(capsys, *argv, stdin=None, monkeypatch=None):
    if stdin is not None:
        import io

        raw = stdin if isinstance(stdin, bytes) else stdin.encode("utf-8")
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8"))
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The cho2014 smoke variant, trained once for the inference commands."""
    workdir = tmp_path_factory.mktemp("cho")
    assert (
        cli.main(
            [
                "train",
                "--config",
                str(EXPERIMENTS / "cho2014.toml"),
                "--smoke",
                "--workdir",
                str(workdir),
                "--no-progress",
            ]
        )
        == 0
    )
    return workdir


@pytest.mark.parametrize("name", ["sutskever2014", "bahdanau2015"])
def test_experiment_smoke_variants_train(tmp_path, capsys, name):
    code, out, err = run(
        capsys,
        "train",
        "--config",
        EXPERIMENTS / f"{name}.toml",
        "--smoke",
        "--workdir",
        tmp_path,
        "--no-progress",
    )
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert 0.0 <= result["exact_match"] <= 1.0 and result["loss"] > 0
    assert (tmp_path / "config.json").is_file() and (tmp_path / "metrics.jsonl").is_file()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {r["split"] for r in records} == {"train", "valid"}


def test_translate_score_eval(trained, capsys, monkeypatch):
    code, out, err = run(capsys, "translate", "--workdir", trained, "abc", "", "jjj")
    lines = out.split("\n")
    assert code == 0 and len(lines) == 4 and lines[1] == "" and lines[3] == ""
    assert re.fullmatch(rf"{trained}: step \d+, the best by exact_match \(\S+\)\n", err), err
    code, out2, _ = run(
        capsys, "translate", "--workdir", trained, stdin="abc\n\njjj\n", monkeypatch=monkeypatch
    )
    assert code == 0 and out2 == out  # arguments or stdin, same output
    code, out, _ = run(
        capsys, "translate", "--workdir", trained, "--beam", "3", "--n-best", "2", "ab", "c"
    )
    rows = [line.split("\t") for line in out.splitlines()]
    assert code == 0 and [r[:2] for r in rows] == [["1", "1"], ["1", "2"], ["2", "1"], ["2", "2"]]
    assert float(rows[0][2]) >= float(rows[1][2]) and all(float(r[3]) <= 0 for r in rows)
    code, out, _ = run(capsys, "translate", "--workdir", trained, "--n-best", "3", "ab")
    assert code == 0 and len(out.splitlines()) == 3  # --n-best alone: a beam of 3
    code, out, _ = run(
        capsys,
        "score",
        "--workdir",
        trained,
        stdin="ab\tab\nab\tjjjjjjj\n",
        monkeypatch=monkeypatch,
    )
    scores = [float(x) for x in out.split()]
    assert code == 0 and len(scores) == 2 and all(s < 0 for s in scores)
    code, out, _ = run(capsys, "eval", "--workdir", trained, "--split", "valid", "--limit", "8")
    assert code == 0 and set(json.loads(out)) >= {"exact_match", "token_accuracy", "loss"}


def test_eval_cites_what_it_measured_and_takes_files_and_outputs(
    trained, tmp_path, capsys, monkeypatch
):
    """From another directory with relative paths: the JSON names the split, count,
    checkpoint, step, decoding and sacrebleu signature; --output holds what `translate` gives;
    --file scores a TSV, a source on two lines being right when either target matches."""
    monkeypatch.chdir(tmp_path)
    workdir = os.path.relpath(trained)
    argv = ("eval", "--workdir", workdir, "--split", "valid", "--limit", "5")
    decoding = ("--beam", "2", "--alpha", "0.8")
    code, out, err = run(capsys, *argv, *decoding, "--output", "hyps.txt")
    assert code == 0, err
    result = json.loads(out)
    assert {k: result[k] for k in ("split", "examples", "beam", "alpha")} == {
        "split": "valid",
        "examples": 5,
        "beam": 2,
        "alpha": 0.8,
    }
    [member] = result["members"]  # as an ensemble's: one entry per model
    assert member["workdir"] == str(trained) and member["checkpoint"] == "best"
    assert f"step {member['step']}, the best by exact_match" in err
    assert "bleu" not in result and "bleu_signature" not in result  # not a metric of copy
    hyps = pathlib.Path("hyps.txt").read_text().splitlines()
    sources = [s for s, _ in load_task("copy", seed=0).splits["valid"][:5]]
    _, want, _ = run(capsys, "translate", "--workdir", workdir, *decoding, *sources)
    assert hyps == want.splitlines()

    pairs = f"{sources[0]}\tnot this one\n{sources[0]}\t{hyps[0]}\n{sources[1]}\t{hyps[1]}\n"
    pathlib.Path("pairs.tsv").write_text(pairs)
    code, out, err = run(capsys, "eval", "--workdir", workdir, "--file", "pairs.tsv", *decoding)
    result = json.loads(out)
    assert code == 0 and result["file"] == str(tmp_path / "pairs.tsv"), err
    assert result["examples"] == 2 and result["exact_match"] == 1.0
    one_line_error(
        capsys, "eval", "--workdir", workdir, "--file", "pairs.tsv", "--split", "test",
        match="either --split or --file",
    )  # fmt: skip


def test_eval_of_a_split_the_run_does_not_have_is_refused(trained, tmp_path, capsys):
    """A TSV run without a test file has no test split: said, not the validation set scored."""
    workdir = tmp_path / "w"
    shutil.copytree(trained, workdir)
    stored = json.loads((workdir / "config.json").read_text())
    (tmp_path / "pairs.tsv").write_text("abc\tabc\n")
    stored["train"].update(
        task="tsv", train_file=str(tmp_path / "pairs.tsv"), valid_file=str(tmp_path / "pairs.tsv")
    )
    (workdir / "config.json").write_text(json.dumps(stored))
    one_line_error(
        capsys, "eval", "--workdir", workdir, "--split", "test",
        match=f"{workdir} has no test split (its data: train, valid): train with --test FILE",
    )  # fmt: skip


def test_the_decode_section_gives_translate_its_defaults(trained, tmp_path, capsys):
    """`--set decode.beam=3` on a finished run is recorded and becomes `translate`'s default;
    a workdir of an earlier version (max_len_ratio under [train], no [decode]) still loads."""
    workdir = tmp_path / "w"
    shutil.copytree(trained, workdir)
    code, _, err = run(
        capsys, "train", "--workdir", workdir, "--set", "decode.beam=3", "--no-progress"
    )
    assert code == 0, err
    stored = json.loads((workdir / "config.json").read_text())
    assert stored["decode"]["beam"] == 3 and "max_len_ratio" not in stored["train"]
    texts = ["abc", "ba", "cabbage"]
    _, want, _ = run(capsys, "translate", "--workdir", trained, "--beam", "3", *texts)
    _, greedy, _ = run(capsys, "translate", "--workdir", trained, *texts)
    _, got, _ = run(capsys, "translate", "--workdir", workdir, *texts)
    assert got == want
    del stored["decode"]  # the earlier layout: no decode section, the output cap under train
    stored["train"].update(max_len_ratio=0.0, max_len_offset=2)
    (workdir / "config.json").write_text(json.dumps(stored))
    _, old, _ = run(capsys, "translate", "--workdir", workdir, *texts)
    capped = old.splitlines()
    assert len(capped) == 3 and all(len(line) <= 2 for line in capped)
    assert greedy != old and any(len(line) > 2 for line in greedy.splitlines())


def test_unknown_characters_map_to_unk(trained, capsys):
    code, out, err = run(capsys, "translate", "--workdir", trained, "ab€", "€€")
    assert code == 0 and len(out.split("\n")) == 3
    assert "3 input token(s) not in the source vocabulary, read as <unk>: '€'" in err


def one_line_error(capsys, *argv, stdin=None, monkeypatch=None, match):
    code, out, err = run(capsys, *argv, stdin=stdin, monkeypatch=monkeypatch)
    assert code == 2, (out, err)
    lines = [line for line in err.splitlines() if line.startswith("s2s: error:")]
    assert len(lines) == 1 and match in lines[0], err
    assert "Traceback" not in err


def test_errors_are_one_line(tmp_path, trained, capsys, monkeypatch):
    w = tmp_path / "w"
    one_line_error(
        capsys,
        "train",
        "--workdir",
        w,
        "--train",
        tmp_path / "missing.tsv",
        "--valid",
        tmp_path / "missing.tsv",
        match="no such file",
    )
    bad = tmp_path / "bad.tsv"
    bad.write_text("one\tun\ntwo deux\n")
    one_line_error(
        capsys, "train", "--workdir", w, "--train", bad, "--valid", bad, match="bad.tsv:2: no tab"
    )
    one_line_error(
        capsys, "train", "--workdir", w, "--task", "klingon", match="unknown task 'klingon'"
    )
    one_line_error(
        capsys, "train", "--workdir", w, "--set", "hiden=3", match="unknown config key 'hiden'"
    )
    one_line_error(
        capsys, "train", "--workdir", w, "--set", "cell=transformer", match="cell must be"
    )
    one_line_error(
        capsys, "translate", "--workdir", tmp_path / "empty", "x", match="empty does not exist"
    )
    one_line_error(
        capsys,
        "train",
        "--config",
        EXPERIMENTS / "cho2014.toml",
        "--smoke",
        "--workdir",
        trained,
        "--set",
        "enc_hidden=32",
        "--no-progress",
        match="model.enc_hidden=16, not 32",
    )
    one_line_error(
        capsys,
        "score",
        "--workdir",
        trained,
        stdin="no tab here\n",
        monkeypatch=monkeypatch,
        match="stdin:1",
    )
    one_line_error(
        capsys,
        "translate",
        "--workdir",
        trained,
        "--too-long",
        "refuse",
        "a" * 500,
        match="line 1 has 500 tokens; this model reads at most",
    )
    assert not w.exists() or not (w / "checkpoints").exists()


def test_checkpoint_of_another_configuration(tmp_path, trained, capsys):
    """A workdir whose config no longer matches its checkpoint (e.g. edited by hand)."""
    import shutil

    w = tmp_path / "copy"
    shutil.copytree(trained, w)
    cfg = json.loads((w / "config.json").read_text())
    cfg["model"]["dec_hidden"] = 24
    (w / "config.json").write_text(json.dumps(cfg))
    one_line_error(
        capsys, "translate", "--workdir", w, "abc", match="different model configuration"
    )


def test_tasks_lists_the_builtin_tasks(capsys):
    code, out, _ = run(capsys, "tasks")
    names = [line.split("\t")[0] for line in out.splitlines()]
    assert code == 0 and names[:2] == ["numbers-en-fr", "g2p"]
    assert {"copy", "reverse", "sort", "addition"} <= set(names)


def test_output_into_a_closed_pipe_is_not_an_error():
    """`s2s config | head -2`: no error line, the status of a filter cut short (141)."""
    import subprocess
    import sys

    code = "from s2s_jax import cli; import sys; sys.exit(cli.main(['config']))"
    proc = subprocess.run(
        f'{sys.executable} -c "{code}" | head -1',
        shell=True,
        capture_output=True,
        text=True,
        executable="/bin/bash",
    )
    assert proc.stdout.count("\n") == 1 and "error" not in proc.stderr, proc.stderr


def test_every_subcommand_and_flag_has_help_and_an_example():
    parser = cli.build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subcommands.choices.items():
        if name == "bench":  # its own parser (s2s_jax.bench.main), tested in test_bench
            continue
        assert sub.epilog and sub.epilog.startswith(f"example: s2s {name}") or name == "score"
        for action in sub._actions:
            assert action.help, f"s2s {name} {action.option_strings or action.dest}: no help"


def test_version_through_the_installed_command():
    s2s = shutil.which("s2s", path=str(pathlib.Path(sys.executable).parent)) or "s2s"
    out = subprocess.run([s2s, "--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"s2s {importlib.metadata.version('s2s-jax')}"


def test_config_prints_what_a_run_of_a_file_and_sets_would_get(tmp_path, capsys):
    toml = tmp_path / "run.toml"
    toml.write_text('[train]\ntask = "copy"\nmax_len_ratio = 1.5\n[decode]\nbeam = 3\n')
    code, out, err = run(capsys, "config", "--config", toml, "--set", "dropout=0.25")
    assert code == 0, err
    values = tomllib.loads(out)  # an experiment file
    assert values["model"]["dropout"] == 0.25 and values["train"]["task"] == "copy"
    assert values["decode"]["beam"] == 3 and values["decode"]["max_len_ratio"] == 1.5  # moved key
    assert values["model"]["attention"] == "bahdanau"  # the defaults under every run
    assert (
        'cell = "gru"  # rnn | gru | lstm | sru | mingru | minlstm (the last three: linear cells)'
        in out.splitlines()
    )
    one_line_error(capsys, "config", "--set", "beam=0", match="beam must be >= 1, got 0")


def test_config_output_reads_back_as_the_same_run(tmp_path):
    """`s2s config > my.toml && s2s config --config my.toml` prints the same file, from another
    directory with relative paths, through the installed command."""
    s2s = shutil.which("s2s", path=str(pathlib.Path(sys.executable).parent)) or "s2s"
    g2p = EXPERIMENTS / "g2p" / "attention.toml"
    script = (
        f"{s2s} config --config {g2p} --set dropout=0.3 > my.toml && "
        f"{s2s} config --config my.toml > again.toml && cmp my.toml again.toml"
    )
    proc = subprocess.run(script, shell=True, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    values = tomllib.loads((tmp_path / "my.toml").read_text())
    assert values["model"]["dropout"] == 0.3 and values["train"]["bucket_multiple"] == 8
    every = (tmp_path / "my.toml").read_text().splitlines()
    fields = [line for line in every if " = " in line]
    assert fields and all("  # " in line for line in fields)  # every field commented


def test_translate_samples_seeded_and_holds_back_the_end(trained, capsys):
    texts = ["abcab", "ccbba", "abc", "bca"] * 4
    argv = ("translate", "--workdir", trained, "--sample", "--temperature", "1.5")
    code, first, err = run(capsys, *argv, "--seed", "1", *texts)
    assert code == 0, err
    _, again, _ = run(capsys, *argv, "--seed", "1", *texts)
    _, other, _ = run(capsys, *argv, "--seed", "2", *texts)
    assert first == again and first != other and len(set(first.splitlines())) > 1
    _, greedy, _ = run(capsys, *argv[:3], "--sample", "--top-k", "1", *texts)
    _, plain, _ = run(capsys, *argv[:3], *texts)
    assert greedy == plain  # top-k 1 draws the argmax
    _, long, _ = run(capsys, *argv[:3], "--min-len", "6", *texts)
    assert all(len(line) >= 6 for line in long.splitlines())  # characters: one per token
    one_line_error(capsys, *argv, "--beam", "3", "abc", match="--sample draws one translation")
    _, distinct, _ = run(capsys, *argv[:3], "--no-repeat-ngram", "1", "--beam", "2", *texts)
    assert all(len(set(line)) == len(line) for line in distinct.splitlines())  # no char twice
