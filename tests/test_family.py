"""The book's RNN family: each model against a direct step-by-step reading of its figure."""

import jax
import jax.numpy as jnp
import numpy as np

from s2s_jax.nn import cells, family

B, T, I, H, O = 2, 5, 3, 4, 6
KEY = jax.random.key(0)
XS = jax.random.normal(jax.random.key(1), (B, T, I))
LENGTHS = jnp.array([5, 3])
Y_PREV = jnp.array([[0, 1, 2, 3, 4], [5, 4, 3, 0, 0]])


def test_tagger_bidirectional_zero_padding_and_invariance():
    p = family.init_tagger(KEY, cells.GRU, I, H, O, bidirectional=True)
    out = family.tagger(p, XS, LENGTHS, cell=cells.GRU)
    assert out.shape == (B, T, O)
    np.testing.assert_array_equal(out[1, 3:], 0.0)
    alone = family.tagger(p, XS[1:, :3], LENGTHS[1:], cell=cells.GRU)
    np.testing.assert_allclose(out[1, :3], alone[0], atol=1e-5)


def test_seq_to_vector_reads_the_last_real_state():
    p = family.init_seq_to_vector(KEY, cells.LSTM, I, H, O)
    out = family.seq_to_vector(p, XS, LENGTHS, cell=cells.LSTM)
    alone = family.seq_to_vector(p, XS[1:, :3], LENGTHS[1:], cell=cells.LSTM)
    np.testing.assert_allclose(out[1], alone[0], atol=1e-5)
    assert out.shape == (B, O)


def test_output_recurrence_without_scan_equals_the_sequential_recurrence():
    """Fig. 10.4 under teacher forcing runs in parallel; fed the true outputs one step at a time
    the recurrence must give the same logits."""
    p = family.init_output_recurrent(KEY, I, H, O)
    parallel = family.output_recurrent(p, XS, Y_PREV)
    for t in range(T):
        h = np.tanh(
            np.asarray(XS[:, t] @ p["u"]["w"] + p["u"]["b"][None])
            + np.asarray(jax.nn.one_hot(Y_PREV[:, t], O) @ p["w"])
        )
        want = h @ np.asarray(p["out"]["w"]) + np.asarray(p["out"]["b"])
        np.testing.assert_allclose(parallel[:, t], want, atol=1e-5)
    gen = family.output_recurrent_generate(p, XS)
    # generation feeds back its own argmax: teacher forcing with those outputs reproduces them
    y_prev = jnp.concatenate([jnp.zeros((B, 1), jnp.int32), gen[:, :-1]], axis=1)
    np.testing.assert_array_equal(jnp.argmax(family.output_recurrent(p, XS, y_prev), -1), gen)


def test_vector_to_seq_and_conditional_rnn_depend_on_previous_outputs():
    p = family.init_vector_to_seq(KEY, cells.GRU, 7, O, 3, H)
    vec = jax.random.normal(KEY, (B, 7))
    out = family.vector_to_seq(p, vec, Y_PREV, cell=cells.GRU)
    changed = family.vector_to_seq(p, vec, Y_PREV.at[:, 2].set(1), cell=cells.GRU)
    np.testing.assert_allclose(out[:, :2], changed[:, :2], atol=1e-6)  # causal
    assert not np.allclose(out[:, 2:], changed[:, 2:])
    q = family.init_conditional_rnn(KEY, cells.LSTM, I, O, 3, H)
    out = family.conditional_rnn(q, XS, LENGTHS, Y_PREV, cell=cells.LSTM)
    changed = family.conditional_rnn(q, XS, LENGTHS, Y_PREV.at[0, 2].set(5), cell=cells.LSTM)
    np.testing.assert_allclose(out[:, :2], changed[:, :2], atol=1e-6)
    assert not np.allclose(out[0, 2:], changed[0, 2:])
