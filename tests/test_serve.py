"""`s2s serve` end to end: a real server process on a free local port, spoken to over HTTP.

Every answer is checked against `Translator` on the same workdir in this process: the server
batches other clients' sentences together, and each must still get what it gets alone.
"""

import concurrent.futures
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from s2s_jax import cli
from s2s_jax.data import Vocab, load_task
from s2s_jax.inference.outputs import Hypothesis, Sampling
from s2s_jax.inference.translate import Translator
from s2s_jax.nn.model import Seq2SeqConfig
from s2s_jax.run.config import DecodeConfig, TrainConfig
from s2s_jax.serve.batcher import Batcher
from s2s_jax.serve.requests import Limits

pytest.importorskip("starlette")  # the serve extra
uvicorn = pytest.importorskip("uvicorn")

from s2s_jax.serve.app import build_app  # noqa: E402 (after the extra is known to be there)

S2S = shutil.which("s2s", path=str(pathlib.Path(sys.executable).parent)) or "s2s"
SENTENCES = [src for src, _ in load_task("numbers-en-fr").splits["test"][:40]]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A small attention model, trained briefly: its outputs vary with the input, which is all
    that comparing the server with `Translator` needs."""
    root = tmp_path_factory.mktemp("serve")
    argv = ["train", "--workdir", str(root / "run"), "--steps", "150", "--no-progress"]
    sizes = "src_embed=16 tgt_embed=16 enc_hidden=32 dec_hidden=32 attn_dim=16 buckets=2"
    for item in sizes.split() + ["eval_every=150", "eval_examples=20", "warmup_steps=30"]:
        argv += ["--set", item]
    assert cli.main(argv) == 0
    return root


@pytest.fixture(scope="module")
def translator(workdir):
    return Translator.from_workdir(workdir / "run", log=lambda s: None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`s2s serve` in a subprocess, started from the workdir's parent with a relative path."""

    def __init__(self, cwd: pathlib.Path, *flags: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [S2S, "serve", "--workdir", "run", "--port", str(self.port), *flags]
        self.proc = subprocess.Popen(
            argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.communicate()[1]
            try:
                if get(self.url + "/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("the server did not become ready")

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, err


def request(url: str, body: bytes | None = None, method: str = "GET") -> tuple[int, dict, dict]:
    req = urllib.request.Request(url, data=body, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}"), dict(e.headers)


def get(url: str):
    return request(url)[:2]


def post(server: Server, **body):
    return request(server.url + "/translate", json.dumps(body).encode(), "POST")[:2]


@pytest.fixture(scope="module")
def server(workdir):
    s = Server(workdir, "--max-batch", "4")
    yield s
    s.stop()


def test_the_api_answers_as_translator_does(server, translator):
    started = time.perf_counter()
    status, body = post(server, inputs=SENTENCES[:3])
    first = time.perf_counter() - started
    assert status == 200, body
    _, info = get(server.url + "/info")
    # The warm-up compiled every shape greedy decoding of these inputs needs.
    assert info["compilations_after_warmup"] == 0, info
    assert first < 10, f"the first request took {first:.1f} s"
    alone = translator.hypotheses(SENTENCES[:3])
    assert body["outputs"] == [h[0].text for h in alone]
    assert body["scores"] == pytest.approx([h[0].score for h in alone], abs=1e-4)
    assert body["log_probs"] == pytest.approx([h[0].log_prob for h in alone], abs=1e-4)

    status, body = post(server, inputs=SENTENCES[3:5], beam=3, n_best=2, alpha=0.4)
    assert status == 200, body
    alone = translator.translate(SENTENCES[3:5], beam=3, n_best=2, alpha=0.4)
    assert [[h["text"] for h in hyps] for hyps in body["n_best"]] == [
        [h.text for h in hyps] for hyps in alone
    ]
    assert body["outputs"] == [hyps[0].text for hyps in alone]

    status, body = post(server, inputs=SENTENCES[5:7], align=True)
    assert status == 200, body
    aligned = translator.align(SENTENCES[5:7])
    assert [a["pairs"] for a in body["alignments"]] == [
        [list(p) for p in a.pairs()] for a in aligned
    ]
    assert [a["target"] for a in body["alignments"]] == [a.target for a in aligned]

    status, info = get(server.url + "/info")
    assert status == 200 and info["ready"] and info["loaded"]["checkpoint"] in ("best", "latest")
    assert info["loaded"]["step"] == 150 and info["vocabularies"]["source"]["kind"] == "word"
    assert info["devices"] and info["settings"]["max_batch"] == 4
    assert info["versions"]["jax"] and info["model"]["attention"] == "bahdanau"
    assert get(server.url + "/health") == (200, {"status": "ok"})


def test_concurrent_clients_get_what_they_would_get_alone(server, translator):
    """Many clients, different inputs and settings at once: each answer equals `Translator`'s
    for that request alone, and sentences of different requests shared batches."""
    _, before = get(server.url + "/info")
    asks = []
    for i in range(24):
        texts = SENTENCES[i : i + 1 + i % 3]
        settings = [{}, {"beam": 5}, {"sample": True, "seed": i, "temperature": 0.8}][i % 3]
        asks.append((texts, settings))
    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(lambda a: post(server, inputs=a[0], **a[1]), asks))
    for (texts, settings), (status, body) in zip(asks, answers):
        assert status == 200, body
        if settings.get("sample"):
            sample = Sampling(seed=settings["seed"], temperature=settings["temperature"])
            alone = translator.translate(texts, sample=sample)
        else:
            alone = translator.translate(texts, beam=settings.get("beam", 1))
        assert body["outputs"] == alone, (texts, settings)
    _, after = get(server.url + "/info")
    sentences = after["sentences"] - before["sentences"]
    assert sentences == sum(len(t) for t, _ in asks)
    assert after["batches"] - before["batches"] < sentences  # some were decoded together


@pytest.mark.parametrize(
    "raw, status, words",
    [
        (b'{"inputs": ["forty-two"', 400, "malformed JSON"),
        (b'["forty-two"]', 400, "JSON object"),
        (b'{"inputs": "forty-two"}', 422, "list of strings"),
        (b'{"inputs": [42]}', 422, "list of strings"),
        (b'{"inputs": []}', 422, "empty"),
        (b'{"inputs": ["one", "  "]}', 422, "input 1 is empty"),
        (b'{"inputs": ["' + b"seven " * 80 + b'"]}', 413, "reads at most"),
        (b'{"inputs": [' + b'"one",' * 64 + b'"two"]}', 413, "at most 64"),
        (b'{"inputs": ["one"], "beem": 5}', 422, "unknown setting(s) beem"),
        (b'{"inputs": ["one"], "beam": "5"}', 422, "beam must be an integer"),
        (b'{"inputs": ["one"], "beam": 2, "n_best": 3}', 422, "n_best must be in 1..2"),
        (b'{"inputs": ["one"], "top_p": 0.9}', 422, 'only apply with "sample": true'),
        (b'{"inputs": ["one"], "sample": true, "beam": 2}', 422, "no beam"),
        (b'{"inputs": ["one"], "sample": true, "temperature": 0}', 422, "temperature must be"),
        (b'{"inputs": ["one"], "sample": true, "top_k": 100000}', 422, "top_k must be in"),
    ],
)
def test_bad_requests_get_a_4xx_and_one_line(server, raw, status, words):
    got, body, _ = request(server.url + "/translate", raw, "POST")
    assert got == status and words in body["error"] and "\n" not in body["error"], body
    assert post(server, inputs=["forty-two"])[0] == 200  # unharmed


def test_unknown_paths_and_methods(server):
    assert request(server.url + "/translate")[0] == 405
    assert request(server.url + "/nowhere")[0] == 404


def test_a_full_queue_a_gone_client_and_sigterm(workdir, translator):
    """One sentence waits (up to 10 s) for a second to fill its batch of two: a request that
    would overfill the queue gets 503 with Retry-After, a fitting one completes the batch; a
    client that hangs up while queued leaves the queue at once; SIGTERM answers the requests
    in flight without waiting for their batch to fill, and exits 0."""
    slow = Server(workdir, "--max-batch", "2", "--max-queue", "3", "--max-wait-ms", "10000")
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(post, slow, inputs=["forty-two"])
            assert wait_for(lambda: get(slow.url + "/info")[1]["queued"] == 1, 5)
            status, body, headers = request(
                slow.url + "/translate", json.dumps({"inputs": ["one"] * 3}).encode(), "POST"
            )
            assert status == 503 and headers.get("retry-after") == "1", (status, body)
            started = time.monotonic()
            assert post(slow, inputs=["forty-three"])[0] == 200  # fills the batch of two
            assert waiting.result(timeout=5)[0] == 200 and time.monotonic() - started < 5

        body = json.dumps({"inputs": ["seventy-one"]}).encode()
        with socket.create_connection(("127.0.0.1", slow.port)) as s:
            s.sendall(
                b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            assert wait_for(lambda: get(slow.url + "/info")[1]["queued"] == 1, 5)
        # Hung up: its sentence leaves the queue long before its 10 s wait would end.
        assert wait_for(lambda: get(slow.url + "/info")[1]["queued"] == 0, 5)

        # SIGTERM with requests in flight (one decoding, one waiting to fill a batch): both
        # are answered at once, as they would be alone, and the server exits 0.
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            asks = [SENTENCES[:2], SENTENCES[2:3]]
            answers = [pool.submit(post, slow, inputs=texts) for texts in asks]
            assert wait_for(lambda: get(slow.url + "/info")[1]["queued"] == 1, 5)
            started = time.monotonic()
            slow.proc.send_signal(signal.SIGTERM)
            for texts, answer in zip(asks, answers):
                status, body = answer.result(timeout=60)
                assert status == 200 and body["outputs"] == translator.translate(texts)
            assert time.monotonic() - started < 5  # not after the 10 s wait to fill
        _, err = slow.proc.communicate(timeout=60)  # no second signal: it stops on its own
        assert slow.proc.returncode == 0, err
        with pytest.raises(OSError):
            get(slow.url + "/health")
    finally:
        slow.stop()


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_serve_without_its_extra_says_what_to_install(workdir, tmp_path):
    """Where starlette is missing, `s2s serve` says which extra to install, in one line."""
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "starlette.py").write_text("raise ImportError('no starlette', name='starlette')")
    env = dict(os.environ, PYTHONPATH=str(blocker))
    proc = subprocess.run(
        [S2S, "serve", "--workdir", str(workdir / "run")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert 'pip install -e ".[serve]"' in proc.stderr


class StubTranslator:
    """What the server uses of a `Translator`; "boom" in a batch makes decoding it fail."""

    train_cfg = TrainConfig(max_src_len=16, buckets=1)
    decode_cfg = DecodeConfig()
    members = (Seq2SeqConfig(),)
    src_vocab = tgt_vocab = Vocab.build(["a b c d e boom"], "word")

    def hypotheses(self, texts, **settings):
        if "boom" in texts:
            raise RuntimeError("boom\nand a second line")
        return [[Hypothesis(t.upper(), -1.0, -1.0)] for t in texts]


def test_an_error_in_one_batch_fails_only_its_requests():
    """Over HTTP: a batch whose decoding fails answers its requests 500 with one line; a
    request decoded in another batch at the same time, and later ones, are answered."""
    batcher = Batcher(StubTranslator(), max_batch=8, max_wait=0.2, max_queue=100)
    batcher.start()
    app = build_app(batcher, Limits(), info=dict, ready=lambda: True)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}/translate"
    try:
        assert wait_for(lambda: server.started, 30)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            failing = pool.submit(request, url, b'{"inputs": ["a", "boom"]}', "POST")
            other = pool.submit(request, url, b'{"inputs": ["c"], "beam": 2}', "POST")
            status, body, _ = failing.result(timeout=30)
            assert status == 500 and body["error"] == "decoding failed: boom", body
            assert other.result(timeout=30)[:2] == (200, {"outputs": ["C"], **SCORES})
        assert request(url, b'{"inputs": ["d", "e"]}', "POST")[:2] == (
            200,
            {"outputs": ["D", "E"], "scores": [-1.0, -1.0], "log_probs": [-1.0, -1.0]},
        )
        assert batcher.queued() == 0
    finally:
        server.should_exit = True
        thread.join(30)
        batcher.stop(timeout=10)


SCORES = {"scores": [-1.0], "log_probs": [-1.0]}
