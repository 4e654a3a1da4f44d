"""s2s-jax: RNN encoder-decoder (sequence-to-sequence) models in JAX."""
