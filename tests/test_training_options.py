"""Options users reach for, through the real `s2s` command: fine-tuning a trained workdir on
new data (`init_from`), checkpoints between evaluations (`save_every`), gradient accumulation
(`accumulate`)."""

from __future__ import annotations

import json
import signal

import jax
import numpy as np
import test_faults
from test_faults import TINY, assert_one_line, s2s

from s2s_jax.run import workdir as wd

env = test_faults.env


def pairs_file(path, words):
    path.write_text("".join(f"{w}\t{w[::-1]}\n" for w in words))


def params_of(workdir, which):
    return jax.tree.leaves(wd.restore_params(wd.load(workdir), which=which)[0])


def test_fine_tuning_starts_from_the_trained_parameters(tmp_path, env):
    """`--set init_from=W` on new data: W's vocabularies and model; at learning rate 0 the
    parameters stay W's best exactly; a model of other shapes is refused in one line."""
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdef"), size=rng.integers(1, 7))) for _ in range(120)]
    pairs_file(tmp_path / "base.tsv", words[:100])
    pairs_file(tmp_path / "new.tsv", words[100:])
    (tmp_path / "tiny.toml").write_text(TINY)
    base = ["train", "--config", "tiny.toml", "--no-progress", "--workdir", "base", "--steps", "4"]
    rc, out, err = s2s(*base, "--train", "base.tsv", "--valid", "new.tsv", cwd=tmp_path, env=env)
    assert rc == 0, err
    # No --config: the model comes from the base run, not from the defaults.
    tune = ["train", "--no-progress", "--train", "new.tsv", "--valid", "new.tsv", "--steps", "1"]
    tune += ["--set", "init_from=base", "--set", "warmup_steps=0"]
    rc, out, err = s2s(*tune, "--set", "learning_rate=0", "--workdir", "frozen", cwd=tmp_path,
                       env=env)  # fmt: skip
    assert rc == 0, err
    assert f"starting from the parameters and vocabularies of {tmp_path / 'base'}: step" in err
    frozen, source = wd.load(tmp_path / "frozen"), wd.load(tmp_path / "base")
    assert frozen.model_cfg == source.model_cfg and frozen.src_vocab == source.src_vocab
    assert frozen.train_cfg.init_from == str(tmp_path / "base")
    for a, b in zip(params_of(tmp_path / "frozen", "latest"), params_of(tmp_path / "base", "best")):
        np.testing.assert_array_equal(a, b)
    bigger = [*tune, "--set", "dec_hidden=20", "--workdir", "bigger"]
    line = assert_one_line(s2s(*bigger, cwd=tmp_path, env=env), 2, "do not fit this model")
    assert "dec_hidden=20 (it has 12)" in line and not (tmp_path / "bigger").exists()


def test_checkpoints_between_evaluations_and_micro_batches(tmp_path, env):
    """`save_every=3` with `eval_every=8`: steps 3 and 6 are kept besides 8, validated only at
    8; `accumulate=2` trains; a batch that does not split into micro-batches is refused."""
    pairs_file(tmp_path / "data.tsv", [w * k for w in "abcdef" for k in range(1, 5)])
    (tmp_path / "tiny.toml").write_text(TINY)
    train = ["train", "--config", "tiny.toml", "--no-progress", "--steps", "8"]
    train += ["--train", "data.tsv", "--valid", "data.tsv", "--set", "eval_every=8"]
    options = ["--set", "save_every=3", "--set", "keep_checkpoints=5", "--set", "accumulate=2"]
    rc, out, err = s2s(*train, *options, "--workdir", "run", cwd=tmp_path, env=env)
    assert rc == 0, err
    ckpts = wd.load(tmp_path / "run").checkpoints()
    assert ckpts.latest_steps() == [3, 6, 8]
    ckpts.close()
    assert err.count("(saved)") == 1  # the evaluation's
    odd = [*train, "--set", "accumulate=3", "--workdir", "odd"]  # batch_size 8
    assert_one_line(s2s(*odd, cwd=tmp_path, env=env), 2, "does not split into accumulate=3")


def test_a_signal_during_validation_does_not_wait_for_it(tmp_path, env):
    """SIGTERM right after step 4's log line, as its validation of 2,000 examples (beam 4)
    begins: the validation is left (no record of it), step 4 is saved as the latest step (not
    as a best one: it has no metric), and the exit names it."""
    from test_faults import Running

    (tmp_path / "tiny.toml").write_text(TINY)
    train = ["train", "--config", "tiny.toml", "--no-progress", "--workdir", "run", "--steps", "8"]
    train += ["--task", "numbers-en-fr", "--set", "log_every=4", "--set", "eval_every=4"]
    train += ["--set", "eval_examples=2000", "--set", "eval_beam=4"]
    running = Running(*train, cwd=tmp_path, env=env)
    running.wait_for(r"^step 4/8")
    running.proc.send_signal(signal.SIGTERM)
    rc, out, err = running.finish()
    assert rc == 128 + signal.SIGTERM, err
    assert "s2s: SIGTERM at step 4: step 4 is saved; run the same command to resume" in err
    records = [
        json.loads(line) for line in (tmp_path / "run" / wd.METRICS).read_text().splitlines()
    ]
    assert not any(r["split"] == "valid" for r in records)
    ckpts = wd.load(tmp_path / "run").checkpoints()
    assert ckpts.latest_steps() == [4] and ckpts.best_step() is None
    ckpts.close()
