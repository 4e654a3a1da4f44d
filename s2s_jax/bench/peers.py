"""The peers we measure against: PyTorch (layers, cases at its best thread setting, the
training model written the usual way) and a numpy decoder translating one sentence at a time.
PyTorch and Flax are optional (the `bench` extra): without them their cases are left out."""

from __future__ import annotations

from collections.abc import Callable

import jax
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


def torch_cases(torch, mode_fns: dict[str, Callable[[], object]]) -> list[Case]:
    """Cases "torch" (intra-op threads as set by `run`: every core) and "torch_1thread": on a
    shared machine, OpenMP's barriers make 2 threads slower than 1 when another process holds a
    core, and the comparison takes torch's faster setting."""
    cores = torch.get_num_threads()

    def one_thread(fn):
        def call():
            torch.set_num_threads(1)
            try:
                fn()
            finally:
                torch.set_num_threads(cores)

        return call

    cases = [Case("torch", mode, fn) for mode, fn in mode_fns.items()]
    if cores > 1:
        cases += [Case("torch_1thread", mode, one_thread(fn)) for mode, fn in mode_fns.items()]
    return cases


def flax_layer(kind: str, hidden: int):
    """Flax's `nn.RNN` over its LSTM (`OptimizedLSTMCell`) or GRU cell, or None without Flax."""
    try:
        from flax import linen as nn
    except ImportError:
        return None
    return nn.RNN(nn.OptimizedLSTMCell(hidden) if kind == "lstm" else nn.GRUCell(hidden))


def torch_seq2seq(torch, cfg: model.Seq2SeqConfig):
    """The same model in PyTorch, written the usual way (time-major, `LSTMCell` loop)."""
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

        def forward(self, src, tgt_in):  # int64[S, B], int64[T, B]
            ann, (h_n, _) = self.encoder(self.src_embed(src))
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
