"""Weight converters from PyTorch's `nn.LSTM` / `nn.GRU` / `nn.RNN` (plain arrays in, params out).

Our cells use torch's gate order and bias placement, so a conversion is a transpose: torch
keeps `weight_ih_l{k}` as `[G*H, I]`, we keep `w_ih` as `[I, G*H]`. Nothing here imports torch:
pass `{name: tensor.detach().numpy()}` (e.g. from `module.state_dict()`).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np


def _layer(weights: Mapping[str, np.ndarray], suffix: str) -> dict:
    get = lambda name: np.asarray(weights[f"{name}{suffix}"], np.float32)
    hidden_gates = get("weight_hh").shape[0]
    zeros = np.zeros((hidden_gates,), np.float32)
    has_bias = f"bias_ih{suffix}" in weights
    return {
        "w_ih": jnp.asarray(get("weight_ih").T),
        "w_hh": jnp.asarray(get("weight_hh").T),
        "b_ih": jnp.asarray(get("bias_ih") if has_bias else zeros),
        "b_hh": jnp.asarray(get("bias_hh") if has_bias else zeros),
    }


def from_torch_rnn(
    weights: Mapping[str, np.ndarray], *, num_layers: int = 1, bidirectional: bool = False
) -> list[dict]:
    """A stack (see `rnn.init_stack`) from the state dict of a torch `nn.LSTM`, `nn.GRU` or
    `nn.RNN(nonlinearity="tanh")` with `batch_first` either way (weights do not depend on it)."""
    stack = []
    for k in range(num_layers):
        layer = {"fwd": _layer(weights, f"_l{k}")}
        if bidirectional:
            layer["bwd"] = _layer(weights, f"_l{k}_reverse")
        stack.append(layer)
    return stack


from_torch_lstm = from_torch_gru = from_torch_rnn


def from_torch_cell(weights: Mapping[str, np.ndarray]) -> dict:
    """Cell params from a torch `nn.LSTMCell` / `nn.GRUCell` / `nn.RNNCell` state dict."""
    return _layer(weights, "")
