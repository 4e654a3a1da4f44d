"""The benchmark harness at toy sizes: record fields, and its peers checked against our model."""

import contextlib
import dataclasses
import importlib.util
import io
import json
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax import bench
from s2s_jax.bench import groups, harness, peers, scaling
from s2s_jax.nn import decoding, model

SIZES = bench.Sizes.toy()


@pytest.fixture(scope="module")
def quick_bf16():
    """`s2s bench --quick --json --dtype bfloat16` at toy sizes: its records (float32 and
    bfloat16 in the same rounds), run once for the tests below."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert bench.main(["--quick", "--json", "--toy", "--reps", "1", "--dtype", "bfloat16"]) == 0
    return json.loads(out.getvalue()), [str(w.message) for w in caught]


def torch_autocast_runs_an_lstm() -> bool:
    """Whether torch's bfloat16 autocast runs an LSTM on its device here (oneDNN has no such
    kernel for CPUs without bfloat16 instructions)."""
    torch = peers.torch_module()
    if torch is None:
        return False
    device = peers.torch_device(torch)
    try:
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            torch.nn.LSTM(8, 16).to(device)(torch.randn(3, 2, 8, device=device))
    except RuntimeError:
        return False
    return True


def test_quick_json_run_has_finite_fields(quick_bf16):
    everything, _ = quick_bf16
    records = [r for r in everything if r["dtype"] == "float32"]
    assert {r["bench"] for r in records} == {"matmul_peak", "lstm_layer"}
    torch_version = getattr(peers.torch_module(), "__version__", None)
    for r in everything:  # each record names what it was measured on
        assert (r["backend"], r["jax"], r["torch"]) == (
            jax.default_backend(),
            jax.__version__,
            torch_version,
        )
        assert r["device"] == jax.devices()[0].device_kind and r["matmul_precision"]
    layer = [r for r in records if r["bench"] == "lstm_layer"]
    impls = {r["impl"] for r in layer}
    assert {"s2s", "s2s_plain"} <= impls
    has_flax = importlib.util.find_spec("flax") is not None
    assert ("flax" in impls) == has_flax
    torch = peers.torch_module()
    has_torch = torch is not None
    assert ("torch" in impls) == has_torch
    on_cpu = has_torch and peers.torch_device(torch) == "cpu"
    assert ("torch_1thread" in impls) == (on_cpu and torch.get_num_threads() > 1)
    assert {r["mode"] for r in layer} == {"fwd", "fwd_bwd"}
    for r in layer:
        assert set(bench.FIELDS) <= set(r)
        assert (r["B"], r["T"], r["I"], r["H"]) == SIZES.layer_shapes[0]
        numbers = ["median_s", "tokens_per_s", "gflops_per_s", "frac_of_peak"]
        numbers += ["vs_torch"] if has_torch else []
        numbers += [] if r["impl"].startswith("torch") else ["compile_s"]
        for field in numbers:
            assert math.isfinite(r[field]) and r[field] > 0, (r["impl"], field, r[field])
        assert r["tokens_per_s"] == pytest.approx(r["B"] * r["T"] / r["median_s"])
    if has_torch:  # vs_torch is against torch's faster thread setting
        for mode in ("fwd", "fwd_bwd"):
            torch_ratios = [
                r["vs_torch"] for r in layer if r["impl"].startswith("torch") and r["mode"] == mode
            ]
            assert max(torch_ratios) == pytest.approx(1.0)


def test_table_shows_every_record():
    records = [
        {
            "bench": "lstm_layer",
            "impl": "s2s",
            "mode": "fwd",
            "B": 2,
            "median_s": 0.5,
            "vs_torch": None,
        }
    ]
    lines = bench.table(records).splitlines()
    assert len(lines) == 2 and "lstm_layer" in lines[1] and "0.5" in lines[1]


def test_goals_summary_reads_the_records():
    rec = lambda bench, mode, T=50, **kw: {
        "bench": bench,
        "impl": "s2s",
        "mode": mode,
        "B": 2,
        "T": T,
        "I": 3,
        "H": 4,
        **kw,
    }
    records = [
        rec("lstm_layer", "fwd_bwd", vs_torch=0.87, frac_of_peak=0.72),
        {**rec("lstm_layer", "fwd_bwd", median_s=2.0), "impl": "torch"},
        {**rec("lstm_layer", "fwd_bwd", median_s=3.0), "impl": "torch_1thread"},
        {**rec("lstm_layer", "fwd_bwd", median_s=0.1), "impl": "torch_1thread", "B": 1},
        {**rec("train_step", "fwd_bwd_adam", median_s=5.0), "impl": "torch"},
        {**rec("train_step", "fwd_bwd_adam", median_s=4.0), "impl": "torch_compile"},
        rec("train_step", "fwd_bwd_adam", vs_torch=1.2, frac_of_peak=0.59),
        rec("decode", "beam5", vs_numpy=1.46),
        rec("length_scaling", "fwd_bwd", T=25, median_s=1.0, compile_s=0.7),
        rec("length_scaling", "fwd_bwd", T=50, median_s=2.0, compile_s=0.5),  # 20 ms per token
        rec("length_scaling", "fwd_bwd", T=1000, median_s=46.0, compile_s=0.6),  # 23 ms per token
    ]
    lines = bench.goals(records)
    # named after the fastest torch variant of the same shape (B=1's is another shape)
    assert lines[0].startswith("lstm_layer fwd+bwd B=2 T=50 I=3 H=4: 0.87x torch, 72% of peak")
    assert lines[1].startswith("train_step: 1.20x torch_compile, 59% of peak")  # the fastest
    assert lines[2].startswith("decode beam5: 1.46x")
    assert lines[3].startswith("time per token T=50 -> T=1000: +15%; compile 0.50-0.70 s")
    assert len(lines) == 4  # no gru_layer record, no line
    lin = lambda impl, T, median_s: {
        **rec("linear_scaling", "fwd_bwd", T=T, median_s=median_s),
        "impl": impl,
    }
    records = [
        lin("gru", 1000, 2.0),
        lin("sru", 1000, 0.5),
        lin("torch_sru", 1000, 1.5),
        lin("torch_mingru", 1000, 1.0),
        lin("gru", 4000, 1.0),  # farther from 1,024
        lin("sru", 4000, 9.0),
    ]
    assert bench.goals(records) == [
        "linear_scaling sru fwd+bwd T=1000: 4.00x our GRU layer, 2.00x torch_mingru "
        "(goal on a GPU at T=1024: 5x the GRU, faster than the peers)"
    ]


def test_round_robin_medians():
    calls = []
    med = harness.round_robin(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, settle_s=0.0
    )
    assert calls == ["a", "b"] + ["a", "a", "b", "b"] * 3  # warm-up; then settle + timed, in turn
    assert set(med) == {"a", "b"} and all(v >= 0 for v in med.values())


def _toy_model(seed=0):
    cfg = groups.train_config(SIZES)
    params = model.init(cfg, key=jax.random.key(seed))
    rng = np.random.default_rng(seed)
    src = jnp.asarray(rng.integers(4, cfg.src_vocab, (3, 6)), jnp.int32)
    tgt = jnp.asarray(rng.integers(4, cfg.tgt_vocab, (3, 5)), jnp.int32)
    return cfg, params, src, tgt


def test_numpy_greedy_decoder_equals_batched_greedy():
    cfg, params, src, _ = _toy_model()
    src_len = jnp.array([6, 4, 2])
    search = jax.jit(lambda p, s, n: decoding.greedy(p, s, n, cfg=cfg, max_len=7))
    got = search(params, src, src_len)
    for b, n in enumerate(src_len.tolist()):
        want = peers.numpy_greedy(params, np.asarray(src[b, :n]), cfg=cfg, max_len=7)
        assert got.tokens[b, : got.lengths[b]].tolist() == want


def test_torch_model_is_the_same_model():
    """With our weights copied in, the PyTorch peer computes our logits."""
    torch = pytest.importorskip("torch")
    cfg, params, src, tgt = _toy_model(2)
    net = peers.torch_seq2seq(torch, cfg)
    p = jax.tree.map(lambda x: torch.as_tensor(np.array(x)), params)
    enc, dec, att = p["encoder"][0], p["decoder"][0], p["attention"]
    weights = {
        "src_embed.weight": p["src_embed"],
        "tgt_embed.weight": p["tgt_embed"],
        "key.weight": att["w_key"].T,
        "key.bias": att["b"],
        "query.weight": att["w_query"].T,
        "v.weight": att["v"][None],
        "readout.weight": p["readout"]["w"].T,
        "readout.bias": p["readout"]["b"],
        "out.weight": p["output"]["w"].T,
        "out.bias": p["output"]["b"],
    }
    for name, bridge in zip(("bridge_h", "bridge_c"), p["bridge"][0]):
        weights |= {f"{name}.weight": bridge["w"].T, f"{name}.bias": bridge["b"]}
    for ours, theirs in (
        ("w_ih", "weight_ih"),
        ("w_hh", "weight_hh"),
        ("b_ih", "bias_ih"),
        ("b_hh", "bias_hh"),
    ):
        transpose = (lambda x: x.T) if ours.startswith("w") else (lambda x: x)
        weights[f"encoder.{theirs}_l0"] = transpose(enc["fwd"][ours])
        weights[f"encoder.{theirs}_l0_reverse"] = transpose(enc["bwd"][ours])
        weights[f"cell.{theirs}"] = transpose(dec[ours])
    net.load_state_dict({k: v.contiguous() for k, v in weights.items()})
    tgt_in = model.shift_right(tgt)
    as_long = lambda x: torch.as_tensor(np.asarray(x).T.copy(), dtype=torch.long)
    with torch.no_grad():
        got = net(as_long(src), as_long(tgt_in)).numpy().transpose(1, 0, 2)
    want = model.forward(params, src, jnp.full((3,), 6), tgt, cfg=cfg)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_only_the_training_step_times_the_library_step(capsys, monkeypatch, tmp_path):
    """`--only train_step`: our step against the PyTorch model's, and with `--torch-compile on`
    against that model compiled too (the compiler stubbed out here: on this CPU inductor takes
    ~30 s even at toy sizes), its first call as compile time; `vs_torch` divides by the fastest
    torch variant. `--jsonl` writes the same records, a line each."""
    jsonl = tmp_path / "records.jsonl"
    argv = ["--only", "train_step", "--toy", "--json", "--reps", "1", "--torch-compile", "on"]
    argv += ["--jsonl", str(jsonl)]
    with pytest.raises(SystemExit):  # a misspelt group is refused by name
        bench.main(["--only", "train_step,decoding", "--toy"])
    assert "unknown group decoding" in capsys.readouterr().err
    torch = peers.torch_module()
    compiled = []
    if torch is not None:
        monkeypatch.setattr(torch, "compile", lambda fn, mode=None: compiled.append(mode) or fn)
    assert bench.main(argv) == 0
    records = json.loads(capsys.readouterr().out)
    assert [json.loads(line) for line in jsonl.read_text().splitlines()] == records
    assert {r["bench"] for r in records} == {"matmul_peak", "train_step"}
    assert all(math.isfinite(r["median_s"]) and r["median_s"] > 0 for r in records)
    by_impl = {r["impl"]: r for r in records if r["bench"] == "train_step"}
    assert {"s2s", "s2s_plain"} <= set(by_impl)
    if torch is None:
        return
    on_gpu = peers.torch_device(torch) == "cuda"
    assert compiled == ["reduce-overhead" if on_gpu else None]  # CUDA graphs on a GPU
    assert {"torch", "torch_compile"} <= set(by_impl) and by_impl["torch_compile"]["compile_s"] > 0
    fastest = min(r["median_s"] for r in by_impl.values() if r["impl"].startswith("torch"))
    assert by_impl["s2s"]["vs_torch"] == pytest.approx(fastest / by_impl["s2s"]["median_s"])


def test_bfloat16_cases_run_beside_float32_and_meet_torch_autocast(quick_bf16):
    """`--dtype bfloat16`: our mixed-precision layer and step timed in the same rounds as
    float32, each record naming its dtype, and bfloat16 compared with torch's autocast only
    (left out with a warning where torch cannot run it)."""
    everything, warned = quick_bf16
    autocast = torch_autocast_runs_an_lstm()
    peaks = {(r["impl"], r["dtype"]) for r in everything if r["bench"] == "matmul_peak"}
    assert {("jax", "float32"), ("jax", "bfloat16")} <= peaks  # each dtype's own peak
    records = [r for r in everything if r["bench"] == "lstm_layer"]
    by_impl = {(r["impl"], r["mode"]): r for r in records}
    for mode in ("fwd", "fwd_bwd"):
        assert by_impl[("s2s_bf16", mode)]["dtype"] == "bfloat16"
        assert by_impl[("s2s", mode)]["dtype"] == "float32"
        ours = by_impl[("s2s_bf16", mode)]
        if autocast:
            theirs = by_impl[("torch_autocast", mode)]
            assert theirs["dtype"] == "bfloat16"
            want = theirs["median_s"] / ours["median_s"]
            assert ours["vs_torch"] == pytest.approx(want)
        else:
            assert ("torch_autocast", mode) not in by_impl and ours["vs_torch"] is None
    left_out = [w for w in warned if "torch's bfloat16 autocast failed, left out" in w]
    assert bool(left_out) == (peers.torch_module() is not None and not autocast)


def test_torch_peers_run_on_the_device_jax_runs_on(monkeypatch):
    """torch goes to CUDA only when JAX runs on a GPU and torch has CUDA; jax's cuDNN LSTM only
    where it lowers (a GPU)."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert peers.torch_device(torch) == "cpu" and peers.jax_cudnn_lstm(8, 16) is None
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert peers.torch_device(torch) == "cpu"  # a CPU build of torch beside a GPU jax
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert peers.torch_device(torch) == "cuda"
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: synced.append(True))
    cases = peers.torch_cases(torch, {"fwd": lambda: None})
    assert [c.impl for c in cases] == ["torch"]  # no thread variants on a GPU
    cases[0].fn()
    assert synced == [True]  # each timed call waits for the device


def test_a_torch_compile_that_fails_is_left_out_with_a_warning(monkeypatch):
    torch = pytest.importorskip("torch")

    def broken(fn, mode=None):
        def fail(*args):
            raise RuntimeError("no C++ compiler")

        return fail

    monkeypatch.setattr(torch, "compile", broken)
    cfg = groups.train_config(SIZES)
    src, tgt = np.full((2, 3), 4), np.full((2, 4), 5)
    with pytest.warns(UserWarning, match="torch.compile failed.*no C.. compiler"):
        assert groups._torch_compiled_cases(torch, cfg, src, tgt) == []


def test_an_optional_jax_peer_that_fails_when_run_is_left_out(monkeypatch):
    def fails_at_run(xs):  # as cuDNN's errors do: the call compiles, its execution raises
        raise RuntimeError("CUDNN_STATUS_NOT_SUPPORTED")

    def peer(input_size, hidden):
        w = jnp.ones((input_size, hidden))
        out = jax.ShapeDtypeStruct
        run = lambda xs: jax.pure_callback(fails_at_run, out(xs.shape, xs.dtype), xs)
        fwd = lambda w, xs: run(jax.lax.stop_gradient(xs)) @ w
        return fwd, w

    monkeypatch.setattr(peers, "jax_cudnn_lstm", peer)
    B, T, I, H = SIZES.layer_shapes[0]
    with pytest.warns(UserWarning, match="jax.experimental.rnn failed.*CUDNN_STATUS"):
        cases = groups._layer_cases("lstm", B, T, I, H, "float32")
    impls = {c.impl for c in cases}
    assert "jax_cudnn" not in impls and {"s2s", "flax"} <= impls


def test_the_groups_against_length_reach_on_group_one_length_at_a_time(monkeypatch):
    """A long run stopped at its longest length keeps the lengths it finished: `run` hands
    `on_group` the records of each length as soon as that length is done."""
    monkeypatch.setattr(
        groups, "matmul_peak", lambda sizes, reps, dtype: [{"bench": "matmul_peak"}]
    )
    timed = lambda bench, field: (
        lambda sizes, reps: [{"bench": bench, "T": T} for T in getattr(sizes, field)]
    )
    monkeypatch.setattr(scaling, "length_bench", timed("length_scaling", "lengths"))
    monkeypatch.setattr(scaling, "linear_bench", timed("linear_scaling", "linear_lengths"))
    sizes = dataclasses.replace(SIZES, lengths=(3, 7), linear_lengths=(5, 9, 17))
    handed = []
    only = ["length_scaling", "linear_scaling"]
    records = bench.run(sizes=sizes, reps=1, only=only, on_group=handed.append)
    assert [[(r["bench"], r.get("T")) for r in group] for group in handed] == [
        [("matmul_peak", None)],
        [("length_scaling", 3)],
        [("length_scaling", 7)],
        [("linear_scaling", 5)],
        [("linear_scaling", 9)],
        [("linear_scaling", 17)],
    ]
    assert records == [r for group in handed for r in group]


def test_linear_scaling_times_every_form_of_a_cell_and_the_torch_peers():
    """At toy sizes: a linear cell's parallel form (each scan forced too) and step form, with
    and without a log-space scan, a GRU layer, and the PyTorch linear recurrences that are
    installed, forward and forward+backward at every length, in one record each."""
    sizes = dataclasses.replace(SIZES, linear_lengths=(9,))
    assert set(scaling.LINEAR_BENCH_CELLS) == {"sru", "mingru", "minlstm", "gru", "lstm"}
    records = scaling.linear_bench(sizes, reps=1, cells=("sru", "minlstm", "gru"))
    impls = {"gru"}
    for name in ("sru", "minlstm"):
        impls |= {name, f"{name}_steps", f"{name}_sequential", f"{name}_associative"}
    impls |= {"minlstm_log"}  # the SRU's b may be negative: no log space
    torch = peers.torch_module()
    theirs = set(peers.torch_linear_layers(torch, 8)) if torch is not None else set()
    if theirs and peers.torch_device(torch) == "cpu" and torch.get_num_threads() > 1:
        theirs |= {f"{impl}_1thread" for impl in theirs}
    for T in sizes.linear_lengths:
        at_t = [r for r in records if r["T"] == T]
        assert {(r["impl"], r["mode"]) for r in at_t} == {
            (impl, mode) for impl in impls | theirs for mode in ("fwd", "fwd_bwd")
        }
        for r in at_t:
            assert r["bench"] == "linear_scaling" and r["cell"] in r["impl"]
            assert r["s_per_token"] == pytest.approx(r["median_s"] / (r["B"] * T))
            assert math.isfinite(r["median_s"]) and r["median_s"] > 0
