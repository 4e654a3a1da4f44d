"""The notebooks run top to bottom on tiny settings (`S2S_NOTEBOOK_QUICK=1`: a few training
steps), their own asserts checking what they show; and each is saved with its outputs."""

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, monkeypatch, tmp_path):
    nb = nbformat.read(path, as_version=4)
    saved = [c for c in nb.cells if c.cell_type == "code" and c.get("outputs")]
    assert saved, f"{path.name} is saved without its outputs: run it and save it"
    monkeypatch.setenv("S2S_NOTEBOOK_QUICK", "1")
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.output_type == "error"
    ]
    assert not errors
