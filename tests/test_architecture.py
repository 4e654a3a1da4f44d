"""The package's layers (docs/architecture.md): each imports only from the layers below it."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "s2s_jax"
BASE = {"s2s_jax.errors", "s2s_jax.tokens", "s2s_jax.files"}
# What each layer may import from s2s_jax (besides itself and BASE).
ALLOWED = {
    "nn": set(),
    "data": set(),
    "run": {"nn", "data"},
    "training": {"nn", "data", "run"},
    "inference": {"nn", "data", "run"},
    "serve": {"inference", "run"},  # the HTTP server stands on these alone
}
# The training loop evaluates as it goes: the one module of training that uses inference.
EXCEPTIONS = {"s2s_jax.training.loop": {"inference"}}


def s2s_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("s2s_jax"):
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("s2s_jax"))
    return names


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_import_only_downwards(layer):
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        module = "s2s_jax." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        allowed = ALLOWED[layer] | {layer} | EXCEPTIONS.get(module, set())
        for name in s2s_imports(path):
            if name in BASE or name == "s2s_jax" or layer_of(name) in ("errors", "tokens", "files"):
                continue
            assert layer_of(name) in allowed, f"{module} imports {name}"


def test_the_command_line_starts_without_jax():
    """`s2s --help` and option errors must not wait for JAX to import."""
    code = "import sys, s2s_jax, s2s_jax.cli; print('jax' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_inference_loads_neither_training_nor_optax():
    """Translating, evaluating, exporting and serving read a run directory through
    `s2s_jax.run`: the training layer and the optimizer library stay unloaded."""
    code = (
        "import sys\n"
        "import s2s_jax.inference\n"
        "from s2s_jax import Translator, evaluate_workdir\n"
        "from s2s_jax.inference import evaluate, export, heatmap, metrics, translate\n"
        "import s2s_jax.serve.server\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('s2s_jax.training'))\n"
        "print(loaded, 'optax' in sys.modules, 's2s_jax.run.workdir' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[] False True"


def test_no_module_is_over_400_lines():
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 400
    }
    assert not long, f"split these modules along their concepts: {long}"
