"""Inference and evaluation: `Translator` (strings in, strings out), `evaluate` and metrics."""
