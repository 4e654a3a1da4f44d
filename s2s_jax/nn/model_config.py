"""`Seq2SeqConfig`: the architecture of an encoder-decoder, frozen and hashable (a static `jit`
argument), with the sizes derived from it (`enc_out`, `dec_in`, `readout_dim`, ...), and how
its scans run (`scan_implementations`)."""

from __future__ import annotations

import dataclasses

from s2s_jax.errors import ConfigError
from s2s_jax.nn import attention, scan
from s2s_jax.nn.cells import CELLS
from s2s_jax.tokens import UNK

CONTEXT_MODES = ("init", "input", "both")
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Seq2SeqConfig:
    """Architecture of an encoder-decoder. Frozen and hashable: a static `jit` argument."""

    src_vocab: int = 64  # source vocabulary size, specials included
    tgt_vocab: int = 64  # target vocabulary size, specials included
    cell: str = "gru"  # rnn | gru | lstm | sru | mingru | minlstm (the last three: linear cells)
    dec_cell: str = ""  # the decoder's cell when it differs from the encoder's ("": cell)
    src_embed: int = 64  # source embedding size
    tgt_embed: int = 64  # target embedding size
    enc_hidden: int = 128  # per direction
    dec_hidden: int = 128  # may differ from the encoder's: a bridge maps C to it
    enc_layers: int = 1  # stacked encoder layers
    dec_layers: int = 1  # stacked decoder layers
    bidirectional: bool = False  # bidirectional encoder (fig. 10.11)
    context: str = "init"  # init | input | both: how C enters the decoder
    attention: str = "none"  # none | bahdanau | luong_dot | luong_general
    attn_dim: int = 128  # hidden size of the additive attention
    # Luong's input feeding: each step's readout is part of the next step's input. Off, nothing
    # but the decoder state links the steps, and teacher forcing runs the decoder layers over
    # the whole target first, then attention for every step at once (with a linear decoder
    # cell: a training step with no sequential matmul at all).
    input_feeding: bool = True  # luong attention only
    # The first decoder layer as two cells (Nematus' conditional GRU): the first reads y_{t-1},
    # attention asks with its new state, the second reads the context.
    conditional: bool = False  # bahdanau only: attend between two cells of the first layer
    readout: int = 0  # tanh readout size before the softmax; 0: tgt_embed if tied, else dec_hidden
    reverse_source: bool = False  # read the source backwards (Sutskever 2014)
    tie_embeddings: bool = False  # output layer = target embedding transposed
    residual: bool = False  # residual connections between stacked layers
    dropout: float = 0.0  # on embeddings, between layers, on the readout (training); a corpus: 0.3
    annotation_dropout: float = 0.0  # on the encoder's annotations that attention reads (training)
    src_word_dropout: float = 0.0  # drops whole source tokens: zero embeddings (training)
    tgt_word_dropout: float = 0.0  # drops whole previous target tokens the decoder reads
    unroll: int = 1  # lax.scan unroll factor
    projection: str | None = None  # input matmul inside/outside the scan; None: per backend
    fused: bool = True  # hand-written backward passes: same values, faster gradients
    remat: bool = False  # recompute in the backward pass what the scans would store: less memory
    # Mixed precision: "bfloat16" runs the matmuls and activations in bfloat16; the parameters,
    # their gradients, the LSTM cell state, the softmaxes and the loss stay in float32.
    dtype: str = "float32"  # float32 | bfloat16

    def __post_init__(self):
        def check(ok: bool, msg: str):
            if not ok:
                raise ConfigError(msg)

        for name in ("cell", "dec_cell"):
            value = getattr(self, name)
            check(
                value in CELLS or (name == "dec_cell" and value == ""),
                f"{name} must be one of {', '.join(CELLS)}, not {value!r}",
            )
        check(
            self.context in CONTEXT_MODES,
            f"context must be one of {CONTEXT_MODES}, not {self.context!r}",
        )
        check(
            self.attention in attention.KINDS,
            f"attention must be one of {attention.KINDS}, not {self.attention!r}",
        )
        check(self.dtype in DTYPES, f"dtype must be float32 or bfloat16, not {self.dtype!r}")
        check(
            self.projection in (None, "inside", "outside"),
            f"projection must be inside, outside or None, not {self.projection!r}",
        )
        for name in (
            "src_vocab",
            "tgt_vocab",
            "src_embed",
            "tgt_embed",
            "enc_hidden",
            "dec_hidden",
            "enc_layers",
            "dec_layers",
            "attn_dim",
            "unroll",
        ):
            check(getattr(self, name) > 0, f"{name} must be positive, got {getattr(self, name)}")
        check(
            self.src_vocab > UNK and self.tgt_vocab > UNK, "vocabularies must hold the 4 specials"
        )
        for name in ("dropout", "annotation_dropout", "src_word_dropout", "tgt_word_dropout"):
            rate = getattr(self, name)
            check(0.0 <= rate < 1.0, f"{name} must be in [0, 1), got {rate}")
        check(
            not self.conditional or self.attention == "bahdanau",
            "conditional (a decoder that attends between two cells) needs bahdanau attention",
        )
        check(
            self.annotation_dropout == 0.0 or self.attention != "none",
            "annotation_dropout acts on what attention reads: set an attention, or leave it at 0",
        )
        check(
            self.attention != "luong_dot" or self.dec_hidden == self.enc_out,
            f"luong_dot attention needs dec_hidden == encoder output size ({self.enc_out}); "
            "use luong_general or bahdanau",
        )
        check(
            not self.tie_embeddings or self.readout_dim == self.tgt_embed,
            "tie_embeddings needs readout == tgt_embed (leave readout at 0)",
        )
        check(
            self.input_feeding or self.luong,
            "input_feeding = false applies to luong attention only (luong_dot, luong_general)",
        )
        if CELLS[self.decoder_cell].linear is not None and self.recurrent_input:
            # A linear decoder cell is chosen to train in parallel over time: these designs
            # would train it step by step.
            why = (
                "bahdanau attention is part of each step's input and asks with s_{t-1}"
                if self.attention == "bahdanau"
                else "Luong's input feeding makes each step's readout part of the next input"
            )
            raise ConfigError(
                f"a {self.decoder_cell} decoder would train step by step: {why}; use "
                "luong_dot or luong_general attention with input_feeding = false (or a gru or "
                "lstm decoder)"
            )

    @property
    def enc_out(self) -> int:
        """Width of the annotations and of the context C."""
        return self.enc_hidden * (2 if self.bidirectional else 1)

    @property
    def readout_dim(self) -> int:
        if self.readout:
            return self.readout
        return self.tgt_embed if self.tie_embeddings else self.dec_hidden

    @property
    def drops_out(self) -> bool:
        """Whether training draws any dropout mask (and so needs a key)."""
        rates = (
            self.dropout,
            self.annotation_dropout,
            self.src_word_dropout,
            self.tgt_word_dropout,
        )
        return any(rate > 0 for rate in rates)

    @property
    def decoder_cell(self) -> str:
        return self.dec_cell or self.cell

    @property
    def luong(self) -> bool:
        return self.attention.startswith("luong")

    @property
    def recurrent_input(self) -> bool:
        """Whether a decoder step's input depends on the step before beyond the state
        (Bahdanau's attention, Luong's input feeding): teacher forcing then steps through
        attention too, else it runs the decoder layers over the whole target first."""
        return self.attention == "bahdanau" or self.input_fed

    @property
    def input_fed(self) -> bool:
        """Whether each step's readout feeds the next step (Luong's input feeding)."""
        return self.luong and self.input_feeding

    @property
    def dec_in(self) -> int:
        """Width of the first decoder layer's input."""
        if self.attention == "bahdanau":
            return self.tgt_embed + (0 if self.conditional else self.enc_out)
        if self.luong:
            return self.tgt_embed + (self.readout_dim if self.input_feeding else 0)
        return self.tgt_embed + (self.enc_out if self.context != "init" else 0)

    @property
    def readout_in(self) -> int:
        return self.dec_hidden + self.enc_out + self.tgt_embed

    def replace(self, **changes) -> Seq2SeqConfig:
        return dataclasses.replace(self, **changes)


def scan_implementations(cfg: Seq2SeqConfig) -> tuple[str, str, str]:
    """How the scans run (`scan.run`'s impl), the one place the model chooses: the encoder's
    layers, the decoder's layers alone (teacher forcing without input feeding) and the
    decoder's step with attention (every other design). `fused=True`: LSTM/GRU layers
    "fused", linear cells "parallel", other cells and the attention decoder "hoisted";
    `fused=False`: plain autodiff everywhere (the reference)."""
    if not cfg.fused:
        return "autodiff", "autodiff", "autodiff"

    def layers(name: str) -> str:
        if CELLS[name].linear is not None:
            return "parallel"
        return "fused" if name in scan.FUSED_CELLS else "hoisted"

    return layers(cfg.cell), layers(cfg.decoder_cell), "hoisted"
