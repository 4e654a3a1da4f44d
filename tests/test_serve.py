"""`s2s serve` end to end: a real server process on a free local port, spoken to over HTTP.

Every answer is checked against `Translator` on the same workdir in this process: the server
batches other clients' sentences together, and each must still get what it gets alone.
"""

import concurrent.futures
import http.client
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
from s2s_jax.errors import DataError
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


BODY_LIMIT = 8192


@pytest.fixture(scope="module")
def server(workdir):
    s = Server(workdir, "--max-batch", "4", "--max-body-bytes", str(BODY_LIMIT))
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
        (b'{"inputs": ["one"], "beam": 2, "n_best": 3}', 422, "n_best must be an integer in 1..2"),
        (b'{"inputs": ["one"], "top_p": 0.9}', 422, 'only apply with "sample": true'),
        (b'{"inputs": ["one"], "sample": true, "beam": 2}', 422, "no beam"),
        (b'{"inputs": ["one"], "sample": true, "temperature": 0}', 422, "temperature must be"),
        (b'{"inputs": ["one"], "sample": true, "top_k": 100000}', 422, "top_k must be an int"),
        # Out of every range: one rule names the usable one (Translator's and s2s translate's).
        (b'{"inputs": ["one"], "sample": true, "seed": 1e29}', 422, "seed must be an integer in"),
        (b'{"inputs": ["one"], "sample": true, "seed": 1' + b"0" * 29 + b"}", 422, "0..4294967295"),
        (b'{"inputs": ["one"], "min_len": 100000000000}', 422, "min_len must be an integer in 0.."),
        (b'{"inputs": ["one"], "sample": true, "temperature": 1e-40}', 422, "[1e-06, 1e+06]"),
        (b'{"inputs": ["one"], "sample": true, "temperature": 1e38}', 422, "temperature must be"),
        (b'{"inputs": ["one"], "alpha": 1000}', 422, "alpha must be a number in [0, 10]"),
        (b'{"inputs": ["one"], "alpha": NaN}', 422, "alpha must be a number in [0, 10], got nan"),
        (b'{"inputs": ["one"], "alpha": 1e999}', 422, "alpha must be a number in [0, 10], got inf"),
        (b'{"inputs": ["one"], "beam": 1' + b"0" * 400 + b"}", 422, "about 401 digits"),
        (b'{"inputs": ["one"], "beam": ' + b"[" * 500 + b"]" * 500 + b"}", 422, "got a list"),
        (b'{"inputs": ["one"], "beam": 17}', 422, "in 1..16 (this server's limit), got 17"),
        (b'{"inputs": ["one"], "sample": true, "top_p": 0}', 422, "top_p must be a number in (0,"),
        (b'{"inputs": ["one"], "align": 1}', 422, "align must be true or false, got 1"),
        # Any JSON that does not parse is 400, however deep it nests or long its numbers are.
        (b"[" * 1000 + b"]" * 1000, 400, "malformed JSON: maximum recursion depth"),
        (b'{"inputs": ["one"], "beam": ' + b"[" * 4000 + b"]" * 4000 + b"}", 400, "malformed"),
        (b'{"a": ' * 1100 + b"1" + b"}" * 1100, 400, "malformed JSON"),
        (b'{"inputs": ["one"], "beam": 1' + b"0" * 5000 + b"}", 400, "malformed JSON: Exceeds"),
        (b"\xff\xfe\x00", 400, "malformed JSON"),
        (b"", 400, "malformed JSON"),
        (b'{"inputs": ["\\ud800"]}', 422, "input 0 is not valid Unicode"),
        (b'{"inputs": ["one"], "\\udfff": 1}', 422, 'unknown setting(s) "\\udfff"'),
        (b'{"inputs": ["' + b"one " * BODY_LIMIT + b'"]}', 413, "reads at most 8192"),
    ],
)
def test_bad_requests_get_a_4xx_and_one_line(server, raw, status, words):
    got, body, _ = request(server.url + "/translate", raw, "POST")
    assert got == status and words in body["error"] and "\n" not in body["error"], body
    assert post(server, inputs=["forty-two"])[0] == 200  # unharmed


def test_every_numeric_setting_decodes_or_names_its_range(server, translator):
    """Each integer and float setting at the edges of what JSON can say: 200 with a real
    translation (scores finite), or 422 naming the setting and its range. Where it decodes,
    it decodes as `Translator` does; where it is refused, `Translator` refuses it alike."""
    extremes = [0, -1, 2**31, 10**30, 1e-300, 1e38, 1e308, -1e308]  # few compile anew
    fields = ["beam", "n_best", "alpha", "min_len", "no_repeat_ngram"]
    sampling = ["seed", "temperature", "top_k", "top_p"]
    for name in fields + sampling:
        for value in extremes:
            extra = {"sample": True} if name in sampling else {}
            if name == "n_best":  # within a beam of 2
                extra = {"beam": 2}
            status, body = post(server, inputs=["forty-two"], **{name: value}, **extra)
            settings = {**{name: value}, **extra}
            if status == 422:
                assert body["error"].startswith(f"{name} must be "), (settings, body)
                assert " in " in body["error"] or ">=" in body["error"], (settings, body)
                with pytest.raises(DataError) as refused:
                    translate(translator, settings)
                # The same rule: the same setting and value refused (the server's beam limit
                # may be lower than the library's).
                assert str(refused.value).split(" must be ")[0] == name, settings
                assert str(refused.value).rsplit(", got ")[-1] == body["error"].rsplit(", got ")[-1]
                continue
            assert status == 200, (settings, body)
            assert None not in body["scores"], (settings, body)  # a real hypothesis
            if name in ("beam", "n_best", "alpha"):  # (the others would compile anew here)
                assert body["outputs"] == translate(translator, settings), settings
            if name == "top_p" and value < 1e-30:  # a nucleus of one token: greedy search
                assert body["outputs"] == translator.translate(["forty-two"], beam=1)


def translate(translator, settings: dict) -> list[str]:
    """`Translator.translate` with a request's settings."""
    settings = dict(settings)
    if settings.pop("sample", False):
        sample = Sampling(**{k: settings.pop(k) for k in list(settings) if k in Sampling._fields})
        return translator.translate(["forty-two"], sample=sample, **settings)
    return translator.translate(["forty-two"], **settings)


def test_a_body_over_the_limit_is_refused_unread(server):
    """A body longer than --max-body-bytes: 413 from its Content-Length before it is sent
    (a 100 MB one costs nothing), or as soon as a chunked one grows past the limit."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(
            b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000000\r\n\r\n"
        )
        answer = b""
        while not answer.endswith(b"}"):  # no body sent: answered from the headers alone
            answer += s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413") and b"has 100000000 bytes" in answer, answer

    def chunks():
        yield b'{"inputs": ["'
        for _ in range(BODY_LIMIT // 1000 + 2):
            yield b"one " * 250
        yield b'"]}'

    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.request("POST", "/translate", body=chunks(), encode_chunked=True)
    answer = connection.getresponse()
    assert answer.status == 413 and b"over 8192 bytes" in answer.read()
    connection.close()
    assert post(server, inputs=["forty-two"])[0] == 200  # unharmed


def test_the_same_rule_in_s2s_translate(server, workdir, translator):
    """`s2s translate` refuses what the server refuses, in the same words, and decodes a
    nucleus that float32 rounds to nothing as the most likely token (greedy)."""
    _, body = post(server, inputs=["forty-two"], min_len=10**11)
    run = f"{workdir.name}/run"
    argv = [S2S, "translate", "--workdir", run, "--min-len", str(10**11), "forty-two"]
    proc = subprocess.run(argv, cwd=workdir.parent, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr == f"s2s: error: {body['error']}\n", proc.stderr
    argv = [S2S, "translate", "--workdir", run, "--sample", "--top-p", "1e-300"]
    proc = subprocess.run(
        [*argv, *SENTENCES[:3]], cwd=workdir.parent, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == translator.translate(SENTENCES[:3], beam=1)


def test_a_second_server_on_a_port_in_use_stops_at_once(server, workdir):
    """One line naming the port, before loading or warming up a model; exit status 2."""
    argv = [S2S, "serve", "--workdir", f"{workdir.name}/run", "--port", str(server.port)]
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=workdir.parent, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"cannot listen on 127.0.0.1:{server.port}: Address already in use" in proc.stderr
    assert time.monotonic() - started < 30  # the first server's warm-up takes longer
    assert post(server, inputs=["forty-two"])[0] == 200  # the first one unharmed


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
        # are answered at once, as they would be alone, and the server exits 0. A client
        # stalled in the middle of its body is answered 503 rather than waited for.
        stalled = socket.create_connection(("127.0.0.1", slow.port), timeout=30)
        stalled.sendall(b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        asks = [SENTENCES[:2], SENTENCES[2:3]]
        expected = [translator.translate(texts) for texts in asks]  # compiled before timing
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            answers = [pool.submit(post, slow, inputs=texts) for texts in asks]
            assert wait_for(lambda: get(slow.url + "/info")[1]["queued"] == 1, 5)
            started = time.monotonic()
            slow.proc.send_signal(signal.SIGTERM)
            for outputs, answer in zip(expected, answers):
                status, body = answer.result(timeout=60)
                assert status == 200 and body["outputs"] == outputs
            assert time.monotonic() - started < 5  # not after the 10 s wait to fill
        with stalled:
            answer = b""
            while chunk := stalled.recv(65536):  # until the server closes the connection
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 503") and b"the server is stopping" in answer
        _, err = slow.proc.communicate(timeout=60)  # no second signal: it stops on its own
        assert slow.proc.returncode == 0, err
        assert time.monotonic() - started < 15, err
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
