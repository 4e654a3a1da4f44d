"""Exceptions a user can cause.

Every message is one line naming the problem and the fix; the CLI prints it and exits non-zero.
Programming errors (wrong types, broken invariants) stay plain `ValueError`/`TypeError`.
"""


class S2SError(Exception):
    """Base of every user-facing error of s2s-jax (the CLI exits with `exit_status`)."""

    exit_status = 2


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


class WriteError(S2SError):
    """A file could not be written (a full disk, a read-only filesystem): the machine's
    trouble, not the user's, hence exit status 1. What was saved before is intact."""

    exit_status = 1
