"""Matmul FLOP counts of what the groups time: the rate (`gflops_per_s`) and `frac_of_peak`."""

from __future__ import annotations

from s2s_jax.nn import model


def layer_flops(kind: str, B: int, T: int, I: int, H: int, mode: str) -> float:
    """One RNN layer's forward (`mode="fwd"`) or forward+backward (3x) matmul FLOPs."""
    gates = {"lstm": 4, "gru": 3}[kind]
    return 2.0 * B * T * (I + H) * gates * H * (3 if mode == "fwd_bwd" else 1)


def forward_flops(cfg: model.Seq2SeqConfig, B: int, S: int, T: int, rows: int = 0) -> float:
    """Matmul FLOPs of encoding B sentences of length S and T decoder steps of `rows` rows
    (default B; B * beam for beam search), counting the attention's projections."""
    E, He, Hd, A, V = cfg.src_embed, cfg.enc_hidden, cfg.dec_hidden, cfg.attn_dim, cfg.tgt_vocab
    R = rows or B
    enc = 2 * (2 * B * S * (E + He) * 4 * He)
    keys = 2 * B * S * 2 * He * A
    per_step = (
        2 * R * Hd * A
        + 2 * R * S * A
        + 2 * 2 * R * S * 2 * He  # query, scores, context
        + 2 * R * (E + 2 * He + Hd) * 4 * Hd  # decoder cell
        + 2 * R * (Hd + 2 * He + E) * Hd
        + 2 * R * Hd * V
    )  # readout, output
    return enc + keys + T * per_step


def train_flops(cfg: model.Seq2SeqConfig, B: int, S: int, T: int) -> float:
    """Matmul FLOPs of one training step: the forward pass, and twice that backward."""
    return 3.0 * forward_flops(cfg, B, S, T)
