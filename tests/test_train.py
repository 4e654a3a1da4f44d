"""Training: the loss against numpy, exact resumption after SIGKILL, non-finite losses."""

import dataclasses
import json
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.data import Batch
from s2s_jax.data.survey import survey_pairs
from s2s_jax.errors import ConfigError
from s2s_jax.inference.translate import Translator
from s2s_jax.nn import model
from s2s_jax.nn.loss import loss_terms
from s2s_jax.run import config
from s2s_jax.run import workdir as wd
from s2s_jax.run.task_data import load_task_data
from s2s_jax.training import loop, state
from s2s_jax.training.plan import configure
from s2s_jax.training.step import train_step
from s2s_jax.training.vocabularies import build_vocabs

TINY = {
    "model": {
        "src_embed": 8,
        "tgt_embed": 8,
        "enc_hidden": 12,
        "dec_hidden": 12,
        "attn_dim": 8,
        "dropout": 0.1,
    },
    "train": {
        "task": "copy",
        "batch_size": 8,
        "steps": 12,
        "eval_every": 4,
        "log_every": 2,
        "eval_examples": 8,
        "max_src_len": 24,
        "max_tgt_len": 24,
        "buckets": 1,
    },
}


def tiny_batch():
    src = jnp.array([[4, 5, 6], [7, 0, 0]])
    tgt = jnp.array([[6, 5, 4, 2], [7, 2, 0, 0]])
    return Batch(src, jnp.array([3, 1]), tgt, jnp.array([4, 2]))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_loss_matches_numpy(smoothing):
    cfg = model.Seq2SeqConfig(src_vocab=9, tgt_vocab=9, enc_hidden=8, dec_hidden=8)
    params = model.init(cfg, key=jax.random.key(0))
    batch = tiny_batch()
    loss, sums = loss_terms(params, batch, None, model_cfg=cfg, label_smoothing=smoothing)
    logits = np.asarray(
        model.forward(params, batch.src, batch.src_len, batch.tgt, cfg=cfg), np.float64
    )
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = nll = 0.0
    for b in range(2):
        for t in range(int(batch.tgt_len[b])):
            target_nll = -logp[b, t, batch.tgt[b, t]]
            nll += target_nll
            want += (1 - smoothing) * target_nll + smoothing * -logp[b, t].mean()
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    np.testing.assert_allclose(sums["nll"], nll, rtol=1e-5)
    assert sums["tokens"] == 6


def test_non_finite_update_is_skipped():
    values = config.merge(
        TINY, {"model": {"src_vocab": 9, "tgt_vocab": 9}, "train": {"warmup_steps": 0}}
    )
    model_cfg, train_cfg, _ = config.build(values)
    step = jax.jit(lambda s, b: train_step(s, b, model_cfg=model_cfg, train_cfg=train_cfg))
    st = state.init_state(model_cfg, train_cfg)
    poisoned = st._replace(params=jax.tree.map(lambda x: x, st.params))
    poisoned.params["tgt_embed"] = poisoned.params["tgt_embed"].at[4, 0].set(jnp.nan)
    new, metrics = step(poisoned, tiny_batch())
    assert metrics["finite"] == 0
    jax.tree.map(np.testing.assert_array_equal, new.params, poisoned.params)
    new, metrics = step(st, tiny_batch())
    assert metrics["finite"] == 1 and not np.array_equal(
        new.params["tgt_embed"], st.params["tgt_embed"]
    )


@pytest.mark.parametrize(
    "rate_name", ["annotation_dropout", "src_word_dropout", "tgt_word_dropout"]
)
def test_each_dropout_alone_gets_a_dropout_key(rate_name):
    """With `dropout = 0`, a step still draws a key when only this rate is on: its loss
    differs from the same step without, on the same state."""
    losses = []
    for rate in (0.0, 0.5):
        values = config.merge(
            TINY,
            {
                "model": {
                    "src_vocab": 9,
                    "tgt_vocab": 9,
                    "dropout": 0.0,
                    "attention": "bahdanau",
                    rate_name: rate,
                },
                "train": {"warmup_steps": 0},
            },
        )
        model_cfg, train_cfg, _ = config.build(values)
        st = state.init_state(model_cfg, train_cfg)
        _, metrics = jax.jit(
            lambda s, b: train_step(s, b, model_cfg=model_cfg, train_cfg=train_cfg)
        )(st, tiny_batch())
        losses.append(float(metrics["loss"]))
    assert losses[0] != pytest.approx(losses[1], rel=1e-4)


EVERY_DROPOUT = {
    "attention": "bahdanau",
    "enc_layers": 2,
    "dropout": 0.3,
    "annotation_dropout": 0.2,
    "src_word_dropout": 0.2,
    "tgt_word_dropout": 0.2,
}


@pytest.mark.parametrize("dropouts", [{"dropout": 0.0}, EVERY_DROPOUT], ids=["none", "every"])
def test_accumulated_micro_batches_give_the_whole_batch_update(dropouts):
    """accumulate=2 runs the batch's two rows (4 and 2 target tokens) one after another: the
    same update and metrics as the whole batch at once, not the mean of two per-row means;
    with dropout too (each row draws its masks from its index in the batch)."""
    values = config.merge(
        TINY,
        {
            "model": {"src_vocab": 9, "tgt_vocab": 9, **dropouts},
            "train": {"warmup_steps": 0, "batch_size": 2},
        },
    )
    model_cfg, whole_cfg, _ = config.build(values)
    micro_cfg = dataclasses.replace(whole_cfg, accumulate=2)
    st = state.init_state(model_cfg, whole_cfg)
    results = [
        jax.jit(lambda s, b, c=c: train_step(s, b, model_cfg=model_cfg, train_cfg=c))(
            st, tiny_batch()
        )
        for c in (whole_cfg, micro_cfg)
    ]
    (whole, whole_metrics), (micro, micro_metrics) = results
    for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(micro.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    for name in ("loss", "tokens", "accuracy", "grad_norm"):
        np.testing.assert_allclose(whole_metrics[name], micro_metrics[name], rtol=1e-5)
    assert not np.allclose(whole.params["tgt_embed"], st.params["tgt_embed"])  # it did update
    # A mean of the two rows' own means would weight the 2-token row's tokens double.
    row = lambda i: Batch(*(x[i : i + 1] for x in tiny_batch()))
    per_row = [loss_terms(st.params, row(i), None, model_cfg=model_cfg)[1] for i in (0, 1)]
    mean_of_means = np.mean([s["nll"] / s["tokens"] for s in per_row])
    assert not np.isclose(mean_of_means, micro_metrics["loss"], rtol=1e-3)
    with pytest.raises(ConfigError, match="does not split into accumulate=3"):
        dataclasses.replace(whole_cfg, accumulate=3)


def test_diverging_run_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path):
    run = config.merge(
        TINY,
        {
            "train": {
                "learning_rate": 1e38,
                "clip_norm": 0.0,
                "schedule": "constant",
                "warmup_steps": 1,
                "eval_every": 1,
                "log_every": 1,
            }
        },
    )
    # warmup: step 1 runs at learning rate 0 and is saved; step 2 diverges
    with pytest.raises(
        loop.TrainingError, match=r"non-finite at step 2.*last good checkpoint \(step 1\) is kept"
    ):
        loop.fit(tmp_path, run, progress=False)
    ckpts = wd.checkpoints(tmp_path)
    assert ckpts.latest_step() == 1
    r = wd.load(tmp_path)
    params = ckpts.restore(state.abstract_state(r.model_cfg, r.train_cfg)).params
    ckpts.close()
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


KILLER = textwrap.dedent("""
    import os, signal, sys
    import orbax.checkpoint as ocp
    from s2s_jax import compile_cache
    from s2s_jax.run import checkpoint
    from s2s_jax.training import loop
    compile_cache.enable()  # the session's cache (conftest), as the s2s command would
    kill_step, when = int(sys.argv[2]), sys.argv[3]
    def die():
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup at all
    save, write = checkpoint.Checkpoints.save, ocp.handlers.CompositeCheckpointHandler.save
    def save_then_die(self, step, state, **kw):
        checkpoint.Checkpoints.armed = step == kill_step
        save(self, step, state, **kw)
        if checkpoint.Checkpoints.armed:
            die()
    def write_then_die(self, *args, **kw):  # the data are written, not yet finalised
        write(self, *args, **kw)
        if when == "during" and checkpoint.Checkpoints.armed:
            die()
    checkpoint.Checkpoints.armed = False
    checkpoint.Checkpoints.save = save_then_die
    ocp.handlers.CompositeCheckpointHandler.save = write_then_die
    loop.fit(sys.argv[1], eval(sys.argv[4]), progress=False)
""")


def final_params(workdir):
    return wd.restore_params(wd.load(workdir), which="latest")[0]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted run of TINY."""
    workdir = tmp_path_factory.mktemp("straight")
    loop.fit(workdir, TINY, progress=False)
    return workdir


@pytest.mark.parametrize("when", ["after", "during"])
def test_killed_and_resumed_run_equals_uninterrupted(tmp_path, straight, when):
    """SIGKILL right after the step-8 checkpoint is saved ("after") or once its data are
    written but not yet finalised ("during"), then resume."""
    killed = tmp_path / "killed"
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(killed), "8", when, repr(TINY)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    unfinished = list((killed / "checkpoints" / "latest").glob("8.orbax-checkpoint-tmp*"))
    assert bool(unfinished) == (when == "during")
    loop.fit(killed, TINY, progress=False)  # resumes from step 8 (or 4 if 8 was cut short)
    jax.tree.map(np.testing.assert_array_equal, final_params(killed), final_params(straight))
    # Each start of the run is recorded: the first, then the resume.
    assert [s["step"] for s in wd.load(killed).started] == [0, 8 if when == "after" else 4]


def test_resume_refuses_another_model_accepts_more_steps_and_reports_tunables(straight):
    with pytest.raises(ConfigError, match="model.enc_hidden=12, not 64"):
        configure(straight, {"model": {"enc_hidden": 64}})
    with pytest.raises(ConfigError, match="train.batch_size"):
        configure(straight, {"train": {"batch_size": 4}})
    with pytest.raises(ConfigError, match="clip_norm=1.0: clipping cannot be switched on or off"):
        configure(straight, {"train": {"clip_norm": 0.0}})
    with pytest.raises(ConfigError, match="has trained 12 steps already: steps=8 would undo"):
        configure(straight, {"train": {"steps": 8}})
    plan = configure(straight, {"train": {"steps": 99, "eval_every": 3}})
    assert plan.resume and plan.values["train"]["steps"] == 99
    assert plan.changes == (("steps", 12, 99),)  # announced: the cosine schedule stretches
    plan = configure(straight, {"train": {"learning_rate": 1e-3, "clip_norm": 0.5}})
    assert plan.resume and plan.changes == (("learning_rate", 3e-3, 1e-3), ("clip_norm", 1.0, 0.5))
    assert plan.values["train"]["learning_rate"] == 1e-3
    # How the model decodes may change freely; a key of its earlier section still works.
    moved = config.parse_overrides(["beam=4", "train.max_len_ratio=1.5"])
    assert moved["decode"] == {"beam": 4, "max_len_ratio": 1.5} and moved["train"] == {}
    plan = configure(straight, moved)
    assert plan.resume and plan.values["decode"]["beam"] == 4
    # ... and the change is announced and recorded, as the optimisation settings' are.
    assert plan.changes == (("decode.beam", 1, 4), ("decode.max_len_ratio", 2.0, 1.5))


def test_a_finished_run_says_so_and_returns_its_last_validation_metrics(straight):
    logged = []
    result = loop.fit(straight, TINY, progress=False, log=logged.append)
    records = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if r["split"] == "valid"][-1]
    assert last["step"] == 12 and result == {
        k: v for k, v in last.items() if k not in ("step", "split", "time")
    }
    assert set(result) == {"exact_match", "token_accuracy", "loss"}  # the copy task's
    assert any("has finished its 12 steps: nothing to train" in line for line in logged)


def test_a_workdir_without_a_checkpoint_starts_again_from_its_configuration(tmp_path):
    """A run killed (or failed) before its first checkpoint: nothing was trained, so any
    setting may change, and the stored ones are the base."""
    model_cfg, train_cfg, _ = config.build(configure(tmp_path, TINY).values)
    task = load_task_data(train_cfg)
    vocabs = build_vocabs(survey_pairs(task.splits["train"]), train_cfg, (task.src_kind,) * 2)
    wd.save(tmp_path, wd.Run(model_cfg, train_cfg, *vocabs))
    plan = configure(tmp_path, {"train": {"batch_size": 4}})
    assert not plan.resume
    assert plan.values["train"]["batch_size"] == 4 and plan.values["model"]["enc_hidden"] == 12


def test_early_stopping_after_patience_evaluations_without_improvement(tmp_path):
    """With a zero learning rate nothing improves after the first evaluation: the ties move
    the best checkpoint to the later step, but do not count as improvements."""
    run = config.merge(
        TINY, {"train": {"learning_rate": 0.0, "steps": 40, "eval_every": 2, "patience": 2}}
    )
    loop.fit(tmp_path, run, progress=False)
    ckpts = wd.checkpoints(tmp_path)
    assert (ckpts.improved_at(), ckpts.best_step(), ckpts.latest_step()) == (2, 6, 6)
    ckpts.close()


def test_best_metric_chooses_the_best_checkpoint_in_its_direction(tmp_path):
    """best_metric=loss is minimised: the best step is the validation loss's minimum (the
    later one on a tie), and a translator loaded from the workdir says so."""
    logged = []
    run = config.merge(TINY, {"train": {"best_metric": "loss"}})
    loop.fit(tmp_path, run, progress=False, log=logged.append)
    assert any("warmup_steps=200 is not below steps=12" in line for line in logged)
    # Without a progress bar (a batch job), a plain line every log_every steps, whose learning
    # rate is the schedule's at that step's update (here in its linear warmup).
    lines = [line for line in logged if line.startswith("step ") and "/12:" in line]
    assert [line.split(":")[0] for line in lines] == [f"step {s}/12" for s in range(2, 13, 2)]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    for r in train:
        assert r["learning_rate"] == pytest.approx(3e-3 * (r["step"] - 1) / 200, rel=1e-5)
        assert f"learning rate {r['learning_rate']:.3g}," in lines[r["step"] // 2 - 1]
    assert all(r["tokens_per_s"] > 0 for r in train[1:])  # step 1 compiled: untimed
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [(r["loss"], -r["step"]) for r in records if r["split"] == "valid"]
    best_loss, minus_step = min(losses)
    ckpts = wd.checkpoints(tmp_path)
    assert (ckpts.best_step(), ckpts.best_metric()) == (-minus_step, pytest.approx(best_loss))
    ckpts.close()
    said = []
    translator = Translator.from_workdir(tmp_path, log=said.append)
    assert translator.loaded == {
        "checkpoint": "best",
        "step": -minus_step,
        "metric": "loss",
        "value": pytest.approx(best_loss),
    }
    assert said == [f"{tmp_path}: step {-minus_step}, the best by loss ({best_loss:.4g})"]
    with pytest.raises(ConfigError, match="best_metric='bleu' is not computed for task copy"):
        loop.fit(tmp_path / "other", config.merge(TINY, {"train": {"best_metric": "bleu"}}))
    assert not (tmp_path / "other").exists()


def test_every_bare_key_names_one_field():
    """`--set beam=4` works for every field: no name appears in two sections."""
    for section, cls in config.SECTIONS.items():
        for field in dataclasses.fields(cls):
            assert config.resolve_key(field.name) == (section, field.name)


def test_a_config_file_builds_on_the_same_defaults_as_the_command_line(tmp_path):
    """`s2s config` prints the defaults under every run, with or without --config."""
    toml = tmp_path / "only-the-task.toml"
    toml.write_text('[train]\ntask = "copy"\n')
    with_file = configure(tmp_path / "a", config.load_file(toml)).values
    without = configure(tmp_path / "b", {"train": {"task": "copy"}}).values
    assert with_file == without
    assert with_file["model"]["attention"] == config.DEFAULTS["model"]["attention"] == "bahdanau"
