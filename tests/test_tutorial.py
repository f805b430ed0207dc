"""docs/tutorial.ipynb: stored without outputs, and every cell runs (nbclient, on this interpreter's kernel)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import require_module

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"


def test_notebook_is_stored_without_outputs():
    document = json.loads(NOTEBOOK.read_text())
    code = [cell for cell in document["cells"] if cell["cell_type"] == "code"]
    assert len(code) >= 10
    for cell in code:
        assert cell["outputs"] == [] and cell["execution_count"] is None


def kernel_manager(folder: Path):
    """A KernelManager whose kernel is ``sys.executable -m ipykernel_launcher``: this test's own Python
    (the venv with digitnet), whatever kernels ``jupyter kernelspec list`` shows on the machine."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec_dir = folder / "kernels" / "digitnet-test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "digitnet test", "language": "python"}))
    specs = KernelSpecManager(kernel_dirs=[str(folder / "kernels")], ensure_native_kernel=False)
    return KernelManager(kernel_name="digitnet-test", kernel_spec_manager=specs)


@pytest.mark.slow
def test_every_cell_of_the_tutorial_runs(mnist_path, tmp_path, monkeypatch):
    require_module("ipykernel")
    nbformat = require_module("nbformat")
    nbclient = require_module("nbclient")
    # the kernel inherits this environment: no display, and its files stay out of the user's home
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    km = kernel_manager(tmp_path)
    client = nbclient.NotebookClient(notebook, km=km, timeout=300, resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as exc:
        pytest.fail(f"a notebook cell failed:\n{exc}")
    assert km.kernel_spec.argv[0] == sys.executable
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    text = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    assert "test accuracy:" in text and "relative error" in text and "the network reads a" in text
    images = [out for out in outputs if out.output_type == "display_data" and "image/png" in out.data]
    assert len(images) == 4                     # curves, confusion matrix, first-layer weights, the drawn digit
    assert list(tmp_path.glob("**/*.png")) == []   # pictures are shown, not written
