"""The library's own cached, jitted entry points compile once per shape, however often they are
called and from however many objects: `Translator`'s decoders and scorer, the evaluation loss,
and the data-parallel step, in the training loop too. (Counted on those very entry points,
through jax's compilation cache of each, with `chex.assert_max_traces` on the step body, and
by the compilations jax reports through `jax.monitoring`.)"""

import chex
import jax
import numpy as np
import pytest

from s2s_jax import cli
from s2s_jax.data import Task, Vocab, load_task, train_batches
from s2s_jax.inference import evaluate, translate
from s2s_jax.nn import model
from s2s_jax.run import config
from s2s_jax.training import parallel, state
from s2s_jax.training.step import train_step

LENGTHS = config.TrainConfig(max_src_len=12, max_tgt_len=12, buckets=1)
DECODE = config.DecodeConfig(sentences_per_batch=8)
VOCAB = Vocab.build(["abcdef"], "char")
CFG = model.Seq2SeqConfig(
    src_vocab=len(VOCAB),
    tgt_vocab=len(VOCAB),
    src_embed=8,
    tgt_embed=8,
    enc_hidden=8,
    dec_hidden=8,
    attention="bahdanau",
    attn_dim=8,
)


def translator(seed: int) -> translate.Translator:
    params = model.init(CFG, key=jax.random.key(seed))
    return translate.Translator(params, CFG, VOCAB, VOCAB, LENGTHS, DECODE)


def compiled(*entry_points) -> list[int]:
    return [f._cache_size() for f in entry_points]


def test_translator_entry_points_compile_once_per_shape():
    entry_points = (translate._greedy, translate._beam, translate._log_prob)
    first = translator(0)
    first.translate(["abc", "de", "f"])  # 3 sentences: the padded batch of 4
    first.translate(["abc", "de", "f"], beam=3, n_best=2)
    first.score([("abc", "cba"), ("de", "ed")])  # 2 sentences: the padded batch of 2
    warm = compiled(*entry_points)
    # Other sentences of the same shapes, from the same and from another Translator.
    second = translator(1)
    for t in (first, second):
        t.translate(["fed", "a", "bb", "ccc"])
        t.translate(["ab", "b", "c"], beam=3, n_best=2)
        t.score([("a", "b"), ("fff", "e")])
    assert compiled(*entry_points) == warm
    first.translate(["ab"] * 9)  # a batch of 8 and one of 1: two new shapes, once each
    first.translate(["cd"] * 9)
    assert compiled(*entry_points)[0] == warm[0] + 2


def test_the_evaluation_loss_compiles_once_per_shape():
    pairs = [("abc", "cba"), ("de", "ed"), ("f", "f")]
    task = Task(
        name="t",
        description="",
        src_kind="char",
        tgt_kind="char",
        metrics=("exact_match",),
        splits={"train": pairs, "valid": pairs, "test": pairs},
    )
    evaluate.evaluate(translator(0), task, "valid")
    warm = compiled(evaluate._eval_loss)
    evaluate.evaluate(translator(1), task, "valid")
    evaluate.evaluate(translator(2), task, "test")
    assert compiled(evaluate._eval_loss) == warm


def test_the_parallel_step_traces_its_body_once():
    model_cfg, train_cfg, _ = config.build(
        {
            "model": {"src_embed": 8, "tgt_embed": 8, "enc_hidden": 8, "dec_hidden": 8},
            "train": {
                "task": "copy",
                "batch_size": 8,
                "max_src_len": 12,
                "max_tgt_len": 12,
                "buckets": 1,
            },
        }
    )
    task = load_task("copy", seed=0)
    vocab = Vocab.build([s for s, _ in task.splits["train"]], "char")
    model_cfg = model_cfg.replace(src_vocab=len(vocab), tgt_vocab=len(vocab))
    from s2s_jax.data import bucket_lengths, encode_pairs

    examples, _ = encode_pairs(task.splits["train"], vocab, vocab, max_src_len=12, max_tgt_len=12)
    body = chex.assert_max_traces(
        lambda s, b, axis_name=None: train_step(
            s, b, model_cfg=model_cfg, train_cfg=train_cfg, axis_name=axis_name
        ),
        n=1,
    )
    for mode in ("none", "shard_map"):
        chex.clear_trace_counter()
        dp = parallel.DataParallel(mode, body, batch_size=8)
        st = dp.replicate(state.init_state(model_cfg, train_cfg))
        batches = train_batches(
            examples,
            batch_size=8,
            seed=0,
            src_buckets=bucket_lengths(12, 1),
            tgt_buckets=bucket_lengths(12, 1),
        )
        for _ in range(3):  # a retrace would raise inside chex
            _, _, batch = next(batches)
            st, metrics = dp.step(st, dp.shard_batch(batch))
        assert np.isfinite(float(dp.fetch(metrics)["loss"]))


@pytest.mark.parametrize("mode", ["none", "shard_map", "pmap"])
def test_the_training_loop_compiles_its_step_once(mode, tmp_path, monkeypatch):
    """A fresh state, the updated state, a checkpoint's data position and a restored state all
    reach the step: arrays on the device whether or not committed to it must not compile it
    again (each compilation of a real model costs seconds to minutes)."""
    compiled, stepping = [], []

    def count(event, duration, fun_name="", **kw):
        if event == "/jax/core/compile/backend_compile_duration" and stepping:
            compiled.append(fun_name)

    def step(self, state, batch):  # compilations while the loop calls the step are the step's
        stepping.append(True)
        try:
            return take_step(self, state, batch)
        finally:
            stepping.pop()

    take_step = parallel.DataParallel.step
    monkeypatch.setattr(parallel.DataParallel, "step", step)
    jax.monitoring.register_event_duration_secs_listener(count)
    # Sizes no other test uses, so that no earlier compilation in this process is reused.
    argv = ["train", "--workdir", str(tmp_path / "run"), "--task", "copy", "--no-progress",
            "--parallel", mode, "--set", "src_embed=7", "--set", "tgt_embed=5",
            "--set", "enc_hidden=11", "--set", "dec_hidden=13", "--set", "buckets=1",
            "--set", "batch_size=4", "--set", "max_src_len=9", "--set", "max_tgt_len=9",
            "--set", "eval_every=2", "--set", "eval_examples=4",
            "--set", "log_every=1"]  # fmt: skip
    try:
        assert cli.main([*argv, "--steps", "4"]) == 0  # saves at steps 2 and 4
        assert len(compiled) == 1, compiled
        assert cli.main([*argv, "--steps", "6"]) == 0  # resumed from step 4's checkpoint
    finally:
        jax.monitoring.unregister_event_duration_listener(count)
    assert len(compiled) == 2, compiled  # once more: a restored state's step
