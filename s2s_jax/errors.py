"""Exceptions a user can cause.

Every message is one line naming the problem and the fix; the CLI prints it and exits non-zero.
Programming errors (wrong types, broken invariants) stay plain `ValueError`/`TypeError`.
"""


class S2SError(Exception):
    """Base of every user-facing error of s2s-jax."""


class DataError(S2SError):
    """Bad or missing data: files, vocabularies, tasks, batches."""


class ConfigError(S2SError):
    """An invalid or inconsistent configuration."""


class CheckpointError(S2SError):
    """A missing, incomplete or incompatible checkpoint."""


class TrainingError(S2SError):
    """Training cannot go on (e.g. a non-finite loss)."""


class WorkdirError(S2SError):
    """A workdir that cannot be written, or is in use by another training run."""
