"""The peers we measure against, on the device JAX runs on: PyTorch (cuDNN's `nn.LSTM`/`nn.GRU`
on a GPU, cases at its best thread setting on a CPU, the training model written the usual way
and under `torch.compile`), `jax.experimental.rnn`'s cuDNN LSTM (GPU only), Flax's `nn.RNN`,
and a numpy decoder translating one sentence at a time. PyTorch and Flax are optional (the
`bench` extra): without them their cases are left out."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from s2s_jax.bench.harness import Case
from s2s_jax.nn import model


def torch_module():
    """The torch module, or None when it is not installed (the optional `bench` extra)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def torch_device(torch) -> str:
    """Where the torch peers run: "cuda" when JAX runs on a GPU and this torch build has CUDA
    (the comparison is on one device), else "cpu"."""
    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


# JAX's float32 matmul precision -> torch's. JAX's default on a GPU is TF32 ("high").
_TORCH_PRECISION = {"highest": "highest", "float32": "highest", "bfloat16": "medium"}


def setup_torch(torch, threads: int) -> None:
    """Torch's intra-op threads (on a CPU), and on a GPU its float32 precision set to JAX's,
    for matmuls and for cuDNN (its RNNs) alike: TF32 unless JAX asks otherwise."""
    torch.set_num_threads(threads)
    if torch_device(torch) == "cuda":
        precision = jax.config.jax_default_matmul_precision or "default"
        matmuls = _TORCH_PRECISION.get(precision, "high")
        torch.set_float32_matmul_precision(matmuls)
        torch.backends.cudnn.allow_tf32 = matmuls != "highest"


def torch_blocking(torch, fn: Callable[[], object]) -> Callable[[], object]:
    """`fn`, returning only when the device is done (CUDA calls return before the work is)."""
    if torch_device(torch) == "cpu":
        return fn

    def call():
        fn()
        torch.cuda.synchronize()

    return call


def torch_cases(torch, mode_fns: dict[str, Callable[[], object]], impl="torch") -> list[Case]:
    """Cases `impl`, each call blocking until the device is done, and on a CPU also
    `impl + "_1thread"`: torch runs with the intra-op threads set by `run` (every core) and
    with one, for on a shared machine OpenMP's barriers make 2 threads slower than 1 when
    another process holds a core, and the comparison takes torch's faster setting."""
    cases = [Case(impl, mode, torch_blocking(torch, fn)) for mode, fn in mode_fns.items()]
    cores = torch.get_num_threads()
    if torch_device(torch) == "cuda" or cores == 1:
        return cases

    def one_thread(fn):
        def call():
            torch.set_num_threads(1)
            try:
                fn()
            finally:
                torch.set_num_threads(cores)

        return call

    return cases + [Case(f"{impl}_1thread", m, one_thread(fn)) for m, fn in mode_fns.items()]


def torch_autocast(torch, fn: Callable[[], object]) -> Callable[[], object]:
    """`fn` under torch's bfloat16 autocast on the torch peers' device, blocking."""

    def call():
        with torch.autocast(device_type=torch_device(torch), dtype=torch.bfloat16):
            fn()

    return torch_blocking(torch, call)


def jax_cudnn_lstm(input_size: int, hidden: int):
    """`jax.experimental.rnn`'s LSTM (cuDNN's kernel) as `(fwd(weights, xs: [B, T, I]) ->
    [B, T, H], weights)`, or None off a GPU: it lowers only for CUDA."""
    if jax.default_backend() != "gpu":
        return None
    from jax.experimental import rnn

    weights = rnn.init_lstm_weight(jax.random.key(0), input_size, hidden, 1, False)

    def fwd(w, xs):
        batch, steps = xs.shape[:2]
        zeros = jnp.zeros((1, batch, hidden), xs.dtype)
        lengths = jnp.full((batch,), steps, jnp.int32)
        kw = dict(input_size=input_size, hidden_size=hidden, num_layers=1, dropout=0.0)
        return rnn.lstm(xs, zeros, zeros, w, lengths, bidirectional=False, **kw)[0]

    return fwd, weights


def flax_layer(kind: str, hidden: int):
    """Flax's `nn.RNN` over its LSTM (`OptimizedLSTMCell`) or GRU cell, or None without Flax."""
    try:
        from flax import linen as nn
    except ImportError:
        return None
    return nn.RNN(nn.OptimizedLSTMCell(hidden) if kind == "lstm" else nn.GRUCell(hidden))


def torch_seq2seq(torch, cfg: model.Seq2SeqConfig):
    """The same model in PyTorch, written the usual way (time-major, `LSTMCell` loop): the
    encoder is `nn.LSTM` (cuDNN on a GPU), the attention decoder a Python loop, apart so that
    `torch.compile` can take the loop and leave cuDNN's encoder eager (Dynamo breaks the graph
    at `nn.LSTM` and, in a whole-model compile, falls back to eager for all of `forward`)."""
    nn = torch.nn

    class Seq2Seq(nn.Module):
        def __init__(self):
            super().__init__()
            E, He, Hd = cfg.src_embed, cfg.enc_hidden, cfg.dec_hidden
            A, V = cfg.attn_dim, cfg.tgt_vocab
            self.src_embed, self.tgt_embed = nn.Embedding(V, E), nn.Embedding(V, E)
            self.encoder = nn.LSTM(E, He, bidirectional=True)
            self.bridge_h, self.bridge_c = nn.Linear(2 * He, Hd), nn.Linear(2 * He, Hd)
            self.key, self.query = nn.Linear(2 * He, A), nn.Linear(Hd, A, bias=False)
            self.v = nn.Linear(A, 1, bias=False)
            self.cell = nn.LSTMCell(E + 2 * He, Hd)
            self.readout, self.out = nn.Linear(Hd + 2 * He + E, Hd), nn.Linear(Hd, V)

        def forward(self, src, tgt_in):  # int64[S, B], int64[T, B] -> float[T, B, V]
            ann, (h_n, _) = self.encoder(self.src_embed(src))
            return self.decode(ann, h_n, tgt_in)

        def decode(self, ann, h_n, tgt_in):  # the attention decoder: no cuDNN kernel exists
            c = torch.cat([h_n[0], h_n[1]], dim=-1)
            h, cell = torch.tanh(self.bridge_h(c)), torch.tanh(self.bridge_c(c))
            keys, emb = self.key(ann), self.tgt_embed(tgt_in)
            readouts = []
            for t in range(tgt_in.shape[0]):
                weights = torch.softmax(self.v(torch.tanh(keys + self.query(h))), dim=0)
                ctx = (weights * ann).sum(0)
                h, cell = self.cell(torch.cat([emb[t], ctx], dim=-1), (h, cell))
                readouts.append(torch.tanh(self.readout(torch.cat([h, ctx, emb[t]], dim=-1))))
            return self.out(torch.stack(readouts))

    return Seq2Seq()


def torch_train_step(torch, net, src: np.ndarray, tgt: np.ndarray, clip_norm: float):
    """A thunk running one training step of `net` on the batch `src: int[B, S]`, `tgt:
    int[B, T]` on the peers' device: cross-entropy of teacher-forced logits, gradients clipped
    at `clip_norm` (as ours), Adam at 1e-3."""
    device = torch_device(torch)
    net = net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    as_long = lambda x: torch.as_tensor(x.T.copy(), dtype=torch.long, device=device)
    src_t, tgt_t = as_long(src), as_long(tgt)  # time-major
    tgt_in = torch.cat([torch.full_like(tgt_t[:1], model.BOS), tgt_t[:-1]])

    def step():
        opt.zero_grad(set_to_none=True)
        logits = net(src_t, tgt_in)
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), tgt_t.reshape(-1)
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), clip_norm)
        opt.step()

    return step


def torch_compile_decoder(torch, net):
    """`net` with its attention decoder under `torch.compile` (the first call compiles); on a
    GPU with CUDA graphs ("reduce-overhead"), the mode meant for loops of small kernels. The
    graphs' outputs are overwritten at the next replay: safe in `torch_train_step`, which
    keeps nothing of one step's forward into the next."""
    mode = "reduce-overhead" if torch_device(torch) == "cuda" else None
    net.decode = torch.compile(net.decode, mode=mode)
    return net


def _np_lstm(p: dict, xs: np.ndarray, h: np.ndarray, c: np.ndarray, reverse: bool = False):
    """One LSTM over one sentence `xs: [S, I]` in numpy; outputs [S, H] and the final (h, c)."""
    hidden = h.shape[-1]
    xp = xs @ p["w_ih"] + p["b_ih"] + p["b_hh"]
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))
    outs = np.zeros((len(xs), hidden), np.float32)
    for t in reversed(range(len(xs))) if reverse else range(len(xs)):
        g = xp[t] + h @ p["w_hh"]
        i, f, gg, o = np.split(g, 4)
        c = sig(f) * c + sig(i) * np.tanh(gg)
        h = sig(o) * np.tanh(c)
        outs[t] = h
    return outs, h, c


def numpy_greedy(
    params: dict, src: np.ndarray, *, cfg: model.Seq2SeqConfig, max_len: int
) -> list[int]:
    """Greedy decoding of ONE unpadded sentence `src: int[S]` in numpy (the way `g2p-en`
    decodes), for the `train_config` architecture. Returns `y_1 .. y_n </s>`; like
    `decoding.greedy`, <pad> and <s> are never chosen and </s> is forced at `max_len`."""
    p = jax.tree.map(np.asarray, params)
    x = p["src_embed"][src]
    zeros = np.zeros(cfg.enc_hidden, np.float32)
    for layer in p["encoder"]:
        out_f, h_f, _ = _np_lstm(layer["fwd"], x, zeros, zeros)
        out_b, h_b, _ = _np_lstm(layer["bwd"], x, zeros, zeros, reverse=True)
        x = np.concatenate([out_f, out_b], axis=-1)
    context = np.concatenate([h_f, h_b])
    att, dec = p["attention"], p["decoder"][0]
    keys = x @ att["w_key"] + att["b"]
    h, c = (np.tanh(context @ b["w"] + b["b"]) for b in p["bridge"][0])
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))
    y, out = model.BOS, []
    for t in range(max_len):
        emb = p["tgt_embed"][y]
        scores = np.tanh(keys + h @ att["w_query"]) @ att["v"]
        w = np.exp(scores - scores.max())
        ctx = (w / w.sum()) @ x
        g = np.concatenate([emb, ctx]) @ dec["w_ih"] + dec["b_ih"] + h @ dec["w_hh"] + dec["b_hh"]
        i, f, gg, o = np.split(g, 4)
        c = sig(f) * c + sig(i) * np.tanh(gg)
        h = sig(o) * np.tanh(c)
        readout = np.tanh(np.concatenate([h, ctx, emb]) @ p["readout"]["w"] + p["readout"]["b"])
        logits = readout @ p["output"]["w"] + p["output"]["b"]
        logits[[model.PAD, model.BOS]] = -np.inf
        y = model.EOS if t == max_len - 1 else int(np.argmax(logits))
        out.append(y)
        if y == model.EOS:
            break
    return out


def torch_linear_layers(torch, hidden: int) -> dict:
    """The PyTorch linear recurrences on PyPI, each as `(module, batch_first)` at input and
    hidden size `hidden`, those that are installed: `sru`'s SRU (its CUDA kernel on a GPU, its
    own CPU path otherwise) and `mingru-pytorch`'s minGRU (log-space associative scan)."""
    device, layers = torch_device(torch), {}
    try:
        with warnings.catch_warnings():  # off a GPU: that it could not compile CUDA kernels
            warnings.simplefilter("ignore")
            import sru

        layers["torch_sru"] = (sru.SRU(hidden, hidden, num_layers=1).to(device), False)
    except ImportError:
        pass
    try:
        from minGRU_pytorch import minGRU

        layers["torch_mingru"] = (minGRU(hidden, expansion_factor=1.0).to(device), True)
    except ImportError:
        pass
    return layers
