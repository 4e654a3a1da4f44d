"""The G2P experiment's path as a user takes it (experiments/g2p/README.md): the CNTK split
converted to TSV with validation words held out by word, a run of the attention design's smoke
variant on it, and the report's figures, against a hand-made dictionary in the CNTK format."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from s2s_jax import cli

REPO = Path(__file__).resolve().parents[1]

# CNTK's format: WORD, two spaces, phonemes; a word with two pronunciations on two lines.
TRAIN = """\
ABLE  EY B AH L
BAT  B AE T
CAT  K AE T
DOG  D AO G
DOG  D AA G
EGG  EH G
FIG  F IH G
HAT  HH AE T
LOG  L AO G
MAT  M AE T
NAP  N AE P
PIG  P IH G
RAT  R AE T
SAT  S AE T
TAP  T AE P
"""
TEST = """\
CAB  K AE B
EITHER  IY DH ER
EITHER  AY DH ER
"""


def test_the_split_runs_and_reports_as_the_results_page_says(tmp_path):
    data = tmp_path / "cntk"
    data.mkdir()
    (data / "cmudict-0.7b.train").write_text(TRAIN, encoding="latin-1")
    (data / "cmudict-0.7b.test").write_text(TEST, encoding="latin-1")
    convert = [sys.executable, str(REPO / "experiments/g2p/cmudict_split.py")]
    done = subprocess.run(
        [*convert, "--data", "cntk", "--out", "g2p", "--valid-words", "4"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "differs from the file the results were measured on" in done.stderr  # not CNTK's
    read = lambda name: [x.split("\t") for x in (tmp_path / "g2p" / name).read_text().splitlines()]
    train, valid, test = read("train.tsv"), read("valid.tsv"), read("test.tsv")
    assert len({w for w, _ in valid}) == 4 and len(train) + len(valid) == 15
    assert not {w for w, _ in train} & {w for w, _ in valid}  # held out by word
    dog = [p for w, p in train + valid if w == "DOG"]
    assert sorted(dog) == ["D AA G", "D AO G"]  # both pronunciations, on one side
    assert test == [["CAB", "K AE B"], ["EITHER", "IY DH ER"], ["EITHER", "AY DH ER"]]

    workdir = tmp_path / "runs" / "g2p-attention"
    argv = ["train", "--config", REPO / "experiments/g2p/attention.toml", "--smoke",
            "--workdir", workdir, "--train", tmp_path / "g2p/train.tsv",
            "--valid", tmp_path / "g2p/valid.tsv", "--test", tmp_path / "g2p/test.tsv",
            "--no-progress"]  # fmt: skip
    assert cli.main([str(a) for a in argv]) == 0
    run = json.loads((workdir / "config.json").read_text())
    assert run["train"]["tgt_vocab_kind"] == "word" and run["train"]["metrics"] == "wer,per"

    out = tmp_path / "report"
    report = [sys.executable, str(REPO / "experiments/g2p/report.py")]
    subprocess.run(
        [*report, "--test", "g2p/test.tsv", "--beam", "2", "--out", "report",
         "--valid", "g2p/valid.tsv", "--average", "2", "--hyps", "hyps",
         f"attention={workdir}", f"pair={workdir},{workdir}"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    single = json.loads((out / "attention.json").read_text())
    pair = json.loads((out / "pair.json").read_text())
    assert single["test_words"] == 2 and 0.0 <= single["wer"] <= 1.0 and single["per"] >= 0.0
    assert [b["words"] for b in single["by_length"]] == [1, 1]  # CAB: 3 letters, EITHER: 6
    assert pair["wer"] == single["wer"] and len(pair["loaded"]["members"]) == 2
    assert len(single["training_wall_seconds"]) == 1 and len(pair["training_wall_seconds"]) == 2
    # best checkpoint or the average of the 2 latest (steps 2, 4): chosen on validation WER
    chosen = single["selection"]["chosen"]
    valid_wer = single["selection"]["valid_wer"]
    assert set(valid_wer) == {"best", "average2"} and valid_wer[chosen] == min(valid_wer.values())
    if chosen == "average2":
        assert single["loaded"]["steps"] == [2, 4]
    else:
        assert single["loaded"]["checkpoint"] == "best"
    assert (out / "curves.png").stat().st_size > 0 and (out / "by_length.png").stat().st_size > 0

    # The kept hypotheses, one per distinct word, give the paired test the JSON's WER.
    hyps = tmp_path / "hyps"
    assert len((hyps / "attention.test.txt").read_text().splitlines()) == 2
    assert len((hyps / "attention.valid.txt").read_text().splitlines()) == 4
    paired = [sys.executable, str(REPO / "experiments/paired_test.py"), "--refs", "g2p/test.tsv"]
    done = subprocess.run(
        [*paired, "hyps/attention.test.txt", "hyps/pair.test.txt"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    compared = json.loads(done.stdout)
    assert compared["error_a"] == compared["error_b"] == single["wer"]
    assert compared["only_a_right"] == compared["only_b_right"] == 0

    # More checkpoints asked for than the run kept: one line that says so, not a traceback.
    done = subprocess.run(
        [*report, "--test", "g2p/test.tsv", "--out", "report3", "--valid", "g2p/valid.tsv",
         "--average", "3", f"attention={workdir}"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "keeps 2 checkpoint(s) (2, 4), not the 3 to average" in done.stderr


def test_the_seeds_script_says_how_to_call_it(tmp_path):
    script = REPO / "experiments/g2p/seeds.sh"
    for args in ([], [str(tmp_path), "runs", "2"], [str(tmp_path), "runs", "none"]):
        done = subprocess.run([script, *args], cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 2 and "usage:" in done.stderr and "train.tsv" in done.stderr


def test_the_wall_time_leaves_out_the_pauses_between_sessions(tmp_path):
    spec = importlib.util.spec_from_file_location("g2p_report", REPO / "experiments/g2p/report.py")
    g2p_report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(g2p_report)
    times = [100.0, 110.0, 125.0, 2125.0, 2135.0]  # stopped after 125, resumed 2,000 s later
    lines = [json.dumps({"step": i, "time": t}) for i, t in enumerate(times)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert g2p_report.training_wall_seconds(tmp_path) == 10 + 15 + 10


def test_paired_test_counts_discordant_words_against_any_reference(tmp_path):
    """A hand-made case: 10 words, A right on all (one through its second reference), B wrong
    on 5 of them. McNemar's two-sided exact p for 5 discordant pairs all one way is
    2 * 0.5**5 = 0.0625; the bootstrap interval of B - A lies inside [0, 1] and holds 0.5."""
    words = [f"w{i}" for i in range(10)]
    tsv = "".join(f"{w}\tX {i}\n" for i, w in enumerate(words)) + "w0\tY 0\n"
    (tmp_path / "refs.tsv").write_text(tsv)
    (tmp_path / "a.txt").write_text("Y 0\n" + "".join(f"X {i}\n" for i in range(1, 10)))
    (tmp_path / "b.txt").write_text("".join(f"X {i}\n" if i >= 5 else "Z\n" for i in range(10)))
    args = [sys.executable, str(REPO / "experiments" / "paired_test.py")]
    args += ["--refs", str(tmp_path / "refs.tsv"), str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    out = json.loads(done.stdout)
    assert (out["examples"], out["error_a"], out["error_b"]) == (10, 0.0, 0.5)
    assert (out["only_a_right"], out["only_b_right"]) == (5, 0)
    assert abs(out["mcnemar_p"] - 0.0625) < 1e-12
    low, high = out["diff_95"]
    assert 0.0 < low <= 0.5 <= high <= 1.0

    (tmp_path / "short.txt").write_text("X 1\n")
    args[-1] = str(tmp_path / "short.txt")
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode != 0 and "short.txt has 1 lines" in done.stderr
    assert "Traceback" not in done.stderr
