"""What a result came from: the versions, the command line, the host and the devices, recorded
in a workdir's config.json at every start of its run and in every `s2s eval` result."""

from __future__ import annotations

import importlib.metadata
import platform
import shlex
import socket
import sys
import time

import jax

PACKAGES = ("s2s-jax", "jax", "jaxlib")


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:  # a source tree not installed
            out[name] = "unknown"
    return out | {"python": platform.python_version()}


def devices() -> str:
    """The devices JAX uses, in one phrase: "1 cpu device (cpu)", "8 gpu devices
    (NVIDIA H100 80GB HBM3)"."""
    local = jax.local_devices()
    kinds = sorted({d.device_kind for d in local})
    n = jax.device_count()
    return f"{n} {jax.default_backend()} device{'s' if n > 1 else ''} ({', '.join(kinds)})"


def provenance() -> dict:
    """This process's versions, command line, host and devices, and the time."""
    return {
        "versions": versions(),
        "command": shlex.join(
            ["s2s" if sys.argv[0].endswith("s2s") else sys.argv[0]] + sys.argv[1:]
        ),
        "host": socket.gethostname(),
        "devices": devices(),
        "processes": jax.process_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
